"""TrackHead against golden outputs of the reference VGGT track head (tools/make_track_fixture.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recon.model.track_head import TrackHead

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden" / "track_reduced"
LAYOUT = FIXTURES / "vggt1b_layout.json"

# Reference full-size head, vggt.heads.track_head.TrackHead(dim_in=2048, patch_size=14) at
# StreamVGGT 3e28c5c5, built on the meta device: 394 tensors, 65,941,396 parameters, and the
# sha256 of json.dumps(sorted([key, list(shape)] for its state dict)).
FULL_NUM_TENSORS = 394
FULL_NUM_PARAMS = 65_941_396
FULL_LAYOUT_SHA256 = "16d36e0924de33836398f526386e453a94919f7953542c57eeebbe39425fafdd"


@pytest.fixture(scope="module")
def golden() -> tuple[dict, dict[str, torch.Tensor]]:
    meta = json.loads(GOLDEN.with_suffix(".json").read_text())
    return meta, load_file(str(GOLDEN.with_suffix(".safetensors")))


def _build(meta: dict, tensors: dict[str, torch.Tensor]) -> TrackHead:
    c = meta["config"]
    model = TrackHead(
        dim_in=c["dim_in"],
        patch_size=c["patch_size"],
        features=c["features"],
        iters=c["iters"],
        predict_conf=c["predict_conf"],
        stride=c["stride"],
        corr_levels=c["corr_levels"],
        corr_radius=c["corr_radius"],
        hidden_size=c["hidden_size"],
        intermediate_layer_idx=c["intermediate_layer_idx"],
        out_channels=c["out_channels"],
    )
    weights = {k[len("weights.") :]: v.float() for k, v in tensors.items() if k.startswith("weights.")}
    model.load_state_dict(weights, strict=True)
    return model.eval()


def _run(meta: dict, tensors: dict[str, torch.Tensor], dtype: torch.dtype):
    model = _build(meta, tensors).to(dtype)
    n_layers = meta["inputs"]["num_layers"]
    tokens = [tensors[f"inputs.tokens_{i}"].to(dtype) for i in range(n_layers)]
    with torch.no_grad():
        return model(
            tokens,
            tensors["inputs.images"].to(dtype),
            meta["inputs"]["patch_start_idx"],
            tensors["inputs.query_points"].to(dtype),
        )


def _max_diffs(out, tensors: dict[str, torch.Tensor], suffix: str) -> dict[str, float]:
    coord_preds, vis, conf = out
    ref_coords = tensors[f"outputs.coord_preds{suffix}"]
    assert len(coord_preds) == ref_coords.shape[0]
    diffs = {
        f"coords_iter{i}": (c.double() - r.double()).abs().max().item()
        for i, (c, r) in enumerate(zip(coord_preds, ref_coords))
    }
    diffs["vis"] = (vis.double() - tensors[f"outputs.vis{suffix}"].double()).abs().max().item()
    diffs["conf"] = (conf.double() - tensors[f"outputs.conf{suffix}"].double()).abs().max().item()
    return diffs


def test_matches_reference_float32(golden) -> None:
    meta, tensors = golden
    out = _run(meta, tensors, torch.float32)
    coord_preds, vis, conf = out
    B, N = tensors["inputs.query_points"].shape[:2]
    S = tensors["inputs.images"].shape[1]
    assert coord_preds[-1].shape == (B, S, N, 2) and vis.shape == (B, S, N) and conf.shape == (B, S, N)
    diffs = _max_diffs(out, tensors, "")
    assert max(diffs.values()) <= 1e-4, diffs


def test_matches_reference_float64(golden) -> None:
    # float64 removes the float32 rounding noise that the high-frequency flow code amplifies,
    # so this pins the algorithm much more tightly than the float32 check.
    meta, tensors = golden
    diffs = _max_diffs(_run(meta, tensors, torch.float64), tensors, "_f64")
    assert max(diffs.values()) <= 1e-7, diffs


def test_query_frame_is_pinned(golden) -> None:
    meta, tensors = golden
    coord_preds, _, _ = _run(meta, tensors, torch.float32)
    query = tensors["inputs.query_points"]
    for c in coord_preds:
        torch.testing.assert_close(c[:, 0], query, rtol=0, atol=1e-5)


def _full_layout() -> list[list]:
    with torch.device("meta"):
        model = TrackHead(dim_in=2048, patch_size=14)
    return sorted([k, list(v.shape)] for k, v in model.state_dict().items())


def test_full_size_layout_matches_reference() -> None:
    layout = _full_layout()
    assert len(layout) == FULL_NUM_TENSORS
    n_params = 0
    for _, shape in layout:
        n_params += torch.Size(shape).numel()
    assert n_params == FULL_NUM_PARAMS
    assert hashlib.sha256(json.dumps(layout).encode()).hexdigest() == FULL_LAYOUT_SHA256


@pytest.mark.skipif(not LAYOUT.exists(), reason="tests/fixtures/vggt1b_layout.json not present")
def test_full_size_layout_matches_checkpoint_layout() -> None:
    prefix = "track_head."
    expected = sorted(
        [k[len(prefix) :], list(shape)] for k, shape in json.loads(LAYOUT.read_text()) if k.startswith(prefix)
    )
    assert _full_layout() == expected
