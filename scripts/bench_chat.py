#!/usr/bin/env python3
"""What `omk chat` adds to a turn (issue: terminal chat).

Both sides run the same release-built scripted agent (`[answer:...]`, an
instant answer), so the difference is omk's own work per turn: the prompt and
answer appended to conversation.jsonl with an fsync each, the engine events
written and synced, the answer streamed to stdout.

  baseline  median of prompt -> `prompt` response, talking Wire to the agent directly
  chat      median of line written to `omk chat` stdin -> answer line on stdout
  start     median of `omk chat` start -> first answer (agent start included)

Prints the medians, the overhead per turn (chat - baseline) and their ratio.
Target: under 10 ms of overhead per turn.

    scripts/bench_chat.py [--turns 200] [--starts 7] [--debug]
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


def build(profile: str) -> Path:
    cmd = ["cargo", "build", "-q", "-p", "omk-cli", "-p", "omk-scripted-agent"]
    if profile == "release":
        cmd.append("--release")
    subprocess.run(cmd, check=True, cwd=REPO)
    return REPO / "target" / profile


def baseline(agent: Path, work: Path, turns: int) -> list[float]:
    p = subprocess.Popen(
        [str(agent), "--wire", "--work-dir", str(work)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
    )
    assert p.stdin and p.stdout

    def request(i: int, method: str, params: dict) -> None:
        p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": f"r{i}", "method": method, "params": params}) + "\n")
        p.stdin.flush()
        while True:
            msg = json.loads(p.stdout.readline())
            if msg.get("id") == f"r{i}" and "method" not in msg:
                return

    request(0, "initialize", {"protocol_version": "1.10"})
    out = []
    for i in range(1, turns + 1):
        t = time.perf_counter()
        request(i, "prompt", {"user_input": f"[answer:ok {i}]"})
        out.append(time.perf_counter() - t)
    p.stdin.close()
    p.wait(10)
    return out


def env_for(tmp: Path, agent: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMK_", "NO_COLOR"))}
    env.update(
        OMK_STATE_DIR=str(tmp / "state"), OMK_KIMI_BIN=str(agent),
        XDG_CONFIG_HOME=str(tmp / "xdg"), RUST_LOG="error",
    )
    return env


def chat(omk: Path, agent: Path, tmp: Path, work: Path, turns: int) -> list[float]:
    p = subprocess.Popen(
        [str(omk), "chat", "--new", "--approval", "approve-all"], cwd=work, env=env_for(tmp, agent),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
    )
    assert p.stdin and p.stdout
    out = []
    for i in range(1, turns + 1):
        t = time.perf_counter()
        p.stdin.write(f"[answer:ok {i}]\n")
        p.stdin.flush()
        line = p.stdout.readline()
        out.append(time.perf_counter() - t)
        if line.strip() != f"ok {i}":
            raise SystemExit(f"unexpected answer {line!r}")
    p.stdin.close()
    if p.wait(30) != 0:
        raise SystemExit("omk chat failed")
    return out


def start(omk: Path, agent: Path, tmp: Path, work: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run(
        [str(omk), "chat", "--new", "--approval", "approve-all"], cwd=work, env=env_for(tmp, agent),
        input="[answer:up]\n", capture_output=True, text=True, timeout=60,
    )
    if r.stdout != "up\n":
        raise SystemExit(f"omk chat start: {r.stdout!r} {r.stderr!r}")
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=200)
    ap.add_argument("--starts", type=int, default=7)
    ap.add_argument("--debug", action="store_true", help="use debug builds")
    a = ap.parse_args()
    bins = build("debug" if a.debug else "release")
    omk, agent = bins / "omk", bins / "omk-scripted-agent"
    # Under target/, on the disk the state normally lives on (a tmpfs /tmp
    # would make every fsync free).
    with tempfile.TemporaryDirectory(dir=REPO / "target", prefix="bench-chat-") as d:
        tmp = Path(d)
        work = tmp / "proj"
        work.mkdir()
        base = statistics.median(baseline(agent, work, a.turns))
        per_turn = statistics.median(chat(omk, agent, tmp, work, a.turns))
        starts = statistics.median(start(omk, agent, tmp, work) for _ in range(a.starts))
    ms = lambda s: f"{s * 1000:.2f} ms"
    print(f"chat bench ({'debug' if a.debug else 'release'}, {a.turns} turns, {a.starts} starts)")
    print(f"  baseline turn (Wire direct)   median {ms(base)}")
    print(f"  omk chat turn                 median {ms(per_turn)}")
    print(f"  overhead per turn             {ms(per_turn - base)}  (ratio {per_turn / base:.2f}x)")
    print(f"  omk chat start to 1st answer  median {ms(starts)}")
    verdict = "OK" if per_turn - base < 0.010 else "OVER TARGET"
    print(f"  target: < 10 ms overhead per turn: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
