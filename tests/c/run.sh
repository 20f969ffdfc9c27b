#!/usr/bin/env bash
# Build and run the C tests of the omk C ABI (what `make c-test` calls).
#
#   bash tests/c/run.sh
#
# Assumes `cargo build --workspace` already ran (target/debug/libomk.so, the
# omk CLI and omk-scripted-agent). Checks that include/omk.h compiles as
# strict C11 and as C++17, builds every tests/c/test_*.c and example.c with
# strict C11 flags (and bench_call.c, which it does not run), builds a
# second libomk with the omk-ffi feature test-panic for test_panic.c, checks that
# docs/c-abi.md shows example.c as it is, and runs each
# program under valgrind when it is installed, in a private temp dir with
# OMK_KIMI_BIN pointing at the scripted agent. Prints each program's output
# and, last, `N passed, M failed`: the sum of the programs' own counts (a
# program that fails without saying so, a build failure and a failed header
# check each count as one failure). Exits non-zero when anything failed.
# With CI=true or OMK_REQUIRE_PEERS=1 a missing valgrind is a failure.
set -uo pipefail
SECONDS=0

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
LIBDIR="$ROOT/target/debug"
OUT="$ROOT/target/c-tests"

if [[ ! -f "$LIBDIR/libomk.so" || ! -x "$LIBDIR/omk-scripted-agent" ]]; then
  echo "run.sh: $LIBDIR/libomk.so or omk-scripted-agent is missing: run \`cargo build --workspace\` first" >&2
  exit 2
fi
if [[ -x "$LIBDIR/omk" ]]; then
  VERSION="$("$LIBDIR/omk" --version | cut -d' ' -f2)"
else
  VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
fi

CC="${CC:-gcc}"
CXX="${CXX:-g++}"
CFLAGS=(-std=c11 -Wall -Wextra -Werror -pedantic -pthread -g -I"$ROOT/include")
# A second libomk with the test-only omk-ffi feature `test-panic` (for
# test_panic.c), in its own target dir so target/debug/libomk.so is never
# touched. The first build there compiles omk-core's dependencies once
# (about a minute on 2 cores); later runs only relink when omk-ffi or
# omk-core changed. Only the cdylib is built (no 200 MB staticlib).
PANIC_TARGET="$ROOT/target/ffi-panic"
PANIC_LIBDIR="$PANIC_TARGET/debug"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/omk-c-tests.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT" "$TMP/tmp" "$TMP/home" "$TMP/xdg-config" "$TMP/xdg-state"

# cargo (rustup) finds its toolchains through HOME: pin them before HOME
# moves, for the test-panic build below.
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"

# Private environment: nothing from the user's omk state or config leaks in.
export TMPDIR="$TMP/tmp"
export HOME="$TMP/home"
export XDG_CONFIG_HOME="$TMP/xdg-config"
export XDG_STATE_HOME="$TMP/xdg-state"
export OMK_STATE_DIR="$TMP/state"
export OMK_KIMI_BIN="$LIBDIR/omk-scripted-agent"
unset OMK_CONFIG OMK_SCRIPTED_BEHAVIOUR

if command -v valgrind >/dev/null 2>&1; then
  # Definite leaks fail a test. The omk runtime threads and lazily built
  # regex caches may stay "possibly lost" or "still reachable": not shown.
  RUNNER=(valgrind -q --error-exitcode=99 --leak-check=full
          --errors-for-leak-kinds=definite --show-leak-kinds=definite)
  echo "== running under $(valgrind --version)"
else
  RUNNER=()
fi

passed=0
failed=0

fail() { echo "FAIL: $*"; failed=$((failed + 1)); }

