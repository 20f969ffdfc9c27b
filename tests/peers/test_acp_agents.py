"""End to end: omk driving REAL ACP agents of six vendors, offline --
Claude Code (through @agentclientprotocol/claude-agent-acp, against
fake_anthropic.py), qwen-code (`qwen --acp --auth-type openai`, against
fake_llm.py), Gemini CLI (`gemini --acp`, against fake_gemini.py), Codex
(through @agentclientprotocol/codex-acp, against fake_responses.py), opencode
(`opencode acp`, against fake_llm.py) and `kimi acp` (kimi-cli 1.51.0,
against fake_llm.py) -- in mixed teams, alone, in doctor and agents list, and
in a chat.

tests/peers/setup-acp-agents.sh installs the npm agents (and a Node 22)
into .acp-agents/; `make peers` runs it. A missing agent skips locally and
fails with CI=true or OMK_REQUIRE_PEERS=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from kimi_env import (  # noqa: E402
    FakeLLM,
    kimi_bin,
    omk_env,
    prepare_kimi_acp,
    proc_alive,
    skip_unless_kimi,
    team_events,
)

skip_unless_kimi()

OMK = str(Path(os.environ.get("OMK_BIN") or REPO / "target" / "debug" / "omk").resolve())
AGENTS_DIR = Path(os.environ.get("ACP_AGENTS_DIR") or REPO / ".acp-agents")


NPM_AGENTS = ("claude", "qwen", "gemini", "codex", "opencode")
# Run through omk's built-in profiles (the others through [agents.NAME]).
BUILT_IN_AGENTS = ("gemini", "codex", "opencode")


def installed_agents() -> dict[str, list[str]]:
    """`setup-acp-agents.sh` prints `NAME=<command line>` per agent (it is
    idempotent: a second run only checks)."""
    if (AGENTS_DIR / ".unavailable").exists():
        why = (AGENTS_DIR / ".unavailable").read_text().strip()
    else:
        r = subprocess.run(["bash", str(HERE / "setup-acp-agents.sh")], capture_output=True, text=True)
        found = dict(l.split("=", 1) for l in r.stdout.splitlines() if "=" in l)
        if r.returncode == 0 and set(NPM_AGENTS) <= found.keys():
            return {k: v.split() for k, v in found.items()}
        why = f"setup-acp-agents.sh: {r.stderr.strip()[-500:]}"
    if os.environ.get("CI") == "true" or os.environ.get("OMK_REQUIRE_PEERS") == "1":
        pytest.fail(f"real ACP agents required but: {why}", pytrace=False)
    pytest.skip(f"SKIPPED: {why}", allow_module_level=True)


AGENTS = installed_agents()

CLAUDE_ENV = {
    "IS_SANDBOX": "1",  # omk's tests run as root
    "ANTHROPIC_API_KEY": "sk-fake",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_ENABLE_PROMPT_SUGGESTION": "false",
}
QWEN_ENV = {
    "OPENAI_API_KEY": "sk-fake",
    "OPENAI_MODEL": "fake-model",
    "QWEN_TELEMETRY_ENABLED": "false",
    "QWEN_USAGE_STATISTICS_ENABLED": "false",
}
QWEN_SETTINGS = {
    "general": {"enableAutoUpdate": False},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    # Without "default" qwen's classifier approves tools itself: no permission requests.
    "tools": {"approvalMode": "default"},
    "memory": {"enableManagedAutoMemory": False, "enableManagedAutoDream": False},
    "ui": {"enableFollowupSuggestions": False},
}

GEMINI_ENV = {
    "GEMINI_API_KEY": "fake-gemini-key",
    # One process instead of a relaunched child (half the start-up time).
    "GEMINI_CLI_NO_RELAUNCH": "1",
}
GEMINI_SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    # "default" asks before edits (session/request_permission).
    "general": {"defaultApprovalMode": "default", "enableAutoUpdate": False,
                "enableAutoUpdateNotification": False},
    # Usage statistics are what it would otherwise try to reach at start.
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
}
# omk's built-in `codex` profile sets INITIAL_AGENT_MODE=read-only (the only
# mode in which Codex asks before an edit) and `opencode` sets
# OPENCODE_PERMISSION to ask: the rig runs both (and `gemini`) as built-in
# profiles, found on PATH, so those defaults are what is tested.
CODEX_ENV = {"FAKE_RESPONSES_API_KEY": "sk-fake"}


def codex_config(port: int) -> str:
    """$CODEX_HOME/config.toml: a Responses provider on the fake, nothing
    that reaches out (plugins would `git ls-remote` GitHub at start)."""
    return f"""model = "gpt-5.5"
