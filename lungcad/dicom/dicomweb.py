"""A PACS over DICOMweb: find a study's CT series (QIDO-RS), retrieve them (WADO-RS) and
store derived objects back into the study (STOW-RS), with ``dicomweb-client``.

Credentials come from the environment, never from the command line and never into a log:
``LUNGCAD_DICOMWEB_TOKEN`` (a bearer token) or ``LUNGCAD_DICOMWEB_USER`` and
``LUNGCAD_DICOMWEB_PASSWORD`` (HTTP basic). A user and password written into the URL work
too; every message shows the URL with the password hidden.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pydicom
import requests

from lungcad.errors import LungcadError

TOKEN_ENV = "LUNGCAD_DICOMWEB_TOKEN"
USER_ENV = "LUNGCAD_DICOMWEB_USER"
PASSWORD_ENV = "LUNGCAD_DICOMWEB_PASSWORD"
#: Seconds to wait for the server (connect, read).
TIMEOUT_S = (10, 300)
_MODALITY, _SERIES_UID = "00080060", "0020000E"


class DicomWebError(LungcadError, RuntimeError):
    """The DICOMweb server cannot be reached, refuses us, lacks the study or does not take
    the objects; the message names the URL (password hidden) and what to do."""


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _session(url: str) -> tuple[str, requests.Session]:
    """The URL without credentials and a session that carries them."""
    session = requests.Session()
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
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Pacs:
    """A DICOMweb endpoint, reached and authenticated (``Pacs.connect``)."""

    url: str  # as the user gave it, for messages (shown with ``safe_url``)
    client: object = field(repr=False)

    @classmethod
    def connect(cls, url: str) -> Pacs:
        """Open the endpoint and check that it answers a query with our credentials.

        Raises:
            DicomWebError: unreachable, refused or not a DICOMweb root.
        """
        from dicomweb_client.api import DICOMwebClient

        bare, session = _session(url)
        client = DICOMwebClient(bare, session=session, timeout=TIMEOUT_S)
        pacs = cls(url, client)
        # The probe is not retried (dicomweb-client backs off for ~30 s by default); the
        # work after it is, as a busy server may need.
        client.set_http_retry_params(retry=False)
        try:
            client.search_for_studies(limit=1)
        except Exception as exc:  # requests and dicomweb-client raise many types
            raise DicomWebError(f"{safe_url(url)}: {_reason(exc)}") from exc
        client.set_http_retry_params()
        return pacs

    def _fail(self, what: str, exc: Exception) -> DicomWebError:
        return DicomWebError(f"{safe_url(self.url)}: {what}: {_reason(exc)}")

    def ct_series(self, study_uid: str) -> tuple[list[str], list[tuple[str, str]]]:
        """The study's CT series UIDs and (series, reason) for each series left out.

        Raises:
            DicomWebError: the query fails, or the server has no such study.
        """
        try:
            found = self.client.search_for_series(study_instance_uid=study_uid, get_remaining=True)
        except Exception as exc:  # requests and dicomweb-client raise many types
            raise self._fail(f"study {study_uid}: series query", exc) from exc
        if not found:
            raise DicomWebError(
                f"{safe_url(self.url)}: no study {study_uid} (check the StudyInstanceUID)"
            )
        ct, skipped = [], []
        for s in found:
            uid = s.get(_SERIES_UID, {}).get("Value", [""])[0]
            modality = s.get(_MODALITY, {}).get("Value", [""])[0]
            if modality == "CT":
                ct.append(uid)
            else:
                skipped.append((uid, f"modality {modality or 'missing'}, not CT: skipped"))
        return sorted(ct), skipped

    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> int:
        """Write every instance of a series into ``folder``; the number written.

        Raises:
            DicomWebError: the retrieval fails.
        """
        try:
            instances = self.client.retrieve_series(study_uid, series_uid)
        except Exception as exc:  # requests and dicomweb-client raise many types
            raise self._fail(f"series {series_uid}: retrieve", exc) from exc
        folder.mkdir(parents=True, exist_ok=True)
        for k, ds in enumerate(instances):
            ds.save_as(folder / f"{k:05d}.dcm", enforce_file_format=True)
        return len(instances)

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
        stored = {
            str(item.ReferencedSOPInstanceUID)
            for item in getattr(response, "ReferencedSOPSequence", [])
        }
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
