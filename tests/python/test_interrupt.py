"""Ctrl-C during team_run, and a Python process killed mid-run."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

from conftest import Env, proc_alive, wait_for

import omk

RUN_SLEEPY = """
import json, sys
import omk

o = omk.Omk(state_dir=STATE, project_dir=PROJECT, config=CONFIG)
try:
    o.team_run("1:executor", "Sleep a long time", name="sleepy", subtasks=[SUBTASK])
except omk.CancelledError as e:
    print(json.dumps({"code": e.code, "team": e.team, "message": str(e),
                      "cause": type(e.__cause__).__name__}), flush=True)
    raise
print("team_run returned without being cancelled", flush=True)
"""


def wait_task_running(env: Env, name: str) -> None:
    """Until task t1 is running and its prompt has been sent to the agent."""
    o = env.omk()

    def running() -> bool:
        try:
            doc = o.team_status(name)
        except omk.NotFoundError:
            return False
        started = any(
            e["kind"] == "task_started" and e["payload"].get("task_id") == "t1"
            for e in env.events(name)
        )
        return bool(doc["tasks"]) and doc["tasks"][0]["status"] == "running" and started

    wait_for(f"task t1 of {name} to run", running)


def run_sleepy(env: Env, subtask: str, **kwargs: Any) -> subprocess.Popen[str]:
    script = env.script(f"SUBTASK = {subtask!r}\n" + RUN_SLEEPY)
    return subprocess.Popen(script, text=True, **kwargs)


def test_sigint_during_team_run_shuts_the_team_down(env: Env) -> None:
    proc = run_sleepy(env, "[sleep:30] zzz", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_task_running(env, "sleepy")
        pids = env.agent_pids("sleepy")
        assert pids and all(proc_alive(p) for p in pids)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The exception propagated: a traceback naming omk.CancelledError, exit 1.
    assert proc.returncode == 1, (out, err)
    assert "omk.CancelledError: team sleepy was cancelled" in err, err
    assert "KeyboardInterrupt" in err  # the cause is shown
    report = json.loads(out.splitlines()[0])
    assert report["code"] == "cancelled"
    assert report["team"] == "sleepy"
    assert "sleepy" in report["message"] and "phase Shutdown" in report["message"]
    assert report["cause"] == "KeyboardInterrupt"
    assert took < 15, f"graceful shutdown took {took:.1f}s"

    doc = env.omk().team_status("sleepy")
    assert doc["phase"] == "Shutdown"
    assert doc["tasks"][0]["status"] == "cancelled"
    for pid in pids:
        wait_for(f"agent {pid} to be gone", lambda: not proc_alive(pid), limit=5)
    assert env.own_processes() == []
    kinds = [e["kind"] for e in env.events("sleepy")]
    assert "shutdown_requested" in kinds or "run_failed" in kinds


def test_second_sigint_forces_the_shutdown(env: Env) -> None:
    # A stalled agent ignores the Wire cancel: a second Ctrl-C kills it.
    proc = run_sleepy(env, "[stall]", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_task_running(env, "sleepy")
        pids = env.agent_pids("sleepy")
        proc.send_signal(signal.SIGINT)
        wait_for(
            "the shutdown request",
            lambda: (env.team_dir("sleepy") / "shutdown.json").exists(),
        )
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, (out, err)
    report = json.loads(out.splitlines()[0])
    assert report["code"] == "cancelled" and report["team"] == "sleepy"
    assert "(forced shutdown)" in report["message"], report
    doc = env.omk().team_status("sleepy")
    assert doc["phase"] == "Shutdown"
    for pid in pids:
        wait_for(f"agent {pid} to be gone", lambda: not proc_alive(pid), limit=5)


def test_killed_python_process_leaves_a_stale_slot_that_cleanup_removes(env: Env) -> None:
    proc = run_sleepy(env, "[sleep:30] zzz", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_task_running(env, "sleepy")
        pids = env.agent_pids("sleepy")
    finally:
        proc.kill()
        proc.wait()
    o = env.omk()
    # The agent notices its supervisor is gone (stdin EOF) and exits.
    for pid in pids:
        wait_for(f"agent {pid} to exit", lambda: not proc_alive(pid))
    status = o.pools_status()["pools"][0]
    assert status["stale_entries"] == 1, status
    cleaned = o.pools_cleanup()
    assert cleaned["removed"] == 1
    (pool,) = cleaned["pools"]
    assert pool["pool"] == "default"
    assert [s["run"] for s in pool["removed_slots"]] == ["sleepy"]
    assert o.pools_status()["pools"][0]["stale_entries"] == 0
    assert o.team_status("sleepy")["phase"] == "Interrupted"
