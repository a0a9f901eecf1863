#!/usr/bin/env bash
# The Debian packages lungcad's tests use: Orthanc and its DICOMweb plugin (a real PACS for
# the DICOMweb round trip, started on loopback by the tests) and dcmtk (dsrdump renders the
# SR). Needs root or sudo; prints what it could not do and leaves the rest to the tests,
# which say loudly which of them did not run.
set -euo pipefail
PACKAGES=(orthanc orthanc-dicomweb dcmtk)
if command -v Orthanc >/dev/null && [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] \
    && command -v dsrdump >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "no apt-get here: install ${PACKAGES[*]} by hand for the PACS round-trip tests" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "not root and no sudo: run 'sudo apt-get install ${PACKAGES[*]}' for the PACS round-trip tests" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# The packages' own service is not needed (the tests start Orthanc themselves); where
# invoke-rc.d may not start services it says so, which is fine.
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null; }; then
  echo "apt-get could not install ${PACKAGES[*]}: the PACS round-trip tests will be skipped" >&2
fi
