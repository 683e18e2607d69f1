"""The frozen benchmark's runner: worker processes give the rows a single process gives."""

import numpy as np

from recon.benchmark import BENCHMARK_SCENES, make_reconstructor, run_benchmark
from recon.checkpoint import save_checkpoint
from recon.model import GeometryTransformer
from tests.helpers import REDUCED, randomize_


def test_jobs_reproduce_the_serial_rows(tmp_path):
    path = tmp_path / "reduced.safetensors"
    save_checkpoint(randomize_(GeometryTransformer(REDUCED), seed=4), path)
    spec = {"model": str(path), "memory": "full", "device": "cpu", "size": 70, "refine": False}
    rec = make_reconstructor(spec)
    serial = run_benchmark(rec, frames=3, size=70, tum=None)
    parallel = run_benchmark(rec, frames=3, size=70, tum=None, jobs=3, spec=spec)
    assert [r["sequence"] for r in parallel["synthetic"]] == [f"{f}-{t}-{s}" for s, f, t in BENCHMARK_SCENES]
    for a, b in zip(serial["synthetic"], parallel["synthetic"]):
        for key in ("ate_pct_of_path", "depth_abs_rel", "depth_delta1", "rpe_rot_rmse_deg"):
            assert np.isclose(a[key], b[key], rtol=1e-4, equal_nan=True), (a["sequence"], key, a[key], b[key])
    for key, value in serial["synthetic_mean"].items():
        assert np.isclose(value, parallel["synthetic_mean"][key], rtol=1e-4)
