# shellcheck shell=bash
# tests/kernels.sh - CUDA kernel tests (sourced by scripts/run_tests.sh; built by
# dev/test/kernels.mk). Each kernel test runs in three emulated builds (g++, clang++ TSan,
# clang++ ASan+UBSan); each planted bug must be caught by the tool named; the nvcc builds
# run on a real GPU when there is one, and otherwise must notice and skip (exit 77).
KB=${BUILD:-build}/kernels
KTESTS="norm gemm emu"   # dev/test/test_<name>.cu

# A flavour is skipped only when its toolchain is missing (then make did not build it);
# a missing binary with the toolchain present is a failure, not a skip.
kernel_flavor_ok() {
  case $1 in
    gxx) [ -f "${CUDA_HOME:-/usr/local/cuda}/include/cuda_bf16.h" ] ;;
    tsan|asan) [ -f "${CUDA_HOME:-/usr/local/cuda}/include/cuda_bf16.h" ] &&
               { command -v clang++-14 >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1; } ;;
  esac
}

# ThreadSanitizer (clang 14) cannot start under some kernels' ASLR layouts ("FATAL:
# ThreadSanitizer: unexpected memory mapping"): run it with ASLR off when setarch can.
KTSAN_PREFIX=()
if setarch "$(uname -m)" -R true >/dev/null 2>&1; then KTSAN_PREFIX=(setarch "$(uname -m)" -R); fi
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1 exitcode=66 second_deadlock_stack=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:exitcode=67}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# kernel_case NAME EXPECT FLAVOR BINARY  (run_test runs commands under `timeout`, so the
# TSan prefix is a command line, not a shell function)
kernel_case() {
  local name=$1 expect=$2 flavor=$3 bin=$4
  if ! kernel_flavor_ok "$flavor"; then
    skip_test "$name" "no toolchain for the $flavor build (CUDA headers; clang++ for tsan/asan)"
    return
  fi
  if [ "$flavor" = tsan ]; then run_test "$name" "$expect" "${KTSAN_PREFIX[@]}" "$bin"
  else run_test "$name" "$expect" "$bin"; fi
}

for t in $KTESTS; do
  for flavor in gxx tsan asan; do
    kernel_case "kernels/$t/$flavor" pass "$flavor" "$KB/$flavor/test_$t"
  done
done

# planted bugs: each must make its build fail, with the named tool's own message
kernel_case kernels/bug_nosync/tsan    'fail:ThreadSanitizer: data race'              tsan "$KB/tsan/bug_nosync"
kernel_case kernels/bug_oob/asan       'fail:AddressSanitizer: heap-buffer-overflow'  asan "$KB/asan/bug_oob"
kernel_case kernels/bug_shfl/gxx       'fail:MISMATCH'                                gxx  "$KB/gxx/bug_shfl"
kernel_case kernels/bug_divergent/gxx  'fail:cuda_emu: divergent __syncthreads\(\)'  gxx  "$KB/gxx/bug_divergent"
kernel_case kernels/bug_deadlock/gxx   'fail:cuda_emu: deadlock in a kernel'           gxx  "$KB/gxx/bug_deadlock"
# the order between streams (dev/test/bug_stream_order.cu): with every wait in place the
# result is right in each stream mode of the emulation; a missing wait for the producer shows
# when the side stream runs as early as it may, a missing wait for the consumer as late
if [ -x "$KB/gxx/bug_stream_order" ]; then
  for m in sync late early; do
    run_test "kernels/streams/$m" pass env CUDA_EMU_STREAMS=$m "$KB/gxx/bug_stream_order" --missing none
  done
  run_test kernels/bug_stream_producer/early 'fail:^MISMATCH' env CUDA_EMU_STREAMS=early "$KB/gxx/bug_stream_order" --missing producer
  run_test kernels/bug_stream_consumer/late 'fail:^MISMATCH' env CUDA_EMU_STREAMS=late "$KB/gxx/bug_stream_order" --missing consumer
  # the random mode (CUDA_EMU_STREAMS=random:SEED) runs each stream's queue up to random
  # points: over 20 seeds the correct order always passes and each planted bug shows at least
  # once (what late and early each find, it finds by chance; seeds 1..20 catch the producer
  # bug 3 times and the consumer bug 8 times)
  stream_random_seeds() {   # $1 = none | producer | consumer: prints how many of 20 seeds fail
    local f=0 s
    for s in $(seq 1 20); do
      CUDA_EMU_STREAMS=random:$s "$KB/gxx/bug_stream_order" --missing "$1" >/dev/null 2>&1 || f=$((f + 1))
    done
    echo "--missing $1: $f of 20 seeds fail"
    case $1 in none) [ $f -eq 0 ];; *) [ $f -gt 0 ];; esac
  }
  run_test kernels/streams/random pass stream_random_seeds none
  run_test kernels/bug_stream_producer/random pass stream_random_seeds producer
  run_test kernels/bug_stream_consumer/random pass stream_random_seeds consumer
  run_test kernels/bad_streams_mode "fail:CUDA_EMU_STREAMS must be sync, late, early, random or random:SEED, got 'soon'" \
    env CUDA_EMU_STREAMS=soon "$KB/gxx/bug_stream_order" --missing none
