#!/usr/bin/env bash
# Install everything, then run the whole test suite (unit, integration against real Orthanc and SeaweedFS
# servers started by fixtures, the fault suite) and the type check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${COPYDICOM_VENV:-.venv}"
"$VENV/bin/python" -m mypy copydicom
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
