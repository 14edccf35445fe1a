#!/usr/bin/env bash
# The scheduled-style "latest versions" job: install copydicom and its extras WITHOUT constraints.txt, at
# the newest releases pip finds, into a separate venv (default .venv-latest), then run the type check and
# the whole suite exactly as scripts/test.sh does. A failure here (and not in scripts/test.sh) means a new
# release of a dependency broke something: fix the code or cap the dependency in setup.cfg, then refresh
# the pins with `bash scripts/gen-constraints.sh .venv-latest`.
# Usage: bash scripts/test-latest.sh [pytest arguments, e.g. tests/unit]
set -euo pipefail
cd "$(dirname "$0")/.."
export COPYDICOM_VENV="${COPYDICOM_LATEST_VENV:-.venv-latest}"
export COPYDICOM_CONSTRAINTS=none
echo "latest: venv $COPYDICOM_VENV, no constraints"
exec bash scripts/test.sh "$@"
