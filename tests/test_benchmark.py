"""The frozen benchmark's runner: worker processes give the rows a single process gives, and
parts run by seed merge into the whole."""

import json

import numpy as np
import pytest

from recon.benchmark import BENCHMARK_SCENES, main, make_reconstructor, merge_results, run_benchmark
from recon.checkpoint import save_checkpoint
from recon.model import GeometryTransformer
from tests.helpers import REDUCED, randomize_


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """A random reduced model's spec and reconstructor, and its whole benchmark run (3 frames)."""
    path = tmp_path_factory.mktemp("benchmark") / "reduced.safetensors"
    save_checkpoint(randomize_(GeometryTransformer(REDUCED), seed=4), path)
    spec = {"model": str(path), "memory": "full", "device": "cpu", "size": 70, "refine": False}
    rec = make_reconstructor(spec)
    return spec, rec, run_benchmark(rec, frames=3, size=70, tum=None)


def test_jobs_reproduce_the_serial_rows(reduced):
    spec, rec, serial = reduced
    parallel = run_benchmark(rec, frames=3, size=70, tum=None, jobs=3, spec=spec)
    assert [r["sequence"] for r in parallel["synthetic"]] == [f"{f}-{t}-{s}" for s, f, t in BENCHMARK_SCENES]
    for a, b in zip(serial["synthetic"], parallel["synthetic"]):
        for key in ("ate_pct_of_path", "depth_abs_rel", "depth_delta1", "rpe_rot_rmse_deg"):
            assert np.isclose(a[key], b[key], rtol=1e-4, equal_nan=True), (a["sequence"], key, a[key], b[key])
    for key, value in serial["synthetic_mean"].items():
        assert np.isclose(value, parallel["synthetic_mean"][key], rtol=1e-4)


def test_parts_run_by_seed_merge_into_the_whole(reduced, tmp_path):
    _, rec, whole = reduced
    seeds = [s[0] for s in BENCHMARK_SCENES]
    parts = [run_benchmark(rec, frames=3, size=70, tum=None, seeds=seeds[i::2]) for i in (1, 0)]
    assert [r["sequence"].rsplit("-", 1)[1] for r in parts[0]["synthetic"]] == [str(s) for s in seeds[1::2]]
    for part in parts:
        part.update(model="reduced", memory="full", refine=False)
    merged = merge_results(parts)
    assert [r["sequence"] for r in merged["synthetic"]] == [r["sequence"] for r in whole["synthetic"]]
    for key, value in whole["synthetic_mean"].items():
        assert np.isclose(value, merged["synthetic_mean"][key], rtol=1e-4)
    with pytest.raises(ValueError, match="in no part"):
        merge_results(parts[:1])
    with pytest.raises(ValueError, match="in two parts"):
        merge_results([parts[0], parts[0], parts[1]])
    with pytest.raises(ValueError, match="different settings"):
        merge_results([parts[0], {**parts[1], "memory": "rolling"}])
    with pytest.raises(ValueError, match="must be among"):
        run_benchmark(rec, frames=3, size=70, tum=None, seeds=[7])
    # The command line: part files in, the merged files out; a bad part is one line and exit code 1.
    files = []
    for i, part in enumerate(parts):
        files.append(tmp_path / f"benchmark_full_part-{i}.json")
        files[-1].write_text(json.dumps(part))
    assert main(["--merge", *map(str, files), "--out", str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / "benchmark_full.json").read_text())
    assert np.isclose(written["synthetic_mean"]["depth_abs_rel"], whole["synthetic_mean"]["depth_abs_rel"], rtol=1e-4)
    with pytest.raises(SystemExit, match="in no part"):
        main(["--merge", str(files[0]), "--out", str(tmp_path / "out2")])
