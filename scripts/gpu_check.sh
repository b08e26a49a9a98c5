#!/usr/bin/env bash
# scripts/gpu_check.sh - every GPU check of the CUDA work in one go, for the rare times a GPU
# is available (about 6 minutes on an H100/H200, QUICK=1 about 4):
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
#   4. llm.c side by side (when its anchors are found, below): gpt2-124m (Pre-LN, -k pre)
#      at 16 x 1024 and 64 x 1024, train_gpt.cu and llm.c's GPT-2 trainer one after the other
#      on the same GPT-2-token shard (uint16 ids, the shard format both read), same B x T,
#      SIDE_STEPS (default 40) steps each; one line per shape (scripts/side_by_side.py): both
#      tokens/s (B*T / median step time after the first 3), both MFU (the same 6N + 6LCT FLOPs
#      per token, N = 123,653,376 multiplied weights of GPT-2 124M without the position embedding
#      or llm.c's vocabulary padding, against the peak train_gpt.cu names) and the ratio
#      train_gpt.cu / llm.c (each trainer's own step time: llm.c's CUDA events from the batch
#      fetch to the update, train_gpt.cu's host clock around the whole step);
#   5. benchmark training for BENCH_SECONDS (default 10) each: llama-130m and gpt2-124m at
#      T = 256 and T = 1024 (gpt2 T = 1024 also at llm.c's batch of 64 sequences, with
#      --gelu_fusion 0 (GELU kernels) and with --attention matmul, for comparison), and
#      llama-1b at T = 256 (20 s longer: its initialisation) (bf16, random tokens): tokens/s, MFU
#      (6N + 6LCT flops per token against the device's dense bf16 peak, from train_gpt.cu's table:
#      H100 SXM / H200 989 TFLOP/s, H100 PCIe 756, A100 312) and peak device memory;
#   6. with PROFILE=1, the GPU timeline of gpt2-124m T=1024 steps (busy vs idle, the longest
#      gaps; Nsight Systems, dev/nsys_gaps.py, when nsys is installed) and a per-kernel time
#      table of a step (PROFILE=2: also a llama-1b T=256 step) (Nsight Compute, dev/ncu_summary.py),
#      and what limits the flash-attention kernels (throughputs, occupancy, warp stall
#      reasons; Nsight Compute sections, dev/ncu_limits.py);
#   7. write one summary (pass/fail, tokens/s, MFU, peak memory, the llm.c lines, the GPU's
#      name, the seconds each part took) to stdout and to $OUT_DIR/summary.txt (default
#      build/gpu_check).
# Without a GPU it does step 1 (not llm.c's build) and writes the summary up to there, then
# exits 77 (skip).
# QUICK=1 (for iterating on speed): builds the trainer (and the kernel benches) only,
# skips steps 2-3 but the kernel benches, runs the llm.c side by side and benchmarks gpt2-124m
# at T = 1024 only (B = 16, B = 64), then the profile if PROFILE is set.
# The comparison runs of step 5 take EXTRA_SECONDS (default 6) each, so that the whole script
# and a QUICK=1 rerun fit one 15-minute device lease with the machine's start: by the
# estimates --plan prints, about 340 s (QUICK=1 about 200 s) on an H100/H200; the seconds each
# part took are in the summary ("time PART: N s"). A 10-second gpt2-124m 16 x 1024 run has
# (estimated) some 5 s of start-up and about 150 timed steps.
#
# llm.c (the yardstick; ../shared/anchors/README.md): the anchors folder is LLMC_ANCHORS if set
# (an error if it has no llmc_gpu_bench.sh), else ../shared/anchors (beside the repository),
# else build/anchors_src. The device machine gets only the repository, so copy the anchors
# into that ignored folder and carry it there:
#     cp -r ../shared/anchors build/anchors_src        (3.8 MB; device carry list: build/anchors_src)
# Without anchors the side by side is skipped (said in the summary). llm.c is built once per
# machine by the anchors' llmc_gpu_bench.sh into LLMC_BUILD_DIR (default
# $HOME/.cache/mixln_llmc, outside the project's build folder), in the background while the
# project builds; not rebuilt while the binary is newer than every anchor source.
#
# Usage: bash scripts/gpu_check.sh [--plan | --build-llmc]
#   --plan        print every command the GPU run would run with its estimated seconds, and
#                 their sum; runs nothing, writes nothing (works without a GPU)
#   --build-llmc  only build llm.c from the anchors (links without a GPU; exit 77 without anchors)
#   env: BUILD, OUT_DIR, BENCH_SECONDS, EXTRA_SECONDS, SIDE_STEPS, JOBS, PROFILE, QUICK,
#        LLMC_ANCHORS, LLMC_BUILD_DIR
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
MODE=run
case "${1:-}" in
  "") ;;
  --plan) MODE=plan ;;
  --build-llmc) MODE=build-llmc ;;
  *) echo "error: scripts/gpu_check.sh: unknown argument '$1' (usage: bash scripts/gpu_check.sh [--plan | --build-llmc])"; exit 2 ;;
