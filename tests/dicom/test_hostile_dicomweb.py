"""A DICOMweb server's answers are data with a budget: a server that pages forever, streams
an endless instance or trickles one byte at a time is stopped within the limits with one
line; malformed answers are lines, not tracebacks; UIDs and headers from the server never
name a place to write. The server is a fake on loopback that answers as each test says."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from lungcad.cli.main import app
from lungcad.config import DicomwebLimits
from lungcad.dicom.dicomweb import DicomWebError, Pacs
from tests.conftest import TEST_PARAMS, write_tiny_checkpoint
from tests.tools.hostile import (
    FakeDicomweb,
    send_endless_part,
    send_instances,
    send_json,
    send_raw,
    send_trickle,
    series_item,
    write_chest,
)

STUDY = "1.2.826.0.1.3680043.8.498.500"
SERIES = "1.2.826.0.1.3680043.8.498.501"
runner = CliRunner()


def _studies(handler, match, query) -> None:
    send_json(handler, [])


def _connect(url: str, **limits) -> Pacs:
    return Pacs.connect(url, DicomwebLimits(**limits))


def test_a_server_that_pages_forever_is_stopped_after_max_pages() -> None:
    def endless(handler, match, query) -> None:  # new series on every page, without end
        offset = int(query.get("offset", 0))
        send_json(handler, [series_item(f"1.2.3.{offset + k}") for k in range(2)])

    fake = FakeDicomweb({"/studies": _studies, rf"/studies/{STUDY}/series": endless})
    with fake.running() as url:
        pacs = _connect(url, max_pages=5, page_size=2)
        with pytest.raises(DicomWebError, match="still more after limits.dicomweb.max_pages = 5"):
            pacs.ct_series(STUDY)
    assert sum("/series" in p for p in fake.asked) == 5


def test_a_server_that_ignores_the_offset_ends_the_paging_with_what_it_sent() -> None:
    page = [series_item(SERIES), series_item("1.2.3.4", "SR")]
    fake = FakeDicomweb(
        {"/studies": _studies, rf"/studies/{STUDY}/series": lambda h, m, q: send_json(h, page)}
    )
    with fake.running() as url:
        ct, skipped = _connect(url, page_size=2).ct_series(STUDY)
    assert ct == [SERIES] and skipped == [("1.2.3.4", "modality SR, not CT: skipped")]
    assert sum("/series" in p for p in fake.asked) == 2  # the second page brought nothing new


def test_malformed_query_answers_are_lines_not_tracebacks() -> None:
    page = [
        series_item(SERIES),
        {"0020000E": {"vr": "UI", "Value": []}},  # empty Value
        series_item(12345),  # a number, not a UID string
        series_item("../../../etc"),  # not a UID
        "not an object",
    ]
    fake = FakeDicomweb(
        {"/studies": _studies, rf"/studies/{STUDY}/series": lambda h, m, q: send_json(h, page)}
    )
    with fake.running() as url:
        ct, skipped = _connect(url).ct_series(STUDY)
    assert ct == [SERIES]
    assert [reason for _, reason in skipped] == ["no valid SeriesInstanceUID: skipped"] * 4

    deep = b"[" * 100_000 + b"]" * 100_000  # Python's JSON parser recurses on it
    nested = FakeDicomweb(
        {
            "/studies": _studies,
            rf"/studies/{STUDY}/series": lambda h, m, q: send_raw(h, deep),
        }
    )
    with nested.running() as url, pytest.raises(DicomWebError, match="malformed or unexpected"):
        _connect(url).ct_series(STUDY)


def test_an_endless_instance_is_cut_at_max_response_bytes_in_bounded_memory(tmp_path) -> None:
    fake = FakeDicomweb(
        {
            "/studies": _studies,
            rf"/studies/{STUDY}/series/{SERIES}": lambda h, m, q: send_endless_part(h),
        }
    )
    before = psutil.Process(os.getpid()).memory_info().rss
    with fake.running() as url:
        pacs = _connect(url, max_response_bytes=64 << 20)
        with pytest.raises(DicomWebError, match="over limits.dicomweb.max_response_bytes"):
            pacs.retrieve_series(STUDY, SERIES, tmp_path / "series")
    growth = psutil.Process(os.getpid()).memory_info().rss - before
    assert growth < 200 << 20, f"memory grew by {growth >> 20} MB"


def test_a_series_is_written_as_it_arrives_within_its_instance_and_byte_budgets(
    tmp_path,
) -> None:
    files = write_chest(tmp_path / "chest", series_uid=SERIES)
    fake = FakeDicomweb(
        {
            "/studies": _studies,
            rf"/studies/{STUDY}/series/{SERIES}": lambda h, m, q: send_instances(h, files),
        }
    )
    size = files[0].stat().st_size
    with fake.running() as url:
        notes = _connect(url).retrieve_series(STUDY, SERIES, tmp_path / "whole")
        assert notes == []
        got = sorted((tmp_path / "whole").iterdir())
        assert [p.read_bytes() for p in got] == [f.read_bytes() for f in files]  # byte for byte
        for limits, message in (
            ({"max_instances": 5}, "more than limits.dicomweb.max_instances = 5"),
            ({"max_total_bytes": 5 * size}, "over limits.dicomweb.max_total_bytes"),
            ({"max_response_bytes": size // 2}, "an instance over limits.dicomweb.max_respo"),
        ):
            with pytest.raises(DicomWebError, match=message):
                _connect(url, **limits).retrieve_series(STUDY, SERIES, tmp_path / str(limits))


def test_a_trickling_server_is_left_at_the_deadline() -> None:
    fake = FakeDicomweb(
        {"/studies": _studies, rf"/studies/{STUDY}/series": lambda h, m, q: send_trickle(h)}
    )
    with fake.running() as url:
        pacs = _connect(url, request_deadline_s=1.5)
        started = time.monotonic()
        with pytest.raises(DicomWebError, match=r"request_deadline_s = 1.5 s"):
            pacs.ct_series(STUDY)
        assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://pacs/dicom-web", "http:// or https:// URL"),
        ("http://pacs:99999/dicom-web", "not a valid URL"),
        ("http://pacs:port/dicom-web", "not a valid URL"),
        ("http:///dicom-web", "http:// or https:// URL with a host"),
    ],
)
def test_a_malformed_dicomweb_url_is_one_line(tmp_path, url, message) -> None:
    result = runner.invoke(
        app, ["detect", "--dicomweb", url, "--study", STUDY, "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.slow
def test_hostile_headers_from_a_pacs_write_nothing_outside_out(tmp_path) -> None:
    """A study whose instances carry a SeriesInstanceUID and a PatientID that are paths, one
    instance without a SOPClassUID: detect writes only inside --out, says what it left out,
    and finds the scan."""
    files = write_chest(tmp_path / "src" / "chest", series_uid=SERIES)
    set_raw_all(files, SeriesInstanceUID="../../../../escaped-series", PatientID="../../../p")
    broken = tmp_path / "src" / "no-class.dcm"
    broken.write_bytes(files[-1].read_bytes())
    strip_sop_class(broken)
    served = [*files, broken]
    fake = FakeDicomweb(
        {
            "/studies": _studies,
            rf"/studies/{STUDY}/series": lambda h, m, q: send_json(
                h, [series_item(SERIES)] if int(q.get("offset", 0)) == 0 else []
            ),
            rf"/studies/{STUDY}/series/{SERIES}": lambda h, m, q: send_instances(h, served),
        }
    )
    work = tmp_path / "a" / "b" / "c"
    out = work / "out"
    model = write_tiny_checkpoint(tmp_path / "tiny.pt")
    before = _files(tmp_path)
    with fake.running() as url:
        result = runner.invoke(
            app,
            [
                "detect",
                "--dicomweb",
                url,
                "--study",
                STUDY,
                "--out",
                str(out),
                "--model",
                str(model),
                "--threshold",
                "0",
                "--params",
                str(TEST_PARAMS),
                "--quiet",
            ],
        )
    assert result.exit_code == 0, result.output
    assert "not a storable DICOM instance" in result.output
    new_outside = {p for p in _files(tmp_path) - before if out not in p.parents}
    assert not new_outside, new_outside
    dicom = [p.relative_to(out) for p in (out / "dicom").rglob("*.dcm")]
    assert len(dicom) == 2 and all(len(p.parts) == 3 for p in dicom), dicom  # dicom/<safe>/


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def set_raw_all(files: list[Path], **values: str) -> None:
    from tests.conftest import set_raw

    for keyword, value in values.items():
        vr = "UI" if keyword.endswith("UID") else "LO"
        raw = value.encode() + (b"\0" if len(value) % 2 else b"") if vr == "UI" else value.encode()
        if vr == "LO" and len(raw) % 2:
            raw += b" "
        for f in files:
            set_raw(f, keyword, raw, vr)


def strip_sop_class(path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.SOPClassUID
    del ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(path, enforce_file_format=False)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 16])
def test_parts_are_written_whole_whatever_the_chunks(tmp_path, chunk) -> None:
    from lungcad.dicom.dicomweb import PartWriter

    parts = [b"first\r\n--not-the-boundary", b"", bytes(range(256)) * 3]
    body = b"a preamble\r\n" + b"".join(
        b"--b0\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n" for part in parts
    )
    body += b"--b0--\r\nan epilogue"
    writer = PartWriter(b"b0", tmp_path, max_part_bytes=1000, max_parts=3)
    for start in range(0, len(body), chunk):
        writer.feed(body[start : start + chunk])
    assert writer.state == "end"
    assert [p.read_bytes() for p in writer.close()] == parts


def test_a_part_cut_short_is_not_kept(tmp_path) -> None:
    from lungcad.dicom.dicomweb import PartWriter

    writer = PartWriter(b"b0", tmp_path, max_part_bytes=1000, max_parts=3)
    writer.feed(b"--b0\r\n\r\nwhole\r\n--b0\r\n\r\nhalf of it")
    files = writer.close()
    assert [p.read_bytes() for p in files] == [b"whole"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.dcm"]
