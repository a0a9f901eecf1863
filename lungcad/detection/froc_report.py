"""`lungcad evaluate-detection`: FROC / CPM of a detection run, candidate-stage sensitivity,
seconds per scan; metrics.json (DVC metrics), froc.csv (DVC plot), froc.png, report.md."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from lungcad.core.annotations.luna16 import read_luna_csv
from lungcad.core.findings.measure import texture_type
from lungcad.core.metrics import bootstrap_ci
from lungcad.detection.figures import froc_figure
from lungcad.detection.froc import FP_RATES, bootstrap_cpm, froc, label_findings


def candidate_sensitivity(
    candidates: pd.DataFrame, annotations: pd.DataFrame, excluded: pd.DataFrame
) -> tuple[float, int]:
    """Share of the reference nodules within the radius of at least one candidate, and
    how many nodules that is (LUNA16's candidate-detection track)."""
    if len(annotations) == 0:
        return float("nan"), 0
    labelled = label_findings(candidates.assign(probability=0.0), annotations, excluded)
    hit = labelled.loc[labelled["label"] == "hit", "nodule"].nunique()
    return hit / len(annotations), int(hit)


#: Size bands of the per-size sensitivity (readers' diameter, mm).
SIZE_BANDS = (
    (0.0, 6.0, "< 6 mm"),
    (6.0, 10.0, "6-10 mm"),
    (10.0, 20.0, "10-20 mm"),
    (20.0, np.inf, ">= 20 mm"),
)


def nodule_findings(
    findings: pd.DataFrame, annotations: pd.DataFrame, excluded: pd.DataFrame, threshold: float
) -> dict:
    """Per reference nodule at the detection threshold: detected or not, how many findings
    lie on it (duplicates), the size error of its best finding; and the sensitivity per
    texture (from the readers' texture rating) and per size band."""
    if len(annotations) == 0:
        return {}
    above = findings[findings["probability"] >= threshold]
    labelled = label_findings(above, annotations, excluded)
    hits = labelled[labelled["label"] == "hit"]
    ref = annotations.reset_index(drop=True)
    per = hits.groupby("nodule")
    count = per.size().reindex(ref.index, fill_value=0)
    detected = count > 0
    out: dict = {
        "threshold": threshold,
        "sensitivity_at_threshold": float(detected.mean()),
        "sensitivity_at_threshold_ci95": wilson(int(detected.sum()), len(detected)),
        "findings_per_detected_nodule": float(count[detected].mean()) if detected.any() else None,
        "nodules_listed_more_than_once": int((count > 1).sum()),
    }
    if "diameter_mm" in hits and detected.any():
        best = hits.sort_values("probability", ascending=False).groupby("nodule").head(1)
        best = best.set_index("nodule")
        sized = best["diameter_mm"].notna()
        err = best.loc[sized, "diameter_mm"] - ref.loc[best.index[sized], "diameter_mm"]
        pct = 100 * err / ref.loc[best.index[sized], "diameter_mm"]
        out.update(
            size_error_mm_median_abs=float(err.abs().median()) if len(err) else None,
            size_error_pct_median_abs=float(pct.abs().median()) if len(pct) else None,
            size_error_mm_median=float(err.median()) if len(err) else None,
            n_sized=int(sized.sum()),
        )
    if "texture" in ref:
        kinds = ref["texture"].map(lambda t: texture_type(t) if np.isfinite(t) else "unknown")
        out["sensitivity_by_type"] = {
            k: _proportion(detected[kinds == k])
            for k in ("solid", "part-solid", "ground glass")
            if (kinds == k).any()
        }
    band = {}
    for lo, hi, name in SIZE_BANDS:
        inside = (ref["diameter_mm"] >= lo) & (ref["diameter_mm"] < hi)
        if inside.any():
            band[name] = _proportion(detected[inside])
    out["sensitivity_by_size"] = band
    return out


def wilson(k: int, n: int) -> list[float] | None:
    """95 % Wilson score interval of k successes in n (None for n = 0)."""
    if n == 0:
        return None
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(ci.low), float(ci.high)]


def _proportion(hits: pd.Series) -> dict:
    """Sensitivity of a subgroup with its count and 95 % Wilson interval."""
    return {
        "sensitivity": float(hits.mean()),
        "n": int(len(hits)),
        "ci95": wilson(int(hits.sum()), int(len(hits))),
    }


