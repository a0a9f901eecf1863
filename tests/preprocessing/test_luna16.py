"""LUNA16's layout end to end: the phantom written as LUNA16 (`lungcad data phantom --format
luna16`) builds the same dataset as its DICOM, bad LUNA16 input is reported, and the
cross-validation's LUNA16 mode makes one fold per subset folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from lungcad.cli.main import app
from lungcad.core.annotations.luna16 import REFERENCE_COLUMNS
from tests.conftest import TEST_PARAMS

runner = CliRunner()
SCANS = 3


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """The same 3-scan phantom as DICOM and as LUNA16 (2 subsets), each built."""
    base = tmp_path_factory.mktemp("luna16")
    out = {}
    for layout in ("dicom", "luna16"):
        raw = base / f"raw-{layout}"
        r = _invoke(
            "data",
            "phantom",
            "--out",
            str(raw),
            "--scans",
            str(SCANS),
            "--format",
            layout,
            "--subsets",
            "2",
            "--quiet",
        )
        assert r.exit_code == 0, r.output
        built = base / f"built-{layout}"
        r = _invoke(
            "data",
            "build",
            "--raw",
            str(raw),
            "--out",
            str(built),
            "--params",
            str(TEST_PARAMS),
            "--workers",
            "1",
            "--quiet",
        )
        assert r.exit_code == 0, r.output
        out[layout], out[f"{layout}_built"] = raw, built
    return out


def test_the_phantom_writes_luna16s_layout(roots) -> None:
    raw = roots["luna16"]
    mhds = sorted(raw.glob("subset*/*.mhd"))
    assert len(mhds) == SCANS and {m.parent.name for m in mhds} == {"subset0", "subset1"}
    assert all(m.with_suffix(".raw").is_file() for m in mhds)
    assert not list(raw.rglob("*.dcm")) and (raw / "phantom.json").is_file()
    ann = pd.read_csv(raw / "annotations.csv")
    exc = pd.read_csv(raw / "annotations_excluded.csv")
    assert list(ann.columns) == list(exc.columns) == REFERENCE_COLUMNS
    assert len(ann) > 0 and set(ann["seriesuid"].astype(str)) <= {m.stem for m in mhds}
    # every reference nodule lies inside its volume (LUNA16 world coordinates = patient mm)
    for uid, rows in ann.groupby("seriesuid"):
        image = sitk.ReadImage(str(next(m for m in mhds if m.stem == str(uid))))
        for _, r in rows.iterrows():
            index = image.TransformPhysicalPointToContinuousIndex((r.coordX, r.coordY, r.coordZ))
            assert all(-0.5 <= i <= s - 0.5 for i, s in zip(index, image.GetSize()))


def test_luna16_and_dicom_give_the_same_cubes_labels_and_ratings(roots) -> None:
    a = pd.read_csv(roots["dicom_built"] / "index.csv")
    b = pd.read_csv(roots["luna16_built"] / "index.csv")
    assert len(a) == len(b) > 0 and (a["label"] == 1).sum() > 0
    for col in ("patient_id", "series_uid", "nodule_id", "kind", "label"):
        assert a[col].fillna("").tolist() == b[col].fillna("").tolist(), col
    for col in ("malignancy_mean", "malignancy_std", "diameter_mm", "n_readers"):
        np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), equal_nan=True)
    centres = ["center_x_mm", "center_y_mm", "center_z_mm"]
    assert np.abs(a[centres].to_numpy() - b[centres].to_numpy()).max() <= 0.5
    ca = np.load(roots["dicom_built"] / "cubes.npy").astype(int)
    cb = np.load(roots["luna16_built"] / "cubes.npy").astype(int)
    assert ca.shape == cb.shape and np.abs(ca - cb).max() <= 1
    series = pd.read_csv(roots["luna16_built"] / "series_index.csv")
    assert set(series["folder"]) == {"subset0", "subset1"}


def test_bad_luna16_input_is_one_line_each_and_the_build_goes_on(roots, tmp_path) -> None:
    bare = tmp_path / "no-annotations"
    shutil.copytree(roots["luna16"] / "subset1", bare / "subset1")
    r = _invoke("data", "build", "--raw", str(bare), "--out", str(tmp_path / "o1"), "--quiet")
    assert r.exit_code == 2
    assert r.output.count("error:") == 1 and "no annotations.csv" in r.output

    broken = tmp_path / "broken"
    shutil.copytree(roots["luna16"], broken)
    mhds = sorted(broken.glob("subset*/*.mhd"))
    mhds[0].with_suffix(".raw").unlink()  # a header without its data
    stranger = broken / "subset1" / "1.2.3.4.5.mhd"  # a series the LIDC database lacks
    shutil.copy(mhds[1], stranger)
    shutil.copy(mhds[1].with_suffix(".raw"), stranger.with_suffix(".raw"))
    text = stranger.read_text().replace(mhds[1].with_suffix(".raw").name, "1.2.3.4.5.raw")
    stranger.write_text(text)
    out = tmp_path / "o2"
    r = _invoke(
        "data",
        "build",
        "--raw",
        str(broken),
        "--out",
        str(out),
        "--params",
        str(TEST_PARAMS),
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    skipped = pd.read_csv(out / "skipped.csv")
    scans = skipped[skipped["item"] == "scan"]
    reasons = dict(zip(scans["series_uid"].astype(str), scans["reason"]))
    assert ".raw" in reasons[mhds[0].stem] or "SimpleITK" in reasons[mhds[0].stem]
    assert "not in the LIDC-IDRI database" in reasons["1.2.3.4.5"]
    index = pd.read_csv(out / "index.csv")
    assert set(index["series_uid"]) == {m.stem for m in mhds[1:]}  # the others are built


def test_luna16_subsets_are_the_cross_validation_folds(roots, tmp_path) -> None:
    params = tmp_path / "params.yaml"
    # 3 scans: a fold testing 2 keeps 1 to train on, none to validate on
    params.write_text(
        f"extends: {TEST_PARAMS}\nsplit:\n  val_fraction: 0.0\n"
        "cv:\n  folds: [0, 1]\n  split_by: luna16_subsets\n"
    )
    built = roots["luna16_built"]
    r = _invoke(
        "cv",
        "split",
        "--index",
        str(built / "index.csv"),
        "--out",
        str(tmp_path / "cv"),
        "--params",
        str(params),
    )
    assert r.exit_code == 0, r.output
    series = pd.read_csv(built / "series_index.csv")
    for k in (0, 1):
        fold = json.loads((tmp_path / "cv" / f"fold{k}.json").read_text())
        expected = set(series.loc[series["folder"] == f"subset{k}", "patient_id"])
        assert set(fold["test"]) == expected
        assert not expected & (set(fold["train"]) | set(fold["val"]))
    params.write_text(
        f"extends: {TEST_PARAMS}\ncv:\n  folds: [0, 1, 2]\n  split_by: luna16_subsets\n"
    )
    r = _invoke(
        "cv",
        "split",
        "--index",
        str(built / "index.csv"),
        "--out",
        str(tmp_path / "cv3"),
        "--params",
        str(params),
    )
    assert r.exit_code == 2
    assert "lists 3 folds but the dataset's scans are in 2 subset folder(s)" in r.output


def test_luna16s_candidate_list_gives_the_candidate_negatives(roots, tmp_path) -> None:
    listed_root = tmp_path / "listed"
    shutil.copytree(roots["luna16"], listed_root)
    first = pd.read_csv(roots["luna16_built"] / "index.csv")
    centres = ["center_x_mm", "center_y_mm", "center_z_mm"]
    rows = [
        {
            "seriesuid": r.series_uid,
            "coordX": r.center_x_mm,
            "coordY": r.center_y_mm,
            "coordZ": r.center_z_mm,
            "class": 0,
        }
        for r in first[first["label"] == 0].itertuples()
    ]
    nodules = first[first["label"] == 1]
    for r in nodules.itertuples():  # the nodule itself (class 1), and a point 1 mm off it
        at = {"seriesuid": r.series_uid, "coordX": r.center_x_mm, "coordY": r.center_y_mm}
        rows.append({**at, "coordZ": r.center_z_mm, "class": 1})
        rows.append({**at, "coordZ": r.center_z_mm + 1.0, "class": 0})
    listed = pd.DataFrame(rows)
    listed.to_csv(listed_root / "candidates_V2.csv", index=False)
    params = tmp_path / "params.yaml"
    params.write_text(f"extends: {TEST_PARAMS}\npreprocess:\n  candidate_negative_fraction: 0.5\n")
    out = tmp_path / "built"
    args = ["data", "build", "--raw", str(listed_root), "--out", str(out), "--params", str(params)]
    r = _invoke(*args, "--quiet")
    assert r.exit_code == 0, r.output
    index = pd.read_csv(out / "index.csv")
    candidates = index[index["kind"] == "candidate"]
    assert len(candidates) > 0
    for c in candidates.itertuples():  # each one of the list's false positives of its scan
        own = listed[(listed["seriesuid"] == c.series_uid) & (listed["class"] == 0)]
        gap = np.abs(
            own[["coordX", "coordY", "coordZ"]].to_numpy()
            - [c.center_x_mm, c.center_y_mm, c.center_z_mm]
        )
        assert gap.max(axis=1).min() < 1e-6
        # ... and never the false positive 1 mm off a nodule
        near = nodules[nodules["series_uid"] == c.series_uid][centres].to_numpy()
        assert (
            np.linalg.norm(near - [c.center_x_mm, c.center_y_mm, c.center_z_mm], axis=1).min() > 5
        )
    (listed_root / "candidates_V2.csv").write_text("seriesuid,x\n1.2.3,4\n")
    r = _invoke(*[a if a != str(out) else str(tmp_path / "bad") for a in args], "--quiet")
    assert r.exit_code == 2 and r.output.count("error:") == 1
    assert "candidates_V2.csv: not a LUNA16 candidate list" in r.output
