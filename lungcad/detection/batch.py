"""`lungcad detect` over many scans: parallel, resumable, one clear line per bad scan.

A run holds its output folder (a second run on it stops at once, naming the first). Each
finished scan is kept under ``<out>/.parts/<settings digest>/<series uid>/`` with its tables,
pictures and DICOM objects (written to a temporary folder and renamed, so a part is whole or
absent): an interrupted run resumes where it stopped, and a run with another model or other
settings does not reuse it. A scan that fails is one line and one row of ``scans.csv``,
never the end of the batch; a failure for a passing reason (a full disk) is not kept, so the
next run tries the scan again. Names from a scan's header (its series UID, its patient id)
become file names only through ``lungcad.core.names``, and every file lands inside
``--out``. The outputs are assembled in series-UID order and written atomically; each scan's
pictures and DICOM objects replace those an earlier run left for it:

- ``detections.csv``: LUNA16's submission columns ``seriesuid, coordX, coordY, coordZ,
  probability`` plus ``patient_id, malignancy``, the finding's sizes (``diameter_mm``: longest
  axial diameter; ``mean_diameter_mm``: Lung-RADS' mean diameter; ``volume_mm3``), ``type``,
  ``solid_diameter_mm``, ``lung_rads``, ``sizing`` (how it was sized) and ``cubes`` (the
  candidates merged into it);
- ``candidates.csv``: every stage-1 candidate with its blob measures and network scores;
- ``annotations.csv`` / ``annotations_excluded.csv``: the reference nodules of the run's
  scans (LUNA16's columns), for ``lungcad evaluate-detection``: a LUNA16 root's own tables
  when the input is one, else those of the scans the LIDC database knows;
- ``finding_dice.csv`` (scans the LIDC database knows, with the segmentation head): per
  reference nodule, the most probable finding that hits it and its mask's Dice with the
  readers' consensus;
- ``offcentre.csv`` and ``pointing.csv`` (when asked): each reference nodule recut 8-14 mm
  off-centre, its probability and localisation error; the pointing game of the detection
  map on those cubes and on the cube centred on the nodule (``offset_mm`` 0), beside a map
  that always points at the cube's centre;
- ``scans.csv``: one row per scan: status, reason, size, seconds per step;
- ``dicom/<series uid>/seg.dcm`` and ``sr.dcm`` (scans read from DICOM): the findings at or
  above the threshold as a DICOM SEG and a TID 1500 SR measurement report
  (``lungcad.dicom``); a scan without findings gets the SR alone, a negative report;
- ``figures/<patient>_<series>.png``, ``maps/<finding>_mask.nii.gz`` (each shown finding's
  mask in patient mm) and ``report.md``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from lungcad.config import DetectConfig, ReadLimits
from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.annotations.luna16 import (
    REFERENCE_COLUMNS,
    lidc_reference,
    read_luna_csv,
    reference_count,
)
from lungcad.core.candidates import CANDIDATE_COLUMNS
from lungcad.core.findings.lungrads import LUNG_RADS_LABEL, scan_category
from lungcad.core.findings.record import (
    LUNA16,
    MEASURE,
    PROVENANCE,
    READING,
    finding_columns,
)
from lungcad.core.io.nifti import write_mask_nifti
from lungcad.core.io.scans import Problem, ScanSource, find_scans
from lungcad.core.model.cam_findings import explain_findings, finding_stem
from lungcad.core.names import inside, safe_name, scan_stem
from lungcad.core.outputs import (
    OutputError,
    atomic_path,
    owned_output,
    write_csv_atomic,
    write_text_atomic,
)
from lungcad.core.runner import ScanParts
from lungcad.detection.dense import DENSE_SCORES, check_dense_model, detect_volume_dense
from lungcad.detection.detector import (
    detect_volume,
    detector_config,
    offcentre_recut,
)
from lungcad.detection.figures import scan_figure
from lungcad.detection.reference import (
    DICE_COLUMNS,
    POINTING_COLUMNS,
    ReferenceMasks,
    finding_dice,
    pointing_check,
)
from lungcad.errors import LungcadError

log = logging.getLogger(__name__)

#: LUNA16's submission columns first, then the patient and the findings' own columns.
DETECTION_COLUMNS = [
    "seriesuid",
    *finding_columns(LUNA16),
    "patient_id",
    *(c for c in finding_columns(READING, MEASURE, PROVENANCE) if c != "candidate_score"),
]
STEPS = ("read", "lung_mask", "candidates", "resample", "scoring", "heads")


@dataclass(frozen=True)
class DetectSettings:
    """What a detection run is asked to do (all of it goes into the resume digest); the
    cube geometry, lung mask and candidate generator come with the model."""

    detect: DetectConfig = DetectConfig()  # its threshold: findings drawn and printed
    top: int = 4  # findings shown in each scan's figure
    figures: bool = True
    explain: bool = True  # a Grad-CAM picture and NIfTI map of each finding shown
    offcentre: bool = False  # recut each reference nodule 8-14 mm off-centre and score it
    dicom: bool = True  # a DICOM SEG and SR per scan read from DICOM
    read: ReadLimits = field(default_factory=ReadLimits)  # what one scan may cost to read


_MODEL_CACHE: dict[str, tuple] = {}


def _model(checkpoint: str, detect: DetectConfig):
    """(the loaded model, detector settings, Grad-CAM explainer of its detection logit),
    once per process."""
    key = f"{checkpoint}:{detect.model_dump_json()}"
    if key not in _MODEL_CACHE:
        from lungcad.core.model.cam import CubeExplainer
        from lungcad.core.model.loading import load

        _MODEL_CACHE.clear()
        loaded = load(checkpoint, "cpu")
        if detect.detector == "dense":
            check_dense_model(loaded.network, detect, str(checkpoint))
        detector = detector_config(loaded.cut, detect)
        explainer = CubeExplainer(loaded.network, loaded.window)
        _MODEL_CACHE[key] = loaded, detector, explainer
    return _MODEL_CACHE[key]


def reported_findings(findings: pd.DataFrame, settings: DetectSettings) -> pd.DataFrame:
    """The findings a scan reports (its report's table, SEG and SR): at or above the
    threshold, most probable first."""
    if findings.empty:
        return findings
    return findings[findings["probability"] >= settings.detect.threshold]


def shown_findings(findings: pd.DataFrame, settings: DetectSettings) -> pd.DataFrame:
    """The findings a scan's report lists with pictures: the reported ones, at most
    ``settings.top``, most probable first."""
    return reported_findings(findings, settings).head(settings.top)


#: A scan's SEG and SR hold at most this many findings, the most probable (a SEG holds a
#: full-size bit plane per segment and slice; scans.csv says when findings were left out).
DICOM_MAX_FINDINGS = 20


def _write_dicom(volume, det, settings: DetectSettings, folder: Path, algorithm: str) -> str:
    """The scan's SEG and SR in ``folder``; what was written (or why not) for scans.csv."""
    from lungcad.dicom.objects import Algorithm, DicomObjectError, write_findings_dicom
    from lungcad.dicom.segments import finding_segment

    if not volume.source_files:
        return "n/a (not read from DICOM)"
    reported = reported_findings(det.findings, settings)
    note = ""
    if len(reported) > DICOM_MAX_FINDINGS:
        note = f" (the {DICOM_MAX_FINDINGS} most probable of {len(reported)} findings)"
        reported = reported.head(DICOM_MAX_FINDINGS)
    # On the source stack's own grid: the SEG's frames are its images (a stack that was
    # reordered or resampled for detection, or read around a missing slice, included).
    grid, frames = volume.source_grid
    every_slice = frames == tuple(range(grid.shape[0]))
    segments = []
    for i, row in reported.iterrows():
        segment = finding_segment(
            grid,
            row[["coordX", "coordY", "coordZ"]].to_numpy(float),
            float(row["diameter_mm"]),
            det.masks.get(i),
        )
        segments.append(
            segment if every_slice else replace(segment, mask=segment.mask[list(frames)])
        )
    try:
        written = write_findings_dicom(
            volume, reported, segments, Algorithm(algorithm), folder, settings.detect.threshold
        )
    except DicomObjectError as exc:
        log.warning("%s", exc)
        return f"not written: {exc}"
    if not segments:
        note = f" (no finding at probability >= {settings.detect.threshold:.2f})"
    return "+".join(p.stem for p in written) + note


#: What a part holds beside its tables: each scan's pictures, maps and DICOM objects.
PART_FOLDERS = ("figures", "maps", "dicom")
#: errno values of failures that pass: the scan is tried again by the next run.
PASSING_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.ENOMEM, errno.EAGAIN}
)


