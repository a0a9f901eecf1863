"""Benchmark: `lungcad detect` through a real Orthanc PACS against the same scan from local
files, and what comes back.

Starts Orthanc with its DICOMweb plugin on loopback (Debian's ``orthanc`` and
``orthanc-dicomweb``), uploads one whole CT series through Orthanc's REST API, then times,
alternately, ``lungcad detect <folder>`` and ``lungcad detect --dicomweb <url> --study <uid>
--store`` (retrieve over WADO-RS, detect, store the SEG and SR over STOW-RS), each as its
own process, as users run them. It then retrieves the stored SEG and SR with a plain
DICOMweb client and checks them:

  - ``dciodvfy`` errors of the SEG and SR written from local files;
  - each finding's centre (SR read back) against detections.csv, every measurement against
    its value written as a DICOM decimal string, and each SEG segment's voxels against the
    SEG written from local files;

and draws the SEG as read back from Orthanc over the CT (``--figure``).

Writes <out>/pacs_roundtrip.json and prints it.

Usage:
    python bench/pacs_roundtrip.py --scan ../shared/data/lidc-scans/LIDC-IDRI-0001 \\
        --model models/best.pt --figure docs/dicom_roundtrip.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pydicom  # noqa: E402
from dicomweb_client.api import DICOMwebClient  # noqa: E402
from pydicom.valuerep import DSfloat  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lungcad.core.io.scans import find_scans  # noqa: E402
from lungcad.dicom.objects import read_findings_sr, read_segments  # noqa: E402
from tests.tools.orthanc import (  # noqa: E402
    ORTHANC_PASSWORD,
    ORTHANC_USER,
    dciodvfy_errors,
    running_orthanc,
    upload,
)

MEASURES = ("probability", "malignancy", "diameter_mm", "mean_diameter_mm", "volume_mm3")


def timed(cmd: list[str], env: dict) -> float:
    print("+", " ".join(cmd), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def retrieve(client: DICOMwebClient, study: str, modality: str, out: Path) -> Path:
    series = client.search_for_series(study_instance_uid=study)
    uids = [s["0020000E"]["Value"][0] for s in series if s["00080060"]["Value"][0] == modality]
    [ds] = client.retrieve_series(study, uids[-1])
    ds.save_as(out, enforce_file_format=True)
    return out


def draw(volume, mask: np.ndarray, finding: pd.Series, path: Path) -> None:
    """The axial CT slice through the finding with the segment's outline, and a zoom."""
    k = int(np.argmax(mask.sum(axis=(1, 2))))
    ct = volume.hu[k].astype(float)
    rows, cols = np.nonzero(mask[k])
    r0, c0 = int(rows.mean()), int(cols.mean())
    half = 40
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    for ax, zoom in zip(axes, (False, True)):
        ax.imshow(ct, cmap="gray", vmin=-1350, vmax=150)
        ax.contour(mask[k], levels=[0.5], colors="#ff4040", linewidths=1.2)
        if zoom:
            ax.set_xlim(c0 - half, c0 + half)
            ax.set_ylim(r0 + half, r0 - half)
        ax.set_axis_off()
    axes[0].set_title("CT slice through finding 1, SEG segment 1 outlined", fontsize=10)
    axes[1].set_title(
        f"SR: {finding['diameter_mm']:.1f} mm, {finding['volume_mm3']:.0f} mm³, "
        f"p = {finding['probability']:.3f}, Lung-RADS {finding['lung_rads']}",
        fontsize=10,
    )
    fig.suptitle(
        f"{volume.patient_id}: the SEG and SR as read back from Orthanc over DICOMweb",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scan", type=Path, required=True, help="one DICOM series folder")
    parser.add_argument("--model", default="models/best.pt")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/pacs"))
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument(
        "--threshold", default=None, help="detect --threshold (default: params.yaml's)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in args.scan.rglob("*") if p.is_file() and p.suffix == ".dcm")
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    study, series = str(header.StudyInstanceUID), str(header.SeriesInstanceUID)
    env = {
        **os.environ,
        "LUNGCAD_DICOMWEB_USER": ORTHANC_USER,
        "LUNGCAD_DICOMWEB_PASSWORD": ORTHANC_PASSWORD,
    }
    common = ["--model", args.model, "--quiet"]
    if args.threshold is not None:
        common += ["--threshold", str(args.threshold)]
    with tempfile.TemporaryDirectory() as tmp, running_orthanc(Path(tmp)) as url:
        upload(url, files)
        local_s, pacs_s = [], []
        for i in range(args.repeats):
            local_s.append(
                timed(
                    [
                        "lungcad",
                        "detect",
                        str(args.scan),
                        *common,
                        "--out",
                        str(args.out / f"local{i}"),
                    ],
                    env,
                )  # fmt: skip
            )
            pacs_s.append(
                timed(
                    [
                        "lungcad",
                        "detect",
                        "--dicomweb",
                        url,
                        "--study",
                        study,
                        "--store",
                        *common,
                        "--out",
                        str(args.out / f"pacs{i}"),
                    ],
                    env,
                )  # fmt: skip
            )
        client = DICOMwebClient(url)
        client._session.auth = (ORTHANC_USER, ORTHANC_PASSWORD)
        seg_back = retrieve(client, study, "SEG", args.out / "seg_from_orthanc.dcm")
        sr_back = retrieve(client, study, "SR", args.out / "sr_from_orthanc.dcm")

    last = args.repeats - 1
    local_objects = args.out / f"local{last}" / "dicom" / series
    errors = {p.name: dciodvfy_errors(p) for p in sorted(local_objects.glob("*.dcm"))}
    errors.update({p.name: dciodvfy_errors(p) for p in (seg_back, sr_back)})
    found = pd.read_csv(args.out / f"pacs{last}" / "detections.csv", dtype={"lung_rads": str})
    sr = read_findings_sr(sr_back)
    found = found.head(len(sr))
    centre = ["coordX", "coordY", "coordZ"]
    centre_mm = float(
        np.linalg.norm(sr[centre].to_numpy() - found[centre].to_numpy(), axis=1).max()
    )
    equal = all(
        (np.isnan(g) and np.isnan(w)) or g == float(DSfloat(w, True))
        for c in MEASURES
        for g, w in zip(sr[c], found[c])
    )
    volume = find_scans(args.scan, progress=False)[0][0].read()
    uids = [
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in volume.source_files
    ]
    from_pacs = read_segments(seg_back, uids)
    from_files = read_segments(args.out / f"pacs{last}" / "dicom" / series / "seg.dcm", uids)
    identical = sorted(from_pacs) == sorted(from_files) and all(
        np.array_equal(from_pacs[k], from_files[k]) for k in from_pacs
    )
    doc = {
        "scan": volume.patient_id,
        "series": series,
        "slices": int(volume.hu.shape[0]),
        "findings_in_sr": len(sr),
        "dciodvfy_errors": {k: len(v) for k, v in errors.items()},
        "max_centre_error_mm": centre_mm,
        "measurements_equal": bool(equal),
        "segments_identical": bool(identical),
        "seconds_local": local_s,
        "seconds_pacs": pacs_s,
        "overhead": float(np.median(pacs_s) / np.median(local_s) - 1),
        "machine": f"{os.cpu_count()} CPU, {sys.platform}",
    }
    (args.out / "pacs_roundtrip.json").write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2))
    if args.figure is not None and len(sr):
        draw(volume, from_pacs[1], sr.iloc[0], args.figure)
        print(f"picture -> {args.figure}")


if __name__ == "__main__":
    main()