model_provider = "fake"
check_for_update_on_startup = false
web_search = "disabled"

[model_providers.fake]
name = "Fake Responses"
base_url = "http://127.0.0.1:{port}/v1"
env_key = "FAKE_RESPONSES_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[features]
plugins = false
apps = false
plugin_discovery_prefetch = false
multi_agent = false

[analytics]
enabled = false

[feedback]
enabled = false

[history]
persistence = "none"
"""


OPENCODE_ENV = {
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1",
}


def opencode_config(port: int) -> dict:
    """An openai-compatible provider on the fake (no permissions: the
    built-in profile's OPENCODE_PERMISSION makes edits and commands ask)."""
    return {
        "$schema": "https://opencode.ai/config.json",
        "model": "fake/fake-model",
        "small_model": "fake/fake-model",
        "autoupdate": False,
        "share": "disabled",
        "enabled_providers": ["fake"],
        "provider": {"fake": {
            "npm": "@ai-sdk/openai-compatible", "name": "Fake",
            "options": {"baseURL": f"http://127.0.0.1:{port}/v1", "apiKey": "fake"},
            "models": {"fake-model": {"name": "fake-model"}},
        }},
    }


def toml_profile(name: str, command: list[str], env: dict[str, str]) -> str:
    pairs = ", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items())
    return (f"[agents.{name}]\ncommand = {json.dumps(command)}\nprotocol = \"acp\"\n"
            f"env = {{ {pairs} }}\nstart_timeout_secs = 90\n\n")


@pytest.fixture()
def rig(tmp_path):
    openai = FakeLLM(tmp_path / "openai.jsonl")
    anthropic = FakeLLM(tmp_path / "anthropic.jsonl", script="fake_anthropic.py")
    gemini = FakeLLM(tmp_path / "gemini.jsonl", script="fake_gemini.py")
    responses = FakeLLM(tmp_path / "responses.jsonl", script="fake_responses.py")
    env = omk_env(tmp_path, openai.port)
    home = Path(env["HOME"])
    prepare_kimi_acp(env, tmp_path)
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    (home / ".claude" / "settings.json").write_text('{"permissions":{"defaultMode":"default"}}')
    (home / ".qwen").mkdir(parents=True, exist_ok=True)
    (home / ".qwen" / "settings.json").write_text(json.dumps(QWEN_SETTINGS))
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(GEMINI_SETTINGS))
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(codex_config(responses.port))
    opencode_cfg = tmp_path / "opencode.json"
    opencode_cfg.write_text(json.dumps(opencode_config(openai.port)))
    xdg = {f"XDG_{k}_HOME": str(tmp_path / "xdg" / k.lower()) for k in ("DATA", "CACHE", "STATE")}
    cfg = tmp_path / "omk.toml"
    cfg.write_text(
        "[team]\nstop_grace_secs = 3\nheartbeat_secs = 1\nlease_secs = 120\n\n"
        + toml_profile("claude", AGENTS["claude"],
                       {**CLAUDE_ENV, "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{anthropic.port}"})
        + toml_profile("qwen", AGENTS["qwen"],
                       {**QWEN_ENV, "OPENAI_BASE_URL": f"http://127.0.0.1:{openai.port}/v1"})
        + toml_profile("kimi-acp", [str(kimi_bin()), "acp"], {})
        + '[agents.ghost]\ncommand = ["/nonexistent/ghost-agent"]\nprotocol = "acp"\n'
    )
    # gemini, codex and opencode as omk's built-in profiles: on PATH, with
    # Node 22 first (their launchers are `#!/usr/bin/env node`).
    bins = [str(AGENTS_DIR / a / "node_modules" / ".bin") for a in BUILT_IN_AGENTS]
    node_dir = str(Path(AGENTS["gemini"][0]).parent)
    env["PATH"] = os.pathsep.join([node_dir, *bins, env.get("PATH", os.defpath)])
    env.update(GEMINI_ENV, GOOGLE_GEMINI_BASE_URL=f"http://127.0.0.1:{gemini.port}")
    env.update(CODEX_ENV, CODEX_HOME=str(codex_home))
    env.update(OPENCODE_ENV, **xdg, OPENCODE_CONFIG=str(opencode_cfg))
    env["OMK_CONFIG"] = str(cfg)
    env["OMK_STATE_DIR"] = str(tmp_path / "state")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    work = tmp_path / "proj"
    work.mkdir()
    try:
        yield {"env": env, "work": work, "state": tmp_path / "state",
               "openai": openai, "anthropic": anthropic, "gemini": gemini, "responses": responses}
    finally:
        for fake in (openai, anthropic, gemini, responses):
            fake.stop()


