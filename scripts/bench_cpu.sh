#!/usr/bin/env bash
# CPU benchmark: tokens/s of a training step of train_gpt.cpp
# vs the PyTorch reference model's own training loop, same model, same batch, same
# thread count, both on the OpenMP build of OpenBLAS; and the machine's OpenBLAS
# GEMM rate, to express the trainer's model FLOP/s as a fraction of it.
#   bash scripts/bench_cpu.sh [--steps N] [--threads N] [--coretype NAME]
# --coretype sets OPENBLAS_CORETYPE for all three measurements alike (e.g. SkylakeX
# where this OpenBLAS does not know the CPU and falls back to its slow Prescott
# kernel); the default leaves OpenBLAS's own choice. Sizes: set MODEL=... B=... T=...
set -eu
cd "$(dirname "$0")/.."
STEPS=8; THREADS=$(nproc)
while [ $# -gt 0 ]; do case "$1" in
  --steps) STEPS=$2; shift 2;; --threads) THREADS=$2; shift 2;;
  --coretype) export OPENBLAS_CORETYPE=$2; shift 2;;
  *) echo "bench_cpu: unknown flag $1" >&2; exit 1;; esac; done
# llama, d_model 256, 8 layers, ffn 688, vocab 8192, T 256, B 8, Mix-LN K=2
MODEL=${MODEL:-"--arch llama --n_layer 8 --n_head 8 --d_model 256 --ffn 688 --vocab 8192"}
B=${B:-8}; T=${T:-256}
make -s build/train_gpt
mkdir -p build/bench
g++ -O3 -march=native -I/usr/include/x86_64-linux-gnu/openblas-openmp dev/bench_gemm.cpp -o build/bench/bench_gemm \
  -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas
export OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), threads $THREADS"
echo "== OpenBLAS GEMM rate"
./build/bench/bench_gemm | tee build/bench/gemm.txt
GEMM=$(awk '/^gemm_gflops/ {print $2}' build/bench/gemm.txt)

echo "== train_gpt (C++)"
/usr/bin/python3 dev/random_shard.py build/bench/train_000.bin --tokens $(( (STEPS + 2) * B * T + 1 )) --vocab 8192
./build/train_gpt $MODEL --max_seq_len $T -k 2 -b $B -t $T -x $((STEPS + 1)) -u 1 -i build/bench/train_000.bin \
  -v 0 -n 0 -o build/bench/cpp_log.jsonl --threads $THREADS | grep -E "^(model|train|blas)"
CPP=$(/usr/bin/python3 -c "
import json, statistics, sys
r = [json.loads(l) for l in open('build/bench/cpp_log.jsonl')]
s = [x['tok_per_s'] for x in r if x['kind'] == 'step' and x['step'] > 0]
print(statistics.median(s))")

echo "== PyTorch reference model (dev/model.py), its own training loop"
/usr/bin/python3 dev/bench_torch.py -B $B -T $T -k 2 --steps $STEPS --threads $THREADS $MODEL | grep -v "^torch step" | tee build/bench/torch.txt
TORCH=$(awk '/^torch_tok_per_s/ {print $2}' build/bench/torch.txt)

/usr/bin/python3 - "$CPP" "$TORCH" "$GEMM" <<PYEOF
import sys
cpp, torch, gemm = map(float, sys.argv[1:4])
L, C, F, V, T = 8, 256, 688, 8192, $T
Vp = (V + 127) // 128 * 128
P = 2 * Vp * C + L * (2 * C + 4 * C * C + 3 * C * F) + C      # all parameters
fpt = 6 * (P - Vp * C) + 6 * L * C * T                       # matmul weights (not the input lookup) + attention
print("== summary (median step, same model, B=$B, T=$T, threads $THREADS)")
print(f"train_gpt.cpp  {cpp:9.0f} tok/s   {cpp * fpt / 1e9:6.1f} GFLOP/s = {cpp * fpt / 1e9 / gemm:.2f} x GEMM rate")
print(f"PyTorch 1.13   {torch:9.0f} tok/s   {torch * fpt / 1e9:6.1f} GFLOP/s = {torch * fpt / 1e9 / gemm:.2f} x GEMM rate")
print(f"ratio train_gpt / PyTorch: {cpp / torch:.2f}x   (GEMM rate {gemm:.1f} GFLOP/s, {fpt / 1e6:.1f} MFLOP per token)")
PYEOF
