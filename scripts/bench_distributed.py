#!/usr/bin/env python3
"""Benchmark a 32-task team over 2 `omk worker` hosts (PostgreSQL store) vs
the same team on one host with the file store (issue 16), same run, medians.

  file store   `omk team run 8:executor ... --subtask x32` (8 workers, one
               process, --isolation none --no-gates)
  PostgreSQL   `omk team run 8:executor ... --subtask x32 --store URL`, run
               by two `omk worker --max-agents 4` daemons (separate state
               dirs, started before the timing), over TCP on 127.0.0.1

Tasks are the scripted agent answering at once, so the figures are omk's own
costs: claims, leases, events and documents through each store.

Needs OMK_TEST_PG_URL (`make bench` runs it under tests/pg/with-postgres.sh
with fsync on). Usage: scripts/bench_distributed.py [--runs N] [--omk PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASKS = 32


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--omk", default=str(REPO / "target" / "release" / "omk"))
    a = ap.parse_args()
    url = os.environ.get("OMK_TEST_PG_URL")
    if not url:
        print("distributed bench: SKIPPED: OMK_TEST_PG_URL is not set (make bench starts PostgreSQL)")
        return 0
    agent = str(Path(a.omk).with_name("omk-scripted-agent"))
    db = "omk_bd_" + uuid.uuid4().hex[:8]
    subprocess.run(["psql", url, "-q", "-c", f"CREATE DATABASE {db}"], check=True)
    store = url.rsplit("/", 1)[0] + "/" + db
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def env(name: str) -> dict:
            d = tmp / name
            (d / "xdg").mkdir(parents=True, exist_ok=True)
            (d / "omk.toml").write_text("[pools.default]\nmax_workers = 16\n")
            e = {k: v for k, v in os.environ.items() if not k.startswith("OMK_")}
            e.update(OMK_STATE_DIR=str(d / "state"), OMK_CONFIG=str(d / "omk.toml"),
                     XDG_CONFIG_HOME=str(d / "xdg"), OMK_KIMI_BIN=agent, NO_COLOR="1")
            return e

        tasks = [x for i in range(TASKS) for x in ("--subtask", f"[answer:t{i}]")]
        hosts = [subprocess.Popen([a.omk, "worker", "--store", store, "--max-agents", "4", "--name", f"h{i}"],
                                  env=env(f"h{i}"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i in range(2)]
        try:
            time.sleep(1.0)  # both listening
            local, remote, used = [], [], []
            work = tmp / "proj"
            work.mkdir()
            for i in range(a.runs):
                e = env("submitter")
                t = time.perf_counter()
                subprocess.run([a.omk, "team", "run", "8:executor", "bench", "--name", f"f{i}", "--isolation",
                                "none", "--no-gates", "--json", *tasks], env=e, cwd=work, check=True,
                               stdout=subprocess.DEVNULL)
                local.append(time.perf_counter() - t)
                t = time.perf_counter()
                out = subprocess.run([a.omk, "team", "run", "8:executor", "bench", "--name", f"d{i}", "--json",
                                      "--store", store, *tasks], env=e, cwd=work, check=True,
                                     capture_output=True, text=True)
                remote.append(time.perf_counter() - t)
                doc = json.loads(out.stdout)
                assert doc["phase"] == "Completed", doc
                hosts_used = {t["worker"].split("/")[0] for t in doc["tasks"]}
                used.append(len(hosts_used))
        finally:
            for h in hosts:
                h.send_signal(signal.SIGTERM)
            for h in hosts:
                h.wait(timeout=30)
    lm, rm = statistics.median(local), statistics.median(remote)
    print(f"distributed bench ({a.runs} runs, medians; {TASKS} instant tasks, 8 agents at a time)")
    print(f"{'measure':<64}{'median':>10}{'ratio':>8}")
    print(f"{'one host, file store (omk team run 8:executor)':<64}{lm * 1000:>8.1f} ms{1:>8.2f}")
    print(f"{'2 worker hosts x 4 agents, PostgreSQL (omk team run --store)':<64}{rm * 1000:>8.1f} ms{rm / lm:>8.2f}")
    print(f"{'per task, PostgreSQL':<64}{rm / TASKS * 1000:>8.2f} ms")
    print(f"hosts that ran tasks, per run: {used}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
