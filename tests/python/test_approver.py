"""The host approval policy from Python: a callable decides the agents'
file edits, from omk's threads, while other Python threads keep running."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import omk
from conftest import Env


def test_a_python_callable_decides_approvals(env: Env) -> None:
    asked: list[dict[str, Any]] = []
    lock = threading.Lock()

    def approve(request: dict[str, Any]) -> tuple[bool, str]:
        with lock:
            asked.append(request)
        time.sleep(0.05)  # a host taking its time must not stall the run
        if any(p.endswith("yes.txt") for p in request["paths"]):
            return True, "python says yes"
        return False, "python says no"

    client = omk.Omk(state_dir=env.state, project_dir=env.project, config=env.config, approval=approve)
    doc = client.team_run(
        "2:executor", "host approvals", subtasks=["[write:yes.txt:1]", "[write:no.txt:2]"], approval="host", name="hosted"
    )
    assert doc["phase"] == "Completed"
    assert (env.project / "yes.txt").exists() and not (env.project / "no.txt").exists()
    assert sorted(r["action"] for r in asked) == ["edit file", "edit file"]
    reasons = sorted(e["payload"]["reason"] for e in env.events("hosted") if e["kind"] == "approval_decided")
    assert reasons == ["python says no", "python says yes"]


def test_approver_failures_reject_and_the_host_policy_needs_one(env: Env) -> None:
    client = env.omk()
    with pytest.raises(omk.InvalidInputError, match="approver"):
        client.team_run("1:executor", "t", subtasks=["x"], approval="host")
    with pytest.raises(omk.InvalidInputError):
        client.set_approver(42)  # type: ignore[arg-type]

    def broken(request: dict[str, Any]) -> bool:
        raise RuntimeError("approver bug")

    client.set_approver(broken)
    doc = client.team_run("1:executor", "t", subtasks=["[write:x.txt:1]"], approval="host", name="broken")
    assert doc["phase"] == "Completed"
    assert not (env.project / "x.txt").exists()
    decided = [e for e in env.events("broken") if e["kind"] == "approval_decided"]
    assert decided[0]["payload"]["decision"] == "reject"
    assert "approver bug" in decided[0]["payload"]["reason"]
    client.set_approver(None)
    with pytest.raises(omk.InvalidInputError):
        client.team_run("1:executor", "t", subtasks=["x"], approval="host")
