"""Agent profiles and mixed teams through the Python API, on the scripted
agent standing in for two vendors (one over ACP, one over Wire)."""

from __future__ import annotations

import pytest

from conftest import AGENT, Env, assert_shape, proc_alive

import omk


def add_profiles(env: Env) -> None:
    env.config.write_text(
        env.config.read_text()
        + f'\n[agents.acp-a]\ncommand = ["{AGENT}", "acp"]\nprotocol = "acp"\n'
        + f'\n[agents.wire-b]\ncommand = ["{AGENT}"]\nprotocol = "wire"\n'
    )


def test_a_mixed_team_reports_workers_and_usage_per_agent(env: Env) -> None:
    add_profiles(env)
    client = env.omk()
    doc = client.team_run(
        "1:executor@acp-a,1:reviewer@wire-b",
        "Two vendors",
        name="mixed",
        subtasks=["Write [write:a.txt:from acp] [tokens:30:10]", "Review [tokens:20:5]"],
    )
    assert_shape(dict(doc), "TeamDoc")
    assert doc["phase"] == "Completed", doc
    assert [(w["role"], w["agent"]) for w in doc["workers"]] == [
        ("executor", "acp-a"),
        ("reviewer", "wire-b"),
    ]
    for w in doc["workers"]:
        assert_shape(dict(w), "WorkerEntry")
    for name, usage in doc["agents"].items():
        assert_shape(dict(usage), "AgentUsage")
    assert doc["agents"]["acp-a"]["protocol"] == "acp"
    assert doc["agents"]["wire-b"]["protocol"] == "wire"
    assert sum(u["tokens"] for u in doc["agents"].values()) == doc["tokens"]
    assert doc["agents"]["acp-a"]["cost"]["currency"] == "USD"
    assert {t["agent"] for t in doc["tasks"]} <= {"acp-a", "wire-b"}
    assert (env.project / "a.txt").read_text() == "from acp"
    for pid in env.agent_pids("mixed"):
        assert not proc_alive(pid)


def test_agents_list_and_unknown_profiles(env: Env) -> None:
    add_profiles(env)
    client = env.omk()
    listed = client.agents_list()
    assert_shape(dict(listed), "AgentsList")
    by_name = {a["name"]: a for a in listed["agents"]}
    assert listed["default"] == "kimi" and by_name["kimi"]["default"]
    assert by_name["acp-a"]["installed"] and by_name["acp-a"]["source"] == "config"
    assert by_name["claude"]["source"] == "built_in"
    for a in listed["agents"]:
        assert_shape(dict(a), "AgentProfile")
    assert client.call("agents.list") == listed
    with pytest.raises(omk.InvalidInputError, match="unknown agent profile \"nope\""):
        client.team_run("1:executor@nope", "x", subtasks=["x"])
    assert client.team_list()["teams"] == []
    # agent= picks the profile of terms without @agent.
    doc = client.team_run("1:executor", "x", subtasks=["x"], agent="acp-a")
    assert doc["workers"][0]["agent"] == "acp-a" and doc["phase"] == "Completed"


def test_a_python_host_approver_decides_for_an_acp_agent(env: Env) -> None:
    add_profiles(env)
    seen: list[dict] = []

    def approve(request):  # type: ignore[no-untyped-def]
        seen.append(dict(request))
        if request["action"] == "edit file":
            return True, "edits are fine"
        return False, "no commands, please"

    client = omk.Omk(state_dir=env.state, project_dir=env.project, config=env.config, approval=approve)
    doc = client.team_run(
        "1:executor@acp-a",
        "host decides",
        name="hosted",
        subtasks=["[write:ok.txt:yes] [run:touch no.txt]"],
        approval="host",
    )
    assert doc["phase"] == "Completed", doc
    assert (env.project / "ok.txt").read_text() == "yes"
    assert not (env.project / "no.txt").exists()
    # The same ApprovalRequest summary as for Wire agents.
    assert [r["action"] for r in seen] == ["edit file", "run command"], seen
    assert seen[0]["paths"] == [str(env.project / "ok.txt")]
    assert seen[1]["commands"] == ["touch no.txt"]
    assert set(seen[0]) >= {"id", "sender", "action", "description", "paths", "commands", "agent_id"}
    decided = [e["payload"] for e in env.events("hosted") if e["kind"] == "approval_decided"]
    assert [d["decision"] for d in decided] == ["approve", "reject"]
    assert decided[1]["reason"] == "no commands, please"
