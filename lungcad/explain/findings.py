"""Heat maps of whole-scan findings: the cube of each finding cut as ``lungcad detect`` cut
it (z-mirrored volume, 1 mm grid centred on the finding), its detection map written as NIfTI
in patient mm and drawn over the three slices through it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lungcad.explain.cam import CamSettings, CubeExplainer
from lungcad.explain.figures import cube_figure
from lungcad.explain.run import write_map_nifti
from lungcad.io.series import CtVolume
from lungcad.preprocessing.cubes import extract_cube, mirror_pad_z


def finding_stem(patient_id: str, series_uid: str, rank: int) -> str:
    """File name stem of a scan's ``rank``-th finding (1 = most probable)."""
    return f"{patient_id}_{series_uid[-12:]}_f{rank}"


def explain_findings(
    volume: CtVolume,
    findings: pd.DataFrame,
    explainer: CubeExplainer,
    out_dir: str | Path,
    cube_size: int = 64,
    spacing_mm: float = 1.0,
) -> list[Path]:
    """Write ``maps/<stem>_detection.nii.gz`` and ``figures/<stem>_cam.png`` for each row of
    ``findings`` (columns coordX, coordY, coordZ, probability, malignancy, most probable
    first) in ``out_dir``; returns the figures."""
    if findings.empty:
        return []
    out_dir = Path(out_dir)
    hu, geometry = mirror_pad_z(volume, cube_size * spacing_mm)
    image = geometry.to_sitk(hu)
    centres = findings[["coordX", "coordY", "coordZ"]].to_numpy(float)
    cubes = np.stack([extract_cube(image, c, cube_size, spacing_mm) for c in centres])
    maps = explainer(cubes)
    target = explainer.settings.target
    figures = []
    for rank, (f, cube, cam, centre) in enumerate(
        zip(findings.itertuples(), cubes, maps, centres), start=1
    ):
        stem = finding_stem(volume.patient_id, volume.series_uid, rank)
        write_map_nifti(cam, centre, spacing_mm, out_dir / "maps" / f"{stem}_{target}.nii.gz")
        title = (
            f"{volume.patient_id} finding {rank} at ({f.coordX:.0f}, {f.coordY:.0f}, "
            f"{f.coordZ:.0f}) mm\nP(nodule) {f.probability:.3f}, malignancy {f.malignancy:.2f}"
            f"  ·  Grad-CAM of the {target} output"
        )
        figures.append(cube_figure(cube, cam, out_dir / "figures" / f"{stem}_cam.png", title))
    return figures


def explain_detection_run(
    run_dir: str | Path,
    raw_root: str | Path,
    model,
    window_hu: tuple[float, float],
    out_dir: str | Path,
    threshold: float,
    settings: CamSettings | None = None,
    top: int = 4,
    progress: bool = True,
) -> pd.DataFrame:
    """Maps of the findings of a `lungcad detect` folder (at or above ``threshold``, the
    ``top`` most probable per scan), re-reading each scan from ``raw_root``.

    Returns:
        One row per scan: ``status`` ok or the reason it was skipped, and findings explained.
    """
    from tqdm.auto import tqdm

    from lungcad.annotations.lidc_db import LidcDatabase
    from lungcad.detection.sources import find_scans
    from lungcad.explain.cam import ExplainError
    from lungcad.io.series import SeriesError

    path = Path(run_dir) / "detections.csv"
    if not path.exists():
        raise ExplainError(f"{path} does not exist: give a folder written by `lungcad detect`")
    detections = pd.read_csv(path, dtype={"seriesuid": str, "patient_id": str})
    chosen = (
        detections[detections["probability"] >= threshold]
        .sort_values(["seriesuid", "probability"], ascending=[True, False])
        .groupby("seriesuid")
        .head(top)
    )
    explainer = CubeExplainer(model, window_hu, settings or CamSettings())
    sources, _ = find_scans(raw_root, LidcDatabase(), 1, progress=False)
    by_uid = {s.series_uid: s for s in sources}
    report = []
    for uid, found in tqdm(chosen.groupby("seriesuid"), desc="explain", disable=not progress):
        if uid not in by_uid:
            report.append({"seriesuid": uid, "status": f"series not found under {raw_root}"})
            continue
        try:
            volume = by_uid[uid].read()
        except SeriesError as exc:
            report.append({"seriesuid": uid, "status": f"unreadable: {exc}"})
            continue
        explain_findings(volume, found, explainer, out_dir)
        report.append({"seriesuid": uid, "status": "ok", "findings": len(found)})
    return pd.DataFrame(report, columns=["seriesuid", "status", "findings"])
