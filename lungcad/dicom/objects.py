"""A scan's findings as DICOM: a SEG with one segment per finding and a Comprehensive 3D SR
measurement report (TID 1500) with one volumetric measurement group (TID 1411) per finding,
both written with highdicom, and both read back into lungcad's terms.

Each measurement group holds the finding's centre (SCOORD3D point, patient mm), a reference
to its SEG segment, its diameters and volume, the nodule probability, the malignancy rating
(1-5), type and Lung-RADS category where the model gives them. A scan without findings gets
an SR alone, whose one group says Nodule = Absent at the threshold it reports at: the CAD
ran on this series, with this model, and found nothing. The objects get new UIDs and
carry from the source CT only the patient, study and frame-of-reference identity the IODs
require (highdicom copies the patient and study modules of the source images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from lungcad import __version__
from lungcad.core.io.series import CtVolume
from lungcad.core.outputs import atomic_path
from lungcad.dicom import codes as lc
from lungcad.dicom.segments import Segment
from lungcad.errors import LungcadError

SERIES_DESCRIPTION = "lungcad findings (research use only)"
SEG_SERIES_NUMBER = 9001
SR_SERIES_NUMBER = 9002
SEG_NAME = "seg.dcm"
SR_NAME = "sr.dcm"
#: The tracking identifier of a report's only group when it found nothing.
NO_FINDING = "no finding"


class DicomObjectError(LungcadError, ValueError):
    """A SEG or SR cannot be written or read; the message names the scan or file."""


@dataclass(frozen=True)
class Algorithm:
    """What made the objects: lungcad's version and the model (a registered model's name
    and version, or a checkpoint's file name and digest; never a local path)."""

    model: str
    name: str = "lungcad"
    version: str = __version__

    def identification(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(
            name=self.name, version=self.version, parameters=[f"model={self.model}"]
        )


def model_label_for_dicom(checkpoint: str | Path, checkpoint_sha256: str, label: str) -> str:
    """The model as the objects name it: a registry URI as given (``models:/lungcad/3``),
    a file by its name and the first 12 hex digits of its SHA-256 (a local path can name a
    person)."""
    if label.startswith(("models:/", "runs:/")):
        return label
    return f"{Path(checkpoint).name} sha256:{checkpoint_sha256[:12]}"


#: Type 2 attributes of the patient and study modules the derived objects copy: a source
#: that lacks one (anonymised data often does) gets it empty, as the standard allows.
TYPE2_IDENTITY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


#: What a derived object keeps of the source header: patient and study identity, the frame
#: of reference, the de-identification statement, and attributes that are the SEG's own but
#: can equal the CT's (image size, photometric interpretation, character set).
KEEP_FROM_SOURCE = frozenset(
    {
        *TYPE2_IDENTITY,
        "StudyInstanceUID",
        "IssuerOfPatientID",
        "FrameOfReferenceUID",
        "PositionReferenceIndicator",
        "PatientIdentityRemoved",
        "DeidentificationMethod",
        "DeidentificationMethodCodeSequence",
        "SpecificCharacterSet",
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
    }
)


#: What an item of the Contributing Equipment Sequence keeps (highdicom records the source's
#: acquisition equipment there, with its institution, station and serial number).
EQUIPMENT_KEEPS = frozenset(
    {
        "Manufacturer",
        "ManufacturerModelName",
        "SoftwareVersions",
        "ContributionDateTime",
        "ContributionDescription",
        "PurposeOfReferenceCodeSequence",
    }
)


def _strip_copied(derived: Dataset, source: Dataset) -> None:
    """Remove what highdicom copied from the source beyond ``KEEP_FROM_SOURCE`` (the
    optional Patient Study and Clinical Trial modules: age, size, weight, sponsor, ...) and
    the identifying attributes of the source's equipment."""
    for element in list(derived):
        if element.keyword in KEEP_FROM_SOURCE or element.tag.is_private:
            continue
        if element.tag in source and source[element.tag].value == element.value:
            del derived[element.tag]
    for item in derived.get("ContributingEquipmentSequence", []):
        for element in list(item):
            if element.keyword not in EQUIPMENT_KEEPS:
                del item[element.tag]


def _sources(volume: CtVolume) -> list[Dataset]:
    """The headers of the scan's slices (in volume order): those the reader kept (else read
    again), completed in memory with the type 2 identity attributes they lack, empty. The
    kept headers are completed in place: a copy would share their elements (pydicom's
    shallow copy) or cost as much as reading them (a deep one), and an empty attribute the
    file lacks changes nothing the volume reports."""
    if not volume.source_files:
        raise DicomObjectError(
            f"scan {volume.series_uid}: not read from DICOM files (a .mhd volume), so no SEG "
            "or SR can reference its images"
        )
    headers = list(volume.source_headers)
    if len(headers) != len(volume.source_files):
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in volume.source_files]
    for ds in headers:
        for keyword in TYPE2_IDENTITY:
            if keyword not in ds:
                setattr(ds, keyword, "")
    return headers


