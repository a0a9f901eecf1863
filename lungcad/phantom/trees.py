"""Pulmonary vessel and airway trees grown to fill a lung, with Murray's-law radii.

Trees grow by space colonisation (Runions et al., 2007): attractor points are scattered
through the lung; every growth step, each attractor pulls its nearest tree node (within
``influence_mm``), each pulled node grows one step towards the mean direction of its
attractors (plus a little noise: tortuosity), and attractors that a node reaches within
``kill_mm`` are removed. Branching, branching angles and space filling emerge from that.
Radii then follow Murray's law from the leaves up: at every node r³ = Σ r³ of its children,
so r = r_leaf · (leaves below)^(1/3). Airways are laid beside the arteries (the
broncho-arterial bundle) down to the radius at which CT still resolves a lumen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

MURRAY_EXPONENT = 3.0


@dataclass(frozen=True)
class Tree:
    """A tree as nodes with parent links.

    Attributes:
        points_mm: (N, 3) node positions (x, y, z) in the phantom's mm frame.
        parent: (N,) index of each node's parent, -1 for roots.
        radius_mm: (N,) radius of the vessel segment from the node's parent to the node.
    """

    points_mm: np.ndarray
    parent: np.ndarray
    radius_mm: np.ndarray

    def segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, end, radius) of every parent→node segment."""
        child = np.flatnonzero(self.parent >= 0)
        return (
            self.points_mm[self.parent[child]],
            self.points_mm[child],
            self.radius_mm[child],
        )

    def leaves(self) -> np.ndarray:
        """Indices of the nodes without children."""
        has_child = np.zeros(len(self.parent), dtype=bool)
        has_child[self.parent[self.parent >= 0]] = True
        return np.flatnonzero(~has_child)


def sample_inside(
    rng: np.random.Generator,
    inside: Callable[[np.ndarray], np.ndarray],
    lo_mm: np.ndarray,
    hi_mm: np.ndarray,
    n: int,
) -> np.ndarray:
    """``n`` points uniformly distributed in the region where ``inside`` holds, in a box."""
    out: list[np.ndarray] = []
    got = 0
    for _ in range(200):
        cand = rng.uniform(lo_mm, hi_mm, size=(max(4 * n, 1000), 3))
        cand = cand[inside(cand)]
        out.append(cand)
        got += len(cand)
        if got >= n:
            break
    points = np.concatenate(out)[:n]
    return points


def scatter(
    rng: np.random.Generator,
    inside: Callable[[np.ndarray], np.ndarray],
    lo_mm: np.ndarray,
    hi_mm: np.ndarray,
    spacing_mm: float,
) -> np.ndarray:
    """Uniform points in the region, one per ``spacing_mm``³ of it (its volume estimated
    from 4000 random points of the box)."""
    share = inside(rng.uniform(lo_mm, hi_mm, (4000, 3))).mean()
    n = int(np.prod(hi_mm - lo_mm) * share / spacing_mm**3)
    return sample_inside(rng, inside, lo_mm, hi_mm, n) if n else np.zeros((0, 3))


def grow_tree(
    rng: np.random.Generator,
    roots_mm: np.ndarray,
    attractors_mm: np.ndarray,
    step_mm: float = 1.5,
    influence_mm: float = 14.0,
    kill_mm: float = 3.0,
    tortuosity: float = 0.18,
    max_steps: int = 400,
) -> tuple[np.ndarray, np.ndarray]:
    """Space colonisation from ``roots_mm`` towards ``attractors_mm``.

    Returns:
        (points (N, 3), parent (N,)): the nodes, roots first with parent -1.
    """
    roots = np.asarray(roots_mm, dtype=np.float64)
    chunks, parents = [roots], [np.full(len(roots), -1, dtype=np.int64)]
    n_nodes = len(roots)
    live = np.asarray(attractors_mm, dtype=np.float64)
    # Each attractor's nearest node so far, kept up to date with every step's new nodes
    # (a k-d tree of the new nodes only, instead of rebuilding one of the whole tree).
    best_d, best_i = cKDTree(roots).query(live)
    keep = best_d > kill_mm
    live, best_d, best_i = live[keep], best_d[keep], best_i[keep]
    all_points = roots
    for _ in range(max_steps):
        pulled = best_d <= influence_mm
        if not pulled.any():
            break  # what is left is out of every node's reach
        nodes, inverse = np.unique(best_i[pulled], return_inverse=True)
        pull = live[pulled] - all_points[best_i[pulled]]
        pull /= np.linalg.norm(pull, axis=1, keepdims=True) + 1e-9
        direction = np.zeros((len(nodes), 3))
        np.add.at(direction, inverse, pull)
        direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-9
        direction += rng.normal(0.0, tortuosity, direction.shape)
        direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-9
        new = all_points[nodes] + step_mm * direction
        chunks.append(new)
        parents.append(nodes.astype(np.int64))
        all_points = np.concatenate([all_points, new])
        d_new, i_new = cKDTree(new).query(live, distance_upper_bound=influence_mm)
        closer = d_new < best_d
        best_d = np.where(closer, d_new, best_d)
        best_i = np.where(closer, n_nodes + np.minimum(i_new, len(new) - 1), best_i)
        n_nodes += len(new)
        keep = d_new > kill_mm
        live, best_d, best_i = live[keep], best_d[keep], best_i[keep]
        if len(live) == 0:
            break
    return all_points, np.concatenate(parents)