def offcentre_summary(table: pd.DataFrame, threshold: float) -> dict:
    """The off-centre recut (``lungcad detect --offcentre-check``): mean probability, share
    at or above the threshold, median localisation error of the outlined ones."""
    if table.empty:
        return {"n_cubes": 0}
    located = table["localisation_error_mm"].dropna()
    return {
        "n_cubes": int(len(table)),
        "offset_mm": [float(table["offset_mm"].min()), float(table["offset_mm"].max())],
        "probability_mean": float(table["probability"].mean()),
        "share_at_threshold": float((table["probability"] >= threshold).mean()),
        "n_outlined": int(len(located)),
        "localisation_error_mm_median": float(located.median()) if len(located) else None,
    }


def _mean_ci(values: np.ndarray, patients: np.ndarray, n_boot: int, seed: int) -> dict:
    """Mean of ``values`` with its 95 % patient-bootstrap interval and count."""
    if not len(values):
        return {"mean": None, "n": 0, "ci95": None}
    ci = bootstrap_ci(patients, lambda i: {"m": float(np.mean(values[i]))}, n_boot, seed)
    low, high = ci.get("m", (float("nan"), float("nan")))
    interval = [float(low), float(high)] if np.isfinite([low, high]).all() else None
    return {"mean": float(np.mean(values)), "n": int(len(values)), "ci95": interval}


def finding_dice_summary(
    table: pd.DataFrame, missing: pd.DataFrame, threshold: float, n_boot: int, seed: int
) -> dict:
    """Dice of each reference nodule's detected finding with the readers' consensus
    (``finding_dice.csv``): over the nodules detected at ``threshold``, and over every
    reference nodule with a missed one (or one of a scan not usable: ``missing``, a
    ``patient_id`` per nodule) counting 0."""
    if table.empty and missing.empty:
        return {"n_nodules": 0}
    table = table.assign(patient_id=table["patient_id"].astype(str)).reset_index(drop=True)
    detected = table["finding_probability"].fillna(-1.0).to_numpy(float) >= threshold
    found = table[detected]
    # A nodule without a finding at the threshold scores 0, as does one of a lost scan.
    every = pd.concat(
        [
            pd.DataFrame(
                {"patient_id": table["patient_id"], "dice": np.where(detected, table["dice"], 0.0)}
            ),
            pd.DataFrame({"patient_id": missing["patient_id"].astype(str), "dice": 0.0}),
        ],
        ignore_index=True,
    )
    return {
        "threshold": threshold,
        "localisation": "the detected finding's own (its mask, where the detector put it)",
        "detected": _mean_ci(
            found["dice"].to_numpy(float), found["patient_id"].to_numpy(), n_boot, seed
        ),
        "all_nodules_missed_as_0": _mean_ci(
            every["dice"].to_numpy(float), every["patient_id"].to_numpy(), n_boot, seed
        ),
        "n_nodules": int(len(every)),
    }


