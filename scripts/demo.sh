#!/usr/bin/env bash
# Install everything, then run the demo: two private Orthanc servers on loopback, a generated sample,
# one replication, the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The demo's Orthanc launcher and sample generator live in tests/support (not in the installed package).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${COPYDICOM_VENV:-.venv}/bin/copydicom" demo "$@"
