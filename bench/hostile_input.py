"""Benchmark: `lungcad detect` and `lungcad serve` against hostile and careless input, each
case run as a user runs it (its own process), with its exit code, wall time, peak RSS, the
last line it printed and how many tracebacks it printed.

Cases (all made here, in a temporary folder):
- traversal: two series whose SeriesInstanceUID / PatientID are ``../../..`` and absolute
  paths: files written outside --out;
- batch: one good chest and five bad series (broken PixelSpacing, empty RescaleSlope, a
  single slice, a 4-slice gap, an RLE bomb declaring 65535² pixels), an RTSTRUCT and a FIFO;
- rle_bomb: two 3 kB RLE files declaring 65535 x 65535 pixels;
- mhd_bomb: a .mhd whose 8 MB zlib .zraw declares 2048 x 2048 x 1024 16-bit voxels (8 GiB);
- dicomweb_paging / dicomweb_multipart / dicomweb_trickle: a fake DICOMweb server on
  loopback that pages forever, streams one endless instance, or sends a byte every 0.5 s
  (``limits.dicomweb`` defaults but a 10 s deadline, set in the params file written here);
- serve_strings / serve_deep_json: the served model (a tiny one trained here) sent a 200 kB
  Parquet of two million strings and JSON nested 100,000 deep: status and server RSS growth;
- tilted / sagittal: a 20-degree gantry-tilted and a sagittal series holding a 14 mm sphere:
  distance of the sphere's centroid in the volume read from where it was placed.

Usage:
    PYTHONPATH=. python bench/hostile_input.py [--out bench/results/hostile_input.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import yaml

from tests.conftest import REPO, TEST_PARAMS, set_raw, write_series, write_tiny_checkpoint
from tests.tools.hostile import (
    FakeDicomweb,
    send_endless_part,
    send_json,
    send_trickle,
    series_item,
    write_chest,
    write_mhd_bomb,
    write_rle_bomb,
    write_rtstruct,
)

STUDY = "1.2.826.0.1.3680043.8.498.500"
SERIES = "1.2.826.0.1.3680043.8.498.501"


def run(cmd: list[str], cwd: Path) -> dict:
    """Run a command; its exit code, seconds, peak RSS and what it printed last."""
    started = time.perf_counter()
    with open(cwd / "out.txt", "w") as out, open(cwd / "err.txt", "w") as err:
        process = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
    printed = (cwd / "out.txt").read_text() + (cwd / "err.txt").read_text()
    lines = (cwd / "err.txt").read_text().strip().splitlines() or printed.strip().splitlines()
    return {
        "exit": os.waitstatus_to_exitcode(status),
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "last_line": lines[-1][:160] if lines else "",
        "tracebacks": printed.count("Traceback"),
    }


def detect(source: str | Path, out: Path, model: Path, params: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "lungcad.cli.main", "detect"]
    cmd += [str(source)] if source else []
    return (
        cmd
        + ["--out", str(out), "--model", str(model), "--params", str(params)]
        + [
            "--quiet",
            *extra,
        ]
    )


def padded(value: str, pad: bytes) -> bytes:
    """A DICOM value of even length."""
    raw = value.encode()
    return raw + pad if len(raw) % 2 else raw


def files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def case_traversal(tmp: Path, model: Path, params: Path) -> dict:
    source, outside = tmp / "in", tmp / "abs-target"
    for name, uid, patient in (
        ("a", "../../../escaped-series", "../../../escaped-patient"),
        ("b", str(outside / "series"), str(outside / "p")),
    ):
        for f in write_chest(source / name):
            set_raw(f, "SeriesInstanceUID", padded(uid, b"\0"), "UI")
            set_raw(f, "PatientID", padded(patient, b" "), "LO")
    out = tmp / "w1" / "w2" / "out"
    out.parent.mkdir(parents=True)
    before = files(tmp)
    result = run(detect(source, out, model, params, "--threshold", "0"), tmp)
    outside_out = [p for p in files(tmp) - before if out not in p.parents and p.parent != tmp]
    return {**result, "files_outside_out": len(outside_out) + int(outside.exists())}


def case_batch(tmp: Path, model: Path, params: Path) -> dict:
    source = tmp / "in"
    write_chest(source / "good", series_uid="1.2.826.0.1.3680043.8.498.900")
    small = np.zeros((8, 16, 16), np.int16)
    bad = {}
    for k, name in enumerate(("spacing", "slope", "single", "gap")):
        uid = f"1.2.826.0.1.3680043.8.498.91{k}"
        bad[name] = write_series(source / name, small, (1, 1, 2), (0, 0, 0), series_uid=uid)
    for f in bad["spacing"]:
        set_raw(f, "PixelSpacing", b"abc\\def ")
    for f in bad["slope"]:
        set_raw(f, "RescaleSlope", b"")
    for f in bad["single"][1:] + bad["gap"][2:6]:
        f.unlink()
    write_rle_bomb(source / "bomb")
    write_rtstruct(source / "good", "1.2.3")
    os.mkfifo(source / "trap.dcm")
    return run(detect(source, tmp / "out", model, params, "--threshold", "0"), tmp)


def case_rle_bomb(tmp: Path, model: Path, params: Path) -> dict:
    write_rle_bomb(tmp / "in")
    return run(detect(tmp / "in", tmp / "out", model, params), tmp)


def case_mhd_bomb(tmp: Path, model: Path, params: Path) -> dict:
    header = write_mhd_bomb(tmp / "in")
    zraw = tmp / "in" / "bomb.zraw"  # 8 MB of zlib that inflates to the full 8 GiB declared
    compressor, chunk = zlib.compressobj(9), bytes(64 << 20)
    with open(zraw, "wb") as fh:
        for _ in range(128):
            fh.write(compressor.compress(chunk))
        fh.write(compressor.flush())
    text = header.read_text().splitlines()
    text = [
        f"CompressedDataSize = {zraw.stat().st_size}" if t.startswith("CompressedDataSize") else t
        for t in text
    ]
    header.write_text("\n".join(text) + "\n")
    return {
        **run(detect(header, tmp / "out", model, params), tmp),
        "input_mb": round(zraw.stat().st_size / 2**20, 1),
    }


def case_dicomweb(tmp: Path, model: Path, params: Path, kind: str) -> dict:
    def endless_series(h, m, q) -> None:
        offset = int(q.get("offset", 0))
        send_json(h, [series_item(f"1.2.3.{offset + k}") for k in range(100)])

    def one_series(h, m, q) -> None:
        send_json(h, [series_item(SERIES)] if int(q.get("offset", 0)) == 0 else [])

    routes = {"/studies": lambda h, m, q: send_json(h, [])}
    if kind == "paging":
        routes[rf"/studies/{STUDY}/series"] = endless_series
    elif kind == "multipart":
        routes[rf"/studies/{STUDY}/series"] = one_series
        routes[rf"/studies/{STUDY}/series/{SERIES}"] = lambda h, m, q: send_endless_part(h)
    else:
        routes[rf"/studies/{STUDY}/series"] = lambda h, m, q: send_trickle(h)
    fake = FakeDicomweb(routes)
    with fake.running() as url:
        result = run(
            detect("", tmp / "out", model, params, "--dicomweb", url, "--study", STUDY), tmp
        )
    return {**result, "requests": len(fake.asked)}


def case_serve(tmp: Path) -> dict:
    """A tiny model served as `lungcad serve` serves it; two hostile bodies."""
    import io
    import urllib.error
    import urllib.request

    import mlflow
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lungcad.registry.serve_command import serve_command
    from lungcad.training.tracked import train_tracked
    from tests.conftest import make_tiny_dataset, tiny_train_config
    from tests.tools.loadtest import rss_mb
    from tests.tools.serving import free_port, wait_until_serving

    here = Path.cwd()
    os.chdir(tmp)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    dataset = make_tiny_dataset(tmp / "dataset", n_patients=4)
    trained = train_tracked(
        tiny_train_config(epochs=1, experiment="bench"), *dataset, tmp / "m", progress=False
    )
    port = free_port()
    cmd, env = serve_command(f"runs:/{trained.run_id}/model", port=port)
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {}
    try:
        wait_until_serving(port, server, timeout_s=180)
        buffer = io.BytesIO()
        column = pa.array(["lungcad-" * 8] * 2_000_000).dictionary_encode()
        pq.write_table(pa.table({"cube": column}), buffer, compression="zstd")
        deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        for name, body, kind in (
            ("serve_strings", buffer.getvalue(), "application/vnd.apache.parquet"),
            ("serve_deep_json", deep, "application/json"),
        ):
            before = rss_mb(server.pid)
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": kind}
            )
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=300) as r:
                    status, message = r.status, ""
            except urllib.error.HTTPError as err:
                status, message = err.code, json.loads(err.read())["message"]
            results[name] = {
                "status": status,
                "seconds": round(time.perf_counter() - started, 2),
                "body_kb": round(len(body) / 1024),
                "server_rss_growth_mb": round(rss_mb(server.pid) - before),
                "message": message[:120],
            }
    finally:
        server.terminate()
        server.wait(timeout=30)
        mlflow.set_tracking_uri(None)
        os.chdir(here)
    return results


def case_geometry() -> dict:
    from lungcad.core.io.series import read_series
    from tests.io.test_series_geometry import CENTRE_MM, STACKS, _write

    out = {}
    for name in ("gantry tilt 20", "sagittal"):
        with tempfile.TemporaryDirectory() as tmp:
            files, _, _ = _write(Path(tmp) / "s", *STACKS[name][0])
            vol = read_series(files)
        k, r, c = np.nonzero(vol.hu > -370)
        centroid = vol.geometry.index_to_mm(np.c_[c, r, k]).mean(axis=0)
        out[name] = {"centroid_error_mm": round(float(np.linalg.norm(centroid - CENTRE_MM)), 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/hostile_input.json"))
    args = parser.parse_args()
    args.out = args.out.resolve()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="lungcad-hostile-") as root:
        root = Path(root)
        model = write_tiny_checkpoint(root / "tiny.pt")
        doc = yaml.safe_load(TEST_PARAMS.read_text())
        doc["extends"] = str((TEST_PARAMS.parent / doc["extends"]).resolve())
        doc.setdefault("limits", {}).setdefault("dicomweb", {})["request_deadline_s"] = 10
        params = root / "params.yaml"
        params.write_text(yaml.safe_dump(doc))
        cases = {
            "traversal": case_traversal,
            "batch": case_batch,
            "rle_bomb": case_rle_bomb,
            "mhd_bomb": case_mhd_bomb,
            "dicomweb_paging": lambda t, m, p: case_dicomweb(t, m, p, "paging"),
            "dicomweb_multipart": lambda t, m, p: case_dicomweb(t, m, p, "multipart"),
            "dicomweb_trickle": lambda t, m, p: case_dicomweb(t, m, p, "trickle"),
        }
        for name, case in cases.items():
            folder = root / name
            folder.mkdir()
            results[name] = case(folder, model, params)
            print(name, json.dumps(results[name]), flush=True)
        (root / "serve").mkdir()
        results.update(case_serve(root / "serve"))
        results["geometry"] = case_geometry()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