esac
B=${BUILD:-build}
OUT_DIR=${OUT_DIR:-$B/gpu_check}
BENCH_SECONDS=${BENCH_SECONDS:-10}
EXTRA_SECONDS=${EXTRA_SECONDS:-6}
SIDE_STEPS=${SIDE_STEPS:-40}
JOBS=${JOBS:-$(nproc)}
PY=${PYTHON:-$(command -v python3 || echo /usr/bin/python3)}
QUICK=${QUICK:-0}
for v in BENCH_SECONDS EXTRA_SECONDS SIDE_STEPS JOBS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "error: scripts/gpu_check.sh: $v must be a positive integer, got '${!v}'"; exit 2; }
done
[ "$SIDE_STEPS" -gt 3 ] || { echo "error: scripts/gpu_check.sh: SIDE_STEPS must be at least 4 (the first 3 are warm-up), got $SIDE_STEPS"; exit 2; }

# llm.c's anchors (header): LLMC_ANCHORS, ../shared/anchors or build/anchors_src
ANCHORS=""
if [ -n "${LLMC_ANCHORS:-}" ]; then
  [ -f "$LLMC_ANCHORS/llmc_gpu_bench.sh" ] ||
    { echo "error: LLMC_ANCHORS=$LLMC_ANCHORS: no llmc_gpu_bench.sh there (want the folder of ../shared/anchors)"; exit 1; }
  ANCHORS=$(cd "$LLMC_ANCHORS" && pwd)
elif [ -f ../shared/anchors/llmc_gpu_bench.sh ]; then ANCHORS=$(cd ../shared/anchors && pwd)
elif [ -f build/anchors_src/llmc_gpu_bench.sh ]; then ANCHORS=$PWD/build/anchors_src
fi
LLMC_DIR=${LLMC_BUILD_DIR:-${HOME:-/tmp}/.cache/mixln_llmc}
# llm.c's trainer from the anchors into LLMC_DIR, unless the binary is newer than every source
llmc_build() {
  local bin="$LLMC_DIR/train_gpt2cu"
  if [ -x "$bin" ] && [ -z "$(find "$ANCHORS/llm.c" "$ANCHORS/cudnn-frontend" "$ANCHORS/llmc_gpu_bench.sh" -newer "$bin" -print -quit)" ]; then
    echo "llm.c: $bin is newer than its sources in $ANCHORS (not rebuilt)"; return 0
  fi
  mkdir -p "$LLMC_DIR" || return 1
  # the anchors' script takes the output folder relative to the working directory
  nice bash "$ANCHORS/llmc_gpu_bench.sh" build "$(realpath -m --relative-to=. "$LLMC_DIR")" && [ -x "$bin" ]
}
if [ "$MODE" = build-llmc ]; then
  [ -n "$ANCHORS" ] || { echo "SKIP llm.c build: no anchors (LLMC_ANCHORS, ../shared/anchors, build/anchors_src)"; exit 77; }
  T0=$SECONDS
  if llmc_build; then echo "PASS llm.c build: $LLMC_DIR/train_gpt2cu in $((SECONDS - T0)) s"; exit 0; fi
  echo "FAIL llm.c build from $ANCHORS"; exit 1
fi

