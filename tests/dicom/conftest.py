"""Fixtures of the DICOM tests: a real Orthanc for the PACS round trip."""

from __future__ import annotations

import pytest

from tests.tools.orthanc import orthanc_missing, running_orthanc


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A real Orthanc on loopback (``running_orthanc``); skipped, with the command that
    installs it, where it is missing."""
    missing = orthanc_missing()
    if missing:
        pytest.skip(f"{missing}: the PACS round-trip test did not run")
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as url:
        yield url