def _segment_label(rank: int, segment: Segment) -> str:
    if segment.source == "predicted mask":
        return f"finding {rank}: predicted mask"
    return f"finding {rank}: {segment.source} of {segment.diameter_mm:.1f} mm"


def _seg(
    ct: list[Dataset], segments: list[Segment], tracking: list[str], algorithm: Algorithm
) -> hd.seg.Segmentation:
    family = hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=lc.ARTIFICIAL_INTELLIGENCE,
        version=algorithm.version,
        parameters={"model": algorithm.model},
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=_segment_label(k, s),
            segmented_property_category=lc.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            segmented_property_type=lc.NODULE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=family,
            tracking_uid=tracking[k - 1],
            tracking_id=f"finding {k}",
            anatomic_regions=[lc.LUNG],
        )
        for k, s in enumerate(segments, start=1)
    ]
    # The SEG derives from the slices its segments lie on: a few dozen of a scan's hundreds
    # (highdicom checks and encodes every frame it is given; readers place frames by the
    # source image each references, ``read_segments``), stacked from those slices alone.
    frames = np.flatnonzero(np.any([s.mask.any(axis=(1, 2)) for s in segments], axis=0))
    if len(frames) == 0:  # every segment empty: the first slice carries them
        frames = np.array([0])
    masks = [s.mask[frames] for s in segments]
    covered = np.logical_or.reduce(masks)
    if covered.sum() == sum(int(m.sum()) for m in masks):
        # disjoint segments (a dense pass's findings always are) as one label map: the same
        # SEG, which highdicom checks with a max instead of a sum over the segments
        pixels = np.zeros(covered.shape, np.uint8 if len(masks) < 256 else np.uint16)
        for k, m in enumerate(masks, start=1):
            pixels[m] = k
    else:
        pixels = np.stack(masks, axis=-1)
    return hd.seg.Segmentation(
        source_images=[ct[i] for i in frames],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="lungcad",
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        device_serial_number=algorithm.version,
        content_description="lungcad nodule findings",
        content_label="NODULES",
        series_description=SERIES_DESCRIPTION,
    )


