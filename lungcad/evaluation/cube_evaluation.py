"""Evaluate a trained model on the test split (and val): metrics, CIs, baselines, plots, report.

The detection threshold is chosen on the validation split by Youden's J (max sensitivity +
specificity - 1; the midpoint of the interval of equally good thresholds) and then applied
unchanged to test. 95% confidence intervals come from a
bootstrap that resamples patients, not cubes. Outputs: ``metrics.json`` (DVC metrics),
``plots/*.csv`` (DVC plots), ``figures/*.png``, ``predictions.csv`` and ``report.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from lungcad.config import EvaluateConfig
from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.dataset import load_cube_data
from lungcad.core.figures import write_gallery
from lungcad.core.metrics import (
    DETECTION_CI,
    MALIGNANCY_CI,
    detection_metrics,
    malignancy_metrics,
    paired_difference,
    spread_calibration,
    with_ci,
    youden_threshold,
)
from lungcad.core.model.attributes import ATTRIBUTES
from lungcad.core.model.checkpoint import CheckpointMissingError, load_checkpoint
from lungcad.core.model.ensemble import is_ensemble, unseen_check
from lungcad.core.model.loading import load_model, resolve_amp
from lungcad.core.model.predict import predict_rows
from lungcad.core.outputs import write_text_atomic
from lungcad.errors import LungcadError
from lungcad.evaluation.baselines import (
    REFERENCE_REAL_LIDC,
    diameter_only_model,
    fit_predict_baselines,
)
from lungcad.evaluation.plots import write_plots
from lungcad.evaluation.segmentation import (
    nodule_segmentation,
    readers_dice,
    segmentation_summary,
)


def split_metrics(pred: pd.DataFrame, threshold: float, n_boot: int, seed: int) -> dict[str, Any]:
    """Detection metrics on all cubes and malignancy metrics on nodule cubes, with CIs."""
    y, p = pred["label"].to_numpy(), pred["nodule_prob"].to_numpy()
    det = detection_metrics(y, p, threshold)
    nod = pred[pred["label"] == 1]
    t, m = nod["malignancy_mean"].to_numpy(float), nod["malignancy_pred"].to_numpy(float)
    mal = malignancy_metrics(t, m)
    if n_boot > 0:
        det = with_ci(
            det,
            DETECTION_CI,
            pred["patient_id"].to_numpy(),
            lambda i: detection_metrics(y[i], p[i], threshold),
            n_boot,
            seed,
        )
        mal = with_ci(
            mal,
            MALIGNANCY_CI,
            nod["patient_id"].to_numpy(),
            lambda i: malignancy_metrics(t[i], m[i]),
            n_boot,
            seed,
        )
    mal["n_nodules"] = int(len(nod))
    det["n_cubes"] = int(len(pred))
    return {"detection": det, "malignancy": mal}


def attribute_metrics(test: pd.DataFrame, train_nodules: pd.DataFrame) -> dict[str, Any]:
    """Per attribute (when the model predicts them): MAE and Spearman of the predictions on
    the test nodules, beside the MAE of predicting the train nodules' mean; {} otherwise."""
    nodules = test[test["label"] == 1]
    out: dict[str, Any] = {}
    for a in ATTRIBUTES:
        if f"pred_{a.name}" not in nodules:
            continue
        keep = nodules[a.column].notna()
        truth = nodules.loc[keep, a.column].to_numpy(float)
        pred = nodules.loc[keep, f"pred_{a.name}"].to_numpy(float)
        mean = float(train_nodules[a.column].mean())
        varied = len(truth) > 2 and truth.std() > 0 and pred.std() > 0
        mae, mean_mae = float(np.abs(pred - truth).mean()), float(np.abs(mean - truth).mean())
        out[a.name] = {
            "mae": mae,
            "spearman": float(stats.spearmanr(truth, pred)[0]) if varied else float("nan"),
            "train_mean_mae": mean_mae,
            "beats_train_mean": bool(mae < mean_mae),
            "n": int(len(truth)),
        }
    if out:
        out["n_beating_train_mean"] = sum(v["beats_train_mean"] for v in out.values())
    return out