def _passing(exc: BaseException) -> bool:
    """Whether a scan's failure may pass (a full disk, memory, an output that could not be
    written: the place's fault, not the scan's): not kept, tried again next run."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError):
            return True
        if isinstance(seen, OSError) and seen.errno in PASSING_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, OutputError)


def _reason(exc: BaseException) -> str:
    """One line saying why a scan failed."""
    text = (
        str(exc)
        if isinstance(exc, LungcadError)
        else f"unexpected error {type(exc).__name__}: {exc}"
    )
    return " ".join(text.split())[:500]


def _scan_job(args: tuple) -> dict | None:
    """Detect one scan into its part; never raises. Returns None when the part holds the
    outcome, else (a failure that may pass, kept nowhere) the scan's row of scans.csv."""
    source, checkpoint, settings, part, db_path, threads, algorithm = args
    meta = {"seriesuid": source.series_uid, "patient_id": source.patient_id, "status": "ok"}
    try:
        _detect_scan(source, checkpoint, settings, part, db_path, threads, algorithm, meta)
        return None
    except Exception as exc:  # a batch job reports the bad scan and keeps going
        reason = _reason(exc)
        log.warning("scan %s not usable: %s", source.series_uid, reason)
        log.debug("scan %s failed", source.series_uid, exc_info=True)
        failed = {**meta, "status": "error", "reason": reason}
        if db_path:  # its reference nodules count as missed in the FROC
            try:
                failed["reference_nodules"] = reference_count(
                    source.series_uid, LidcDatabase(db_path)
                )
            except Exception:  # the count is best effort; the failure is what is reported
                log.debug("scan %s: reference not counted", source.series_uid, exc_info=True)
        if not _passing(exc):
            try:
                with atomic_path(part, f"the outcome of scan {source.series_uid}") as tmp:
                    tmp.mkdir(parents=True)
                    (tmp / "scan.json").write_text(json.dumps(failed, indent=1))
                return None
            except Exception:  # cannot even keep the outcome: reported, tried again
                log.debug("scan %s: outcome not kept", source.series_uid, exc_info=True)
        return {**failed, "reason": f"{reason} (not kept: the next run tries it again)"}


