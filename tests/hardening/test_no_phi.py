"""No patient data leaves the DICOM: the whole pipeline (build, split, train, evaluate,
promote, detect, serve) runs on a copy of the real LIDC-IDRI-0001 slab whose identifying
headers hold marker strings, beside a small phantom; no marker appears in anything lungcad
writes, logs or answers.

What lungcad does keep of a scan is its PatientID as LIDC publishes it (LIDC-IDRI-0001,
the key of the annotation database and of the patient-level split) and its UIDs. The DICOM
SEG and SR of the findings are the exception by design: they go back into the patient's
study, so they carry the patient and study identity of the source (name, birth date,
accession number, referring physician) and nothing else of its header.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import yaml

from lungcad.registry.client import encode_cubes
from lungcad.registry.serve_command import serve_command
from tests.conftest import REPO, cube_detect_settings, tiny_train_config
from tests.tools.serving import wait_until_serving

MARKERS = {
    "PatientName": "Markerova^Phiona",
    "PatientBirthDate": "19270314",
    "InstitutionName": "Phimarker Institute 4417",
    "AccessionNumber": "ACC93817PHI",
    "ReferringPhysicianName": "Leakwell^Doctor",
    "PatientAddress": "7 Markerstrasse",
}
NEEDLES = [
    b"markerova",
    b"phiona",
    b"19270314",
    b"1927-03-14",
    b"phimarker",
    b"acc93817phi",
    b"leakwell",
    b"markerstrasse",
]


def _marked_slab(slab_root: Path, root: Path) -> None:
    shutil.copytree(slab_root / "LIDC-IDRI-0001", root / "LIDC-IDRI-0001")
    for path in (root / "LIDC-IDRI-0001").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for keyword, value in MARKERS.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


def _run(log: Path, *args: str, env: dict[str, str]) -> None:
    with log.open("a") as fh:
        fh.write(f"$ lungcad {' '.join(args)}\n")
        fh.flush()
        done = subprocess.run(
            [sys.executable, "-m", "lungcad.cli.main", *args],
            cwd=log.parent.parent,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    assert done.returncode == 0, log.read_text()[-4000:]


def _serve_and_ask(workdir: Path, cubes: np.ndarray, env: dict[str, str]) -> bytes:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd, serve_env = serve_command("models:/lungcad@champion", port=port)
    serve_env.update(env)
    log = (workdir / "logs" / "serve.log").open("w")
    server = subprocess.Popen(cmd, cwd=workdir, env=serve_env, stdout=log, stderr=log)
    try:
        wait_until_serving(port, server)
        body, content_type = encode_cubes(cubes, "json")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": content_type},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.status == 200
            return response.read()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_phi_markers_in_the_dicom_headers_appear_nowhere(tmp_path, slab_root, phantom_root) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(phantom_root, raw)
    _marked_slab(slab_root, raw)
    marked = next(raw.glob("LIDC-IDRI-0001/*/*/*.dcm")).read_bytes().lower()
    assert all(n in marked for n in NEEDLES if n != b"1927-03-14")  # the search finds them
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["raw_root"] = str(raw)
    # What is searched is what the pipeline writes, not how well it detects: no candidate
    # negatives in the build, and the detector's 30 best candidates per scan.
    params["preprocess"]["candidate_negative_fraction"] = 0.0
    params["candidates"]["max_candidates"] = 30
    params["detect"].update(cube_detect_settings())  # an untrained network's maps hold none
    params["train"] = tiny_train_config(epochs=1, batch_size=8).to_dict()
    params["evaluate"]["bootstrap"] = 20
    params["promote"]["bootstrap"] = 20
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "pipeline.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}

    _run(log, "data", "build", "--raw", str(raw), "--out", "data/processed", env=env)
    _run(log, "data", "split", "--index", "data/processed/index.csv", "--val", "0.25",
         "--test", "0.25", env=env)  # fmt: skip
    _run(log, "train", "--quiet", env=env)
    _run(log, "evaluate", env=env)
    _run(log, "promote", "--force", env=env)
    _run(log, "detect", str(raw / "LIDC-IDRI-0001"), "--model", "models/best.pt",
         "--out", "reports/detect", "--quiet", "--threshold", "0", env=env)  # fmt: skip

    index = pd.read_csv(tmp_path / "data" / "processed" / "index.csv")
    slab_rows = index[index["patient_id"] == "LIDC-IDRI-0001"]
    assert len(slab_rows) >= 1  # the marked scan went through the pipeline
    cubes = np.load(tmp_path / "data" / "processed" / "cubes.npy")[slab_rows["cube_index"]]
    answer = _serve_and_ask(tmp_path, cubes.astype(np.float32), env)
    (tmp_path / "logs" / "served_answer.json").write_bytes(answer)

    dicom_objects = sorted((tmp_path / "reports" / "detect" / "dicom").rglob("*.dcm"))
    assert [p.name for p in dicom_objects] == ["seg.dcm", "sr.dcm"]
    identity = {b"markerova", b"phiona", b"19270314", b"acc93817phi", b"leakwell"}
    for path in dicom_objects:
        content = path.read_bytes().lower()
        assert all(n in content for n in identity), path  # the patient's own study
        assert [n for n in NEEDLES if n in content and n not in identity] == [], path

    searched, found = 0, []
    places = ["mlflow.db", "mlruns", "data", "reports", "models", "logs"]
    for place in places:
        target = tmp_path / place
        assert target.exists(), place
        for path in [target] if target.is_file() else sorted(target.rglob("*")):
            if path.is_file() and path not in dicom_objects:
                content = path.read_bytes().lower()
                searched += 1
                found += [(str(path), n.decode()) for n in NEEDLES if n in content]
    assert searched > 50  # the run wrote what it should have
    assert found == [], found
    # What lungcad does keep: the patient id as LIDC publishes it.
    assert b"LIDC-IDRI-0001" in (tmp_path / "data" / "processed" / "index.csv").read_bytes()
