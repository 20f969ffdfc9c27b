#!/usr/bin/env python3
"""Per-call overhead of a trivial op (`metrics`) from Rust, C and Python, in
one run (issue: library). Everything is built in release mode first.

  rust    criterion median of `Omk::metrics()` (omk-core/benches/calls.rs)
  c       median per call of `omk_metrics` + `omk_string_free` (tests/c/bench_call.c)
  python  median per call of `omk.Omk.metrics()` (tests/python/bench_call.py)

Targets: C <= 2 us and Python <= 10 us above the Rust call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VPY = REPO / ".venv" / "bin" / "python"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, cwd=REPO, text=True, capture_output=True, **kw).stdout


def value(output: str, key: str) -> float:
    for line in output.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[1])
    raise SystemExit(f"no {key} in output:\n{output}")


def main() -> int:
    env = dict(os.environ, PYO3_PYTHON=str(VPY))
    run(["cargo", "build", "--release", "-p", "omk-ffi"], env=env)
    run(["cargo", "bench", "-p", "omk-core", "--bench", "calls"], env=env)
    est = json.loads((REPO / "target/criterion/calls/rust_metrics/new/estimates.json").read_text())
    rust_ns = est["median"]["point_estimate"]

    exe = REPO / "target/c-tests/bench_call"
    exe.parent.mkdir(parents=True, exist_ok=True)
    run(["gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-Iinclude", "tests/c/bench_call.c",
         "-Ltarget/release", "-lomk", "-Wl,-rpath," + str(REPO / "target/release"), "-o", str(exe)])
    c_ns = value(run([str(exe)]), "c_metrics_ns")

    wheels = REPO / "target/wheels-release"
    run([str(REPO / ".venv/bin/maturin"), "build", "--release", "-q", "--out", str(wheels)], env=env)
    wheel = sorted(wheels.glob("omk-*.whl"))[-1]
    run([str(VPY), "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(wheel)])
    py_ns = value(run([str(VPY), "tests/python/bench_call.py"]), "py_metrics_ns")

    print("per-call cost of `metrics` (medians, same run, release builds)")
    print(f"  Rust   Omk::metrics()            {rust_ns / 1000:7.2f} us  (baseline)")
    print(f"  C      omk_metrics + free        {c_ns / 1000:7.2f} us  +{(c_ns - rust_ns) / 1000:.2f} us  (target <= +2 us)")
    print(f"  Python omk.Omk().metrics()       {py_ns / 1000:7.2f} us  +{(py_ns - rust_ns) / 1000:.2f} us  (target <= +10 us)")
    ok = c_ns - rust_ns <= 2000 and py_ns - rust_ns <= 10000
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