# --plan runs nothing: every command goes through x (or bench / side_by_side), which prints it
# with its estimated seconds on an H100/H200 (estimates, not measurements) and adds them up
PLAN_TOTAL=0
plan_line() { printf 'plan %4d s  %s\n' "$1" "$2"; PLAN_TOTAL=$((PLAN_TOTAL + $1)); }
x() {   # est-seconds log cmd...: cmd > log 2>&1, its exit status
  local est=$1 log=$2; shift 2
  if [ "$MODE" = plan ]; then plan_line "$est" "$* > $log"; return 0; fi
  "$@" > "$log" 2>&1
}
if [ "$MODE" = plan ]; then SUMMARY=/dev/null; else mkdir -p "$OUT_DIR"; SUMMARY="$OUT_DIR/summary.txt"; : > "$SUMMARY"; fi
say() { [ "$MODE" = plan ] || echo "$*" | tee -a "$SUMMARY"; }
fails=0
# a failure with the lines that say why: the failed checks of a test log (MISMATCH / FAIL /
# error lines) and its last lines go into the summary itself, so it is enough on its own
# (when the machine that ran it returns only some of its files, the summary still says why)
fail_log() {   # message log
  say "FAIL $1 (see $2)"
  { grep -E 'MISMATCH|FAIL|[Ee]rror|no cuBLASLt' "$2" | head -20; echo "    ..."; tail -n 5 "$2"; } | sed 's/^/    | /' | tee -a "$SUMMARY"
  fails=$((fails+1))
}
T0=$SECONDS
# the seconds of each part, into the summary: part NAME ends the part before and starts NAME
PART="" PART_T=$SECONDS
part() {
  [ -n "$PART" ] && say "time $PART: $((SECONDS - PART_T)) s"
  PART=$1 PART_T=$SECONDS
}
have_gpu=0
if [ "$MODE" = plan ]; then have_gpu=1
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then have_gpu=1; fi

# --- 1. build (llm.c in the background beside it, where there is a GPU to run it on)
part build
KT=$(make -s --no-print-directory print-ktests)
targets=("$B/cuda/train_gpt_nvcc" "$B/cuda/test_gpt_nvcc")
if [ "$QUICK" = 0 ]; then for t in $KT bug_shfl; do targets+=("$B/kernels/nvcc/$t"); done
else KT=""; for t in test_flash_attention test_norm test_matmul test_adamw; do targets+=("$B/kernels/nvcc/$t"); done; fi
llmc_pid=""
if [ -n "$ANCHORS" ] && [ $have_gpu = 1 ]; then
  if [ "$MODE" = plan ]; then plan_line 0 "llm.c build (about 60 s, beside the make; skipped when $LLMC_DIR/train_gpt2cu is newer than its sources): bash $ANCHORS/llmc_gpu_bench.sh build $LLMC_DIR > $OUT_DIR/llmc_build.log"
  else llmc_build > "$OUT_DIR/llmc_build.log" 2>&1 & llmc_pid=$!; fi
fi
[ "$MODE" = plan ] || echo "== build (make -k -j$JOBS): ${targets[*]}"
# -k: a kernel test that fails to build (say, no NCCL on the machine) must not stop the rest
build_est=80; [ "$QUICK" = 0 ] || build_est=60
x $build_est "$OUT_DIR/build.log" make -k -j"$JOBS" BUILD="$B" "${targets[@]}"
missing=""
[ "$MODE" = plan ] || for t in "${targets[@]}"; do [ -x "$t" ] || missing="$missing $t"; done
if [ "$MODE" != plan ] && { [ ! -x "$B/cuda/train_gpt_nvcc" ] || [ ! -x "$B/cuda/test_gpt_nvcc" ]; }; then
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
x 2 "$OUT_DIR/ptxas_sm90.txt" bash dev/test/ptxas_report.sh "$B/kernels/nvcc" sm_90
[ "$MODE" = plan ] || cat "$OUT_DIR/ptxas_sm90.txt"

if [ $have_gpu = 0 ]; then
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
GPU_NAME="(the GPU nvidia-smi names)"
[ "$MODE" = plan ] || GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
[ "$MODE" = plan ] || nvidia-smi -L | tee -a "$SUMMARY"

# --- 2. test_gpt.cu on the device
TG_MODES=(fp32 bf16 pure_bf16 "bf16 --attention matmul" "fp32 --gelu_fusion 0")
[ "$QUICK" = 0 ] || TG_MODES=()
for p in "${TG_MODES[@]}"; do
  log="$OUT_DIR/test_gpt_${p// /_}.log"
  read -ra pa <<<"$p"
  if x 5 "$log" "$B/cuda/test_gpt_nvcc" --precision "${pa[@]}"; then say "PASS test_gpt_nvcc --precision $p: $(tail -1 "$log" 2>/dev/null)"
  else fail_log "test_gpt_nvcc --precision $p" "$log"; fi
  [ "$MODE" = plan ] || grep '^worst check' "$log" | sed "s/^/    $p: /" | tee -a "$SUMMARY"
