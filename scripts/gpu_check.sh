#!/usr/bin/env bash
# scripts/gpu_check.sh - every GPU check of the CUDA work in one go, for the rare times a GPU
# is available (under 8 minutes on an H100/H200):
#   1. build the nvcc binaries (sm_80 + sm_90; the kernel tests, test_gpt_nvcc, train_gpt_nvcc)
#      and print the ptxas register / shared-memory / spill table for sm_90;
#   2. run test_gpt.cu on the device in fp32, bf16 and pure bf16 (all stored states, resume check),
#      bf16 with the T x T attention and fp32 without the GELU fusion; and, where
#      PyTorch is installed, the trainer's analysis modes (fp32) against dev/model.py and
#      test_gpt.cu (fp32, bf16) on the unstored shapes of make_reference.py --set extra;
#   3. run every kernel test on the device (plus the planted numeric bug, which must be caught),
#      and time kernels alone at gpt2-124m's T=1024 shapes (--bench of test_flash_attention,
#      both --flash_dq modes, test_norm: single-pass vs two-phase backward, test_matmul: bias-gradient kernels vs
#      cuBLASLt's BGRADB, test_adamw: the update in groups of 4 vs one element at a time);
#   4. benchmark training for BENCH_SECONDS (default 25) each: llama-130m and gpt2-124m at
#      T = 256 and T = 1024 (gpt2 T = 1024 also at llm.c's batch of 64 sequences, with
#      --gelu_fusion 0 (GELU kernels) and with --attention matmul, for comparison), and
#      llama-1b at T = 256 (25 s longer: its initialisation) (bf16, random tokens): tokens/s, MFU
#      (6N + 6LCT flops per token against the device's dense bf16 peak, from train_gpt.cu's table:
#      H100 SXM / H200 989 TFLOP/s, H100 PCIe 756, A100 312) and peak device memory;
#   5. with PROFILE=1, the GPU timeline of gpt2-124m T=1024 steps (busy vs idle, the longest
#      gaps; Nsight Systems, dev/nsys_gaps.py, when nsys is installed) and a per-kernel time
#      table of a step (PROFILE=2: also a llama-1b T=256 step) (Nsight Compute, dev/ncu_summary.py),
#      and what limits the flash-attention kernels (throughputs, occupancy, warp stall
#      reasons; Nsight Compute sections, dev/ncu_limits.py);
#   6. write one summary (pass/fail, tokens/s, MFU, peak memory) to stdout and to
#      $OUT_DIR/summary.txt (default build/gpu_check).
# Without a GPU it does steps 1 and writes the summary up to there, then exits 77 (skip).
# QUICK=1 (for iterating on speed): builds the trainer (and the kernel benches) only,
# skips steps 2-3 but the kernel benches, and benchmarks gpt2-124m at T = 1024 only (B = 16,
# B = 64), then the profile if PROFILE is set.
# The comparison runs (gpt2 T = 1024 at 64 sequences, without the GELU fusion, with matmul attention)
# take EXTRA_SECONDS (default 12) each, llama-1b BENCH_SECONDS + 25, so that the whole script
# stays under 8 minutes on an H200: by arithmetic 4 x 25 + 3 x 12 + 50 s of benchmarks plus
# ~5 s of start-up each, about 230 s, and the builds, tests and kernel benches (about 3
# minutes), about 410 s in all. Timed from the fifth
# step on, a 25-second gpt2-124m 16 x 1024 run still averages some 500 steps.
# Usage: bash scripts/gpu_check.sh   (env: BUILD, OUT_DIR, BENCH_SECONDS, EXTRA_SECONDS, JOBS, PROFILE, QUICK)
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
B=${BUILD:-build}
OUT_DIR=${OUT_DIR:-$B/gpu_check}
BENCH_SECONDS=${BENCH_SECONDS:-25}
EXTRA_SECONDS=${EXTRA_SECONDS:-12}
JOBS=${JOBS:-$(nproc)}
PY=${PYTHON:-$(command -v python3 || echo /usr/bin/python3)}
mkdir -p "$OUT_DIR"
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
fails=0
# a failure with the lines that say why: the failed checks of a test log (MISMATCH / FAIL /
# error lines) and its last lines go into the summary itself, so it is enough on its own
# (the device tool may not return every log file)
fail_log() {   # message log
  say "FAIL $1 (see $2)"
  { grep -E 'MISMATCH|FAIL|[Ee]rror|no cuBLASLt' "$2" | head -20; echo "    ..."; tail -n 5 "$2"; } | sed 's/^/    | /' | tee -a "$SUMMARY"
  fails=$((fails+1))
}
T0=$SECONDS

