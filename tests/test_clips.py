"""Training clips from real-format datasets."""

import numpy as np
import torch

from recon.datasets import Frame, Sequence
from recon.datasets.clips import ClipSampler, depth_to_model
from recon.preprocess import preprocess_frame


class _Ramp(Sequence):
    """Frames whose depth encodes the original pixel column: depth = 1 + u / 100."""

    name = "ramp"

    def __init__(self, n=10, hw=(60, 90)):
        self.n, self.hw = n, hw

    def __len__(self):
        return self.n

    def frame(self, i):
        H, W = self.hw
        u = np.arange(W, dtype=np.float32) + 0.5
        depth = np.broadcast_to(1 + u / 100, (H, W)).copy()
        K = np.array([[50.0, 0, W / 2], [0, 50.0, H / 2], [0, 0, 1]])
        E = np.hstack([np.eye(3), [[i * 0.1], [0], [0]]])
        image = np.full((H, W, 3), i * 10, np.uint8)
        return Frame(image=image, timestamp=float(i), index=i, depth=depth, intrinsic=K, extrinsic=E)


def test_depth_follows_the_image_transform():
    seq = _Ramp(hw=(60, 90))
    frame = seq[0]
    pre = preprocess_frame(frame.image, mode="crop", size=(28, 28))
    d = depth_to_model(frame.depth, pre.transform)
    H, W = d.shape
    centres = np.stack([np.arange(W) + 0.5, np.full(W, H / 2)], axis=1)
    u_orig = pre.transform.to_original(centres)[:, 0]
    expected = 1 + (np.floor(u_orig) + 0.5) / 100  # nearest original pixel
    assert np.allclose(d[H // 2], expected, atol=0.011)  # within one original pixel
    assert (d > 0).all()


def test_sampler_shapes_and_consecutive_frames():
    sampler = ClipSampler([_Ramp(n=12)], height=28, width=42, seed=0, max_stride=2)
    batch = sampler(step=0, B=3, S=4)
    assert batch["images"].shape == (3, 4, 3, 28, 42)
    assert batch["depth"].shape == (3, 4, 28, 42) and batch["valid"].all()
    assert batch["intrinsic"].shape == (3, 4, 3, 3) and batch["extrinsic"].shape == (3, 4, 3, 4)
    # Frames of a clip are evenly strided: camera x-offsets step by 0.1 * stride.
    steps = batch["extrinsic"][:, 1:, 0, 3] - batch["extrinsic"][:, :-1, 0, 3]
    assert torch.allclose(steps, steps[:, :1].expand_as(steps))
    assert set(torch.round(steps[:, 0] * 10).tolist()) <= {1.0, 2.0}
