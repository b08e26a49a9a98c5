#!/usr/bin/env python3
"""dev/nsys_gaps.py - where a training step's wall time goes on the GPU timeline: the time
the GPU was busy (kernels and copies, overlaps counted once) against the time it sat idle
between them, per step, from an Nsight Systems trace.

Input: the CSV of `nsys stats --report cuda_gpu_trace --format csv` (one row per kernel or
memory operation, with the columns "Start (ns)", "Duration (ns)" and "Name"; other columns are
ignored). Steps are cut at the end of each AdamW kernel (the last kernel of a step; name
containing "adamw_kernel"); the first --skip steps (warm-up) are left out.

Prints, for the steps kept: the mean step span (end of one AdamW to the end of the next), the
GPU-busy time in it, the idle time, the idle time split into gaps shorter than 5 us (the
launch-to-launch latency of back-to-back kernels) and longer ones, and the longest gaps of
the last step with the operations on either side (what the GPU waited for).

Used by scripts/gpu_check.sh (PROFILE=1, when nsys is installed); tests/analysis.sh checks it
on a synthetic trace.
"""
import argparse
import csv
import io
import sys


def read_ops(text):
    """(start_ns, end_ns, name) of every operation, in start order."""
    lines = text.splitlines()
    # nsys prints notices before the CSV; the header is the first line with the columns we
    # need ("Start (ns)", "Duration (ns)", "Name"; older versions spell them "Start(ns)", ...)
    key = lambda c: c.replace(" ", "").lower()
    for i, line in enumerate(lines):
        cols = [key(c) for c in next(csv.reader([line]), [])]
        if "start(ns)" in cols and "duration(ns)" in cols and "name" in cols:
            break
    else:
        raise SystemExit("nsys_gaps: no cuda_gpu_trace CSV header (Start (ns), Duration (ns), Name) in the input")
    ops = []
    for row in csv.DictReader(io.StringIO("\n".join(lines[i:]))):
        r = {key(k): v for k, v in row.items() if k is not None}
        try:
            start, dur = int(float(r["start(ns)"])), int(float(r["duration(ns)"]))
        except (KeyError, TypeError, ValueError):
            continue
        ops.append((start, start + dur, r.get("name") or "?"))
    ops.sort()
    return ops


def busy_and_gaps(ops, t0, t1):
    """GPU-busy ns within [t0, t1] (union of the operations' intervals) and the idle gaps
    as (length, before, after)."""
    busy, gaps = 0, []
    cur_end, cur_name = t0, "(step start)"
    for s, e, name in ops:
        if e <= t0 or s >= t1:
            continue
        s, e = max(s, t0), min(e, t1)
        if s > cur_end:
            gaps.append((s - cur_end, cur_name, name))
            busy += e - s
            cur_end, cur_name = e, name
        elif e > cur_end:
            busy += e - cur_end
            cur_end, cur_name = e, name
    if t1 > cur_end:
        gaps.append((t1 - cur_end, cur_name, "(step end)"))
    return busy, gaps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", help="nsys stats --report cuda_gpu_trace --format csv output ('-': stdin)")
    ap.add_argument("--skip", type=int, default=2, help="warm-up steps left out (default 2)")
    ap.add_argument("--top", type=int, default=8, help="longest gaps of the last step to list")
    a = ap.parse_args()
    text = sys.stdin.read() if a.csv == "-" else open(a.csv).read()
    ops = read_ops(text)
    ends = [e for s, e, n in ops if "adamw_kernel" in n]
    if len(ends) < a.skip + 2:
        raise SystemExit(f"nsys_gaps: {len(ends)} AdamW kernels in the trace: need at least {a.skip + 2} (warm-up + 1 step)")
    steps = list(zip(ends[a.skip:-1], ends[a.skip + 1:]))
    tot_span = tot_busy = tot_short = tot_long = 0
    nshort = nlong = 0
    last_gaps = []
    for t0, t1 in steps:
        busy, gaps = busy_and_gaps(ops, t0, t1)
        tot_span += t1 - t0
        tot_busy += busy
        for g in gaps:
            if g[0] < 5000:
                tot_short += g[0]
                nshort += 1
            else:
                tot_long += g[0]
                nlong += 1
        last_gaps = gaps
    n = len(steps)
    ms = lambda ns: ns / n / 1e6
    print(f"GPU timeline over {n} step(s): span {ms(tot_span):.3f} ms/step, busy {ms(tot_busy):.3f} ms "
          f"({100.0 * tot_busy / tot_span:.1f}%), idle {ms(tot_span - tot_busy):.3f} ms: "
          f"{nshort / n:.0f} gaps < 5 us ({ms(tot_short):.3f} ms), {nlong / n:.0f} longer ({ms(tot_long):.3f} ms)")
    print(f"longest gaps of the last step:")
    for length, before, after in sorted(last_gaps, reverse=True)[: a.top]:
        print(f"  {length / 1e3:9.1f} us  after {before[:60]}  before {after[:60]}")


if __name__ == "__main__":
    main()
