"""The fused point cloud shared by the exports and the live map (recon.points.VoxelCloud)."""

from __future__ import annotations

import numpy as np
import pytest

from recon.points import VoxelCloud, voxel_merge


def test_averages_per_voxel_weighted_by_raw_points() -> None:
    cloud = VoxelCloud(voxel=1.0, budget=100)
    cloud.add(np.array([[0.1, 0.1, 0.1], [0.3, 0.5, 0.7], [5.5, 0.5, 0.5]]), np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0]]))
    cloud.add(np.array([[0.2, 0.3, 0.4], [np.nan, 0, 0]]), np.array([[1, 1, 1], [0, 0, 0]]))  # NaN row dropped
    points, colors = cloud.points()
    order = np.argsort(points[:, 0])
    # voxel (0,0,0): three raw points, mean (0.2, 0.3, 0.4); colours (0, 1, 1) / 3
    np.testing.assert_allclose(points[order], [[0.2, 0.3, 0.4], [5.5, 0.5, 0.5]], atol=1e-6)
    np.testing.assert_allclose(colors[order], [[2 / 3] * 3, [1, 0, 0]], atol=1e-6)


def test_stays_within_budget_and_coarsens_rarely() -> None:
    rng = np.random.default_rng(0)
    cloud = VoxelCloud(voxel=1e-3, budget=4000, dtype=np.float64)
    voxels = set()
    for _ in range(20):
        cloud.add(rng.normal(size=(3000, 3)), rng.random((3000, 3)))
        assert len(cloud) <= 4000
        voxels.add(cloud.voxel)
    assert cloud.voxel > 1e-3 and len(voxels) <= 4  # coarsening to half the budget leaves room
    points, _ = cloud.points()
    assert points.dtype == np.float64 and 0 < len(points) <= 4000


def test_merging_in_chunks_equals_merging_at_once() -> None:
    rng = np.random.default_rng(1)
    chunks = [(rng.normal(size=(3000, 3)), rng.random((3000, 3))) for _ in range(6)]
    cloud = VoxelCloud(voxel=0.5, budget=10**6, dtype=np.float64)
    for points, colors in chunks:
        cloud.add(points, colors)
        cloud.points()  # merges now and then must not change the result
    all_points, all_colors = (np.concatenate(x) for x in zip(*chunks))
    expected, expected_colors, _ = voxel_merge(all_points, all_colors, np.ones(len(all_points)), 0.5)
    got, got_colors = cloud.points()
    order_got, order_exp = np.lexsort(got.T), np.lexsort(expected.T)
    np.testing.assert_allclose(got[order_got], expected[order_exp], atol=1e-12)
    np.testing.assert_allclose(got_colors[order_got], expected_colors[order_exp], atol=1e-6)


def test_under_budget_nothing_coarsens_over_budget_half_is_kept() -> None:
    rng = np.random.default_rng(2)
    points, colors = rng.uniform(0, 1, (5000, 3)), rng.random((5000, 3))
    cloud = VoxelCloud(1e-4, budget=3000)
    cloud.add(points[:2900], colors[:2900])
    assert len(cloud.points()[0]) == 2900 and cloud.voxel == 1e-4
    cloud.add(points[2900:], colors[2900:])  # over budget: coarsened to at most half of it
    assert 0 < len(cloud.points()[0]) <= 1500 and cloud.voxel > 1e-4


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="voxel size"):
        VoxelCloud(0.0, 10)
    with pytest.raises(ValueError, match="budget"):
        VoxelCloud(1.0, 1)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        VoxelCloud(1.0, 10).add(np.zeros((4, 2)), np.zeros((4, 2)))


def test_points_beyond_the_packed_key_range_merge_like_the_others() -> None:
    rng = np.random.default_rng(3)
    chunks = [(rng.normal(size=(500, 3)), rng.random((500, 3))) for _ in range(4)]
    chunks[1][0][0] = (1e9, 0.0, 0.0)  # 1e9 voxels from the origin: no packed key
    cloud = VoxelCloud(voxel=0.25, budget=10**6, dtype=np.float64)
    for points, colors in chunks:
        cloud.add(points, colors)
        cloud.points()
    all_points, all_colors = (np.concatenate(x) for x in zip(*chunks))
    expected, _, _ = voxel_merge(all_points, all_colors, np.ones(len(all_points)), 0.25)
    got, _ = cloud.points()
    np.testing.assert_allclose(got[np.lexsort(got.T)], expected[np.lexsort(expected.T)], atol=1e-9)
