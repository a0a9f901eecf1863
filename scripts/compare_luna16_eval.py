"""Cross-check lungcad's FROC / CPM against LUNA16's published evaluation script.

LUNA16's `evaluationScript/` (noduleCADEvaluationLUNA16.py with NoduleFinding.py and
tools/csvTools.py) is not part of lungcad: get a copy of it (e.g. from the challenge's
download or a repository that ships it) and point ``--luna16`` at the folder that holds
``evaluationScript/``. This runs its ``evaluateCAD`` (every mark counted, no bootstrap) on a
`lungcad detect` output folder and prints its seven sensitivities and CPM beside lungcad's.
The script's own FROC plot may fail on current matplotlib (``basex``); its curve is read
from the ``froc_*.txt`` it writes before plotting.

Usage:
    python scripts/compare_luna16_eval.py --luna16 /path/to/dir --detections reports/detection/run
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lungcad.core.annotations.luna16 import REFERENCE_COLUMNS
from lungcad.detection.froc import FP_RATES, froc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--luna16", required=True, help="folder holding evaluationScript/")
    parser.add_argument("--detections", default="reports/detection/run")
    args = parser.parse_args()
    run = Path(args.detections)
    scans = pd.read_csv(run / "scans.csv", dtype={"seriesuid": str})
    uids = scans.loc[scans["status"] == "ok", "seriesuid"].tolist()
    ann = pd.read_csv(run / "annotations.csv", dtype={"seriesuid": str})[REFERENCE_COLUMNS]
    exc = pd.read_csv(run / "annotations_excluded.csv", dtype={"seriesuid": str})
    exc = exc[REFERENCE_COLUMNS]
    det = pd.read_csv(run / "detections.csv", dtype={"seriesuid": str})

    ours = froc(det, ann, exc, uids)
    sys.path.insert(0, str(Path(args.luna16).resolve()))
    luna = importlib.import_module("evaluationScript.noduleCADEvaluationLUNA16")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        pd.Series(uids).to_csv(t / "uids.csv", index=False, header=False)
        ann.to_csv(t / "ann.csv", index=False)
        exc.to_csv(t / "exc.csv", index=False)
        with contextlib.redirect_stdout(io.StringIO()):
            nodules, series = luna.collect(
                str(t / "ann.csv"), str(t / "exc.csv"), str(t / "uids.csv")
            )
            try:
                luna.evaluateCAD(
                    series,
                    str(run / "detections.csv"),
                    tmp,
                    nodules,
                    "lungcad",
                    maxNumberOfCADMarks=-1,
                    performBootstrapping=False,
                )
            except TypeError as exc_plot:  # its plot on current matplotlib; the curve is written
                print(f"(LUNA16 script stopped at its plot: {exc_plot})", file=sys.stderr)
        curve = np.loadtxt(t / "froc_lungcad.txt", delimiter=",", ndmin=2)
    theirs = np.interp(FP_RATES, curve[:, 0], curve[:, 1])
    print("FP/scan   " + "  ".join(f"{r:>6g}" for r in FP_RATES) + "     CPM")
    print("LUNA16    " + "  ".join(f"{v:6.4f}" for v in theirs) + f"  {theirs.mean():.4f}")
    mine = [ours.sensitivities[r] for r in FP_RATES]
    print("lungcad   " + "  ".join(f"{v:6.4f}" for v in mine) + f"  {ours.cpm:.4f}")


if __name__ == "__main__":
    main()
