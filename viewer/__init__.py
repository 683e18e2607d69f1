"""Live viewer (Rerun): subscribes to `recon.session.FramePrediction`s; the model never imports it.

`from recon.viewer import RerunLogger` loads rerun only when the name is first used.
"""


def __getattr__(name: str):
    if name == "RerunLogger":
        from .rerun_logger import RerunLogger

        return RerunLogger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
