"""Gates and their circuit breakers on a temp project with .omk/gates.toml."""

from __future__ import annotations

import pytest
from conftest import Env, assert_shape

import omk

GATES = """\
[breaker]
failure_threshold = 2

[[gate]]
name = "has-readme"
command = "test -f README.md"

[[gate]]
name = "lint"
command = ["sh", "-c", "echo lint says no >&2; exit 3"]
required = false
"""


@pytest.fixture
def gated(env: Env) -> omk.Omk:
    (env.project / ".omk").mkdir()
    (env.project / ".omk" / "gates.toml").write_text(GATES)
    (env.project / "README.md").write_text("hi\n")
    return env.omk()


def test_gates_list(gated: omk.Omk, env: Env) -> None:
    listed = gated.gates_list()
    assert_shape(dict(listed), "GatesList")
    assert listed["source"] == ".omk/gates.toml"
    assert listed["project"] == str(env.project)
    assert [g["name"] for g in listed["gates"]] == ["has-readme", "lint"]
    assert [g["required"] for g in listed["gates"]] == [True, False]
    assert listed["breaker"]["failure_threshold"] == 2


def test_gates_run_status_reset(gated: omk.Omk, env: Env) -> None:
    report = gated.gates_run()
    assert_shape(dict(report), "GatesReport")
    assert report["passed"] is True  # the failing gate is optional
    by_name = {r["name"]: r for r in report["results"]}
    for r in report["results"]:
        assert_shape(dict(r), "GateResult")
    assert by_name["has-readme"]["passed"] and by_name["has-readme"]["exit_code"] == 0
    lint = by_name["lint"]
    assert (lint["passed"], lint["exit_code"], lint["required"]) == (False, 3, False)
    assert "lint says no" in lint["stderr"]

    # A second failure opens the lint breaker; only lint runs.
    only = gated.gates_run(["lint"])
    assert [r["name"] for r in only["results"]] == ["lint"]
    assert only["results"][0]["breaker"] == "Open"
    status = gated.gates_status()
    assert_shape(dict(status), "BreakersStatus")
    states = {b["gate_name"]: b for b in status["breakers"]}
    for b in status["breakers"]:
        assert_shape(dict(b), "Breaker")
    assert states["lint"]["state"] == "Open" and states["lint"]["failure_count"] == 2
    assert states["has-readme"]["state"] == "Closed"
    assert gated.gates_status(all_projects=True)["breakers"]

    # An open breaker skips its gate, with the reason.
    skipped = gated.gates_run(["lint"])["results"][0]
    assert skipped["skipped"] and skipped["skip_reason"]

    # A required gate failing fails the report: a result, not an error.
    (env.project / "README.md").unlink()
    failing = gated.gates_run(["has-readme"])
    assert failing["passed"] is False

    reset = gated.gates_reset("lint")
    assert_shape(dict(reset), "GatesReset")
    assert reset["count"] == 1
    assert reset["reset"][0]["gate_name"] == "lint"
    assert reset["reset"][0]["previous_state"] == "Open"
    # Nothing else is open: resetting everything resets nothing.
    assert gated.gates_reset() == {"reset": [], "count": 0}
    assert gated.gates_reset("lint", all_projects=True)["count"] == 0
    assert gated.call("gates.reset", {"all": True}) == {"reset": [], "count": 0}


def test_unknown_gate(gated: omk.Omk) -> None:
    with pytest.raises(omk.NotFoundError, match="nope") as info:
        gated.gates_reset("nope")
    assert info.value.code == "not_found"
    with pytest.raises(omk.NotFoundError):
        gated.gates_run(["nope"])


def test_team_run_verifies_with_the_gates(gated: omk.Omk, env: Env) -> None:
    (env.project / "README.md").unlink()
    doc = gated.team_run("1:executor", "T", subtasks=["[write:README.md:hello]"], name="gated")
    assert doc["phase"] == "Completed", doc
    (env.project / "README.md").unlink()
    failed = gated.team_run("1:executor", "T", subtasks=["nothing"], name="ungated")
    assert failed["phase"] == "Failed" and "has-readme" in (failed["reason"] or "")
    skipped = gated.team_run("1:executor", "T", subtasks=["nothing"], name="nogates", no_gates=True)
    assert skipped["phase"] == "Completed"
