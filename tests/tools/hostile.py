"""Hostile and careless inputs made by the tests themselves: DICOM series whose headers
name other places or declare gigabytes, a .mhd zlib bomb, non-image objects, and a fake
DICOMweb server on loopback that pages forever, streams forever or trickles."""

from __future__ import annotations

import json
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, RTStructureSetStorage, generate_uid

from tests.conftest import write_series
from tests.detection.test_candidates import synthetic_chest
from tests.tools.serving import free_port

#: A small chest: air around a body holding two lungs and a 12 mm nodule (2 mm voxels).
CHEST_SPACING = (2.0, 2.0, 2.5)
CHEST_ORIGIN = (-100.0, -80.0, -40.0)
NODULE_MM = (-45.0, 0.0, 0.0)


def small_chest(seed: int = 0) -> np.ndarray:
    """(slices, rows, columns) HU of a small synthetic chest with one 12 mm nodule."""
    hu, _ = synthetic_chest(
        seed,
        shape=(32, 80, 100),
        spacing=CHEST_SPACING,
        origin=CHEST_ORIGIN,
        spheres=[(NODULE_MM, 12.0)],
        lung_half_length_mm=45.0,
    )
    return hu


def write_chest(folder: Path, series_uid: str | None = None, patient_id: str = "TEST-0001"):
    """The small chest as an axial DICOM series in ``folder``."""
    return write_series(folder, small_chest(), CHEST_SPACING, CHEST_ORIGIN, series_uid, patient_id)


def set_header(files: list[Path], **values: object) -> None:
    """Set header values in every file, unchecked (``set_raw`` for malformed ones)."""
    for f in files:
        ds = pydicom.dcmread(f)
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        ds.save_as(f)


def write_rle_bomb(folder: Path, n: int = 2, size: int = 65535) -> list[Path]:
    """``n`` files of a few kB each whose RLE pixel data declares ``size`` x ``size``
    16-bit pixels (8 GiB per slice once decoded)."""
    paths = write_series(folder, np.zeros((n, 2, 2), np.int16), (1, 1, 1), (0, 0, 0))
    # One frame of two RLE segments (the high and low bytes), each a few replicate runs.
    segment = bytes([129, 0]) * 64  # each run: 128 copies of 0
    header = struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13))
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = RLELossless
        ds.Rows = ds.Columns = size
        ds.PixelData = encapsulate([header + segment + segment])
        ds["PixelData"].is_undefined_length = True
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)
    return paths


def write_rtstruct(folder: Path, study_uid: str) -> Path:
    """An RT structure set (no pixels) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTStructureSetStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.PatientID = "TEST-0001"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "contours"
    path = folder / "rtstruct.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_mhd_bomb(folder: Path, dims: tuple[int, int, int] = (2048, 2048, 1024)) -> Path:
    """A .mhd whose zlib-compressed .zraw (a few kB here) declares ``dims`` 16-bit voxels
    (8 GiB by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = zlib.compress(bytes(8 << 20), 9)  # 8 MiB of zeros in ~8 kB
    (folder / "bomb.zraw").write_bytes(data)
    header = folder / "1.2.826.0.1.3680043.8.498.77.mhd"
    header.write_text(
        "ObjectType = Image\nNDims = 3\n"
        f"DimSize = {' '.join(map(str, dims))}\nElementType = MET_SHORT\n"
        "ElementSpacing = 1 1 1\nOffset = 0 0 0\nCompressedData = True\n"
        f"CompressedDataSize = {len(data)}\nElementDataFile = bomb.zraw\n"
    )
    return header


class FakeDicomweb:
    """A DICOMweb server on loopback whose answers a test chooses.

    ``routes`` maps a regular expression on the path after ``/dicom-web`` (matched whole)
    to a handler ``(handler, match, query) -> None`` that writes the whole answer; other
    paths get 404. Every request's path is recorded in ``asked``.
    """

    def __init__(self, routes: dict[str, Callable]) -> None:
        self.routes = [(re.compile(pattern), route) for pattern, route in routes.items()]
        self.asked: list[str] = []
        self.port = free_port()

    @contextmanager
    def running(self) -> Iterator[str]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                fake.asked.append(self.path)
                path, _, query = self.path.partition("?")
                path = path.removeprefix("/dicom-web")
                params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                for pattern, route in fake.routes:
                    match = pattern.fullmatch(path)
                    if match:
                        with suppress(BrokenPipeError, ConnectionResetError):
                            route(self, match, params)
                        return
                self.send_error(404)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{self.port}/dicom-web"
        finally:
            server.shutdown()
            server.server_close()


def send_json(handler: BaseHTTPRequestHandler, doc: object) -> None:
    send_raw(handler, json.dumps(doc).encode())


def send_raw(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """``body`` as a DICOM JSON answer, whatever it holds."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/dicom+json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def series_item(uid: object, modality: object = "CT") -> dict:
    """One QIDO series answer item (values as given: the tests pass malformed ones)."""
    return {
        "0020000E": {"vr": "UI", "Value": [uid]},
        "00080060": {"vr": "CS", "Value": [modality]},
    }


def send_instances(handler: BaseHTTPRequestHandler, paths: list[Path]) -> None:
    """DICOM files as one multipart/related WADO-RS answer."""
    boundary = "lungcad-test-boundary"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + path.read_bytes()
            + b"\r\n"
            for path in paths
        )
        + f"--{boundary}--\r\n".encode()
    )
    handler.send_response(200)
    handler.send_header(
        "Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}'
    )
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def send_endless_part(handler: BaseHTTPRequestHandler) -> None:
    """A multipart answer whose one part never ends (chunks of zeros until the client
    hangs up)."""
    boundary = "lungcad-test-boundary"
    handler.send_response(200)
    handler.send_header(
        "Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}'
    )
    handler.send_header("Content-Length", str(1 << 40))
    handler.end_headers()
    handler.wfile.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
    block = bytes(1 << 20)
    while True:
        handler.wfile.write(block)


def send_trickle(handler: BaseHTTPRequestHandler, every_s: float = 0.5) -> None:
    """A JSON answer sent one byte at a time, forever."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/dicom+json")
    handler.send_header("Content-Length", str(1 << 30))
    handler.end_headers()
    handler.wfile.write(b"[")
    handler.wfile.flush()
    while True:
        time.sleep(every_s)
        handler.wfile.write(b" ")
        handler.wfile.flush()
