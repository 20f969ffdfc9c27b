"""The agent fault matrix through `omk mcp-server`: with every process-level
fault of the scripted agent (``OMK_SCRIPTED_FAULT``, set for the server,
whose agents inherit it) and a crash mid-turn, omk_team_run answers an
isError result carrying the Failed team, leaves no agent process behind, and
the server keeps answering. A 200 MiB line from an agent must not grow the
server past 100 MB of peak RSS.

A project config (no OMK_CONFIG, which would be read after it) keeps runs
short: a 2 s lease, 1 s stop grace and one attempt per task.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import OMK, Env

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

PROJECT_CONFIG = """\
[team]
lease_secs = 2
stop_grace_secs = 1
max_attempts = 1
heartbeat_secs = 1
retry_backoff_ms = 50
"""

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

CALL_LIMIT = 60.0
RSS_LIMIT_KIB = 100 * 1000  # 100 MB


def server_pids(env: Env) -> list[int]:
    """`omk mcp-server` processes running in this test's project."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if argv[:2] == [OMK.encode(), b"mcp-server"] and cwd == str(env.project):
            out.append(int(entry.name))
    return out


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for pid {pid}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def agents_of(doc: dict[str, Any]) -> set[int]:
    """Agent pids of a team: `worker_started` events, and pids an error names
    (an agent that dies during initialize never reaches that event)."""
    pids: set[int] = set()
    path = Path(doc["state_dir"]) / "events.jsonl"
    for line in path.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e["kind"] == "worker_started":
            pids.add(int(e["payload"]["agent_pid"]))
    for task in doc["tasks"]:
        for err in task["errors"]:
            pids.update(int(p) for p in re.findall(r"\bpid (\d+)", err))
    return pids


@pytest.mark.parametrize(("fault", "task"), FAULTS, ids=[f or "crash-mid-turn" for f, _ in FAULTS])
def test_a_faulty_agent_is_an_error_result_and_the_server_goes_on(
    env: Env, fault: str | None, task: str
) -> None:
    (env.project / ".omk" / "config.toml").write_text(PROJECT_CONFIG)
    vars_ = {k: v for k, v in env.vars.items() if k != "OMK_CONFIG"}
    if fault is not None:
        vars_["OMK_SCRIPTED_FAULT"] = fault
    params = StdioServerParameters(command=OMK, args=["mcp-server"], env=vars_, cwd=str(env.project))

    async def body() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                pids = server_pids(env)
                assert len(pids) == 1, pids
                out["server"] = pids[0]
                started = time.monotonic()
                with anyio.fail_after(CALL_LIMIT):
                    out["run"] = await s.call_tool(
                        "omk_team_run", {"spec": "1:executor", "task": task, "name": "faulty"}
                    )
                out["elapsed"] = time.monotonic() - started
                out["hwm"] = status_kib(out["server"], "VmHWM")
                # The server still answers.
                with anyio.fail_after(20):
                    out["status"] = await s.call_tool("omk_team_status", {"name": "faulty"})
                    out["doctor"] = await s.call_tool("omk_doctor", {})
        return out

    out = anyio.run(body)
    what = fault or "crash"
    r = out["run"]
    assert r.isError is True, f"{what}: {r}"
    sc = r.structuredContent
    assert sc["status"] == "failed", f"{what}: {sc}"
    doc = sc["document"]
    assert doc["name"] == "faulty" and doc["phase"] == "Failed", f"{what}: {doc}"
    assert doc["tasks"] and all(t["status"] == "failed" and t["errors"] for t in doc["tasks"]), doc
    assert sc["stderr"], f"{what}: the failure is explained"
    assert (Path(doc["state_dir"]) / "failure.json").exists(), what
    assert out["elapsed"] < 30, f"{what}: took {out['elapsed']:.1f}s with a 2 s lease"

    st = out["status"]
    assert st.isError is False and st.structuredContent["document"]["phase"] == "Failed", st
    assert out["doctor"].structuredContent["status"] in {"healthy", "unhealthy"}

    pids = agents_of(doc)
    assert pids, f"{what}: no agent pid in the events or the errors"
    deadline = time.monotonic() + 2.5
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"{what}: agent processes left behind (or unreaped): {left}"

    if fault is not None and fault.startswith("huge-line"):
        assert out["hwm"] < RSS_LIMIT_KIB, f"the server's peak RSS was {out['hwm']} KiB"
