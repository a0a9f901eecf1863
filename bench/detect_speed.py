"""Benchmark: seconds per full-size scan of `lungcad detect`, split into its steps.

Writes N phantom scans at their real size (every slice of the real LIDC scan, 512 x 512 x
100-700: `lungcad data phantom --full`) into a scratch folder, then runs the detection of
`lungcad detect` on each with the settings it takes from params.yaml (``detect.detector``:
the cube detector's ``detect_volume`` or the dense ``detect_volume_dense``), and writes the
scan's DICOM SEG and SR as `lungcad detect` does, timing reading, each step and the DICOM
objects. The model is a trained checkpoint (default models/best.pt); on a machine without
one, ``--random-model`` uses an untrained network of the default architecture (same cost,
meaningless scores).

Usage:
    python bench/detect_speed.py --scans 3 [--device cuda] [--threads 2] [--params p.yaml]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import lungcad  # noqa: F401  (first, as in every lungcad command: its process settings)

# isort: split
import numpy as np
import torch

from lungcad.config import load_params
from lungcad.core.io.scans import find_scans
from lungcad.core.model.loading import CubeCut, LoadedModel, load
from lungcad.core.model.network import NoduleNet
from lungcad.detection.batch import DetectSettings, _write_dicom
from lungcad.detection.dense import detect_volume_dense
from lungcad.detection.detector import detect_volume, detector_config
from lungcad.phantom.writer import write_phantom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scans", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="models/best.pt")
    parser.add_argument("--random-model", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--params", default="params.yaml", help="detect/candidates settings")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--root", default="", help="reuse/keep the full-size phantom here")
    parser.add_argument("--json", default="", help="write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    params = load_params(args.params)
    if args.random_model:
        torch.manual_seed(0)
        network = NoduleNet(params.train.model).to(device).eval()
        loaded = LoadedModel(network, params.train, CubeCut(params.preprocess, params.candidates))
    else:
        loaded = load(args.model, device)
    detect_config = detector_config(loaded.cut, params.detect)
    print(f"settings: {detect_config}; detector {params.detect.detector}")
    settings = DetectSettings(detect=params.detect, figures=False, explain=False)

    def detect(volume):
        if params.detect.detector == "dense":
            return detect_volume_dense(volume, loaded, detect_config, params.detect, device)
        return detect_volume(volume, loaded, detect_config, device)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        if not any(root.glob("LIDC-IDRI-*")):
            start = time.perf_counter()
            write_phantom(root, args.scans, args.seed, workers=1, progress=True, full=True)
            print(
                f"wrote {args.scans} full-size phantom scans in {time.perf_counter() - start:.0f} s"
            )
        sources, _ = find_scans(root, progress=False)
        # warm-up: library imports and first-call allocations, paid once per process by
        # `lungcad detect` (the DICOM objects' libraries included: 0.6 s on their first use)
        volume = sources[0].read()
        _write_dicom(volume, detect(volume), settings, Path(tmp) / "warm-up", "warm-up")
        rows = []
        for source in sources:
            t = time.perf_counter()
            volume = source.read()
            read_s = time.perf_counter() - t
            det = detect(volume)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            _write_dicom(volume, det, settings, Path(tmp) / "dicom", "lungcad benchmark")
            det.seconds["dicom"] = time.perf_counter() - t
            row = {
                "patient": source.patient_id,
                "shape": list(volume.hu.shape),
                "read": read_s,
                **det.seconds,
                "candidates_n": len(det.candidates),
            }
            row["total"] = read_s + sum(det.seconds.values())
            rows.append(row)
            print(
                f"{row['patient']} {row['shape']}: total {row['total']:.1f} s (read {read_s:.1f}, "
                + ", ".join(f"{k} {v:.1f}" for k, v in det.seconds.items())
                + f"), {len(det.candidates)} candidates"
            )
    steps = [k for k in rows[0] if k not in ("patient", "shape", "candidates_n")]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in steps}
    median = {k: float(np.median([r[k] for r in rows])) for k in steps}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "torch": torch.__version__,
        "scans": rows,
        "mean_seconds": mean,
        "median_seconds": median,
        "peak_rss_mb": peak_mb,
    }
    print(
        "mean per scan: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in mean.items())
        + f"; median total {median['total']:.1f} s; peak RSS {peak_mb:.0f} MB"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
