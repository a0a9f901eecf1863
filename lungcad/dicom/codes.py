"""The coded concepts of lungcad's SEG and SR.

Standard codes (DCM, SNOMED CT, UCUM, LOINC) are used where one exists; the rest are in
lungcad's private coding scheme ``99LUNGCAD`` (declared in each SR's Coding Scheme
Identification Sequence). ``docs/dicom.md`` lists which is which.
"""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

PRIVATE_SCHEME = "99LUNGCAD"
PRIVATE_SCHEME_NAME = "lungcad private codes"

# Standard
NODULE = codes.SCT.Nodule  # SCT 27925004
LUNG = codes.SCT.Lung  # SCT 39607008
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Altered Structure")
CHEST_CT = Code("24627-2", "LN", "Chest CT")
CENTER = codes.DCM.Center  # DCM 111010
DIAMETER = codes.SCT.Diameter  # SCT 81827009: the longest axial diameter
MEAN = codes.SCT.Mean  # SCT 373098007: derivation of the mean diameter
VOLUME = codes.SCT.Volume  # SCT 118565006
PROBABILITY = codes.DCM.Probability  # DCM 122157: the nodule probability, 0-1
ARTIFICIAL_INTELLIGENCE = codes.cid7162.ArtificialIntelligence  # DCM 123110
MM = codes.UCUM.Millimeter
MM3 = codes.UCUM.CubicMillimeter
NO_UNITS = codes.UCUM.NoUnits
ABSENT = codes.SCT.Absent  # SCT 272519000: no nodule found (a scan's negative report)

# Private (no standard concept says exactly this)
SOLID_DIAMETER = Code("SOLID-DIAM", PRIVATE_SCHEME, "Solid component mean diameter")
MALIGNANCY = Code("MALIGNANCY", PRIVATE_SCHEME, "Malignancy rating, LIDC scale 1-5")
NODULE_TYPE = Code("NODULE-TYPE", PRIVATE_SCHEME, "Nodule type")
LUNG_RADS = Code("LUNG-RADS", PRIVATE_SCHEME, "Lung-RADS v2022 category")
THRESHOLD = Code("THRESHOLD", PRIVATE_SCHEME, "Nodule probability threshold of the report")
TYPE_VALUES = {
    "solid": Code("SOLID", PRIVATE_SCHEME, "solid"),
    "part-solid": Code("PART-SOLID", PRIVATE_SCHEME, "part-solid"),
    "ground glass": Code("GROUND-GLASS", PRIVATE_SCHEME, "ground glass"),
}


def lung_rads_value(category: str) -> Code:
    """The code of a Lung-RADS category ("2", "4A", ...)."""
    return Code(f"LR-{category}", PRIVATE_SCHEME, f"Lung-RADS {category}")
