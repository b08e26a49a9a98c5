#!/usr/bin/env bash
# ptxas_report.sh DIR [ARCH] - table of registers / barriers / static shared memory / spills
# per kernel from the `-Xptxas -v` logs (*.ptxas.txt) that the nvcc gates of
# dev/test/kernels.mk keep. ARCH defaults to sm_90. Names are demangled by c++filt if present.
set -u
dir=${1:?usage: ptxas_report.sh DIR [ARCH]}
arch=${2:-sm_90}
demangle() { if command -v c++filt >/dev/null 2>&1; then c++filt; else cat; fi; }
printf '%-6s %-14s %5s %4s %6s %11s %6s  %s\n' arch file regs bar smem spill_st/ld stack kernel
find "$dir" -name '*.ptxas.txt' | sort | while read -r log; do
  awk -v want="$arch" -v file="$(basename "$log" .ptxas.txt)" '
    /Compiling entry function/ { split($0, q, "\047"); fn = q[2]; ar = q[4]; next }
    /bytes stack frame/ { stack = $1; st = $5; ld = $9; next }
    /Used [0-9]+ registers/ {
      if (ar != want || fn == "") next
      regs = $0; sub(/.*Used /, "", regs); sub(/ registers.*/, "", regs)
      bar = 0; if (match($0, /used [0-9]+ barriers/)) { b = substr($0, RSTART, RLENGTH); split(b, bb, " "); bar = bb[2] }
      smem = 0; if (match($0, /[0-9]+ bytes smem/)) { s = substr($0, RSTART, RLENGTH); split(s, ss, " "); smem = ss[1] }
      printf "%-6s %-14s %5s %4s %6s %5s/%-5s %6s  %s\n", ar, file, regs, bar, smem, st, ld, stack, fn
      fn = ""
    }' "$log"
done | demangle | sed "s/(.*)$//"
