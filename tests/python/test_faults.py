"""The agent fault matrix through the Python host: every process-level fault
of the scripted agent (``OMK_SCRIPTED_FAULT``, see
omk-scripted-agent/src/fault.rs) and a crash mid-turn end the team as a
result -- phase Failed, the task's errors, failure.json -- never as a hang,
and leave no agent process behind.

Agents inherit the host's environment, so the fault is set in ``os.environ``
(monkeypatch restores it). The project config keeps runs short: a 2 s lease,
1 s stop grace and one attempt per task.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Env

import omk

PROJECT_CONFIG = """\
[team]
lease_secs = 2
stop_grace_secs = 1
max_attempts = 1
heartbeat_secs = 1
retry_backoff_ms = 50
"""

# (OMK_SCRIPTED_FAULT or None, task)
FAULTS: list[tuple[str | None, str]] = [
    ("exit-at-once", "hello"),
    ("exit-after-line", "hello"),
    ("die-after-initialize", "hello"),
    ("garbage:300000", "hello"),
    ("huge-line:209715200", "hello"),
    ("close-stdout", "hello"),
    ("ignore-term", "hello [stall]"),
    (None, "hello [crash]"),  # dies mid-turn
]

RUN_LIMIT = 60.0  # a faulty agent must never hang the host


@pytest.fixture
def faulty(env: Env) -> omk.Omk:
    (env.project / ".omk").mkdir(exist_ok=True)
    (env.project / ".omk" / "config.toml").write_text(PROJECT_CONFIG)
    # No explicit config: user (empty XDG) then the project's file.
    return omk.Omk(state_dir=env.state, project_dir=env.project)


def run_bounded(client: omk.Omk, task: str, name: str) -> dict[str, Any]:
    """``team_run`` in a thread; fail (after forcing the team down) if it
    does not return within RUN_LIMIT."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["doc"] = client.team_run("1:executor", task, name=name)
        except BaseException as e:  # reported below
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(RUN_LIMIT)
    if t.is_alive():
        try:
            client.team_shutdown(name, force=True)
        finally:
            t.join(10)
        pytest.fail(f"team_run({task!r}) did not return within {RUN_LIMIT}s")
    if "error" in box:
        raise box["error"]
    return dict(box["doc"])


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def assert_failed_cleanly(env: Env, doc: dict[str, Any], what: str) -> None:
    assert doc["phase"] == "Failed", f"{what}: {doc}"
    assert doc["tasks"], f"{what}: no task in {doc}"
    for task in doc["tasks"]:
        assert task["status"] == "failed", f"{what}: {task}"
        assert task["errors"], f"{what}: a failed task without errors: {task}"
    state = Path(doc["state_dir"])
    assert (state / "failure.json").exists(), f"{what}: no failure.json in {state}"
    assert not (state / "proof.json").exists(), what
    # Agents that got as far as `worker_started`, and those named by an
    # error (one that dies during initialize never reaches that event).
    pids = set(env.agent_pids(doc["name"]))
    for task in doc["tasks"]:
        for err in task["errors"]:
            pids.update(int(p) for p in re.findall(r"\bpid (\d+)", err))
    assert pids, f"{what}: no agent pid in the events or the errors"
    deadline = time.monotonic() + 2.5
    while True:
        left = [p for p in pids if not pid_gone(p)] + env.own_processes()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"{what}: agent processes left behind (or unreaped): {left}"


@pytest.mark.parametrize(("fault", "task"), FAULTS, ids=[f or "crash-mid-turn" for f, _ in FAULTS])
def test_a_faulty_agent_fails_the_team_and_leaves_nothing(
    faulty: omk.Omk, env: Env, monkeypatch: pytest.MonkeyPatch, fault: str | None, task: str
) -> None:
    if fault is None:
        monkeypatch.delenv("OMK_SCRIPTED_FAULT", raising=False)
    else:
        monkeypatch.setenv("OMK_SCRIPTED_FAULT", fault)
    status = Path("/proc/self/status")
    if fault and fault.startswith("huge-line"):
        # Reset this process's peak RSS, so VmHWM below is this run's peak.
        Path("/proc/self/clear_refs").write_text("5")
    rss_before = kib(status, "VmRSS")
    started = time.monotonic()
    doc = run_bounded(faulty, task, name="faulty")
    elapsed = time.monotonic() - started
    assert_failed_cleanly(env, doc, f"{fault or 'crash'}")
    assert elapsed < 30, f"{fault}: took {elapsed:.1f}s with a 2 s lease"
    if fault and fault.startswith("huge-line"):
        # 200 MiB on one line is refused without being buffered.
        grown = kib(status, "VmHWM") - rss_before
        assert grown < 100 * 1024, f"the host's peak RSS grew by {grown} KiB"


@pytest.mark.parametrize("fault", ["exit-at-once", "exit-after-line"])
def test_agents_that_exit_at_start_fail_every_time(
    faulty: omk.Omk, env: Env, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    monkeypatch.setenv("OMK_SCRIPTED_FAULT", fault)
    for i in range(20):
        doc = run_bounded(faulty, "hello", name=f"early-{i}")
        assert_failed_cleanly(env, doc, f"{fault} run {i}")
    # The host is fine afterwards: a healthy agent completes a team.
    monkeypatch.delenv("OMK_SCRIPTED_FAULT")
    assert run_bounded(faulty, "hello", name="healthy")["phase"] == "Completed"


def kib(status: Path, key: str) -> int:
    for line in status.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in {status}")
