#!/usr/bin/env bash
# The Python binding's test suite, after `cargo build --workspace`:
#   1. build the wheel with maturin into target/wheels,
#   2. install it into .venv (no deps, replacing any previous build),
#   3. run pytest in tests/python against the installed wheel,
#   4. type-check tests/python/typecheck_example.py with mypy --strict.
# Exits non-zero on the first failure. `make py-test` calls this.
#
# Environment: VENV (default <repo>/.venv), OMK_BIN (default
# <repo>/target/debug/omk), OMK_KIMI_BIN (default the bundled scripted agent),
# extra pytest arguments as this script's arguments.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
VPY="$VENV/bin/python"
TARGET="$REPO/target"

# cargo (pyo3's build script) and maturin must use the same interpreter.
export PYO3_PYTHON="$VPY"
export OMK_BIN="${OMK_BIN:-$TARGET/debug/omk}"
export OMK_KIMI_BIN="${OMK_KIMI_BIN:-$TARGET/debug/omk-scripted-agent}"

for f in "$VPY" "$VENV/bin/maturin" "$OMK_BIN" "$OMK_KIMI_BIN"; do
  if [ ! -x "$f" ]; then
    echo "run.sh: missing $f (make venv; cargo build --workspace)" >&2
    exit 2
  fi
done
if ! "$VPY" -m mypy --version >/dev/null 2>&1; then
  echo "run.sh: mypy is not installed in $VENV (pip install -r requirements-dev.txt)" >&2
  exit 2
fi

cd "$REPO"
rm -rf "$TARGET/wheels"
echo "== maturin build"
"$VENV/bin/maturin" build -q --out "$TARGET/wheels"
wheels=("$TARGET"/wheels/omk-*.whl)
if [ "${#wheels[@]}" -ne 1 ]; then
  echo "run.sh: expected one wheel, found: ${wheels[*]}" >&2
  exit 1
fi
echo "== pip install ${wheels[0]##*/}"
"$VPY" -m pip install -q --force-reinstall --no-deps "${wheels[0]}"

echo "== pytest tests/python"
(cd "$REPO/tests/python" && "$VPY" -m pytest -q -p no:cacheprovider "$@")

echo "== mypy --strict tests/python/typecheck_example.py"
(cd "$REPO/tests/python" && "$VPY" -m mypy --strict --cache-dir=/dev/null typecheck_example.py)

echo "py-test: all passed"