def _detect_scan(
    source: ScanSource,
    checkpoint: str,
    settings: DetectSettings,
    part: Path,
    db_path: str,
    threads: int,
    algorithm: str,
    meta: dict,
) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    empty = pd.DataFrame()
    t = time.perf_counter()
    volume = source.read(settings.read)
    read_s = time.perf_counter() - t
    loaded, detector, explainer = _model(checkpoint, settings.detect)
    model = loaded.network
    if settings.detect.detector == "dense":
        det = detect_volume_dense(volume, loaded, detector, settings.detect)
    else:
        det = detect_volume(volume, loaded, detector)
    ref = lidc_reference(volume, LidcDatabase(db_path)) if db_path else None
    offcentre = pointing = dice = empty
    if ref is not None and (settings.offcentre or model.segments):
        readers = ReferenceMasks(volume, LidcDatabase(db_path))
        if model.segments:
            dice = finding_dice(ref[0], det.findings, det.masks, readers, detector.cube_size)
        if settings.offcentre:
            offcentre = offcentre_recut(volume, ref[0], loaded, detector)
            pointing = _pointing(volume, ref[0], offcentre, readers, explainer, detector)
    with atomic_path(part, f"the detections of scan {source.series_uid}") as tmp:
        for folder in PART_FOLDERS:
            (tmp / folder).mkdir(parents=True)
        if settings.figures:
            scan_figure(
                volume,
                det.findings,
                tmp / "figures" / f"{scan_stem(volume.patient_id, volume.series_uid)}.png",
                settings.top,
                settings.detect.threshold,
                ref[0] if ref else None,
                det.masks,
            )
            for rank in range(1, len(shown_findings(det.findings, settings)) + 1):
                if rank - 1 in det.masks:
                    mask, origin, spacing = det.masks[rank - 1]
                    stem = finding_stem(volume.patient_id, volume.series_uid, rank)
                    write_mask_nifti(mask, origin, spacing, tmp / "maps" / f"{stem}_mask.nii.gz")
            if settings.explain:
                explain_findings(
                    volume,
                    shown_findings(det.findings, settings),
                    explainer,
                    tmp,
                    detector.cube_size,
                    detector.spacing_mm,
                )
        dicom = ""
        if settings.dicom:
            dicom = _write_dicom(volume, det, settings, tmp / "dicom", algorithm)
        uid = {"seriesuid": volume.series_uid, "patient_id": volume.patient_id}
        tables = {
            "findings": det.findings.assign(**uid),
            "candidates": det.candidates.assign(**uid),
            "reference": ref[0] if ref else empty,
            "excluded": ref[1] if ref else empty,
            "offcentre": offcentre.assign(**uid) if len(offcentre) else empty,
            "pointing": pointing.assign(**uid) if len(pointing) else empty,
            "finding_dice": dice.assign(**uid) if len(dice) else empty,
        }
        seconds = {"read": read_s, **det.seconds}
        meta.update(
            patient_id=volume.patient_id,
            reason="; ".join([*volume.notes, *det.notes]),
            slices=int(volume.hu.shape[0]),
            rows=int(volume.hu.shape[1]),
            columns=int(volume.hu.shape[2]),
            spacing_mm=[float(v) for v in volume.geometry.spacing_mm],
            in_lidc_db=ref is not None,
            **{f"seconds_{k}": float(v) for k, v in seconds.items()},
            seconds_total=float(sum(seconds.values())),
            candidates=len(det.candidates),
            findings_above_threshold=len(reported_findings(det.findings, settings)),
            lung_rads=scan_category(
                reported_findings(det.findings, settings)["lung_rads"], settings.detect.threshold
            ),
            sizing=_sizing(det.findings),
            **({"dicom": dicom} if settings.dicom else {}),
        )
        for name, table in tables.items():
            table.to_csv(tmp / f"{name}.csv", index=False)
        (tmp / "scan.json").write_text(json.dumps(meta, indent=1))


