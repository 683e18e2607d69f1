"""Runners for the public reference implementations, timed by `recon bench --reference NAME`.

The reference code is never part of this project: each runner imports it at run time from the
folder named by an environment variable, the folder that holds the reference's top-level packages
(it is put first on sys.path):

    name                    variable                         code
    streamvggt              STREAMRECON_REF_STREAMVGGT       github.com/wzzheng/StreamVGGT @3e28c5c, its src/
                                                             (package `streamvggt`)
    horizonstream           STREAMRECON_REF_HORIZONSTREAM    github.com/TooCoolLa/HorizonStream @ddf1333
    horizonstream-chunked                                    (package `horizonstream`), with `fla`
                                                             (flash-linear-attention 0.5.1) importable

Both import `einops` (StreamVGGT without using it) and fla imports `packaging`; each must be
installed or sit in the same folder.

Each runner builds the reference model at full size (StreamVGGT: its default constructor
`StreamVGGT()`, i.e. embed 1024, depth 24, 16 heads, img 518, patch 14, ViT-L/14 DINOv2 backbone
with 4 registers, plus its camera / depth / point / track heads; HorizonStream: the model section of
its release config configs/horizonstream_infer.yaml, copied in HORIZONSTREAM_CONFIG), with the
reference's own random initialisation, built in place on the target device. `step(image)` takes
one [3, H, W] float image in [0, 1] on the device, runs the reference's per-frame streaming
inference on it and copies the same kind of outputs to the host that `Reconstructor.step` copies
(float32, queued non-blocking, then one wait), so that it returns once the frame is done:

  streamvggt: the body of `StreamVGGT.inference` for one frame, called frame by frame with its
    caches kept between calls: `aggregator(images, past_key_values, use_cache=True)` (KV cache of
    the 24 global-attention layers) under the CUDA autocast of its demo (demo_gradio.py:
    `torch.cuda.amp.autocast(dtype=bfloat16 if compute capability >= 8 else float16)` over
    `model.inference`), then with autocast disabled, as `inference` does: `camera_head(...,
    past_key_values_camera, use_cache=True)`, `depth_head`, `point_head`. Weights fp32 (the demo
    does not cast them). Host copy: depth, depth conf, world points, their conf, pose encoding.
    Unlike `inference`, outputs are not kept on the device for the whole stream.
  horizonstream: `HorizonStreamModel.forward_chunk` + `advance_sequence_state`, as infer.py's
    loop does, with `--sliding-size 1` ("fully streaming inference", README): the first
    `window_size` (10) frames form the first chunk (the 10th frame's step runs it), then one chunk
    per frame. fp32, no autocast (infer.py uses none). Host copy: depth, depth conf and the
    chunk's camera map (HorizonStream has no point head; world points are made on the CPU
    afterwards). infer.py's motion averaging of the camera maps, done once at the end of a
    sequence, is not timed.
  horizonstream-chunked: the same with the paper's schedule (`--sliding-size 21`, the release
    config): a frame's step only queues it, except when it completes a chunk.
  HorizonStream's KDA layers are fla Triton kernels: its runners need a CUDA device.

Stand-ins, only where the real package is missing (a bare GPU box has torch, numpy, safetensors
and OpenCV only); none of them is on the timed path:
  * huggingface_hub: module with an empty `PyTorchModelHubMixin` class (StreamVGGT's model class
    derives from it, for hub downloads only);
  * transformers: `transformers` + `transformers.file_utils` with `ModelOutput = object` (base class
    of StreamVGGT's output dataclass, which `inference` returns and the runner does not use);
  * fla.layers: its package `__init__` imports every fla layer, some through transformers; when
    that import fails, `fla.layers` is registered as a bare package (same folder, `__init__` not
    run) so that HorizonStream's `from fla.layers.kda import KimiDeltaAttention` works.
Bytecode is not written into the reference folder.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import statistics
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

STREAMVGGT_COMMIT = "3e28c5c5d31128cc45a2f4832245664cb899d764"
HORIZONSTREAM_COMMIT = "ddf13338b4d15e698d170cf3b8693ab0d3a36116"

# configs/horizonstream_infer.yaml @ddf1333: model.horizonstream_cfg (checkpoint: none, random weights)
HORIZONSTREAM_CONFIG = {
    "load_pretrained": False,
    "use_xyz_head": False,
    "enable_metric_readout_token": True,
    "frames_chunk_size": 1,
    "use_chunkwise_checkpoint": True,
    "agg_regator_cfg": {
        "patch_embed": "dinov2_vitl14_reg", "img_size": 518, "patch_size": 14, "embed_dim": 1024,
        "intermediate_layer_idx": [4, 11, 17, 23], "num_heads": 16, "depth": 24, "gate_attn": "headwise",
        "rope_type": "3d", "rope_temporal_period": 21, "fuse_grm_priori": False, "num_pose_tokens": 32,
        "use_register_token": False, "chunk_block_num": 3, "global_attn_arch": "gla",
        "global_attn_impl": "softmax", "gla_expand_v": 1.0, "gla_use_short_conv": True, "gla_conv_size": 4,
        "gla_conv_bias": False, "gla_allow_neg_eigval": False, "gla_norm_eps": 1.0e-5,
        "gla_serial_layers": [4, 11, 17, 23],
    },
    "cam_decoder_cfg": {"pose_encoding_type": "absT_quaR_FoV", "dim_in": 2048},
    "metric_readout_head_cfg": {"hidden_dims": [256, 128], "init_bias": 0.0},
    "dpt_decoder_cfg": {"dim_in": 2048, "output_dim": 2, "activation": "exp", "conf_activation": "expp1",
                        "intermediate_layer_idx": [4, 11, 17, 23]},
}
HORIZONSTREAM_WINDOW = 10  # inference.window_size of the release config
HORIZONSTREAM_PAPER_SLIDING = 21  # inference.sliding_size of the release config ("reported paper inference")


@dataclass(frozen=True)
class Reference:
    name: str
    env: str
    package: str  # top-level package that must be in the folder
    marker: str  # a file of it, relative to the folder
    repo: str
    commit: str
    cuda_only: bool = False


REFERENCES = {
    "streamvggt": Reference("streamvggt", "STREAMRECON_REF_STREAMVGGT", "streamvggt",
                            "streamvggt/models/streamvggt.py", "https://github.com/wzzheng/StreamVGGT",
                            STREAMVGGT_COMMIT),
    "horizonstream": Reference("horizonstream", "STREAMRECON_REF_HORIZONSTREAM", "horizonstream",
                               "horizonstream/models/horizonstream.py", "https://github.com/TooCoolLa/HorizonStream",
                               HORIZONSTREAM_COMMIT, cuda_only=True),
}
REFERENCES["horizonstream-chunked"] = REFERENCES["horizonstream"]


def parse_names(values: list[str] | None) -> list[str]:
    """--reference values (repeated and/or comma lists) -> known names, in order, without repeats."""
    names: list[str] = []
    for value in values or []:
        for name in value.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in REFERENCES:
                raise ValueError(f"unknown --reference {name!r}; choose from {', '.join(REFERENCES)}")
            if name not in names:
                names.append(name)
    return names


def locate(name: str) -> Path:
    """The folder given by the reference's environment variable, checked (ValueError otherwise)."""
    ref = REFERENCES[name]
    value = os.environ.get(ref.env, "").strip()
    if not value:
        raise ValueError(f"--reference {name}: set {ref.env} to the folder holding the `{ref.package}` package "
                         f"of {ref.repo} (commit {ref.commit[:7]}); see docs/PERFORMANCE.md")
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"--reference {name}: {ref.env}={value} is not a folder")
    if not (path / ref.marker).is_file():
        raise ValueError(f"--reference {name}: {ref.env}={value} has no {ref.marker} (point it at the folder "
                         f"that holds the `{ref.package}` package)")
    return path


