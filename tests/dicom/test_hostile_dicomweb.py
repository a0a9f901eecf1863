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
    instance_item,
    send_endless_part,
    send_instance,
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


def _instances(handler, match, query) -> None:
    send_json(handler, [instance_item("1.2.3.9")] if int(query.get("offset", 0)) == 0 else [])


def test_an_endless_instance_is_cut_at_max_response_bytes_in_bounded_memory(tmp_path) -> None:
    fake = FakeDicomweb(
        {
            "/studies": _studies,
            rf"/studies/{STUDY}/series/{SERIES}/instances": _instances,
            rf"/studies/{STUDY}/series/{SERIES}/instances/[0-9.]+": (
                lambda h, m, q: send_endless_part(h)
            ),
        }
    )
    before = psutil.Process(os.getpid()).memory_info().rss
    with fake.running() as url:
        pacs = _connect(url, max_response_bytes=64 << 20)
        with pytest.raises(DicomWebError, match="over limits.dicomweb.max_response_bytes"):
            pacs.retrieve_series(STUDY, SERIES, tmp_path / "series")
    growth = psutil.Process(os.getpid()).memory_info().rss - before
    assert growth < 200 << 20, f"memory grew by {growth >> 20} MB"


def test_all_answers_of_a_run_stop_at_max_total_bytes(tmp_path) -> None:
    files = write_chest(tmp_path / "chest", series_uid=SERIES)
    fake = FakeDicomweb(
        {
            "/studies": _studies,
            rf"/studies/{STUDY}/series/{SERIES}/instances": lambda h, m, q: send_json(
                h,
                [instance_item(f"1.2.3.{k}") for k in range(len(files))]
                if int(q.get("offset", 0)) == 0
                else [],
            ),
            rf"/studies/{STUDY}/series/{SERIES}/instances/1\.2\.3\.(\d+)": (
                lambda h, m, q: send_instance(h, files[int(m.group(1))])
            ),
        }
    )
    size = files[0].stat().st_size
    with fake.running() as url:
        pacs = _connect(url, max_total_bytes=5 * size)
        with pytest.raises(DicomWebError, match="over limits.dicomweb.max_total_bytes"):
            pacs.retrieve_series(STUDY, SERIES, tmp_path / "series")
    assert sum("/instances/" in p for p in fake.asked) <= 6


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
            rf"/studies/{STUDY}/series/{SERIES}/instances": lambda h, m, q: send_json(
                h,
                [instance_item(f"1.2.3.{k}") for k in range(len(served))]
                if int(q.get("offset", 0)) == 0
                else [],
            ),
            rf"/studies/{STUDY}/series/{SERIES}/instances/1\.2\.3\.(\d+)": (
                lambda h, m, q: send_instance(h, served[int(m.group(1))])
            ),
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
