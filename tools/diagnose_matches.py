"""Do a model's temporal attention heads find correspondences, and what poses do they give?

    python tools/diagnose_matches.py --model runs/tiny/model.safetensors [--layers 1,2,3 --head 0]

For weights trained with the correspondence loss (`recon train --match-weight`, which
supervises head --head of the temporal layers --layers; recon/losses_match.py). For each of
the 12 held-out benchmark scenes, 48 frames at 224 px through the block-causal batch forward:
  match@1 prev / first  fraction of patches whose attention peak (logits of the probed layers
                        summed) lies within one patch of the true correspondence in the previous
                        frame / in frame 0, over the patches whose point is visible there
  ATE % head / matches  ATE (Sim(3)-aligned, % of path length) of the camera head, and of the
                        poses from the attention matches: each frame's patch centres lifted with
                        the predicted depth and intrinsics, PnP with RANSAC (OpenCV) against
                        their matched positions in the previous frame, chained from frame 0
  RPE rot head / matches frame-to-frame rotation error, degrees (RMSE)
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

NEIGHBOURS = torch.tensor([-1, 0, 1])


def match_positions(logits: torch.Tensor, rows: int, cols: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """Attention logits [N, N] (queries x key patches, row-major rows x cols grid) -> the
    matched pixel position of each query [N, 2] (x, y: the softmax-weighted mean of the patch
    centres in the 3 x 3 neighbourhood of the peak) and the peak patch [N]."""
    prob = logits.float().softmax(-1).reshape(-1, rows, cols)
    peak = prob.flatten(1).argmax(-1)
    r = (peak // cols)[:, None] + NEIGHBOURS
    c = (peak % cols)[:, None] + NEIGHBOURS
    inside = ((r >= 0) & (r < rows))[:, :, None] & ((c >= 0) & (c < cols))[:, None, :]
    n = torch.arange(len(peak))[:, None, None]
    w = prob[n, r.clamp(0, rows - 1)[:, :, None], c.clamp(0, cols - 1)[:, None, :]] * inside
    w = w / w.sum((1, 2), keepdim=True)
    y = (w * (r[:, :, None] + 0.5)).sum((1, 2)) * patch
    x = (w * (c[:, None, :] + 0.5)).sum((1, 2)) * patch
    return torch.stack((x, y), -1).numpy(), peak.numpy()


def match_accuracy(peak: np.ndarray, index: np.ndarray, weight: np.ndarray, cols: int) -> float:
    """Fraction of counted queries (weight [N, 4] summing to 1; `patch_correspondences`) whose
    peak patch [N] is within one row and column of the target's heaviest patch (index [N, 4])."""
    counted = weight.sum(-1) > 0
    target = np.take_along_axis(index, weight.argmax(-1)[:, None], -1)[:, 0]
    near = (np.abs(peak // cols - target // cols) <= 1) & (np.abs(peak % cols - target % cols) <= 1)
    return float(near[counted].mean()) if counted.any() else float("nan")


def chain_pnp(points: np.ndarray, matches: np.ndarray, intrinsic: np.ndarray, min_inliers: int = 12,
              reprojection_px: float = 6.0) -> np.ndarray:  # fmt: skip
    """Poses from frame-to-frame matches. points [S, N, 3]: frame j's points in its camera
    frame; matches [S, N, 2]: their pixel positions in frame j-1 (row 0 unused); intrinsic
    [S, 3, 3]. Returns camera-from-world [S, 3, 4] with world = frame 0; a frame whose PnP
    finds fewer than `min_inliers` inliers keeps the previous frame's pose."""
    poses = [np.eye(4)]
    for j in range(1, len(points)):
        X, uv, K = (np.ascontiguousarray(a, np.float64) for a in (points[j], matches[j], intrinsic[j - 1]))
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(X, uv, K, None, reprojectionError=reprojection_px,
                                                     iterationsCount=300, flags=cv2.SOLVEPNP_EPNP)  # fmt: skip
        if not ok or inliers is None or len(inliers) < min_inliers:
            poses.append(poses[-1].copy())
            continue
        inl = inliers[:, 0]
        _, rvec, tvec = cv2.solvePnP(X[inl], uv[inl], K, None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE)
        prev_from_cur = np.eye(4)
        prev_from_cur[:3, :3], prev_from_cur[:3, 3] = cv2.Rodrigues(rvec)[0], tvec[:, 0]
        poses.append(np.linalg.inv(prev_from_cur) @ poses[-1])
    return np.stack(poses)[:, :3]


def patch_centre_points(depth: np.ndarray, intrinsic: np.ndarray, patch: int) -> np.ndarray:
    """Depth [S, H, W] and intrinsic [S, 3, 3] -> camera-frame points [S, N, 3] at the pixel at
    each patch's centre (row-major patches)."""
    from recon.align.prediction import camera_points

    H, W = depth.shape[-2:]
    py, px = np.arange(H // patch) * patch + patch // 2, np.arange(W // patch) * patch + patch // 2
    return camera_points(depth, intrinsic)[:, py][:, :, px].reshape(len(depth), -1, 3)


def trajectory_errors(extrinsic: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """(ATE % of path after Sim(3) alignment, RPE rotation RMSE in degrees), as the benchmark."""
    from recon.datasets.trajectory import Trajectory
    from recon.eval import sim3_scores

    t = np.arange(len(gt), dtype=np.float64)
    scores = sim3_scores(Trajectory.from_extrinsics(gt, t), Trajectory.from_extrinsics(extrinsic, t))[0]
    return scores["ate_pct_of_path"], scores["rpe_rot_rmse_deg"]


def main() -> int:
    from recon.benchmark import BENCHMARK_SCENES
    from recon.checkpoint import load_model
    from recon.datasets.synthetic import render_batch
    from recon.losses_match import MatchProbes, patch_correspondences

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--layers", default="1,2,3")
    p.add_argument("--head", type=int, default=0)
    p.add_argument("--frames", type=int, default=48)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    model, _ = load_model(args.model)
    model.eval()
    probes = MatchProbes(model, [int(i) for i in args.layers.split(",")], args.head)
    patch, start = probes.patch, probes.patch_start
    S = args.frames
    print(f"{'scene':28s} match@1 prev  first   ATE % head  matches   RPE rot head  matches")
    rows = []
    for seed, family, trajectory in BENCHMARK_SCENES:
        batch = render_batch([seed], S, 224, 224, families=[family], trajectories=[trajectory])
        out = model(batch["images"], causal=True)
        g = 224 // patch
        qs = [a.kept_qk[0][0, args.head].reshape(S, -1, a.kept_qk[0].shape[-1])[:, start:] for a in probes.attns]
        ks = [a.kept_qk[1][0, args.head].reshape(S, -1, a.kept_qk[1].shape[-1])[:, start:] for a in probes.attns]
        scale = qs[0].shape[-1] ** -0.5
        # Pairs m = 0 .. S-2: frame m + 1 against the previous frame; m = S-1 .. 2S-3: against frame 0.
        queries, keys = [*range(1, S)] * 2, [*range(S - 1)] + [0] * (S - 1)
        index, weight = patch_correspondences(batch["extrinsic"], batch["intrinsic"], batch["depth"],
                                              batch["valid"], patch, queries, keys)  # fmt: skip
        matches, acc = np.zeros((S, g * g, 2)), {"prev": [], "first": []}
        for m, (j, i) in enumerate(zip(queries, keys)):
            uv, peak = match_positions(sum(q[j] @ k[i].T for q, k in zip(qs, ks)) * scale, g, g, patch)
            name = "prev" if m < S - 1 else "first"
            acc[name].append(match_accuracy(peak, index[0, m].numpy(), weight[0, m].numpy(), g))
            if m < S - 1:
                matches[j] = uv
        K, gt = out["intrinsic"][0].numpy(), batch["extrinsic"][0].numpy().astype(np.float64)
        from_matches = chain_pnp(patch_centre_points(out["depth"][0].numpy(), K, patch), matches, K)
        head_ate, head_rot = trajectory_errors(out["extrinsic"][0].numpy().astype(np.float64), gt)
        match_ate, match_rot = trajectory_errors(from_matches, gt)
        row = [np.nanmean(acc["prev"]), np.nanmean(acc["first"]), head_ate, match_ate, head_rot, match_rot]
        rows.append(row)
        print(f"{family + '-' + trajectory + '-' + str(seed):28s} {row[0]:10.3f} {row[1]:6.3f} {row[2]:12.1f} "
              f"{row[3]:8.1f} {row[4]:14.2f} {row[5]:8.2f}", flush=True)  # fmt: skip
    m = np.nanmean(np.array(rows), axis=0)
    print(f"{'mean':28s} {m[0]:10.3f} {m[1]:6.3f} {m[2]:12.1f} {m[3]:8.1f} {m[4]:14.2f} {m[5]:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
