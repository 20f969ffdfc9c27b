#!/usr/bin/env python3
"""`omk mcp-server` latency (issue: MCP server), release build, one run:

  status    median round trip of `tools/call omk_team_status` over stdio,
            one long-lived session (target < 2 ms)
  ping      median round trip of `ping` in the same session (baseline: the
            transport and JSON-RPC alone, no omk work)
  start     median time from spawning `omk mcp-server` to the `initialize`
            answer (target < 50 ms)
  version   median of a whole `omk --version` process (baseline: process start)

    scripts/bench_mcp.py [--calls 300] [--starts 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OMK = REPO / "target" / "release" / "omk"
AGENT = REPO / "target" / "release" / "omk-scripted-agent"
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}


class Session:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        # Buffered pipes: an unbuffered readline reads one byte per system
        # call, which costs more than the server's answer.
        self.p = subprocess.Popen([str(OMK), "mcp-server"], cwd=cwd, env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.next_id = 1

    def call(self, msg: dict) -> dict:
        assert self.p.stdin and self.p.stdout
        self.p.stdin.write(json.dumps(msg).encode() + b"\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def notify(self, method: str) -> None:
        assert self.p.stdin
        self.p.stdin.write(json.dumps({"jsonrpc": "2.0", "method": method}).encode() + b"\n")
        self.p.stdin.flush()

    def request(self, method: str, params: dict | None = None) -> dict:
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            msg["params"] = params
        return self.call(msg)

    def close(self) -> None:
        assert self.p.stdin
        self.p.stdin.close()
        self.p.wait(timeout=20)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--starts", type=int, default=15)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "omk-cli", "-p", "omk-scripted-agent"],
                   cwd=REPO, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = root / "project"
        project.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMK_")}
        env.update(OMK_STATE_DIR=str(root / "state"), OMK_KIMI_BIN=str(AGENT),
                   XDG_CONFIG_HOME=str(root / "xdg"), NO_COLOR="1")
        subprocess.run([str(OMK), "team", "run", "1:executor", "bench", "--name", "bench",
                        "--subtask", "one", "--no-gates"], cwd=project, env=env, check=True,
                       capture_output=True)

        version = []
        for _ in range(a.starts):
            t = time.perf_counter()
            subprocess.run([str(OMK), "--version"], env=env, check=True, capture_output=True)
            version.append(time.perf_counter() - t)

        starts = []
        for _ in range(a.starts):
            t = time.perf_counter()
            s = Session(env, project)
            reply = s.call(INIT)
            starts.append(time.perf_counter() - t)
            assert "result" in reply, reply
            s.close()

        s = Session(env, project)
        s.call(INIT)
        s.notify("notifications/initialized")
        ping, status = [], []
        for _ in range(a.calls):
            t = time.perf_counter()
            r = s.request("ping")
            ping.append(time.perf_counter() - t)
            assert r.get("result") == {}, r
            t = time.perf_counter()
            r = s.request("tools/call", {"name": "omk_team_status", "arguments": {"name": "bench"}})
            status.append(time.perf_counter() - t)
            assert r["result"]["structuredContent"]["status"] == "ok", r
        s.close()

    p, st, sv, v = median_ms(ping), median_ms(status), median_ms(starts), median_ms(version)
    print(f"mcp bench (release, {a.calls} calls, {a.starts} starts)")
    print(f"{'measure':<44}{'median ms':>10}{'x baseline':>12}   target")
    print(f"{'ping round trip (baseline)':<44}{p:>10.3f}{1.0:>12.2f}")
    print(f"{'tools/call omk_team_status round trip':<44}{st:>10.3f}{st / p:>12.2f}   < 2 ms {'ok' if st < 2 else 'MISSED'}")
    print(f"{'omk --version process (baseline)':<44}{v:>10.3f}{1.0:>12.2f}")
    print(f"{'start to first answer (initialize)':<44}{sv:>10.3f}{sv / v:>12.2f}   < 50 ms {'ok' if sv < 50 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
