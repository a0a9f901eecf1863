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
the offset ends the paging when a page brings nothing new) and a series may hold at most
``max_instances`` instances, which are retrieved one at a time, so no answer is ever held
beyond one instance. UIDs in an answer are used only when they are valid UIDs.
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
_MODALITY, _SERIES_UID, _SOP_UID = "00080060", "0020000E", "00080018"


class DicomWebError(LungcadError, RuntimeError):
    """The DICOMweb server cannot be reached, refuses us, lacks the study, does not take
    the objects or answers beyond the budget; the message names the URL (password hidden)
    and what to do."""


class OverBudgetError(LungcadError, RuntimeError):
    """An answer took longer or held more than ``limits.dicomweb`` allows."""


class BudgetedSession(requests.Session):
    """A requests session whose every request ends within ``request_deadline_s`` and whose
    answers are read in chunks up to ``max_response_bytes`` each and ``max_total_bytes``
    in all (decompressed sizes: a compressed answer is counted as it unpacks).

    A request runs in a worker thread; when the deadline passes, the caller gets an
    :class:`OverBudgetError` at once and the worker drops the rest of the answer.
    """

    def __init__(self, limits: DicomwebLimits) -> None:
        super().__init__()
        self.limits = limits
        self.received_bytes = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        limits = self.limits
        deadline = time.monotonic() + limits.request_deadline_s
        kwargs["stream"] = True
        kwargs["timeout"] = (CONNECT_TIMEOUT_S, limits.request_deadline_s)
        box: dict[str, Any] = {}
        cancelled = threading.Event()

        def fetch() -> None:
            try:
                response = requests.Session.send(self, request, **kwargs)
                box["response"] = response
                box["body"] = self._read(response, cancelled)
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
        response = box["response"]
        if box["body"] is None:
            raise OverBudgetError(f"{request.method} {_path_of(request.url)}: cancelled")
        response._content = box["body"]
        response._content_consumed = True
        return response

    def _read(self, response: requests.Response, cancelled: threading.Event) -> bytes | None:
        limits = self.limits
        chunks, size = [], 0
        with response:
            # read1: whatever has arrived, so that a trickle is checked at every byte.
            while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
                if cancelled.is_set():
                    return None
                size += len(chunk)
                if size > limits.max_response_bytes:
                    raise OverBudgetError(
                        f"{response.request.method} {_path_of(response.url)}: answer over "
                        f"limits.dicomweb.max_response_bytes = {limits.max_response_bytes}"
                    )
                if self.received_bytes + size > limits.max_total_bytes:
                    raise OverBudgetError(
                        "the server's answers of this run are over "
                        f"limits.dicomweb.max_total_bytes = {limits.max_total_bytes}"
                    )
                chunks.append(chunk)
        self.received_bytes += size
        return b"".join(chunks)


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


def _session(url: str, limits: DicomwebLimits) -> tuple[str, requests.Session]:
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
        pacs = cls(url, client, limits)
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

    def _pages(
        self, what: str, search: Callable[..., Any], key: str, cap: int, **query: Any
    ) -> list[dict]:
        """Every item of a paged query: pages of ``page_size`` until one brings nothing new
        (the end, or a server that ignores the offset), at most ``max_pages`` pages and
        ``cap`` items.

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
            if len(items) > cap:
                raise DicomWebError(
                    f"{safe_url(self.url)}: {what}: more than {cap} items, over the limit "
                    "(limits.dicomweb); raise it in params.yaml if the study is genuine"
                )
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
            self.limits.max_pages * self.limits.page_size,
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
        """Write every instance of a series into ``folder``, one request per instance;
        notes on the instances left out.

        Raises:
            DicomWebError: the instance query or a retrieval fails, or is over a limit.
        """
        limits = self.limits
        instances = self._pages(
            f"series {series_uid}: instance query",
            self.client.search_for_instances,
            _SOP_UID,
            limits.max_instances,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
        )
        notes = []
        uids = [_first_value(i, _SOP_UID) for i in instances]
        if any(not is_uid(u) for u in uids):
            notes.append(
                f"{sum(not is_uid(u) for u in uids)} instance(s) without a valid "
                "SOPInstanceUID in the server's answer: left out"
            )
        folder.mkdir(parents=True, exist_ok=True)
        for k, uid in enumerate(u for u in uids if is_uid(u)):
            try:
                ds = self.client.retrieve_instance(study_uid, series_uid, uid)
            except Exception as exc:  # requests and dicomweb-client raise many types
                raise self._fail(f"series {series_uid}: instance {uid}", exc) from exc
            try:
                ds.save_as(folder / f"{k:05d}.dcm", enforce_file_format=True)
            except Exception as exc:  # a dataset pydicom cannot write as a file
                text = " ".join(str(exc).split())[:200]
                notes.append(f"instance {uid}: not a storable DICOM instance ({text}): left out")
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
