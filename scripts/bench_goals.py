#!/usr/bin/env python3
"""Goal queries with many goals on disk, whole-process (release build):

  goal show ID --json     target < 15 ms   (1,000 goals on disk)
  goal show latest --json                  (resolves `latest` among 1,000)
  goal list               target < 150 ms  (reads all 1,000)
  goal replay ID --json   target < 300 ms  (a 100,000-event log)

Baselines measured in the same run: `omk --version` (process start, the
floor of any omk command) and, for replay, Python's json.loads over the same
100,000 lines (a reference parser doing strictly less work). The on-disk
goals are clones of one real goal run on the scripted agent, ids rewritten.
Prints medians and ratios.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OMK = REPO / "target/release/omk"
AGENT = REPO / "target/release/omk-scripted-agent"
GOALS = 1000
EVENTS = 100_000


def timed(cmd: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall time in ms of `cmd` (stdout discarded)."""
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def main() -> int:
    subprocess.run(
        ["cargo", "build", "--release", "-p", "omk-cli", "-p", "omk-scripted-agent"],
        cwd=REPO, check=True,
    )
    root = Path(tempfile.mkdtemp(prefix="omk-bench-goals-"))
    try:
        state, project = root / "state", root / "project"
        (project / ".omk").mkdir(parents=True)
        (project / ".omk/gates.toml").write_text('[[gate]]\nname = "ok"\ncommand = "true"\n')
        env = dict(os.environ, OMK_STATE_DIR=str(state), OMK_KIMI_BIN=str(AGENT),
                   XDG_CONFIG_HOME=str(root / "xdg"), NO_COLOR="1")
        subprocess.run([str(OMK), "-C", str(project), "goal", "run", "Bench [json-plan:A|B]"],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        goals = state / "goal"
        (seed,) = list(goals.iterdir())
        seed_state = json.loads((seed / "goal.json").read_text())
        for i in range(GOALS - 1):
            gid = f"goal-20260101-{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}-000-{i:08x}"
            d = goals / gid
            shutil.copytree(seed, d)
            s = dict(seed_state, goal_id=gid, state_dir=str(d))
            (d / "goal.json").write_text(json.dumps(s, indent=2))
        some = sorted(p.name for p in goals.iterdir())[GOALS // 2]

        # A 100,000-event log: the seed's events, cycled, each with a new id.
        lines = [json.loads(l) for l in (seed / "events.jsonl").read_text().splitlines() if l]
        big = goals / seed.name / "events.jsonl"
        with big.open("w") as f:
            for i in range(EVENTS):
                e = dict(lines[i % len(lines)], id=str(uuid.UUID(int=i)))
                f.write(json.dumps(e) + "\n")

        base = timed([str(OMK), "--version"], env, 30)
        show = timed([str(OMK), "goal", "show", some, "--json"], env, 30)
        latest = timed([str(OMK), "goal", "show", "latest", "--json"], env, 30)
        lst = timed([str(OMK), "goal", "list"], env, 15)
        replay = timed([str(OMK), "goal", "replay", seed.name, "--json"], env, 7)
        t = time.perf_counter()
        with big.open() as f:
            for line in f:
                json.loads(line)
        py_parse = (time.perf_counter() - t) * 1000

        rows = [
            ("omk --version (baseline)", base, None),
            (f"goal show ID --json ({GOALS} goals)", show, 15),
            (f"goal show latest --json ({GOALS} goals)", latest, 15),
            (f"goal list ({GOALS} goals)", lst, 150),
            (f"goal replay --json ({EVENTS} events)", replay, 300),
        ]
        print(f"{'measure':<44} {'median ms':>10} {'x baseline':>10} {'target':>8}")
        for name, ms, target in rows:
            ratio = ms / base
            tgt = f"< {target}" if target else ""
            ok = "" if target is None else ("  ok" if ms < target else "  MISSED")
            print(f"{name:<44} {ms:>10.2f} {ratio:>10.2f} {tgt:>8}{ok}")
        print(f"{'python json.loads of the same log (ref.)':<44} {py_parse:>10.2f} "
              f"{'':>10} replay/ref = {replay / py_parse:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
