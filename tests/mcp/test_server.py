"""`omk mcp-server` driven by the official Python `mcp` client: every tool,
a real team on the scripted agent with progress, a detached run, a failing
team as an isError result, and raw JSON-RPC for what the SDK cannot send:
malformed bytes, an oversized line, an old `initialize` era, cancellation."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import OMK, Env

from mcp import ClientSession, StdioServerParameters
from mcp.shared.version import SUPPORTED_PROTOCOL_VERSIONS
from mcp.types import LATEST_PROTOCOL_VERSION
from mcp.client.stdio import stdio_client

API_TOOLS = {"omk_team_run", "omk_team_status", "omk_team_shutdown", "omk_doctor"}
EXTRA_TOOLS = {
    "omk_team_list", "omk_goal_list", "omk_goal_show", "omk_goal_proof",
    "omk_gates_status", "omk_gates_run", "omk_pools_status", "omk_pools_cluster",
    "omk_pools_set",
}


PLANNED = "Build it [json-plan:A|B|C]"


def events(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The team's events.jsonl, from the document's state_dir."""
    path = Path(doc["state_dir"]) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_planned(doc: dict[str, Any], titles: list[str]) -> None:
    """The tasks of ``doc`` came from a successful planner turn."""
    evs = events(doc)
    kinds = [e["kind"] for e in evs]
    assert "plan_fallback" not in kinds, [e for e in evs if e["kind"] == "plan_fallback"]
    assert any(e["kind"] == "worker_started" and e["actor"] == "planner" for e in evs), kinds
    created = [e["payload"]["title"] for e in evs if e["kind"] == "task_created"]
    assert created == titles, created
    assert [t["title"] for t in doc["tasks"]] == titles


def params(env: Env) -> StdioServerParameters:
    # The SDK starts servers with a clean environment: pass what omk needs.
    return StdioServerParameters(command=OMK, args=["mcp-server"], env=env.vars, cwd=str(env.project))


async def with_session(env: Env, body: Any) -> Any:
    async with stdio_client(params(env)) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.serverInfo.name == "omk"
            # The SDK's newest protocol era is the one spoken.
            assert init.protocolVersion == LATEST_PROTOCOL_VERSION
            return await body(session)


def run(env: Env, body: Any) -> Any:
    return anyio.run(with_session, env, body)


def test_tools_are_listed_with_input_and_output_schemas(env: Env) -> None:
    async def body(s: ClientSession) -> Any:
        return (await s.list_tools()).tools

    tools = {t.name: t for t in run(env, body)}
    assert set(tools) == API_TOOLS | EXTRA_TOOLS
    for t in tools.values():
        assert t.outputSchema is not None, t.name
        assert t.description
    run_schema = tools["omk_team_run"].inputSchema
    assert set(run_schema["properties"]) == {"spec", "task", "name", "detach", "agent", "isolation",
                                               "deliver"}
    assert set(run_schema["required"]) == {"spec", "task"}
    assert set(tools["omk_team_shutdown"].inputSchema["properties"]) == {"name", "force"}
    assert set(tools["omk_team_run"].outputSchema["required"]) >= {"status", "stdout", "stderr", "spec", "task"}