def spread_metrics(test: pd.DataFrame, train_nodules: pd.DataFrame) -> dict[str, Any]:
    """Calibration of the predicted readers' spread (``pred_malignancy_sd``, the spread
    head) against the readers' malignancy sd on the test nodules, beside the sd MAE of
    predicting the train nodules' mean readers' sd; {} without the head."""
    if "pred_malignancy_sd" not in test:
        return {}
    nodules = test[(test["label"] == 1) & test["malignancy_std"].notna()]
    if nodules.empty:
        return {}
    reader_sd = nodules["malignancy_std"].to_numpy(float)
    out = spread_calibration(
        nodules["malignancy_mean"].to_numpy(float),
        reader_sd,
        nodules["malignancy_pred"].to_numpy(float),
        nodules["pred_malignancy_sd"].to_numpy(float),
    )
    out["sd_mae_train_mean"] = float(
        np.abs(float(train_nodules["malignancy_std"].mean()) - reader_sd).mean()
    )
    return out


def _selection(state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's best validation epoch and which model it holds (``selected``:
    "epoch 12" or "mean of epochs 18-25"; older checkpoints hold their best epoch)."""
    best_epoch = state.get("best_epoch")  # an ensemble has none of its own
    return {"best_epoch": best_epoch, "selected": state.get("selected", f"epoch {best_epoch}")}


class ThresholdPatientsError(LungcadError, ValueError):
    """An ensemble whose members saw the patients its threshold would be fitted on."""


def threshold_patients_check(checkpoint: Path, val: pd.DataFrame) -> str:
    """Who the threshold is fitted on. An ensemble that records what its members saw (a
    fold ensemble) must not have seen any val patient: its threshold comes from patients
    none of its members trained on or chose an epoch on.

    Raises:
        ThresholdPatientsError: some member saw val patients, naming how many.
    """
    state = load_checkpoint(checkpoint)
    n = int(val["patient_id"].nunique())
    if not is_ensemble(state):
        return f"the val split's {n} patients (the model chose its weights on them)"
    seen = unseen_check(state, val["patient_id"])
    if seen is None:
        return f"the val split's {n} patients (the ensemble does not record what its members saw)"
    if seen[0]:
        raise ThresholdPatientsError(
            f"{checkpoint}: its members trained on (or chose their epoch on) {seen[0]} of the val "
            f"split's {seen[1]} patients, so a threshold fitted there would be optimistic; "
            "build the ensemble from folds that hold the split's val and test patients out "
            "(cv.holdout: default_split), or evaluate it with a splits file whose val "
            "patients no member saw"
        )
    return f"the val split's {n} patients, none of whom any member saw"


def evaluate_model(
    dataset_dir: str | Path,
    splits_file: str | Path,
    checkpoint: str | Path,
    out_dir: str | Path,
    config: EvaluateConfig = EvaluateConfig(),
) -> dict[str, Any]:
    """Write the evaluation of ``checkpoint`` to ``out_dir``; returns the metrics document."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise CheckpointMissingError(
            f"{checkpoint} does not exist: run `dvc repro train` (or `lungcad train`) first"
        )
    data = load_cube_data(dataset_dir, splits_file)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, train_config = load_model(checkpoint, device)
    threshold_patients = threshold_patients_check(checkpoint, data.subset("val"))
    amp_dtype = resolve_amp(train_config.amp, device)
    preds = {
        s: predict_rows(
            model,
            data.cubes,
            data.subset(s),
            train_config.window_hu,
            device,
            train_config.eval_batch_size,
            amp_dtype,
        )
        for s in ("val", "test")
    }
    threshold = youden_threshold(
        preds["val"]["label"].to_numpy(), preds["val"]["nodule_prob"].to_numpy()
    )
    test = split_metrics(preds["test"], threshold, config.bootstrap, config.seed)
    val = split_metrics(preds["val"], threshold, 0, config.seed)

    nodules = {s: data.subset(s)[data.subset(s)["label"] == 1] for s in ("train", "test")}
    test_nod = preds["test"][preds["test"]["label"] == 1]
    fitted = len(nodules["train"]) >= 5 and len(test_nod)
    # Each baseline's predictions on the test nodules, scored together below.
    baseline_preds = (
        fit_predict_baselines(nodules["train"], test_nod, config.seed) if fitted else {}
    )

    segmentation: dict[str, Any] = {}
    if model.segments:
        test_rows = data.subset("test")
        spacing_mm = float(data.cut_settings.get("preprocess", {}).get("spacing_mm", 1.0))
        table = nodule_segmentation(
            model,
            data.cubes,
            dataset_dir,
            test_rows[test_rows["label"] == 1],
            train_config.window_hu,
            device,
            spacing_mm,
            train_config.eval_batch_size,
        )
        readers = (
            readers_dice(table["nodule_id"], LidcDatabase(), int(data.cubes.shape[-1]), spacing_mm)
            if len(table)
            else {}
        )
        segmentation = segmentation_summary(table, readers, config.bootstrap, config.seed)
        table.to_csv(out_dir / "segmentation.csv", index=False)
        if fitted and len(table):
            # The size rule fed the network's own measured diameter: what the network adds
            # beyond its size (the readers' diameter is an oracle no model has).
            measured = test_nod["nodule_id"].map(table.groupby("nodule_id")["diameter_mm"].first())
            size = measured.fillna(float(nodules["train"]["diameter_mm"].mean())).to_numpy(float)
            rule = diameter_only_model(nodules["train"], config.seed)
            baseline_preds["diameter_only_model_size"] = np.clip(
                rule.predict(size[:, None]), 1.0, 5.0
            )

    baselines, versus = {}, {}
    truth = test_nod["malignancy_mean"].to_numpy(float)
    for name, pred in baseline_preds.items():
        baselines[name] = malignancy_metrics(truth, pred)
        versus[name] = paired_difference(
            truth,
            test_nod["malignancy_pred"].to_numpy(float),
            pred,
            test_nod["patient_id"].to_numpy(),
            config.bootstrap,
            config.seed,
        )

    doc = {
        "split": "test",
        "threshold": {
            "value": threshold,
            "rule": "Youden's J on the val split (midpoint of the optimal interval)",
            "patients": threshold_patients,
        },
        "detection": test["detection"],
        "malignancy": test["malignancy"],
        "val": val,
        "baselines_test": baselines,
        "cnn_minus_baseline_test": versus,
        "attributes_test": attribute_metrics(preds["test"], nodules["train"]),
        "spread_test": spread_metrics(preds["test"], nodules["train"]),
        "segmentation_test": segmentation,
        "reference_real_lidc": REFERENCE_REAL_LIDC,
        "checkpoint": str(checkpoint),
        **_selection(load_checkpoint(checkpoint)),
    }
    all_preds = pd.concat([p.assign(split=s) for s, p in preds.items()])
    cols = [
        "split",
        "patient_id",
        "nodule_id",
        "kind",
        "label",
        "nodule_prob",
        "malignancy_mean",
        "malignancy_pred",
        "cube_index",
    ]
    cols += [c for c in all_preds.columns if c.startswith("pred_")]  # the optional heads
    all_preds[cols].to_csv(out_dir / "predictions.csv", index=False)
    figures = write_plots(preds["test"], threshold, out_dir)
    gallery = write_gallery(
        preds["test"],
        data.cubes,
        dataset_dir,
        model,
        train_config.window_hu,
        threshold,
        out_dir / "figures" / "gradcam_gallery.png",
    )
    (out_dir / "report.md").write_text(render_report(doc, figures, gallery))
    write_text_atomic(out_dir / "metrics.json", json.dumps(doc, indent=2), "the test metrics")
    return doc