def omk(rig, *args, stdin=None, timeout=300):
    return subprocess.run([OMK, *args], cwd=rig["work"], env=rig["env"], capture_output=True,
                          text=True, timeout=timeout, input=stdin)


def events(rig, team):
    return team_events(rig["state"], team)


def alive(pid: int) -> bool:
    return proc_alive(pid)


def test_a_team_of_claude_qwen_and_kimi_acp_writes_through_approvals(rig):
    r = omk(
        rig, "team", "run", "1:executor@claude,1:executor@qwen,1:reviewer@kimi-acp",
        "three vendors, three files",
        "--subtask", "[write:one.txt:first file]",
        "--subtask", "[write:two.txt:second file]",
        "--subtask", "[write:three.txt:third file]",
        "--name", "vendors", "--json",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["phase"] == "Completed", json.dumps(doc, indent=1)[-3000:]
    assert [w["agent"] for w in doc["workers"]] == ["claude", "qwen", "kimi-acp"]
    written = {p.name: p.read_text() for p in rig["work"].iterdir() if p.suffix == ".txt"}
    assert written == {"one.txt": "first file", "two.txt": "second file", "three.txt": "third file"}
    ran = {t["agent"] for t in doc["tasks"]}
    decisions = [e["payload"] for e in events(rig, "vendors") if e["kind"] == "approval_decided"]
    assert len(decisions) == 3 and all(d["decision"] == "approve" for d in decisions), decisions
    assert all(d["action"] == "edit file" for d in decisions), decisions
    agents = doc["agents"]
    # Tokens as each agent reports them: Claude on its answers (with cost),
    # qwen in _meta.usage, kimi acp none.
    if "claude" in ran:
        assert agents["claude"]["tokens"] > 0 and agents["claude"]["cost"]["currency"] == "USD", agents
    if "qwen" in ran:
        assert agents["qwen"]["tokens"] > 0, agents
    assert agents["kimi-acp"]["tokens"] == 0
    assert sum(a["tokens"] for a in agents.values()) == doc["tokens"]
    for e in events(rig, "vendors"):
        if e["kind"] == "worker_started":
            assert not alive(e["payload"]["agent_pid"])


@pytest.mark.parametrize("agent", NPM_AGENTS)
def test_each_vendor_alone_writes_a_new_file_through_an_approval(rig, agent):
    r = omk(rig, "team", "run", f"1:executor@{agent}", "alone",
            "--subtask", f"[write:{agent}.txt:by {agent}]", "--name", f"solo-{agent}", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["phase"] == "Completed", json.dumps(doc, indent=1)[-3000:]
    assert (rig["work"] / f"{agent}.txt").read_text().rstrip("\n") == f"by {agent}"
    assert doc["tasks"][0]["agent"] == agent
    decisions = [e["payload"] for e in events(rig, f"solo-{agent}") if e["kind"] == "approval_decided"]
    assert [(d["action"], d["decision"]) for d in decisions] == [("edit file", "approve")], decisions
    assert doc["agents"][agent]["tokens"] > 0, doc["agents"]
    for e in events(rig, f"solo-{agent}"):
        if e["kind"] == "worker_started":
            assert not alive(e["payload"]["agent_pid"])


@pytest.mark.parametrize("agent", ("codex", "opencode"))
def test_agents_that_write_files_themselves_are_confined_by_the_permission_decision(rig, agent):
    # Codex and opencode write files themselves after asking (not through
    # fs/write_text_file): workdir-edits must refuse an edit outside the work
    # dir in the permission answer, and then nothing may be written.
    outside = rig["work"].parent / f"outside-{agent}.txt"
    r = omk(rig, "team", "run", f"1:executor@{agent}", "escape",
            "--subtask", f"[write:{outside}:escaped]", "--name", f"escape-{agent}", "--json")
    assert r.returncode in (0, 1), r.stderr[-3000:]
    decisions = [e["payload"] for e in events(rig, f"escape-{agent}") if e["kind"] == "approval_decided"]
    assert decisions and all(d["decision"] == "reject" for d in decisions), decisions
    assert any(str(outside.parent) in json.dumps(d) for d in decisions), json.dumps(decisions, indent=1)
    assert not outside.exists()


def test_a_team_of_gemini_codex_and_opencode_writes_through_approvals(rig):
    r = omk(
        rig, "team", "run", "1:executor@gemini,1:executor@codex,1:executor@opencode",
        "three more vendors, three files",
        "--subtask", "[write:four.txt:fourth file]",
        "--subtask", "[write:five.txt:fifth file]",
        "--subtask", "[write:six.txt:sixth file]",
        "--name", "more-vendors", "--json",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["phase"] == "Completed", json.dumps(doc, indent=1)[-3000:]
    assert [w["agent"] for w in doc["workers"]] == ["gemini", "codex", "opencode"]
    written = {p.name: p.read_text().rstrip("\n") for p in rig["work"].iterdir() if p.suffix == ".txt"}
    assert written == {"four.txt": "fourth file", "five.txt": "fifth file", "six.txt": "sixth file"}
    decisions = [e["payload"] for e in events(rig, "more-vendors") if e["kind"] == "approval_decided"]
    assert len(decisions) == 3 and all(d["decision"] == "approve" for d in decisions), decisions
    ran = {t["agent"] for t in doc["tasks"]}
    assert all(doc["agents"][a]["tokens"] > 0 for a in ran), doc["agents"]
    assert sum(a["tokens"] for a in doc["agents"].values()) == doc["tokens"]


def test_doctor_and_agents_list_on_installed_and_missing_agents(rig):
    r = omk(rig, "doctor", "--json", timeout=240)
    report = json.loads(r.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    for name in (*NPM_AGENTS, "kimi-acp"):
        c = checks[f"agent:{name}"]
        assert c["status"] == "ok", c
        assert c["protocol_version"] == 1, c
        assert c["agent_info"]["name"], c
    ghost = checks["agent:ghost"]
    assert ghost["status"] == "error" and "not found" in ghost["detail"], ghost
    assert report["status"] == "unhealthy"  # because of the ghost
    r = omk(rig, "agents", "list", "--json")
    assert r.returncode == 0, r.stderr
    listed = {a["name"]: a for a in json.loads(r.stdout)["agents"]}
    assert listed["claude"]["installed"] and listed["claude"]["source"] == "config"
    assert listed["qwen"]["installed"]
    for name in BUILT_IN_AGENTS:
        assert listed[name]["installed"] and listed[name]["source"] == "built_in", listed[name]
    assert not listed["ghost"]["installed"]


def test_chat_with_claude_for_two_turns_and_a_resume(rig):
    r = omk(rig, "chat", "--new", "--agent", "claude", stdin="first [answer:one]\nsecond [answer:two]\n")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines() == ["one", "two"], r.stdout
    sessions = sorted((rig["state"] / "sessions").iterdir())
    assert len(sessions) == 1
    sid = sessions[0].name
    r = omk(rig, "chat", "--session", sid, "--agent", "claude", stdin="third [answer:three]\n")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "three"
    conv = [json.loads(l) for l in (sessions[0] / "conversation.jsonl").read_text().splitlines()]
    assert [m["role"] for m in conv] == ["user", "assistant"] * 3
    # The resumed agent got the earlier conversation as context.
    bodies = [json.dumps(r.get("body", {})) for r in rig["anthropic"].records()]
    assert any("first [answer:one]" in b and "third [answer:three]" in b for b in bodies)
