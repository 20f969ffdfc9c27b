#!/usr/bin/env python3
"""Benchmark worker isolation (issue: worktrees): what `--isolation worktree`
costs per task on a repository of 10,000 files, against the same team with
`--isolation none`, measured in the same run.

  none      `omk team run 4:executor` with 16 subtasks, each writing one
            file, on the bundled scripted agent (answers at once), every
            worker in the project directory.
  worktree  the same team with `--isolation worktree`: a base snapshot,
            a worktree per worker (created once, reset per task), a commit
            per attempt, a merge-tree integration per task, the branch and
            the cleanup.

Extra cost per task = (median worktree wall - median none wall) / 16
(target: < 150 ms). The four worktrees are checked out once per run (10,000
files each) and reused by their worker's tasks, so that figure is mostly
git checking out 4 x 10,000 files and deleting them; it is split into
  per worker   what a worktree costs once (created, removed), and
  per task     what each task adds beyond it (reset to the integration
               head, commit, merge-tree integration): the difference
               between the same teams with 16 and with 4 tasks (one per
               worker), divided by the 12 extra tasks, minus the same
               difference with `--isolation none`.
Each run starts after `sync` so that the writeback of the previous run's
files is not charged to it. Disk per worktree: `du` of one worktree of the
base against the checkout itself (without .git).

Usage: scripts/bench_worktree.py [--runs N] [--files N] [--omk target/release/omk]
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASKS = 16
WORKERS = 4
IDENT = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "bench",
         "GIT_COMMITTER_EMAIL": "b@b"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **IDENT}).stdout


def make_repo(root: Path, files: int) -> Path:
    proj = root / "proj"
    for i in range(files):
        d = proj / f"d{i // 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.txt").write_text(f"file {i}\n" * 8)
    git(proj, "init", "-q", "-b", "main")
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "10k files")
    return proj


def du_kib(path: Path, exclude_git: bool) -> int:
    args = ["du", "-sk", str(path)] + (["--exclude=.git"] if exclude_git else [])
    return int(subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()[0])


def team(omk: str, env: dict, proj: Path, name: str, isolation: str, tasks: int = TASKS) -> float:
    args = [omk, "team", "run", f"{WORKERS}:executor", "bench", "--name", name, "--json",
            "--isolation", isolation, "--no-gates"]
    for i in range(tasks):
        args += ["--subtask", f"[write:out/t{i:02d}.txt:task {i}]"]
    # Start from clean page cache writeback: on this VM freshly written files
    # being flushed can make the next file creations seconds slower.
    os.sync()
    t0 = time.perf_counter()
    p = subprocess.run(args, cwd=proj, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    doc = json.loads(p.stdout)
    if doc["phase"] != "Completed":
        raise SystemExit(f"{name}: {doc['phase']}: {doc.get('reason')}\n{p.stderr[-2000:]}")
    if isolation == "worktree":
        assert doc["isolation"] == "worktree", doc["isolation"]
        shown = git(proj, "ls-tree", "-r", "--name-only", f"omk/{name}", "out")
        assert len(shown.split()) == tasks, shown
    return wall


def git_alone(root: Path, proj: Path, n: int) -> float:
    """What git itself takes to create and remove `n` worktrees in parallel
    (the floor under any worktree isolation)."""
    os.sync()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["git", "-C", str(proj), "worktree", "add", "-q", "--detach",
                               str(root / f"alone-{i}"), "HEAD"]) for i in range(n)]
    for p in procs:
        p.wait()
    procs = [subprocess.Popen(["git", "-C", str(proj), "worktree", "remove", "--force",
                               str(root / f"alone-{i}")]) for i in range(n)]
    for p in procs:
        p.wait()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--omk", default=str(REPO / "target" / "release" / "omk"))
    a = ap.parse_args()
    agent = Path(a.omk).parent / "omk-scripted-agent"
    if not agent.exists():
        raise SystemExit(f"{agent} is missing: cargo build --release -p omk-scripted-agent")
    with tempfile.TemporaryDirectory(prefix="omk-bench-wt-") as tmp:
        root = Path(tmp)
        proj = make_repo(root, a.files)
        cfg = root / "omk.toml"
        cfg.write_text(f'[agent]\nbin = "{agent}"\n[pools.default]\nmax_workers = 16\n')
        env = {**os.environ, "OMK_CONFIG": str(cfg), "OMK_STATE_DIR": str(root / "state"),
               "XDG_CONFIG_HOME": str(root / "xdg")}
        for k in ("OMK_KIMI_BIN", "OMK_KIMI_ARGS", "OMK_AGENT_PROTOCOL"):
            env.pop(k, None)
        walls: dict[str, list[float]] = {"none": [], "worktree": [], "git": [], "none4": [],
                                         "worktree4": []}
        for run in range(a.runs):
            for mode in ("none", "worktree"):  # interleaved: same machine state for both
                walls[mode].append(team(a.omk, env, proj, f"{mode}-{run}", mode))
                git(proj, "clean", "-fdq", "out")
                walls[f"{mode}4"].append(team(a.omk, env, proj, f"{mode}4-{run}", mode, WORKERS))
                git(proj, "clean", "-fdq", "out")
            walls["git"].append(git_alone(root, proj, WORKERS))
        none, wt = statistics.median(walls["none"]), statistics.median(walls["worktree"])
        alone = statistics.median(walls["git"])
        extra_ms = (wt - none) / TASKS * 1000
        none4, wt4 = statistics.median(walls["none4"]), statistics.median(walls["worktree4"])
        per_task_ms = ((wt - wt4) - (none - none4)) / (TASKS - WORKERS) * 1000
        per_worker_s = (wt4 - none4) / WORKERS
        probe = root / "probe-worktree"
        git(proj, "worktree", "add", "-q", "--detach", str(probe), "HEAD")
        wt_kib, co_kib = du_kib(probe, False), du_kib(proj, True)
        git(proj, "worktree", "remove", "--force", str(probe))
    print(f"worktree isolation, {TASKS} tasks on {WORKERS} workers, {a.files} files, {a.runs} runs:")
    print(f"  --isolation none:     median {none:.3f} s")
    print(f"  --isolation worktree: median {wt:.3f} s")
    print(f"  extra per task: {extra_ms:.1f} ms (target < 150 ms); ratio {wt / none:.2f}x")
    print(f"  split: per worker (worktree made once, removed) {per_worker_s * 1000:.0f} ms; "
          f"per task beyond it (reset, commit, integrate) {per_task_ms:.1f} ms "
          f"[{WORKERS}-task teams: none {none4:.3f} s, worktree {wt4:.3f} s]")
    print(f"  git alone, {WORKERS} worktrees created and removed in parallel: median {alone:.3f} s; "
          f"omk beyond that per task: {(wt - none - alone) / TASKS * 1000:.1f} ms")
    print(f"  disk per worktree: {wt_kib / 1024:.1f} MiB vs checkout {co_kib / 1024:.1f} MiB "
          f"({wt_kib / co_kib:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
