"""`lungcad detect` end to end on written series: the same findings from DICOM and from a
LUNA16-style .mhd of the same volume, bad input reported, the output contract."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from typer.testing import CliRunner

from lungcad.cli.main import app
from lungcad.config import TrainConfig
from lungcad.core.model.attributes import ATTRIBUTES
from lungcad.core.model.network import NoduleNet
from lungcad.detection.batch import DICOM_MAX_FINDINGS
from lungcad.dicom.objects import read_findings_sr
from tests.conftest import TEST_PARAMS, write_series, write_tiny_checkpoint
from tests.detection.test_candidates import ORIGIN, SPACING, synthetic_chest

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small seeded network: these tests are about geometry and I/O, not accuracy."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, Path]:
    """The synthetic chest as a DICOM series and as a .mhd/.raw pair, one broken series,
    and a series with no lung."""
    root = tmp_path_factory.mktemp("scans")
    hu, _ = synthetic_chest()
    uid = "1.2.826.0.1.3680043.8.498.1"
    write_series(root / "dicom" / "P1", hu, tuple(SPACING), tuple(ORIGIN), series_uid=uid)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(tuple(float(v) for v in SPACING))
    image.SetOrigin(tuple(float(v) for v in ORIGIN))
    (root / "luna").mkdir()
    sitk.WriteImage(image, str(root / "luna" / f"{uid}.mhd"))
    broken = write_series(root / "dicom" / "P2", hu[:8], tuple(SPACING), tuple(ORIGIN))
    broken[3].write_bytes(broken[3].read_bytes()[:-5000])  # pixel data cut short
    write_series(
        root / "dicom" / "P3", np.full((6, 64, 64), 40, np.int16), (1.0, 1.0, 2.0), (0, 0, 0)
    )
    return {"dicom": root / "dicom", "mhd": root / "luna" / f"{uid}.mhd", "uid": uid}


def _detect(source: Path, out: Path, checkpoint: Path, params: Path = TEST_PARAMS):
    result = runner.invoke(
        app,
        [
            "detect",
            str(source),
            "--model",
            str(checkpoint),
            "--out",
            str(out),
            "--quiet",
            "--threshold",
            "0.0",
            "--params",
            str(params),
        ],
    )
    return result


def test_mhd_gives_the_same_findings_as_its_dicom(scans, checkpoint, tmp_path) -> None:
    a = _detect(scans["dicom"] / "P1", tmp_path / "dicom", checkpoint)
    b = _detect(scans["mhd"], tmp_path / "mhd", checkpoint)
    assert a.exit_code == 0, a.output
    assert b.exit_code == 0, b.output
    da = pd.read_csv(tmp_path / "dicom" / "detections.csv")
    db = pd.read_csv(tmp_path / "mhd" / "detections.csv")
    assert len(da) > 0 and len(da) == len(db)
    assert set(da["seriesuid"].astype(str)) == set(db["seriesuid"].astype(str)) == {scans["uid"]}
    cols = ["coordX", "coordY", "coordZ", "probability", "malignancy", "diameter_mm"]
    np.testing.assert_allclose(da[cols].to_numpy(), db[cols].to_numpy(), atol=1e-4)
    # LUNA16's submission columns first, then lungcad's.
    assert list(da.columns[:5]) == ["seriesuid", "coordX", "coordY", "coordZ", "probability"]
    assert {"patient_id", "malignancy", "diameter_mm"} <= set(da.columns)
    assert (tmp_path / "dicom" / "candidates.csv").is_file()
    # One picture of the scan, and a Grad-CAM picture and NIfTI map per listed finding.
    figures = sorted(p.name for p in (tmp_path / "dicom" / "figures").glob("*.png"))
    shown = min(len(da), 4)
    assert (
        len(figures) == 1 + shown and len([f for f in figures if f.endswith("_cam.png")]) == shown
    )
    maps = list((tmp_path / "dicom" / "maps").glob("*_detection.nii.gz"))
    assert len(maps) == shown
    report = (tmp_path / "dicom" / "report.md").read_text()
    assert all(f"figures/{f}" in report for f in figures)
    # The reported findings (at most DICOM_MAX_FINDINGS) as a SEG and an SR from DICOM
    # input; a .mhd volume has no images for them to reference.
    sr = read_findings_sr(tmp_path / "dicom" / "dicom" / scans["uid"] / "sr.dcm")
    assert len(sr) == min(len(da), DICOM_MAX_FINDINGS)
    np.testing.assert_allclose(sr["probability"], da["probability"].head(len(sr)), rtol=1e-12)
    assert (tmp_path / "dicom" / "dicom" / scans["uid"] / "seg.dcm").is_file()
    mhd_scans = pd.read_csv(tmp_path / "mhd" / "scans.csv")
    assert list(mhd_scans["dicom"]) == ["n/a (not read from DICOM)"]
    assert not (tmp_path / "mhd" / "dicom").exists()


def test_a_truncated_slice_is_read_around_and_a_lungless_scan_goes_on(scans, checkpoint, tmp_path):
    result = _detect(scans["dicom"], tmp_path / "all", checkpoint)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "all" / "scans.csv")
    assert (table["status"] == "ok").all() and len(table) == 3
    lungless = table[table["candidates"] == 0]
    assert len(lungless) == 1 and "no lung found" in lungless["reason"].iloc[0]
    [broken] = table[table["reason"].str.contains("truncated", na=False)]["reason"]
    assert "left out 1 file(s) (0003.dcm): truncated or undecodable pixel data" in broken
    assert "1 missing slice(s)" in broken and "filled by interpolation" in broken
    assert "truncated" in result.output  # the console line of that scan says so
    # Its SEG references the seven slices that were read, never the one left out.
    import highdicom as hd
    import pydicom

    [seg_path] = (tmp_path / "all" / "dicom").glob(
        f"{table[table['reason'].str.contains('truncated', na=False)]['seriesuid'].iloc[0]}/seg.dcm"
    )
    referenced = {uid for _, _, uid in hd.seg.segread(seg_path).get_source_image_uids()}
    kept = sorted((scans["dicom"] / "P2").glob("*.dcm"))
    uids = {
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in kept[:3] + kept[4:]
    }
    left_out = str(pydicom.dcmread(kept[3], stop_before_pixels=True, force=True).SOPInstanceUID)
    assert referenced <= uids and left_out not in referenced


def test_missing_raw_and_wrong_model_are_clear_errors(scans, checkpoint, tmp_path) -> None:
    lonely = tmp_path / "x.mhd"
    lonely.write_text(scans["mhd"].read_text())  # the header without its .raw
    result = _detect(lonely, tmp_path / "out1", checkpoint)
    assert result.exit_code != 0  # nothing could be read: a failed run
    assert ".raw" in result.output
    table = pd.read_csv(tmp_path / "out1" / "scans.csv")
    assert table["status"].tolist() == ["error"]
    assert ".raw" in table["reason"].iloc[0] and "x.mhd" in table["reason"].iloc[0]
    wrong = _detect(scans["mhd"], tmp_path / "out2", tmp_path / "nope.pt")
    assert wrong.exit_code != 0 and "nope.pt" in wrong.output


def test_test_time_flips_average_the_flipped_cubes_scores(checkpoint) -> None:
    from lungcad.config import DetectConfig
    from lungcad.core.cubes import extract_cube, mirror_pad_z
    from lungcad.core.io.series import CtVolume
    from lungcad.core.model.loading import load
    from lungcad.core.model.predict import predict_hu_cubes
    from lungcad.detection.detector import detector_config, score_cubes

    hu, geometry = synthetic_chest()
    volume = CtVolume(
        hu,
        geometry,
        "1.2.3",
        "",
        "P",
        geometry.index_to_mm(
            np.c_[np.zeros(hu.shape[0]), np.zeros(hu.shape[0]), np.arange(hu.shape[0])]
        )[:, 2],
    )
    loaded = load(checkpoint)
    model, config, window = loaded.network, loaded.config, loaded.window
    centre = np.array([[40.0, 10.0, -10.0]])
    detector = detector_config(loaded.cut, DetectConfig())
    plain, *_ = score_cubes(volume, centre, loaded, detector, "cpu", np.ones(1))
    flipped, *_ = score_cubes(
        volume,
        centre,
        loaded,
        detector_config(loaded.cut, DetectConfig(tta_flips=(2,))),
        "cpu",
        np.ones(1),
    )
    padded, g = mirror_pad_z(volume)
    cube = extract_cube(g.to_sitk(padded), centre[0])[None]
    mirror, _ = predict_hu_cubes(model, cube[:, :, :, ::-1].copy(), window, "cpu")
    assert flipped[0] == pytest.approx((plain[0] + mirror[0]) / 2, abs=1e-5)
    # A network with the attribute head: each candidate also gets the nine attributes, on
    # their LIDC scales (lungcad.core.model.attributes).
    with_attributes = NoduleNet(config.model.replace(attributes=True)).eval()
    *_, attrs, masks = score_cubes(
        volume,
        centre,
        replace(loaded, network=with_attributes),
        detector,
        "cpu",
        np.ones(1),
    )
    assert len(masks) == 1  # the decoder's mask of the one cube, in patient mm
    assert attrs.shape == (1, len(ATTRIBUTES))
    assert all(a.low <= v <= a.high for a, v in zip(ATTRIBUTES, attrs[0]))


def test_a_split_with_none_of_the_scans_is_a_clear_error(scans, checkpoint, tmp_path) -> None:
    splits = tmp_path / "splits.json"
    splits.write_text('{"seed": 0, "unit": "patient", "train": ["A"], "val": ["B"], "test": ["C"]}')
    result = runner.invoke(
        app,
        [
            "detect",
            str(scans["dicom"] / "P1"),
            "--model",
            str(checkpoint),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
            "--splits",
            str(splits),
            "--params",
            str(TEST_PARAMS),
        ],
    )
    assert result.exit_code != 0 and "no scan to detect" in result.output


def test_a_model_from_before_the_decoder_still_detects_and_says_how_it_sized(
    scans, tmp_path
) -> None:
    torch.manual_seed(0)
    config = TrainConfig.model_validate(
        {
            "lambda_seg": 0.0,
            "model": {
                "widths": [4, 8, 8, 16],
                "feature_dim": 16,
                "segmentation": False,
                "centre_head": False,
            },
            "augment": {"crop_size": 0},
        }
    )
    saved = config.to_dict()
    # written before these settings existed: read as every network was then, whatever
    # today's defaults are (no decoder, no centre heatmap, whole 64^3 cubes)
    for key in ("segmentation", "decoder_widths", "centre_head"):
        del saved["model"][key]
    del saved["lambda_seg"], saved["augment"]["crop_size"]
    path = tmp_path / "old.pt"
    torch.save({"model": NoduleNet(config.model).state_dict(), "config": saved}, path)
    result = _detect(scans["dicom"] / "P1", tmp_path / "out", path)
    assert result.exit_code == 0, result.output
    found = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert len(found) and (found["sizing"] == "cube centre").all()
    assert found["diameter_mm"].notna().all() and (found["cubes"] == 1).all()
    assert pd.read_csv(tmp_path / "out" / "scans.csv")["sizing"].tolist() == ["cube centre"]
    assert "Sizing: cube centre" in (tmp_path / "out" / "report.md").read_text()


def test_a_luna16_root_is_scored_against_its_own_tables(scans, checkpoint, tmp_path) -> None:
    """Given a LUNA16 root, detect's reference is LUNA16's annotations.csv and
    annotations_excluded.csv (not the LIDC database's), so every evaluation reads them; the
    FROC ignores findings on excluded lesions and counts the rest by LUNA16's rules."""
    import shutil

    from lungcad.detection.froc_report import evaluate_detection
    from tests.detection.test_candidates import SPHERES

    root = tmp_path / "luna16"
    root.mkdir()
    for f in scans["mhd"].parent.iterdir():
        shutil.copy(f, root / f.name)
    uid = scans["uid"]
    (big, big_d), (mid, mid_d) = SPHERES[2], SPHERES[1]
    pd.DataFrame(
        [(uid, *big, big_d), ("1.2.3.other", 0.0, 0.0, 0.0, 6.0)],
        columns=["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"],
    ).to_csv(root / "annotations.csv", index=False)
    pd.DataFrame(
        [(uid, *mid, mid_d)], columns=["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
    ).to_csv(root / "annotations_excluded.csv", index=False)
    result = _detect(root, tmp_path / "run", checkpoint)
    assert result.exit_code == 0, result.output
    reference = pd.read_csv(tmp_path / "run" / "annotations.csv")
    excluded = pd.read_csv(tmp_path / "run" / "annotations_excluded.csv")
    assert reference["seriesuid"].astype(str).tolist() == [uid]  # the other scan's row is not
    assert reference[["coordX", "coordY", "coordZ"]].to_numpy().tolist() == [list(big)]
    assert len(excluded) == 1
    m = evaluate_detection(tmp_path / "run", tmp_path / "froc", bootstrap=0)
    # By hand: a finding inside the reference sphere hits it; one inside the excluded sphere
    # (and not the reference) is ignored; every other finding is a false positive.
    found = pd.read_csv(tmp_path / "run" / "detections.csv")
    xyz = found[["coordX", "coordY", "coordZ"]].to_numpy(float)
    hit = np.linalg.norm(xyz - np.array(big), axis=1) < big_d / 2
    ignored = ~hit & (np.linalg.norm(xyz - np.array(mid), axis=1) < mid_d / 2)
    assert m["n_nodules"] == 1 and m["ignored_findings"] == int(ignored.sum())
    assert m["false_positives"] == int((~hit & ~ignored).sum())
    assert m["max_sensitivity"] == float(hit.any())


def test_an_acquisition_outside_the_training_data_is_processed_and_said(
    checkpoint, tmp_path
) -> None:
    hu, _ = synthetic_chest()
    # 7.5 mm slices (every sixth 1.25 mm slice) over the middle of the chest only: thicker
    # than any training scan, and the lungs run past both ends.
    thick = hu[12:84:6]
    write_series(
        tmp_path / "in" / "thick",
        thick,
        (float(SPACING[0]), float(SPACING[1]), 7.5),
        (float(ORIGIN[0]), float(ORIGIN[1]), float(ORIGIN[2]) + 15.0),
    )
    result = _detect(tmp_path / "in", tmp_path / "out", checkpoint)
    assert result.exit_code == 0, result.output
    [row] = pd.read_csv(tmp_path / "out" / "scans.csv").to_dict("records")
    assert row["status"] == "ok" and row["candidates"] > 0
    assert "outside the training acquisitions: slices 7.5 mm apart" in row["reason"]
    assert "the lungs run past the scan's first and last slice" in row["reason"]
    assert "7.5 mm apart" in result.output  # the console line of the scan says so too
