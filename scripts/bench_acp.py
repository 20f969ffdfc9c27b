#!/usr/bin/env python3
"""Benchmark agent reuse over ACP (issue: ACP agents): 16 tasks on 4
workers running the real `kimi acp` (kimi-cli 1.51.0) against the fake LLM
on 127.0.0.1, measured in the same run as its baseline:

  omk       `omk team run 4:executor@kimi-acp` with 16 subtasks: each worker
            keeps one agent process and opens a fresh `session/new` per task.
            Target: 4 agent processes started, not 16.
  baseline  16 fresh agents, 4 at a time: 16 one-task teams
            (`1:executor@kimi-acp`), four running concurrently -- the same
            turns with a cold agent start per task.

Agent processes are counted from each run's `worker_started` events.
Reports medians over --runs runs and the wall-time ratio baseline / omk.

Usage: scripts/bench_acp.py [--runs N] [--omk target/release/omk]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "peers"))

from kimi_env import FakeLLM, kimi_bin, omk_env, prepare_kimi_acp, team_events, unavailable_reason  # noqa: E402

TASKS = 16
WORKERS = 4


def rig(tmp: Path, port: int) -> dict:
    env = omk_env(tmp, port)
    prepare_kimi_acp(env, tmp)
    cfg = tmp / "omk.toml"
    cfg.write_text(
        "[pools.default]\nmax_workers = 64\n\n"
        f"[agents.kimi-acp]\ncommand = [{json.dumps(str(kimi_bin()))}, \"acp\"]\nprotocol = \"acp\"\n")
    env["OMK_CONFIG"] = str(cfg)
    env["OMK_STATE_DIR"] = str(tmp / "state")
    env["XDG_CONFIG_HOME"] = str(tmp / "xdg")
    work = tmp / "proj"
    work.mkdir(exist_ok=True)
    return {"env": env, "work": work, "state": tmp / "state"}


def team(omk: str, r: dict, spec: str, name: str, subtasks: list[str]) -> dict:
    args = [omk, "team", "run", spec, "bench", "--name", name, "--no-gates", "--json"]
    for s in subtasks:
        args += ["--subtask", s]
    p = subprocess.run(args, cwd=r["work"], env=r["env"], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"omk team run failed: {p.stderr[-2000:]}")
    doc = json.loads(p.stdout)
    assert doc["phase"] == "Completed", doc
    return doc


def agents_started(r: dict, name: str) -> int:
    return sum(1 for e in team_events(r["state"], name) if e["kind"] == "worker_started")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--omk", default=str(REPO / "target" / "release" / "omk"))
    a = ap.parse_args()
    why = unavailable_reason()
    if why:
        raise SystemExit(f"bench_acp: the real kimi-cli is needed: {why}")
    subtasks = [f"[answer:task {i} done]" for i in range(TASKS)]
    omk_walls, base_walls, omk_agents, base_agents = [], [], [], []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        llm = FakeLLM(tmp / "llm.jsonl")
        try:
            r = rig(tmp, llm.port)
            for run in range(a.runs):
                t0 = time.perf_counter()
                team(a.omk, r, f"{WORKERS}:executor@kimi-acp", f"reuse-{run}", subtasks)
                omk_walls.append(time.perf_counter() - t0)
                omk_agents.append(agents_started(r, f"reuse-{run}"))

                names = [f"fresh-{run}-{i}" for i in range(TASKS)]
                t0 = time.perf_counter()
                with ThreadPoolExecutor(WORKERS) as pool:
                    list(pool.map(lambda n: team(a.omk, r, "1:executor@kimi-acp", n,
                                                 [subtasks[names.index(n)]]), names))
                base_walls.append(time.perf_counter() - t0)
                base_agents.append(sum(agents_started(r, n) for n in names))
        finally:
            llm.stop()
    om, bm = statistics.median(omk_walls), statistics.median(base_walls)
    print(f"ACP agent reuse, {TASKS} tasks on {WORKERS} workers, real kimi acp, {a.runs} runs:")
    print(f"  omk (one agent per worker, session/new per task): median {om:.2f} s, "
          f"agent processes {statistics.median(omk_agents):.0f} (target {WORKERS})")
    print(f"  baseline (16 fresh agents, 4 at a time):          median {bm:.2f} s, "
          f"agent processes {statistics.median(base_agents):.0f}")
    print(f"  ratio baseline/omk: {bm / om:.2f}x")


if __name__ == "__main__":
    main()
