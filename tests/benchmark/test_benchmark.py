"""The sealed benchmark: drawn from LIDC patients the dataset does not hold, whole length,
with LIDC's mix of scans; built and scored end to end on two short scans."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from lungcad.benchmark.build import benchmark_scans
from lungcad.config import Params
from lungcad.core.annotations.luna16 import reference_count
from lungcad.phantom.writer import select_scans
from tests.conftest import REPO, write_tiny_checkpoint


def test_the_default_draw_meets_its_targets_and_shares_no_patient(db) -> None:
    p = Params()
    dataset = {s.patient_id for s in select_scans(db, p.phantom.scans, p.phantom.seed, 3)}
    scans = benchmark_scans(db, dataset, p.benchmark.scans, p.benchmark.seed)
    assert len(scans) == p.benchmark.scans >= 100
    assert not {s.patient_id for s in scans} & dataset  # 0 patients shared
    counts = np.array([reference_count(s.series_uid, db) for s in scans])
    assert counts.sum() >= 150  # reference nodules
    assert (counts == 0).mean() >= 0.20  # scans without one
    # the draw does not depend on what else is asked: the same seed, the same first scans
    assert [s.series_uid for s in benchmark_scans(db, dataset, 10, p.benchmark.seed)] == [
        s.series_uid for s in scans[:10]
    ]


@pytest.mark.slow
def test_build_and_score_two_short_scans(tmp_path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["benchmark"].update(scans=2, max_slices=90, workers=1)
    params["detect"]["bootstrap"] = 50
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    pd.DataFrame({"patient_id": ["LIDC-IDRI-0078"], "label": [1]}).to_csv(
        tmp_path / "index.csv", index=False
    )
    model = write_tiny_checkpoint(tmp_path / "tiny.pt", centre_head=True)  # the dense detector

    def lungcad(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "lungcad.cli.main", *args]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)

    built = lungcad(
        "benchmark",
        "build",
        "--out",
        "bench",
        "--index",
        "index.csv",
        "--params",
        "params.yaml",
        "--quiet",
    )
    assert built.returncode == 0, built.stderr
    scans = pd.read_csv(tmp_path / "bench" / "scans.csv")
    assert len(scans) == 2 and "LIDC-IDRI-0078" not in set(scans["patient_id"])  # the dataset's
    from lungcad.core.annotations.lidc_db import LidcDatabase

    db = LidcDatabase()
    for row in scans.itertuples():
        # whole length: every slice of the real scan, at its own geometry
        record = db.scan_by_series(row.seriesuid)
        image = sitk.ReadImage(str(tmp_path / "bench" / row.subset / f"{row.seriesuid}.mhd"))
        assert image.GetSize()[2] == record.n_slices == row.slices
        assert image.GetOrigin()[2] == pytest.approx(record.z_positions_mm.min(), abs=1e-3)
        assert image.GetPixelID() == sitk.sitkInt16
    reference = pd.read_csv(tmp_path / "bench" / "annotations.csv")
    assert len(reference) == scans["reference_nodules"].sum()
    assert not any((tmp_path / "bench").glob(".*"))  # no staging or resume files left

    scored = lungcad(
        "benchmark",
        "score",
        "--model",
        str(model),
        "--data",
        "bench",
        "--out",
        "report",
        "--dataset",
        "nowhere",
        "--params",
        "params.yaml",
        "--quiet",
    )
    assert scored.returncode == 0, scored.stderr
    text = (tmp_path / "report" / "metrics.json").read_text()
    assert "NaN" not in text  # strict JSON
    m = json.loads(text)
    assert m["froc"]["n_scans"] == 2 and m["froc"]["n_nodules"] == len(reference)
    assert m["froc"]["ci_resamples"] == "patients" and m["scans_failed"] == 0
    assert m["seconds_per_scan"] > 0 and m["peak_rss_mb"] > 100
    assert m["model"].startswith("tiny.pt sha256:")
    table = pd.read_csv(tmp_path / "report" / "nodules.csv")
    assert len(table) == len(reference) and "malignancy_pred" in table


def test_a_series_with_slices_missing_is_not_drawn(db) -> None:
    from lungcad.benchmark.build import eligible_scans, missing_slices

    (gappy,) = db.scan_by_patient("LIDC-IDRI-0514")
    assert missing_slices(gappy) == 18  # 38 mm without a slice, at 2 mm
    assert missing_slices(db.scan_by_patient("LIDC-IDRI-0001")[0]) == 0
    drawn = {s.series_uid for s in eligible_scans(db, set(), 0)}
    assert gappy.series_uid not in drawn and len(drawn) > 1000
