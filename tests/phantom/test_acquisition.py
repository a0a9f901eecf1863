"""The phantom's drawn acquisitions and background lung states."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from lungcad.config.schema import RandomiseConfig
from lungcad.core.annotations.nodules import cluster_nodules, nodule_center_mm
from lungcad.core.io.series import read_series
from lungcad.phantom.acquisition import Acquisition, draw_acquisition
from lungcad.phantom.scanner import nps_noise
from lungcad.phantom.thorax import BUBBLE_CLEARANCE_MM, ThoraxPhantom
from lungcad.phantom.writer import choose_slab, write_phantom, write_phantom_scan
from tests.conftest import SERIES_0001


def test_draws_follow_the_configured_shares() -> None:
    ranges = RandomiseConfig()
    draws = [draw_acquisition(ranges, np.random.default_rng(i), 120.0) for i in range(3000)]
    for shares, value_of in (
        (ranges.kernels, lambda a: a.kernel),
        (ranges.backgrounds, lambda a: a.background),
    ):
        seen = np.array([value_of(a) for a in draws])
        for value, share in shares.items():
            assert (seen == value).mean() == pytest.approx(share / sum(shares.values()), abs=0.03)
    doses = np.array([a.dose_factor for a in draws])
    assert ranges.dose_factor[0] <= doses.min() and doses.max() <= ranges.dose_factor[1]
    thick = np.array([a.thick_factor for a in draws])
    assert (thick > 1).mean() == pytest.approx(ranges.thick_share, abs=0.03)
    assert set(thick[thick > 1]) == set(ranges.thick_factors)


def _high_share(noise: np.ndarray, pixel_mm: float) -> float:
    """Share of the noise power above half the Nyquist frequency."""
    power = np.abs(np.fft.rfft2(noise)) ** 2
    f = np.hypot(
        np.fft.fftfreq(noise.shape[-2], d=pixel_mm)[:, None],
        np.fft.rfftfreq(noise.shape[-1], d=pixel_mm)[None, :],
    )
    return float(power[..., f > 0.25 / pixel_mm].sum() / power.sum())


def test_a_sharper_kernel_moves_the_noise_to_fine_grain() -> None:
    shares, sds = [], []
    for kernel in ("soft", "standard", "sharp", "lung"):
        tilt = Acquisition(kernel=kernel).nps_tilt
        noise = nps_noise(np.random.default_rng(0), (4, 128, 128), 0.7, 2.5, 1.0, tilt)
        shares.append(_high_share(noise, 0.7))
        sds.append(float(noise.std()))
    assert shares == sorted(shares) and shares[-1] > 1.5 * shares[0]
    assert sds == sorted(sds)  # and its variance grows


@pytest.fixture(scope="module")
def scan_0001(db):
    scan = db.scan_by_series(SERIES_0001)
    return scan, cluster_nodules(scan, db.annotations(scan.scan_id))


@pytest.fixture(scope="module")
def scan_0963(db):
    """A scan whose one nodule lies anteriorly: a dependent band has room behind it."""
    [scan] = [s for s in db.scans if s.patient_id == "LIDC-IDRI-0963"][:1]
    return scan, cluster_nodules(scan, db.annotations(scan.scan_id))


def _slab(scan, nodules, acquisition: Acquisition) -> tuple[np.ndarray, ThoraxPhantom, np.ndarray]:
    z_lo, z_hi = choose_slab(nodules, 3, 34.0)
    ks = np.flatnonzero((scan.z_positions_mm >= z_lo) & (scan.z_positions_mm <= z_hi))
    ks = ks[len(ks) // 2 - 2 : len(ks) // 2 + 2]
    phantom = ThoraxPhantom(
        (512, 512),
        scan.pixel_spacing_mm,
        scan.slice_thickness_mm,
        nodules,
        scan.z_positions_mm,
        scan.contrast_used,
        seed=5,
        acquisition=acquisition,
    )
    return phantom.slab_hu(ks), phantom, ks


def _changes(scan, nodules, background: str):
    """HU change in the lungs and near each nodule's bubble, background vs normal lung."""
    normal, phantom, ks = _slab(scan, nodules, Acquisition())
    drawn, _, _ = _slab(scan, nodules, Acquisition(background=background, background_extent=0.3))
    z = scan.z_positions_mm[ks]
    lungs = np.stack([phantom.lung_contains(phantom.x, phantom.y, zi) for zi in z])
    near = np.zeros(drawn.shape, dtype=bool)
    for bx, by, bz, br in phantom.bubbles:
        near |= (phantom.x[None] - bx) ** 2 + (phantom.y[None] - by) ** 2 + (
            z[:, None, None] - bz
        ) ** 2 <= (br + BUBBLE_CLEARANCE_MM) ** 2
    return (drawn - normal)[lungs], drawn[near], normal[near]


