#!/usr/bin/env bash
# Install the real kimi-cli 1.51.0 into a private venv for omk's end-to-end tests.
#
#   tests/peers/setup-kimi.sh            -> venv at <repo>/.kimi-venv
#   KIMI_VENV=/some/dir setup-kimi.sh    -> venv there
#   KIMI_PYTHON=/path/to/python3.13 ...  -> use exactly this interpreter
#
# Idempotent: a venv whose `kimi --version` already reports 1.51.0 is reused.
# On success the LAST line of stdout is the absolute path of the kimi binary.
# Without a Python >= 3.13 it prints `SKIPPED: <reason>`, writes the reason to
# $VENV/.unavailable (the tests read it and skip) and exits 0 -- except with
# CI=true, OMK_REQUIRE_KIMI=1 or OMK_REQUIRE_PEERS=1, where it exits 1 (CI must
# not pass by skipping the real peer; the tests fail on the marker there too).
# Progress messages go to stderr so that stdout stays machine-readable.
#
# Never install or run kimi-cli 1.52.0 or newer: 1.52.0 is a deprecation stub
# whose `kimi` downloads and runs an installer. The version is pinned in
# kimi-requirements.txt and checked again after the install.
set -euo pipefail

KIMI_VERSION="1.51.0"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
REQS="$HERE/kimi-requirements.txt"
VENV="${KIMI_VENV:-$REPO/.kimi-venv}"
KIMI="$VENV/bin/kimi"
MARKER="$VENV/.unavailable"
STAMP="$VENV/.requirements.sha256"   # which kimi-requirements.txt the venv was built from

log() { printf 'setup-kimi: %s\n' "$*" >&2; }

# Check the metadata, then run `kimi --version` in a throw-away HOME (so that
# nothing touches ~/.kimi), and report whether it is exactly the pinned version.
kimi_is_pinned() {
    [ -x "$KIMI" ] && [ -x "$VENV/bin/python" ] || return 1
    local tmp out meta
    # Read the installed version from package metadata first: never execute the
    # `kimi` of another version (1.52.0's entry point runs an installer).
    meta="$("$VENV/bin/python" -c \
        'import importlib.metadata as m; print(m.version("kimi-cli"))' 2>/dev/null || true)"
    [ "$meta" = "$KIMI_VERSION" ] || return 1
    tmp="$(mktemp -d)"
    out="$(HOME="$tmp" KIMI_SHARE_DIR="$tmp/.kimi" KIMI_DISABLE_TELEMETRY=1 \
        KIMI_CLI_NO_AUTO_UPDATE=1 "$KIMI" --version 2>/dev/null || true)"
    rm -rf "$tmp"
    case "$out" in
        *"version $KIMI_VERSION"*) return 0 ;;
        *) return 1 ;;
    esac
}

# Print the path of a Python >= 3.13 that actually runs (pyenv shims exist on
# PATH even when the version they point to is not selected, so test each one).
find_python() {
    local cand root candidates=()
    if [ -n "${KIMI_PYTHON:-}" ]; then
        # explicit choice (also how the SKIPPED path is tested): no fallback
        candidates+=("$KIMI_PYTHON")
    else
        if command -v python3.13 >/dev/null 2>&1; then
            candidates+=("$(command -v python3.13)")
        fi
        if command -v pyenv >/dev/null 2>&1; then
            root="$(pyenv root 2>/dev/null || true)"
            if [ -n "$root" ]; then
                for cand in "$root"/versions/3.13*/bin/python3.13; do
                    [ -e "$cand" ] && candidates+=("$cand")
                done
            fi
        fi
        for cand in /root/.pyenv/versions/3.13*/bin/python3; do
            [ -e "$cand" ] && candidates+=("$cand")
        done
    fi
    for cand in "${candidates[@]+"${candidates[@]}"}"; do
        if [ -x "$cand" ] && "$cand" -c \
            'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 13) else 1)' \
            >/dev/null 2>&1; then
            printf '%s\n' "$cand"
            return 0
        fi
    done
    return 1
}

skip() {
    local reason="$1"
    mkdir -p "$VENV"
    printf '%s\n' "$reason" > "$MARKER"
    log "$reason"
    if [ "${CI:-}" = "true" ] || [ "${OMK_REQUIRE_KIMI:-}" = "1" ] \
        || [ "${OMK_REQUIRE_PEERS:-}" = "1" ]; then
        log "the real kimi-cli is required here (CI=true / OMK_REQUIRE_KIMI=1 / OMK_REQUIRE_PEERS=1): failing"
        echo "FAILED: $reason"
        exit 1
    fi
    echo "SKIPPED: $reason"
    exit 0
}

# Serialise concurrent runs (parallel make targets) on the same venv.
mkdir -p "$(dirname "$VENV")"
if command -v flock >/dev/null 2>&1; then
    LOCK="${TMPDIR:-/tmp}/omk-setup-kimi-$(printf '%s' "$VENV" | cksum | cut -d' ' -f1).lock"
    exec 9>"$LOCK"
    flock 9
fi

REQS_SUM="$(sha256sum "$REQS" | cut -d' ' -f1)"
if kimi_is_pinned; then
    rm -f "$MARKER"
    if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$REQS_SUM" ]; then
        log "kimi-requirements.txt changed: syncing the pins into $VENV"
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
            "$VENV/bin/python" -m pip install -q -r "$REQS" >&2
        kimi_is_pinned || { log "$KIMI no longer reports version $KIMI_VERSION"; exit 1; }
        printf '%s\n' "$REQS_SUM" > "$STAMP"
    fi
    log "kimi-cli $KIMI_VERSION already installed in $VENV"
    echo "$KIMI"
    exit 0
fi

if ! PY="$(find_python)"; then
    skip "no Python >= 3.13 found (tried ${KIMI_PYTHON:+KIMI_PYTHON=$KIMI_PYTHON, }python3.13 on PATH, \$(pyenv root)/versions/3.13*, /root/.pyenv/versions/3.13*); kimi-cli $KIMI_VERSION needs it"
fi
log "using $PY ($("$PY" -c 'import platform; print(platform.python_version())'))"

# Refuse to wipe a directory that is not ours.
if [ -d "$VENV" ] && [ ! -e "$VENV/pyvenv.cfg" ] && [ ! -e "$MARKER" ] \
    && [ -n "$(ls -A "$VENV" 2>/dev/null)" ]; then
    log "refusing to overwrite $VENV: it exists and is not a venv"
    exit 1
fi

start=$SECONDS
log "creating venv $VENV"
"$PY" -m venv --clear "$VENV"
log "installing $(grep -c '==' "$REQS") pinned packages from $REQS (20-90 s cold)"
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
    "$VENV/bin/python" -m pip install -q -r "$REQS" >&2

if ! kimi_is_pinned; then
    log "install finished but $KIMI does not report version $KIMI_VERSION"
    exit 1
fi
rm -f "$MARKER"
printf '%s\n' "$REQS_SUM" > "$STAMP"
log "kimi-cli $KIMI_VERSION ready in $((SECONDS - start)) s"
echo "$KIMI"
