"""`lungcad detect` on hostile and careless local input, run as a user runs it (a separate
process): header values that are paths write nothing outside --out; a batch with one good
scan and five bad ones writes the good one's findings, names the five and exits 2, in
bounded memory and without a traceback; a rerun owns its folder (stale DICOM objects go,
a second run is refused); a failure that passes is not kept."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from lungcad.cli.main import app
from lungcad.core.outputs import owned_output
from lungcad.dicom.objects import read_no_finding
from tests.conftest import REPO, TEST_PARAMS, set_raw, write_series, write_tiny_checkpoint
from tests.tools.hostile import write_chest, write_mhd_bomb, write_rle_bomb, write_rtstruct

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def _detect(source: Path, out: Path, model: Path, *extra: str, fsize: int | None = None):
    """``lungcad detect`` in its own process: (exit code, stdout, stderr, peak RSS bytes)."""

    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    cmd = [sys.executable, "-m", "lungcad.cli.main", "detect", str(source), "--out", str(out)]
    cmd += ["--model", str(model), "--params", str(TEST_PARAMS), "--quiet", *extra]
    with (
        open(out.parent / "stdout.txt", "w") as stdout,
        open(out.parent / "stderr.txt", "w") as stderr,
    ):
        process = subprocess.Popen(cmd, cwd=REPO, stdout=stdout, stderr=stderr, preexec_fn=limit)
        _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code
    text = (out.parent / "stdout.txt").read_text(), (out.parent / "stderr.txt").read_text()
    return code, *text, usage.ru_maxrss * 1024


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_fifo()}


def _uid_raw(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def test_header_values_that_are_paths_write_nothing_outside_out(tmp_path, model) -> None:
    source = tmp_path / "in"
    outside = tmp_path / "abs-target"
    relative = write_chest(source / "a")
    absolute = write_chest(source / "b")
    for f in relative:
        set_raw(f, "SeriesInstanceUID", _uid_raw("../../../escaped-series"), "UI")
        set_raw(f, "PatientID", b"../../../escaped-patient ", "LO")
    for f in absolute:
        set_raw(f, "SeriesInstanceUID", _uid_raw(str(outside / "series")), "UI")
        set_raw(f, "PatientID", str(outside / "p").encode() + b" ", "LO")
    out = tmp_path / "w1" / "w2" / "w3" / "out"
    out.parent.mkdir(parents=True)
    before = _files(tmp_path)
    code, stdout, stderr, _ = _detect(source, out, model, "--threshold", "0")
    assert code == 0, stderr
    assert "Traceback" not in stdout + stderr
    written = _files(tmp_path) - before
    assert written and all(out in p.parents or p.parent == out.parent for p in written), sorted(
        p for p in written if out not in p.parents and p.parent != out.parent
    )
    assert not outside.exists()
    scans = pd.read_csv(out / "scans.csv", dtype=str)
    assert sorted(scans["seriesuid"]) == sorted(
        ["../../../escaped-series", str(outside / "series")]
    )
    assert (scans["status"] == "ok").all()
    assert len(list((out / "dicom").glob("*/seg.dcm"))) == 2  # each scan's own folder in out


def test_one_good_and_five_bad_scans_give_the_good_findings_and_exit_2(tmp_path, model) -> None:
    source = tmp_path / "in"
    good = "1.2.826.0.1.3680043.8.498.900"
    write_chest(source / "good", series_uid=good)
    small = np.zeros((8, 16, 16), np.int16)

    def bad(name: str, **kw) -> list[Path]:
        uid = f"1.2.826.0.1.3680043.8.498.90{len(list(source.iterdir()))}"
        return write_series(source / name, small, (1, 1, 2), (0, 0, 0), series_uid=uid, **kw)

    for f in bad("spacing"):
        set_raw(f, "PixelSpacing", b"abc\\def ")
    for f in bad("slope"):
        set_raw(f, "RescaleSlope", b"")
    for f in bad("single")[1:]:
        f.unlink()
    for f in bad("gap")[2:6]:  # four slices missing in a row
        f.unlink()
    write_rle_bomb(source / "bomb")
    write_rtstruct(source / "good", "1.2.3")  # a report beside the CT: skipped, not an error
    os.mkfifo(source / "trap.dcm")  # would block a reader: skipped
    (source / "README").write_text("notes")

    out = tmp_path / "out"
    code, stdout, stderr, _ = _detect(source, out, model, "--threshold", "0")
    assert code == 2, stderr
    assert "Traceback" not in stdout + stderr
    scans = pd.read_csv(out / "scans.csv", dtype=str)
    errors = scans[scans["status"] == "error"]
    assert len(errors) == 5 and (scans["status"] == "ok").sum() == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: 5 of 6 scan(s) not usable: ")
    assert all(uid in last for uid in errors["seriesuid"])
    reasons = " ".join(errors["reason"])
    for expected in (
        "PixelSpacing 'abc\\def' is not numbers",
        "RescaleSlope",
        "single slice",
        "over limits.read.max_gap_slices",
        "over limits.read.max_slice_pixels",
    ):
        assert expected in reasons, (expected, reasons)
    skipped = " ".join(scans[scans["status"] == "skipped"]["reason"])
    assert "not an image (RTSTRUCT)" in skipped and "not a regular file" in skipped
    findings = pd.read_csv(out / "detections.csv", dtype={"seriesuid": str})
    assert len(findings) and set(findings["seriesuid"]) == {good}


def test_decompression_bombs_are_refused_in_bounded_memory(tmp_path, model) -> None:
    """Two 3 kB files declaring 65535² pixels each (8 GiB per slice decoded; decoding them
    aborted the process) and a .mhd whose few kB of zlib declare 8 GiB: refused from their
    headers: each command peaks within 256 MB of the same command on a small good scan (the
    baseline, measured the same way on the same machine)."""
    write_chest(tmp_path / "good")
    code, _, _, baseline = _detect(tmp_path / "good", tmp_path / "out-good", model)
    assert code == 0
    write_rle_bomb(tmp_path / "dicom")
    for source in (tmp_path / "dicom", write_mhd_bomb(tmp_path / "mhd")):
        out = tmp_path / f"out-{Path(source).stem}"
        code, stdout, stderr, peak = _detect(source, out, model)
        assert code == 2 and "Traceback" not in stdout + stderr
        assert "(not decoded)" in stdout or "(not read)" in stdout
        message = f"peak RSS {peak >> 20} MB, good scan {baseline >> 20} MB"
        assert peak < baseline + (256 << 20), message


def test_a_rerun_owns_its_folder(tmp_path, model) -> None:
    uid = "1.2.826.0.1.3680043.8.498.910"
    write_chest(tmp_path / "in", series_uid=uid)
    out = tmp_path / "out"
    args = ["detect", str(tmp_path / "in"), "--model", str(model), "--out", str(out)]
    args += ["--params", str(TEST_PARAMS), "--quiet"]
    first = runner.invoke(app, [*args, "--threshold", "0"])
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in (out / "dicom" / uid).iterdir()) == ["seg.dcm", "sr.dcm"]
    stale_figure = out / "figures" / "TEST-0001_43.8.498.910_f3_cam.png"
    assert stale_figure.is_file()
    # Nothing at or above 1.0: the first run's SEG and finding pictures go, its SR is
    # replaced by the negative report (a --store sends only what this run wrote), and the
    # folder holds no lock after the run.
    second = runner.invoke(app, [*args, "--threshold", "1.0"])
    assert second.exit_code == 0, second.output
    assert sorted(p.name for p in (out / "dicom" / uid).iterdir()) == ["sr.dcm"]
    assert read_no_finding(out / "dicom" / uid / "sr.dcm") == 1.0 and not stale_figure.exists()
    dicom = pd.read_csv(out / "scans.csv")["dicom"].iloc[0]
    assert dicom == "sr (no finding at probability >= 1.00)"
    assert not (out / ".lock").exists() and not (out / ".parts").exists()
    with owned_output(out, "lungcad detect"):
        busy = runner.invoke(app, [*args, "--threshold", "0.5"])
    assert busy.exit_code == 2
    assert f"is in use by lungcad detect (pid {os.getpid()}" in busy.output


def test_a_failure_that_passes_is_not_kept_and_the_next_run_redoes_it(tmp_path, model) -> None:
    uid = "1.2.826.0.1.3680043.8.498.920"
    write_chest(tmp_path / "in", series_uid=uid)
    out = tmp_path / "out"
    # A file-size limit refuses the scan's pictures as a full disk would (EFBIG, ENOSPC).
    code, stdout, stderr, _ = _detect(tmp_path / "in", out, model, fsize=40_000)
    assert code == 2 and "Traceback" not in stdout + stderr
    assert "not kept: the next run tries it again" in stdout
    assert not list((out / ".parts").rglob("scan.json"))
    code, stdout, stderr, _ = _detect(tmp_path / "in", out, model)
    assert code == 0, stderr
    assert pd.read_csv(out / "scans.csv")["status"].tolist() == ["ok"]


def test_bad_checkpoints_and_an_out_that_is_a_file_are_one_line(tmp_path, model) -> None:
    write_chest(tmp_path / "in")
    state = torch.load(model, weights_only=True)
    cases = {
        "cut.pt": {**state, "cut_settings": [1, 2, 3]},
        "shapes.pt": {
            **state,
            "model": {k: torch.zeros(3, 3) for k in state["model"]},
        },
        "config.pt": {**state, "config": ["not", "settings"]},
    }
    (tmp_path / "file").write_text("x")
    for name, content in [*cases.items(), ("file", None)]:
        checkpoint = tmp_path / name if content is not None else model
        if content is not None:
            torch.save(content, checkpoint)
        out = tmp_path / "file" if content is None else tmp_path / f"out-{name}"
        result = runner.invoke(
            app,
            ["detect", str(tmp_path / "in"), "--model", str(checkpoint), "--out", str(out)]
            + ["--params", str(TEST_PARAMS), "--quiet"],
        )
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2, (name, result.output)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.output)