def test_a_team_run_reports_progress_and_every_tool_answers(env: Env) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append((p, total, message))

    async def body(s: ClientSession) -> dict[str, Any]:
        out: dict[str, Any] = {}
        r = await s.call_tool(
            "omk_team_run",
            {"spec": "2:executor", "task": PLANNED, "name": "mcp-team"},
            progress_callback=on_progress,
        )
        out["run"] = r
        # API.md omk_team_run takes only spec/task/name: subtasks come from
        # the planner turn, which the scripted agent answers with the JSON
        # plan the task's [json-plan:...] directive asks for.
        for tool, args in [
            ("omk_team_status", {"name": "mcp-team"}),
            ("omk_team_shutdown", {"name": "mcp-team"}),
            ("omk_doctor", {}),
            ("omk_team_list", {}),
            ("omk_goal_list", {}),
            ("omk_gates_status", {}),
            ("omk_gates_run", {}),
            ("omk_pools_status", {}),
            ("omk_goal_show", {}),
        ]:
            out[tool] = await s.call_tool(tool, args)
        return out

    out = run(env, body)
    r = out["run"]
    assert r.isError is False, r
    sc = r.structuredContent
    assert sc["status"] == "completed"
    assert (sc["spec"], sc["task"], sc["team"]) == ("2:executor", PLANNED, "mcp-team")
    # The planner path ran for real: its agent started, its plan became the
    # tasks, and the supervisor did not fall back to the whole task.
    assert_planned(sc["document"], ["A", "B", "C"])
    assert "team mcp-team: completed" in sc["stdout"]
    assert sc["stderr"] == ""
    assert sc["document"]["phase"] == "Completed"
    # Text content carries the same document.
    assert json.loads(r.content[0].text) == sc
    assert progress, "a progress notification per finished task"
    assert progress[-1][0] == progress[-1][1] == len(sc["document"]["tasks"])

    st = out["omk_team_status"].structuredContent
    assert set(st) == {"status", "team", "stdout", "stderr", "document"}
    assert (st["status"], st["team"]) == ("ok", "mcp-team")
    sd = out["omk_team_shutdown"].structuredContent
    assert set(sd) == {"status", "team", "force", "stdout", "stderr", "document"}
    # The team had already ended: nothing was stopped (an honest answer).
    assert (sd["status"], sd["force"]) == ("not_running", False)
    doc = out["omk_doctor"].structuredContent
    assert set(doc) == {"status", "healthy", "stdout", "stderr", "document"}
    assert doc["status"] in {"healthy", "unhealthy"} and doc["healthy"] == (doc["status"] == "healthy")
    assert [t["name"] for t in out["omk_team_list"].structuredContent["teams"]] == ["mcp-team"]
    assert out["omk_goal_list"].structuredContent["goals"] == []
    assert out["omk_gates_status"].structuredContent["breakers"][0]["gate_name"] == "ok"
    gates = out["omk_gates_run"]
    assert gates.isError is False and gates.structuredContent["passed"] is True
    assert out["omk_pools_status"].structuredContent["pools"][0]["name"] == "default"
    missing = out["omk_goal_show"]
    assert missing.isError is True
    assert missing.structuredContent["error"]["code"] == "not_found"


def test_a_pools_capacity_across_a_cluster_is_set_and_read(env: Env) -> None:
    url = os.environ.get("OMK_TEST_PG_URL")
    if not url:
        pytest.skip("OMK_TEST_PG_URL is not set (make mcp-test starts PostgreSQL)")

    async def body(s: ClientSession) -> Any:
        return [
            await s.call_tool("omk_pools_cluster", {}),
            await s.call_tool("omk_pools_set", {"pool": "gpu", "max_workers": 2}),
            await s.call_tool("omk_pools_set", {"pool": "gpu", "max_workers": 2, "store": url}),
            await s.call_tool("omk_pools_cluster", {"store": url}),
            await s.call_tool("omk_pools_set", {"pool": "gpu", "unlimited": True, "store": url}),
            await s.call_tool("omk_pools_set", {"pool": "gpu", "store": url}),
        ]

    none, no_store, set_, cluster, unset, neither = run(env, body)
    # Without a store: no cluster, and a capacity has nowhere to go.
    assert none.isError is False and none.structuredContent == {"result": None}
    assert no_store.isError is True
    assert no_store.structuredContent["error"]["code"] == "invalid_input"
    assert "[pools.gpu] max_workers" in no_store.structuredContent["error"]["message"]
    assert set_.isError is False, set_
    assert set_.structuredContent["pool"]["capacity"] == 2
    assert "@" not in set_.structuredContent["store"] or "***" in set_.structuredContent["store"]
    gpu = [p for p in cluster.structuredContent["pools"] if p["name"] == "gpu"]
    assert [(p["capacity"], p["active_tasks"], p["leased_slots"]) for p in gpu] == [(2, 0, 0)]
    assert unset.structuredContent["pool"]["capacity"] is None
    assert neither.isError is True
    assert neither.structuredContent["error"]["code"] == "invalid_input"


def test_a_failing_team_is_an_error_result_with_its_document(env: Env) -> None:
    async def body(s: ClientSession) -> Any:
        return await s.call_tool(
            "omk_team_run", {"spec": "1:executor", "task": "Crash [crash]", "name": "broken"}
        )

    r = run(env, body)
    assert r.isError is True
    sc = r.structuredContent
    assert sc["status"] == "failed", sc
    assert sc["document"]["phase"] == "Failed"
    assert sc["stderr"], "the failure is explained"


async def call_or_error(s: ClientSession, tool: str, args: dict[str, Any]) -> tuple[bool, str, Any]:
    """(is an error, its text, the result or None): a JSON-RPC error (the SDK
    raises McpError) and an isError result both count as errors."""
    try:
        r = await s.call_tool(tool, args)
    except Exception as e:
        return True, str(e), None
    return bool(r.isError), json.dumps(r.model_dump()), r


