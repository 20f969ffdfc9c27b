#!/usr/bin/env python3
"""Dashboard figures (issue: web dashboard), release build, one run:

  teams     median of GET /api/teams with 10,000 teams on disk (target < 100 ms);
            the first request, which reads every team.json, is shown apart
  static    median of GET /app.css from the same server (baseline: HTTP alone)
  health    /api/health under a constant 1,000 requests/s for 5 s from a
            loopback load generator (asyncio, 32 keep-alive connections):
            p50 / p99 latency (target p99 < 10 ms), and the same load on
            /app.css as the baseline

The 10,000 teams are copies of one real team run on the scripted agent,
names and paths rewritten.

    scripts/bench_dashboard.py [--teams 10000] [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OMK = REPO / "target" / "release" / "omk"
AGENT = REPO / "target" / "release" / "omk-scripted-agent"


def get_ms(host: str, port: int, path: str, runs: int) -> float:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        samples.append(time.perf_counter() - t)
        assert r.status == 200, (r.status, body[:200])
    conn.close()
    return statistics.median(samples) * 1000


async def load(host: str, port: int, path: str, rate: int, seconds: float, conns: int = 32) -> list[float]:
    """Constant-rate load: request i is due at i/rate; latency counts from
    when it was due (so queueing in the generator is not hidden)."""
    latencies: list[float] = []
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    queue: asyncio.Queue[float] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(start + i / rate)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while True:
            try:
                due = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - due)
        writer.close()

    await asyncio.gather(*(worker() for _ in range(conns)))
    return latencies


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teams", type=int, default=10_000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "omk-cli", "-p", "omk-scripted-agent"],
                   cwd=REPO, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = root / "project"
        project.mkdir()
        state = root / "state"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMK_")}
        env.update(OMK_STATE_DIR=str(state), OMK_KIMI_BIN=str(AGENT), XDG_CONFIG_HOME=str(root / "xdg"))
        subprocess.run([str(OMK), "team", "run", "1:executor", "seed", "--name", "seed", "--subtask", "one",
                        "--no-gates"], cwd=project, env=env, check=True, capture_output=True)
        seed = state / "team" / "seed"
        doc = json.loads((seed / "team.json").read_text())
        for i in range(a.teams - 1):
            name = f"bench-{i:05d}"
            d = state / "team" / name
            d.mkdir()
            doc["name"] = name
            doc["state_dir"] = str(d)
            (d / "team.json").write_text(json.dumps(doc))
        dash = subprocess.Popen([str(OMK), "dashboard", "--bind", "127.0.0.1:0"], cwd=project, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert dash.stdout is not None
            url = dash.stdout.readline().strip().rsplit("//", 1)[-1]
            host, port_s = url.split(":")
            port = int(port_s)
            static = get_ms(host, port, "/app.css", 50)
            cold = get_ms(host, port, "/api/teams", 1)
            teams = get_ms(host, port, "/api/teams", 15)
            health_lat = asyncio.run(load(host, port, "/api/health", a.rate, a.seconds))
            static_lat = asyncio.run(load(host, port, "/app.css", a.rate, a.seconds))
        finally:
            dash.kill()
            dash.wait()
        shutil.rmtree(state, ignore_errors=True)

    print(f"dashboard bench (release, {a.teams} teams, {a.rate} req/s for {a.seconds:g} s)")
    print(f"{'measure':<46}{'ms':>9}{'x baseline':>12}   target")
    print(f"{'GET /app.css median (baseline)':<46}{static:>9.3f}{1.0:>12.2f}")
    print(f"{'GET /api/teams first request (cold), 10k':<46}{cold:>9.2f}{cold / static:>12.1f}")
    print(f"{'GET /api/teams median, 10k teams':<46}{teams:>9.2f}{teams / static:>12.1f}   < 100 ms {'ok' if teams < 100 else 'MISSED'}")
    hp50, hp99, sp50, sp99 = pct(health_lat, .5), pct(health_lat, .99), pct(static_lat, .5), pct(static_lat, .99)
    print(f"{'/app.css under load p50 / p99 (baseline)':<46}{sp50:>9.3f} / {sp99:.3f}")
    print(f"{'/api/health under load p50 / p99':<46}{hp50:>9.3f} / {hp99:.3f}   p99 < 10 ms {'ok' if hp99 < 10 else 'MISSED'}  (p99 x{hp99 / sp99:.2f})")
    print(f"{'requests completed (health / static)':<46}{len(health_lat):>9} / {len(static_lat)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