def _group(
    rank: int,
    row: pd.Series,
    tracking_uid: str,
    seg: hd.seg.Segmentation,
    series_uid: str,
    frame_uid: str,
    algorithm: Algorithm,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    algo = algorithm.identification()
    lung = [hd.sr.FindingSite(anatomic_location=lc.LUNG)]

    def measurement(name, value, unit, derivation=None) -> hd.sr.Measurement:
        return hd.sr.Measurement(name=name, value=float(value), unit=unit, derivation=derivation)

    values = [
        (lc.PROBABILITY, row["probability"], lc.NO_UNITS, None),
        (lc.MALIGNANCY, row["malignancy"], lc.NO_UNITS, None),
        (lc.DIAMETER, row["diameter_mm"], lc.MM, None),
        (lc.DIAMETER, row["mean_diameter_mm"], lc.MM, lc.MEAN),
        (lc.VOLUME, row["volume_mm3"], lc.MM3, None),
        (lc.SOLID_DIAMETER, row["solid_diameter_mm"], lc.MM, None),
    ]
    measurements = [measurement(*v) for v in values if pd.notna(v[1])]
    evaluations = []
    kind = lc.TYPE_VALUES.get(str(row["type"]))
    if kind is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(lc.NODULE_TYPE, kind))
    if pd.notna(row["lung_rads"]) and str(row["lung_rads"]) not in ("", "n/a"):
        evaluations.append(
            hd.sr.QualitativeEvaluation(lc.LUNG_RADS, lc.lung_rads_value(str(row["lung_rads"])))
        )
    segment = hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        segment_number=rank,
        source_series=hd.sr.SourceSeriesForSegmentation(series_uid),
    )
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=f"finding {rank}"
        ),
        referenced_segment=segment,
        finding_type=lc.NODULE,
        algorithm_id=algo,
        finding_sites=lung,
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
    )
    centre = hd.sr.Scoord3DContentItem(
        name=lc.CENTER,
        graphic_type=hd.sr.GraphicTypeValues3D.POINT,
        graphic_data=np.array([[row["coordX"], row["coordY"], row["coordZ"]]], float),
        frame_of_reference_uid=frame_uid,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    group[0].ContentSequence.append(centre)
    return group


def _no_finding_group(
    threshold: float, algorithm: Algorithm
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The one measurement group of a report that found nothing: Nodule = Absent at the
    threshold it reports at."""
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=NO_FINDING),
        finding_type=lc.NODULE,
        algorithm_id=algorithm.identification(),
        finding_sites=[hd.sr.FindingSite(anatomic_location=lc.LUNG)],
        measurements=[
            hd.sr.Measurement(name=lc.THRESHOLD, value=float(threshold), unit=lc.NO_UNITS)
        ],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(lc.NODULE, lc.ABSENT)],
    )


def _sr(
    volume: CtVolume,
    ct: list[Dataset],
    seg: hd.seg.Segmentation | None,
    findings: pd.DataFrame,
    tracking: list[str],
    algorithm: Algorithm,
    threshold: float,
) -> hd.sr.Comprehensive3DSR:
    frame_uid = str(ct[0].FrameOfReferenceUID)
    groups = [
        _group(rank, row, tracking[rank - 1], seg, volume.series_uid, frame_uid, algorithm)
        for rank, (_, row) in enumerate(findings.iterrows(), start=1)
    ] or [_no_finding_group(threshold, algorithm)]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[algorithm.name, algorithm.version, algorithm.model]),
            name=algorithm.name,
            manufacturer_name="lungcad",
            model_name=algorithm.model[:64],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=lc.CHEST_CT,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*ct, seg] if seg is not None else ct,
        content=report,
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="lungcad",
        is_complete=True,
        series_description=SERIES_DESCRIPTION,
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = lc.PRIVATE_SCHEME
    scheme.CodingSchemeName = lc.PRIVATE_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = "lungcad"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def write_findings_dicom(
    volume: CtVolume,
    findings: pd.DataFrame,
    segments: list[Segment],
    algorithm: Algorithm,
    out_dir: str | Path,
    threshold: float,
) -> list[Path]:
    """Write a scan's SEG and SR into ``out_dir``; for a scan without findings, an SR alone
    saying that the CAD ran on this series with this model and found no nodule at
    ``threshold`` (a SEG holds at least one segment).

    Args:
        volume: the scan, read from DICOM files (``volume.source_files``).
        findings: the reported findings, best first (detect's columns); row k is finding
            k + 1 and segment k + 1.
        segments: each finding's segment on the CT grid, in the same order.
        threshold: the nodule probability the findings are reported at.

    Returns:
        The files written: ``seg.dcm`` and ``sr.dcm``, or ``sr.dcm`` alone.

    Raises:
        DicomObjectError: the scan has no DICOM files, or highdicom refuses an object.
    """
    if len(findings) != len(segments):
        raise ValueError(f"{len(findings)} findings but {len(segments)} segments")
    ct = _sources(volume)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # One tracking UID per finding, shared by its SEG segment and its SR group.
    tracking = [generate_uid() for _ in segments]
    try:
        seg = _seg(ct, segments, tracking, algorithm) if segments else None
        sr = _sr(volume, ct, seg, findings.reset_index(drop=True), tracking, algorithm, threshold)
    except (ValueError, TypeError, AttributeError) as exc:
        raise DicomObjectError(
            f"scan {volume.series_uid}: cannot write its DICOM SEG/SR ({exc})"
        ) from exc
    written = []
    for name, ds in ((SEG_NAME, seg), (SR_NAME, sr)):
        if ds is None:
            continue
        _strip_copied(ds, ct[0])
        with atomic_path(
            out_dir / name, f"the DICOM {ds.Modality} of scan {volume.series_uid}"
        ) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        written.append(out_dir / name)
    return written


def _number(group, name: pydicom.sr.coding.Code, derivation=None) -> float:
    for m in group.get_measurements(name=name):
        d = m.derivation
        if (derivation is None and d is None) or (
            derivation is not None and d is not None and d.value == derivation.value
        ):
            return float(m.value)
    return float("nan")


def _centre(group) -> tuple[float, float, float]:
    for item in group[0].ContentSequence:
        concept = item.ConceptNameCodeSequence[0]
        if item.ValueType == "SCOORD3D" and concept.CodeValue == lc.CENTER.value:
            x, y, z = (float(v) for v in item.GraphicData[:3])
            return x, y, z
    return (float("nan"),) * 3


def read_findings_sr(path: str | Path) -> pd.DataFrame:
    """The findings of an SR lungcad wrote: one row per measurement group, in order, with
    detect's column names plus ``finding`` and ``tracking_uid`` (its tracking identifier
    and UID, the same as its SEG segment's), ``segment_number`` (its SEG segment) and
    ``segment_uid`` (the SEG's SOP Instance UID)."""
    try:
        sr = hd.sr.srread(path)
    except Exception as exc:  # pydicom and highdicom raise many types for broken files
        raise DicomObjectError(f"{path}: not a readable DICOM SR ({exc})") from exc
    rows = []
    for group in sr.content.get_volumetric_roi_measurement_groups():
        x, y, z = _centre(group)
        evaluations = {e.name.value: e.value.meaning for e in group.get_qualitative_evaluations()}
        ref = group.referenced_segment
        rows.append(
            {
                "finding": group.tracking_identifier,
                "tracking_uid": str(group.tracking_uid),
                "coordX": x,
                "coordY": y,
                "coordZ": z,
                "probability": _number(group, lc.PROBABILITY),
                "malignancy": _number(group, lc.MALIGNANCY),
                "diameter_mm": _number(group, lc.DIAMETER),
                "mean_diameter_mm": _number(group, lc.DIAMETER, lc.MEAN),
                "volume_mm3": _number(group, lc.VOLUME),
                "solid_diameter_mm": _number(group, lc.SOLID_DIAMETER),
                "type": evaluations.get(lc.NODULE_TYPE.value, "n/a"),
                "lung_rads": evaluations.get(lc.LUNG_RADS.value, "n/a").removeprefix("Lung-RADS "),
                "segment_number": ref.referenced_segment_numbers[0] if ref else 0,
                "segment_uid": ref.referenced_sop_instance_uid if ref else "",
            }
        )
    return pd.DataFrame(rows)


def read_no_finding(path: str | Path) -> float | None:
    """The threshold an SR lungcad wrote for a scan without findings reports at; None for
    an SR with findings."""
    try:
        sr = hd.sr.srread(path)
    except Exception as exc:  # pydicom and highdicom raise many types for broken files
        raise DicomObjectError(f"{path}: not a readable DICOM SR ({exc})") from exc
    for group in sr.content.get_image_measurement_groups():
        evaluations = {e.name.value: e.value.value for e in group.get_qualitative_evaluations()}
        if evaluations.get(lc.NODULE.value) == lc.ABSENT.value:
            return _number(group, lc.THRESHOLD)
    return None


def read_segments(path: str | Path, source_sop_uids: list[str]) -> dict[int, np.ndarray]:
    """Each segment of a SEG as a bool (slice, row, column) mask on the source CT whose
    slices, in volume order, have ``source_sop_uids``."""
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # pydicom and highdicom raise many types for broken files
        raise DicomObjectError(f"{path}: not a readable DICOM SEG ({exc})") from exc
    numbers = list(seg.segment_numbers)
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    present = [uid for uid in source_sop_uids if uid in referenced]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=present,
        segment_numbers=numbers,
        assert_missing_frames_are_empty=True,
    )
    rows, cols = pixels.shape[1:3]
    out = {}
    index = {uid: i for i, uid in enumerate(source_sop_uids)}
    for k, number in enumerate(numbers):
        mask = np.zeros((len(source_sop_uids), rows, cols), bool)
        for j, uid in enumerate(present):
            mask[index[uid]] = pixels[j, :, :, k] > 0
        out[number] = mask
    return out
