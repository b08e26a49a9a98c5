"""
What limits a kernel, from an Nsight Compute per-launch CSV taken with sections
(ncu --csv --page raw --section SpeedOfLight --section Occupancy --section WarpStateStats
--section ComputeWorkloadAnalysis ...): per kernel name, averaged over its launches,
  - time per launch, compute (SM) and memory throughput as % of peak,
  - achieved occupancy (% of the SM's warp slots) and registers per thread,
  - the tensor pipe's utilisation where the section reports one,
  - the top warp stall reasons: cycles a warp spent stalled for each reason per issued
    instruction (smsp__average_warps_issue_stalled_<reason>_per_issue_active.ratio), the
    share of the sum in brackets.
A metric the CSV lacks is left out, so a different ncu version degrades to fewer lines
rather than an error. scripts/gpu_check.sh uses it (PROFILE=1) on the flash-attention
kernels, whose speed its timing alone cannot explain.

    python3 dev/ncu_limits.py NCU.csv [--top-stalls K]
"""
import argparse
import re
import sys
from collections import defaultdict

from ncu_summary import read_ncu_csv

# (label, metric column) in print order; the first that a CSV has is used per label
LIMITS = [
    ("time/launch", ["gpu__time_duration.sum"]),
    ("SM throughput %", ["sm__throughput.avg.pct_of_peak_sustained_elapsed"]),
    ("memory throughput %", ["gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed"]),
    ("achieved occupancy %", ["sm__warps_active.avg.pct_of_peak_sustained_active"]),
    ("registers/thread", ["launch__registers_per_thread"]),
    ("tensor pipe %", ["sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
                       "sm__inst_executed_pipe_tensor_op_hmma.avg.pct_of_peak_sustained_active"]),
    ("issue slots busy %", ["sm__inst_issued.avg.pct_of_peak_sustained_active"]),
]
STALL = re.compile(r"^smsp__average_warps_issue_stalled_(\w+?)_per_issue_active\.ratio$")
TIME_SCALE = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}   # to microseconds


def number(s):
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--top-stalls", type=int, default=5)
    a = ap.parse_args()
    head, units, body, kn = read_ncu_csv(a.csv)
    sums = defaultdict(lambda: defaultdict(float))
    count = defaultdict(int)
    for r in body:
        if len(r) != len(head):
            continue
        name = r[kn][:80]
        count[name] += 1
        for i, col in enumerate(head):
            v = number(r[i])
            if v is not None:
                sums[name][col] += v
    if not count:
        sys.exit(f"error: {a.csv}: no kernel launches in the CSV")
    for name, n in count.items():
        avg = {col: v / n for col, v in sums[name].items()}
        print(f"{name}  ({n} launch{'es' if n > 1 else ''})")
        parts = []
        for label, cols in LIMITS:
            col = next((c for c in cols if c in avg), None)
            if col is None:
                continue
            v = avg[col]
            if label == "time/launch":
                v *= TIME_SCALE.get(units[head.index(col)].strip(), 1e-3)   # ncu's default unit is ns
                parts.append(f"{label} {v:.1f} us")
            else:
                parts.append(f"{label} {v:.0f}" if label == "registers/thread" else f"{label} {v:.1f}")
        print("  " + (", ".join(parts) if parts else "no throughput or occupancy metrics in the CSV"))
        stalls = sorted(((m.group(1), avg[c]) for c in avg for m in [STALL.match(c)] if m), key=lambda kv: -kv[1])
        total = sum(v for _, v in stalls)
        if stalls and total > 0:
            top = ", ".join(f"{k} {v:.2f} ({100 * v / total:.0f}%)" for k, v in stalls[: a.top_stalls])
            print(f"  stalls (cycles per issued instruction, {total:.2f} in all): {top}")
        else:
            print("  no warp stall metrics in the CSV")


if __name__ == "__main__":
    main()
