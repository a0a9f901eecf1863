"""A scan's findings against the readers' outlines, with known geometry: the Dice of the
detected finding's mask with the consensus, and the pointing game on cubes cut from the scan
centred on the nodule and off it, beside a map that points at the cube's centre."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lungcad.core.annotations.lidc_db import ScanRecord
from lungcad.core.io.geometry import VolumeGeometry
from lungcad.core.io.series import CtVolume
from lungcad.detection.reference import ReferenceMasks, finding_dice, pointing_check
from tests.annotations.test_lidc_db import _square_reader

UID = "1.2.826.0.1.3680043.8.498.7"
#: The volume's voxel (0, 0, 0) in patient mm: the readers' pixel (c, r) on slice k lies at
#: ORIGIN + (c, r, k) mm.
ORIGIN = np.array([-100.0, 50.0, -20.0])


class _Database:
    """The one scan of these tests, answering as ``LidcDatabase`` does."""

    def __init__(self, scan: ScanRecord, readers: list) -> None:
        self.scan, self.readers = scan, readers

    def scan_by_series(self, uid: str):
        return self.scan if uid == self.scan.series_uid else None

    def annotations(self, scan_id: int):
        return self.readers


@pytest.fixture(scope="module")
def case():
    """A 1 mm volume (40 slices of 64²) with a soft-tissue box at columns and rows 21-28 and
    slices 10-13, outlined by three readers who agree with it exactly."""
    scan = ScanRecord(
        scan_id=1,
        patient_id="P",
        series_uid=UID,
        study_uid="1.3",
        pixel_spacing_mm=1.0,
        slice_thickness_mm=1.0,
        z_positions_mm=ORIGIN[2] + np.arange(40, dtype=float),
        contrast_used=False,
    )
    readers = [_square_reader(k, 20, 29, ORIGIN[2] + np.arange(10, 14)) for k in (1, 2, 3)]
    hu = np.full((40, 64, 64), -850, np.int16)
    hu[10:14, 21:29, 21:29] = 40
    volume = CtVolume(
        hu=hu,
        geometry=VolumeGeometry(ORIGIN, np.ones(3), np.eye(3), hu.shape),
        series_uid=UID,
        study_uid="1.3",
        patient_id="P",
        z_positions_mm=scan.z_positions_mm,
    )
    masks = ReferenceMasks(volume, _Database(scan, readers))
    (nodule_id,) = masks.nodules
    centre = ORIGIN + np.array([24.5, 24.5, 11.5])
    reference = pd.DataFrame(
        [{"nodule_id": nodule_id, "coordX": centre[0], "coordY": centre[1], "coordZ": centre[2]}]
    ).assign(diameter_mm=8 * np.sqrt(2))
    return volume, masks, reference, centre


def _finding(centre, probability=0.95):
    return {
        "coordX": centre[0],
        "coordY": centre[1],
        "coordZ": centre[2],
        "probability": probability,
    }


def test_the_detected_findings_mask_is_scored_where_it_lies(case) -> None:
    volume, masks, reference, centre = case
    box = np.ones((4, 8, 8), bool)
    corner = ORIGIN + np.array([21.0, 21.0, 10.0])  # patient mm of the box's voxel (0, 0, 0)
    findings = pd.DataFrame(
        [_finding(centre), _finding(centre + [1, 0, 0], 0.5), _finding(centre + [30, 0, 0], 0.99)]
    )
    # The most probable finding on the nodule (rank 1; the one 30 mm away does not hit it).
    exact = {1: (box, corner + [0, 0, 0], 1.0), 0: (box, corner + [30, 0, 0], 1.0)}
    table = finding_dice(
        reference,
        findings.sort_values("probability", ascending=False).reset_index(drop=True),
        exact,
        masks,
        32,
    )
    assert table.loc[0, "finding_rank"] == 2 and table.loc[0, "finding_probability"] == 0.95
    assert table.loc[0, "dice"] == pytest.approx(1.0)
    # The same mask two voxels along x: 6 of its 8 columns overlap, Dice 2·192 / 512.
    moved = {1: (box, corner + [2, 0, 0], 1.0)}
    ordered = findings.sort_values("probability", ascending=False).reset_index(drop=True)
    assert finding_dice(reference, ordered, moved, masks, 32).loc[0, "dice"] == pytest.approx(0.75)
    # A finding without a mask scores 0; a nodule no finding hits has no Dice.
    assert finding_dice(reference, ordered, {}, masks, 32).loc[0, "dice"] == 0.0
    far = pd.DataFrame([_finding(centre + [30, 0, 0])])
    missed = finding_dice(reference, far, {0: (box, corner, 1.0)}, masks, 32)
    assert np.isnan(missed.loc[0, "dice"]) and np.isnan(missed.loc[0, "finding_rank"])


def test_the_pointing_game_on_cubes_cut_from_the_scan(case) -> None:
    """A map that follows the soft tissue points at the nodule wherever the cube is cut; a
    map that points at the cube's centre does only when the cube is centred on it."""
    volume, masks, reference, centre = case

    def tissue(cubes: np.ndarray) -> np.ndarray:
        return (np.asarray(cubes) > -100).astype(np.float32)

    nodule_id = reference.loc[0, "nodule_id"]
    cubes = np.array([centre, centre + [0, 12, 0], centre + [-9, 0, 0]])
    games = pointing_check(volume, cubes, [nodule_id] * 3, masks, tissue, 32, 1.0)
    assert games["pointing_hit"].tolist() == [True, True, True]
    assert games["centre_hit"].tolist() == [True, False, False]
    assert (games["pointing_peak_mm"] == 0).all()


def test_dice_at_the_threshold_counts_a_missed_or_lost_nodule_as_0() -> None:
    from lungcad.detection.froc_report import finding_dice_summary, pointing_summary

    table = pd.DataFrame(
        {
            "nodule_id": ["a", "b", "c"],
            "finding_probability": [0.95, 0.5, np.nan],
            "dice": [0.8, 0.6, np.nan],
            "patient_id": ["P1", "P2", "P3"],
        }
    )
    lost = pd.DataFrame({"patient_id": ["P4"]})  # a nodule of a scan that could not be read
    d = finding_dice_summary(table, lost, 0.9, 200, 0)
    assert d["detected"]["mean"] == pytest.approx(0.8) and d["detected"]["n"] == 1
    every = d["all_nodules_missed_as_0"]
    assert every["mean"] == pytest.approx(0.2) and every["n"] == d["n_nodules"] == 4
    assert every["ci95"][0] <= 0.2 <= every["ci95"][1]

    games = pd.DataFrame(
        {
            "offset_mm": [0.0, 0.0, 10.0, 12.0],
            "pointing_hit": [True, False, True, False],
            "centre_hit": [True, True, False, False],
            "pointing_chance": 0.01,
            "patient_id": ["P1", "P2", "P1", "P2"],
        }
    )
    p = pointing_summary(games, 200, 0)
    assert p["centred"]["gradcam"]["mean"] == 0.5 and p["centred"]["centre_baseline"]["mean"] == 1
    assert p["offcentre"]["n_cubes"] == 2 and p["offcentre"]["centre_baseline"]["mean"] == 0
    assert p["offcentre"]["offset_mm"] == [10.0, 12.0]
