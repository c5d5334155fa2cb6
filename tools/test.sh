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
# bpy's wheel carries a newer manylinux tag than pip detects, so `pip check` reports it as
# "not supported on this platform" although it imports and runs; every other finding fails.
problems=$("$VENV/bin/python" -m pip check 2>&1 | grep -v -e '^bpy [0-9.]* is not supported on this platform$' \
  -e '^No broken requirements found.$' || true)
if [ -n "$problems" ]; then echo "$problems"; exit 1; fi
if [ -x tools/typecheck.sh ] || [ -f tools/typecheck.sh ]; then
  bash tools/typecheck.sh
fi
exec "$VENV/bin/python" -m pytest "$@"