def _fmt(value: Any) -> str:
    return (
        "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"
    )


def _ci(section: dict, key: str) -> str:
    lo_hi = section.get("ci95", {}).get(key)
    return f"[{_fmt(lo_hi[0])}, {_fmt(lo_hi[1])}]" if lo_hi else ""


def render_report(doc: dict[str, Any], figures: list[Path], gallery: Path | None = None) -> str:
    det, mal, ref = doc["detection"], doc["malignancy"], doc["reference_real_lidc"]
    lines = [
        "# lungcad evaluation report",
        "",
        f"Checkpoint `{doc['checkpoint']}` ({doc.get('selected', doc['best_epoch'])}), test split: "
        f"{det['n_cubes']} cubes, {mal['n_nodules']} nodules. Detection threshold "
        f"{doc['threshold']['value']:.3f} ({doc['threshold']['rule']}). "
        "95% CIs: patient bootstrap.",
        "",
        "*Research use only; not a diagnostic device. Phantom figures are not comparable to "
        "real-LIDC figures.*",
        "",
        "## Detection (nodule vs non-nodule cube)",
        "",
        "| metric | test | 95% CI | val | reference (real LIDC) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for k in DETECTION_CI:
        lines.append(
            f"| {k} | {_fmt(det[k])} | {_ci(det, k)} | {_fmt(doc['val']['detection'][k])} | "
            f"{_fmt(ref['detection'].get(k))} |"
        )
    lines += [
        "",
        f"Confusion matrix (test): TP {det['tp']}, FP {det['fp']}, TN {det['tn']}, FN {det['fn']}.",
        "",
        "## Malignancy (mean reader rating, 1-5, nodule cubes)",
        "",
        "Baselines: diameter only, fed the network's own measured diameter (what the network",
        "adds beyond its size); the same fed the readers' diameter, and the semantic oracle",
        "(the readers' other ratings): oracles no model has.",
        "",
        "| metric | CNN test | 95% CI | diameter only (network's size) | diameter only (readers' "
        "size, oracle) | semantic oracle | reference (real LIDC) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = doc["baselines_test"]
    for k in MALIGNANCY_CI:
        lines.append(
            f"| {k} | {_fmt(mal[k])} | {_ci(mal, k)} | "
            f"{_fmt(base.get('diameter_only_model_size', {}).get(k))} | "
            f"{_fmt(base.get('diameter_only', {}).get(k))} | "
            f"{_fmt(base.get('semantic_oracle', {}).get(k))} | {_fmt(ref['malignancy'].get(k))} |"
        )
    versus = doc.get("cnn_minus_baseline_test", {})
    if versus:
        lines += [
            "",
            "CNN minus each baseline on the same test nodules (paired patient bootstrap, 95% CI; "
            "an MAE difference whose CI lies below 0 means the CNN is more accurate):",
            "",
            "| baseline | MAE diff | 95% CI | RMSE diff | 95% CI | Pearson diff | 95% CI |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, d in versus.items():
            cells = [
                f"{_fmt(d[f'{k}_diff'])} | [{_fmt(d[f'{k}_diff_ci'][0])}, "
                f"{_fmt(d[f'{k}_diff_ci'][1])}]"
                for k in ("mae", "rmse", "pearson")
            ]
            lines.append(f"| {name.replace('_', ' ')} | " + " | ".join(cells) + " |")
    attrs = {k: v for k, v in doc.get("attributes_test", {}).items() if isinstance(v, dict)}
    if attrs:
        lines += [
            "",
            "## Semantic attributes (test nodules, each on its LIDC scale)",
            "",
            f"The attribute head beats predicting the train nodules' mean for "
            f"{doc['attributes_test']['n_beating_train_mean']} of {len(attrs)} attributes.",
            "",
            "| attribute | MAE | train-mean MAE | Spearman | nodules |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, v in attrs.items():
            lines.append(
                f"| {name} | {_fmt(v['mae'])} | {_fmt(v['train_mean_mae'])} | "
                f"{_fmt(v['spearman'])} | {v['n']} |"
            )
    seg = doc.get("segmentation_test") or {}
    if seg.get("n_nodules"):
        lines += [
            "",
            "## Segmentation (test nodule cubes, against the readers' consensus)",
            "",
            f"Dice {_fmt(seg['dice_mean'])} (mean; 95% CI {_ci(seg, 'dice_mean')}; median "
            f"{_fmt(seg['dice_median'])}) over {seg['n_nodules']} nodules, each cube centred "
            "on its nodule (oracle localisation); the ceiling, each reader against the other "
            "readers' "
            f"consensus on the same cubes, on {seg['n_with_readers']} of them: "
            f"{_fmt(seg['readers_vs_others_dice_mean'])} (the network on the same nodules: "
            f"{_fmt(seg['dice_mean_same_nodules'])}). Of the {seg['n_outlined']} nodules "
            f"outlined, median |volume error| {_fmt(seg['volume_error_pct_median_abs'])} %, "
            f"median |size error| {_fmt(seg['size_error_mm_median_abs'])} mm "
            f"({_fmt(seg['size_error_pct_median_abs'])} %) against the readers' diameter.",
        ]
    spread = doc.get("spread_test") or {}
    if spread:
        lines += [
            "",
            "## Readers' spread (test nodules)",
            "",
            "The malignancy head predicts a Gaussian over one reader's rating: its mean above "
            f"and its sd. Mean predicted sd {_fmt(spread['mean_pred_sd'])}, mean readers' sd "
            f"{_fmt(spread['mean_reader_sd'])}; Spearman of the two "
            f"{_fmt(spread['spearman_pred_vs_reader_sd'])}; sd MAE {_fmt(spread['sd_mae'])} "
            f"(predicting the train nodules' mean sd: {_fmt(spread['sd_mae_train_mean'])}). "
            f"Mean squared z-score {_fmt(spread['mean_z2'])} (1 if calibrated; above 1: the "
            "predicted sd is too small for how far the readers' ratings lie from the "
            f"predicted mean); NLL of the readers' ratings {_fmt(spread['nll'])}.",
            "",
            "| predicted-sd bin | mean predicted sd | observed RMS spread | mean readers' sd "
            "| nodules |",
            "| --- | --- | --- | --- | --- |",
        ]
        for i, row in enumerate(spread["reliability"]):
            lines.append(
                f"| {i + 1} | {_fmt(row['pred_sd'])} | {_fmt(row['observed_rms'])} | "
                f"{_fmt(row['reader_sd'])} | {row['n']} |"
            )
        lines += [
            "",
            "Observed RMS spread: the root mean squared distance of the readers' ratings from "
            "the predicted mean, what the predicted sd estimates.",
        ]
    lines += [
        "",
        "`binary_auc`: mean rating <= 2 vs >= 4, nodules in between excluded "
        f"({mal.get('n_binary', 0)} test nodules kept). The semantic oracle is gradient boosting "
        "on "
        "the readers' own ratings of the other eight characteristics plus diameter, fit on the "
        "train split: an upper reference for what image-free reader descriptions explain.",
        "",
        "## Figures",
        "",
    ]
    lines += [f"![{f.stem}](figures/{f.name})" for f in figures]
    if gallery is not None:
        lines += [
            "",
            "## Where the network looked (Grad-CAM gallery)",
            "",
            "Test cubes: true positives, false positives and false negatives at the threshold "
            "above (most confident first), then the nodules rated most and least malignant. "
            "Left: the axial CT through the cube centre, the readers' consensus outlined in "
            "green. Then the Grad-CAM map of the detection logit (layer `backbone.layer3`, "
            "red highest, drawn from 20% of its maximum) over the axial, coronal and sagittal "
            "slices; the white cross marks the map's maximum. A map on the nodule means the "
            "score rests on the nodule; a map elsewhere says what else drove it. How often the "
            "maximum falls on the nodule, and whether the maps survive randomising the "
            "weights, is measured in `reports/explain/metrics.json` (`dvc repro explain`).",
            "",
            f"![Grad-CAM gallery](figures/{gallery.name})",
        ]
    return "\n".join(lines) + "\n"
