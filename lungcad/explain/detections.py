"""Grad-CAM of the findings of a finished ``lungcad detect`` run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lungcad.core.model.cam import CamSettings, CubeExplainer
from lungcad.core.model.cam_findings import explain_findings


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
    cube_size: int = 64,
    spacing_mm: float = 1.0,
) -> pd.DataFrame:
    """Maps of the findings of a `lungcad detect` folder (at or above ``threshold``, the
    ``top`` most probable per scan), re-reading each scan from ``raw_root``.

    Returns:
        One row per scan: ``status`` ok or the reason it was skipped, and findings explained.
    """
    from tqdm.auto import tqdm

    from lungcad.core.annotations.lidc_db import LidcDatabase
    from lungcad.core.io.scans import find_scans
    from lungcad.core.io.series import SeriesError
    from lungcad.core.model.cam import ExplainError

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
        explain_findings(volume, found, explainer, out_dir, cube_size, spacing_mm)
        report.append({"seriesuid": uid, "status": "ok", "findings": len(found)})
    return pd.DataFrame(report, columns=["seriesuid", "status", "findings"])
