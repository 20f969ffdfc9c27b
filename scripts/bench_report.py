#!/usr/bin/env python3
"""Print criterion medians and the ratios the issues ask for.

Reads target/criterion/<group>/<bench>/new/estimates.json written by the last
`cargo bench` run, so every figure comes from one run on one machine.
"""

import json
import sys
from pathlib import Path


def median_ns(root: Path, group: str, bench: str) -> float | None:
    f = root / group / bench / "new" / "estimates.json"
    if not f.exists():
        return None
    return json.loads(f.read_text())["median"]["point_estimate"]


def fmt(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} us"
    return f"{ns:.0f} ns"


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
    raw = median_ns(root, "store", "raw_write_fsync_100b")
    single = median_ns(root, "store", "event_append_durable")
    grouped = median_ns(root, "store", "event_append_grouped_1000")
    metrics = median_ns(root, "store", "metrics_increment_locked")
    if None in (raw, single, grouped, metrics):
        print("missing criterion results; run `make bench` first", file=sys.stderr)
        return 1
    print("store benchmarks (criterion medians, same run)")
    print(f"  raw 100-byte write + fdatasync        {fmt(raw)}  (baseline)")
    print(f"  durable single event append           {fmt(single)}  ratio {single / raw:.2f} (target <= 1.30)")
    print(f"  grouped append of 1000 events         {fmt(grouped)}  = {fmt(grouped / 1000)} per event, ratio {grouped / 1000 / raw:.3f}")
    print(f"  metrics increment under the lock      {fmt(metrics)}  (target < 200 us)  ratio {metrics / raw:.2f}")
    ok = single / raw <= 1.3 and metrics < 200_000
    direct = median_ns(root, "gates", "spawn_direct_100")
    via_omk = median_ns(root, "gates", "omk_gates_100")
    breaker = median_ns(root, "gates", "breaker_update")
    if None not in (direct, via_omk, breaker):
        print("gate benchmarks (criterion medians, same run)")
        print(f"  100 x `true` spawned directly         {fmt(direct)}  (baseline)")
        print(f"  100 x `true` as omk gates             {fmt(via_omk)}  ratio {via_omk / direct:.2f} (target <= 1.15)")
        print(f"  breaker state update under the lock   {fmt(breaker)}  (target < 1 ms)")
        ok = ok and via_omk / direct <= 1.15 and breaker < 1_000_000
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
