"""Shared fixtures: the real LIDC database, the real LIDC-IDRI-0001 slab, series writers."""

from __future__ import annotations

import os
from pathlib import Path

# As every lungcad command does (lungcad/__init__.py), before numpy is imported here.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from lungcad.core.annotations.lidc_db import CHARACTERISTICS, LidcDatabase

REPO = Path(__file__).resolve().parents[1]
SLAB_ROOT = REPO.parent / "shared" / "data" / "lidc-slabs"
SERIES_0001 = "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"


def pytest_configure(config) -> None:
    """Under pytest-xdist each worker gets its share of the cores, for its own PyTorch and
    for the processes its tests start: workers that each ran as many threads as there are
    cores would wait on one another's threads."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        threads = max(1, (os.cpu_count() or 1) // int(workers))
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def db() -> LidcDatabase:
    return LidcDatabase()


@pytest.fixture(scope="session")
def slab_root() -> Path:
    if not (SLAB_ROOT / "LIDC-IDRI-0001").is_dir():
        pytest.fail(f"the real LIDC slab is missing at {SLAB_ROOT}: clone lungcad beside shared/")
    return SLAB_ROOT


@pytest.fixture(scope="session")
def slab_files(slab_root: Path) -> list[Path]:
    return sorted(slab_root.glob("LIDC-IDRI-0001/*/*/*.dcm"))


def write_series(
    folder: Path,
    hu: np.ndarray,
    spacing_xyz: tuple[float, float, float],
    origin_xyz: tuple[float, float, float],
    series_uid: str | None = None,
    patient_id: str = "TEST-0001",
    modality: str = "CT",
    z_positions: list[float] | None = None,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    positions: list[tuple[float, float, float]] | None = None,
) -> list[Path]:
    """Write a (slice, row, col) HU volume as a DICOM series (stored = HU + 1024): axial
    at ``origin_xyz`` and ``z_positions`` by default; ``orientation`` (row and column
    cosines) and ``positions`` (each slice's ImagePositionPatient) for any other stack."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid(entropy_srcs=[series_uid, "study"])
    if z_positions is None:
        z_positions = [origin_xyz[2] + k * spacing_xyz[2] for k in range(hu.shape[0])]
    if positions is not None:
        z_positions = [p[2] for p in positions]
    paths = []
    for k, z in enumerate(z_positions):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientID = patient_id
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[series_uid, "frame"])
        ds.InstanceNumber = len(z_positions) - k
        ds.ImagePositionPatient = (
            list(positions[k]) if positions is not None else [origin_xyz[0], origin_xyz[1], z]
        )
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [spacing_xyz[1], spacing_xyz[0]]
        ds.SliceThickness = spacing_xyz[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = hu.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (hu[k].astype(np.int32) + 1024).astype("<i2").tobytes()
        path = folder / f"{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def set_raw(path: Path, keyword: str, raw: bytes, vr: str = "DS") -> None:
    """Write ``raw`` bytes as the value of ``keyword`` in a DICOM file, unchecked: the
    malformed headers a careless or hostile writer produces."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement

    ds = pydicom.dcmread(path)
    tag = tag_for_keyword(keyword)
    ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)
    ds.save_as(path)


def make_tiny_dataset(
    folder: Path,
    n_patients: int = 6,
    per_patient: int = 4,
    size: int = 32,
    seed: int = 0,
    n_val: int = 1,
    n_test: int = 1,
) -> tuple[Path, Path]:
    """A small cube dataset (cubes.npy, masks.npy, index.csv, splits.json) in lungcad's
    contract.

    Nodule cubes hold a soft-tissue sphere in noisy lung whose radius grows with the
    malignancy label (the sphere is the nodule's mask); negative cubes hold lung noise and a
    vessel-like tube.
    """
    import json

    import pandas as pd

    from lungcad.core.masks import pack_masks

    rng = np.random.default_rng(seed)
    grid = np.indices((size,) * 3) - (size - 1) / 2
    dist = np.sqrt((grid**2).sum(0))
    cubes, rows, masks = [], [], []
    for p in range(n_patients):
        pid = f"LIDC-IDRI-9{p:03d}"
        for j in range(per_patient):
            cube = -850 + rng.normal(0, 30, (size,) * 3)
            label = j % 2 == 0
            mask = np.zeros(cube.shape, bool)
            if label:
                malignancy = float(rng.integers(1, 6))
                mask = dist <= 2 + malignancy
                cube[mask] = 40 + rng.normal(0, 20)
            else:
                malignancy = np.nan
                tube = np.hypot(grid[1] - rng.integers(-6, 6), grid[2] - rng.integers(-6, 6)) <= 1.5
                cube[tube] = 40
            cubes.append(cube.astype(np.int16))
            masks.append(mask)
            ratings = {
                f"mean_{c}": (malignancy + rng.normal(0, 0.5) if label else np.nan)
                for c in CHARACTERISTICS
                if c != "malignancy"
            }
            rows.append(
                {
                    **ratings,
                    "cube_index": len(rows),
                    "patient_id": pid,
                    "series_uid": f"1.2.{p}",
                    "nodule_id": f"{pid}:0:{j}",
                    "label": int(label),
                    "kind": "nodule" if label else "random",
                    "malignancy_mean": malignancy,
                    "malignancy_median": malignancy,
                    "malignancy_std": 0.5 if label else np.nan,
                    "n_readers": 4 if label else 0,
                    "diameter_mm": 2 * (2 + malignancy) if label else np.nan,
                    "center_x_mm": 100.0 + 70 * j,
                    "center_y_mm": -50.0 + 3 * p,
                    "center_z_mm": -120.5 - 10 * p,
                }
            )
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "cubes.npy", np.stack(cubes))
    np.save(folder / "masks.npy", pack_masks(np.stack(masks)))
    pd.DataFrame(rows).to_csv(folder / "index.csv", index=False)
    ids = sorted({r["patient_id"] for r in rows})
    n_train = len(ids) - n_val - n_test
    splits = {
        "train": ids[:n_train],
        "val": ids[n_train : n_train + n_val],
        "test": ids[n_train + n_val :],
    }
    (folder / "splits.json").write_text(json.dumps(splits))
    return folder, folder / "splits.json"


@pytest.fixture
def tiny_dataset(tmp_path) -> tuple[Path, Path]:
    return make_tiny_dataset(tmp_path / "dataset")


#: The cube detector's profile: what the tests' tiny networks learn like, and the detector
#: that finds something with an untrained one (its candidates always give findings).
CUBES_PROFILE = REPO / "configs" / "cubes.yaml"


def cube_train_config(settings: dict):
    """Train settings where every key the tests do not name, in ``model`` and ``augment``
    too, is the cube profile's (whole centred cubes, no centre heatmap, its losses)."""
    from lungcad.config import TrainConfig, load_params

    base = load_params(CUBES_PROFILE).train.model_dump()
    del base["experiment"]
    merged = {**base, **settings}
    for section in ("model", "augment"):
        merged[section] = {**base[section], **merged.get(section, {})}
    return TrainConfig.model_validate(merged)


def cube_detect_settings() -> dict:
    """The cube profile's own detect settings (what it changes in params.yaml)."""
    import yaml

    return yaml.safe_load(CUBES_PROFILE.read_text())["detect"]


def tiny_train_config(**changes):
    return cube_train_config(
        {
            "epochs": 3,
            "lambda_attr": 0.0,
            "channels_last": False,
            "batch_size": 4,
            "lr": 3e-3,
            "device": "cpu",
            "model": {
                "widths": [4, 8, 8, 16],
                "blocks": [1, 1, 1, 1],
                "feature_dim": 16,
                "dropout": 0.0,
                "attributes": False,
            },
            # No synthetic lesions: these tests learn known functions of tiny synthetic cubes.
            "augment": {
                "flip": True,
                "rot90": True,
                "shift_mm": 2,
                "hu_jitter": 10.0,
                "lesion_share": 0.0,
            },
            **changes,
        }
    )


def write_tiny_checkpoint(path: Path, centre_head: bool = False) -> Path:
    """A small seeded untrained network: for tests about geometry and I/O, not accuracy
    (``centre_head``: one the dense detector's default score can read)."""
    import torch

    from lungcad.core.model.network import NoduleNet

    torch.manual_seed(0)
    config = cube_train_config(
        {
            "model": {
                "widths": [4, 8, 8, 16],
                "blocks": [1, 1, 1, 1],
                "feature_dim": 16,
                "centre_head": centre_head,
            }
        }
    )
    torch.save({"model": NoduleNet(config.model).state_dict(), "config": config.to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A throwaway PostgreSQL server (pgserver ships its binaries); its database URL."""
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


#: The settings the tests of the shared machinery run with (tests/params-small.yaml: the cube
#: detector's profile with fewer negatives and a lower reporting threshold).
TEST_PARAMS = Path(__file__).resolve().parent / "params-small.yaml"


def small_params():
    from lungcad.config import load_params

    return load_params(TEST_PARAMS)


def pytest_terminal_summary(terminalreporter) -> None:
    """Say loudly when the PACS round trip could not run on this machine."""
    from tests.tools.orthanc import orthanc_missing

    missing = orthanc_missing()
    if missing:
        terminalreporter.section("PACS round trip NOT RUN", sep="!", red=True, bold=True)
        terminalreporter.line(
            f"{missing}: the DICOMweb tests against a real Orthanc were skipped.", red=True
        )
