#!/usr/bin/env bash
# gpu_check.sh - every GPU check of the kernel work in one go, for a machine with a GPU
# (a few minutes): build the nvcc tests (sm_80 + sm_90), print the ptxas register / shared
# memory / spill table for sm_90, run every kernel test on the device (plus the big norm
# case and the planted numeric bug, which must fail), and print a summary.
# Usage: bash dev/test/gpu_check.sh [BUILD_DIR]   (from the repository root)
set -u -o pipefail
cd "$(dirname "$0")/../.."
B=${1:-build}
make -j"$(nproc)" BUILD="$B" $(for t in test_norm test_gemm test_emu bug_shfl; do echo "$B/kernels/nvcc/$t"; done) || exit 1
nvidia-smi -L || true
bash dev/test/ptxas_report.sh "$B/kernels/nvcc" sm_90
fails=0
for t in test_norm test_gemm test_emu; do
  echo "== $t"; "$B/kernels/nvcc/$t" || { echo "FAILED: $t"; fails=$((fails+1)); }
done
echo "== test_norm --big"; "$B/kernels/nvcc/test_norm" --big | tail -3 || fails=$((fails+1))
echo "== bug_shfl (must report a MISMATCH)"
if "$B/kernels/nvcc/bug_shfl" | grep -q MISMATCH; then echo "caught"; else echo "NOT caught"; fails=$((fails+1)); fi
echo "gpu_check: $fails failure(s)"
[ $fails -eq 0 ]