@pytest.mark.parametrize(
    "background, sign", [("emphysema", -1), ("ground_glass", 1), ("fibrosis", 1)]
)
def test_a_parenchymal_background_changes_the_lung_the_right_way(scan_0001, background, sign):
    change, _, _ = _changes(*scan_0001, background)
    changed = np.abs(change) > 50
    assert changed.mean() > 0.02  # a visible part of the lung changed ...
    assert np.sign(np.median(change[changed])) == sign  # ... the right way


@pytest.mark.parametrize("background", ["atelectasis", "effusion"])
def test_a_dependent_band_never_leaves_a_nodule_in_an_aerated_pocket(
    scan_0963, scan_0001, background
) -> None:
    # An anterior nodule: the band is drawn behind it, clear of it.
    change, drawn_near, normal_near = _changes(*scan_0963, background)
    assert (change > 50).mean() > 0.02
    assert np.array_equal(drawn_near, normal_near)
    # A nodule on the posterior pleura: the band would reach it, so none is drawn.
    change, _, _ = _changes(*scan_0001, background)
    assert not np.any(change)


def test_a_thicker_reconstruction_keeps_the_nodule_where_the_readers_outlined_it(
    scan_0001, tmp_path
) -> None:
    scan, nodules = scan_0001
    written = write_phantom_scan(
        scan, nodules, tmp_path, 0, 3, 34.0, acquisition=Acquisition(thick_factor=2)
    )
    files = sorted(tmp_path.rglob("*.dcm"))
    assert len(files) == written.n_slices
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert float(header.SliceThickness) == pytest.approx(2 * scan.slice_thickness_mm)
    volume = read_series(files)
    assert volume.geometry.spacing_mm[2] == pytest.approx(2 * 2.5, abs=0.01)
    [big] = [n for n in nodules if n.n_readers == 4]
    centre = nodule_center_mm(big, volume)
    index = np.rint(volume.geometry.mm_to_index(centre)).astype(int)
    assert volume.hu[index[2], index[1], index[0]] > -300  # on the drawn nodule


def test_the_manifest_records_each_scans_acquisition(tmp_path, db) -> None:
    # thin slabs: the manifest, not the pixels, is what is checked
    thin = {"margin_mm": 4.0, "progress": False, "db": db}
    write_phantom(tmp_path, n_scans=2, seed=3, randomise=RandomiseConfig(), **thin)
    manifest = json.loads((tmp_path / "phantom.json").read_text())
    drawn = [
        Acquisition(
            **{**s["acquisition"], "motion_band_mm": tuple(s["acquisition"]["motion_band_mm"])}
        )
        for s in manifest["scans"]
    ]
    assert len(drawn) == 2 and drawn[0] != drawn[1]
    assert manifest["randomise"]["kernels"] == RandomiseConfig().kernels
    plain = tmp_path / "plain"
    write_phantom(plain, n_scans=1, seed=3, **thin)
    assert json.loads((plain / "phantom.json").read_text())["scans"][0]["acquisition"] is None
