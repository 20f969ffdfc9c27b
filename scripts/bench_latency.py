#!/usr/bin/env python3
"""Latency (issue: react to changes instead of polling), release build,
every baseline measured in the same run:

  admission  16 instant tasks (`omk team run 16:executor`, the bundled
             scripted agent) on a pool of 8 slots vs the same team on 16
             slots: two waves must cost two waves, not a re-check timer
             (target ratio <= 1.25).
  mcp        `tools/call omk_team_status` round trip over `omk mcp-server`
             vs `ping` in the same session, with a buffered client (guard:
             status < 1 ms).
  status     a whole `omk team status NAME` process vs `omk --version`
             (target ratio <= 1.2).
  sse        a team document rewritten (atomically, as omk writes) ->
             its event on `/api/events` of `omk dashboard` (target p99 < 20 ms).
  shutdown   `omk team shutdown` writes its request -> the supervisor's
             `shutdown_requested` event (noticed) and -> the agent's turn
             ending cancelled in the worker's transcript (target < 20 ms).

The scripted agent answers at once, so the team walls are omk's own costs.
omk's overhead per task at 16 workers is scripts/bench_team.py's figure.

Usage: scripts/bench_latency.py [--runs 15] [--calls 300] [--changes 200]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench_mcp import INIT, Session  # the same buffered JSON-RPC client

REPO = Path(__file__).resolve().parent.parent
OMK = REPO / "target" / "release" / "omk"
AGENT = REPO / "target" / "release" / "omk-scripted-agent"


def ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))] * 1000


def ts(s: str) -> float:
    # RFC 3339 with nanoseconds and Z: keep microseconds for fromisoformat.
    s = s.rstrip("Z")
    if "." in s:
        head, frac = s.split(".")
        s = f"{head}.{frac[:6].ljust(6, '0')}"
    return datetime.fromisoformat(s + "+00:00").timestamp()


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.project = root / "project"
        self.project.mkdir()
        self.config = root / "omk.toml"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OMK_")}
        self.env.update(OMK_STATE_DIR=str(root / "state"), OMK_KIMI_BIN=str(AGENT),
                        OMK_CONFIG=str(self.config), XDG_CONFIG_HOME=str(root / "xdg"), NO_COLOR="1")
        self.slots(8)

    def slots(self, n: int) -> None:
        self.config.write_text(f'[team]\npool = "bench"\n\n[pools.bench]\nmax_workers = {n}\n')

    def omk(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(OMK), *args], cwd=self.project, env=self.env, check=check,
                              capture_output=True)

    def events(self, team: str) -> list[dict]:
        log = self.root / "state" / "team" / team / "events.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def admission(e: Env, runs: int) -> tuple[list[float], list[float]]:
    walls: dict[int, list[float]] = {8: [], 16: []}
    tasks = [a for i in range(16) for a in ("--subtask", f"[answer:t{i}]")]
    for i in range(runs):
        for n in (8, 16):
            e.slots(n)
            t = time.perf_counter()
            e.omk("team", "run", "16:executor", "bench", "--name", f"a{n}-{i}", "--no-gates",
                  "--isolation", "none", *tasks)
            walls[n].append(time.perf_counter() - t)
    e.slots(8)
    return walls[8], walls[16]


def mcp(e: Env, calls: int) -> tuple[list[float], list[float]]:
    s = Session(e.env, e.project)
    s.call(INIT)
    s.notify("notifications/initialized")
    ping, status = [], []
    for _ in range(calls):
        t = time.perf_counter()
        r = s.request("ping")
        ping.append(time.perf_counter() - t)
        assert r.get("result") == {}, r
        t = time.perf_counter()
        r = s.request("tools/call", {"name": "omk_team_status", "arguments": {"name": "held"}})
        status.append(time.perf_counter() - t)
        assert r["result"]["structuredContent"]["status"] == "ok", r
    s.close()
    return ping, status


def processes(e: Env, runs: int) -> tuple[list[float], list[float]]:
    version, status = [], []
    for _ in range(runs):
        for args, out in ((["--version"], version), (["team", "status", "held"], status)):
            t = time.perf_counter()
            e.omk(*args)
            out.append(time.perf_counter() - t)
    return version, status


def sse(e: Env, changes: int) -> list[float]:
    dash = subprocess.Popen([str(OMK), "dashboard", "--bind", "127.0.0.1:0"], cwd=e.project,
                            env=e.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert dash.stdout
        addr = dash.stdout.readline().decode().strip().rsplit("http://", 1)[1]
        host, port = addr.split(":")
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        reader = sock.makefile("rb")
        while b"event: hello" not in reader.readline():
            pass
        doc_file = e.root / "state" / "team" / "held" / "team.json"
        doc = json.loads(doc_file.read_text())
        lat = []
        for i in range(changes):
            doc["task"] = f"latency {i}"
            tmp = doc_file.with_name(f".team.json.tmp.bench.{i}")
            tmp.write_text(json.dumps(doc))
            t = time.perf_counter()
            os.rename(tmp, doc_file)
            needle = f'"task":"latency {i}"'.encode()
            while True:
                line = reader.readline()
                assert line, "the stream closed"
                if line.startswith(b"data: ") and needle in line:
                    break
            lat.append(time.perf_counter() - t)
            time.sleep(0.01)
        sock.close()
        return lat
    finally:
        dash.kill()
        dash.wait()


def shutdowns(e: Env, runs: int) -> tuple[list[float], list[float]]:
    noticed, cancelled = [], []
    for i in range(runs):
        name = f"stop{i}"
        e.omk("team", "run", "1:executor", "stop", "--name", name, "--detach", "--no-gates",
              "--isolation", "none", "--subtask", "[sleep:60] hold")
        deadline = time.time() + 20
        while not any(ev["kind"] == "task_started" or ev["kind"] == "task_claimed"
                      for ev in e.events(name)):
            assert time.time() < deadline, "the task never started"
            time.sleep(0.01)
        time.sleep(0.2)  # the turn is streaming
        e.omk("team", "shutdown", name)
        state = e.root / "state" / "team" / name
        req = json.loads((state / "shutdown.json").read_text())
        asked = ts(req["requested_at"])
        ev = [x for x in e.events(name) if x["kind"] == "shutdown_requested"][0]
        noticed.append(ts(ev["ts"]) - asked)
        ends = [json.loads(line) for line in
                (state / "workers" / "w1" / "transcript.jsonl").read_text().splitlines()]
        end = [x for x in ends if x["kind"] == "turn_end"][-1]
        cancelled.append(ts(end["ts"]) - asked)
    return noticed, cancelled


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--changes", type=int, default=200)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "omk-cli", "-p", "omk-scripted-agent"],
                   cwd=REPO, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        e = Env(Path(tmp))
        e.omk("team", "run", "1:executor", "held", "--name", "held", "--subtask", "one", "--no-gates",
              "--isolation", "none")
        on8, on16 = admission(e, a.runs)
        ping, status = mcp(e, a.calls)
        version, team_status = processes(e, a.runs * 20)
        sse_lat = sse(e, a.changes)
        noticed, cancelled = shutdowns(e, max(5, a.runs // 2))

    def ok(good: bool) -> str:
        return "ok" if good else "MISSED"

    print(f"latency bench (release; {a.runs} team runs per pool size, {a.calls} MCP calls, "
          f"{a.runs * 20} processes each, {a.changes} SSE changes, {len(noticed)} shutdowns)")
    print(f"{'measure':<52}{'median ms':>10}{'ratio':>8}   target")
    r = ms(on8) / ms(on16)
    print(f"{'16 instant tasks on 16 slots (baseline)':<52}{ms(on16):>10.2f}{1.0:>8.2f}")
    print(f"{'16 instant tasks on 8 slots':<52}{ms(on8):>10.2f}{r:>8.2f}   <= 1.25 {ok(r <= 1.25)}")
    r = ms(status) / ms(ping)
    print(f"{'MCP ping round trip (baseline)':<52}{ms(ping):>10.3f}{1.0:>8.2f}")
    print(f"{'MCP tools/call omk_team_status round trip':<52}{ms(status):>10.3f}{r:>8.2f}"
          f"   < 1 ms {ok(ms(status) < 1)}")
    r = ms(team_status) / ms(version)
    print(f"{'omk --version process (baseline)':<52}{ms(version):>10.3f}{1.0:>8.2f}")
    print(f"{'omk team status process':<52}{ms(team_status):>10.3f}{r:>8.2f}   <= 1.2 {ok(r <= 1.2)}")
    print(f"{'document change -> SSE event, median':<52}{ms(sse_lat):>10.2f}")
    print(f"{'document change -> SSE event, p99':<52}{p99(sse_lat):>10.2f}{'':>8}   < 20 ms "
          f"{ok(p99(sse_lat) < 20)}")
    print(f"{'shutdown request -> noticed by the supervisor':<52}{ms(noticed):>10.2f}{'':>8}   < 20 ms "
          f"{ok(ms(noticed) < 20)}")
    print(f"{'shutdown request -> turn ended cancelled':<52}{ms(cancelled):>10.2f}{'':>8}   < 20 ms "
          f"{ok(ms(cancelled) < 20)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