def pointing_summary(table: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """The pointing game of the detection map (``pointing.csv``) on cubes centred on their
    nodule and on cubes recut off its centre, each beside a map that always points at the
    cube's centre, with patient-bootstrap intervals."""
    if table.empty:
        return {}
    out = {}
    for name, part in (
        ("centred", table[table["offset_mm"] == 0]),
        ("offcentre", table[table["offset_mm"] > 0]),
    ):
        patients = part["patient_id"].astype(str).to_numpy()
        out[name] = {
            "n_cubes": int(len(part)),
            "offset_mm": [float(part["offset_mm"].min()), float(part["offset_mm"].max())]
            if len(part)
            else None,
            "gradcam": _mean_ci(part["pointing_hit"].to_numpy(float), patients, n_boot, seed),
            "centre_baseline": _mean_ci(part["centre_hit"].to_numpy(float), patients, n_boot, seed),
            "chance": float(part["pointing_chance"].mean()) if len(part) else None,
        }
    return out


def evaluate_detection(
    detection_dir: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    annotations: str | Path | None = None,
    excluded: str | Path | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    threshold: float = 0.9,
) -> dict:
    """Score the run in ``detection_dir`` (``lungcad detect``'s output) against reference
    nodules: its own ``annotations.csv`` / ``annotations_excluded.csv`` (from the LIDC
    database) unless LUNA16's files are given. ``threshold``: the detection threshold the
    per-nodule figures (duplicates, size error, sensitivity per type and size) are taken at.

    Several runs (e.g. each cross-validation fold's detections of its held-out scans) are
    pooled into one FROC over all their scans, as LUNA16 scores its ten folds; a scan may be
    in one run only.

    A scan that could not be read counts as a scan without findings: its reference nodules
    (LUNA16's files, or the count detect took from the LIDC database) are missed. Items that
    are not scans (skipped) do not count.

    Raises:
        ValueError: missing files or columns, or a scan in two runs, with the path and what
            to do.
    """
    dirs = (
        [Path(detection_dir)]
        if isinstance(detection_dir, (str, Path))
        else list(map(Path, detection_dir))
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = read_runs(dirs, own_reference=annotations is None)
    scans, findings, candidates = run["scans"], run["detections"], run["candidates"]
    ok = scans[scans["status"] == "ok"]
    failed = scans[(scans["status"] == "error") & scans["seriesuid"].fillna("").astype(bool)]
    counted = pd.concat([ok, failed])
    series = counted["seriesuid"].astype(str).tolist()
    patients = counted["patient_id"].fillna(counted["seriesuid"]).astype(str).tolist()
    ref = read_luna_csv(annotations, "annotations") if annotations else run["annotations"]
    exc = read_luna_csv(excluded, "excluded annotations") if excluded else run["excluded"]
    if annotations is None and "reference_nodules" in failed:
        # The failed scans' nodules, from the database alone (no geometry: never hit).
        counts = failed["reference_nodules"].fillna(0).astype(int)
        rows = [
            {"seriesuid": str(uid), "coordX": np.nan, "coordY": np.nan, "coordZ": np.nan}
            for uid, k in zip(failed["seriesuid"], counts)
            for _ in range(k)
        ]
        ref = pd.concat([ref, pd.DataFrame(rows, columns=ref.columns)], ignore_index=True)
    missed = int(ref["seriesuid"].isin(failed["seriesuid"].astype(str)).sum())
    result = froc(findings, ref, exc, series)
    ci = bootstrap_cpm(
        findings, ref[ref.seriesuid.isin(series)], exc, series, bootstrap, seed, patients
    )
    cand_sens, cand_hits = candidate_sensitivity(
        candidates[candidates.seriesuid.isin(series)], ref[ref.seriesuid.isin(series)], exc
    )
    per_nodule = nodule_findings(findings, ref[ref.seriesuid.isin(series)], exc, threshold)
    metrics = {
        **result.as_dict(),
        **ci,
        "candidate_sensitivity": cand_sens,
        "candidate_hits": cand_hits,
        "candidates_per_scan": len(candidates[candidates.seriesuid.isin(series)])
        / max(len(series), 1),
        "seconds_per_scan": float(ok["seconds_total"].mean()) if len(ok) else float("nan"),
        "scans_not_usable": int(len(failed)),
        "nodules_in_scans_not_usable": missed,
        "ci_resamples": "patients",
    }
    for step in ("read", "lung_mask", "candidates", "resample", "scoring", "heads"):
        if f"seconds_{step}" in ok:
            metrics[f"seconds_{step}"] = float(ok[f"seconds_{step}"].mean())
    metrics = {
        k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in metrics.items()
    }
    metrics["per_nodule"] = per_nodule
    if run["offcentre"] is not None:
        metrics["offcentre"] = offcentre_summary(run["offcentre"], threshold)
    if run["pointing"] is not None:
        metrics["pointing"] = pointing_summary(
            run["pointing"][run["pointing"]["seriesuid"].astype(str).isin(series)], bootstrap, seed
        )
    if run["finding_dice"] is not None:
        dice = run["finding_dice"][run["finding_dice"]["seriesuid"].astype(str).isin(series)]
        lost = ref[ref["seriesuid"].isin(failed["seriesuid"].astype(str))]
        owner = dict(zip(failed["seriesuid"].astype(str), failed["patient_id"].astype(str)))
        lost = pd.DataFrame({"patient_id": lost["seriesuid"].map(owner).fillna(lost["seriesuid"])})
        metrics["finding_dice"] = finding_dice_summary(dice, lost, threshold, bootstrap, seed)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    pd.DataFrame(  # from no false positives up (the curve is stored from many down)
        {"fps_per_scan": result.fps_per_scan[::-1], "sensitivity": result.sensitivity[::-1]}
    ).to_csv(out_dir / "froc.csv", index=False)
    froc_figure(
        result.fps_per_scan,
        result.sensitivity,
        result.sensitivities,
        result.cpm,
        out_dir / "froc.png",
    )
    where = ", ".join(f"`{d}`" for d in dirs)
    (out_dir / "report.md").write_text(_report(metrics, scans, where))
    return metrics


def read_runs(dirs: Sequence[Path], own_reference: bool = True) -> dict[str, pd.DataFrame | None]:
    """The tables of one or more ``lungcad detect`` runs, concatenated: scans, detections,
    candidates, offcentre, pointing and finding_dice (None when no run has them) and, with
    ``own_reference``, the runs' annotations and excluded annotations (LUNA16 columns; else
    None).

    Raises:
        ValueError: a run without scans.csv or its tables, or a scan in two runs.
    """
    parts: dict[str, list[pd.DataFrame]] = {}
    for d in dirs:
        scans_file = d / "scans.csv"
        if not scans_file.is_file():
            raise ValueError(f"{scans_file}: no such file; run `lungcad detect ... --out {d}`")
        parts.setdefault("scans", []).append(pd.read_csv(scans_file, dtype={"seriesuid": str}))
        parts.setdefault("detections", []).append(read_findings(d / "detections.csv", "detections"))
        parts.setdefault("candidates", []).append(read_findings(d / "candidates.csv", "candidates"))
        if own_reference:
            parts.setdefault("annotations", []).append(
                read_luna_csv(d / "annotations.csv", "annotations")
            )
            parts.setdefault("excluded", []).append(
                read_luna_csv(d / "annotations_excluded.csv", "excluded annotations")
            )
        for optional in ("offcentre", "pointing", "finding_dice"):
            if (d / f"{optional}.csv").is_file():
                parts.setdefault(optional, []).append(
                    pd.read_csv(d / f"{optional}.csv", dtype={"seriesuid": str, "patient_id": str})
                )
    tables: dict[str, pd.DataFrame | None] = {
        k: pd.concat(v, ignore_index=True) for k, v in parts.items()
    }
    for optional in ("offcentre", "pointing", "finding_dice", "annotations", "excluded"):
        tables.setdefault(optional, None)
    uids = tables["scans"]["seriesuid"].astype(str)
    twice = sorted(set(uids[uids.duplicated()]))
    if twice:
        raise ValueError(
            f"scan {twice[0]} is in more than one of the detection runs "
            f"{', '.join(map(str, dirs))}: pool runs of disjoint scans (e.g. the folds' "
            "held-out scans)"
        )
    return tables


def read_findings(path: Path, what: str) -> pd.DataFrame:
    """A findings table (``seriesuid, coordX, coordY, coordZ, probability``); empty if the
    run found nothing."""
    if not path.is_file():
        raise ValueError(f"{what} {path}: no such file; run `lungcad detect` first")
    table = pd.read_csv(path, dtype={"seriesuid": str})
    missing = [c for c in ("seriesuid", "coordX", "coordY", "coordZ") if c not in table]
    if missing:
        raise ValueError(f"{what} {path}: missing column(s) {', '.join(missing)}")
    if "probability" not in table:
        table["probability"] = 0.0
    return table


def _steps(m: dict) -> str:
    """The mean seconds of each step a run timed, in the order they run."""
    names = {"lung_mask": "lung mask", "heads": "heads on the findings' cubes"}
    steps = ("read", "lung_mask", "candidates", "resample", "scoring", "heads")
    return ", ".join(
        f"{names.get(k, k)} {_fmt(m[f'seconds_{k}'])}" for k in steps if f"seconds_{k}" in m
    )


def _fmt(v) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _report(m: dict, scans: pd.DataFrame, detection_dir: str) -> str:
    ci = ""
    if "cpm_ci_low" in m:
        ci = f" (95 % CI {m['cpm_ci_low']:.3f}–{m['cpm_ci_high']:.3f}, bootstrap over patients)"
    lines = []
    for r in FP_RATES:
        key = f"sensitivity_at_{r:g}_fp"
        low, high = _fmt(m.get(f"{key}_ci_low")), _fmt(m.get(f"{key}_ci_high"))
        lines.append(f"| {r:g} | {_fmt(m[key])} | {low}–{high} |")
    rows = "\n".join(lines)
    return f"""# Whole-scan detection: FROC (LUNA16 rules)

Detections: {detection_dir} ({m["n_scans"]} scans, {m["n_nodules"]} reference nodules:
≥ 3 readers and ≥ 3 mm; findings on other outlined lesions ignored: {m["ignored_findings"]}).

**CPM {_fmt(m["cpm"])}**{ci}. Highest sensitivity reached: {_fmt(m["max_sensitivity"])}.

| FP per scan | sensitivity | 95 % CI |
|---|---|---|
{rows}

Candidate stage: sensitivity {_fmt(m["candidate_sensitivity"])} ({m["candidate_hits"]} of
{m["n_nodules"]} nodules) with {_fmt(m["candidates_per_scan"])} candidates per scan.

Seconds per scan: {_fmt(m["seconds_per_scan"])} ({_steps(m)}).
Scans not usable: {m["scans_not_usable"]} (counted as scans without findings: their
{m["nodules_in_scans_not_usable"]} reference nodules are missed).

![FROC](froc.png)

{_per_nodule_report(m.get("per_nodule") or {})}
{_offcentre_report(m.get("offcentre") or {})}
{_dice_report(m.get("finding_dice") or {})}
{_pointing_report(m.get("pointing") or {})}
"""


def _mean(v: dict) -> str:
    if not v or v.get("mean") is None:
        return "n/a"
    ci = f" ({v['ci95'][0]:.3f}–{v['ci95'][1]:.3f})" if v.get("ci95") else ""
    return f"{v['mean']:.3f}{ci}, n = {v['n']}"


def _dice_report(d: dict) -> str:
    if not d.get("n_nodules"):
        return ""
    return (
        f"\n## Dice at the detected finding\n\nThe mask of each reference nodule's most "
        f"probable finding at probability >= {d['threshold']:.2f}, against the readers' "
        f"consensus: {_mean(d['detected'])}; over all {d['n_nodules']} reference nodules, "
        f"a missed one counting 0: {_mean(d['all_nodules_missed_as_0'])} (95 % CI, patients "
        "resampled).\n"
    )


def _pointing_report(p: dict) -> str:
    if not p:
        return ""
    rows = [
        f"| {name} ({v['n_cubes']} cubes) | {_mean(v['gradcam'])} | "
        f"{_mean(v['centre_baseline'])} | {_fmt(v['chance'])} |"
        for name, v in p.items()
        if v["n_cubes"]
    ]
    return "\n".join(
        [
            "",
            "## Pointing game of the detection map (Grad-CAM, cubes cut from the scan)",
            "",
            "| cubes | Grad-CAM | a map pointing at the cube's centre | chance |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
        ]
    )


def _offcentre_report(o: dict) -> str:
    if not o.get("n_cubes"):
        return ""
    lo, hi = o["offset_mm"]
    return (
        f"\n## Off-centre recut\n\n{o['n_cubes']} cubes recut with their nodule {lo:.1f}–"
        f"{hi:.1f} mm from the cube's centre: mean probability {_fmt(o['probability_mean'])}, "
        f"{_fmt(o['share_at_threshold'])} at or above the threshold; the mask's centroid "
        f"{_fmt(o['localisation_error_mm_median'])} mm from the nodule's centre (median, "
        f"{o['n_outlined']} outlined).\n"
    )


def _per_nodule_report(p: dict) -> str:
    if not p:
        return ""
    lines = [
        f"## One finding per nodule (findings at probability >= {p['threshold']:.2f})",
        "",
        f"Sensitivity {_fmt(p['sensitivity_at_threshold'])}; findings per detected nodule "
        f"{_fmt(p['findings_per_detected_nodule'])} ({p['nodules_listed_more_than_once']} "
        "nodule(s) listed more than once).",
    ]
    if p.get("n_sized"):
        lines.append(
            f"Size of the best finding against the readers' diameter ({p['n_sized']} nodules): "
            f"median |error| {_fmt(p['size_error_mm_median_abs'])} mm "
            f"({_fmt(p['size_error_pct_median_abs'])} %), median error "
            f"{_fmt(p['size_error_mm_median'])} mm."
        )
    lines += ["", "| nodules | n | sensitivity |", "|---|---|---|"]
    for group in ("sensitivity_by_type", "sensitivity_by_size"):
        for name, v in (p.get(group) or {}).items():
            lines.append(f"| {name} | {v['n']} | {_fmt(v['sensitivity'])} |")
    return "\n".join(lines)
