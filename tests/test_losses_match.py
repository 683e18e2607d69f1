"""Correspondence supervision of temporal attention (recon.losses_match)."""

import math

import pytest
import torch

from recon.config import get_preset
from recon.losses_match import MatchProbes, attention_match_loss, frame_pairs, patch_correspondences
from recon.model import build_model

P_, SIDE, F_, Z = 4, 16, 8.0, 2.0  # patch, image side, focal length, plane depth


def _two_views(baseline: float) -> tuple[torch.Tensor, ...]:
    """A fronto-parallel plane at depth Z seen by camera 0 and by camera 1 moved `baseline`
    along +x: a point moves by F * baseline / Z pixels between them."""
    K = torch.tensor([[F_, 0, SIDE / 2], [0, F_, SIDE / 2], [0, 0, 1]]).expand(1, 2, 3, 3)
    E = torch.zeros(1, 2, 3, 4)
    E[..., :3, :3] = torch.eye(3)
    E[0, 1, 0, 3] = -baseline  # camera-from-world: x_cam = x_world - baseline
    depth = torch.full((1, 2, SIDE, SIDE), Z)
    return E, K, depth, torch.ones_like(depth, dtype=torch.bool)


def test_frame_pairs_are_each_frame_against_the_first_and_the_previous():
    assert frame_pairs(1) == ([], [])
    assert frame_pairs(2) == ([1], [0])
    assert frame_pairs(4) == ([1, 2, 2, 3, 3], [0, 0, 1, 0, 2])


def test_a_one_patch_shift_targets_the_neighbouring_patch_with_bilinear_weights():
    E, K, depth, valid = _two_views(baseline=P_ * Z / F_)  # exactly one patch
    index, weight = patch_correspondences(E, K, depth, valid, P_, [1], [0])
    cols = SIDE // P_
    # Query patch centre pixel (4c + 2 + 0.5) lands at 4(c + 1) + 2.5 in frame 0: patch
    # centre units x = c + 1.125, y = r + 0.125.
    for r in range(cols):
        for c in range(cols):
            n = r * cols + c
            w, idx = weight[0, 0, n], index[0, 0, n]
            if c == cols - 1:  # its point leaves frame 0
                assert w.sum() == 0
                continue
            assert math.isclose(w.sum().item(), 1.0, abs_tol=1e-6)
            best = idx[w.argmax()].item()
            assert best == r * cols + c + 1
            # Projections past the last patch centre are clamped onto it.
            x_weight = 1.0 if c + 1 == cols - 1 else 0.875
            y_weight = 1.0 if r == cols - 1 else 0.875
            expected = x_weight * y_weight
            assert math.isclose(w.max().item(), expected, abs_tol=1e-5)


def test_occluded_and_invalid_queries_are_not_counted():
    E, K, depth, valid = _two_views(baseline=P_ * Z / F_)
    depth[0, 0, :, 8:] = 1.0  # something closer covers the right half of frame 0
    valid[0, 1, :4] = False  # the top row of frame 1's patches has no depth
    index, weight = patch_correspondences(E, K, depth, valid, P_, [1], [0])
    counted = (weight[0, 0].sum(-1) > 0).reshape(4, 4)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:, 0] = True  # lands in the left half (columns 0-7 of frame 0), unoccluded
    assert torch.equal(counted, expected)


