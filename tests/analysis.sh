# shellcheck shell=bash
# Analysis suite: per-layer gradient norms, angular distance and
# layer-removal drop of train_gpt against the PyTorch reference, the plots, the
# reproduction script end to end (and its reproducibility), the overhead bench.
# Sourced by scripts/run_tests.sh (see there for run_test / skip_test).
B=build
PY=/usr/bin/python3
AN=$(mktemp -d /tmp/mixln_analysis_XXXXXX)

# --- the C++ analysis modes vs dev/model.py in float64, on every stored reference state:
#     angular distance (diag 0, symmetric), layer drop for every layer, a model built
#     without layer l (PyTorch and C++), step-0 per-layer/emb/final-norm/head gradient
#     norms of a 1-step run, both modes again on batches of B=3 from one token stream,
#     and a checkpoint whose layer 0 maps x -> -x (distance 1)
run_test analysis/formula          pass $PY dev/test_analysis.py formula
run_test analysis/vs_pytorch       pass $PY dev/test_analysis.py angular layer_drop without_layer grad_norms batched opposite
# negative tests: each comparison must be able to fail
run_test analysis/neg_wrong_skip   'fail:MISMATCH gpt_pre\.bin layer_drop .*layer 0: loss cpp' \
  $PY dev/test_analysis.py layer_drop --wrong_skip --states dev/reference/gpt_pre.bin
run_test analysis/neg_wrong_k_angular 'fail:MISMATCH gpt_pre\.bin angular' \
  $PY dev/test_analysis.py angular --wrong_k --states dev/reference/gpt_pre.bin
run_test analysis/neg_wrong_k_grad_norms 'fail:MISMATCH llama_mix\.bin grad_norms' \
  $PY dev/test_analysis.py grad_norms --wrong_k --states dev/reference/llama_mix.bin

# --- bad input to the analysis modes: one line, non-zero exit
$PY dev/random_shard.py $AN/val_000.bin --tokens 3000 --vocab 300 --seed 2
$PY dev/random_shard.py $AN/train_000.bin --tokens 20000 --vocab 300 --seed 1
run_test analysis/bad_ckpt_missing 'fail:^error: cannot open .*nope\.bin' \
  $B/train_gpt --mode angular -e $AN/nope.bin -j "$AN/val_*.bin" -b 2 -t 16 -m 1 --analysis_out $AN/x.json
run_test analysis/bad_plot_input   'fail:^error: .*missing_run: not a folder' $PY scripts/plot.py --out $AN/figs $AN/missing_run
printf '{"kind":"step"' > $AN/broken.jsonl
run_test analysis/bad_plot_log     'fail:^error: .*broken\.jsonl:1: not a JSON line' $PY scripts/plot.py --out $AN/figs --log $AN/broken.jsonl

# --- the whole study at toy size on random shards: 3 runs, analyses, PNGs, REPORT.md;
#     then the same command again: results.json must be byte-identical (reproducible)
REPRO=(--train_glob "$AN/train_*.bin" --val_glob "$AN/val_*.bin" --vocab 300 --n_layer 4 --d_model 32 --n_head 2
       --ffn 64 --seq_len 32 --batch 4 --steps 24 --warmup 3 --lr 3e-3 --val_every 8 --val_steps 2
       --analysis_batches 3 --ks "0 1 4" --threads 2)
analysis_reproduce() {
  bash scripts/reproduce_cpu.sh --out $AN/r1 "${REPRO[@]}" || return 1
  for f in REPORT.md results.json figs/grad_norms.png figs/grad_norms_steps.png figs/angular.png figs/layer_drop.png figs/loss.png \
           runs/k00/angular.json runs/k01/layer_drop.json runs/k04/log.jsonl; do
    [ -s $AN/r1/$f ] || { echo "missing $AN/r1/$f"; return 1; }
  done
  grep -q '| k01 | Mix-LN | 1 | 0.250 |' $AN/r1/REPORT.md || { echo "REPORT.md has no Mix-LN row"; return 1; }
  bash scripts/reproduce_cpu.sh --out $AN/r2 "${REPRO[@]}" || return 1
  cmp $AN/r1/results.json $AN/r2/results.json && echo "results.json identical across two runs"
}
run_test analysis/reproduce_toy pass analysis_reproduce
# the reproducibility check can fail: another seed gives other numbers
analysis_neg_seed() {
  bash scripts/reproduce_cpu.sh --out $AN/r3 "${REPRO[@]}" --seed 2 >/dev/null || return 0
  cmp $AN/r1/results.json $AN/r3/results.json
}
run_test analysis/neg_reproduce_seed 'fail:differ' analysis_neg_seed
run_test analysis/bad_reproduce_flag "fail:^error: reproduce_cpu: unknown flag --layers" bash scripts/reproduce_cpu.sh --layers 3
# the study's GPU path: the CUDA trainer (here its CPU emulation) under a launcher, 2 processes
# (data parallel), and its own analyses of its checkpoints, on the 2 processes too
if [ -x $B/cuda/train_gpt_cuda_emu ] && command -v mpicxx >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1; then
  analysis_reproduce_cuda() {
    bash scripts/reproduce_cpu.sh --out $AN/rc "${REPRO[@]}" --ks "1" --steps 6 --val_every 3 --total_batch 256 \
      --trainer $B/cuda/train_gpt_cuda_emu --launch "mpirun --oversubscribe --allow-run-as-root -np 2 -x CUDA_EMU_DEVICES=2" \
      --extra "--precision fp32" || return 1
    for f in REPORT.md results.json figs/grad_norms.png figs/angular.png runs/k01/angular.json runs/k01/layer_drop.json; do
      [ -s $AN/rc/$f ] || { echo "missing $AN/rc/$f"; return 1; }
    done
    grep -q 'data parallel: 2 ranks' $AN/rc/runs/k01/train.txt || { echo "not a 2-rank run"; return 1; }
    grep -q 'split over 2 ranks' $AN/rc/runs/k01/angular.txt || { echo "the analysis did not run on the 2 ranks"; return 1; }
    grep -q '| k01 | Mix-LN | 1 |' $AN/rc/REPORT.md || { echo "REPORT.md has no Mix-LN row"; return 1; }
  }
  run_test analysis/reproduce_toy_cuda_mpirun pass analysis_reproduce_cuda
else
  skip_test analysis/reproduce_toy_cuda_mpirun "no emulated CUDA trainer or no MPI"
fi
run_test analysis/bad_reproduce_trainer "fail:^error: reproduce_cpu: --trainer .*nope is not an executable" \
  bash scripts/reproduce_cpu.sh --trainer $AN/nope --train_glob "$AN/train_*.bin" --val_glob "$AN/val_*.bin" --ks 0

# --- the overhead benchmark runs (the figure itself: bash scripts/bench_layer_norms.sh)
run_test analysis/bench_layer_norms_smoke pass env MODEL="--arch llama --n_layer 4 --n_head 2 --d_model 32 --ffn 64 --vocab 8192" \
  B=4 T=32 bash scripts/bench_layer_norms.sh --steps 4 --rounds 1 --threads 2
rm -rf "$AN"
