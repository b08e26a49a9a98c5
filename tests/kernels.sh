# tests/kernels.sh - CUDA kernel tests (sourced by scripts/run_tests.sh; built by
# dev/test/kernels.mk). Each kernel test runs in three emulated builds (g++, clang++ TSan,
# clang++ ASan+UBSan); each planted bug must be caught by the tool named; the nvcc builds
# run on a real GPU when there is one, and otherwise must say so and skip (exit 77).
KB=${BUILD:-build}/kernels

# ThreadSanitizer (clang 14) cannot start under some kernels' ASLR layouts ("FATAL:
# ThreadSanitizer: unexpected memory mapping"): run it with ASLR off when setarch may do so.
KTSAN_RUN=()
if setarch "$(uname -m)" -R true >/dev/null 2>&1; then KTSAN_RUN=(setarch "$(uname -m)" -R); fi
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1 exitcode=66 second_deadlock_stack=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=67}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# run_test runs commands under `timeout`, so no shell functions: the prefix is a command
kernel_prefix() { if [ "$1" = tsan ]; then KPREFIX=("${KTSAN_RUN[@]}"); else KPREFIX=(); fi; }

for t in norm emu; do
  for flavor in gxx tsan asan; do
    bin=$KB/$flavor/test_$t
    if [ -x "$bin" ]; then
      kernel_prefix "$flavor"
      run_test "kernels/$t/$flavor" pass "${KPREFIX[@]}" "$bin"
    else
      skip_test "kernels/$t/$flavor" "not built ($bin: needs the CUDA headers, and clang++ for tsan/asan)"
    fi
  done
done

# planted bugs: each must make its build fail, with the named tool's own message
kernel_bug() {  # kernel_bug NAME FLAVOR REGEX
  local name=$1 flavor=$2 re=$3 bin=$KB/$2/$1
  if [ -x "$bin" ]; then
    kernel_prefix "$flavor"
    run_test "kernels/$name/$flavor" "fail:$re" "${KPREFIX[@]}" "$bin"
  else
    skip_test "kernels/$name/$flavor" "not built ($bin)"
  fi
}
kernel_bug bug_nosync    tsan 'ThreadSanitizer: data race'
kernel_bug bug_oob       asan 'AddressSanitizer: heap-buffer-overflow'
kernel_bug bug_shfl      gxx  'MISMATCH'
kernel_bug bug_divergent gxx  'cuda_emu: divergent __syncthreads\(\)'

# real GPU: the nvcc builds of the same sources
kernel_gpu_present() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; }
if [ -x "$KB/nvcc/test_norm" ]; then
  if kernel_gpu_present; then
    for t in norm gemm emu; do run_test "kernels/$t/gpu" pass "$KB/nvcc/test_$t"; done
    run_test "kernels/bug_shfl/gpu" 'fail:MISMATCH' "$KB/nvcc/bug_shfl"
  else
    # without a GPU the nvcc binaries must notice and skip cleanly: exit 77 with a message
    for t in norm gemm emu; do
      run_test "kernels/$t/nvcc-nogpu" pass bash -c '"$1"; rc=$?; echo "exit status $rc"; [ $rc -eq 77 ]' _ "$KB/nvcc/test_$t"
      skip_test "kernels/$t/gpu" "no GPU (nvidia-smi -L lists none)"
    done
  fi
else
  skip_test "kernels/*/gpu" "nvcc builds not present (no nvcc)"
fi