def test_attention_match_loss_is_the_soft_cross_entropy_of_the_head_within_the_key_frame():
    torch.manual_seed(0)
    B, heads, S, start, N, D = 2, 3, 3, 2, 9, 8
    P = start + N
    q, k = torch.randn(B, heads, S * P, D), torch.randn(B, heads, S * P, D)
    queries, keys = frame_pairs(S)
    index = torch.randint(0, N, (B, len(queries), N, 4))
    weight = torch.rand(B, len(queries), N, 4)
    weight = weight / weight.sum(-1, keepdim=True)
    weight[:, :, :3] = 0  # uncounted queries
    head = 1
    loss = attention_match_loss(q, k, index, weight, queries, keys, P, start, head)
    total, count = 0.0, 0
    for b in range(B):
        for m, (j, i) in enumerate(zip(queries, keys)):
            for n in range(N):
                if weight[b, m, n].sum() == 0:
                    continue
                qv = q[b, head, j * P + start + n]
                logits = k[b, head, i * P + start : (i + 1) * P] @ qv / math.sqrt(D)
                logp = torch.log_softmax(logits, 0)
                total -= (weight[b, m, n] * logp[index[b, m, n]]).sum().item()
                count += 1
    assert math.isclose(loss.item(), total / count, rel_tol=1e-5)


def test_a_head_that_attends_to_the_correspondence_costs_less_than_one_that_does_not():
    E, K, depth, valid = _two_views(baseline=P_ * Z / F_)
    queries, keys = [1], [0]
    index, weight = patch_correspondences(E, K, depth, valid, P_, queries, keys)
    N, start, D = 16, 1, 16
    P = start + N
    k = torch.zeros(1, 1, 2 * P, D)
    k[0, 0, start:P] = torch.eye(N) * 4  # key n of frame 0: a one-hot code
    q_right = torch.zeros(1, 1, 2 * P, D)
    q_right[0, 0, P + start :] = torch.roll(torch.eye(N), 1, dims=1) * 4  # query n looks at key n + 1
    q_wrong = torch.zeros_like(q_right)
    q_wrong[0, 0, P + start :] = torch.eye(N) * 4  # looks at the same position
    right = attention_match_loss(q_right, k, index, weight, queries, keys, P, start)
    wrong = attention_match_loss(q_wrong, k, index, weight, queries, keys, P, start)
    assert right < math.log(N) < wrong


def test_probes_supervise_the_chosen_layers_and_release_their_tensors():
    model = build_model(get_preset("tiny")).train()
    probes = MatchProbes(model, [1, 3], head=0)
    from recon.datasets.synthetic import render_batch

    batch = render_batch([5, 6], 3, 56, 56)
    model(batch["images"], causal=True)
    loss = probes.loss(batch)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    blocks = model.aggregator.global_blocks
    assert blocks[1].attn.qkv.weight.grad.abs().sum() > 0
    assert blocks[3].attn.qkv.weight.grad.abs().sum() > 0
    assert blocks[4].attn.qkv.weight.grad is None  # after the last probed layer: untouched
    assert all(attn.kept_qk is None for attn in probes.attns)
    assert not blocks[0].attn.keep_qk


def test_probes_reject_layers_the_model_does_not_have():
    model = build_model(get_preset("tiny"))
    for layers, head in (([5], 0), ([0], 3)):
        with pytest.raises(ValueError, match="temporal layers"):
            MatchProbes(model, layers, head)


def test_patch_centre_intrinsic_unprojects_the_centre_pixels_as_the_full_frame_does():
    from recon.align.se3 import unproject_depth
    from recon.losses_match import patch_centre_intrinsic

    torch.manual_seed(1)
    depth = torch.rand(2, 28, 42, dtype=torch.float64) + 1
    K = torch.tensor([[30.0, 0, 21.3], [0, 31.0, 13.9], [0, 0, 1]], dtype=torch.float64).expand(2, 3, 3)
    E = torch.eye(4, dtype=torch.float64)[:3].expand(2, 3, 4).clone()
    E[1, :, 3] = torch.tensor([0.3, -0.2, 0.1])
    centres = torch.arange(6) * 7 + 3
    full = unproject_depth(depth, E, K)[:, centres[:4]][:, :, centres]
    grid = unproject_depth(depth[:, centres[:4]][:, :, centres], E, patch_centre_intrinsic(K, 7))
    torch.testing.assert_close(grid, full, rtol=1e-12, atol=1e-12)
