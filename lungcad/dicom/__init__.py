"""Results in DICOM: each scan's findings as a DICOM SEG and a TID 1500 SR measurement
report, and studies taken from and stored back to a PACS over DICOMweb."""