def _pointing(volume, reference, offcentre, readers, explainer, detector) -> pd.DataFrame:
    """The pointing game on the cube centred on each reference nodule and on its off-centre
    recuts (``offcentre_recut``'s cubes)."""
    centred = reference[["nodule_id", "coordX", "coordY", "coordZ"]].assign(offset_mm=0.0)
    moved = offcentre[["nodule_id", "offset_mm", "cubeX", "cubeY", "cubeZ"]].rename(
        columns={"cubeX": "coordX", "cubeY": "coordY", "cubeZ": "coordZ"}
    )
    cubes = pd.concat([centred, moved], ignore_index=True)
    cubes = cubes[cubes["nodule_id"].isin(readers.nodules)].reset_index(drop=True)
    games = pointing_check(
        volume,
        cubes[["coordX", "coordY", "coordZ"]].to_numpy(float),
        list(cubes["nodule_id"]),
        readers,
        explainer,
        detector.cube_size,
        detector.spacing_mm,
    )
    return pd.concat([cubes[["nodule_id", "offset_mm"]], games], axis=1)


def _sizing(findings: pd.DataFrame) -> str:
    """How a scan's findings were sized: "mask" (the segmentation head) or "cube centre"."""
    if findings.empty:
        return "n/a"
    return "cube centre" if (findings["sizing"] == "cube centre").all() else "mask"


