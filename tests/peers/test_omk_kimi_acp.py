"""End to end: omk driving the REAL `kimi acp` (kimi-cli 1.51.0) over the
Agent Client Protocol, offline, against fake_llm.py on 127.0.0.1 -- alone and
in one team with the real kimi over Wire.

`kimi acp` reads its config from $KIMI_SHARE_DIR/config.toml and wants a
login file before `session/new`; a dummy one is enough offline (docs/ACP.md).
Skips become failures with CI=true, OMK_REQUIRE_KIMI=1 or OMK_REQUIRE_PEERS=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
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

OMK = str(Path(os.environ.get("OMK_BIN") or HERE.parent.parent / "target" / "debug" / "omk").resolve())


@pytest.fixture()
def rig(tmp_path):
    llm = FakeLLM(tmp_path / "llm-requests.jsonl")
    env = omk_env(tmp_path, llm.port)
    prepare_kimi_acp(env, tmp_path)
    env["OMK_STATE_DIR"] = str(tmp_path / "state")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    cfg = tmp_path / "omk.toml"
    cfg.write_text(
        "[team]\nstop_grace_secs = 3\nheartbeat_secs = 1\n\n"
        f"[agents.kimi-acp]\ncommand = [{json.dumps(str(kimi_bin()))}, \"acp\"]\nprotocol = \"acp\"\n"
    )
    env["OMK_CONFIG"] = str(cfg)
    work = tmp_path / "proj"
    work.mkdir()
    try:
        yield {"env": env, "work": work, "state": tmp_path / "state", "llm": llm}
    finally:
        llm.stop()


def omk(rig, *args, timeout=180):
    return subprocess.run(
        [OMK, *args], cwd=rig["work"], env=rig["env"], capture_output=True, text=True, timeout=timeout
    )


def events(rig, team):
    return team_events(rig["state"], team)


def alive(pid: int) -> bool:
    return proc_alive(pid)


def test_kimi_acp_and_kimi_wire_in_one_team_write_through_approvals(rig):
    r = omk(
        rig, "team", "run", "1:executor@kimi-acp,1:reviewer", "write two files",
        "--subtask", "[write:acp.txt:written over ACP]",
        "--subtask", "[write:wire.txt:written over Wire]",
        "--name", "mixed", "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["phase"] == "Completed", doc
    assert [(w["role"], w["agent"]) for w in doc["workers"]] == [
        ("executor", "kimi-acp"), ("reviewer", "kimi")]
    assert doc["agents"]["kimi-acp"]["protocol"] == "acp"
    assert doc["agents"]["kimi"]["protocol"] == "wire"
    # kimi over Wire reports tokens; `kimi acp` reports none (never invented).
    assert doc["agents"]["kimi"]["tokens"] > 0
    assert doc["agents"]["kimi-acp"]["tokens"] == 0
    written = {p.name: p.read_text() for p in rig["work"].iterdir() if p.suffix == ".txt"}
    assert written == {"acp.txt": "written over ACP", "wire.txt": "written over Wire"}
    decisions = [e["payload"] for e in events(rig, "mixed") if e["kind"] == "approval_decided"]
    assert [d["decision"] for d in decisions] == ["approve", "approve"], decisions
    assert all(d["action"] == "edit file" for d in decisions), decisions
    for e in events(rig, "mixed"):
        if e["kind"] == "worker_started":
            assert not alive(e["payload"]["agent_pid"])


def test_a_rejected_acp_permission_is_recorded_and_the_turn_goes_on(rig):
    r = omk(
        rig, "team", "run", "1:executor@kimi-acp", "write under reject-all",
        "--subtask", "[write:denied.txt:nope]", "--approval", "reject-all",
        "--name", "denied", "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    # The rejection reaches the agent, which ends its turn normally.
    assert doc["phase"] == "Completed", doc
    assert not (rig["work"] / "denied.txt").exists()
    decisions = [e["payload"] for e in events(rig, "denied") if e["kind"] == "approval_decided"]
    assert len(decisions) == 1, decisions
    assert decisions[0]["decision"] == "reject" and decisions[0]["policy"] == "reject-all"
    transcript = (rig["state"] / "team" / "denied" / "workers" / "w1" / "transcript.jsonl").read_text()
    assert '"type":"tool_result"' in transcript and '"is_error":true' in transcript, transcript[-2000:]


def test_shutdown_mid_turn_cancels_kimi_acp_and_leaves_no_process(rig):
    p = subprocess.Popen(
        [OMK, "team", "run", "1:executor@kimi-acp", "slow", "--subtask", "[sleep:60] slow",
         "--name", "slow", "--json"],
        cwd=rig["work"], env=rig["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    team = rig["state"] / "team" / "slow" / "team.json"
    deadline = time.time() + 60
    while time.time() < deadline:
        if team.exists() and any(t["status"] == "running" for t in json.loads(team.read_text())["tasks"]):
            break
        time.sleep(0.1)
    else:
        p.kill()
        pytest.fail("the task never started")
    # Wait until the turn streams from the fake LLM (the agent is mid-turn).
    transcript = rig["state"] / "team" / "slow" / "workers" / "w1" / "transcript.jsonl"
    while time.time() < deadline:
        if transcript.exists() and '"type":"text"' in transcript.read_text():
            break
        time.sleep(0.1)
    r = omk(rig, "team", "shutdown", "slow", "--json")
    assert r.returncode == 0, r.stderr
    out, err = p.communicate(timeout=60)
    doc = json.loads(team.read_text())
    assert doc["phase"] == "Shutdown", doc
    assert doc["tasks"][0]["status"] == "cancelled"
    transcript = (rig["state"] / "team" / "slow" / "workers" / "w1" / "transcript.jsonl").read_text()
    assert '"status":"cancelled"' in transcript, transcript[-2000:]
    for e in events(rig, "slow"):
        if e["kind"] == "worker_started":
            assert not alive(e["payload"]["agent_pid"])


def test_chat_with_kimi_acp_resumes_through_session_load(rig):
    r = subprocess.run([OMK, "chat", "--new", "--agent", "kimi-acp"], cwd=rig["work"], env=rig["env"],
                       input="first [answer:one]\nsecond [answer:two]\n", capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines() == ["one", "two"], r.stdout
    sessions = sorted((rig["state"] / "sessions").iterdir(), key=lambda p: p.stat().st_mtime)
    sid = sessions[-1].name
    r = subprocess.run([OMK, "chat", "--session", sid, "--agent", "kimi-acp"], cwd=rig["work"],
                       env=rig["env"], input="third [answer:three]\n", capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "three"
    engine = [json.loads(l) for l in (sessions[-1] / "engine-events.jsonl").read_text().splitlines()]
    resume = [e["payload"] for e in engine if e["type"] == "resume"]
    # kimi acp advertises loadSession: it reopened its own session and
    # re-sent its history (no context replayed by omk).
    assert resume and resume[-1]["mode"] == "agent" and resume[-1]["events"] > 0, resume
    ids = {e["payload"]["id"] for e in engine if e["type"] == "agent_session"}
    assert len(ids) == 1, engine
    # The agent's own history reached the LLM with the third prompt.
    last = rig["llm"].completions()[-1]
    assert "first [answer:one]" in json.dumps(last["body"]), last["body"]