def check(name: str, device: torch.device) -> None:
    """Everything that can be checked before the benchmark runs: folder, device, imports."""
    path = locate(name)
    _check_device(name, device)
    _import_reference(name, path)


def _check_device(name: str, device: torch.device) -> None:
    if REFERENCES[name].cuda_only and device.type != "cuda":
        raise ValueError(f"--reference {name}: HorizonStream's KDA attention layers are fla Triton kernels with "
                         f"no CPU path; run on a CUDA device (--device cuda)")


def build(name: str, device: torch.device, config: dict | None = None, allow_cpu: bool = False):
    """A runner for `name` on `device`; config=None builds the full-size model (see the module doc).
    allow_cpu: let a CUDA-only runner build on the CPU (only for Triton's interpreter, in tests)."""
    path = locate(name)
    if name == "streamvggt":
        return StreamVGGTRunner(device, config, path)
    if not allow_cpu:
        _check_device(name, device)
    sliding = HORIZONSTREAM_PAPER_SLIDING if name == "horizonstream-chunked" else 1
    return HorizonStreamRunner(device, config, path, sliding=sliding, name=name)


# -- importing the reference code ---------------------------------------------------------------
def _missing(module: str) -> bool:
    if module in sys.modules:
        return False
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def _install_stand_ins() -> list[str]:
    """Minimal modules for imports the timed path does not use, only where the real one is missing."""
    installed = []
    if _missing("huggingface_hub"):
        hub = types.ModuleType("huggingface_hub")
        hub.__doc__ = "recon.bench_reference stand-in: the real huggingface_hub is not installed"
        hub.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
        sys.modules["huggingface_hub"] = hub
        installed.append("huggingface_hub")
    if _missing("transformers"):
        tf, file_utils = types.ModuleType("transformers"), types.ModuleType("transformers.file_utils")
        tf.__doc__ = "recon.bench_reference stand-in: the real transformers is not installed"
        file_utils.ModelOutput = object
        tf.file_utils = file_utils
        sys.modules.update({"transformers": tf, "transformers.file_utils": file_utils})
        installed.append("transformers")
    return installed


