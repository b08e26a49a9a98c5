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


def read_ncu_csv(path):
    """The per-launch rows of an ncu --csv --page raw file: (header, units, rows, the Kernel
    Name column). Lines before the header (ncu's ==PROF== notes, the program's own output)
    are skipped; the units row (its Kernel Name cell empty) is split off when present.
    Exits with a one-line error when there is no header. dev/ncu_limits.py reads it too."""
    text = open(path, errors="replace").read()
    start = text.find('"ID"')
    if start < 0:
        sys.exit(f"error: {path}: no ncu CSV header (\"ID\",...) found")
    rows = list(csv.reader(io.StringIO(text[start:])))
    head = rows[0]
    if "Kernel Name" not in head:
        sys.exit(f"error: {path}: CSV lacks a 'Kernel Name' column")
    kn = head.index("Kernel Name")
    if len(rows) > 1 and len(rows[1]) == len(head) and rows[1][kn] == "":
        return head, rows[1], rows[2:], kn
    return head, [""] * len(head), rows[1:], kn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--steps", type=int, default=1, help="training steps the profile covers (times are divided by it)")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    head, units, body, kn = read_ncu_csv(a.csv)
    if "gpu__time_duration.sum" not in head:
        sys.exit(f"error: {a.csv}: CSV lacks 'gpu__time_duration.sum'")
    tm = head.index("gpu__time_duration.sum")
    # to milliseconds; ncu's default unit for durations is ns
    scale = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3}.get(units[tm].strip(), 1e-6)
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