# --- 1. build
QUICK=${QUICK:-0}
KT=$(make -s --no-print-directory print-ktests)
targets="$B/cuda/train_gpt_nvcc $B/cuda/test_gpt_nvcc"
if [ "$QUICK" = 0 ]; then for t in $KT bug_shfl; do targets="$targets $B/kernels/nvcc/$t"; done
else KT=""; for t in test_flash_attention test_norm test_matmul test_adamw; do targets="$targets $B/kernels/nvcc/$t"; done; fi
echo "== build (make -k -j$JOBS): $targets"
# -k: a kernel test that fails to build (say, no NCCL on the machine) must not stop the rest
make -k -j"$JOBS" BUILD="$B" $targets > "$OUT_DIR/build.log" 2>&1
missing=""
for t in $targets; do [ -x "$t" ] || missing="$missing $t"; done
if [ ! -x "$B/cuda/train_gpt_nvcc" ] || [ ! -x "$B/cuda/test_gpt_nvcc" ]; then
  grep -E 'error|Error' "$OUT_DIR/build.log" | head -30
  say "FAIL build of the trainer or its test (see $OUT_DIR/build.log)"
  exit 1
fi
if [ -n "$missing" ]; then
  grep -E 'error|Error' "$OUT_DIR/build.log" | head -20
  say "FAIL build of:$missing (see $OUT_DIR/build.log)"; fails=$((fails+1))
else
  say "PASS build (sm_80 + sm_90, no spills: ptxas --warn-on-spills is an error) in $((SECONDS - T0)) s"
fi
bash dev/test/ptxas_report.sh "$B/kernels/nvcc" sm_90 > "$OUT_DIR/ptxas_sm90.txt"
cat "$OUT_DIR/ptxas_sm90.txt"

if ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; }; then
  say "SKIP device checks: no GPU (nvidia-smi -L lists none)"
  # the binaries must notice the missing device cleanly
  out=$("$B/cuda/test_gpt_nvcc" 2>&1); rc=$?
  if [ $rc -eq 77 ]; then say "PASS test_gpt_nvcc without a device: exit 77 ($out)"; else say "FAIL test_gpt_nvcc without a device: exit $rc"; fails=$((fails+1)); fi
  out=$("$B/cuda/train_gpt_nvcc" -p gpt2-124m -i none 2>&1); rc=$?
  if [ $rc -eq 1 ] && grep -q '^error: no CUDA device found' <<<"$out"; then say "PASS train_gpt_nvcc without a device: $out"
  else say "FAIL train_gpt_nvcc without a device: exit $rc: $out"; fails=$((fails+1)); fi
  say "gpu_check: $fails failure(s) before the device part; summary in $SUMMARY"
  [ $fails -eq 0 ] && exit 77
  exit 1
fi
nvidia-smi -L | tee -a "$SUMMARY"

# --- 2. test_gpt.cu on the device
TG_MODES=(fp32 bf16 pure_bf16 "bf16 --attention matmul" "fp32 --gelu_fusion 0")
[ "$QUICK" = 0 ] || TG_MODES=()
for p in "${TG_MODES[@]}"; do
  log="$OUT_DIR/test_gpt_${p// /_}.log"
  if "$B/cuda/test_gpt_nvcc" --precision $p > "$log" 2>&1; then say "PASS test_gpt_nvcc --precision $p: $(tail -1 "$log")"
  else fail_log "test_gpt_nvcc --precision $p" "$log"; fi
  grep '^worst check' "$log" | sed "s/^/    $p: /" | tee -a "$SUMMARY"
done
# the trainer's analysis modes on the device (fp32) against dev/model.py, where PyTorch is installed
if [ "$QUICK" = 0 ]; then
  if "$PY" -c "import torch" 2>/dev/null; then
    if "$PY" dev/test_analysis.py angular layer_drop --train_gpt "$B/cuda/train_gpt_nvcc" --trainer_flags "--precision fp32" \
      > "$OUT_DIR/analysis.log" 2>&1; then say "PASS analysis modes vs PyTorch: $(tail -1 "$OUT_DIR/analysis.log")"
    else fail_log "analysis modes vs PyTorch" "$OUT_DIR/analysis.log"; fi
  else
    say "NOTE analysis modes vs PyTorch not run: $PY has no torch"
  fi
