"""Write docs/results.md from the pipeline's own metrics files: the DVC stage `results`
(`dvc repro` runs it after the stages that write them) or `python scripts/results_page.py`.
No figure on that page is typed by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _ci(section: dict, key: str) -> str:
    lo, hi = section.get("ci95", {}).get(key, (None, None))
    return "" if lo is None else f" ({lo:.3f}–{hi:.3f})"


def _with_ci(section: dict, key: str) -> str:
    value = section.get(key)
    return "n/a" if value is None else f"{value:.3f}{_ci(section, key)}"


def explanation_rows(cam: dict) -> list[str]:
    """The Grad-CAM checks of the explain stage, both methods side by side."""
    det = cam["detection"]
    methods = [m for m in ("gradcam", "gradcampp") if m in det]
    n_detected = det[methods[0]].get("n_detected")
    rows = [
        ("pointing game, detection map", "pointing_game"),
        (f"… on the {n_detected} nodules the network detects", "pointing_game_detected"),
        ("… with randomised weights", "pointing_game_random_weights"),
        ("chance level (dilated mask / cube)", "pointing_chance"),
        ("sanity: rank correlation trained vs random", "sanity_rank_correlation"),
    ]
    lines = [
        f"| {det['n_nodule_cubes']} nodule cubes of the test split | " + " | ".join(methods) + " |",
        "| --- |" + " --- |" * len(methods),
    ]
    for name, key in rows:
        lines.append(f"| {name} | " + " | ".join(_with_ci(det[m], key) for m in methods) + " |")
    mal = cam.get("malignancy", {})
    if all(m in mal for m in methods):
        lines.append(
            "| pointing game, malignancy map | "
            + " | ".join(_with_ci(mal[m], "pointing_game") for m in methods)
            + " |"
        )
    return lines


def realism_rows(realism: dict) -> list[str]:
    """Phantom statistics beside the real slab's, over all phantom scans and for the
    phantom of the real scan itself."""
    targets = realism["targets"]
    names = {
        "vessel_fraction": "vessel voxels in the core lung",
        "vessel_sections_per_cm2": "vessel cross-sections per cm² per slice",
        "parenchyma_hu_width": "parenchyma HU p10–p90 width",
        "highpass_noise_hu": "high-pass noise, HU",
    }
    lines = [
        "| statistic | real slab | phantom of the same scan | other phantom scans | within "
        f"±{targets['tolerance']:.0%} |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, name in names.items():
        a, p = targets["all"][key], (targets.get("paired") or {}).get(key)
        ok = "yes" if a["within_tolerance"] and (p is None or p["within_tolerance"]) else "no"
        paired = "n/a" if p is None else f"{p['phantom']:.3g}"
        lines.append(f"| {name} | {a['real']:.3g} | {paired} | {a['phantom']:.3g} | {ok} |")
    w = realism["wasserstein_hu"]
    lines.append(
        f"| lung HU Wasserstein distance to the real, HU | 0 | {w.get('paired', float('nan')):.1f}"
        f" | {w['all']:.1f} | |"
    )
    pop = realism.get("domain_classifier_population") or {}
    lines.append(
        "| domain classifier ROC-AUC (0.5: indistinguishable) | | "
        f"{realism['domain_classifier']['auc']:.3f} | "
        f"{pop.get('auc', float('nan')):.3f} | |"
    )
    return lines


def realism_setting_rows(realism: dict) -> list[str]:
    """Per drawn setting (kernel, background lung, reconstruction): the phantom scans that
    have it, their statistics as a ratio to the real slab's and the domain classifier."""
    per = realism.get("per_setting") or {}
    if not any(per.values()):
        return ["The phantom was written with the default look only (no per-setting figures)."]
    keys = {
        "vessel_fraction": "vessel voxels",
        "parenchyma_hu_width": "HU p10–p90 width",
        "highpass_noise_hu": "high-pass noise",
    }
    lines = [
        "| setting | scans | domain ROC-AUC | "
        + " | ".join(f"{v} / real" for v in keys.values())
        + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in keys) + " |",
    ]
    for name, values in per.items():
        for value, entry in values.items():
            auc = entry.get("domain_auc")
            ratios = [entry["targets"].get(k, {}).get("ratio") for k in keys]
            lines.append(
                f"| {name}: {value.replace('_', ' ')} | {entry['scans']} | "
                f"{'n/a (1 scan)' if auc is None else f'{auc:.3f}'} | "
                + " | ".join(_num(r, 2) for r in ratios)
                + " |"
            )
    return lines


