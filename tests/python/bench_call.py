"""Per-call cost of a small synchronous call through the binding:
``Omk.metrics()`` (GIL released, metrics.json read, dict built).

Prints ``py_metrics_ns <n>``: the median over 21 batches of 20000 calls,
after a warm-up, with the state dir in a fresh directory under /tmp.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import omk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=21)
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="omk-bench-", dir="/tmp") as tmp:
        o = omk.Omk(state_dir=f"{tmp}/state", project_dir=tmp)
        metrics = o.metrics
        for _ in range(2000):  # warm-up: state dir, page cache, allocator
            metrics()
        per_call = []
        for _ in range(args.batches):
            start = time.perf_counter_ns()
            for _ in range(args.calls):
                metrics()
            per_call.append((time.perf_counter_ns() - start) / args.calls)
        print(f"py_metrics_ns {round(statistics.median(per_call))}")
        version = o.call
        per_call = []
        for _ in range(args.batches):
            start = time.perf_counter_ns()
            for _ in range(args.calls):
                version("version")
            per_call.append((time.perf_counter_ns() - start) / args.calls)
        print(f"py_version_ns {round(statistics.median(per_call))}")


if __name__ == "__main__":
    main()
