#!/usr/bin/env bash
# Set up the development environment (once) and run the whole test suite.
# Usage: bash tools/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${WAV2LIP_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# Re-running is cheap: pip skips what is already satisfied.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
"$VENV/bin/python" -m pip check
if [ -x tools/typecheck.sh ] || [ -f tools/typecheck.sh ]; then
  bash tools/typecheck.sh
fi
exec "$VENV/bin/python" -m pytest "$@"
