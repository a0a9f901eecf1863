"""DICOM test tools: dciodvfy, and a real Orthanc with its DICOMweb plugin started on
loopback (the PACS round-trip tests and bench/pacs_roundtrip.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.tools.serving import free_port

ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
#: What to run when Orthanc is missing (the tests say so, and which did not run).
ORTHANC_INSTALL = "sudo apt-get install orthanc orthanc-dicomweb"
ORTHANC_USER, ORTHANC_PASSWORD = "lungcad", "test-password"


def orthanc_missing() -> str | None:
    """Why the Orthanc round trip cannot run here, or None."""
    if shutil.which("Orthanc") is None:
        return f"Orthanc is not installed ({ORTHANC_INSTALL})"
    if not ORTHANC_PLUGIN.is_file():
        return f"Orthanc's DICOMweb plugin is not installed ({ORTHANC_INSTALL})"
    return None


def dciodvfy_errors(path: Path) -> list[str]:
    """The error lines dciodvfy (dicom3tools) reports for a DICOM file."""
    tool = shutil.which("dciodvfy") or str(Path(sys.executable).parent / "dciodvfy")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


@contextmanager
def running_orthanc(root: Path) -> Iterator[str]:
    """A real Orthanc (HTTP basic auth, DICOMweb at /dicom-web) on a free loopback port,
    storing under ``root``; yields its DICOMweb root URL and stops it afterwards."""
    port = free_port()
    config = {
        "Name": "lungcad-test",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {ORTHANC_USER: ORTHANC_PASSWORD},
        "Plugins": [str(ORTHANC_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    with open(root / "orthanc.log", "w") as log:
        server = subprocess.Popen(
            ["Orthanc", str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    requests.get(f"{base}/system", auth=(ORTHANC_USER, ORTHANC_PASSWORD), timeout=2)
                    break
                except requests.ConnectionError as exc:
                    if server.poll() is not None or time.monotonic() > deadline:
                        tail = (root / "orthanc.log").read_text()[-2000:]
                        raise RuntimeError(f"Orthanc did not start: {tail}") from exc
                    time.sleep(0.2)
            yield f"{base}/dicom-web"
        finally:
            server.terminate()
            server.wait(timeout=30)


def upload(dicomweb_url: str, files: list[Path]) -> None:
    """Put files into Orthanc through its REST API (not through lungcad)."""
    base = dicomweb_url.removesuffix("/dicom-web")
    for f in files:
        r = requests.post(
            f"{base}/instances", data=f.read_bytes(), auth=(ORTHANC_USER, ORTHANC_PASSWORD)
        )
        r.raise_for_status()
