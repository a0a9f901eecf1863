"""Where does Grad-CAM point on a tiny NoduleNet trained on synthetic spheres?

Issue 12 asks for a test in which a tiny network, trained on cubes holding a bright sphere
at a random place, has its detection map's maximum inside the sphere. This script is that
experiment, kept so it can be rerun: it trains the network (lung noise, a chest wall along
one face, vessel-like tubes in most cubes, a soft-tissue sphere in half of them), then prints,
for spheres at known off-centre voxels, how far the map's maximum lies from the sphere's
centre, for the trained weights and for random ones, per layer and method.

    python scripts/gradcam_toy_spheres.py --steps 150 --seeds 0 1 2

What it showed (2-core CPU, issue 12; `--steps 150 --seeds 0`): the trained maps peak
0-20 mm from the sphere's centre (mostly 6-14 mm, about one map cell towards the cube's
origin; inside the radius-5 sphere for 2 of the 20 layer/method/position cases), the
random-weight maps 31-61 mm away. Other seeds, sphere sizes and centred training (tried
while writing issue 12) were no better.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from lungcad.explain.cam import METHODS, CamSettings, CubeExplainer, randomized_like
from lungcad.training.augment import window_hu
from lungcad.training.config import ModelConfig
from lungcad.training.model import NoduleNet

SIZE = 64
WINDOW = (-1000.0, 400.0)
TEST_CENTRES = [(16, 48, 32), (24, 24, 40), (40, 16, 24), (20, 44, 48), (36, 28, 20)]


def toy_cube(rng: np.random.Generator, centre=None, radius: float = 5.0) -> np.ndarray:
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


def train(steps: int, seed: int) -> NoduleNet:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = NoduleNet(ModelConfig(widths=(8, 16, 32, 32), feature_dim=16, dropout=0.0))
    opt = torch.optim.AdamW(net.parameters(), 3e-3)
    for _ in range(steps):
        labels = np.arange(8) % 2 == 0
        cubes = [
            toy_cube(rng, rng.integers(12, 52, 3) if y else None, rng.uniform(3, 7)) for y in labels
        ]
        x = window_hu(torch.from_numpy(np.stack(cubes))[:, None].float(), WINDOW)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net(x)[0], torch.from_numpy(labels.astype(np.float32))
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--layers", nargs="+", default=["backbone.layer2", "backbone.layer3"])
    args = parser.parse_args()
    for seed in args.seeds:
        net = train(args.steps, seed)
        tests = [toy_cube(np.random.default_rng(7), c) for c in TEST_CENTRES]
        for layer in args.layers:
            for method in METHODS:
                for name, model in (("trained", net), ("random", randomized_like(net, seed))):
                    maps = CubeExplainer(model, WINDOW, CamSettings(layer=layer, method=method))(
                        np.stack(tests)
                    )
                    dist = [
                        float(np.linalg.norm(np.subtract(np.unravel_index(m.argmax(), m.shape), c)))
                        for m, c in zip(maps, TEST_CENTRES)
                    ]
                    print(
                        f"seed {seed} {layer} {method:9s} {name:7s} peak-to-sphere mm: "
                        + ", ".join(f"{d:.1f}" for d in dist),
                        flush=True,
                    )


if __name__ == "__main__":
    main()