def _bare_fla_layers() -> bool:
    """Register fla.layers without running its __init__ when that __init__ cannot import."""
    if "fla.layers" in sys.modules:
        return False
    fla = importlib.import_module("fla")
    try:
        importlib.import_module("fla.layers")
        return False
    except ImportError:
        pass
    folder = os.path.join(os.path.dirname(fla.__file__), "layers")
    spec = importlib.machinery.ModuleSpec("fla.layers", None, is_package=True)
    spec.submodule_search_locations = [folder]
    module = importlib.util.module_from_spec(spec)
    module.__file__ = None
    sys.modules["fla.layers"] = module
    fla.layers = module
    return True


_IMPORTED: dict[tuple[str, Path], dict] = {}
_DISTRIBUTIONS = {"fla": "flash-linear-attention 0.5.1 (fla-core)", "einops": "einops (a wheel: .whl/einops-*.whl)"}


def _import_reference(name: str, path: Path) -> dict:
    """Import the reference's classes from `path` (cached); ImportError etc. -> one-line ValueError."""
    key = "streamvggt" if name == "streamvggt" else "horizonstream"
    if (key, path) in _IMPORTED:
        return _IMPORTED[key, path]
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    stand_ins = _install_stand_ins() if key == "streamvggt" else []
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # leave the reference folder as it is
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecations and "Triton is not supported" on CPU-only hosts
            if key == "streamvggt":
                mods = {"StreamVGGT": importlib.import_module("streamvggt.models.streamvggt").StreamVGGT,
                        "Aggregator": importlib.import_module("streamvggt.models.aggregator").Aggregator,
                        "CameraHead": importlib.import_module("streamvggt.heads.camera_head").CameraHead,
                        "DPTHead": importlib.import_module("streamvggt.heads.dpt_head").DPTHead}
            else:
                if _bare_fla_layers():
                    stand_ins.append("fla.layers (bare package)")
                mods = {"HorizonStreamModel": importlib.import_module("horizonstream.core.model").HorizonStreamModel}
    except Exception as e:  # noqa: BLE001 -- any failure of foreign code is reported in one line
        hint = ""
        if isinstance(e, ModuleNotFoundError) and e.name:
            top = e.name.split(".")[0]
            hint = f" (install {_DISTRIBUTIONS.get(top, top)} or put the `{top}` package in {path})"
        raise ValueError(f"--reference {name}: cannot import the reference code from {path}: "
                         f"{type(e).__name__}: {e}{hint}") from None
    finally:
        sys.dont_write_bytecode = dont_write
    mods["stand_ins"] = stand_ins
    mods["source"] = str(path)
    mods["source_sha256"] = _tree_hash(path / REFERENCES[name].package)
    _IMPORTED[key, path] = mods
    return mods


def _tree_hash(folder: Path) -> str:
    """sha256 over the package's .py files (relative path + content): which source was timed."""
    h = hashlib.sha256()
    for file in sorted(folder.rglob("*.py")):
        h.update(str(file.relative_to(folder)).encode() + b"\0" + file.read_bytes() + b"\0")
    return h.hexdigest()


