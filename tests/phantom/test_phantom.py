from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from lungcad.core.annotations.nodules import cluster_nodules, nodule_center_mm
from lungcad.core.cubes import extract_cube
from lungcad.core.io.dicom_index import index_lidc_root
from lungcad.core.io.series import read_series
from lungcad.core.lung_mask import lung_mask
from lungcad.phantom.writer import choose_slab, select_scans, write_phantom, write_phantom_scan
from tests.conftest import SERIES_0001


@pytest.fixture(scope="module")
def phantom_0001(db, tmp_path_factory) -> tuple[Path, object, list]:
    scan = db.scan_by_series(SERIES_0001)
    nodules = cluster_nodules(scan, db.annotations(scan.scan_id))
    root = tmp_path_factory.mktemp("phantom")
    write_phantom_scan(scan, nodules, root, seed=0, min_readers=3, margin_mm=34.0)
    return root, scan, nodules


def test_phantom_series_has_the_real_scan_geometry_and_uids(phantom_0001) -> None:
    root, scan, nodules = phantom_0001
    files = sorted(root.glob("LIDC-IDRI-0001/*/*/*.dcm"))
    assert files[0].parent.name == scan.series_uid
    assert files[0].parent.parent.name == scan.study_uid
    z = []
    for f in files:
        ds = pydicom.dcmread(f)
        assert (ds.Rows, ds.Columns) == (512, 512)
        assert ds.SeriesInstanceUID == scan.series_uid and ds.StudyInstanceUID == scan.study_uid
        assert ds.PatientID == "LIDC-IDRI-0001" and ds.Modality == "CT"
        assert float(ds.PixelSpacing[0]) == pytest.approx(scan.pixel_spacing_mm)
        assert float(ds.RescaleIntercept) == -1024
        z.append(float(ds.ImagePositionPatient[2]))
    # Contiguous run of the real slice grid covering the nodule with the margin.
    grid = scan.z_positions_mm
    assert np.isin(np.round(z, 3), np.round(grid, 3)).all()
    z = np.sort(z)
    np.testing.assert_allclose(np.diff(z), 2.5)
    lo, hi = choose_slab(nodules, 3, 34.0)
    assert z[0] >= lo and z[-1] <= hi
    assert z[0] <= nodules[0].z_extent_mm[0] - 32 and z[-1] >= nodules[0].z_extent_mm[1] + 32


def test_phantom_reads_with_simpleitk_and_pydicom_alike(phantom_0001) -> None:
    root, scan, _ = phantom_0001
    folder = next(root.glob("LIDC-IDRI-0001/*/*"))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    vol = read_series(sorted(folder.glob("*.dcm")))
    np.testing.assert_allclose(image.GetSpacing(), vol.geometry.spacing_mm, atol=1e-4)
    np.testing.assert_allclose(image.GetOrigin(), vol.geometry.origin_mm, atol=1e-3)
    sitk_hu = sitk.GetArrayFromImage(image)
    inside = sitk_hu > -1500  # sitk leaves padding at -2048; lungcad turns it into air
    np.testing.assert_array_equal(sitk_hu[inside], vol.hu[inside])
    assert (vol.hu[~inside] == -1000).all() and (~inside).mean() > 0.15


def test_phantom_draws_the_real_nodule_inside_aerated_lung(phantom_0001) -> None:
    root, _, nodules = phantom_0001
    vol = read_series(sorted(root.glob("LIDC-IDRI-0001/*/*/*.dcm")))
    center = nodule_center_mm(nodules[0], vol)
    cube = extract_cube(vol.geometry.to_sitk(vol.hu), center)
    assert cube[28:36, 28:36, 28:36].mean() > -100  # solid (texture 4.75) nodule
    lungs = lung_mask(vol.hu, vol.geometry)
    assert lungs.parenchyma.mean() > 0.1
    idx = np.rint(vol.geometry.mm_to_index(center)).astype(int)[::-1]
    assert lungs.region[lungs.block_of(idx)], "the nodule must lie inside the lung region"
    lung_hu = vol.hu[tuple(lungs.block_centres(lungs.parenchyma).T)]
    lung_hu = lung_hu[lung_hu < -500]
    assert -900 < np.median(lung_hu) < -780


def test_scan_choice_is_deterministic_and_has_qualifying_nodules(db) -> None:
    a = [s.series_uid for s in select_scans(db, 5, seed=7, min_readers=3)]
    b = [s.series_uid for s in select_scans(db, 5, seed=7, min_readers=3)]
    c = [s.series_uid for s in select_scans(db, 5, seed=8, min_readers=3)]
    assert a == b and a != c and len(set(a)) == 5
    for uid in a:
        scan = db.scan_by_series(uid)
        assert any(n.n_readers >= 3 for n in cluster_nodules(scan, db.annotations(scan.scan_id)))


@pytest.mark.slow
def test_write_phantom_manifest_and_index(tmp_path, db) -> None:
    written = write_phantom(tmp_path, n_scans=1, seed=3, progress=False, db=db)
    manifest = json.loads((tmp_path / "phantom.json").read_text())
    assert manifest["scans"][0]["series_uid"] == written[0].series_uid
    index = index_lidc_root(tmp_path, progress=False)
    assert list(index.series) == [written[0].series_uid]
    assert len(index.series[written[0].series_uid].files) == written[0].n_slices
    assert not index.unreadable


@pytest.mark.slow
def test_same_seed_writes_the_same_bytes_and_another_seed_does_not(phantom_0001, db, tmp_path):
    root, scan, nodules = phantom_0001
    write_phantom_scan(scan, nodules, tmp_path / "a", seed=0, min_readers=3, margin_mm=34.0)
    first = sorted(root.glob("LIDC-IDRI-0001/*/*/*.dcm"))
    again = sorted((tmp_path / "a").glob("LIDC-IDRI-0001/*/*/*.dcm"))
    assert [f.name for f in first] == [f.name for f in again]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, again))
    write_phantom_scan(scan, nodules, tmp_path / "b", seed=1, min_readers=3, margin_mm=34.0)
    other = sorted((tmp_path / "b").glob("LIDC-IDRI-0001/*/*/*.dcm"))
    assert pydicom.dcmread(other[10]).PixelData != pydicom.dcmread(first[10]).PixelData


def test_phantom_lungs_hold_vessels_airways_and_fissures(phantom_0001) -> None:
    root, _, _ = phantom_0001
    vol = read_series(sorted(root.glob("LIDC-IDRI-0001/*/*/*.dcm")))
    from lungcad.realism.stats import core_parenchyma

    core = core_parenchyma(vol.hu, vol.geometry)
    lung = vol.hu[core]
    # Vessels: a few percent of the lung is blood-dense, and some of it fully so.
    assert 0.015 < (lung > -500).mean() < 0.06
    assert (lung > 0).mean() > 0.002
    # Airway lumens: air below the parenchyma's noise floor inside the lungs.
    assert (lung < -990).sum() > 50
