"""A PACS over DICOMweb: find a study's CT series (QIDO-RS), retrieve them (WADO-RS) and
store derived objects back into the study (STOW-RS), with ``dicomweb-client``.

Credentials come from the environment, never from the command line and never into a log:
``LUNGCAD_DICOMWEB_TOKEN`` (a bearer token) or ``LUNGCAD_DICOMWEB_USER`` and
``LUNGCAD_DICOMWEB_PASSWORD`` (HTTP basic). A user and password written into the URL work
too; every message shows the URL with the password hidden.

The server's answers are data with a budget (``limits.dicomweb``): every request has a
wall-clock deadline, answer included, however slowly it arrives; every answer is read in
chunks and stopped at ``max_response_bytes``, and all of a run's answers at
``max_total_bytes``; queries are paged at most ``max_pages`` times (a server that ignores
the offset ends the paging when a page brings nothing new); a series is retrieved in one
request whose instances are written to their files as they arrive (``PartWriter``), each
at most ``max_response_bytes`` and at most ``max_instances`` of them, so no instance is
ever held in memory. UIDs in an answer are used only when they are valid UIDs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pydicom
import requests

from lungcad.config import DicomwebLimits
from lungcad.core.names import is_uid
from lungcad.errors import LungcadError

TOKEN_ENV = "LUNGCAD_DICOMWEB_TOKEN"
USER_ENV = "LUNGCAD_DICOMWEB_USER"
PASSWORD_ENV = "LUNGCAD_DICOMWEB_PASSWORD"
#: Seconds to wait for the server to accept a connection.
CONNECT_TIMEOUT_S = 10
#: Bytes read from an answer at a time.
CHUNK_BYTES = 64 * 1024
_MODALITY, _SERIES_UID = "00080060", "0020000E"


class DicomWebError(LungcadError, RuntimeError):
    """The DICOMweb server cannot be reached, refuses us, lacks the study, does not take
    the objects or answers beyond the budget; the message names the URL (password hidden)
    and what to do."""


class OverBudgetError(LungcadError, RuntimeError):
    """An answer took longer or held more than ``limits.dicomweb`` allows."""


class BudgetedSession(requests.Session):
    """A requests session whose every request ends within ``request_deadline_s`` and whose
    answers are read as they arrive: held in memory up to ``max_response_bytes`` each (or
    handed on in chunks, ``fetch``), and ``max_total_bytes`` in all (decompressed sizes: a
    compressed answer is counted as it unpacks).

    A request runs in a worker thread; when the deadline passes, the caller gets an
    :class:`OverBudgetError` at once and the worker drops the rest of the answer.
    """

    def __init__(self, limits: DicomwebLimits) -> None:
        super().__init__()
        self.limits = limits
        self.received_bytes = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """requests' ``send`` (what dicomweb-client calls), the answer held in memory."""
        chunks: list[bytes] = []
        size = 0

        def keep(chunk: bytes, response: requests.Response) -> None:
            nonlocal size
            size += len(chunk)
            if size > self.limits.max_response_bytes:
                raise OverBudgetError(
                    f"{response.request.method} {_path_of(response.url)}: answer over "
                    f"limits.dicomweb.max_response_bytes = {self.limits.max_response_bytes}"
                )
            chunks.append(chunk)

        response = self._run(request, kwargs, keep)
        response._content = b"".join(chunks)
        response._content_consumed = True
        return response

    def fetch(
        self, url: str, headers: dict[str, str], consume: Callable[[bytes, Any], None]
    ) -> requests.Response:
        """GET ``url`` and hand its answer to ``consume(chunk, response)`` as it arrives
        (in the worker thread); the response, read and closed."""
        request = self.prepare_request(requests.Request("GET", url, headers=headers))
        response = self._run(request, {}, consume)
        response.raise_for_status()
        return response

    def _run(
        self,
        request: requests.PreparedRequest,
        kwargs: dict[str, Any],
        consume: Callable[[bytes, Any], None],
    ) -> requests.Response:
        limits = self.limits
        deadline = time.monotonic() + limits.request_deadline_s
        kwargs = {**kwargs, "stream": True}
        kwargs["timeout"] = (CONNECT_TIMEOUT_S, limits.request_deadline_s)
        box: dict[str, Any] = {}
        cancelled = threading.Event()

        def fetch() -> None:
            try:
                response = requests.Session.send(self, request, **kwargs)
                box["response"] = response
                box["complete"] = self._read(response, cancelled, consume)
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=fetch, name="dicomweb-request", daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            # The worker drops the answer at its next bytes (closing the response from here
            # would wait for the worker's read to end).
            cancelled.set()
            raise OverBudgetError(
                f"{request.method} {_path_of(request.url)}: no complete answer within "
                f"limits.dicomweb.request_deadline_s = {limits.request_deadline_s:g} s"
            )
        if "error" in box:
            raise box["error"]
        if not box["complete"]:
            raise OverBudgetError(f"{request.method} {_path_of(request.url)}: cancelled")
        return box["response"]

    def _read(
        self,
        response: requests.Response,
        cancelled: threading.Event,
        consume: Callable[[bytes, Any], None],
    ) -> bool:
        with response:
            # read1: whatever has arrived, so that a trickle is checked at every byte.
            while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
                if cancelled.is_set():
                    return False
                self.received_bytes += len(chunk)
                if self.received_bytes > self.limits.max_total_bytes:
                    raise OverBudgetError(
                        "the server's answers of this run are over "
                        f"limits.dicomweb.max_total_bytes = {self.limits.max_total_bytes}"
                    )
                consume(chunk, response)
        return True


