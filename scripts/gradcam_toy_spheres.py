"""Where does Grad-CAM point on a tiny NoduleNet trained on synthetic spheres?

Does a tiny network, trained on cubes holding a bright sphere at a random place, have its
detection map's maximum inside the sphere? This script is that experiment: it trains the
network (lung noise, a chest wall along one face, vessel-like tubes in most cubes, a
soft-tissue sphere in half of them), then prints,
for spheres at known off-centre voxels, how far the map's maximum lies from the sphere's
centre, for the trained weights and for random ones, per layer and method.

    PYTHONPATH=. python scripts/gradcam_toy_spheres.py --steps 150 --seeds 0 1 2

What it showed (2-core CPU; `--steps 150 --seeds 0`): the trained maps peak
0-20 mm from the sphere's centre (mostly 6-14 mm, about one map cell towards the cube's
origin; inside the radius-5 sphere for 2 of the 20 layer/method/position cases), the
random-weight maps 31-61 mm away. Other seeds, sphere sizes and centred training were no
better.
"""

from __future__ import annotations

import argparse

import numpy as np

from lungcad.core.model.cam import METHODS, CamSettings, CubeExplainer, randomized_like
from tests.explain.toy_spheres import TEST_CENTRES, WINDOW, toy_cube, train_toy_net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--layers", nargs="+", default=["backbone.layer2", "backbone.layer3"])
    args = parser.parse_args()
    for seed in args.seeds:
        net = train_toy_net(args.steps, seed)
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
                    at_centre = [float(m[tuple(c)]) for m, c in zip(maps, TEST_CENTRES)]
                    print(
                        f"seed {seed} {layer} {method:9s} {name:7s} peak-to-sphere mm: "
                        + ", ".join(f"{d:.1f}" for d in dist)
                        + "; map at the sphere's centre (max 1): "
                        + ", ".join(f"{v:.2f}" for v in at_centre),
                        flush=True,
                    )


if __name__ == "__main__":
    main()