def test_a_task_the_planner_cannot_split_falls_back_to_one_task(env: Env) -> None:
    # The scripted agent's default answer is not a JSON plan.
    async def body(s: ClientSession) -> Any:
        return await s.call_tool("omk_team_run", {"spec": "2:executor", "task": "No plan here", "name": "flat"})

    r = run(env, body)
    assert r.isError is False, r
    doc = r.structuredContent["document"]
    evs = events(doc)
    fallback = [e for e in evs if e["kind"] == "plan_fallback"]
    assert len(fallback) == 1 and "JSON array" in fallback[0]["payload"]["reason"], fallback
    assert any(e["kind"] == "worker_started" and e["actor"] == "planner" for e in evs)
    assert [t["title"] for t in doc["tasks"]] == ["No plan here"]


def test_bad_arguments_and_unknown_tools_are_errors(env: Env) -> None:
    async def body(s: ClientSession) -> Any:
        bad_spec = await s.call_tool("omk_team_run", {"spec": "0:executor", "task": "x"})
        unknown_team = await s.call_tool("omk_team_status", {"name": "../etc"})
        try:
            await s.call_tool("omk_nope", {})
            unknown = None
        except Exception as e:  # the SDK raises McpError for JSON-RPC errors
            unknown = str(e)
        # An existing team, so that the unknown argument is the only thing wrong.
        made = await s.call_tool(
            "omk_team_run", {"spec": "1:executor", "task": "Exists [json-plan:one]", "name": "exists"}
        )
        good = await call_or_error(s, "omk_team_status", {"name": "exists"})
        extra = await call_or_error(s, "omk_team_status", {"name": "exists", "color": "red"})
        doctor_extra = await call_or_error(s, "omk_doctor", {"color": "red"})
        return bad_spec, unknown_team, unknown, made, good, extra, doctor_extra

    bad_spec, unknown_team, unknown, made, good, extra, doctor_extra = run(env, body)
    assert bad_spec.isError and "invalid_input" in bad_spec.structuredContent["stderr"]
    assert unknown_team.isError and unknown_team.structuredContent["status"] == "error"
    assert unknown is not None and "omk_nope" in unknown, unknown
    assert made.isError is False, made
    # Without the unknown argument the same call succeeds...
    assert good[0] is False and good[2].structuredContent["status"] == "ok", good[1]
    # ... with it, it is refused, and the error names the field.
    for is_error, text, _ in (extra, doctor_extra):
        assert is_error, text
        assert "color" in text, text


def test_detached_run_then_status(env: Env) -> None:
    async def body(s: ClientSession) -> Any:
        started = await s.call_tool(
            "omk_team_run", {"spec": "1:executor", "task": "Quick", "name": "bg", "detach": True}
        )
        for _ in range(200):
            st = await s.call_tool("omk_team_status", {"name": "bg"})
            if st.structuredContent["document"]["phase"] in ("Completed", "Failed"):
                return started, st
            await anyio.sleep(0.05)
        return started, st

    started, st = run(env, body)
    assert started.structuredContent["status"] == "running"
    assert st.structuredContent["document"]["phase"] == "Completed"


def test_mixed_agent_specs_and_unknown_profiles(env: Env) -> None:
    async def body(s: ClientSession) -> Any:
        unknown = await s.call_tool(
            "omk_team_run", {"spec": "1:executor@nope", "task": "x", "name": "bad"}
        )
        mixed = await s.call_tool(
            "omk_team_run",
            {"spec": "1:executor,1:reviewer", "task": "two roles [answer:ok]", "name": "roles",
             "agent": "kimi"},
        )
        return unknown, mixed

    unknown, mixed = run(env, body)
    assert unknown.isError and unknown.structuredContent["status"] == "error"
    assert 'unknown agent profile "nope"' in unknown.structuredContent["stderr"]
    doc = mixed.structuredContent["document"]
    assert mixed.structuredContent["status"] == "completed", mixed.structuredContent
    assert [(w["role"], w["agent"]) for w in doc["workers"]] == [("executor", "kimi"), ("reviewer", "kimi")]
    assert doc["worker_role"] == "executor,reviewer"


