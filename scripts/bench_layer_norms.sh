#!/usr/bin/env bash
# Overhead of per-layer gradient norms (the target: at most 5% of the step time when
# logged every step). Trains the same model on the same random shard
# with --layer_norms_every 1 and with 0, alternating the two for --rounds rounds
# (so load from other processes hits both alike), and compares the median step
# time of each (steps 1.., the first step is warm-up) as the log reports it, and
# the whole process's wall time (which also covers what happens after the step
# timer stops: the per-layer grouping and the JSON line), as tokens/s, and the
# fastest step of each (the least disturbed by other processes).
#   bash scripts/bench_layer_norms.sh [--steps 20] [--rounds 3] [--threads N] [--coretype NAME|none]
# Model sizes: MODEL="..." B=.. T=.. (default: the CPU reproduction's model,
# llama L=12 C=128 H=4 ffn=344 vocab=8192, T=256, B=8).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=20; ROUNDS=3; THREADS=$(nproc); CORETYPE=auto
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "error: bench_layer_norms: $1 needs a value" >&2; exit 2; }
  case "$1" in
    --steps) STEPS=$2;; --rounds) ROUNDS=$2;; --threads) THREADS=$2;; --coretype) CORETYPE=$2;;
    *) echo "error: bench_layer_norms: unknown flag $1" >&2; exit 2;;
  esac; shift 2
done
if [ "$CORETYPE" = auto ]; then
  if [ -n "${OPENBLAS_CORETYPE:-}" ]; then CORETYPE=$OPENBLAS_CORETYPE
  elif grep -qw avx512f /proc/cpuinfo 2>/dev/null; then CORETYPE=SkylakeX; else CORETYPE=none; fi
fi
[ "$CORETYPE" != none ] && export OPENBLAS_CORETYPE=$CORETYPE
export OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
MODEL=${MODEL:-"--arch llama --n_layer 12 --n_head 4 --d_model 128 --ffn 344 --vocab 8192"}
B=${B:-8}; T=${T:-256}
TRAINER=${TRAINER:-./build/train_gpt}
[ -x "$TRAINER" ] || make -s build/train_gpt
TMP=$(mktemp -d /tmp/mixln_bench_ln_XXXXXX)
trap 'rm -rf "$TMP"' EXIT
/usr/bin/python3 dev/random_shard.py "$TMP/train_000.bin" --tokens $(( (STEPS + 2) * B * T + 1 )) --vocab 8192
echo "== $TRAINER $MODEL, B=$B T=$T, $STEPS steps x $ROUNDS rounds per setting, $THREADS threads, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-default}"
for r in $(seq 1 "$ROUNDS"); do
  for every in 1 0; do
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$TRAINER" $MODEL --max_seq_len "$T" -k mix -b "$B" -t "$T" -x "$STEPS" -u 1 -i "$TMP/train_000.bin" \
      -v 0 -m 0 -n 0 --threads "$THREADS" --layer_norms_every "$every" -o "$TMP/log_${every}_$r.jsonl" > "$TMP/out.txt" 2>&1 \
      || { cat "$TMP/out.txt"; echo "error: $TRAINER failed" >&2; exit 1; }
    t1=$(date +%s.%N)
    echo "$t0 $t1" > "$TMP/wall_${every}_$r.txt"
    echo "round $r, --layer_norms_every $every: $(awk '{printf "%.2f", $2 - $1}' "$TMP/wall_${every}_$r.txt") s"
  done
done
/usr/bin/python3 - "$TMP" "$ROUNDS" "$((STEPS * B * T))" <<'PYEOF'
import glob, json, statistics, sys
tmp, rounds, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
res = {}
for every in (1, 0):
    ms, tok, have = [], [], 0
    for r in range(1, rounds + 1):
        steps = [json.loads(l) for l in open(f"{tmp}/log_{every}_{r}.jsonl")]
        steps = [s for s in steps if s["kind"] == "step"]
        have += sum(1 for s in steps if "layer_grad_norms" in s)
        ms += [s["ms"] for s in steps[1:]]
        tok += [s["tok_per_s"] for s in steps[1:]]
    walls = []
    for r in range(1, rounds + 1):
        t0, t1 = map(float, open(f"{tmp}/wall_{every}_{r}.txt").read().split())
        walls.append(t1 - t0)
    res[every] = (statistics.median(ms), statistics.median(tok), have, len(ms), min(walls), min(ms))
on, off = res[1], res[0]
if on[2] == 0 or off[2] != 0:
    sys.exit(f"error: expected layer_grad_norms on every step with 1 and on none with 0, got {on[2]} and {off[2]} lines")
over = 100.0 * (on[0] - off[0]) / off[0]
print(f"--layer_norms_every 1: median step {on[0]:8.2f} ms, {on[1]:8.0f} tok/s, fastest step {on[5]:8.2f} ms ({on[3]} steps)")
print(f"--layer_norms_every 0: median step {off[0]:8.2f} ms, {off[1]:8.0f} tok/s, fastest step {off[5]:8.2f} ms ({off[3]} steps)")
wover = 100.0 * (on[4] - off[4]) / off[4]
fover = 100.0 * (on[5] - off[5]) / off[5]
print(f"whole process (best of {rounds}): every 1 {on[4]:.2f} s = {tokens / on[4]:.0f} tok/s, "
      f"every 0 {off[4]:.2f} s = {tokens / off[4]:.0f} tok/s")
print(f"overhead of per-layer gradient norms every step: {over:+.2f}% of the median step time, "
      f"{fover:+.2f}% of the fastest step, {wover:+.2f}% of the process wall time (target <= 5%)")
print("(on a loaded machine the fastest step is the least noisy figure; differences of a few % are noise)")
PYEOF
