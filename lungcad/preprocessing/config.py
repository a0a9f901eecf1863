"""Settings of the preprocessing stage (the ``preprocess`` section of params.yaml)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lungcad.params import read_section, reject_unknown


@dataclass(frozen=True)
class PreprocessConfig:
    """What ``lungcad data build`` does to each scan.

    Attributes:
        min_readers: a nodule becomes a positive cube only if at least this many of the 4
            LIDC readers outlined it. Default 3: a majority of readers, the LUNA16 rule, and
            a mean malignancy from at least 3 ratings. Nodules below it are listed in
            skipped.csv and are still kept away from the negatives.
        cube_size: voxels per cube side.
        spacing_mm: isotropic voxel size of the cubes.
        negatives_per_positive: negative cubes per nodule cube, per scan.
        min_negatives_per_scan: negatives taken from every scan, nodule-free scans included.
        hard_negative_fraction: share of the other negatives (not candidates) that are dense
            in-lung structures.
        candidate_negative_fraction: share of negatives that are false positives of the
            whole-scan candidate generator (``kind=candidate``): what the detector's
            second stage must reject.
        candidate_min_distance_mm: a candidate negative is at least this far beyond the
            radius of every annotated nodule (closer ones are neither label).
        candidate_min_response, candidate_max: the candidate generator's settings (the
            ``candidates`` section of params.yaml, shared with ``lungcad detect``).
        hard_min_hu: HU a hard-negative centre must exceed.
        negative_min_distance_mm: least distance of a negative centre to any nodule centre.
        negative_min_spacing_mm: least distance between two negative centres.
        lung_closing_mm: closing radius of the lung mask; fills juxtapleural nodules.
        lung_dilation_mm: growth of the lung mask beyond its closed border.
        seed: seeds negative sampling (per scan, independent of worker order).
    """

    min_readers: int = 3
    cube_size: int = 64
    spacing_mm: float = 1.0
    negatives_per_positive: float = 2.0
    min_negatives_per_scan: int = 2
    hard_negative_fraction: float = 0.5
    candidate_negative_fraction: float = 0.0
    candidate_min_distance_mm: float = 5.0
    candidate_min_response: float = 40.0
    candidate_max: int = 300
    hard_min_hu: float = -300.0
    negative_min_distance_mm: float = 40.0
    negative_min_spacing_mm: float = 20.0
    lung_closing_mm: float = 20.0
    lung_dilation_mm: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "min_readers": 1 <= self.min_readers <= 4,
            "cube_size": self.cube_size >= 8,
            "spacing_mm": self.spacing_mm > 0,
            "negatives_per_positive": self.negatives_per_positive >= 0,
            "min_negatives_per_scan": self.min_negatives_per_scan >= 0,
            "hard_negative_fraction": 0 <= self.hard_negative_fraction <= 1,
            "candidate_negative_fraction": 0 <= self.candidate_negative_fraction <= 1,
            "candidate_max": self.candidate_max >= 1,
            "negative_min_distance_mm": self.negative_min_distance_mm >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"preprocess parameter(s) out of range: {', '.join(bad)} "
                f"(values: { {k: getattr(self, k) for k in bad} })"
            )

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> PreprocessConfig:
        reject_unknown(values, cls, "preprocess")
        return cls(**values)

    @classmethod
    def from_params(cls, params_file: str | Path, section: str = "preprocess") -> PreprocessConfig:
        values = read_section(params_file, section)
        shared = read_section(params_file, "candidates", required=False)
        for key, field_name in (
            ("min_response", "candidate_min_response"),
            ("max_candidates", "candidate_max"),
        ):
            if key in shared:
                values.setdefault(field_name, shared[key])
        return cls.from_mapping(values)

    def digest(self) -> str:
        """Short hash of the settings (invalidates per-scan results cached by an older run)."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]