fi
# the unstored shapes (dev/make_reference.py --set extra: head sizes 8-80, T up to 70), made by
# PyTorch here, in fp32 and bf16
if [ "$QUICK" = 0 ] && "$PY" -c "import torch" 2>/dev/null; then
  if "$PY" dev/make_reference.py --set extra --out "$OUT_DIR/extra" > "$OUT_DIR/extra_gen.log" 2>&1; then
    for p in fp32 bf16; do
      log="$OUT_DIR/test_gpt_extra_$p.log"
      if "$B/cuda/test_gpt_nvcc" --precision $p "$OUT_DIR"/extra/*.bin > "$log" 2>&1; then say "PASS test_gpt_nvcc --precision $p, extra shapes: $(tail -1 "$log")"
      else fail_log "test_gpt_nvcc --precision $p, extra shapes" "$log"; fi
    done
  else fail_log "make_reference.py --set extra" "$OUT_DIR/extra_gen.log"; fi
fi

# --- 3. kernel tests
for t in $KT; do
  log="$OUT_DIR/$t.log"
  if [ ! -x "$B/kernels/nvcc/$t" ]; then say "FAIL kernels $t (not built)"; continue; fi
  if "$B/kernels/nvcc/$t" > "$log" 2>&1; then say "PASS kernels $t"; else fail_log "kernels $t" "$log"; fi
  # shapes where cuBLASLt had no algorithm for a fused epilogue (they take the unfused path)
  grep -m3 'no cuBLASLt algorithm' "$log" | sed 's/^/    note: /' | tee -a "$SUMMARY"
done
# the GPU-sized cases of the tests that have them (--big)
for t in $([ "$QUICK" = 0 ] && echo test_norm test_activation); do
  [ -x "$B/kernels/nvcc/$t" ] || continue
  if "$B/kernels/nvcc/$t" --big > "$OUT_DIR/${t}_big.log" 2>&1; then say "PASS kernels $t --big"
  else fail_log "kernels $t --big" "$OUT_DIR/${t}_big.log"; fi
done
# (into a file first: `| grep -q` would end the pipe early and pipefail would count SIGPIPE)
if [ "$QUICK" = 0 ]; then
  "$B/kernels/nvcc/bug_shfl" > "$OUT_DIR/bug_shfl.log" 2>&1
  if grep -q MISMATCH "$OUT_DIR/bug_shfl.log"; then say "PASS kernels bug_shfl caught"; else say "FAIL kernels bug_shfl not caught"; fails=$((fails+1)); fi
fi

# kernels alone at gpt2-124m's T = 1024 shapes: flash attention, the norm backward (the
# single-pass kernel against the two-phase one), the bias gradients (column-sum kernels
# against cuBLASLt's BGRADB, the GELU gradient with and without the fc bias sum)
kbench() {   # test prefix
  [ -x "$B/kernels/nvcc/$1" ] || return 0
  if "$B/kernels/nvcc/$1" --bench > "$OUT_DIR/${1}_bench.log" 2>&1; then grep "^$2" "$OUT_DIR/${1}_bench.log" | tee -a "$SUMMARY"
  else fail_log "$1 --bench" "$OUT_DIR/${1}_bench.log"; fi
}
kbench test_flash_attention "flash bench"
kbench test_norm "norm bench"
kbench test_matmul "bias bench"
kbench test_adamw "adamw bench"

# --- 4. training benchmarks (random tokens; SIGINT after BENCH_SECONDS ends a run cleanly)
DATA="$OUT_DIR/data"
mkdir -p "$DATA"
[ -f "$DATA/tok32k_000.bin" ] || "$PY" dev/random_shard.py "$DATA/tok32k_000.bin" --tokens 2000000 --vocab 32000 --seed 1
[ -f "$DATA/tok50k_000.bin" ] || "$PY" dev/random_shard.py "$DATA/tok50k_000.bin" --tokens 2000000 --vocab 50257 --seed 1
bench() {   # seconds name data B T extra-flags...
  local secs=$1 name=$2 data=$3 b=$4 t=$5; shift 5
  local log="$OUT_DIR/bench_$name.log" mem="$OUT_DIR/bench_$name.mem"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$mem" 2>/dev/null &
  local smi=$!
  timeout -s INT "$secs" "$B/cuda/train_gpt_nvcc" "$@" -b "$b" -t "$t" -d $((b * t)) -x 1000000 -i "$data" \
    -v 0 -n 0 --layer_norms_every 0 --print_every 1 > "$log" 2>&1
  local rc=$?
  kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
  local peak; peak=$(sort -n "$mem" | tail -1)
  # average over the step lines after the first 5 (warm-up)
  local stats; stats=$(awk -F'|' '/^step +[0-9]+\/[0-9]+ \| loss/ {
      n++; if (n <= 5) next
      split($6, a, " "); tok += a[1]; m = $7; gsub(/[^0-9.]/, "", m); mfu += m; k++ }
    END { if (k) printf "%.0f tok/s, MFU %.1f%% (%d steps averaged)", tok / k, mfu / k, k; else printf "no timed steps" }' "$log")
  local plan; plan=$(grep -o 'total [0-9.]* MiB' "$log" | head -1)
  if [ $rc -ne 0 ] && ! grep -q 'received SIGINT' "$log"; then
    say "FAIL bench $name (exit $rc, see $log): $(grep '^error' "$log" | head -1)"; fails=$((fails+1)); return
  fi
  say "bench $name: $stats; peak device memory ${peak:-?} MiB (plan: ${plan:-?})"
}
S=$BENCH_SECONDS X=$EXTRA_SECONDS
if [ "$QUICK" != 0 ]; then
  bench $S gpt2-124m_T1024 "$DATA/tok50k_*.bin" 16 1024 -p gpt2-124m
  bench $S gpt2-124m_T1024_B64 "$DATA/tok50k_*.bin" 64 1024 -p gpt2-124m
else
bench $S llama-130m_T256 "$DATA/tok32k_*.bin" 64 256 -p llama-130m
bench $S llama-130m_T1024 "$DATA/tok32k_*.bin" 16 1024 -p llama-130m --max_seq_len 1024
bench $S gpt2-124m_T256 "$DATA/tok50k_*.bin" 64 256 -p gpt2-124m
bench $S gpt2-124m_T1024 "$DATA/tok50k_*.bin" 16 1024 -p gpt2-124m
# llm.c's GPT-2 124M run uses 64 x 1024 per GPU: the same step with the per-step costs
# (AdamW, the batch upload, the end-of-step synchronisation) spread over 4x the tokens
bench $X gpt2-124m_T1024_B64 "$DATA/tok50k_*.bin" 64 1024 -p gpt2-124m
# the same step with GELU in its own kernels instead of a cuBLASLt epilogue
bench $X gpt2-124m_T1024_no_gelu_fusion "$DATA/tok50k_*.bin" 16 1024 -p gpt2-124m --gelu_fusion 0
# the same step with the T x T scores materialised (kernels/attention.cuh), for comparison
bench $X gpt2-124m_T1024_matmul_attention "$DATA/tok50k_*.bin" 16 1024 -p gpt2-124m --attention matmul
# llama-1b: 1.1e9 parameters to initialise and upload first (about 15 s), so it gets longer
bench $((S + 25)) llama-1b_T256 "$DATA/tok32k_*.bin" 32 256 -p llama-1b
fi

# --- 5. (PROFILE=1) where a step's GPU time goes, kernel by kernel (Nsight Compute, one metric)
profile() {   # name data B T extra-flags...
  local name=$1 data=$2 b=$3 t=$4; shift 4
  local csv="$OUT_DIR/profile_$name.csv"
  timeout 150 "$NCU" --clock-control none --csv --page raw --metrics gpu__time_duration.sum --launch-count 4000 \
    "$B/cuda/train_gpt_nvcc" "$@" -b "$b" -t "$t" -d $((b * t)) -x 2 -i "$data" -v 0 -n 0 --layer_norms_every 0 > "$csv" 2>&1
  echo "== profile $name (2 steps, B=$b T=$t)" | tee -a "$SUMMARY"
  "$PY" dev/ncu_summary.py "$csv" --steps 2 --top 25 2>&1 | tee -a "$SUMMARY"
}
# the GPU timeline of the same step (Nsight Systems): busy vs idle time per step and the
# longest idle gaps (what the GPU waited for), dev/nsys_gaps.py
timeline() {   # name data B T extra-flags...
  local name=$1 data=$2 b=$3 t=$4; shift 4
  local rep="$OUT_DIR/timeline_$name"
  timeout 120 "$NSYS" profile --trace cuda --force-overwrite true -o "$rep" \
    "$B/cuda/train_gpt_nvcc" "$@" -b "$b" -t "$t" -d $((b * t)) -x 8 -i "$data" -v 0 -n 0 > "$OUT_DIR/timeline_$name.log" 2>&1
  # the report is cuda_gpu_trace in current nsys versions, gputrace in older ones
  "$NSYS" stats --report cuda_gpu_trace --format csv --output - "$rep.nsys-rep" > "$rep.csv" 2>>"$OUT_DIR/timeline_$name.log" ||
    "$NSYS" stats --report gputrace --format csv --output - "$rep.nsys-rep" > "$rep.csv" 2>>"$OUT_DIR/timeline_$name.log"
  echo "== timeline $name (8 steps, B=$b T=$t; steps 3-8)" | tee -a "$SUMMARY"
  # a diagnostic, not a check: a trace it cannot read is noted, not counted as a failure
  if "$PY" dev/nsys_gaps.py "$rep.csv" --skip 2 > "$rep.txt" 2>&1; then
    tee -a "$SUMMARY" < "$rep.txt"
  else
    say "NOTE timeline $name: no usable trace ($(tail -1 "$rep.txt"); see $OUT_DIR/timeline_$name.log)"
    tail -n 3 "$OUT_DIR/timeline_$name.log" | sed 's/^/    | /' | tee -a "$SUMMARY"
  fi
  rm -f "$rep.nsys-rep" "$rep.sqlite"   # large; the CSV and the summary lines stay
}
# what limits the flash-attention kernels (they run at a fraction of the tensor cores' rate):
# Nsight Compute sections on test_flash_attention --bench (the second and third rounds of
# forward, dK/dV and dQ, then dK/dV with the dQ partials and their reduction), summarised by
# dev/ncu_limits.py (throughputs, occupancy, the top
# warp stall reasons); a diagnostic like the timeline
limits() {   # test kernel-regex
  local csv="$OUT_DIR/limits_$1.csv"
  timeout 150 "$NCU" --clock-control none --csv --page raw --section SpeedOfLight --section Occupancy --section WarpStateStats \
    --section ComputeWorkloadAnalysis --section LaunchStats -k "regex:$2" --launch-skip 5 --launch-count 10 \
    "$B/kernels/nvcc/$1" --bench > "$csv" 2>&1
  echo "== limits $1 (Nsight Compute sections, dev/ncu_limits.py)" | tee -a "$SUMMARY"
  if "$PY" dev/ncu_limits.py "$csv" > "$OUT_DIR/limits_$1.txt" 2>&1; then tee -a "$SUMMARY" < "$OUT_DIR/limits_$1.txt"
  else say "NOTE limits $1: $(tail -1 "$OUT_DIR/limits_$1.txt") (see $csv)"; fi
}
if [ "${PROFILE:-0}" != 0 ]; then
  NSYS=$(command -v nsys || ls /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/bin/nsys 2>/dev/null | head -1)
  if [ -n "$NSYS" ]; then timeline gpt2-124m_T1024 "$DATA/tok50k_*.bin" 16 1024 -p gpt2-124m
  else say "SKIP timeline: no nsys"; fi
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  if [ -n "$NCU" ]; then
    profile gpt2-124m_T1024 "$DATA/tok50k_*.bin" 16 1024 -p gpt2-124m
    limits test_flash_attention 'flash_attention_(forward|dkv|dq|dq_reduce)_kernel'
    [ "$PROFILE" = 2 ] && profile llama-1b_T256 "$DATA/tok32k_*.bin" 32 256 -p llama-1b
  else
    say "SKIP profile: no ncu"
  fi
fi

say "gpu_check: $fails failure(s), $((SECONDS - T0)) s; summary in $SUMMARY"
[ $fails -eq 0 ]
