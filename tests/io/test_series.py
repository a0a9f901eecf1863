from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import RLELossless

from lungcad.core.io.dicom_index import LidcRootError, index_lidc_root
from lungcad.core.io.series import SeriesError, read_series
from tests.conftest import SERIES_0001, set_raw, write_series


def test_real_slab_geometry_from_positions_not_instance_numbers(slab_files) -> None:
    vol = read_series(list(reversed(slab_files)))
    assert vol.hu.shape == (16, 512, 512)
    assert vol.series_uid == SERIES_0001
    np.testing.assert_allclose(vol.geometry.spacing_mm, [0.703125, 0.703125, 2.5])
    np.testing.assert_allclose(vol.geometry.origin_mm, [-166.0, -171.699997, -132.5], atol=1e-4)
    np.testing.assert_allclose(vol.z_positions_mm, np.arange(-132.5, -94.9, 2.5))
    np.testing.assert_allclose(vol.geometry.direction, np.eye(3))


def test_real_slab_hu_after_rescale_and_padding_becomes_air(slab_files) -> None:
    vol = read_series(slab_files)
    raw = pydicom.dcmread(slab_files[0]).pixel_array
    # Stored -1024 with intercept -1024 is HU -2048: padding outside the FOV, now air.
    assert raw[0, 0] == -1024
    assert vol.hu.min() >= -1024
    assert vol.hu[:, 0, 0].tolist() == [-1000] * 16
    assert 2000 < vol.hu.max() <= 3071
    # Inside the body the HU is stored value + intercept, untouched.
    k = int(
        np.argmin(
            np.abs(
                vol.z_positions_mm - float(pydicom.dcmread(slab_files[0]).ImagePositionPatient[2])
            )
        )
    )
    body = raw > -1024 + 1024 - 200  # stored values of tissue above -200 HU
    np.testing.assert_array_equal(vol.hu[k][body], raw[body].astype(np.int16) - 1024)


def test_sitk_reads_the_same_geometry(slab_files) -> None:
    vol = read_series(slab_files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(
        [
            str(p)
            for p in sorted(
                slab_files, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2])
            )
        ]
    )
    image = reader.Execute()
    np.testing.assert_allclose(image.GetSpacing(), vol.geometry.spacing_mm, atol=1e-4)
    np.testing.assert_allclose(image.GetOrigin(), vol.geometry.origin_mm, atol=1e-3)


def test_compressed_transfer_syntax_decodes_to_the_same_hu(slab_files, tmp_path) -> None:
    out = []
    for p in slab_files[:4]:
        ds = pydicom.dcmread(p)
        ds.compress(RLELossless)
        target = tmp_path / p.name
        ds.save_as(target)
        out.append(target)
    assert pydicom.dcmread(out[0]).file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(read_series(out).hu, read_series(slab_files[:4]).hu)


def _small(tmp_path, n=6, **kw):
    hu = np.full((n, 16, 16), -800, dtype=np.int16)
    return write_series(tmp_path / "s", hu, (0.8, 0.8, 2.0), (0.0, 0.0, 10.0), **kw)


def test_duplicate_positions_are_dropped(tmp_path) -> None:
    files = _small(tmp_path)
    dup = tmp_path / "s" / "dup.dcm"
    shutil.copy(files[2], dup)
    vol = read_series([*files, dup])
    assert vol.hu.shape[0] == 6
    assert vol.notes and "duplicate" in vol.notes[0]