def _digest(checkpoint_sha256: str, settings: DetectSettings) -> str:
    doc = {**asdict(settings), "detect": settings.detect.to_dict()}
    text = checkpoint_sha256 + json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_csv(path: Path, words: tuple[str, ...] = ()) -> pd.DataFrame:
    """A table of a detect run (empty if absent); ``words``: columns read as text, missing
    values as "n/a" (a Lung-RADS "3" is a category, not the number 3.0)."""
    if not path.exists() or path.stat().st_size <= 1:
        return pd.DataFrame()
    try:
        frame = pd.read_csv(
            path, dtype={"seriesuid": str, "patient_id": str, **dict.fromkeys(words, str)}
        )
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    for column in words:
        if column in frame:
            frame[column] = frame[column].fillna("n/a")
    return frame


def _write_atomic(frame: pd.DataFrame, path: Path, columns: list[str] | None = None) -> None:
    write_csv_atomic(frame if columns is None else frame.reindex(columns=columns), path)


def detect_scans(
    input_path: str | Path,
    out_dir: str | Path,
    checkpoint: str | Path,
    settings: DetectSettings | None = None,
    workers: int = 1,
    progress: bool = True,
    patients: set[str] | None = None,
    model_label: str = "",
    db: LidcDatabase | None = None,
    held: bool = False,
) -> pd.DataFrame:
    """Detect nodules in every scan under ``input_path`` into ``out_dir`` (module docstring).

    Args:
        patients: only the scans of these patient ids (e.g. a split's test patients).
        model_label: how the model was named (path or models:/ URI), for the report.
        held: the caller holds ``out_dir`` already (``owned_output``), for work of its own
            before or after (a PACS study's retrieval and store).

    Returns:
        ``scans.csv``: one row per scan (and per item that gave no scan) with its status
        (``ok``, ``error``: a scan that could not be used, ``skipped``: not a CT image) and
        timings.

    Raises:
        OutputBusyError: another run holds ``out_dir``.
        OutputError: ``out_dir`` cannot be written.
    """
    from lungcad.core.model.checkpoint import checkpoint_sha256

    settings = settings or DetectSettings()
    # A foreign, unsafe or inconsistent checkpoint stops here, before any scan (and the
    # model is then ready for the scans read in this process).
    _model(str(checkpoint), settings.detect)
    db = db or LidcDatabase()
    holding = (
        contextlib.nullcontext(Path(out_dir)) if held else owned_output(out_dir, "lungcad detect")
    )
    with holding as out_dir:
        sources, problems = find_scans(input_path, db, workers, progress)
        if patients is not None:
            sources = [s for s in sources if s.patient_id in patients]
        checkpoint_sha = checkpoint_sha256(checkpoint)
        parts = ScanParts(out_dir, _digest(checkpoint_sha, settings))
        threads = 1 if workers > 1 else 0
        algorithm = ""  # how the DICOM objects name the model
        if settings.dicom:
            from lungcad.dicom.objects import model_label_for_dicom

            algorithm = model_label_for_dicom(checkpoint, checkpoint_sha, model_label)
        jobs = {
            s.series_uid: (
                s,
                str(checkpoint),
                settings,
                parts.path(s.series_uid),
                db.path,
                threads,
                algorithm,
            )
            for s in sources
        }
        failed = parts.run(_scan_job, jobs, workers, "detect", progress)
        return _assemble(
            sources,
            problems,
            parts,
            failed,
            out_dir,
            settings,
            model_label or str(checkpoint),
            luna16_reference(input_path),
        )


