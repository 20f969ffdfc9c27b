"""End to end: `omk team run` driving the REAL kimi-cli 1.51.0 over Wire,
offline, against fake_llm.py on 127.0.0.1.

Skipped (with the reason) when setup-kimi.sh found no Python >= 3.13; with CI=true,
OMK_REQUIRE_KIMI=1 or OMK_REQUIRE_PEERS=1 a missing venv or the marker is a
failure instead.
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

from kimi_env import FakeLLM, omk_env, skip_unless_kimi  # noqa: E402

skip_unless_kimi()

# Absolute: omk runs with cwd=<project>, where a relative OMK_BIN would not resolve.
OMK = str(Path(os.environ.get("OMK_BIN") or HERE.parent.parent / "target" / "debug" / "omk").resolve())


@pytest.fixture()
def rig(tmp_path):
    llm = FakeLLM(tmp_path / "llm-requests.jsonl")
    env = omk_env(tmp_path, llm.port)
    env["OMK_STATE_DIR"] = str(tmp_path / "state")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    cfg = tmp_path / "omk.toml"
    cfg.write_text("[team]\nstop_grace_secs = 3\nheartbeat_secs = 1\n")
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
    path = rig["state"] / "team" / team / "events.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def agent_pids(rig, team):
    return [e["payload"]["agent_pid"] for e in events(rig, team) if e["kind"] == "worker_started"]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_team_of_two_real_agents_edits_files_and_reports_tokens(rig):
    r = omk(
        rig, "team", "run", "2:executor", "write two files",
        "--subtask", "[write:hello.txt:hi from kimi]",
        "--subtask", "[write:second.txt:second]",
        "--name", "real", "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["phase"] == "Completed"
    assert [t["status"] for t in doc["tasks"]] == ["completed", "completed"]
    assert (rig["work"] / "hello.txt").read_text() == "hi from kimi"
    assert (rig["work"] / "second.txt").read_text() == "second"
    # Token usage comes from the real agent's StatusUpdate events.
    assert all(t["tokens"] > 0 for t in doc["tasks"]), doc["tasks"]
    decided = [e for e in events(rig, "real") if e["kind"] == "approval_decided"]
    assert len(decided) == 2 and all(e["payload"]["decision"] == "approve" for e in decided)
    assert all(not alive(p) for p in agent_pids(rig, "real"))
    assert (rig["state"] / "team" / "real" / "proof.json").exists()


def test_planner_turn_splits_the_task(rig):
    r = omk(rig, "team", "run", "2:executor", "plan it [json-plan:first part|second part]", "--name", "planned", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [t["title"] for t in doc["tasks"]] == ["first part", "second part"]
    assert not any(e["kind"] == "plan_fallback" for e in events(rig, "planned"))


def test_reject_all_policy_keeps_files_untouched(rig):
    r = omk(rig, "team", "run", "1:executor", "try", "--subtask", "[write:nope.txt:x]", "--approval", "reject-all", "--name", "strict", "--json")
    assert r.returncode == 0, r.stderr
    assert not (rig["work"] / "nope.txt").exists()
    decided = [e for e in events(rig, "strict") if e["kind"] == "approval_decided"]
    assert decided and decided[0]["payload"]["decision"] == "reject"


def test_provider_error_fails_the_task_with_evidence(rig):
    cfg = Path(rig["env"]["OMK_CONFIG"])
    cfg.write_text(cfg.read_text() + "max_attempts = 2\nretry_backoff_ms = 10\n")
    r = omk(rig, "team", "run", "1:executor", "x", "--subtask", "[http-error:400]", "--name", "broken", "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    task = doc["tasks"][0]
    assert task["status"] == "failed" and task["attempts"] == 2
    assert all("-32003" in e for e in task["errors"]), task["errors"]


def test_shutdown_cancels_a_running_turn_and_leaves_no_process(rig):
    r = omk(rig, "team", "run", "1:executor", "slow", "--subtask", "[sleep:30]", "--name", "slow", "--detach", "--json")
    assert r.returncode == 0, r.stderr
    team = rig["state"] / "team" / "slow" / "team.json"
    deadline = time.time() + 60
    while time.time() < deadline:
        doc = json.loads(team.read_text())
        if doc["tasks"] and doc["tasks"][0]["status"] == "running":
            break
        time.sleep(0.1)
    else:
        pytest.fail("the task never started")
    time.sleep(0.5)  # let the slow stream begin
    r = omk(rig, "team", "shutdown", "slow", "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["phase"] == "Shutdown"
    pids = agent_pids(rig, "slow")
    assert pids and all(not alive(p) for p in pids)


def git(rig, *args):
    r = subprocess.run(
        ["git", "-C", str(rig["work"]), *args], capture_output=True, text=True,
        env={**rig["env"], "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
             "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"},
    )
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def test_three_real_agents_in_worktrees_integrate_on_a_branch_and_leave_the_checkout_alone(rig):
    git(rig, "init", "-q", "-b", "main")
    (rig["work"] / "README").write_text("project\n")
    git(rig, "add", "-A")
    git(rig, "commit", "-qm", "first")
    (rig["work"] / "notes.txt").write_text("my uncommitted notes\n")
    head = git(rig, "rev-parse", "HEAD")
    r = omk(
        rig, "team", "run", "3:executor", "write three files",
        "--subtask", "[write:hello.txt:hi from kimi]",
        "--subtask", "[write:second.txt:second]",
        "--subtask", "[write:third.txt:third]",
        "--isolation", "worktree", "--name", "iso", "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["phase"] == "Completed", doc.get("reason")
    assert doc["isolation"] == "worktree"
    w = doc["worktree"]
    assert w["branch"] == "omk/iso" and w["base_dirty"] is True
    # Each real agent wrote in its own worktree (its work dir), through an
    # approval the default policy granted there.
    decided = [e for e in events(rig, "iso") if e["kind"] == "approval_decided"]
    assert len(decided) == 3 and all(e["payload"]["decision"] == "approve" for e in decided)
    assert sorted(a["task_id"] for a in w["attempts"]) == ["t1", "t2", "t3"]
    assert all(a["outcome"] == "integrated" for a in w["attempts"]), w["attempts"]
    # Every file is on the branch, with the user's uncommitted notes of the base.
    assert git(rig, "show", "omk/iso:hello.txt") == "hi from kimi"
    assert git(rig, "show", "omk/iso:second.txt") == "second"
    assert git(rig, "show", "omk/iso:third.txt") == "third"
    assert git(rig, "show", "omk/iso:notes.txt") == "my uncommitted notes\n"
    # The checkout: untouched; no worktree or branch left but omk/iso.
    assert not (rig["work"] / "hello.txt").exists()
    assert git(rig, "rev-parse", "HEAD") == head
    assert git(rig, "status", "--porcelain") == "?? notes.txt\n"
    assert git(rig, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(rig, "branch", "--format=%(refname:short)") == "main\nomk/iso\n"
    assert all(t["tokens"] > 0 for t in doc["tasks"]), doc["tasks"]
    assert all(not alive(p) for p in agent_pids(rig, "iso"))
