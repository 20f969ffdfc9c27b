"""Goals from Python: a run to ready, every query, budgets, stagnation and
recovery, errors, and Ctrl-C pausing a running goal."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from conftest import Env, assert_shape, wait_for

import omk

GATES = """\
[[gate]]
name = "hello"
command = "grep -q hi hello.txt"
"""


@pytest.fixture
def gated(env: Env) -> omk.Omk:
    (env.project / ".omk").mkdir()
    (env.project / ".omk" / "gates.toml").write_text(GATES)
    return env.omk()


def test_goal_runs_to_ready_and_every_document_has_its_shape(gated: omk.Omk, env: Env) -> None:
    state = gated.goal_run(
        "Greet [json-plan:Write it [write:hello.txt:hi\\]|Report]",
        budget_time="2h",
        budget_usd=5.0,
        max_agents=2,
    )
    assert_shape(dict(state), "GoalState")
    assert state["status"] == "ready"
    assert state["budget_time"] == "2h"
    gid = state["goal_id"]
    assert (env.project / "hello.txt").read_text() == "hi"

    proof = gated.goal_proof(gid)
    assert_shape(dict(proof), "GoalProof")
    assert proof["status"] == "ready" and proof["known_gaps"] == []
    assert proof["task_graph_summary"]["done_tasks"] == 2
    replay = gated.goal_replay()
    assert_shape(dict(replay), "GoalReplay")
    assert replay["timeline"][0]["kind"] == "goal_created"
    budget = gated.goal_budget()
    assert_shape(dict(budget), "GoalBudgetReport")
    assert budget["used_tokens"] > 0 and budget["estimated_cost_usd"] > 0
    assert budget["remaining_budget_usd"] is not None and budget["remaining_budget_usd"] < 5.0
    report = gated.goal_diagnose()
    assert_shape(dict(report), "StagnationReport")
    assert report["stagnant"] is False
    listed = gated.goal_list()
    assert [g["goal_id"] for g in listed["goals"]] == [gid]
    assert gated.goal_show("latest")["goal_id"] == gid
    # The op table gives the same documents.
    assert gated.call("goal.show", {"id": gid})["goal_id"] == gid
    assert gated.call("goal.proof")["status"] == "ready"

    recovery = gated.goal_recover()
    assert_shape(dict(recovery), "Recovery")
    assert recovery["plan"]["strategy"] == "continue"
    back = gated.goal_rollback(checkpoint=1)
    assert_shape(dict(back), "Rollback")
    assert back["checkpoint_id"] == 1


def test_budget_add_and_errors(gated: omk.Omk) -> None:
    state = gated.goal_run("Never [json-plan:Nothing]", budget_tokens=10)
    assert state["status"] == "needs_more_budget"
    report = gated.goal_budget_add(tokens=1000)
    assert report["budget_tokens"] is not None and report["budget_tokens"] >= 1010
    assert gated.goal_show()["status"] == "not_ready"
    with pytest.raises(omk.InvalidInputError):
        gated.goal_budget_add()
    with pytest.raises(omk.InvalidInputError):
        gated.goal_show("../x")
    with pytest.raises(omk.NotFoundError):
        gated.goal_show("goal-nope")
    with pytest.raises(omk.InvalidInputError):
        gated.goal_run("   ")
    with pytest.raises(omk.NotFoundError):
        gated.goal_rollback(checkpoint=42)
    cancelled = gated.goal_cancel()
    assert cancelled["status"] == "cancelled"
    with pytest.raises(omk.ConflictError):
        gated.goal_resume()


RUN_SLOW_GOAL = """
import json
import omk

o = omk.Omk(state_dir=STATE, project_dir=PROJECT, config=CONFIG)
try:
    o.goal_run("Slow [json-plan:Wait [sleep:30\\\\]]")
except omk.CancelledError as e:
    print(json.dumps({"code": e.code, "goal": e.goal, "message": str(e)}), flush=True)
    raise
print("goal_run returned without being interrupted", flush=True)
"""


def test_sigint_during_goal_run_pauses_the_goal(gated: omk.Omk, env: Env) -> None:
    proc = subprocess.Popen(
        env.script(RUN_SLOW_GOAL), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:

        def wave_running() -> bool:
            goals = gated.goal_list()["goals"]
            if not goals:
                return False
            controller = env.state / "goal" / goals[0]["goal_id"] / "controller.json"
            return bool(json.loads(controller.read_text()).get("active_team"))

        wait_for("the goal's first wave", wave_running)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, (out, err)
    report = json.loads(out.splitlines()[0])
    assert report["code"] == "cancelled"
    assert report["goal"].startswith("goal-")
    assert "paused" in report["message"]
    assert gated.goal_show(report["goal"])["status"] == "paused"
