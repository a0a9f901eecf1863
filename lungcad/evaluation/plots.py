"""Evaluation plots: DVC plot data (CSV) and the same curves as PNG figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from lungcad.core.metrics import safe_auc


def write_plots(pred: pd.DataFrame, threshold: float, out_dir: Path) -> list[Path]:
    """Write ROC, PR, confusion, malignancy scatter and calibration plots of one split.

    CSVs go to ``out_dir/plots`` (declared as DVC plots), PNGs to ``out_dir/figures``.
    Returns the PNG paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots, figs = out_dir / "plots", out_dir / "figures"
    plots.mkdir(parents=True, exist_ok=True)
    figs.mkdir(parents=True, exist_ok=True)
    y, p = pred["label"].to_numpy().astype(int), pred["nodule_prob"].to_numpy()
    decision = (p >= threshold).astype(int)
    nod = pred[pred["label"] == 1]
    out: list[Path] = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(figs / f"{name}.png", dpi=100)
        plt.close(fig)
        out.append(figs / f"{name}.png")

    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, p)
        pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(plots / "roc.csv", index=False)
        precision, recall, _ = precision_recall_curve(y, p)
        pd.DataFrame({"recall": recall, "precision": precision}).to_csv(
            plots / "pr.csv", index=False
        )
        fig, ax = plt.subplots(1, 2, figsize=(9, 4))
        ax[0].plot(fpr, tpr, lw=2, label=f"AUC {safe_auc(y, p):.3f}")
        ax[0].plot([0, 1], [0, 1], "k--", lw=0.8)
        ax[0].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
        ax[0].legend(loc="lower right")
        ax[1].plot(recall, precision, lw=2)
        ax[1].set(xlabel="recall", ylabel="precision", title="precision-recall (test)")
        save(fig, "roc_pr")
        frac_pos, mean_pred = calibration_curve(y, p, n_bins=8, strategy="quantile")
        pd.DataFrame({"mean_predicted": mean_pred, "fraction_positive": frac_pos}).to_csv(
            plots / "calibration.csv", index=False
        )
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot(mean_pred, frac_pos, "o-", label="model")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect")
        ax.set(
            xlabel="mean predicted probability",
            ylabel="fraction of nodules",
            title="calibration (test)",
        )
        ax.legend()
        save(fig, "calibration")

    pd.DataFrame({"actual": y, "predicted": decision}).to_csv(plots / "confusion.csv", index=False)
    cm = np.zeros((2, 2), dtype=int)
    np.add.at(cm, (y, decision), 1)
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(
            j,
            i,
            str(v),
            ha="center",
            va="center",
            fontsize=14,
            color="white" if v > cm.max() / 2 else "black",
        )
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["non-nodule", "nodule"],
        yticklabels=["non-nodule", "nodule"],
        xlabel="predicted",
        ylabel="actual",
        title=f"confusion (threshold {threshold:.2f})",
    )
    save(fig, "confusion")

    if len(nod):
        pd.DataFrame(
            {
                "true_malignancy": nod["malignancy_mean"],
                "predicted_malignancy": nod["malignancy_pred"],
            }
        ).to_csv(plots / "malignancy.csv", index=False)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.scatter(nod["malignancy_mean"], nod["malignancy_pred"], s=18, alpha=0.7)
        ax.plot([1, 5], [1, 5], "k--", lw=0.8)
        ax.set(
            xlim=(0.8, 5.2),
            ylim=(0.8, 5.2),
            xlabel="mean reader malignancy",
            ylabel="predicted malignancy",
            title="malignancy (test nodules)",
        )
        save(fig, "malignancy")
    if len(nod) and "pred_malignancy_sd" in nod and "malignancy_std" in nod:
        save(spread_figure(nod, plt), "malignancy_spread")
    return out


def spread_figure(nod: pd.DataFrame, plt):
    """Predicted readers' sd against the readers' sd (left) and against the observed spread
    of the readers' ratings around the predicted mean (right), per test nodule."""
    pred_sd = nod["pred_malignancy_sd"].to_numpy(float)
    reader_sd = nod["malignancy_std"].to_numpy(float)
    observed = np.sqrt(reader_sd**2 + (nod["malignancy_mean"] - nod["malignancy_pred"]) ** 2)
    top = max(1.5, float(np.nanmax([pred_sd.max(), observed.max()])) * 1.05)
    fig, ax = plt.subplots(1, 2, figsize=(9, 4))
    for a, y, label in (
        (ax[0], reader_sd, "readers' sd (ddof 0)"),
        (ax[1], observed, "readers' RMS distance from the predicted mean"),
    ):
        a.scatter(pred_sd, y, s=18, alpha=0.7)
        a.plot([0, top], [0, top], "k--", lw=0.8)
        a.set(xlim=(0, top), ylim=(0, top), xlabel="predicted sd", ylabel=label)
    ax[0].set_title("readers' spread (test nodules)")
    ax[1].set_title("calibration of the predicted sd")
    return fig
