#!/usr/bin/env bash
# Type-check the Blender add-on against the fake-bpy-module stubs of Blender 4.2 and 5.0 with
# pyright (which accepts Blender's `prop: bpy.props.X(...)` annotations; mypy does not).
# A 5.0-only or 4.2-only API used outside blender_addon/compat.py fails one of the two runs.
#
#   tools/typecheck.sh            # creates .venv-typecheck/ on first use (PyPI only), then checks
#   TYPECHECK_VENV=DIR tools/typecheck.sh
#
# Exit status: non-zero when either check finds an error, or when the self-test (a probe using a
# version-specific API must be rejected) does not fail as it should.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TYPECHECK_VENV:-$ROOT/.venv-typecheck}"
PYRIGHT_VERSION="${PYRIGHT_VERSION:-1.1.414}"
STUBS_42="${FAKE_BPY_42:-fake-bpy-module-4.2==20260730}"
STUBS_50="${FAKE_BPY_50:-fake-bpy-module-5.0==20260730}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/pyright" ] || [ ! -d "$VENV/stubs-4.2/bpy-stubs" ] || [ ! -d "$VENV/stubs-5.0/bpy-stubs" ]; then
  echo "typecheck: creating $VENV (pyright, fake-bpy-module 4.2 and 5.0)" >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "pyright[nodejs]==$PYRIGHT_VERSION"
  # The two stub sets both provide `bpy`: one target folder each, chosen per run via extraPaths.
  "$VENV/bin/pip" install -q --disable-pip-version-check --target "$VENV/stubs-4.2" "$STUBS_42"
  "$VENV/bin/pip" install -q --disable-pip-version-check --target "$VENV/stubs-5.0" "$STUBS_50"
fi

cd "$ROOT/tools"
status=0
for v in 4.2 5.0; do
  cfg="pyright-blender-$v.json"
  if [ "$VENV" != "$ROOT/.venv-typecheck" ]; then  # configs name the default folder: rewrite
    tmpcfg="$(mktemp "$ROOT/tools/.pyright-$v-XXXX.json")"
    sed "s#../.venv-typecheck/#$VENV/#" "$cfg" > "$tmpcfg"
    cfg="$tmpcfg"
  fi
  echo "typecheck: blender_addon against Blender $v stubs" >&2
  if ! "$VENV/bin/pyright" -p "$cfg"; then status=1; fi
  [ "${tmpcfg:-}" ] && rm -f "$tmpcfg" && tmpcfg=""
done

# Self-test: each stub set must reject the other version's API.
probe_dir="$(mktemp -d)"
trap 'rm -rf "$probe_dir"' EXIT
cat > "$probe_dir/probe_42.py" <<'PY'
from bpy.types import Context, SequenceEditor
def f(c: Context, ed: SequenceEditor) -> None:
    print(ed.sequences, c.selected_sequences)  # 4.x only
PY
cat > "$probe_dir/probe_50.py" <<'PY'
from bpy.types import Context, SequenceEditor
def f(c: Context, ed: SequenceEditor) -> None:
    print(ed.strips, c.selected_strips)  # 5.0 only
PY
for pair in "4.2:probe_50.py" "5.0:probe_42.py"; do
  v="${pair%%:*}"; probe="${pair#*:}"
  if "$VENV/bin/pyright" --pythonpath "$VENV/bin/python" -p "pyright-blender-$v.json" "$probe_dir/$probe" >/dev/null 2>&1; then
    echo "typecheck: self-test FAILED: the $v stubs accepted $probe" >&2
    status=1
  fi
done
[ $status -eq 0 ] && echo "typecheck: OK (4.2 and 5.0)" >&2
exit $status