def _num(value, digits: int = 3, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def _interval(ci) -> str:
    return "" if not ci else f" ({ci[0]:.3f}–{ci[1]:.3f})"


def findings_rows(cube: dict, froc: dict) -> list[str]:
    """Segmentation against the readers, and the findings of whole-scan detection."""
    seg = cube.get("segmentation_test") or {}
    per = froc.get("per_nodule") or {}
    off = froc.get("offcentre") or {}
    lines = ["| measure | value |", "| --- | --- |"]
    if seg.get("n_nodules"):
        lines += [
            f"| Dice with the readers' consensus ({seg['n_nodules']} test nodules, mean; cube "
            f"centred on the nodule: oracle localisation) | {_with_ci(seg, 'dice_mean')} |",
            "| ceiling: each reader against the other readers' consensus, same 1 mm cubes, "
            f"same Dice ({seg['n_with_readers']} nodules) | "
            f"{_num(seg['readers_vs_others_dice_mean'])} (network: "
            f"{_num(seg['dice_mean_same_nodules'])}) |",
            f"| median abs. volume error vs the consensus | "
            f"{_num(seg['volume_error_pct_median_abs'], 1, ' %')} |",
        ]
        if "size_error_vs_consensus_mm_median_abs" in seg:
            lo, hi = seg["size_error_vs_consensus_mm_ci95"]
            lines.append(
                "| median abs. diameter error vs the consensus mask measured by the same code "
                f"(all {seg['n_nodules']} nodules; {seg['n_not_outlined']} not outlined count "
                f"their whole diameter) | {_num(seg['size_error_vs_consensus_mm_median_abs'], 1)}"
                f" mm ({lo:.1f}–{hi:.1f}) |"
            )
    if per:
        lines += [
            f"| findings per detected nodule (probability ≥ {per['threshold']:.2f}) | "
            f"{_num(per['findings_per_detected_nodule'], 2)} |",
            f"| sensitivity at that threshold | {_num(per['sensitivity_at_threshold'])}"
            f"{_interval(per.get('sensitivity_at_threshold_ci95'))} |",
            f"| median abs. size error of the best finding vs the readers' diameter | "
            f"{_num(per.get('size_error_mm_median_abs'), 1, ' mm')} "
            f"({_num(per.get('size_error_pct_median_abs'), 1, ' %')}) |",
        ]
        for group in ("sensitivity_by_type", "sensitivity_by_size"):
            for name, v in (per.get(group) or {}).items():
                lines.append(
                    f"| sensitivity, {name} ({v['n']} nodules) | {_num(v['sensitivity'])}"
                    f"{_interval(v.get('ci95'))} |"
                )
    if off.get("n_cubes"):
        lines += [
            f"| nodules recut 8–14 mm off-centre ({off['n_cubes']} cubes): mean probability | "
            f"{_num(off['probability_mean'])} |",
            f"| … their mask centroid's distance from the nodule (median) | "
            f"{_num(off['localisation_error_mm_median'], 1, ' mm')} |",
        ]
    lines += dice_rows(froc.get("finding_dice") or {})
    for name, what in (("centred", "centred on the nodule"), ("offcentre", "recut off-centre")):
        v = (froc.get("pointing") or {}).get(name) or {}
        if v.get("n_cubes"):
            lines.append(
                f"| pointing game of the detection map, cubes {what} ({v['n_cubes']}) | "
                f"{_mean(v['gradcam'])} (a map pointing at the cube's centre: "
                f"{_mean(v['centre_baseline'])}) |"
            )
    return lines


def _mean(v: dict) -> str:
    """A mean with its 95 % interval, as ``froc_report`` writes them."""
    if not v or v.get("mean") is None:
        return "n/a"
    return f"{v['mean']:.3f}{_interval(v.get('ci95'))}"


def dice_rows(d: dict) -> list[str]:
    """Dice of the detected findings' masks with the readers' consensus."""
    if not d.get("n_nodules"):
        return []
    return [
        f"| Dice at the detected finding (its own mask and place; {d['detected']['n']} nodules "
        f"found at probability ≥ {d['threshold']:.2f}) | {_mean(d['detected'])} |",
        f"| … over all {d['n_nodules']} reference nodules, a missed one counting 0 | "
        f"{_mean(d['all_nodules_missed_as_0'])} |",
    ]


def crossval_rows(cv: dict, folds: list[dict]) -> list[str]:
    """The out-of-fold figures of the cross-validation pipeline, then one row per fold."""
    det, mal, scan = cv["cubes"]["detection"], cv["cubes"]["malignancy"], cv["detection"]
    cpm = _num(scan.get("cpm"))
    if scan.get("cpm_ci_low") is not None:
        cpm += f" ({scan['cpm_ci_low']:.3f}–{scan['cpm_ci_high']:.3f})"
    lines = [
        f"| out of fold: {cv['n_patients']} patients, {cv['folds_done']} of {cv['n_folds']} "
        "folds | value |",
        "| --- | --- |",
        f"| detection AUC ({det['n_cubes']} cubes) | {_with_ci(det, 'auc')} |",
        f"| recall at each fold's threshold | {_with_ci(det, 'recall')} |",
        f"| malignancy MAE ({mal['n_nodules']} nodule cubes) | {_with_ci(mal, 'mae')} |",
        f"| malignancy Pearson | {_with_ci(mal, 'pearson')} |",
        f"| whole-scan CPM ({scan['n_scans']} scans, {scan['n_nodules']} nodules) | {cpm} |",
    ]
    for name, b in (cv.get("baselines") or {}).items():
        lines.append(f"| malignancy MAE, {name.replace('_', ' ')} baseline | {_num(b['mae'])} |")
    lines += ["", "| fold | test patients | nodules | best epoch | AUC | MAE | CPM |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for f in folds:
        lines.append(
            f"| {f['fold']} | {f['test_patients']} | {f['test_nodules']} | {f['best_epoch']} | "
            f"{_num(f['auc'])} | {_num(f['mae'])} | {_num(f['cpm'])} |"
        )
    for key, v in (cv.get("fold_spread") or {}).items():
        lines.append(f"\nAcross the folds, {key}: mean {_num(v['mean'])}, sd {_num(v['sd'])}.")
    return lines


def spread_section(repo: Path) -> list[str]:
    """How far the figures move with the training seed and with the CPU's kernels, when
    ``bench/seed_spread.py`` has written them."""
    seeds_file, isa_file = repo / "reports/spread/seeds.json", repo / "reports/spread/avx2.json"
    if not seeds_file.is_file():
        return []
    seeds = json.loads(seeds_file.read_text())
    isa = json.loads(isa_file.read_text()) if isa_file.is_file() else {}
    test = seeds["per_seed"]["average"]
    bench = (seeds.get("benchmark") or {}).get("per_seed") or {}
    other = ((isa.get("per_seed") or {}).get("average") or {}).get("0")
    names = [str(k) for k in seeds["seeds"]]
    head = ["measure", *(f"seed {k}" for k in names), "spread (max − min)"]
    if other:
        head += ["seed 0, AVX2 kernels", "AVX2 − seed 0"]
    lines = [
        "## Spread: training seeds and CPU kernels",
        "",
        f"Trainings of the default configuration on the same cubes that differ only in "
        f"`train.seed` ({', '.join(names)}), and seed 0 trained and scored again with",
        "PyTorch's and oneDNN's CPU kernels held to AVX2 (what a machine without AVX-512",
        "computes): `python bench/seed_spread.py`, read from `reports/spread/seeds.json` and",
        "`reports/spread/avx2.json`. A difference between two models smaller than these",
        "spreads is not a difference.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
    ]
    rows = [
        ("test AUC (cubes)", {k: test[k]["auc"] for k in names}, (other or {}).get("auc")),
        ("test malignancy MAE", {k: test[k]["mae"] for k in names}, (other or {}).get("mae")),
        ("test CPM (slabs)", {k: test[k]["cpm"] for k in names}, (other or {}).get("cpm")),
    ]
    if bench:
        rows.append(("benchmark CPM", {k: bench[k]["cpm"] for k in names if k in bench}, None))
        rows.append(
            (
                "benchmark sensitivity at the threshold",
                {k: bench[k]["sensitivity_at_threshold"] for k in names if k in bench},
                None,
            )
        )
    for label, values, avx2 in rows:
        shown = [v for v in values.values() if v is not None]
        cells = [_num(values.get(k)) for k in names]
        cells.append(_num(max(shown) - min(shown)) if len(shown) > 1 else "n/a")
        if other:
            base = values.get("0")
            diff = "n/a" if avx2 is None or base is None else f"{avx2 - base:+.3f}"
            cells += ["not measured" if avx2 is None else _num(avx2), diff]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if bench:
        lines += [
            "",
            "Benchmark CPMs with their 95 % CIs (patients resampled): "
            + "; ".join(
                f"seed {k} {_num(b['cpm'])}{_interval(b.get('cpm_ci95'))}" for k, b in bench.items()
            )
            + ".",
        ]
    return [*lines, ""]


def crossval_section(repo: Path) -> list[str]:
    """The cross-validation section, when its metrics are committed."""
    path = repo / "reports/cv/summary/metrics.json"
    if not path.is_file():
        return []
    import csv

    with open(repo / "reports/cv/summary/folds.csv") as fh:
        folds = [
            {
                k: (None if v == "" else float(v) if k in ("auc", "mae", "cpm") else v)
                for k, v in r.items()
            }
            for r in csv.DictReader(fh)
        ]
    return [
        "## Cross-validation",
        "",
        "The cross-validation pipeline (`dvc repro crossval/dvc.yaml`, read from",
        "`reports/cv/summary/metrics.json` and `folds.csv`): every patient scored by the one",
        "fold model that never trained on it; the cross-validation guide says how. It is a",
        "pipeline of its own: `dvc repro` does not rerun it, so these are the figures of its",
        "last committed run (`crossval/dvc.lock`), and `dvc status crossval/dvc.yaml` says",
        "whether that run matches the current code and settings.",
        "",
        *crossval_rows(json.loads(path.read_text()), folds),
        "",
        "The pooled CPM keeps each fold model's own probabilities, as LUNA16 pools its folds;",
        "they are not on one scale and are not recalibrated (the cross-validation report says",
        "why), so the pooled CPM can fall below the folds' own.",
        "",
    ]


def baseline_rows(cube: dict) -> list[tuple[str, str]]:
    """The malignancy baselines beside the network's MAE, with the paired CI of the
    difference (network − baseline; below 0: the network is more accurate)."""
    names = {
        "diameter_only_model_size": "diameter-only baseline fed the network's own size",
        "diameter_only": "diameter-only baseline fed the readers' size (an oracle)",
        "semantic_oracle": "the readers' other ratings (an oracle)",
    }
    base, versus = cube.get("baselines_test") or {}, cube.get("cnn_minus_baseline_test") or {}
    rows = []
    for key, name in names.items():
        if key in base:
            d = versus.get(key) or {}
            diff = ""
            if "mae_diff" in d:
                lo, hi = d["mae_diff_ci"]
                diff = f"; network − baseline {d['mae_diff']:+.3f} ({lo:+.3f} to {hi:+.3f})"
            rows.append((f"… malignancy MAE, {name}", f"{base[key]['mae']:.3f}{diff}"))
    return rows


def choices_rows(cube: dict, froc: dict) -> list[str]:
    """Which split made each choice behind the figures (the test split makes none)."""
    threshold = cube["threshold"]
    detect_threshold = (froc.get("per_nodule") or {}).get("threshold")
    return [
        "| choice | made on |",
        "| --- | --- |",
        f"| the weights evaluated ({cube.get('selected') or 'epoch ' + str(cube['best_epoch'])}; "
        "`train.selection`) | a fixed rule when averaging (the last `train.average_last` "
        "epochs), else the val split (the best validation epoch) |",
        f"| the cube detection threshold ({threshold['value']:.3f}) | {threshold['rule']} |",
        "| promotion (candidate vs champion, AUC − MAE/4) | val split |",
        "| a fold ensemble's cube threshold | the val split, none of whose patients any "
        "member trained or chose an epoch on (`lungcad evaluate` refuses otherwise) |",
        f"| the findings' threshold ({_num(detect_threshold, 2)}, `detect.threshold`) | a "
        "setting in `params.yaml`, not fitted |",
        f"| every figure on this page | the {cube['split']} split: it chooses nothing |",
    ]


def _model_md5(lock: Path, stage: str) -> str | None:
    """The md5 DVC recorded for ``models/best.pt`` as a dependency of ``stage``."""
    if not lock.is_file():
        return None
    deps = (yaml.safe_load(lock.read_text()).get("stages", {}).get(stage) or {}).get("deps", [])
    return next((d.get("md5") for d in deps if d.get("path") == "models/best.pt"), None)


def benchmark_section(repo: Path) -> list[str]:
    """The sealed benchmark's score of the pipeline's model, when it has been run; a score
    of another model than the pipeline's current one says so."""
    path = repo / "reports/benchmark/metrics.json"
    if not path.is_file():
        return []
    scored = _model_md5(repo / "benchmark/dvc.lock", "score")
    current = _model_md5(repo / "dvc.lock", "evaluate")
    stale = [
        "",
        "**This score is of an earlier model than the pipeline's current `models/best.pt`**",
        "(DVC records another checksum for the model the benchmark scored): rerun",
        "`dvc repro benchmark/dvc.yaml` to score the current one.",
    ]
    m = json.loads(path.read_text())
    b, f, per = m["benchmark"], m["froc"], m.get("per_nodule") or {}
    cpm = _num(f.get("cpm"))
    if f.get("cpm_ci_low") is not None:
        cpm += f" ({f['cpm_ci_low']:.3f}–{f['cpm_ci_high']:.3f})"
    lines = [
        "## The sealed benchmark",
        "",
        "The benchmark pipeline (`dvc repro benchmark/dvc.yaml`, read from",
        "`reports/benchmark/metrics.json`; the benchmark guide says how it is built and",
        f"sealed): {b['scans']} whole-length scans of {b['patients']} patients the dataset does",
        f"not hold, {b['scans_without_reference_nodule']} of them without a reference nodule.",
        f"Model `{m['model']}`; 95 % CIs resample patients.",
        *(stale if scored and current and scored != current else []),
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| CPM (LUNA16 FROC, {f['n_scans']} scans, {f['n_nodules']} nodules) | {cpm} |",
        f"| scans that failed (their nodules missed) | {m['scans_failed']} |",
    ]
    if per:
        lines += [
            f"| sensitivity at probability ≥ {per['threshold']:.2f} | "
            f"{_num(per.get('sensitivity_at_threshold'))}"
            f"{_interval(per.get('sensitivity_at_threshold_ci95'))} |",
            "| findings per detected nodule | "
            f"{_num(per.get('findings_per_detected_nodule'), 2)} |",
            f"| median abs. size error of the best finding vs the readers' diameter | "
            f"{_num(per.get('size_error_mm_median_abs'), 1, ' mm')} |",
        ]
    lines += dice_rows(m.get("finding_dice") or {})
    mal = m.get("malignancy_detected") or {}
    if "model" in mal:
        lines.append(
            f"| malignancy MAE on the {mal['n_nodules']} detected nodules | "
            f"{_num(mal['model']['mae'])} |"
        )
        for name, v in (mal.get("baselines") or {}).items():
            lo, hi = mal["model_minus_baseline_mae_ci95"][name]
            lines.append(
                f"| … baseline {name.replace('_', ' ')}: MAE (model − baseline, CI) | "
                f"{_num(v['mae'])} ({lo:+.3f} to {hi:+.3f}) |"
            )
    lines += [
        f"| seconds per scan ({m['workers']} workers) | {_num(m.get('seconds_per_scan'), 1)} |",
        f"| peak memory of the run | {m['peak_rss_mb']:.0f} MB |",
        "",
    ]
    return lines


def results_markdown(repo: Path = REPO) -> str:
    cube = json.loads((repo / "reports/metrics.json").read_text())
    froc = json.loads((repo / "reports/detection/metrics.json").read_text())
    cam = json.loads((repo / "reports/explain/metrics.json").read_text())
    realism = json.loads((repo / "reports/realism/metrics.json").read_text())
    det, mal = cube["detection"], cube["malignancy"]
    gradcam = cam["detection"]["gradcam"]
    rows = [
        ("detection AUC (test cubes)", f"{det['auc']:.3f}{_ci(det, 'auc')}"),
        ("detection recall", f"{det['recall']:.3f}{_ci(det, 'recall')}"),
        ("malignancy MAE (1–5 scale)", f"{mal['mae']:.3f}{_ci(mal, 'mae')}"),
        ("malignancy Pearson", f"{mal['pearson']:.3f}{_ci(mal, 'pearson')}"),
        *baseline_rows(cube),
        (
            f"CPM (LUNA16 FROC) on the test split's {froc['n_scans']} slab scans, "
            f"{froc['n_nodules']} nodules (slabs around nodules, not whole chests: the "
            "benchmark below scores whole scans)",
            f"{froc['cpm']:.3f} ({froc['cpm_ci_low']:.3f}–{froc['cpm_ci_high']:.3f})",
        ),
        (
            "Grad-CAM pointing game (every cube is centred on its nodule, so a map that always "
            "points at the centre would score about 1)",
            f"{gradcam['pointing_game']:.3f}",
        ),
    ]
    moved = (froc.get("pointing") or {}).get("offcentre") or {}
    if moved.get("n_cubes"):
        rows.append(
            (
                f"Grad-CAM pointing game on {moved['n_cubes']} cubes recut from the test scans "
                "with the nodule 8–14 mm off the centre (beside: a map that always points at "
                "the centre)",
                f"{_mean(moved['gradcam'])} (centre: {_mean(moved['centre_baseline'])})",
            )
        )
    lines = [
        "# Results",
        "",
        "The figures of the pipeline run, read from `reports/metrics.json`,",
        "`reports/detection/metrics.json`, `reports/explain/metrics.json` and",
        "`reports/realism/metrics.json` (95 % patient-bootstrap CIs in brackets) by the",
        "`results` stage of `dvc repro`, so a run on another machine rewrites this page with",
        "its own figures. They are measured",
        "on the embedded LIDC-grounded phantom's test split, not on real LIDC-IDRI pixels;",
        "`dvc metrics show --md` prints every metric of the run.",
        "",
        f"Model: {cube.get('selected') or 'epoch ' + str(cube['best_epoch'])} of the `train` "
        f"stage (`train.selection`); test split "
        f"{cube['split']!r}.",
        "",
        "| measure | value |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        "## What chose what",
        "",
        "A split that chose something is not a test of it. The choices behind these figures:",
        "",
        *choices_rows(cube, froc),
        "",
        "The default configuration's design (the attribute head, weight averaging, test-time",
        "flips) was compared on this same test split when it was set, so for those choices",
        "its figures are optimistic; the test split is small (CIs above).",
        "",
        "## Findings",
        "",
        "The segmentation head against the readers (`reports/metrics.json`,",
        "`segmentation_test`) and the merged findings of whole-scan detection",
        "(`reports/detection/metrics.json`: `per_nodule`, `offcentre`, `finding_dice`,",
        "`pointing`); the detection",
        "guide says how each is measured.",
        "",
        *findings_rows(cube, froc),
        "",
        *benchmark_section(repo),
        *spread_section(repo),
        *crossval_section(repo),
        "## Explanations",
        "",
        "The explain stage's checks of its 3D Grad-CAM maps (`reports/explain/metrics.json`;",
        "the explanations guide says what each means).",
        "",
        *explanation_rows(cam),
        "",
        "## Realism of the phantom",
        "",
        "The realism stage's statistics of the phantom's lungs beside the real LIDC slab",
        "(`reports/realism/metrics.json`; the phantom guide says how each is measured).",
        "",
        *realism_rows(realism),
        "",
        "Per drawn setting (`per_setting`: the phantom scans measured that were drawn with it;",
        "`phantom.randomise` in `params.yaml`):",
        "",
        *realism_setting_rows(realism),
        "",
        "The training, detection and explanation guides say how each figure is measured and",
        "what it means; BENCHMARKS.md gives the timings with their commands and machines.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out = REPO / "docs" / "results.md"
    out.write_text(results_markdown())
    print(f"wrote {out}", file=sys.stderr)