def test_spacing_comes_from_positions_not_slice_thickness(tmp_path) -> None:
    hu = np.zeros((5, 8, 8), dtype=np.int16)
    files = write_series(tmp_path / "s", hu, (0.5, 0.5, 1.25), (0, 0, 0))
    for f in files:  # thickness 2.5 with 1.25 mm reconstruction steps, as in many LIDC scans
        ds = pydicom.dcmread(f)
        ds.SliceThickness = 2.5
        ds.save_as(f)
    assert read_series(files).geometry.spacing_mm[2] == pytest.approx(1.25)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("not_ct", "modality is MR, not CT"),
        ("wide_gap", "3 slices of 2.00 mm missing.*limits.read.max_gap_slices = 2"),
        ("single", "single slice"),
        ("mixed", "series mixed together"),
        ("all_truncated", "no usable image slice.*truncated or undecodable pixel data"),
        ("bad_spacing", r"no usable image slice.*PixelSpacing 'abc\\def' is not numbers"),
        ("empty_slope", "no usable image slice.*RescaleSlope"),
    ],
)
def test_broken_series_give_a_clear_reason(tmp_path, breakage, message) -> None:
    files = _small(tmp_path, n=8, modality="MR" if breakage == "not_ct" else "CT")
    if breakage == "wide_gap":
        files = files[:2] + files[5:]
    elif breakage == "single":
        files = files[:1]
    elif breakage == "mixed":
        ds = pydicom.dcmread(files[0])
        ds.SeriesInstanceUID = "1.2.3.4"
        ds.save_as(files[0])
    elif breakage == "all_truncated":
        for f in files:
            f.write_bytes(f.read_bytes()[:-100])
    elif breakage == "bad_spacing":
        for f in files:
            set_raw(f, "PixelSpacing", b"abc\\def ")
    elif breakage == "empty_slope":
        for f in files:
            set_raw(f, "RescaleSlope", b"")
    with pytest.raises(SeriesError, match=message):
        read_series(files)


@pytest.mark.parametrize("breakage", ["truncated", "no_rescale", "unreadable", "missing"])
def test_one_bad_or_missing_slice_is_read_around_as_a_filled_gap(tmp_path, breakage) -> None:
    hu = np.stack([np.full((16, 16), 10 * k, np.int16) for k in range(6)])
    files = write_series(tmp_path / "s", hu, (0.8, 0.8, 2.0), (0.0, 0.0, 10.0))
    if breakage == "truncated":
        data = files[3].read_bytes()
        files[3].write_bytes(data[: len(data) - 100])
    elif breakage == "no_rescale":
        ds = pydicom.dcmread(files[3])
        del ds.RescaleIntercept
        ds.save_as(files[3])
    elif breakage == "unreadable":
        files[3].write_bytes(files[3].read_bytes()[:200])
    else:
        files.pop(3)
    vol = read_series(files)
    assert vol.hu.shape == (6, 16, 16)
    np.testing.assert_array_equal(vol.hu[:, 0, 0], [0, 10, 20, 30, 40, 50])  # 30: interpolated
    np.testing.assert_allclose(vol.z_positions_mm, np.arange(10.0, 21.0, 2.0))
    assert any("1 missing slice(s) between 14.00 and 18.00 mm" in n for n in vol.notes)
    if breakage != "missing":
        assert any(n.startswith("left out 1 file(s) (0003.dcm)") for n in vol.notes)
    assert vol.source_grid[1] == (0, 1, 2, 4, 5)  # where the five files lie in the stack


def test_index_groups_by_series_and_reports_mixed_folders(tmp_path, slab_root) -> None:
    index = index_lidc_root(slab_root, progress=False)
    assert list(index.series) == [SERIES_0001]
    assert len(index.series[SERIES_0001].files) == 16
    assert any("ATTRIBUTION" in str(p) for p, _ in index.unreadable)

    files = _small(tmp_path)
    ds = pydicom.dcmread(files[0])
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.save_as(files[0])
    mixed = index_lidc_root(tmp_path, progress=False)
    assert len(mixed.series) == 2
    assert list(mixed.mixed_folders.values()) == [sorted(mixed.series)]


def test_wrong_or_empty_root_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(LidcRootError, match="does not exist"):
        index_lidc_root(tmp_path / "missing", progress=False)
    with pytest.raises(LidcRootError, match="contains no files"):
        index_lidc_root(tmp_path, progress=False)
    (tmp_path / "notes.bin").write_bytes(b"hello")
    with pytest.raises(LidcRootError, match="no readable DICOM series"):
        index_lidc_root(tmp_path, progress=False)
