"""A domain classifier: can texture features of 2-D lung patches tell real CT from phantom?

Its cross-validated ROC-AUC is the realism score (0.5: indistinguishable, 1.0: trivially
told apart). Patches are square, ``PATCH_MM`` on a side, centred in the core parenchyma and
resampled to a common pixel size, so pixel size itself is not a clue. Folds are grouped by
slice, so patches of one slice never sit on both sides of a split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

PATCH_PX = 32
#: Patches are resampled to this pixel size (that of the real LIDC-IDRI-0001 slab).
PATCH_PIXEL_MM = 0.703125
#: Share of a patch that must lie in the core parenchyma.
MIN_CORE_SHARE = 0.8


@dataclass(frozen=True)
class Patches:
    """Lung patches (N, PATCH_PX, PATCH_PX) in HU and the slice each came from."""

    images: np.ndarray
    groups: np.ndarray


def sample_patches(
    hu: np.ndarray,
    core: np.ndarray,
    pixel_mm: float,
    n: int,
    rng: np.random.Generator,
    group_prefix: str,
) -> Patches:
    """Up to ``n`` patches from random core-parenchyma centres of a (slice, row, col) volume."""
    half_mm = PATCH_PX * PATCH_PIXEL_MM / 2
    half_px = int(np.ceil(half_mm / pixel_mm))
    centres = np.argwhere(core)
    if len(centres) == 0:
        return Patches(np.zeros((0, PATCH_PX, PATCH_PX), np.float32), np.zeros(0, dtype=object))
    order = rng.permutation(len(centres))
    offsets = (np.arange(PATCH_PX) - (PATCH_PX - 1) / 2) * PATCH_PIXEL_MM / pixel_mm
    images, groups = [], []
    for i in order[: n * 20]:
        k, r, c = centres[i]
        if not (half_px <= r < hu.shape[1] - half_px and half_px <= c < hu.shape[2] - half_px):
            continue
        box = core[k, r - half_px : r + half_px, c - half_px : c + half_px]
        if box.mean() < MIN_CORE_SHARE:
            continue
        rr, cc = np.meshgrid(r + offsets, c + offsets, indexing="ij")
        images.append(ndimage.map_coordinates(hu[k].astype(np.float32), [rr, cc], order=1))
        groups.append(f"{group_prefix}:{k}")
        if len(images) == n:
            break
    return Patches(
        np.asarray(images, dtype=np.float32).reshape(-1, PATCH_PX, PATCH_PX), np.array(groups)
    )


def patch_features(images: np.ndarray) -> np.ndarray:
    """Texture features of each patch: intensity quantiles, high-pass energy, gradient,
    local binary patterns, grey-level co-occurrence and a radial power spectrum."""
    feats = []
    f = np.fft.fftfreq(PATCH_PX)
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    ring = np.minimum((radius / 0.5 * 6).astype(int), 5)
    for img in images:
        x = np.clip(img, -1100, 300)
        q = np.percentile(x, [5, 25, 50, 75, 95])
        highpass = x - ndimage.uniform_filter(x, 5)
        grad = np.hypot(ndimage.sobel(x, 0), ndimage.sobel(x, 1))
        lbp = local_binary_pattern(np.rint(x).astype(np.int32), 8, 1, "uniform")
        lbp_hist = np.bincount(lbp.astype(int).ravel(), minlength=10)[:10] / lbp.size
        levels = np.clip((x + 1100) / 1400 * 31, 0, 31).astype(np.uint8)
        glcm = graycomatrix(levels, [1, 2], [0, np.pi / 2], levels=32, symmetric=True, normed=True)
        glcm_feats = [
            graycoprops(glcm, p).mean()
            for p in ("contrast", "homogeneity", "energy", "correlation")
        ]
        power = np.abs(np.fft.fft2(x - x.mean())) ** 2
        spectrum = np.log1p(np.bincount(ring.ravel(), power.ravel(), 6) / np.bincount(ring.ravel()))
        feats.append(
            np.concatenate(
                [
                    q,
                    [x.mean(), x.std(), highpass.std(), (x > -500).mean()],
                    [grad.mean(), grad.std()],
                    lbp_hist,
                    glcm_feats,
                    spectrum,
                ]
            )
        )
    return np.asarray(feats, dtype=np.float64)


def domain_auc(real: Patches, phantom: Patches, seed: int = 0, folds: int = 5) -> dict:
    """Cross-validated ROC-AUC of two classifiers telling real (1) from phantom (0) patches."""
    x = patch_features(np.concatenate([real.images, phantom.images]))
    y = np.r_[np.ones(len(real.images)), np.zeros(len(phantom.images))]
    groups = np.concatenate([real.groups, phantom.groups])
    n_groups = min(len(np.unique(real.groups)), len(np.unique(phantom.groups)))
    cv = StratifiedGroupKFold(n_splits=min(folds, n_groups), shuffle=True, random_state=seed)
    out = {"n_real_patches": int(len(real.images)), "n_phantom_patches": int(len(phantom.images))}
    models = {
        "gradient_boosting": HistGradientBoostingClassifier(max_iter=200, random_state=seed),
        "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
    }
    for name, model in models.items():
        proba = cross_val_predict(model, x, y, groups=groups, cv=cv, method="predict_proba")[:, 1]
        out[name] = float(roc_auc_score(y, proba))
    out["auc"] = max(out["gradient_boosting"], out["logistic_regression"])
    return out