if [[ ${#RUNNER[@]} -eq 0 ]]; then
  if [[ "${CI:-}" == "true" || "${OMK_REQUIRE_PEERS:-}" == "1" ]]; then
    # In CI (or when asked to require every peer tool) a missing valgrind
    # must not silently weaken the suite.
    fail "valgrind is not installed (required when CI=true or OMK_REQUIRE_PEERS=1)"
  else
    echo "== valgrind is not installed: running the C tests without it"
  fi
fi

# The header on its own, as strict C11 and as C++17.
if echo '#include "omk.h"' | "$CC" -std=c11 -Wall -Wextra -Werror -pedantic \
     -I"$ROOT/include" -x c -fsyntax-only -; then
  echo "ok: include/omk.h compiles as C11"; passed=$((passed + 1))
else
  fail "include/omk.h does not compile as C11"
fi
if "$CXX" -std=c++17 -Wall -Wextra -Werror -x c++ -fsyntax-only include/omk.h; then
  echo "ok: include/omk.h compiles as C++17"; passed=$((passed + 1))
else
  fail "include/omk.h does not compile as C++17"
fi

build() { # build NAME SOURCE [LIBDIR]: link against LIBDIR (default target/debug)
  local libdir="${3:-$LIBDIR}"
  "$CC" "${CFLAGS[@]}" -DOMK_EXPECTED_VERSION="\"$VERSION\"" "$2" \
    -L"$libdir" -lomk -Wl,-rpath,"$libdir" -o "$OUT/$1"
}

# docs/c-abi.md and README.md show example.c verbatim (the ```c block after its marker).
for doc in docs/c-abi.md README.md; do
  if diff -u tests/c/example.c <(awk '/^<!-- example.c -->$/ {m = 1; next}
       m && /^```c$/ {p = 1; next} p && /^```$/ {exit} p {print}' "$doc"); then
    echo "ok: $doc shows tests/c/example.c"; passed=$((passed + 1))
  else
    fail "the example in $doc differs from tests/c/example.c"
  fi
done

# The benchmark only has to build here.
if build bench_call_debug tests/c/bench_call.c; then
  echo "ok: bench_call.c builds"; passed=$((passed + 1))
else
  fail "bench_call.c does not build"
fi

run() { # run NAME [ARGS...]: one program in its own working directory
  # (NO_VALGRIND=1 run ...: run it directly even when valgrind is installed)
  local name="$1"; shift
  local cwd="$TMP/run-$name"
  local log="$TMP/$name.log"
  local -a runner=("${RUNNER[@]}")
  [[ -n "${NO_VALGRIND:-}" ]] && runner=()
  mkdir -p "$cwd"
  echo "== $name${NO_VALGRIND:+ (without valgrind)}"
  local started=$SECONDS
  (cd "$cwd" && "${runner[@]}" "$OUT/$name" "$@") >"$log" 2>&1
  local rc=$?
  cat "$log"
  local summary p=0 f=0
  summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)"
  if [[ -n "$summary" ]]; then
    p="${summary%% passed*}"
    f="${summary#*passed, }"; f="${f%% failed}"
  elif [[ $rc -eq 0 ]]; then
    p=1 # a program without counts (example.c) is one check
  fi
  if [[ $rc -ne 0 && $f -eq 0 ]]; then
    f=1
    [[ $rc -eq 99 ]] && echo "FAIL: $name: valgrind reported errors" \
                     || echo "FAIL: $name exited with status $rc"
  fi
  echo "== $name took $((SECONDS - started)) s"
  passed=$((passed + p))
  failed=$((failed + f))
}

for src in tests/c/test_*.c tests/c/example.c; do
  name="$(basename "$src" .c)"
  case "$name" in test_panic | test_faults) continue ;; esac # below
  if build "$name" "$src"; then
    run "$name"
  else
    fail "$src does not build"
  fi
done

# A real panic inside an extern "C" function, against the test-panic build;
# and the same program against the default build, where the op is unknown.
if build test_panic_absent tests/c/test_panic.c; then
  run test_panic_absent absent
else
  fail "tests/c/test_panic.c does not build"
fi
echo "== building libomk with --features test-panic in $PANIC_TARGET"
if "${CARGO:-cargo}" rustc -q -p omk-ffi --lib --features test-panic --crate-type cdylib \
     --target-dir "$PANIC_TARGET" && [[ -f "$PANIC_LIBDIR/libomk.so" ]]; then
  if build test_panic tests/c/test_panic.c "$PANIC_LIBDIR"; then
    run test_panic
  else
    fail "tests/c/test_panic.c does not build against $PANIC_LIBDIR"
  fi
else
  fail "cannot build libomk with the omk-ffi feature test-panic"
fi

# Agents that die, from a C host that keeps SIGPIPE's default action. Run
# without valgrind: its 40+ team runs with agent processes take minutes
# under valgrind, and valgrind changes the timing of the SIGPIPE races this
# test is about. OMK_FAULTS_VALGRIND=1 runs it under valgrind too.
if build test_faults tests/c/test_faults.c; then
  if [[ -n "${OMK_FAULTS_VALGRIND:-}" ]]; then
    run test_faults
  else
    NO_VALGRIND=1 run test_faults
  fi
else
  fail "tests/c/test_faults.c does not build"
fi

echo "== total time: ${SECONDS} s"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