class PartWriter:
    """Writes each part of a ``multipart/related`` answer to its own file as the bytes
    arrive, holding no more than one chunk and a boundary's length in memory.

    Args:
        boundary: the answer's boundary (from its Content-Type).
        folder: where part k goes, as ``<k:05d>.dcm``.
        max_part_bytes: a part may hold at most this many bytes.
        max_parts: at most this many parts.
    """

    #: A part's headers beyond this many bytes are not headers.
    MAX_HEADER_BYTES = 16 * 1024

    def __init__(self, boundary: bytes, folder: Path, max_part_bytes: int, max_parts: int):
        self.delimiter = b"\r\n--" + boundary
        self.buffer = bytearray(b"\r\n")  # the first boundary opens the body, no CRLF before
        self.folder = folder
        self.max_part_bytes = max_part_bytes
        self.max_parts = max_parts
        self.state = "preamble"
        self.files: list[Path] = []
        self.handle = None
        self.part_bytes = 0

    def feed(self, chunk: bytes, _response: object = None) -> None:
        self.buffer += chunk
        while True:
            if self.state == "preamble":
                at = self.buffer.find(self.delimiter)
                if at < 0:
                    del self.buffer[: max(0, len(self.buffer) - len(self.delimiter))]
                    return
                del self.buffer[: at + len(self.delimiter)]
                self.state = "boundary"
            if self.state == "boundary":
                if len(self.buffer) < 2:
                    return
                if self.buffer[:2] == b"--":
                    self.state = "end"
                elif self.buffer[:2] == b"\r\n":
                    del self.buffer[:2]
                    self.state = "headers"
                else:
                    raise ValueError("malformed multipart answer (no line end after a boundary)")
            if self.state == "headers":
                if len(self.buffer) < 2:
                    return
                # The headers end at an empty line (at once when the part has none).
                at = -2 if self.buffer[:2] == b"\r\n" else self.buffer.find(b"\r\n\r\n")
                if at == -1:
                    if len(self.buffer) > self.MAX_HEADER_BYTES:
                        raise ValueError("malformed multipart answer (a part's headers never end)")
                    return
                del self.buffer[: at + 4]
                self._open()
                self.state = "body"
            if self.state == "body":
                at = self.buffer.find(self.delimiter)
                if at < 0:  # keep what could be the start of a boundary
                    self._write(len(self.buffer) - len(self.delimiter) + 1)
                    return
                self._write(at)
                del self.buffer[: len(self.delimiter)]
                self.handle.close()
                self.handle = None
                self.state = "boundary"
            if self.state == "end":
                self.buffer.clear()
                return

    def _open(self) -> None:
        if len(self.files) >= self.max_parts:
            raise OverBudgetError(
                f"more than limits.dicomweb.max_instances = {self.max_parts} instances"
            )
        path = self.folder / f"{len(self.files):05d}.dcm"
        self.handle = open(path, "wb")  # noqa: SIM115 - closed at the part's end or by close()
        self.files.append(path)
        self.part_bytes = 0

    def _write(self, n: int) -> None:
        if n <= 0:
            return
        self.part_bytes += n
        if self.part_bytes > self.max_part_bytes:
            raise OverBudgetError(
                f"an instance over limits.dicomweb.max_response_bytes = {self.max_part_bytes}"
            )
        self.handle.write(self.buffer[:n])
        del self.buffer[:n]

    def close(self) -> list[Path]:
        """The whole parts written; a part the answer cut short is removed."""
        if self.handle is not None:
            self.handle.close()
            self.files.pop().unlink(missing_ok=True)
            self.handle = None
        return self.files


