"""TSDF fusion of confidence-masked depth maps into a coloured triangle mesh (open3d).

Frames are integrated as they arrive into a sparse voxel-block grid, so memory follows the
size of the observed surface, not the number of frames. This uses open3d's tensor
`VoxelBlockGrid`: the legacy `ScalableTSDFVolume` extracts empty meshes with the open3d 0.20
wheel (even for a flat wall in front of the camera), and upstream marks it for deprecation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.atomic import atomic_path


class TSDFMesher:
    """Sparse TSDF with voxel `voxel_size`, truncation `trunc_voxels` voxels; a surface needs
    `min_weight` observations (frames) to be meshed."""

    def __init__(self, voxel_size: float, trunc_voxels: float = 5.0, depth_max: float | None = None,
                 min_weight: float = 1.0) -> None:  # fmt: skip
        import open3d as o3d
        import open3d.core as o3c

        if not voxel_size > 0:
            raise ValueError(f"mesh voxel size must be positive, got {voxel_size}")
        self.voxel_size, self.trunc_voxels, self.min_weight = float(voxel_size), float(trunc_voxels), min_weight
        self.depth_max = float(depth_max) if depth_max is not None else 1e9
        self._grid = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=(1, 1, 3), voxel_size=self.voxel_size, block_resolution=8, block_count=1024,
            device=o3c.Device("CPU:0"),
        )  # fmt: skip (the block hash map grows as needed)
        self.num_frames = 0

    def integrate(self, depth: np.ndarray, image: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray) -> None:
        """Depth [H, W] (0 or NaN = skip), image [H, W, 3] float RGB in [0, 1], intrinsic [3, 3],
        extrinsic [3, 4] camera-from-world.

        open3d's TSDF kernel reads the depth pixel floor(u), floor(v) of a projection: pixel i
        spans [i, i + 1), the project's corner convention, so the intrinsics go in unchanged.
        """
        import open3d as o3d
        import open3d.core as o3c

        depth = np.ascontiguousarray(np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0), dtype=np.float32)
        if not (depth > 0).any():
            return
        color = np.ascontiguousarray(np.clip(image, 0.0, 1.0), dtype=np.float32)
        cam_from_world = np.eye(4)
        cam_from_world[:3, :4] = extrinsic
        K = o3c.Tensor(np.asarray(intrinsic, np.float64))
        E = o3c.Tensor(cam_from_world)
        depth_image, color_image = o3d.t.geometry.Image(depth), o3d.t.geometry.Image(color)
        blocks = self._grid.compute_unique_block_coordinates(depth_image, K, E, 1.0, self.depth_max, self.trunc_voxels)
        self._grid.integrate(blocks, depth_image, color_image, K, E, 1.0, self.depth_max, self.trunc_voxels)
        self.num_frames += 1

    def write(self, path: Path) -> int:
        """Extract the mesh and write it as binary PLY; returns the number of triangles."""
        import open3d as o3d

        if self._grid.hashmap().size() == 0:  # nothing integrated: open3d cannot extract from an empty grid
            mesh = o3d.geometry.TriangleMesh()
        else:
            mesh = self._grid.extract_triangle_mesh(weight_threshold=self.min_weight).to_legacy()
        with atomic_path(path) as tmp:
            if len(mesh.triangles) == 0:  # open3d refuses to write an empty mesh; an empty file is still valid
                tmp.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty double x\n"
                                b"property double y\nproperty double z\nelement face 0\n"
                                b"property list uchar int vertex_indices\nend_header\n")  # fmt: skip
            elif not o3d.io.write_triangle_mesh(str(tmp), mesh, write_ascii=False):
                raise OSError(f"open3d could not write the mesh: {path}")
        return len(mesh.triangles)
