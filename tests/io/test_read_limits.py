"""Read budgets and careless inputs: headers that declare gigabytes are refused before a
byte is decoded, a .mhd never points elsewhere, special files never block the index, and
objects that are not slices of the stack are left out with a line."""

from __future__ import annotations

import os
import threading
import tracemalloc

import numpy as np
import pydicom
import pytest

from lungcad.config import ReadLimits
from lungcad.core.io.dicom_index import index_lidc_root
from lungcad.core.io.scans import find_scans, read_mhd
from lungcad.core.io.series import SeriesError, read_series
from tests.conftest import write_series
from tests.tools.hostile import write_mhd_bomb, write_rle_bomb, write_rtstruct


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_an_rle_bomb_is_refused_from_its_header_before_decoding(tmp_path) -> None:
    files = write_rle_bomb(tmp_path / "bomb")
    assert max(f.stat().st_size for f in files) < 4096  # 8 GiB per slice once decoded

    def read() -> None:
        with pytest.raises(SeriesError, match=r"65535 x 65535 pixels per slice, over limits"):
            read_series(files)

    # Decoding would abort the process (Rust's allocator); refused, it allocates nothing big.
    assert _peak_bytes(read) < 20 << 20


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ({"max_series_voxels": 5 * 16 * 16}, "over limits.read.max_series_voxels = 1280"),
        ({"max_series_files": 5}, "6 files in one series, over limits.read.max_series_files = 5"),
        ({"max_slice_pixels": 255}, "16 x 16 pixels per slice, over limits.read.max_slice_pixels"),
    ],
)
def test_each_read_limit_refuses_with_its_setting(tmp_path, limit, message) -> None:
    files = write_series(tmp_path / "s", np.zeros((6, 16, 16), np.int16), (1, 1, 2), (0, 0, 0))
    with pytest.raises(SeriesError, match=message):
        read_series(files, ReadLimits(**limit))
    assert read_series(files).hu.shape == (6, 16, 16)  # within the defaults


def test_a_mhd_zlib_bomb_is_refused_from_its_header(tmp_path) -> None:
    header = write_mhd_bomb(tmp_path)
    assert sum(f.stat().st_size for f in tmp_path.iterdir()) < 64 << 10

    def read() -> None:
        with pytest.raises(SeriesError, match="over limits.read.max_series_voxels"):
            read_mhd(header)

    assert _peak_bytes(read) < 20 << 20
    with pytest.raises(SeriesError, match="over limits.read.max_mhd_bytes = 1000"):
        read_mhd(header, limits=ReadLimits(max_mhd_bytes=1000, max_series_voxels=2**40))


@pytest.mark.parametrize(
    ("data_file", "message"),
    [
        ("../outside.raw", "not a file beside the header"),
        ("/etc/passwd", "not a file beside the header"),
        ("LIST", "names several files"),
        ("slice%03d.raw 0 9 1", "names several files"),
        ("missing.raw", "missing or not a regular file"),
    ],
)
def test_a_mhd_never_makes_lungcad_read_another_place(tmp_path, data_file, message) -> None:
    (tmp_path / "outside.raw").write_bytes(bytes(8 * 8 * 2 * 2))
    header = tmp_path / "in" / "1.2.3.mhd"
    header.parent.mkdir()
    header.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 8 8 2\nElementType = MET_SHORT\n"
        f"ElementDataFile = {data_file}\n"
    )
    with pytest.raises(SeriesError, match=message):
        read_mhd(header)


def test_a_fifo_among_the_files_is_skipped_not_waited_on(tmp_path) -> None:
    write_series(tmp_path / "s", np.zeros((4, 8, 8), np.int16), (1, 1, 2), (0, 0, 0))
    os.mkfifo(tmp_path / "s" / "trap.dcm")
    found = {}
    worker = threading.Thread(target=lambda: found.update(i=index_lidc_root(tmp_path, 1, False)))
    worker.daemon = True
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "indexing blocked on the FIFO"
    [(path, reason)] = found["i"].unreadable
    assert path.name == "trap.dcm" and "not a regular file" in reason


def test_a_report_beside_its_ct_is_skipped_as_not_an_image(tmp_path) -> None:
    files = write_series(tmp_path / "s", np.zeros((4, 8, 8), np.int16), (1, 1, 2), (0, 0, 0))
    write_rtstruct(tmp_path / "s", str(pydicom.dcmread(files[0]).StudyInstanceUID))
    sources, problems = find_scans(tmp_path, progress=False)
    assert [len(s.files) for s in sources] == [4]  # the CT is read; its folder is not "mixed"
    [problem] = problems
    assert problem.status == "skipped" and "not an image (RTSTRUCT): skipped" in problem.reason


def test_a_scout_and_a_slice_in_another_plane_are_left_out_with_a_line(tmp_path) -> None:
    hu = np.zeros((6, 16, 16), np.int16)
    files = write_series(tmp_path / "s", hu, (1, 1, 2), (0, 0, 0))
    scout = pydicom.dcmread(files[0])
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.SOPInstanceUID = pydicom.uid.generate_uid()
    scout.ImagePositionPatient = [0, 0, 50]
    scout.save_as(tmp_path / "s" / "scout.dcm")
    other = pydicom.dcmread(files[1])
    other.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # a sagittal reformat, same series
    other.SOPInstanceUID = pydicom.uid.generate_uid()
    other.save_as(tmp_path / "s" / "sagittal.dcm")
    vol = read_series([*files, tmp_path / "s" / "scout.dcm", tmp_path / "s" / "sagittal.dcm"])
    assert vol.hu.shape == (6, 16, 16) and len(vol.source_files) == 6
    assert any("(scout.dcm): a localizer (scout) image" in n for n in vol.notes)
    assert any("(sagittal.dcm): another plane" in n for n in vol.notes)
