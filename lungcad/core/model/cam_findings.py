"""Heat maps of whole-scan findings: the cube of each finding cut as ``lungcad detect`` cut
it (z-mirrored volume, 1 mm grid centred on the finding), its detection map written as NIfTI
in patient mm and drawn over the three slices through it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lungcad.core.cubes import extract_cube, mirror_pad_z
from lungcad.core.figures import cube_figure
from lungcad.core.io.nifti import write_map_nifti
from lungcad.core.io.series import CtVolume
from lungcad.core.model.cam import CubeExplainer
from lungcad.core.names import scan_stem


def finding_stem(patient_id: str, series_uid: str, rank: int) -> str:
    """File name stem of a scan's ``rank``-th finding (1 = most probable); the patient id
    and series UID come from the scan's header, so they are made safe first."""
    return f"{scan_stem(patient_id, series_uid)}_f{rank}"


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
