"""`lungcad detect --dicomweb`: a study's CT series taken from a PACS, detected like local
files, and (asked to) its findings' SEG and SR stored back into the same study."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from lungcad.core.names import safe_name
from lungcad.core.outputs import owned_output
from lungcad.detection.batch import DetectSettings, detect_scans
from lungcad.dicom.dicomweb import DicomWebError, Pacs
from lungcad.dicom.objects import SEG_NAME, SR_NAME


def study_ct_series(pacs: Pacs, study_uid: str, say: Callable[[str], None] = print) -> list[str]:
    """The CT series of a study on ``pacs``; one line through ``say`` for each other series.

    Raises:
        DicomWebError: no such study, or no CT series in it.
    """
    ct, skipped = pacs.ct_series(study_uid)
    for uid, reason in skipped:
        say(f"series {uid}: {reason}")
    if not ct:
        raise DicomWebError(
            f"study {study_uid}: no CT series to detect ({len(skipped)} series of other modalities)"
        )
    return ct


def detect_study(
    pacs: Pacs,
    study_uid: str,
    ct: list[str],
    out_dir: str | Path,
    checkpoint: str | Path,
    settings: DetectSettings,
    store: bool = False,
    workers: int = 1,
    progress: bool = True,
    model_label: str = "",
    say: Callable[[str], None] = print,
) -> tuple[pd.DataFrame, int]:
    """Detect the nodules of the CT series ``ct`` (``study_ct_series``) of a study on
    ``pacs``.

    Each series that cannot be retrieved gets one line through ``say``; the others go on.
    With ``store``, each scan's SEG and SR written by this run go back to the study in one
    STOW-RS request (all of a scan's objects or none).

    Returns:
        (``scans.csv`` as ``detect_scans`` returns it, how many scans' objects failed to
        store).

    Raises:
        DicomWebError: none of the series can be retrieved.
    """
    out_dir = Path(out_dir)
    with owned_output(out_dir, "lungcad detect --dicomweb"):
        scans = _retrieve_and_detect(
            pacs, study_uid, ct, out_dir, checkpoint, settings, workers, progress, model_label, say
        )
        failed = _store(pacs, study_uid, scans, out_dir, say) if store else 0
    return scans, failed


def _retrieve_and_detect(
    pacs: Pacs,
    study_uid: str,
    ct: list[str],
    out_dir: Path,
    checkpoint: str | Path,
    settings: DetectSettings,
    workers: int,
    progress: bool,
    model_label: str,
    say: Callable[[str], None],
) -> pd.DataFrame:
    with tempfile.TemporaryDirectory(prefix="lungcad-study-") as tmp:
        got = 0
        for uid in tqdm(ct, desc="retrieve", unit="series", disable=not progress):
            try:
                notes = pacs.retrieve_series(study_uid, uid, Path(tmp) / safe_name(uid))
                got += 1
            except DicomWebError as exc:
                say(f"series {uid}: skipped: {exc}")
                continue
            for note in notes:
                say(f"series {uid}: {note}")
        if got == 0:
            raise DicomWebError(f"study {study_uid}: none of its {len(ct)} CT series retrieved")
        return detect_scans(
            tmp, out_dir, checkpoint, settings, workers, progress, None, model_label, held=True
        )


def _store(
    pacs: Pacs, study_uid: str, scans: pd.DataFrame, out_dir: Path, say: Callable[[str], None]
) -> int:
    """Each scan's SEG and SR of this run into the study; how many scans' failed."""
    failed = 0
    for r in scans[scans["status"] == "ok"].itertuples():
        # Only what this run wrote: the run replaced (or removed) each scan's folder.
        folder = out_dir / "dicom" / safe_name(r.seriesuid)
        files = [folder / n for n in (SEG_NAME, SR_NAME) if (folder / n).is_file()]
        if not files:  # no finding (nothing to store), or the objects failed to write
            say(f"series {r.seriesuid}: nothing stored: {r.dicom}")
            if str(r.dicom).startswith("not written"):
                failed += 1
            continue
        try:
            pacs.store(study_uid, files)
            say(f"series {r.seriesuid}: stored {' and '.join(f.stem.upper() for f in files)}")
        except DicomWebError as exc:
            say(f"series {r.seriesuid}: not stored: {exc}")
            failed += 1
    return failed