# -- runners ------------------------------------------------------------------------------------
def _to_host(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """As recon.session does: every copy queued (float32, non-blocking), then one wait."""
    host = [t.float().to("cpu", non_blocking=True) for t in tensors]
    if tensors and tensors[0].is_cuda:
        torch.cuda.current_stream(tensors[0].device).synchronize()
    return host


def _held_bytes(obj, seen: set[int] | None = None) -> int:
    """Bytes of the distinct tensor storages reachable from a cache structure."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() == 0:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if isinstance(obj, dict):
        return sum(_held_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_held_bytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return sum(_held_bytes(v, seen) for v in vars(obj).values())
    return 0


class _Runner:
    name = ""
    precision = ""
    step_timed = ""
    warmup_frames = 0  # at least this many warm-up frames before timing (compiles every kernel shape)

    def __init__(self, device: torch.device, mods: dict):
        self.device = device
        self.mods = mods
        self.outputs: dict[str, torch.Tensor] = {}  # last host copy (tests compare it)

    def flush(self) -> None:
        """End of the stream: run what is still queued (nothing, for per-frame runners)."""

    def info(self) -> dict:
        ref = REFERENCES[self.name]
        return {
            "name": self.name, "repository": ref.repo, "commit_expected": ref.commit,
            "source": self.mods["source"], "source_sha256": self.mods["source_sha256"],
            "stand_ins": self.mods["stand_ins"], "params": sum(p.numel() for p in self.model.parameters()),
            "weights": "random (the reference's own initialisation)", "config": self.config_name,
            "precision": self.precision, "step": self.step_timed,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        }


class StreamVGGTRunner(_Runner):
    name = "streamvggt"
    step_timed = ("aggregator(past_key_values, use_cache=True) + camera_head(past_key_values_camera) + "
                  "depth_head + point_head, as StreamVGGT.inference does per frame; host copy of depth, "
                  "depth_conf, world points, conf, pose encoding")

    def __init__(self, device: torch.device, config: dict | None = None, path: Path | None = None):
        mods = _import_reference("streamvggt", path or locate("streamvggt"))
        super().__init__(device, mods)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            with torch.device(device):  # built in place: 1.3B parameters are not first made on the CPU
                if config is None:
                    model = mods["StreamVGGT"]()
                    self.config_name = "StreamVGGT() (default constructor: full size)"
                else:  # reduced module sizes, same module tree (tests)
                    model = mods["StreamVGGT"].__new__(mods["StreamVGGT"])
                    torch.nn.Module.__init__(model)
                    model.aggregator = mods["Aggregator"](**config["aggregator"])
                    model.camera_head = mods["CameraHead"](**config["camera_head"])
                    model.point_head = mods["DPTHead"](output_dim=4, activation="inv_log", conf_activation="expp1",
                                                       **config["dpt_head"])
                    model.depth_head = mods["DPTHead"](output_dim=2, activation="exp", conf_activation="expp1",
                                                       **config["dpt_head"])
                    model.track_head = None
                    self.config_name = {"reduced": config}
        self.model = model.to(device).eval()  # .to: the few buffers made by legacy constructors on the CPU
        if device.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
            self.precision = (f"weights fp32; aggregator under CUDA autocast {str(self.dtype)[6:]}; camera, depth "
                              f"and point heads fp32 (autocast disabled) -- as the StreamVGGT demo")
        else:
            self.dtype = None
            self.precision = "fp32 (CPU, no autocast)"
        self.reset()

    def reset(self) -> None:
        self.past_key_values = [None] * self.model.aggregator.depth
        self.past_key_values_camera = [None] * self.model.camera_head.trunk_depth
        self.index = 0

    def cache_bytes(self) -> int:
        return _held_bytes([self.past_key_values, self.past_key_values_camera])

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.no_grad()
    def step(self, image: torch.Tensor) -> None:
        m = self.model
        images = image[None, None]  # [B=1, S=1, 3, H, W], as inference's frame["img"].unsqueeze(0)
        with self._autocast():
            tokens, start, self.past_key_values = m.aggregator(
                images, past_key_values=self.past_key_values, use_cache=True, past_frame_idx=self.index)
            with torch.autocast(self.device.type, enabled=False):
                poses, self.past_key_values_camera = m.camera_head(
                    tokens, past_key_values_camera=self.past_key_values_camera, use_cache=True)
                depth, depth_conf = m.depth_head(tokens, images=images, patch_start_idx=start)
                points, points_conf = m.point_head(tokens, images=images, patch_start_idx=start)
        self.index += 1
        names = ("depth", "depth_conf", "world_points", "world_points_conf", "pose_enc")
        host = _to_host([depth[:, 0], depth_conf[:, 0], points[:, 0], points_conf[:, 0], poses[-1][:, 0, :]])
        self.outputs = dict(zip(names, host))


class HorizonStreamRunner(_Runner):
    def __init__(self, device: torch.device, config: dict | None = None, path: Path | None = None,
                 sliding: int = 1, window: int = HORIZONSTREAM_WINDOW, name: str = "horizonstream"):
        self.name = name
        mods = _import_reference(name, path or locate(name))
        super().__init__(device, mods)
        cfg = HORIZONSTREAM_CONFIG if config is None else config
        self.config_name = ("configs/horizonstream_infer.yaml model.horizonstream_cfg (release: full size)"
                            if config is None else {"reduced": config})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            with torch.device(device):
                model = mods["HorizonStreamModel"]({"checkpoint": None, "horizonstream_cfg": copy.deepcopy(cfg)})
        self.model = model.to(device).eval()
        self.window, self.sliding = int(window), int(sliding)
        self.warmup_frames = self.window + 2 * self.sliding  # the first chunk and two steady ones
        self.precision = "fp32, no autocast, attention through torch SDPA (as infer.py; their FA3 path is off)"
        # checkpointed blocks under no_grad (use_chunkwise_checkpoint); infer.py silences this warning too
        warnings.filterwarnings("ignore", message="None of the inputs have requires_grad=True")
        self.step_timed = (f"HorizonStreamModel.forward_chunk + advance_sequence_state, window {self.window}, "
                           f"sliding {self.sliding} (the first chunk is the first {self.window} frames); host copy "
                           f"of depth, depth_conf, chunk camera map")
        self.reset()

    def reset(self) -> None:
        self.state = self.model.build_sequence_state()
        self.chunk_index = 0
        self.queued: list[torch.Tensor] = []

    def cache_bytes(self) -> int:
        return _held_bytes(self.state)

    def step(self, image: torch.Tensor) -> None:
        self.queued.append(image)
        if len(self.queued) == (self.window if self.chunk_index == 0 else self.sliding):
            self._run_chunk()

    def flush(self) -> None:
        if self.queued:
            self._run_chunk(last=True)

    @torch.no_grad()
    def _run_chunk(self, last: bool = False) -> None:
        images = torch.stack(self.queued)[None]  # [1, S, 3, H, W]
        self.queued = []
        # infer.py: the first chunk's window is its own length, later chunks use window_size
        window = images.shape[1] if self.chunk_index == 0 else self.window
        out = self.model.forward_chunk(images, window_size=window, chunk_idx=self.chunk_index, state=self.state)
        self.model.advance_sequence_state(self.state, is_last_chunk=last)
        self.chunk_index += 1
        host = _to_host([out["depth"][0], out["depth_conf"][0], out["chunk_cam_map"]])
        self.outputs = dict(zip(("depth", "depth_conf", "camera_map"), host))


# -- comparison ---------------------------------------------------------------------------------
def ratio_frames(n: int) -> list[int]:
    """Frame indices at which ratios are reported: 0, 100, 299 (the issue's anchor) and the last."""
    return sorted({i for i in (0, 100, 299, n - 1) if 0 <= i < n})


def compare(ours: list[dict], theirs: list[dict], ours_summary: dict, theirs_summary: dict) -> dict:
    """Ours vs theirs at matching frame indices; > 1 means ours is faster (FPS ratio = latency ratio)."""
    n = min(len(ours), len(theirs))
    per_frame = [theirs[i]["latency_ms"] / ours[i]["latency_ms"] for i in range(n)]

    def window(records: list[dict], i: int) -> float:
        lat = sorted(r["latency_ms"] for r in records[max(0, i - 4): i + 1])
        return lat[len(lat) // 2]

    at = ratio_frames(n)
    return {
        "definition": "their latency / our latency (= our FPS / their FPS) at the same frame index of the "
                      "same stream; > 1: ours faster",
        "ratio_fps_at_frame": {str(i): per_frame[i] for i in at},
        "ratio_fps_at_frame_median5": {str(i): window(theirs, i) / window(ours, i) for i in at},
        "ratio_fps_median": statistics.median(per_frame) if n else float("nan"),
        "ratio_throughput": sum(r["latency_ms"] for r in theirs[:n]) / sum(r["latency_ms"] for r in ours[:n]),
        "ratio_steady_fps": ours_summary["steady_fps"] / theirs_summary["steady_fps"],
        "ratio_peak_memory_theirs_over_ours": theirs_summary["peak_memory_bytes"] / ours_summary["peak_memory_bytes"],
    }


def describe_comparison(name: str, ratios: dict) -> str:
    at = ", ".join(f"frame {i} x{r:.2f}" for i, r in ratios["ratio_fps_at_frame"].items())
    return (f"  ours / {name} FPS: {at}; median over frames x{ratios['ratio_fps_median']:.2f}; "
            f"throughput x{ratios['ratio_throughput']:.2f}; steady x{ratios['ratio_steady_fps']:.2f}; "
            f"peak memory {name}/ours {ratios['ratio_peak_memory_theirs_over_ours']:.2f}")