def luna16_reference(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """LUNA16's own tables (``annotations.csv``, ``annotations_excluded.csv``) when
    ``root`` is a LUNA16 root that holds both; None otherwise.

    Raises:
        ValueError: a table without LUNA16's columns, naming it.
    """
    root = Path(root)
    tables = [root / "annotations.csv", root / "annotations_excluded.csv"]
    if not root.is_dir() or not all(t.is_file() for t in tables):
        return None
    return (
        read_luna_csv(tables[0], "LUNA16 annotations"),
        read_luna_csv(tables[1], "LUNA16 excluded annotations"),
    )


def _install(part: Path, source: ScanSource, out_dir: Path) -> None:
    """Put a scan's pictures, maps and DICOM objects from its part (none for a scan that
    failed) in place of those an earlier run left for it. Copied, not moved: the part
    stays whole until every scan is assembled, so an interrupted assembly loses nothing."""
    stem = scan_stem(source.patient_id, source.series_uid)
    dicom = inside(out_dir, out_dir / "dicom" / safe_name(source.series_uid))
    if dicom.is_dir():
        shutil.rmtree(dicom)
    for folder in ("figures", "maps"):
        for old in (out_dir / folder).glob(f"{stem}*"):
            if old.name == f"{stem}.png" or old.name.startswith(f"{stem}_f"):
                old.unlink()
        for new in sorted((part / folder).glob("*")) if part.is_dir() else []:
            target = inside(out_dir, out_dir / folder / new.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(new, target)
    if part.is_dir() and (part / "dicom").is_dir() and any((part / "dicom").iterdir()):
        dicom.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dicom, f"the DICOM objects of scan {source.series_uid}") as tmp:
            shutil.copytree(part / "dicom", tmp)


def _assemble(
    sources: list[ScanSource],
    problems: list[Problem],
    parts: ScanParts,
    failed: dict[str, dict | None],
    out_dir: Path,
    settings: DetectSettings,
    model_label: str,
    luna16: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    tables: dict[str, list[pd.DataFrame]] = {
        k: []
        for k in (
            "findings",
            "candidates",
            "reference",
            "excluded",
            "offcentre",
            "pointing",
            "finding_dice",
        )
    }
    metas = []
    for s in sources:
        part = parts.path(s.series_uid)
        if part.is_dir():
            metas.append(json.loads((part / "scan.json").read_text()))
            for name in tables:
                tables[name].append(_read_csv(part / f"{name}.csv"))
        else:  # failed for a passing reason: reported, kept nowhere, tried again next time
            metas.append(failed[s.series_uid])
        _install(part, s, out_dir)
    for problem in problems:
        metas.append(
            {
                "seriesuid": "",
                "patient_id": "",
                "status": problem.status,
                "reason": f"{problem.item}: {problem.reason}",
            }
        )

    def cat(name: str) -> pd.DataFrame:
        frames = [f for f in tables[name] if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    findings = cat("findings")
    if len(findings):
        findings = findings.sort_values(["seriesuid", "probability"], ascending=[True, False])
    attr_columns = [c for c in findings.columns if c.startswith("attr_")]
    _write_atomic(findings, out_dir / "detections.csv", [*DETECTION_COLUMNS, *attr_columns])
    candidates = cat("candidates")
    cand_cols = [
        "seriesuid",
        "patient_id",
        *CANDIDATE_COLUMNS,
        "blob_diameter_mm",
        "probability",
        "malignancy",
    ]
    dense_cols = [c for c in DENSE_SCORES if c in candidates.columns]
    _write_atomic(candidates, out_dir / "candidates.csv", [*cand_cols, *dense_cols])
    ref_cols = [*REFERENCE_COLUMNS, "nodule_id", "n_readers", "malignancy", "texture"]
    reference, excluded = cat("reference"), cat("excluded")
    if luna16 is not None:  # a LUNA16 root: its own tables are the reference, not LIDC's
        run = {s.series_uid for s in sources}
        reference, excluded = (t[t["seriesuid"].isin(run)] for t in luna16)
    _write_atomic(reference, out_dir / "annotations.csv", ref_cols)
    _write_atomic(excluded, out_dir / "annotations_excluded.csv", ref_cols)
    uid_cols = ["seriesuid", "patient_id"]
    _write_atomic(cat("finding_dice"), out_dir / "finding_dice.csv", [*DICE_COLUMNS, *uid_cols])
    if settings.offcentre:
        _write_atomic(cat("offcentre"), out_dir / "offcentre.csv")
        _write_atomic(
            cat("pointing"),
            out_dir / "pointing.csv",
            ["nodule_id", "offset_mm", *POINTING_COLUMNS, *uid_cols],
        )
    scans = pd.DataFrame(metas)
    first = ["seriesuid", "patient_id", "status", "reason"]  # present even with no scan
    scans = scans.reindex(columns=[*first, *(c for c in scans.columns if c not in first)])
    _write_atomic(scans, out_dir / "scans.csv")
    write_text_atomic(
        out_dir / "report.md", _report(scans, findings, settings, model_label), "the report"
    )
    parts.remove()
    return scans


def _report(
    scans: pd.DataFrame, findings: pd.DataFrame, settings: DetectSettings, model: str
) -> str:
    ok = scans[scans["status"] == "ok"]
    errors = int((scans["status"] == "error").sum())
    skipped = int((scans["status"] == "skipped").sum())
    lines = [
        "# lungcad detect",
        "",
        f"Model: `{model}`. {len(ok)} scan(s) read, {errors} not usable, {skipped} item(s) "
        "skipped (not CT images). "
        f"Findings at or above probability {settings.detect.threshold:.2f} are listed.",
        "*Research use only; not a diagnostic device.*",
        "",
    ]
    if len(ok) and "sizing" in ok:
        sizing = ", ".join(sorted(set(ok["sizing"].dropna()) - {"n/a"})) or "n/a"
        lines += [
            f"Sizing: {sizing}. `mask`: each finding is the fused predicted mask of the "
            "candidates on one nodule (longest axial diameter, Lung-RADS mean diameter, "
            "volume); `cube centre`: the model has no segmentation head, findings are sized "
            "from the dense part at the cube's centre and merged by box NMS. "
            f"Lung-RADS: {LUNG_RADS_LABEL}.",
            "",
        ]
    if settings.dicom and len(ok) and "dicom" in ok:
        lines += [
            "DICOM: each scan's reported findings are in `dicom/<series uid>/seg.dcm` (a SEG, "
            "one segment per finding) and `sr.dcm` (a TID 1500 measurement report "
            "referencing it); both open over the CT in 3D Slicer and OHIF.",
            "",
        ]
    if len(ok):
        secs = {k: ok[f"seconds_{k}"].mean() for k in STEPS if f"seconds_{k}" in ok}
        lines += [
            f"Mean seconds per scan: {ok['seconds_total'].mean():.1f} ("
            + ", ".join(f"{k} {v:.1f}" for k, v in secs.items())
            + f"); mean candidates per scan {ok['candidates'].mean():.0f}.",
            "",
        ]
    for status, title in (("error", "Not usable"), ("skipped", "Skipped")):
        bad = scans[scans["status"] == status]
        if len(bad):
            lines += [f"## {title}", ""]
            lines += [f"- `{r.seriesuid or '-'}`: {r.reason}" for r in bad.itertuples()]
            lines.append("")
    lines += ["## Findings", ""]
    for r in ok.itertuples():
        f = findings[findings["seriesuid"] == r.seriesuid] if len(findings) else findings
        top = f[f["probability"] >= settings.detect.threshold] if len(f) else f
        note = f" ({r.reason})" if isinstance(r.reason, str) and r.reason else ""
        name = f"{scan_stem(r.patient_id, r.seriesuid)}.png"
        lines.append(f"### {r.patient_id} `{r.seriesuid}`{note}")
        lines.append("")
        category = getattr(r, "lung_rads", "n/a")
        dicom = getattr(r, "dicom", "")
        if settings.dicom and isinstance(dicom, str) and dicom != "seg+sr":
            lines += [f"DICOM SEG/SR: {dicom}.", ""]
        if len(top) == 0:
            lines.append(
                f"No finding at probability ≥ {settings.detect.threshold:.2f}; no Lung-RADS "
                "category is given (a negative screen is a reader's call)."
            )
        else:
            lines.append(f"Scan Lung-RADS category: **{category}**.")
            lines.append("")
            lines.append(
                "| # | x, y, z (mm) | probability | malignancy (1–5) | diameter (mm) | "
                "mean diameter (mm) | volume (mm³) | type | Lung-RADS | cubes |"
            )
            lines.append("|---|---|---|---|---|---|---|---|---|---|")
            for i, x in enumerate(top.itertuples(), start=1):
                lines.append(
                    f"| {i} | {x.coordX:.1f}, {x.coordY:.1f}, {x.coordZ:.1f} | "
                    f"{x.probability:.3f} | {x.malignancy:.2f} | {_mm(x.diameter_mm)} | "
                    f"{_mm(x.mean_diameter_mm)} | {_mm(x.volume_mm3, 0)} | {x.type} | "
                    f"{x.lung_rads} | {x.cubes} |"
                )
        if settings.figures:
            lines += ["", f"![{r.patient_id}](figures/{name})"]
        if settings.figures and settings.explain and len(top):
            lines += [
                "",
                "Grad-CAM of the detection logit for each finding above (where the network "
                "looked: red is most; maps in `maps/` open over the CT in 3D Slicer):",
                "",
            ]
            for i in range(1, min(len(top), settings.top) + 1):
                stem = finding_stem(r.patient_id, r.seriesuid, i)
                lines.append(f"![finding {i}](figures/{stem}_cam.png)")
        lines.append("")
    return "\n".join(lines)


def _mm(value: float, digits: int = 1) -> str:
    return "n/a" if pd.isna(value) else f"{value:.{digits}f}"


#: The console names at most this many skipped items (scans.csv lists them all).
SKIPPED_SHOWN = 5


def top_findings(out_dir: str | Path, threshold: float, per_scan: int = 5) -> list[str]:
    """Lines saying where the nodules are, which scans were not usable and what was
    skipped (the CLI prints them)."""
    out_dir = Path(out_dir)
    findings = _read_csv(out_dir / "detections.csv", ("type", "lung_rads"))
    scans = _read_csv(out_dir / "scans.csv")
    lines = []
    skipped = scans[scans["status"] == "skipped"] if len(scans) else scans
    for r in skipped.head(SKIPPED_SHOWN).itertuples():
        lines.append(f"skipped: {r.reason}")
    if len(skipped) > SKIPPED_SHOWN:
        lines.append(f"skipped: {len(skipped) - SKIPPED_SHOWN} more (scans.csv lists them)")
    for r in scans.itertuples():
        if r.status == "skipped":
            continue
        if r.status != "ok":
            lines.append(f"{r.seriesuid or '-'}: not usable: {r.reason}")
            continue
        f = findings[
            (findings["seriesuid"] == r.seriesuid) & (findings["probability"] >= threshold)
        ]
        note = f" ({r.reason})" if isinstance(r.reason, str) and r.reason else ""
        lines.append(f"{r.patient_id} {r.seriesuid}: {len(f)} finding(s) >= {threshold:.2f}{note}")
        for x in f.head(per_scan).itertuples():
            size = "size n/a" if pd.isna(x.diameter_mm) else f"{x.diameter_mm:.1f} mm"
            # "n/a" reads back from the CSV as NaN
            kind = "" if x.type == "n/a" else f" {x.type}"
            rads = "" if x.lung_rads == "n/a" else f"  Lung-RADS {x.lung_rads}"
            lines.append(
                f"  ({x.coordX:7.1f}, {x.coordY:7.1f}, {x.coordZ:7.1f}) mm  p={x.probability:.3f}  "
                f"malignancy {x.malignancy:.1f}  {size}{kind}{rads}"
            )
    return lines
