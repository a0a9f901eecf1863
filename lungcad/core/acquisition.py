"""Where a scan's acquisition lies outside what the model learnt from, said per scan.

The network learns from LIDC-IDRI's acquisitions (and the phantom's randomised ones within
them): slices 0.6–5 mm apart, pixels 0.46–1.0 mm, whole chests. A scan outside that is still
processed; these notes go into its report so that a reader knows its findings are less
certain, and why.
"""

from __future__ import annotations

from lungcad.core.io.geometry import VolumeGeometry
from lungcad.core.lung_mask import LungMasks

#: Slice spacing (mm) beyond which a scan is thicker than any the model learnt from.
MAX_SLICE_MM = 5.0
#: In-plane pixel sizes (mm) the model learnt from.
PIXEL_RANGE_MM = (0.45, 1.0)
#: Fewer slices than this cannot hold a nodule and its surroundings.
MIN_SLICES = 8


def acquisition_notes(geometry: VolumeGeometry, lungs: LungMasks | None = None) -> list[str]:
    """One line per way the scan's acquisition departs from the training data's.

    Args:
        geometry: the scan's grid (spacing in mm along column, row, slice).
        lungs: its lung masks; with them, a lung region that runs off the scan's first or
            last slice is reported (the scan stops inside the chest).
    """
    notes = []
    pixel, slice_mm = float(geometry.spacing_mm[0]), float(geometry.spacing_mm[2])
    n_slices = int(geometry.shape[0])
    if slice_mm > MAX_SLICE_MM:
        notes.append(
            f"outside the training acquisitions: slices {slice_mm:.1f} mm apart (trained on "
            f"<= {MAX_SLICE_MM:.0f} mm): small nodules may be missed, sizes are less certain"
        )
    if not PIXEL_RANGE_MM[0] <= pixel <= PIXEL_RANGE_MM[1]:
        notes.append(
            f"outside the training acquisitions: {pixel:.2f} mm pixels (trained on "
            f"{PIXEL_RANGE_MM[0]}–{PIXEL_RANGE_MM[1]} mm)"
        )
    if n_slices < MIN_SLICES:
        notes.append(f"only {n_slices} slices ({n_slices * slice_mm:.0f} mm): a partial scan")
    if lungs is not None and lungs.parenchyma.any():
        per_slice = lungs.parenchyma.any(axis=(1, 2))
        ends = [name for name, hit in (("first", per_slice[0]), ("last", per_slice[-1])) if hit]
        if ends:
            notes.append(
                f"the lungs run past the scan's {' and '.join(ends)} slice (z range "
                f"{n_slices * slice_mm:.0f} mm): lesions beyond it are not seen and one cut "
                "at the edge is sized on what is in the scan"
            )
    return notes
