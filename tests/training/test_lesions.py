"""Synthetic lesions written into negative training cubes."""

from __future__ import annotations

import torch

from lungcad.training.lesions import insert_lesions

WINDOW = (-1000.0, 400.0)


def _batch(n: int = 64, size: int = 64):
    g = torch.Generator().manual_seed(1)
    lung = (-860.0 + 30 * torch.randn(n, 1, size, size, size, generator=g) - WINDOW[0]) / 1400
    label = torch.zeros(n)
    label[:4] = 1  # four nodule cubes stay as they are
    return lung.clamp(0, 1), label, torch.ones(n), torch.ones(n, 9), torch.zeros_like(lung)


def test_negative_cubes_become_lesions_with_their_own_outline() -> None:
    x, label, has_mal, has_attr, masks = _batch()
    before = x.clone()
    changed = insert_lesions(
        x, label, has_mal, has_attr, masks, 0.8, WINDOW, torch.Generator().manual_seed(0)
    )
    assert 40 <= changed <= 60
    assert torch.equal(x[:4], before[:4]) and label[:4].eq(1).all()  # nodules untouched
    touched = (x != before).flatten(1).any(1)
    assert int(touched.sum()) == changed
    became = torch.nonzero(label[4:] == 1).flatten() + 4
    stayed = torch.nonzero(touched & (label == 0)).flatten()  # granulomas: negatives
    assert len(became) > 0 and len(stayed) > 0
    # A new positive has its own outline, no malignancy or attribute target; its voxels
    # inside the outline are denser than the lung they replaced.
    for row in became.tolist():
        inside = masks[row, 0] > 0
        assert inside.sum() >= 100 and has_mal[row] == 0 and has_attr[row].eq(0).all()
        assert x[row, 0][inside].mean() > before[row, 0][inside].mean() + 0.07  # >= 100 HU
    # A granuloma is small, calcified (at the window's top) and has no outline.
    for row in stayed.tolist():
        assert masks[row].sum() == 0 and has_mal[row] == 1
        assert (x[row] >= 0.99).sum() < 5**3
    # Masses up to 60 mm: some outlines fill much of the cube.
    assert max(int(masks[r].sum()) for r in became.tolist()) > 30**3
    # The same generator seed draws the same lesions.
    x2, label2, has_mal2, has_attr2, masks2 = _batch()
    insert_lesions(
        x2, label2, has_mal2, has_attr2, masks2, 0.8, WINDOW, torch.Generator().manual_seed(0)
    )
    assert torch.equal(x2, x) and torch.equal(masks2, masks)