def test_an_isolated_team_integrates_onto_its_branch(env: Env) -> None:
    project = env.project
    ident = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
             "GIT_COMMITTER_EMAIL": "t@t"}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(project), *args], check=True, capture_output=True,
                              text=True, env={**os.environ, **ident}).stdout

    git("init", "-q", "-b", "main")
    (project / "seed.txt").write_text("seed\n")
    git("add", "-A")
    git("commit", "-qm", "seed")

    async def body(s: ClientSession) -> Any:
        return await s.call_tool(
            "omk_team_run",
            {"spec": "1:executor", "task": "isolated [write:made.txt:by mcp]", "name": "iso",
             "isolation": "worktree"},
        )

    r = run(env, body)
    assert r.structuredContent["status"] == "completed", r.structuredContent
    doc = r.structuredContent["document"]
    assert doc["isolation"] == "worktree" and doc["worktree"]["branch"] == "omk/iso"
    assert git("show", "omk/iso:made.txt") == "by mcp"
    assert not (project / "made.txt").exists(), "the user's checkout is untouched"


# ---- raw JSON-RPC: what the SDK never sends ----


class Raw:
    def __init__(self, env: Env) -> None:
        self.p = subprocess.Popen(
            [OMK, "mcp-server"], cwd=env.project, env=env.vars,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )

    def send(self, data: bytes) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def request(self, msg: dict[str, Any]) -> None:
        self.send(json.dumps(msg).encode() + b"\n")

    def read(self) -> dict[str, Any]:
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        assert line, "the server closed stdout"
        return json.loads(line)

    def close(self) -> int:
        assert self.p.stdin is not None
        self.p.stdin.close()
        return self.p.wait(timeout=20)


def initialize(raw: Raw, version: str) -> dict[str, Any]:
    raw.request({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
    reply = raw.read()
    raw.request({"jsonrpc": "2.0", "method": "notifications/initialized"})
    return reply


@pytest.mark.parametrize("version", SUPPORTED_PROTOCOL_VERSIONS)
def test_initialize_era_clients_are_served(env: Env, version: str) -> None:
    raw = Raw(env)
    try:
        reply = initialize(raw, version)
        assert reply["result"]["protocolVersion"] == version
        raw.request({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                     "params": {"name": "omk_doctor", "arguments": {}}})
        r = raw.read()
        assert r["id"] == 2 and "structuredContent" in r["result"]
    finally:
        assert raw.close() == 0


def test_malformed_and_huge_input_get_errors_and_the_server_keeps_serving(env: Env) -> None:
    raw = Raw(env)
    try:
        initialize(raw, "2025-06-18")
        raw.send(b"\xff\xfe not json at all\n")
        r = raw.read()
        assert r == {"jsonrpc": "2.0", "id": None, "error": r["error"]}
        assert r["error"]["code"] == -32700
        raw.send(b'{"jsonrpc": "2.0", "id": 3, "method": \n')
        assert raw.read()["error"]["code"] == -32700
        # 6 MiB on one line: refused without being buffered whole.
        raw.send(b'{"jsonrpc":"2.0","id":4,"method":"ping","params":{"pad":"' + b"x" * (6 << 20) + b'"}}\n')
        r = raw.read()
        assert r["id"] is None and r["error"]["code"] == -32600
        assert "limit" in r["error"]["message"]
        raw.request({"jsonrpc": "2.0", "id": 5, "method": "ping"})
        assert raw.read() == {"jsonrpc": "2.0", "id": 5, "result": {}}
    finally:
        assert raw.close() == 0


def test_cancelling_a_blocking_run_shuts_the_team_down(env: Env) -> None:
    raw = Raw(env)
    try:
        initialize(raw, "2025-06-18")
        raw.request({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "omk_team_run",
            "arguments": {"spec": "1:executor", "task": "Slow [sleep:30]", "name": "slow"}}})
        team = env.state / "team" / "slow" / "team.json"
        deadline = time.monotonic() + 20
        # (The planner turn sleeps too: the team is cancelled while planning.)
        while not (team.exists() and json.loads(team.read_text())["phase"] in ("Planning", "Executing")):
            assert time.monotonic() < deadline, "the team never started"
            time.sleep(0.05)
        started = time.monotonic()
        raw.request({"jsonrpc": "2.0", "method": "notifications/cancelled",
                     "params": {"requestId": 7, "reason": "user gave up"}})
        while json.loads(team.read_text())["phase"] not in ("Shutdown", "Failed", "Completed"):
            assert time.monotonic() - started < 15, "the team was not stopped"
            time.sleep(0.05)
        assert json.loads(team.read_text())["phase"] == "Shutdown"
        raw.request({"jsonrpc": "2.0", "id": 8, "method": "ping"})
        assert raw.read()["id"] == 8
    finally:
        assert raw.close() == 0
