"""
Aggregates an Nsight Compute per-launch CSV (ncu --csv --page raw --metrics
gpu__time_duration.sum) into a per-kernel table: total GPU time, launches, share.
scripts/gpu_check.sh uses it for its PROFILE=1 step (where the time of a training
step goes, kernel by kernel).

    python3 dev/ncu_summary.py NCU.csv [--steps N] [--top K]
"""
import argparse
import csv
import io
import sys
from collections import defaultdict


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--steps", type=int, default=1, help="training steps the profile covers (times are divided by it)")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    text = open(a.csv, errors="replace").read()
    start = text.find('"ID"')
    if start < 0:
        sys.exit(f"error: {a.csv}: no ncu CSV header (\"ID\",...) found")
    rows = list(csv.reader(io.StringIO(text[start:])))
    head = rows[0]
    try:
        kn, tm = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
    except ValueError:
        sys.exit(f"error: {a.csv}: CSV lacks 'Kernel Name' or 'gpu__time_duration.sum'")
    unit = rows[1][tm] if len(rows) > 1 else ""
    scale = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3}.get(unit.strip(), None)
    body = rows[2:] if scale is not None else rows[1:]
    if scale is None:
        scale = 1e-6   # ncu's default unit for durations is ns
    tot = defaultdict(float)
    cnt = defaultdict(int)
    for r in body:
        if len(r) <= max(kn, tm):
            continue
        try:
            v = float(r[tm].replace(",", "")) * scale
        except ValueError:
            continue
        name = r[kn]
        name = name[:90]
        tot[name] += v
        cnt[name] += 1
    all_ms = sum(tot.values())
    print(f"{len(body)} launches, {all_ms / a.steps:.2f} ms of kernel time per step ({a.steps} step(s) profiled)")
    print(f"{'ms/step':>9} {'share':>6} {'launches':>8}  kernel")
    for name, v in sorted(tot.items(), key=lambda kv: -kv[1])[: a.top]:
        print(f"{v / a.steps:9.3f} {100 * v / all_ms:5.1f}% {cnt[name]:8d}  {name}")


if __name__ == "__main__":
    main()
