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
