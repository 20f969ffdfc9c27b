#!/usr/bin/env python3
"""Benchmark `omk team run 16:executor` with 16 subtasks (issue: teams).

For each agent (the bundled scripted agent answering at once, and, when
available, the real kimi-cli 1.51.0 against the fake LLM) it measures, in the
same run:

  baseline  16 agents driven directly over Wire by a minimal client in this
            script (spawn, initialize, one prompt, close stdin), in parallel:
            the cost of the agents alone.
  omk       `omk team run 16:executor ... --subtask x16` (release build):
            the same agents and turns, plus everything omk adds (pool
            admission, scheduling, leases, fsynced events and documents,
            heartbeats, transcripts, proof).

omk's own overhead per task = (median omk wall - median baseline wall) / 16.
Agent start-up is the median spawn-to-initialize time omk recorded in its
`worker_started` events. Supervisor peak RSS is the kernel's ru_maxrss at
exit (the largest of omk and the agents it waited for: omk's own).

The state goes under $TMPDIR: TMPDIR=/dev/shm separates omk's own cost
from the disk's (on this VM's ext4, fsync latency under concurrent metadata
writes varies from 0.1 to several ms with the disk's recent history).

Usage: scripts/bench_team.py [--runs N] [--omk target/release/omk] [--kimi]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "peers"))

TASKS = 16


def wire_session(argv, env, cwd, results, i):
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=cwd, text=True)

    def call(rid, method, params):
        p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}) + "\n")
        p.stdin.flush()
        for line in p.stdout:
            msg = json.loads(line)
            if msg.get("method") == "request":  # approve anything (not used by the bench prompt)
                p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"request_id": msg["id"], "response": "approve"}}) + "\n")
                p.stdin.flush()
            if msg.get("id") == rid:
                return msg

    call("init-1", "initialize", {"protocol_version": "1.10", "client": {"name": "bench"}})
    started = time.perf_counter()
    call("prompt-2", "prompt", {"user_input": f"subtask {i}"})
    p.stdin.close()
    p.wait()
    results[i] = (started - t0, time.perf_counter() - t0)


def baseline(argv, env, cwd) -> float:
    results = [None] * TASKS
    t0 = time.perf_counter()
    threads = [threading.Thread(target=wire_session, args=(argv, env, cwd, results, i)) for i in range(TASKS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def omk_run(omk: str, env, cwd, state: Path, name: str):
    args = [omk, "team", "run", f"{TASKS}:executor", "benchmark task", "--name", name, "--json"]
    for i in range(TASKS):
        args += ["--subtask", f"subtask {i}"]
    t0 = time.perf_counter()
    errf = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=errf, text=True)
    out = p.stdout.read()
    # Peak RSS from the kernel at exit (wait4's ru_maxrss: the largest of
    # the process and the children it waited for, i.e. the supervisor),
    # not by sampling /proc from here: a sampling thread would compete for
    # the CPU with the run it measures.
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    peak_kb = [usage.ru_maxrss]
    errf.seek(0)
    err = errf.read()
    if p.returncode != 0:
        raise SystemExit(f"omk failed ({p.returncode}): {err[-2000:]}")
    events = [json.loads(l) for l in (state / "team" / name / "events.jsonl").read_text().splitlines() if l.strip()]
    startups = [e["payload"]["startup_ms"] for e in events if e["kind"] == "worker_started"]
    doc = json.loads(out)
    assert doc["phase"] == "Completed" and len(doc["tasks"]) == TASKS, doc["phase"]
    return wall, peak_kb[0], startups


def measure(label: str, omk: str, agent_argv, env, runs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        work = tmp / "proj"
        work.mkdir()
        env = dict(env)
        env["OMK_STATE_DIR"] = str(tmp / "state")
        env["XDG_CONFIG_HOME"] = str(tmp / "xdg")
        cfg = tmp / "omk.toml"
        cfg.write_text("[pools.default]\nmax_workers = 16\n[agent]\nstart_timeout_secs = 120\n")
        env["OMK_CONFIG"] = str(cfg)
        base, walls, rsss, startups = [], [], [], []
        for i in range(runs):
            base.append(baseline([*agent_argv, "--wire", "--work-dir", str(work)], env, work))
            w, rss, st = omk_run(omk, env, work, tmp / "state", f"bench-{i}")
            walls.append(w)
            rsss.append(rss)
            startups += st
    b, w = statistics.median(base), statistics.median(walls)
    return {
        "agent": label,
        "runs": runs,
        "baseline_wall_s": b,
        "omk_wall_s": w,
        "ratio_omk_vs_baseline": w / b,
        "omk_overhead_per_task_ms": (w - b) / TASKS * 1000,
        "agent_startup_median_ms": statistics.median(startups),
        "supervisor_peak_rss_mb": max(rsss) / 1024,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--omk", default=str(REPO / "target" / "release" / "omk"))
    ap.add_argument("--kimi", action="store_true", help="also run with the real kimi-cli and the fake LLM")
    args = ap.parse_args()
    scripted = str(Path(args.omk).with_name("omk-scripted-agent"))
    env = dict(os.environ, OMK_KIMI_BIN=scripted)
    env.pop("OMK_KIMI_ARGS", None)
    rows = [measure("scripted", args.omk, [scripted], env, args.runs)]
    if args.kimi:
        from kimi_env import FakeLLM, kimi_bin, omk_env, unavailable_reason

        why = unavailable_reason()
        if why:
            print(f"real kimi-cli: SKIPPED: {why}")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                llm = FakeLLM(Path(tmp) / "llm.jsonl")
                try:
                    kenv = omk_env(tmp, llm.port)
                    cfg_args = kenv["OMK_KIMI_ARGS"].split()
                    rows.append(measure("kimi-cli 1.51.0 + fake LLM", args.omk, [str(kimi_bin()), *cfg_args], kenv, max(1, args.runs // 2)))
                finally:
                    llm.stop()
    for r in rows:
        print(f"== {r['agent']} ({r['runs']} runs, medians)")
        print(f"  baseline: 16 agents driven directly   {r['baseline_wall_s'] * 1000:8.1f} ms")
        print(f"  omk team run 16:executor             {r['omk_wall_s'] * 1000:8.1f} ms   ratio {r['ratio_omk_vs_baseline']:.2f}")
        print(f"  omk's own overhead per task          {r['omk_overhead_per_task_ms']:8.2f} ms   (target < 1 ms)")
        print(f"  agent start-up (spawn->initialize)   {r['agent_startup_median_ms']:8.1f} ms")
        print(f"  supervisor peak RSS                  {r['supervisor_peak_rss_mb']:8.1f} MB   (target < 30 MB)")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
