"""`lungcad detect --dicomweb --study --store` against a real Orthanc: a phantom study goes
in, its findings come back as SEG and SR equal to what detect found from local files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.valuerep import DSfloat
from typer.testing import CliRunner

from lungcad.cli.main import app
from lungcad.dicom.dicomweb import DicomWebError, Pacs
from lungcad.dicom.objects import read_findings_sr, read_segments
from lungcad.phantom.writer import write_phantom
from tests.conftest import TEST_PARAMS, write_series, write_tiny_checkpoint
from tests.tools.orthanc import (
    ORTHANC_PASSWORD,
    ORTHANC_USER,
    dciodvfy_errors,
    upload,
)

pytestmark = pytest.mark.slow
runner = CliRunner()
CREDENTIALS = {"LUNGCAD_DICOMWEB_USER": ORTHANC_USER, "LUNGCAD_DICOMWEB_PASSWORD": ORTHANC_PASSWORD}


@pytest.fixture(scope="module")
def study(tmp_path_factory, orthanc, db):
    """One phantom scan in Orthanc, with an MR series in the same study (to be skipped),
    and a second study holding only an MR series."""
    root = tmp_path_factory.mktemp("phantom")
    [scan] = write_phantom(root, n_scans=1, seed=3, progress=False, db=db)
    files = sorted(root.rglob("*.dcm"))
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    mr = write_series(
        root / "mr", np.zeros((3, 32, 32), np.int16), (1, 1, 3), (0, 0, 0), modality="MR"
    )
    for f in mr:  # the MR series joins the phantom's study
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.PatientID = study_uid, scan.patient_id
        ds.save_as(f)
    only_mr = write_series(
        root / "mr-only", np.zeros((3, 32, 32), np.int16), (1, 1, 3), (0, 0, 0), modality="MR"
    )
    upload(orthanc, [*files, *mr, *only_mr])
    return {
        "uid": study_uid,
        "series": scan.series_uid,
        "folder": root / scan.patient_id,
        "mr_series": str(pydicom.dcmread(mr[0]).SeriesInstanceUID),
        "mr_study": str(pydicom.dcmread(only_mr[0]).StudyInstanceUID),
    }


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def _detect(*args: str, env: dict | None = None):
    return runner.invoke(
        app, ["detect", *args, "--quiet", "--params", str(TEST_PARAMS)], env=env or {}
    )


def test_detect_from_orthanc_stores_seg_and_sr_that_read_back_equal(
    study, orthanc, checkpoint, tmp_path, monkeypatch
):
    # the tiny untrained network scores every candidate alike: report its best four
    first = _detect(
        str(study["folder"]),
        "--model",
        str(checkpoint),
        "--out",
        str(tmp_path / "all"),
        "--threshold",
        "0",
        "--no-dicom",
        "--no-figures",
    )
    assert first.exit_code == 0, first.output
    threshold = pd.read_csv(tmp_path / "all" / "detections.csv")["probability"].iloc[3]
    common = ["--model", str(checkpoint), "--threshold", repr(float(threshold)), "--no-figures"]
    local = _detect(str(study["folder"]), *common, "--out", str(tmp_path / "local"))
    assert local.exit_code == 0, local.output
    pacs = _detect(
        "--dicomweb",
        orthanc,
        "--study",
        study["uid"],
        "--store",
        *common,
        "--out",
        str(tmp_path / "pacs"),
        env=CREDENTIALS,
    )
    assert pacs.exit_code == 0, pacs.output
    assert f"series {study['mr_series']}: modality MR, not CT: skipped" in pacs.output
    assert f"series {study['series']}: stored SEG and SR" in pacs.output

    found = pd.read_csv(tmp_path / "pacs" / "detections.csv")
    found = found[found["probability"] >= threshold].reset_index(drop=True)
    assert len(found) >= 4
    pd.testing.assert_frame_equal(
        found, pd.read_csv(tmp_path / "local" / "detections.csv").iloc[: len(found)]
    )

    # what the PACS holds now, queried and retrieved by a plain DICOMweb client
    client = DICOMwebClient(orthanc)
    client._session.auth = (ORTHANC_USER, ORTHANC_PASSWORD)
    series = client.search_for_series(study_instance_uid=study["uid"])
    by_modality = {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0] for s in series}
    assert {"CT", "MR", "SEG", "SR"} <= set(by_modality)
    back = {}
    for modality in ("SEG", "SR"):
        [ds] = client.retrieve_series(study["uid"], by_modality[modality])
        back[modality] = tmp_path / f"{modality}.dcm"
        ds.save_as(back[modality], enforce_file_format=True)
        assert dciodvfy_errors(back[modality]) == []

    sr = read_findings_sr(back["SR"])
    assert len(sr) == len(found)
    centre = ["coordX", "coordY", "coordZ"]
    assert np.abs(sr[centre].to_numpy() - found[centre].to_numpy()).max() <= 0.1
    for column in ("probability", "malignancy", "diameter_mm", "mean_diameter_mm", "volume_mm3"):
        for got, want in zip(sr[column], found[column]):
            assert (np.isnan(got) and np.isnan(want)) or got == float(DSfloat(want, True))
    assert list(sr["type"]) == list(found["type"].fillna("n/a"))

    ct = sorted(study["folder"].rglob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct]
    headers.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    uids = [str(d.SOPInstanceUID) for d in headers]
    local_seg = tmp_path / "local" / "dicom" / study["series"] / "seg.dcm"
    from_pacs, from_files = read_segments(back["SEG"], uids), read_segments(local_seg, uids)
    assert sorted(from_pacs) == list(range(1, len(found) + 1))
    for k in from_pacs:
        assert from_pacs[k].any()
        np.testing.assert_array_equal(from_pacs[k], from_files[k])

    # A store the server refuses (objects of another study) says which objects did not
    # arrive, and none did.
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    objects = [local_seg, local_seg.with_name("sr.dcm")]
    with pytest.raises(DicomWebError, match=r"store of seg.dcm, sr.dcm \(none arrived\)"):
        Pacs.connect(orthanc).store("1.2.3.999", objects)
    assert client.search_for_series(study_instance_uid="1.2.3.999") == []


def test_a_study_without_ct_and_an_unknown_study_are_one_line_errors(study, orthanc, checkpoint):
    result = _detect(
        "--dicomweb",
        orthanc,
        "--study",
        study["mr_study"],
        "--model",
        str(checkpoint),
        env=CREDENTIALS,
    )
    assert result.exit_code == 2
    assert "modality MR, not CT: skipped" in result.output
    assert f"error: study {study['mr_study']}: no CT series to detect" in result.output
    result = _detect("--dicomweb", orthanc, "--study", "1.2.3.4", env=CREDENTIALS)
    assert result.exit_code == 2
    assert "no study 1.2.3.4" in result.output and "Traceback" not in result.output


def test_wrong_credentials_stop_before_any_work(orthanc, tmp_path):
    wrong = {**CREDENTIALS, "LUNGCAD_DICOMWEB_PASSWORD": "not-the-password"}
    result = _detect("--dicomweb", orthanc, "--study", "1.2.3", "--out", str(tmp_path / "a"),
                     env=wrong)  # fmt: skip
    assert result.exit_code == 2
    assert f"error: {orthanc}: HTTP 401: the server refused the credentials" in result.output
    assert "not-the-password" not in result.output
    assert not (tmp_path / "a").exists()
