"""The SEG and SR of a scan's findings: valid (dciodvfy), and read back equal to what
detect found, on the real LIDC-IDRI-0001 slab."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.valuerep import DSfloat

from lungcad.core.io.scans import find_scans
from lungcad.dicom.objects import (
    KEEP_FROM_SOURCE,
    Algorithm,
    DicomObjectError,
    read_findings_sr,
    read_no_finding,
    read_segments,
    write_findings_dicom,
)
from lungcad.dicom.segments import finding_segment
from tests.tools.orthanc import dciodvfy_errors

MEASURES = ["probability", "malignancy", "diameter_mm", "mean_diameter_mm", "volume_mm3"]


@pytest.fixture(scope="module")
def slab(slab_root):
    sources, _ = find_scans(slab_root / "LIDC-IDRI-0001", progress=False)
    return sources[0].read()


def _findings(volume) -> tuple[pd.DataFrame, list]:
    """Three findings: one with a predicted mask (a 6 mm cube of 1 mm voxels), one sized
    without a mask (a sphere), one unsized (a marker)."""
    g = volume.geometry
    centres = g.index_to_mm(np.array([[256.4, 300.2, 7.6], [150.0, 250.0, 4.0], [380, 260, 10]]))
    findings = pd.DataFrame(
        {
            "coordX": centres[:, 0],
            "coordY": centres[:, 1],
            "coordZ": centres[:, 2],
            "probability": [0.9731234567891234, 0.91, 0.5],
            "malignancy": [4.21, 2.0, 1.3],
            "diameter_mm": [8.485, 6.0, np.nan],
            "mean_diameter_mm": [7.9, np.nan, np.nan],
            "volume_mm3": [216.0, np.nan, np.nan],
            "type": ["part-solid", "n/a", "n/a"],
            "solid_diameter_mm": [3.5, np.nan, np.nan],
            "lung_rads": ["3", "0", "0"],
        }
    )
    mask = np.zeros((8, 8, 8), bool)
    mask[1:7, 1:7, 1:7] = True
    segments = [
        finding_segment(g, centres[0], 8.485, (mask, centres[0] - 3.5, 1.0)),
        finding_segment(g, centres[1], 6.0, None),
        finding_segment(g, centres[2], np.nan, None),
    ]
    return findings, segments


def _sop_uids(volume) -> list[str]:
    return [
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in volume.source_files
    ]


def test_seg_and_sr_are_valid_and_read_back_equal_to_the_findings(slab, tmp_path):
    findings, segments = _findings(slab)
    assert [s.source for s in segments] == ["predicted mask", "sphere", "marker"]
    seg_path, sr_path = write_findings_dicom(
        slab, findings, segments, Algorithm("models:/lungcad/3"), tmp_path, 0.5
    )
    assert dciodvfy_errors(seg_path) == []
    assert dciodvfy_errors(sr_path) == []

    back = read_findings_sr(sr_path)
    assert list(back["finding"]) == ["finding 1", "finding 2", "finding 3"]
    centre = ["coordX", "coordY", "coordZ"]
    assert np.abs(back[centre].to_numpy() - findings[centre].to_numpy()).max() < 1e-3
    for column in [*MEASURES, "solid_diameter_mm"]:
        for got, want in zip(back[column], findings[column]):
            # an SR number is a decimal string of at most 16 characters (DS)
            assert (np.isnan(got) and np.isnan(want)) or got == float(DSfloat(want, True))
    assert list(back["type"]) == list(findings["type"])
    assert list(back["lung_rads"]) == list(findings["lung_rads"])
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    assert set(back["segment_uid"]) == {seg.SOPInstanceUID}
    assert list(back["segment_number"]) == [1, 2, 3]

    masks = read_segments(seg_path, _sop_uids(slab))
    for k, segment in enumerate(segments, start=1):
        np.testing.assert_array_equal(masks[k], segment.mask)
    # it derives from the slices its segments lie on, each frame from its own
    touched = np.flatnonzero(np.any([s.mask for s in segments], axis=(0, 2, 3)))
    assert 0 < len(touched) < len(slab.source_files)
    seg = pydicom.dcmread(seg_path)
    sources = {
        str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for frame in seg.PerFrameFunctionalGroupsSequence
    }
    listed = {
        str(image.ReferencedSOPInstanceUID)
        for image in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert sources == listed == {_sop_uids(slab)[i] for i in touched}
    assert list(back["tracking_uid"]) == [str(s.TrackingUID) for s in seg.SegmentSequence]
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == [
        "finding 1: predicted mask",
        "finding 2: sphere of 6.0 mm",
        "finding 3: marker of 5.0 mm",
    ]
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "lungcad" and "models:/lungcad/3" in str(
        algorithm.AlgorithmParameters
    )
    if shutil.which("dsrdump"):  # dcmtk renders the report
        text = subprocess.run(["dsrdump", str(sr_path)], capture_output=True, text=True).stdout
        assert "Imaging Measurement Report" in text and "Lung-RADS 3" in text
        assert "Lung-RADS 0" in text


def test_the_objects_carry_the_patient_and_study_identity_and_nothing_else(slab, tmp_path):
    findings, segments = _findings(slab)
    paths = write_findings_dicom(
        slab, findings, segments, Algorithm("tiny.pt sha256:0"), tmp_path, 0.5
    )
    source = pydicom.dcmread(slab.source_files[0], stop_before_pixels=True)
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.PatientID == source.PatientID == "LIDC-IDRI-0001"
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.SOPInstanceUID != source.SOPInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        copied = {
            e.keyword
            for e in ds
            if e.tag in source and source[e.tag].value == e.value and not e.tag.is_private
        }
        assert copied <= KEEP_FROM_SOURCE, copied - KEEP_FROM_SOURCE
        assert "PatientAge" not in ds  # the source has it; these objects need not


def test_a_scan_without_findings_gets_a_valid_negative_report(slab, tmp_path):
    findings, segments = _findings(slab)
    empty = findings.iloc[:0]
    (sr_path,) = write_findings_dicom(
        slab, empty, [], Algorithm("models:/lungcad/3"), tmp_path, 0.9
    )
    assert sr_path.name == "sr.dcm" and not (tmp_path / "seg.dcm").exists()
    assert dciodvfy_errors(sr_path) == []
    assert read_no_finding(sr_path) == 0.9 and read_findings_sr(sr_path).empty
    sr = pydicom.dcmread(sr_path)
    # which series the CAD ran on, and with which model
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    (series,) = evidence.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == slab.series_uid
    assert len(series.ReferencedSOPSequence) == len(slab.source_files)
    assert b"model=models:/lungcad/3" in sr_path.read_bytes()  # algorithm parameters
    # a report with findings is not a negative one
    _, with_findings = write_findings_dicom(
        slab, findings, segments, Algorithm("m"), tmp_path / "found", 0.9
    )
    assert read_no_finding(with_findings) is None


def test_a_volume_not_read_from_dicom_cannot_have_objects(slab, tmp_path):
    from dataclasses import replace

    findings, segments = _findings(slab)
    with pytest.raises(DicomObjectError, match="not read from DICOM"):
        write_findings_dicom(
            replace(slab, source_files=()), findings, segments, Algorithm("m"), tmp_path, 0.5
        )


def test_overlapping_and_disjoint_segments_both_read_back_as_written(slab, tmp_path):
    """Disjoint segments travel as one label map, overlapping ones as a stack: either way
    each segment reads back voxel for voxel, and the SEG says whether they overlap."""
    findings, segments = _findings(slab)
    g = slab.geometry
    centre = findings.loc[0, ["coordX", "coordY", "coordZ"]].to_numpy(float)
    inside = finding_segment(g, centre, 4.0, None)  # a sphere within the first finding
    assert (inside.mask & segments[0].mask).any()
    for name, these, overlap in (
        ("disjoint", segments, "NO"),
        ("overlapping", [segments[0], inside, segments[2]], "YES"),
    ):
        seg_path, _ = write_findings_dicom(
            slab, findings, these, Algorithm("models:/lungcad/3"), tmp_path / name, 0.5
        )
        assert pydicom.dcmread(seg_path, stop_before_pixels=True).SegmentsOverlap == overlap
        masks = read_segments(seg_path, _sop_uids(slab))
        for k, segment in enumerate(these, start=1):
            np.testing.assert_array_equal(masks[k], segment.mask)


def test_the_objects_come_from_the_headers_read_with_the_scan_or_from_its_files(
    slab_root, slab, tmp_path
):
    from dataclasses import replace

    copy = tmp_path / "scan"
    shutil.copytree(slab_root / "LIDC-IDRI-0001", copy)
    sources, _ = find_scans(copy, progress=False)
    volume = sources[0].read()
    assert len(volume.source_headers) == len(volume.source_files)
    expected = _sop_uids(volume)
    shutil.rmtree(copy)  # the scan's files are gone: what the reader kept is enough
    findings, segments = _findings(volume)
    seg_path, sr_path = write_findings_dicom(
        volume, findings, segments, Algorithm("m"), tmp_path / "kept", 0.5
    )
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    referenced = [
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    ]
    assert set(referenced) <= set(expected) and referenced
    evidence = pydicom.dcmread(sr_path).CurrentRequestedProcedureEvidenceSequence
    (series,) = [
        series
        for study in evidence
        for series in study.ReferencedSeriesSequence
        if series.SeriesInstanceUID == volume.series_uid
    ]
    assert [i.ReferencedSOPInstanceUID for i in series.ReferencedSOPSequence] == expected
    # a volume without the headers (built by other code) has them read from its files
    bare = replace(slab, source_headers=())
    paths = write_findings_dicom(bare, findings, segments, Algorithm("m"), tmp_path / "read", 0.5)
    assert [p.name for p in paths] == ["seg.dcm", "sr.dcm"]
    assert dciodvfy_errors(paths[1]) == []


def test_a_volumes_repr_carries_no_header_of_its_slices(slab):
    assert slab.source_headers and str(slab.source_headers[0].PatientID) == "LIDC-IDRI-0001"
    text = repr(slab)
    assert "source_headers" not in text and "Patient's Name" not in text