done
# the trainer's analysis modes on the device (fp32) against dev/model.py, where PyTorch is installed
if [ "$QUICK" = 0 ]; then
  if "$PY" -c "import torch" 2>/dev/null; then
    if x 30 "$OUT_DIR/analysis.log" "$PY" dev/test_analysis.py angular layer_drop --train_gpt "$B/cuda/train_gpt_nvcc" \
      --trainer_flags "--precision fp32"; then say "PASS analysis modes vs PyTorch: $(tail -1 "$OUT_DIR/analysis.log" 2>/dev/null)"
    else fail_log "analysis modes vs PyTorch" "$OUT_DIR/analysis.log"; fi
  else
    say "NOTE analysis modes vs PyTorch not run: $PY has no torch"
  fi
fi
# the unstored shapes (dev/make_reference.py --set extra: head sizes 8-80, T up to 70), made by
# PyTorch here, in fp32 and bf16
if [ "$QUICK" = 0 ] && "$PY" -c "import torch" 2>/dev/null; then
  if x 20 "$OUT_DIR/extra_gen.log" "$PY" dev/make_reference.py --set extra --out "$OUT_DIR/extra"; then
    for p in fp32 bf16; do
      log="$OUT_DIR/test_gpt_extra_$p.log"
      if [ "$MODE" = plan ]; then plan_line 5 "$B/cuda/test_gpt_nvcc --precision $p $OUT_DIR/extra/*.bin > $log"; continue; fi
      if "$B/cuda/test_gpt_nvcc" --precision $p "$OUT_DIR"/extra/*.bin > "$log" 2>&1; then say "PASS test_gpt_nvcc --precision $p, extra shapes: $(tail -1 "$log" 2>/dev/null)"
      else fail_log "test_gpt_nvcc --precision $p, extra shapes" "$log"; fi
    done
  else fail_log "make_reference.py --set extra" "$OUT_DIR/extra_gen.log"; fi
fi

# --- 3. kernel tests
part kernels
for t in $KT; do
  log="$OUT_DIR/$t.log"
  if [ "$MODE" != plan ] && [ ! -x "$B/kernels/nvcc/$t" ]; then say "FAIL kernels $t (not built)"; continue; fi
  if x 2 "$log" "$B/kernels/nvcc/$t"; then say "PASS kernels $t"; else fail_log "kernels $t" "$log"; fi
  # shapes where cuBLASLt has no algorithm for a fused epilogue (they take the unfused path)
  [ "$MODE" = plan ] || grep -m3 'no cuBLASLt algorithm' "$log" | sed 's/^/    note: /' | tee -a "$SUMMARY"
done
# the GPU-sized cases of the tests that have them (--big)
for t in $([ "$QUICK" = 0 ] && echo test_norm test_activation); do
  [ "$MODE" = plan ] || [ -x "$B/kernels/nvcc/$t" ] || continue
  if x 3 "$OUT_DIR/${t}_big.log" "$B/kernels/nvcc/$t" --big; then say "PASS kernels $t --big"
  else fail_log "kernels $t --big" "$OUT_DIR/${t}_big.log"; fi
done
# (into a file first: `| grep -q` would end the pipe early and pipefail would count SIGPIPE)
if [ "$QUICK" = 0 ]; then
  x 1 "$OUT_DIR/bug_shfl.log" "$B/kernels/nvcc/bug_shfl"
  if [ "$MODE" = plan ]; then :
  elif grep -q MISMATCH "$OUT_DIR/bug_shfl.log"; then say "PASS kernels bug_shfl caught"; else say "FAIL kernels bug_shfl not caught"; fails=$((fails+1)); fi
fi

# kernels alone at gpt2-124m's T = 1024 shapes: flash attention, the norm backward (the
# single-pass kernel against the two-phase one), the bias gradients (column-sum kernels
# against cuBLASLt's BGRADB, the GELU gradient with and without the fc bias sum)
part kernel_benches
kbench() {   # test prefix
  [ "$MODE" = plan ] || [ -x "$B/kernels/nvcc/$1" ] || return 0
  if x 4 "$OUT_DIR/${1}_bench.log" "$B/kernels/nvcc/$1" --bench; then
    [ "$MODE" = plan ] || grep "^$2" "$OUT_DIR/${1}_bench.log" | tee -a "$SUMMARY"
  else fail_log "$1 --bench" "$OUT_DIR/${1}_bench.log"; fi
}
kbench test_flash_attention "flash bench"
kbench test_norm "norm bench"
kbench test_matmul "bias bench"
kbench test_adamw "adamw bench"

# random tokens for the trainers (dev/random_shard.py: the shard format of docs/FORMATS.md,
# version 1 = uint16 ids, byte-identical to llm.c's .bin shards, which llm.c's dataloader reads)
part data
DATA="$OUT_DIR/data"
[ "$MODE" = plan ] || mkdir -p "$DATA"
[ -f "$DATA/tok32k_000.bin" ] || x 5 "$OUT_DIR/shard32k.log" "$PY" dev/random_shard.py "$DATA/tok32k_000.bin" --tokens 2000000 --vocab 32000 --seed 1
[ -f "$DATA/tok50k_000.bin" ] || x 5 "$OUT_DIR/shard50k.log" "$PY" dev/random_shard.py "$DATA/tok50k_000.bin" --tokens 2000000 --vocab 50257 --seed 1

# --- 4. llm.c side by side: the same shard, B x T and steps; scripts/side_by_side.py makes the line
side_by_side() {   # B T steps
  local b=$1 t=$2 n=$3 est_ms=$(( $1 * $2 / 450 ))   # ~450 tokens per ms (estimate)
  local ours="$OUT_DIR/side_${b}x${t}_train_gpt.log" theirs="$OUT_DIR/side_${b}x${t}_llmc.log"
  x $((8 + n * est_ms / 1000)) "$ours" timeout 180 "$B/cuda/train_gpt_nvcc" -p gpt2-124m -k pre -b "$b" -t "$t" -d $((b * t)) \
    -x "$n" -i "$DATA/tok50k_*.bin" -v 0 -n 0 --layer_norms_every 0 --print_every 1 ||
    { fail_log "llm.c side by side ${b} x ${t}: train_gpt_nvcc" "$ours"; return; }
  x $((15 + n * est_ms / 1000)) "$theirs" timeout 240 bash "$ANCHORS/llmc_gpu_bench.sh" run "$LLMC_DIR" \
    "$DATA/tok50k_*.bin" "$DATA/tok50k_*.bin" "$b" "$t" "$n" ||
    { fail_log "llm.c side by side ${b} x ${t}: llm.c" "$theirs"; return; }
  if [ "$MODE" = plan ]; then plan_line 1 "$PY scripts/side_by_side.py $ours $theirs"; return; fi
  local line
  if line=$("$PY" scripts/side_by_side.py "$ours" "$theirs" 2>&1); then say "$line"
  else say "FAIL llm.c side by side ${b} x ${t}: $line"; fails=$((fails+1)); fi
}
part llmc_side_by_side
if [ -z "$ANCHORS" ]; then
  say "SKIP llm.c side by side: no anchors (LLMC_ANCHORS, ../shared/anchors or build/anchors_src; see the header)"
else
  if [ -n "$llmc_pid" ] && ! wait "$llmc_pid"; then
    fail_log "llm.c build from $ANCHORS" "$OUT_DIR/llmc_build.log"
  else
    [ -n "$llmc_pid" ] && say "PASS llm.c build: $(tail -1 "$OUT_DIR/llmc_build.log")"
    side_by_side 16 1024 "$SIDE_STEPS"
    side_by_side 64 1024 "$SIDE_STEPS"
  fi
fi

# --- 5. training benchmarks (random tokens; SIGINT after BENCH_SECONDS ends a run cleanly)
part benchmarks
bench() {   # seconds name data B T extra-flags...
  local secs=$1 name=$2 data=$3 b=$4 t=$5; shift 5
  local log="$OUT_DIR/bench_$name.log" mem="$OUT_DIR/bench_$name.mem"
  if [ "$MODE" = plan ]; then
    plan_line "$secs" "timeout -s INT $secs $B/cuda/train_gpt_nvcc $* -b $b -t $t -d $((b * t)) -x 1000000 -i $data -v 0 -n 0 --layer_norms_every 0 --print_every 1 > $log"
    return
  fi
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
  bench "$S" gpt2-124m_T1024 "$DATA/tok50k_*.bin" 16 1024 -p gpt2-124m
  bench "$S" gpt2-124m_T1024_B64 "$DATA/tok50k_*.bin" 64 1024 -p gpt2-124m
else
bench "$S" llama-130m_T256 "$DATA/tok32k_*.bin" 64 256 -p llama-130m
bench "$S" llama-130m_T1024 "$DATA/tok32k_*.bin" 16 1024 -p llama-130m --max_seq_len 1024
bench "$S" gpt2-124m_T256 "$DATA/tok50k_*.bin" 64 256 -p gpt2-124m
bench "$S" gpt2-124m_T1024 "$DATA/tok50k_*.bin" 16 1024 -p gpt2-124m
# llm.c's GPT-2 124M run uses 64 x 1024 per GPU: the same step with the per-step costs
# (AdamW, the batch upload, the end-of-step synchronisation) spread over 4x the tokens
bench "$X" gpt2-124m_T1024_B64 "$DATA/tok50k_*.bin" 64 1024 -p gpt2-124m
# the same step with GELU in its own kernels instead of a cuBLASLt epilogue
bench "$X" gpt2-124m_T1024_no_gelu_fusion "$DATA/tok50k_*.bin" 16 1024 -p gpt2-124m --gelu_fusion 0
# the same step with the T x T scores materialised (kernels/attention.cuh), for comparison
bench "$X" gpt2-124m_T1024_matmul_attention "$DATA/tok50k_*.bin" 16 1024 -p gpt2-124m --attention matmul
# llama-1b: 1.1e9 parameters to initialise and upload first (about 15 s), so it gets longer
bench $((S + 20)) llama-1b_T256 "$DATA/tok32k_*.bin" 32 256 -p llama-1b
fi

# --- 6. (PROFILE=1) where a step's GPU time goes, kernel by kernel (Nsight Compute, one metric)
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
  part profile
  # shellcheck disable=SC2012   # (the first match of a version-numbered install folder)
  NSYS=$(command -v nsys || ls /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/bin/nsys 2>/dev/null | head -1)
  # shellcheck disable=SC2012
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  if [ "$MODE" = plan ]; then
    plan_line 60 "timeline gpt2-124m_T1024: ${NSYS:-nsys} profile --trace cuda ... train_gpt_nvcc -p gpt2-124m -b 16 -t 1024 -x 8; dev/nsys_gaps.py"
    plan_line 90 "profile gpt2-124m_T1024: ${NCU:-ncu} --metrics gpu__time_duration.sum ... train_gpt_nvcc -p gpt2-124m -b 16 -t 1024 -x 2; dev/ncu_summary.py"
    plan_line 60 "limits test_flash_attention: ${NCU:-ncu} --section ... test_flash_attention --bench; dev/ncu_limits.py"
    [ "$PROFILE" = 2 ] && plan_line 120 "profile llama-1b_T256: ${NCU:-ncu} ... train_gpt_nvcc -p llama-1b -b 32 -t 256 -x 2"
  else
    if [ -n "$NSYS" ]; then timeline gpt2-124m_T1024 "$DATA/tok50k_*.bin" 16 1024 -p gpt2-124m
    else say "SKIP timeline: no nsys"; fi
    if [ -n "$NCU" ]; then
      profile gpt2-124m_T1024 "$DATA/tok50k_*.bin" 16 1024 -p gpt2-124m
      limits test_flash_attention 'flash_attention_(forward|dkv|dq|dq_reduce)_kernel'
      [ "$PROFILE" = 2 ] && profile llama-1b_T256 "$DATA/tok32k_*.bin" 32 256 -p llama-1b
    else
      say "SKIP profile: no ncu"
    fi
  fi
fi
part ""

if [ "$MODE" = plan ]; then
  echo "plan total: about $PLAN_TOTAL s of commands (estimates for an H100/H200; llm.c's build runs beside the make)," \
    "plus about 30 s of start-up and summaries"
  if [ -n "$ANCHORS" ]; then echo "plan: llm.c anchors: $ANCHORS"; else echo "plan: no llm.c anchors: the side by side is skipped"; fi
  exit 0
fi
say "gpu_check: $fails failure(s), $((SECONDS - T0)) s on $GPU_NAME; summary in $SUMMARY"
[ $fails -eq 0 ]
