"""`recon bench --reference`: one-line errors when the reference code is not there (runs in CI);
with STREAMRECON_REF_STREAMVGGT set (the `src` folder of github.com/wzzheng/StreamVGGT, with
einops importable), the StreamVGGT runner at a reduced size on the CPU, against StreamVGGT's own
`inference`, and a whole `recon bench --reference streamvggt` run."""

import json
import os
import sys

import pytest
import torch

from recon import bench_reference
from recon.cli import EXIT_ERROR, main

BENCH = ["bench", "--preset", "tiny", "--device", "cpu", "--height", "42", "--width", "70", "--frames", "3",
         "--warmup", "1", "--print-every", "0"]
STREAMVGGT = os.environ.get("STREAMRECON_REF_STREAMVGGT")
needs_streamvggt = pytest.mark.skipif(not STREAMVGGT, reason="STREAMRECON_REF_STREAMVGGT not set")

# StreamVGGT's own modules at a reduced size: conv patch embedding instead of DINOv2, 4 blocks of width 64.
REDUCED = {
    "aggregator": dict(img_size=56, patch_size=14, embed_dim=64, depth=4, num_heads=4, patch_embed="conv"),
    "camera_head": dict(dim_in=128, trunk_depth=2, num_heads=4),
    "dpt_head": dict(dim_in=128, patch_size=14, features=16, out_channels=[8, 16, 32, 32],
                     intermediate_layer_idx=[0, 1, 2, 3]),
}


