"""The cube dataset built from real data (the LIDC-IDRI-0001 slab) and from broken input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from lungcad.config import CandidatesConfig, ConfigError, PreprocessConfig, validate_section
from lungcad.core.masks import read_masks
from lungcad.core.runner import ScanParts
from lungcad.preprocessing.build import INDEX_COLUMNS, build_dataset, settings_key
from tests.conftest import SERIES_0001, small_params, write_series


@pytest.fixture(scope="module")
def slab_dataset(slab_root, db, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("slab_dataset")
    build_dataset(slab_root, out, small_params().preprocess, db=db, progress=False)
    return out


def test_real_slab_gives_a_dense_cube_at_the_db_centroid(slab_dataset) -> None:
    index = pd.read_csv(slab_dataset / "index.csv")
    assert list(index.columns) == INDEX_COLUMNS
    nodules = index[index["kind"] == "nodule"]
    assert len(nodules) == 1
    row = nodules.iloc[0]
    assert row["patient_id"] == "LIDC-IDRI-0001" and row["series_uid"] == SERIES_0001
    assert row["n_readers"] == 4 and row["malignancy_median"] == 5
    assert -125 < row["center_z_mm"] < -105 and bool(row["in_lung_mask"])
    cubes = np.load(slab_dataset / "cubes.npy", mmap_mode="r")
    assert cubes.shape == (len(index), 64, 64, 64) and cubes.dtype == np.int16
    cube = cubes[int(row["cube_index"])].astype(float)
    k, r, c = np.meshgrid(*[np.arange(64) - 31.5] * 3, indexing="ij")
    dist = np.sqrt(k * k + r * r + c * c)
    core = cube[dist < 6].mean()
    lung = np.median(cube[(dist > 18) & (dist < 24)])
    assert core > 0, f"nodule core mean {core:.0f} HU should be soft tissue"
    assert lung < -600, f"surrounding lung median {lung:.0f} HU should be aerated"
    # The 16-slice slab is 37.5 mm thick: the 64 mm cube is padded with air above and below.
    assert (cube[0] == -1000).all() and (cube[-1] == -1000).all()


def test_real_slab_nodule_cube_carries_its_consensus_mask(slab_dataset) -> None:
    index = pd.read_csv(slab_dataset / "index.csv")
    masks = read_masks(slab_dataset, index["cube_index"])
    assert np.load(slab_dataset / "masks.npy").shape == (len(index), 64, 64, 8)  # bit-packed
    nodule = index["kind"] == "nodule"
    assert not masks[~nodule.to_numpy()].any()  # negatives carry no nodule of their own
    mask = masks[nodule.to_numpy()][0]
    # The readers' consensus volume, resampled to 1 mm voxels, keeps its size...
    volume_mm3 = float(index.loc[nodule, "volume_mm3"].iloc[0])
    assert mask.sum() == pytest.approx(volume_mm3, rel=0.15)
    # ... sits on the cube's centre (the consensus centroid) ...
    centroid = np.argwhere(mask).mean(axis=0)
    np.testing.assert_allclose(centroid, 31.5, atol=1.0)
    # ... and on the dense nodule, not on the lung around it.
    cubes = np.load(slab_dataset / "cubes.npy", mmap_mode="r")
    cube = cubes[int(index.loc[nodule, "cube_index"].iloc[0])]
    assert np.median(cube[mask]) > -200 and np.median(cube[~mask]) < -600


def test_slab_skips_are_listed_with_reasons(slab_dataset) -> None:
    skipped = pd.read_csv(slab_dataset / "skipped.csv")
    reasons = " | ".join(skipped["reason"].astype(str))
    assert "ATTRIBUTION" in reasons and "not a DICOM file" in reasons
    # 37.5 mm of lung cannot hold a whole 64 mm negative cube: said, not silently dropped.
    assert (skipped["item"] == "negatives").sum() == 2
    fingerprint = json.loads((slab_dataset / "fingerprint.json").read_text())
    assert fingerprint["n_scans"] == 1 and fingerprint["slices_per_scan"]["max"] == 16
    assert fingerprint["slice_spacing_mm"]["median"] == pytest.approx(2.5)
    assert fingerprint["hu_percentiles_lung"]["p50"] < -700
    assert not (slab_dataset / ".parts").exists()


def _broken_root(root: Path, db, slab_files) -> dict[str, str]:
    """A root holding the real slab plus one broken series per kind of bad input."""
    shutil.copytree(slab_files[0].parents[3], root, dirs_exist_ok=True)
    scans = [s for s in db.scans if s.series_uid != SERIES_0001][:6]
    expected = {}
    hu = np.full((6, 32, 32), -800, dtype=np.int16)
    for scan, kind in zip(scans, ["truncated", "not_ct", "no_rescale", "gap", "single", "mixed"]):
        folder = root / scan.patient_id / scan.study_uid / scan.series_uid
        files = write_series(
            folder,
            hu,
            (scan.pixel_spacing_mm,) * 2 + (2.0,),
            (0, 0, 0),
            series_uid=scan.series_uid,
            patient_id=scan.patient_id,
            modality="MR" if kind == "not_ct" else "CT",
        )
        if kind == "truncated":
            files[2].write_bytes(files[2].read_bytes()[:2000])
            expected[scan.series_uid] = "left out 1 file(s) (0002.dcm): truncated"  # read around
        elif kind == "not_ct":
            expected[scan.series_uid] = "not CT"
        elif kind == "no_rescale":
            ds = pydicom.dcmread(files[0])
            del ds.RescaleSlope
            ds.save_as(files[0])
            expected[scan.series_uid] = "RescaleSlope/RescaleIntercept"
        elif kind == "gap":
            files[3].unlink()
            expected[scan.series_uid] = "1 missing slice(s)"  # filled, noted
        elif kind == "single":
            for f in files[1:]:
                f.unlink()
            expected[scan.series_uid] = "single slice"
        elif kind == "mixed":
            ds = pydicom.dcmread(files[0])
            ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1"
            ds.save_as(files[0])
            expected[scan.series_uid] = "folder mixes files of 2 series"
    return expected


def test_each_bad_scan_is_skipped_with_its_reason_and_the_rest_continues(
    tmp_path, db, slab_files
) -> None:
    expected = _broken_root(tmp_path / "root", db, slab_files)
    index = build_dataset(
        tmp_path / "root",
        tmp_path / "out",
        small_params().preprocess,
        db=db,
        workers=2,
        progress=False,
    )
    assert (index["kind"] == "nodule").sum() == 1  # the real slab still gives its cube
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    for uid, reason in expected.items():
        rows = skipped[(skipped["series_uid"] == uid) & (skipped["item"] == "scan")]
        assert rows["reason"].str.contains(reason, regex=False).any(), (uid, reason, rows)
    foreign = skipped[skipped["series_uid"] == "1.2.826.0.1.3680043.8.498.1"]
    assert foreign["reason"].str.contains("folder mixes").any()


def test_interrupted_build_reuses_finished_scans_and_settings_invalidate_them(
    tmp_path, slab_root, db
) -> None:
    config = small_params().preprocess
    out = tmp_path / "out"
    build_dataset(slab_root, out, config, db=db, progress=False)
    first = np.load(out / "cubes.npy")
    # Leave a finished scan's result as an interrupted run would, marked with a sentinel.
    parts = ScanParts(out, settings_key(config, CandidatesConfig())).folder
    parts.mkdir(parents=True)
    marked = first.copy()
    marked[0, 0, 0, 0] = 1234
    index = pd.read_csv(out / "index.csv")
    np.savez(
        parts / f"{SERIES_0001}.npz",
        cubes=marked,
        masks=np.load(out / "masks.npy"),
        rows=np.array(index.drop(columns="cube_index").to_json(orient="records")),
        skipped=np.array("[]"),
        stats=np.array(""),
    )
    build_dataset(slab_root, out, config, db=db, progress=False)
    assert np.load(out / "cubes.npy")[0, 0, 0, 0] == 1234  # reused, not recomputed
    other = config.replace(lung_dilation_mm=6.0)
    parts.mkdir(parents=True)
    np.savez(
        parts / f"{SERIES_0001}.npz",
        cubes=marked,
        masks=np.load(out / "masks.npy"),
        rows=np.array("[]"),
        skipped=np.array("[]"),
        stats=np.array(""),
    )
    build_dataset(slab_root, out, other, db=db, progress=False)
    np.testing.assert_array_equal(np.load(out / "cubes.npy"), first)  # other settings: redone


def test_config_rejects_out_of_range_and_unknown_parameters() -> None:
    with pytest.raises(ValueError, match="min_readers"):
        PreprocessConfig(min_readers=5)
    with pytest.raises(ConfigError, match="unknown parameter preprocess.cube_sise"):
        validate_section(PreprocessConfig, {"cube_sise": 64}, "params.yaml", "preprocess")