else
  skip_test kernels/streams "no emulated build (CUDA headers)"
fi

# real GPU: the nvcc builds of the same sources
if [ -x "$KB/nvcc/test_norm" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    for t in $KTESTS; do run_test "kernels/$t/gpu" pass "$KB/nvcc/test_$t"; done
    run_test kernels/bug_shfl/gpu 'fail:MISMATCH' "$KB/nvcc/bug_shfl"
  else
    # without a GPU the nvcc binaries must notice, say so and exit 77 (not crash, not pass)
    for t in $KTESTS; do
      run_test "kernels/$t/nvcc-nogpu" pass bash -c \
        'out=$("$1" 2>&1); rc=$?; echo "$out"; echo "exit status $rc"; [ $rc -eq 77 ] && grep -q "^SKIP .*no CUDA device" <<<"$out"' \
        _ "$KB/nvcc/test_$t"
      skip_test "kernels/$t/gpu" "no GPU (nvidia-smi -L lists none)"
    done
  fi
else
  skip_test "kernels/gpu" "nvcc builds absent (no nvcc)"
fi

# scripts/gpu_check.sh's llm.c side by side, without a GPU: the plan (--plan runs nothing and
# writes nothing), the one-line errors, the parser on a fixture, and llm.c's build (links here)
GCS=$(mktemp -d /tmp/mixln_gpu_check_XXXXXX)
mkdir -p "$GCS/anchors" && : > "$GCS/anchors/llmc_gpu_bench.sh"   # a stand-in: the plan only names it
gpu_check_plan() {   # both shapes, train_gpt.cu then llm.c, same B x T and steps; nothing written
  local out; out=$(LLMC_ANCHORS="$GCS/anchors" OUT_DIR="$GCS/plan_out" SIDE_STEPS=37 bash scripts/gpu_check.sh --plan) || return 1
  echo "$out"
  for b in 16 64; do
    grep -Eq "^plan +[0-9]+ s  timeout [0-9]+ build/cuda/train_gpt_nvcc -p gpt2-124m -k pre -b $b -t 1024 -d $((b * 1024)) -x 37 -i $GCS/plan_out/data/tok50k_\*.bin " <<<"$out" &&
    grep -Eq "^plan +[0-9]+ s  timeout [0-9]+ bash $GCS/anchors/llmc_gpu_bench.sh run .* $GCS/plan_out/data/tok50k_\*.bin $GCS/plan_out/data/tok50k_\*.bin $b 1024 37 > " <<<"$out" &&
    grep -q "scripts/side_by_side.py $GCS/plan_out/side_${b}x1024_train_gpt.log $GCS/plan_out/side_${b}x1024_llmc.log" <<<"$out" ||
      { echo "missing: the side by side at $b x 1024"; return 1; }
  done
  grep -q "llm.c build .*llmc_gpu_bench.sh build" <<<"$out" && grep -Eq "^plan total: about [0-9]+ s" <<<"$out" &&
    [ ! -e "$GCS/plan_out" ] || { echo "no llm.c build line, no total, or the plan wrote $GCS/plan_out"; return 1; }
}
run_test gpu_check/plan_llmc pass gpu_check_plan
run_test gpu_check/bad_anchors 'fail:^error: LLMC_ANCHORS=/nonexistent: no llmc_gpu_bench.sh' \
  env LLMC_ANCHORS=/nonexistent bash scripts/gpu_check.sh --plan
run_test gpu_check/bad_side_steps "fail:^error: .*SIDE_STEPS must be a positive integer, got 'x'" env SIDE_STEPS=x bash scripts/gpu_check.sh --plan
run_test gpu_check/few_side_steps "fail:^error: .*SIDE_STEPS must be at least 4 .*, got 3" env SIDE_STEPS=3 bash scripts/gpu_check.sh --plan
run_test gpu_check/shellcheck pass bash -c 'bash -n scripts/gpu_check.sh && if command -v shellcheck >/dev/null; then shellcheck scripts/gpu_check.sh; fi'

# the parser (scripts/side_by_side.py) on hand-made logs: train_gpt.cu's step times 100 90 80
# (warm-up) then 40 41 40 39 40 ms: median 40 -> 16*1024 / 0.040 s = 409,600 tok/s; llm.c's
# 200 150 100 then 32.768 33 32.768 32 32.768: median 32.768 -> 500,000 tok/s; ratio 0.8192.
# FLOPs per token (GPT-2 124M, T 1024): N = 50257*768 + 12*(4*768^2 + 2*768*3072 + 9*768 + 3072)
# + 2*768 = 38,597,376 + 85,054,464 + 1,536 = 123,653,376; 6N + 6*12*768*1024 = 741,920,256 +
# 56,623,104 = 798,543,360. MFU against 989e12: 409,600 * 798,543,360 / 989e12 = 0.3307 (33.1%),
# 500,000 * 798,543,360 / 989e12 = 0.4037 (40.4%).
side_fixture() {   # dir llmc-B llmc-steps
  local d=$1 ms
  { echo "model: gpt, mix K=3, L=12 H=12 C=768 ffn=3072 vocab=50257 (padded 50304), 124.44M parameters"
    echo "train: B=16 T=1024, 16384 tokens/step (1 micro-steps), 8 steps, lr 0.0006 warmup 700 floor 0.1, wd 0.1, clip 1"
    echo "mfu: against 989 TFLOP/s (bf16 dense peak of NVIDIA H200)"
    local i=1; for ms in 100.0 90.0 80.0 40.0 41.0 40.0 39.0 40.0; do
      echo "step $(printf %5d $i)/8 | loss 10.9000 | norm 1.0000 | lr 8.57e-07 | $ms ms | 0 tok/s | MFU 0.0% | eta 1s"; i=$((i+1)); done
  } > "$d/ours.log"
  { echo "| micro batch size B    | $2 |"; echo "| sequence length T     | 1024 |"
    echo "| vocab_size V          | 50257 |"; echo "| num_layers L          | 12 |"; echo "| channels C            | 768 |"
    local i=1; for ms in 200.00 150.00 100.00 32.768 33.00 32.768 32.00 32.768; do
      [ $i -le "$3" ] && echo "step $(printf %4d $i)/$3 | loss 11.010000 (+0.00z)| norm 15.3000 (+0.00z)| lr 8.57e-07 | $ms ms | 40.0% bf16 MFU | 123 tok/s"
      i=$((i+1)); done
    echo "llmc_tok_per_s 123"
  } > "$d/llmc.log"
}
side_by_side_check() {
  side_fixture "$GCS" 16 8
  local out; out=$(python3 scripts/side_by_side.py "$GCS/ours.log" "$GCS/llmc.log") || return 1
  echo "$out"
  grep -qF "gpt2-124m 16 x 1024, 8 steps on NVIDIA H200: train_gpt.cu 409,600 tok/s, MFU 33.1% | llm.c 500,000 tok/s, MFU 40.4% | train_gpt.cu / llm.c 0.819x" <<<"$out" &&
    grep -qF "798.5 MFLOP/token = 6N + 6LCT, N = 123,653,376; peak 989 TFLOP/s" <<<"$out"
}
run_test gpu_check/side_by_side_fixture pass side_by_side_check
side_by_side_bad() {   # llmc-B llmc-steps: the parser must refuse the pair
  side_fixture "$GCS" "$1" "$2" && python3 scripts/side_by_side.py "$GCS/ours.log" "$GCS/llmc.log"
}
run_test gpu_check/side_by_side_other_B 'fail:^error: side_by_side: B differs: 16 in .*ours.log, 64 in .*llmc.log' side_by_side_bad 64 8
run_test gpu_check/side_by_side_llmc_stopped 'fail:^error: side_by_side: 8 step lines in .*ours.log, 5 in .*llmc.log' side_by_side_bad 16 5
run_test gpu_check/side_by_side_missing 'fail:^error: side_by_side: .*nope.log: No such file' \
  python3 scripts/side_by_side.py "$GCS/nope.log" "$GCS/nope.log"

# llm.c's build from the anchors (nvcc, cuBLAS, cuDNN 9) links here, into gpu_check's per-machine
# folder: about a minute on 2 idle cores (12 minutes measured with the cores shared by many
# jobs), then nothing until an anchor source is newer than the binary
if [ -f ../shared/anchors/llmc_gpu_bench.sh ] && { command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; }; then
  run_test gpu_check/llmc_build pass bash -c \
    'bash scripts/gpu_check.sh --build-llmc && [ -x "${LLMC_BUILD_DIR:-${HOME:-/tmp}/.cache/mixln_llmc}/train_gpt2cu" ]'
else
  skip_test gpu_check/llmc_build "no ../shared/anchors or no nvcc"
fi

# the device part's flow on a simulated GPU (QUICK=1): stand-ins for make, nvidia-smi, the
# trainer, test_gpt, the benched kernel tests and the anchors' llmc_gpu_bench.sh, so that the
# llm.c build in the background, both shapes' runs, the parser's lines, the seconds per part
# and the GPU's name in the summary are checked without a GPU (the figures are the stand-ins')
gpu_check_simulated() {
  local d="$GCS/sim" bin
  mkdir -p "$d/path" "$d/build/cuda" "$d/build/kernels/nvcc" "$d/anchors"
  printf '#!/bin/bash\nfor a in "$@"; do [ "$a" = print-ktests ] && exec /usr/bin/make "$@"; done\n' > "$d/path/make"
  printf '#!/bin/bash\ncase "$*" in -L) echo "GPU 0: NVIDIA H200 (UUID: GPU-0)";; *name*) echo "NVIDIA H200";; *) echo 1000;; esac\n' > "$d/path/nvidia-smi"
  cat > "$d/build/cuda/train_gpt_nvcc" <<'SIM'
#!/bin/bash
while [ $# -gt 0 ]; do case $1 in -b) b=$2;; -t) t=$2;; -x) x=$2;; esac; shift; done
[ "$x" -gt 100 ] && x=10
echo "model: gpt, pre K=0, L=12 H=12 C=768 ffn=3072 vocab=50257 (padded 50304), 124.44M parameters"
echo "train: B=$b T=$t, $((b * t)) tokens/step (1 micro-steps), $x steps, lr 0.0006 warmup 700 floor 0.1, wd 0.1, clip 1"
echo "mfu: against 989 TFLOP/s (bf16 dense peak of NVIDIA H200)"
for i in $(seq 1 "$x"); do echo "step $i/$x | loss 10.9 | norm 1.0 | lr 1e-06 | $((b * 5 / 2)).0 ms | 1 tok/s | MFU 1.0% | eta 1s"; done
SIM
  printf '#!/bin/bash\necho "all checks passed"\n' > "$d/build/cuda/test_gpt_nvcc"
  for bin in test_flash_attention test_norm test_matmul test_adamw; do printf '#!/bin/bash\necho bench\n' > "$d/build/kernels/nvcc/$bin"; done
  cat > "$d/anchors/llmc_gpu_bench.sh" <<'SIM'
#!/bin/bash
case $1 in
build) mkdir -p "$2" && printf '#!/bin/true\n' > "$2/train_gpt2cu" && chmod +x "$2/train_gpt2cu" ;;
run) echo "| micro batch size B    | $5 |"; echo "| sequence length T     | $6 |"; echo "| vocab_size V          | 50257 |"
     echo "| num_layers L          | 12 |"; echo "| channels C            | 768 |"
     for i in $(seq 1 "$7"); do echo "step $i/$7 | loss 11.0 (+0.00z)| norm 1.0 (+0.00z)| lr 1e-06 | $(( $5 * 2 )).00 ms | 1.0% bf16 MFU | 1 tok/s"; done ;;
esac
SIM
  chmod +x "$d"/path/* "$d"/build/cuda/* "$d"/build/kernels/nvcc/* "$d/anchors/llmc_gpu_bench.sh"
  PATH="$d/path:$PATH" QUICK=1 BUILD="$d/build" OUT_DIR="$d/out" LLMC_ANCHORS="$d/anchors" LLMC_BUILD_DIR="$d/llmc" \
    BENCH_SECONDS=1 SIDE_STEPS=9 bash scripts/gpu_check.sh; echo "exit status $?"
  local s="$d/out/summary.txt"
  # 16 x 1024: 40 ms vs 32 ms per step -> 409,600 vs 512,000 tok/s, ratio 0.8; 64 x 1024: 160 vs 128 ms
  grep -qF "llm.c side by side gpt2-124m 16 x 1024, 9 steps on NVIDIA H200: train_gpt.cu 409,600 tok/s, MFU 33.1% | llm.c 512,000 tok/s, MFU 41.3% | train_gpt.cu / llm.c 0.800x" "$s" &&
    grep -qF "llm.c side by side gpt2-124m 64 x 1024, 9 steps on NVIDIA H200: train_gpt.cu 409,600 tok/s" "$s" &&
    grep -q "^PASS llm.c build" "$s" && grep -Eq "^time llmc_side_by_side: [0-9]+ s" "$s" && grep -Eq "^time benchmarks: [0-9]+ s" "$s" &&
    grep -Eq "^gpu_check: 0 failure\(s\), [0-9]+ s on NVIDIA H200" "$s" && [ -x "$d/llmc/train_gpt2cu" ]
}
run_test gpu_check/simulated_device pass gpu_check_simulated