def smooth_tree(points: np.ndarray, parent: np.ndarray, passes: int = 4) -> np.ndarray:
    """Laplacian smoothing of every node with one child (keeps roots, branch points, leaves)."""
    n_children = np.bincount(parent[parent >= 0], minlength=len(parent))
    child_of = np.full(len(parent), -1, dtype=np.int64)
    has_parent = np.flatnonzero(parent >= 0)
    child_of[parent[has_parent]] = has_parent
    chain = (parent >= 0) & (n_children == 1)
    idx = np.flatnonzero(chain)
    out = points.copy()
    for _ in range(passes):
        out[idx] = 0.5 * out[idx] + 0.25 * (out[parent[idx]] + out[child_of[idx]])
    return out


def murray_radii(
    parent: np.ndarray, leaf_radius_mm: float, leaf_weight: np.ndarray | None = None
) -> np.ndarray:
    """r = r_leaf · (leaves below)^(1/3): Murray's law (r³ = Σ children r³) at every node.

    Args:
        parent: parent index of every node (-1 for roots), parents before children.
        leaf_radius_mm: radius of a leaf of weight 1.
        leaf_weight: per node, how many unit leaves a leaf stands for (a leaf grown among
            sparser attractors supplies more lung); 1 by default.
    """
    n = len(parent)
    leaves_below = np.zeros(n)
    has_child = np.zeros(n, dtype=bool)
    has_child[parent[parent >= 0]] = True
    leaves_below[~has_child] = 1.0 if leaf_weight is None else leaf_weight[~has_child]
    # Nodes are created after their parents, so one pass from the last node up suffices.
    for i in range(n - 1, -1, -1):
        p = parent[i]
        if p >= 0:
            leaves_below[p] += leaves_below[i]
    return leaf_radius_mm * leaves_below ** (1.0 / MURRAY_EXPONENT)


def vessel_tree(
    rng: np.random.Generator,
    roots_mm: np.ndarray,
    attractors_mm: np.ndarray,
    leaf_radius_mm: float,
    step_mm: float = 1.5,
    influence_mm: float = 14.0,
    leaf_weight: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Tree:
    """Grow, smooth and give Murray radii to one vessel tree.

    ``leaf_weight`` maps node positions (N, 3) to the unit leaves each would stand for.
    """
    points, parent = grow_tree(
        rng, roots_mm, attractors_mm, step_mm=step_mm, influence_mm=influence_mm
    )
    points = smooth_tree(points, parent)
    weight = None if leaf_weight is None else leaf_weight(points)
    return Tree(points, parent, murray_radii(parent, leaf_radius_mm, weight))


def airway_beside(
    rng: np.random.Generator,
    artery: Tree,
    min_artery_radius_mm: float = 2.0,
    lumen_ratio: float = 0.75,
    wall_ratio: float = 0.18,
    gap_mm: float = 0.3,
) -> tuple[Tree, np.ndarray]:
    """The bronchi that run beside an artery tree, down to ``min_artery_radius_mm``.

    Each bronchus follows its artery at a constant side (a per-root random direction made
    perpendicular to the local course), touching it: centre distance = artery radius +
    outer bronchus radius + ``gap_mm``.

    Returns:
        (lumen tree: radii are the lumen radii, outer radius per node including the wall).
    """
    keep = artery.radius_mm >= min_artery_radius_mm
    keep &= (artery.parent < 0) | keep[np.maximum(artery.parent, 0)]
    old = np.flatnonzero(keep)
    new_index = np.full(len(keep), -1, dtype=np.int64)
    new_index[old] = np.arange(len(old))
    parent = np.where(artery.parent[old] >= 0, new_index[np.maximum(artery.parent[old], 0)], -1)
    # The side each bronchus keeps: one random direction per root, inherited down the tree.
    side = np.zeros((len(old), 3))
    for i in range(len(old)):
        side[i] = rng.normal(size=3) if parent[i] < 0 else side[parent[i]]
    course = np.zeros((len(old), 3))
    pts = artery.points_mm[old]
    has = parent >= 0
    course[has] = pts[has] - pts[parent[has]]
    course[~has] = course[has][0] if has.any() else np.array([1.0, 0.0, 0.0])
    course /= np.linalg.norm(course, axis=1, keepdims=True) + 1e-9
    perp = side - (side * course).sum(axis=1, keepdims=True) * course
    perp /= np.linalg.norm(perp, axis=1, keepdims=True) + 1e-9
    lumen = lumen_ratio * artery.radius_mm[old]
    outer = lumen * (1.0 + wall_ratio) + 0.15
    offset = artery.radius_mm[old] + outer + gap_mm
    return Tree(pts + perp * offset[:, None], parent, lumen), outer