def _path_of(url: str | None) -> str:
    """The path of a URL, for messages (no host, no credentials, no query)."""
    return urlsplit(url or "").path or "/"


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _check_url(url: str) -> None:
    """Refuse what is not an http(s) URL with a host (and a valid port)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise DicomWebError(f"{safe_url(url)}: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DicomWebError(
            f"{safe_url(url)}: give the DICOMweb root as an http:// or https:// URL with a host "
            "(e.g. http://pacs:8042/dicom-web)"
        )


def _session(url: str, limits: DicomwebLimits) -> tuple[str, BudgetedSession]:
    """The URL without credentials and a session that carries them."""
    session = BudgetedSession(limits)
    parts = urlsplit(url)
    user, password = parts.username, parts.password
    if parts.username is not None:
        host = parts.hostname or ""
        url = urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))
    token = os.environ.get(TOKEN_ENV)
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    else:
        user = user or os.environ.get(USER_ENV)
        password = password or os.environ.get(PASSWORD_ENV)
        if user:
            session.auth = (user, password or "")
    return url, session


def _reason(exc: Exception) -> str:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        if code in (401, 403):
            return (
                f"HTTP {code}: the server refused the credentials (set {USER_ENV} and "
                f"{PASSWORD_ENV}, or {TOKEN_ENV})"
            )
        return f"HTTP {code} {exc.response.reason}"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect (is the server running, and is the URL its DICOMweb root?)"
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    if isinstance(exc, LungcadError):
        return str(exc)
    text = " ".join(str(exc).split())[:300]
    return f"malformed or unexpected answer ({type(exc).__name__}: {text})"


def _boundary(response: requests.Response) -> bytes:
    """The boundary of a multipart answer; ValueError when it is not one."""
    content_type = response.headers.get("Content-Type", "")
    media, *options = (part.strip() for part in content_type.split(";"))
    if media.lower() != "multipart/related":
        raise ValueError(f"answer is {media or 'untyped'}, not multipart/related")
    for option in options:
        key, _, value = option.partition("=")
        if key.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').encode("latin-1")
    raise ValueError("multipart answer without a boundary")


def _not_an_instance(path: Path) -> str:
    """Why a retrieved part is not a DICOM instance lungcad can reference, or ''."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for broken files
        return f"not a readable DICOM file ({type(exc).__name__})"
    if not is_uid(str(ds.get("SOPClassUID", ""))) or not is_uid(str(ds.get("SOPInstanceUID", ""))):
        return "not a storable DICOM instance (no valid SOPClassUID/SOPInstanceUID)"
    return ""


def _first_value(item: object, tag: str) -> object:
    """The first value of ``tag`` in one DICOM JSON item of a query answer (None when the
    answer does not hold one)."""
    if not isinstance(item, dict):
        return None
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