@pytest.fixture()
def isolated_imports(monkeypatch):
    """Undo what importing a (fake) reference leaves behind: sys.path, modules, the import cache."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(bench_reference, "_IMPORTED", {})
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("streamvggt", "horizonstream", "huggingface_hub", "transformers"):
            del sys.modules[name]


def _bench(capsys, *extra):
    code = main(BENCH + list(extra))
    out, err = capsys.readouterr()
    return code, out, [line for line in err.strip().splitlines() if not line.startswith("recon: warning")]


def _fake_reference(root, marker, text="X = 1\n"):
    path = root / marker
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return root


@pytest.mark.parametrize("case", ["missing_env", "empty_env", "not_a_folder", "no_package", "unknown_name",
                                  "import_error", "horizonstream_on_cpu"])
def test_reference_errors_are_one_line(tmp_path, monkeypatch, capsys, isolated_imports, case):
    monkeypatch.delenv("STREAMRECON_REF_STREAMVGGT", raising=False)
    monkeypatch.delenv("STREAMRECON_REF_HORIZONSTREAM", raising=False)
    name, expect = "streamvggt", "STREAMRECON_REF_STREAMVGGT"
    if case == "empty_env":
        monkeypatch.setenv("STREAMRECON_REF_STREAMVGGT", "")
    elif case == "not_a_folder":
        monkeypatch.setenv("STREAMRECON_REF_STREAMVGGT", str(tmp_path / "nowhere"))
        expect = "is not a folder"
    elif case == "no_package":
        monkeypatch.setenv("STREAMRECON_REF_STREAMVGGT", str(tmp_path))
        expect = "streamvggt/models/streamvggt.py"
    elif case == "unknown_name":
        name, expect = "streamvggt,vggt-offline", "unknown --reference 'vggt-offline'"
    elif case == "import_error":
        root = _fake_reference(tmp_path / "broken", "streamvggt/models/streamvggt.py",
                               "import a_module_that_is_not_installed_anywhere\n")
        monkeypatch.setenv("STREAMRECON_REF_STREAMVGGT", str(root))
        expect = "ModuleNotFoundError: No module named 'a_module_that_is_not_installed_anywhere'"
    elif case == "horizonstream_on_cpu":
        root = _fake_reference(tmp_path / "hs", "horizonstream/models/horizonstream.py")
        monkeypatch.setenv("STREAMRECON_REF_HORIZONSTREAM", str(root))
        name, expect = "horizonstream", "run on a CUDA device"
    code, out, err = _bench(capsys, "--reference", name)
    assert code == EXIT_ERROR
    assert len(err) == 1 and err[0].startswith("recon: error: ") and expect in err[0], err
    assert "frame" not in out and "median" not in out  # refused before our benchmark ran


def test_parse_names_and_ratio_frames():
    assert bench_reference.parse_names(["streamvggt,horizonstream", "streamvggt", " "]) == ["streamvggt",
                                                                                          "horizonstream"]
    assert bench_reference.ratio_frames(300) == [0, 100, 299]
    assert bench_reference.ratio_frames(2000) == [0, 100, 299, 1999]
    assert bench_reference.ratio_frames(3) == [0, 2]


def test_compare_is_their_latency_over_ours():
    ours = [{"latency_ms": 10.0}, {"latency_ms": 20.0}, {"latency_ms": 40.0}]
    theirs = [{"latency_ms": 30.0}, {"latency_ms": 20.0}, {"latency_ms": 120.0}]
    ratios = bench_reference.compare(ours, theirs, {"steady_fps": 50.0, "peak_memory_bytes": 2},
                                     {"steady_fps": 25.0, "peak_memory_bytes": 5})
    assert ratios["ratio_fps_at_frame"] == {"0": 3.0, "2": 3.0}
    assert ratios["ratio_fps_median"] == 3.0
    assert ratios["ratio_throughput"] == pytest.approx(170 / 70)
    assert ratios["ratio_steady_fps"] == 2.0 and ratios["ratio_peak_memory_theirs_over_ours"] == 2.5


@needs_streamvggt
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.cuda.amp.autocast inside StreamVGGT.inference
def test_streamvggt_runner_is_their_streaming_inference(isolated_imports):
    torch.manual_seed(0)
    runner = bench_reference.build("streamvggt", torch.device("cpu"), config=REDUCED)
    images = torch.rand(4, 3, 42, 70)
    ours = []
    for image in images:
        assert runner.step(image) is None
        ours.append(runner.outputs)
    assert runner.cache_bytes() > 0
    # StreamVGGT.inference over the same frames: one call, its own caches.
    with torch.no_grad():
        theirs = runner.model.inference([{"img": image[None]} for image in images]).ress
    keys = {"depth": "depth", "depth_conf": "depth_conf", "world_points": "pts3d_in_other_view",
            "world_points_conf": "conf", "pose_enc": "camera_pose"}
    for mine, ref in zip(ours, theirs):
        for name, key in keys.items():
            torch.testing.assert_close(mine[name], ref[key], rtol=1e-5, atol=1e-6)
    runner.reset()  # a new stream: frame 0 again
    runner.step(images[0])
    torch.testing.assert_close(runner.outputs["depth"], ours[0]["depth"])
    info = runner.info()
    json.dumps(info)
    assert info["precision"].startswith("fp32") and info["params"] == sum(p.numel() for p in runner.model.parameters())


@needs_streamvggt
def test_bench_times_streamvggt_in_the_same_run(tmp_path, monkeypatch, capsys, isolated_imports):
    build = bench_reference.build
    monkeypatch.setattr(bench_reference, "build", lambda name, device: build(name, device, config=REDUCED))
    out_json = tmp_path / "bench.json"
    code, out, err = _bench(capsys, "--reference", "streamvggt", "--json", str(out_json))
    assert code == 0, err
    result = json.loads(out_json.read_text())
    ref = result["reference"]["streamvggt"]
    assert [r["frame"] for r in ref["frames"]] == [0, 1, 2]
    assert all(r["latency_ms"] > 0 and r["rss_bytes"] > 0 for r in ref["frames"])
    assert ref["frames"][-1]["cache_bytes"] > ref["frames"][0]["cache_bytes"] > 0
    assert set(ref["ratios"]["ratio_fps_at_frame"]) == {"0", "2"}
    assert ref["summary"]["throughput_fps"] > 0 and ref["warmup"] == 1
    assert "ours / streamvggt FPS: frame 0 x" in out
