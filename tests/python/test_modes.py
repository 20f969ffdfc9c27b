"""Autopilot and Ralph from Python: a ralph passing on its second iteration
(the gate's output fed back), an autopilot through every phase, the list
documents of API.md, errors, and Ctrl-C stopping a running loop."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from conftest import Env, assert_shape, wait_for

import omk

# Fails until DONE exists; its output carries the directive that makes the
# scripted agent write DONE, so only fed-back output makes it pass.
GATES = """\
[[gate]]
name = "done"
command = "sh -c 'test -f DONE || { echo \\"missing: [write:DONE:ok]\\"; exit 1; }'"
"""


@pytest.fixture
def gated(env: Env) -> omk.Omk:
    (env.project / ".omk").mkdir()
    (env.project / ".omk" / "gates.toml").write_text(GATES)
    return env.omk()


def test_ralph_passes_on_the_iteration_that_fixes_the_gate(gated: omk.Omk, env: Env) -> None:
    state = gated.ralph_run("Make the gate pass", max_iterations=3, name="fix-it")
    assert_shape(dict(state), "RalphState")
    assert state["status"] == "complete"
    assert state["iteration"] == 2
    first, second = state["iterations"]
    assert first["gates_passed"] is False
    assert first["failures"][0]["name"] == "done"
    assert "missing" in first["failures"][0]["output_tail"]
    assert second["gates_passed"] is True
    assert (env.project / "DONE").exists()

    listed = gated.ralph_list()
    assert list(listed) == ["ralphs"]
    entry = listed["ralphs"][0]
    assert_shape(dict(entry), "RalphState")
    assert list(entry)[:5] == ["version", "task", "iteration", "max_iterations", "state_dir"]
    assert entry["state_dir"] == str(env.state / "ralph" / "fix-it")
    assert gated.ralph_status("fix-it")["status"] == "complete"
    assert gated.call("ralph.status", {"id": "fix-it"})["iteration"] == 2
    assert gated.metrics()["total_ralph_runs"] == 1


def test_autopilot_runs_every_phase_to_complete(gated: omk.Omk, env: Env) -> None:
    (env.project / "DONE").write_text("already")
    state = gated.autopilot_run("Tidy up [json-plan:Look around|Report]", max_agents=2)
    assert_shape(dict(state), "AutopilotState")
    assert state["status"] == "complete"
    assert [p["phase"] for p in state["phases"]] == [
        "Expansion",
        "Planning",
        "Execution",
        "QA",
        "Validation",
        "Complete",
    ]
    listed = gated.autopilot_list()
    assert list(listed) == ["autopilots"]
    entry = listed["autopilots"][0]
    assert list(entry)[:5] == ["version", "task", "phase", "plans_dir", "created_at"]
    assert gated.autopilot_status(state["id"])["phase"] == "Complete"
    assert gated.metrics()["total_autopilot_runs"] == 1


def test_bad_input_raises_and_writes_nothing(gated: omk.Omk, env: Env) -> None:
    with pytest.raises(omk.InvalidInputError):
        gated.ralph_run("x", max_iterations=0)
    with pytest.raises(omk.InvalidInputError):
        gated.ralph_run("x", name="../up")
    with pytest.raises(omk.InvalidInputError):
        gated.autopilot_run("   ")
    with pytest.raises(omk.NotFoundError):
        gated.ralph_status("nope")
    with pytest.raises(omk.NotFoundError):
        gated.autopilot_stop("nope")
    assert not (env.state / "ralph").exists() or not any((env.state / "ralph").iterdir())


RUN_SLOW_RALPH = """
import json
import omk

o = omk.Omk(state_dir=STATE, project_dir=PROJECT, config=CONFIG)
try:
    o.ralph_run("Slow [sleep:30]", name="slow")
except omk.CancelledError as e:
    print(json.dumps({"code": e.code, "run": e.run, "message": str(e)}), flush=True)
    raise
print("ralph_run returned without being interrupted", flush=True)
"""


def test_sigint_during_ralph_run_stops_the_loop(gated: omk.Omk, env: Env) -> None:
    proc = subprocess.Popen(
        env.script(RUN_SLOW_RALPH), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:

        def iteration_running() -> bool:
            try:
                return gated.ralph_status("slow")["active_team"] is not None
            except omk.NotFoundError:
                return False

        wait_for("the first iteration", iteration_running)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, (out, err)
    report = json.loads(out.splitlines()[0])
    assert report["code"] == "cancelled"
    assert report["run"] == "slow"
    assert gated.ralph_status("slow")["status"] == "stopped"
