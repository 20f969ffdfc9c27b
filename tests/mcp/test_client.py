"""`omk mcp list | doctor | call` against omk's own server (stdio) and small
servers written with the official Python SDK over stdio and streamable HTTP
on 127.0.0.1; a server that hangs and one that dies are reported unhealthy
within the timeout."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import HERE, OMK, PYTHON, Env, free_port, wait_for_port


def write_config(path: Path, servers: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"mcpServers": servers}, indent=2))


@pytest.fixture
def http_server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, str(HERE / "echo_server.py"), "--http", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def configured(env: Env, http_server: str) -> Env:
    omk_env = {k: env.vars[k] for k in ("OMK_STATE_DIR", "OMK_KIMI_BIN", "OMK_CONFIG", "XDG_CONFIG_HOME")}
    write_config(env.project / ".omk" / "mcp.json", {
        "omk": {"command": OMK, "args": ["mcp-server"], "env": omk_env},
        "echo": {"command": PYTHON, "args": [str(HERE / "echo_server.py")]},
        "web": {"url": http_server, "headers": {"X-Test": "1"}},
    })
    return env


def test_list_shows_servers_transports_and_their_files(configured: Env) -> None:
    # A user-level server of the same name loses to the project's.
    user = configured.root / "xdg" / "omk" / "mcp.json"
    write_config(user, {"echo": {"url": "http://127.0.0.1:9/mcp"}, "extra": {"command": "true"}})
    r = configured.omk("mcp", "list")
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert set(lines) == {"omk", "echo", "web", "extra"}
    assert "stdio" in lines["echo"] and str(configured.project / ".omk" / "mcp.json") in lines["echo"]
    assert "http" in lines["web"]
    assert str(user) in lines["extra"]
    doc = json.loads(configured.omk("mcp", "list", "--json").stdout)
    by_name = {s["name"]: s for s in doc["servers"]}
    assert by_name["echo"]["transport"] == "stdio"
    assert by_name["web"]["transport"] == "http" and by_name["web"]["url"].startswith("http://127.0.0.1:")


def test_call_reaches_omk_itself_and_python_sdk_servers_over_stdio_and_http(configured: Env) -> None:
    r = configured.omk("mcp", "call", "omk", "omk_doctor")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] in {"healthy", "unhealthy"}
    r = configured.omk("mcp", "call", "omk", "omk_team_run",
                       json.dumps({"spec": "1:executor", "task": "Hi [json-plan:A|B|C]", "name": "via-client"}))
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["status"] == "completed"
    team = configured.state / "team" / "via-client"
    assert (team / "team.json").exists()
    # The subtasks came from the planner turn (the scripted agent answers the
    # plan its [json-plan:...] directive names), not from the fallback.
    evs = [json.loads(line) for line in (team / "events.jsonl").read_text().splitlines() if line.strip()]
    assert "plan_fallback" not in [e["kind"] for e in evs]
    assert any(e["kind"] == "worker_started" and e["actor"] == "planner" for e in evs)
    assert [e["payload"]["title"] for e in evs if e["kind"] == "task_created"] == ["A", "B", "C"]
    assert [t["title"] for t in json.loads((team / "team.json").read_text())["tasks"]] == ["A", "B", "C"]

    r = configured.omk("mcp", "call", "echo", "echo", '{"text": "hi there"}')
    assert (r.returncode, r.stdout.strip()) == (0, "echo: hi there"), r.stderr
    raw = json.loads(configured.omk("mcp", "call", "echo", "add", '{"a": 2, "b": 3}', "--json").stdout)
    assert raw["isError"] is False and raw["structuredContent"] == {"sum": 5}
    r = configured.omk("mcp", "call", "echo", "fail", '{"why": "testing"}')
    assert r.returncode == 1 and "failed on purpose: testing" in r.stdout

    r = configured.omk("mcp", "call", "web", "echo", '{"text": "over http"}')
    assert (r.returncode, r.stdout.strip()) == (0, "echo: over http"), r.stderr
    # Not cached: a second call runs the tool again.
    r = configured.omk("mcp", "call", "web", "echo", '{"text": "again"}')
    assert r.stdout.strip() == "echo: again"


def test_call_refuses_bad_input(configured: Env) -> None:
    r = configured.omk("mcp", "call", "echo", "echo", "[1, 2]")
    assert r.returncode == 2 and "object" in r.stderr
    r = configured.omk("mcp", "call", "nope", "echo")
    assert r.returncode == 3 and "nope" in r.stderr
    (configured.project / ".omk" / "mcp.json").write_text("{broken")
    r = configured.omk("mcp", "list")
    assert r.returncode == 2 and "mcp.json" in r.stderr


def test_doctor_counts_healthy_and_unhealthy_servers_within_the_timeout(configured: Env) -> None:
    r = configured.omk("mcp", "doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 healthy, 0 unhealthy" in r.stdout
    write_config(configured.root / "xdg" / "omk" / "mcp.json", {
        "hangs": {"command": PYTHON, "args": [str(HERE / "hang_server.py")]},
        "dies": {"command": "false"},
        "nobody": {"url": f"http://127.0.0.1:{free_port()}/mcp"},
    })
    started = time.monotonic()
    r = configured.omk("mcp", "doctor", "--timeout", "3", "--json")
    elapsed = time.monotonic() - started
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert (report["healthy"], report["unhealthy"]) == (3, 3)
    bad = {s["name"]: s for s in report["servers"] if not s["healthy"]}
    assert set(bad) == {"hangs", "dies", "nobody"}
    assert "within 3s" in bad["hangs"]["error"]
    assert elapsed < 15, f"doctor took {elapsed:.1f}s: servers were not checked concurrently within the timeout"
