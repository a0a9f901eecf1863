"""The finding record: one lesion a whole-scan detector found, the columns of every table
and answer that lists findings (``detections.csv`` and each scan's findings, in this order),
each field saying what it holds and which part of a finding it belongs to. The served
answer of a cube carries the record's ``MEASURE`` fields for the nodule outlined at its
centre (``lungcad.core.findings.cube``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from lungcad.core.findings.lungrads import UNSIZED, lung_rads
from lungcad.core.findings.measure import MaskMeasures, nodule_type

#: What part of a finding a field belongs to (``finding_columns``).
LUNA16 = "luna16"  # LUNA16's submission columns: where (patient mm) and how probable
READING = "reading"  # what the network reads of it
MEASURE = "measure"  # what its mask measures, and what follows from that
PROVENANCE = "provenance"  # how the detector made it


def _field(part: str, doc: str):
    return field(metadata={"part": part, "doc": doc})


@dataclass(frozen=True)
class Finding:
    """One finding of a scan (a row of ``detections.csv``)."""

    coordX: float = _field(
        LUNA16, "centre x, patient mm (LPS): its mask's centroid, or the centre heatmap's peak"
    )
    coordY: float = _field(LUNA16, "centre y, patient mm")
    coordZ: float = _field(LUNA16, "centre z, patient mm")
    probability: float = _field(LUNA16, "probability that it is a nodule")
    malignancy: float = _field(READING, "predicted malignancy on the readers' 1-5 scale")
    diameter_mm: float = _field(MEASURE, "longest axial diameter (mm), as LIDC's readers")
    mean_diameter_mm: float = _field(MEASURE, "Lung-RADS mean diameter (mm)")
    volume_mm3: float = _field(MEASURE, "volume of its mask (mm³)")
    type: str = _field(MEASURE, "solid, part-solid or ground glass")
    solid_diameter_mm: float = _field(MEASURE, "mean diameter of the solid component (mm)")
    lung_rads: str = _field(MEASURE, "Lung-RADS v2022 baseline category")
    sizing: str = _field(
        PROVENANCE,
        "how it was sized: mask (its predicted mask), cube centre (the dense part at its "
        "cube's centre: a model without the decoder) or n/a (the decoder outlined nothing)",
    )
    cubes: int = _field(PROVENANCE, "network cubes it was read from")
    candidate_score: float = _field(PROVENANCE, "the candidate stage's blob score (cube detector)")


def finding_columns(*parts: str) -> list[str]:
    """The columns of the finding record, in its order; only those of ``parts`` if given."""
    return [f.name for f in fields(Finding) if not parts or f.metadata["part"] in parts]


#: Every column of the finding record, in its order.
FINDING_COLUMNS = finding_columns()


def attribute_columns(names: tuple[str, ...] | list[str]) -> list[str]:
    """The columns of a network's optional outputs (the readers' attributes, each on its LIDC
    scale, and their predicted malignancy spread) beside a finding: ``attr_<name>``."""
    return [f"attr_{name}" for name in names]


def measured(measures: MaskMeasures, texture: float | None = None) -> dict[str, float | str]:
    """A finding's ``MEASURE`` fields, in the record's order, from what its mask measures
    (``measure_mask``) and the texture head's LIDC rating (``nodule_type``): NaN sizes and
    Lung-RADS "0" (incomplete) where the mask is empty."""
    kind = nodule_type(texture, measures)
    nan = float("nan")
    if measures.empty:
        return dict(
            diameter_mm=nan,
            mean_diameter_mm=nan,
            volume_mm3=nan,
            type=kind,
            solid_diameter_mm=nan,
            lung_rads=UNSIZED,
        )
    return dict(
        diameter_mm=measures.diameter_mm,
        mean_diameter_mm=measures.mean_diameter_mm,
        volume_mm3=measures.volume_mm3,
        type=kind,
        solid_diameter_mm=measures.solid_mean_diameter_mm,
        lung_rads=lung_rads(kind, measures.mean_diameter_mm, measures.solid_mean_diameter_mm),
    )
