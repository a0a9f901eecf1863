"""Synthetic cubes with a soft-tissue sphere at a known voxel, and a tiny NoduleNet trained on
them: the known-geometry case for Grad-CAM (``test_cam.py``, ``scripts/gradcam_toy_spheres.py``).

Each 64³ cube is lung-like noise with a chest wall along one face and, in most cubes, a
vessel-like tube; half of them hold a sphere of radius 3-7 voxels at a random place at least
12 voxels inside the cube. The network learns to tell the two halves apart.
"""

from __future__ import annotations

import numpy as np
import torch

from lungcad.config import ModelConfig
from lungcad.core.model.network import NoduleNet, window_hu

SIZE = 64
WINDOW = (-1000.0, 400.0)
#: Off-centre sphere centres (voxels z, y, x) that maps are checked on.
TEST_CENTRES = [(16, 48, 32), (24, 24, 40), (40, 16, 24), (20, 44, 48), (36, 28, 20)]


def toy_cube(rng: np.random.Generator, centre=None, radius: float = 5.0) -> np.ndarray:
    """One int16 HU cube; with ``centre`` a sphere of ``radius`` voxels (40 HU) there."""
    grid = np.indices((SIZE,) * 3)
    cube = -850 + rng.normal(0, 30, (SIZE,) * 3)
    cube[:, :, :6] = 40 + rng.normal(0, 20, (SIZE, SIZE, 6))  # chest wall
    if rng.random() < 0.7:  # a vessel along x
        tube = np.hypot(grid[0] - rng.integers(12, 52), grid[1] - rng.integers(12, 52)) <= 1.5
        cube[tube] = 40
    if centre is not None:
        d = np.sqrt(((grid - np.asarray(centre)[:, None, None, None]) ** 2).sum(0))
        cube[d <= radius] = 40
    return cube.astype(np.int16)


def train_toy_net(steps: int = 150, seed: int = 0, batch: int = 8) -> NoduleNet:
    """A NoduleNet (widths 8-16-32-32) trained for ``steps`` AdamW steps to find spheres."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = NoduleNet(ModelConfig(widths=(8, 16, 32, 32), feature_dim=16, dropout=0.0))
    opt = torch.optim.AdamW(net.parameters(), 3e-3)
    labels = np.arange(batch) % 2 == 0
    target = torch.from_numpy(labels.astype(np.float32))
    for _ in range(steps):
        cubes = [
            toy_cube(rng, rng.integers(12, 52, 3) if y else None, rng.uniform(3, 7)) for y in labels
        ]
        x = window_hu(torch.from_numpy(np.stack(cubes))[:, None].float(), WINDOW)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x)[0], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()
