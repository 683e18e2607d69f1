"""Numerical equivalence with the public reference implementations.

Fixtures (tests/fixtures/golden/vggt_reduced.*) were produced by
tools/make_golden_fixtures.py from github.com/wzzheng/StreamVGGT at commit 3e28c5c
(its `vggt` package for the bidirectional forward, its `streamvggt` package for the
causal batch forward and the KV-cache streaming inference), on a reduced config with
random weights; provenance is in vggt_reduced.json.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recon.checkpoint import check_state_dict
from recon.model import GeometryTransformer
from tests.helpers import REDUCED

FIXTURE = Path(__file__).parent / "fixtures" / "golden" / "vggt_reduced.safetensors"
OUTPUTS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")
TOL = 1e-4


@pytest.fixture(scope="module")
def fixture():
    data = load_file(str(FIXTURE))
    weights = {k.removeprefix("weights."): v for k, v in data.items() if k.startswith("weights.")}
    return weights, data


def _model(weights, **changes):
    model = GeometryTransformer(REDUCED.replace(**changes)).eval()
    check_state_dict(model, weights, FIXTURE)
    model.load_state_dict(weights, strict=True)
    return model


def _ours(out: dict) -> dict:
    # The reference keeps a trailing channel on depth.
    return {**out, "depth": out["depth"][..., None]}


def _assert_close(ours: dict, data: dict, prefix: str) -> None:
    for name in OUTPUTS:
        ref = data[f"outputs.{prefix}.{name}"]
        assert ours[name].shape == ref.shape, name
        diff = (ours[name] - ref).abs().max().item()
        assert diff <= TOL, f"{prefix}.{name}: max abs diff {diff:.3g} > {TOL}"


@torch.no_grad()
def test_bidirectional_forward_matches_vggt(fixture):
    weights, data = fixture
    out = _model(weights)(data["inputs.images"], causal=False)
    _assert_close(_ours(out), data, "bidirectional")


@torch.no_grad()
def test_causal_batch_forward_matches_streamvggt(fixture):
    weights, data = fixture
    out = _model(weights)(data["inputs.images"], causal=True)
    _assert_close(_ours(out), data, "causal")


@torch.no_grad()
def test_streaming_matches_streamvggt_inference(fixture):
    weights, data = fixture
    model = _model(weights, camera_cache_layout="shared")  # the layout StreamVGGT streams with
    images = data["inputs.images"]
    state = model.init_state()
    frames = [model(images[:, i : i + 1], state=state) for i in range(images.shape[1])]
    out = {k: torch.cat([f[k] for f in frames], dim=1) for k in OUTPUTS}
    _assert_close(_ours(out), data, "streaming")