@dataclass
class Pacs:
    """A DICOMweb endpoint, reached and authenticated (``Pacs.connect``)."""

    url: str  # as the user gave it, for messages (shown with ``safe_url``)
    client: object = field(repr=False)
    limits: DicomwebLimits = field(default_factory=DicomwebLimits)
    root: str = ""  # the URL without credentials
    session: BudgetedSession | None = field(default=None, repr=False)

    @classmethod
    def connect(cls, url: str, limits: DicomwebLimits | None = None) -> Pacs:
        """Open the endpoint and check that it answers a query with our credentials.

        Raises:
            DicomWebError: not an http(s) URL, unreachable, refused or not a DICOMweb root.
        """
        from dicomweb_client.api import DICOMwebClient

        limits = limits or DicomwebLimits()
        _check_url(url)
        bare, session = _session(url, limits)
        try:
            client = DICOMwebClient(bare, session=session)
        except Exception as exc:  # dicomweb-client checks the URL its own way
            raise DicomWebError(f"{safe_url(url)}: {_reason(exc)}") from exc
        pacs = cls(url, client, limits, bare.rstrip("/"), session)
        # No request is retried: dicomweb-client's retries repeat any failure (a deadline or
        # a byte budget included) five times with growing waits; a series that fails is one
        # line, and the next run asks again.
        client.set_http_retry_params(retry=False)
        try:
            client.search_for_studies(limit=1)
        except Exception as exc:  # requests and dicomweb-client raise many types
            raise DicomWebError(f"{safe_url(url)}: {_reason(exc)}") from exc
        return pacs

    def _fail(self, what: str, exc: Exception) -> DicomWebError:
        return DicomWebError(f"{safe_url(self.url)}: {what}: {_reason(exc)}")

    def _pages(self, what: str, search: Callable[..., Any], key: str, **query: Any) -> list[dict]:
        """Every item of a paged query: pages of ``page_size`` until one brings nothing new
        (the end, or a server that ignores the offset), at most ``max_pages`` pages.

        Raises:
            DicomWebError: the query fails, or the answer is over a limit.
        """
        limits = self.limits
        items: list[dict] = []
        seen: set[object] = set()
        for _ in range(limits.max_pages):
            try:
                page = search(**query, limit=limits.page_size, offset=len(items))
            except Exception as exc:  # requests and dicomweb-client raise many types
                raise self._fail(what, exc) from exc
            if not isinstance(page, list):
                raise DicomWebError(f"{safe_url(self.url)}: {what}: the answer is not a list")
            new = []
            for item in page:
                value = _first_value(item, key)
                marker = value if isinstance(value, str) else repr(item)[:200]
                if marker not in seen:
                    seen.add(marker)
                    new.append(item)
            if not new:
                return items
            items.extend(new)
        raise DicomWebError(
            f"{safe_url(self.url)}: {what}: still more after limits.dicomweb.max_pages = "
            f"{limits.max_pages} pages of {limits.page_size}"
        )

    def ct_series(self, study_uid: str) -> tuple[list[str], list[tuple[str, str]]]:
        """The study's CT series UIDs and (series, reason) for each series left out.

        Raises:
            DicomWebError: the query fails, or the server has no such study.
        """
        if not is_uid(study_uid):
            raise DicomWebError(f"--study {study_uid!r} is not a DICOM UID")
        found = self._pages(
            f"study {study_uid}: series query",
            self.client.search_for_series,
            _SERIES_UID,
            study_instance_uid=study_uid,
        )
        if not found:
            raise DicomWebError(
                f"{safe_url(self.url)}: no study {study_uid} (check the StudyInstanceUID)"
            )
        ct, skipped = [], []
        for k, s in enumerate(found):
            uid = _first_value(s, _SERIES_UID)
            modality = _first_value(s, _MODALITY)
            if not is_uid(uid):
                skipped.append((f"answer item {k}", "no valid SeriesInstanceUID: skipped"))
            elif modality == "CT":
                ct.append(uid)
            else:
                shown = modality if isinstance(modality, str) else "missing"
                skipped.append((uid, f"modality {shown[:16]}, not CT: skipped"))
        return sorted(ct), skipped

    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> list[str]:
        """Write every instance of a series into ``folder`` (WADO-RS, one request, each
        instance written to its file as it arrives); notes on the instances left out.

        Raises:
            DicomWebError: the retrieval fails, or is over a limit.
        """
        limits = self.limits
        folder.mkdir(parents=True, exist_ok=True)
        url = f"{self.root}/studies/{study_uid}/series/{series_uid}"
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        writer: PartWriter | None = None

        def consume(chunk: bytes, response: requests.Response) -> None:
            nonlocal writer
            if writer is None:
                writer = PartWriter(
                    _boundary(response), folder, limits.max_response_bytes, limits.max_instances
                )
            writer.feed(chunk)

        try:
            self.session.fetch(url, {"Accept": accept}, consume)
        except Exception as exc:  # requests raises many types; ours say which limit
            raise self._fail(f"series {series_uid}: retrieve", exc) from exc
        finally:
            files = writer.close() if writer is not None else []
        notes = []
        if writer is not None and writer.state != "end":
            notes.append("the answer ended before its closing boundary (read as it came)")
        for path in files:
            reason = _not_an_instance(path)
            if reason:
                path.unlink()
                notes.append(f"instance {path.stem}: {reason}: left out")
        return notes

    def store(self, study_uid: str, files: list[Path]) -> None:
        """Store ``files`` in the study in one STOW-RS request: all of them or none.

        When the server takes only some, those are deleted again where the server allows
        it.

        Raises:
            DicomWebError: naming the objects that did not arrive (and any left behind).
        """
        datasets = [pydicom.dcmread(f) for f in files]
        names = {str(ds.SOPInstanceUID): f.name for ds, f in zip(datasets, files)}
        try:
            response = self.client.store_instances(datasets, study_instance_uid=study_uid)
        except Exception as exc:  # requests and dicomweb-client raise many types
            raise self._fail(
                f"study {study_uid}: store of {', '.join(names.values())} (none arrived)", exc
            ) from exc
        try:
            stored = {
                str(item.get("ReferencedSOPInstanceUID", ""))
                for item in getattr(response, "ReferencedSOPSequence", [])
            }
        except Exception as exc:  # a malformed answer: which objects arrived is unknown
            raise self._fail(
                f"study {study_uid}: store of {', '.join(names.values())} (unconfirmed: the "
                "answer cannot be read, check the study)",
                exc,
            ) from exc
        missing = [name for uid, name in names.items() if uid not in stored]
        if not missing:
            return
        left = []
        for ds in datasets:
            if str(ds.SOPInstanceUID) in stored:
                try:
                    self.client.delete_instance(
                        study_uid, str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
                    )
                except Exception:  # the server may not allow DELETE
                    left.append(names[str(ds.SOPInstanceUID)])
        note = f"; stored and not removable: {', '.join(left)}" if left else ""
        raise DicomWebError(
            f"{safe_url(self.url)}: study {study_uid}: the server did not take "
            f"{', '.join(missing)}{note}"
        )
