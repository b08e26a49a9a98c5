# shellcheck shell=bash
# Core suite: the CPU trainer against the PyTorch reference, the shared host code,
# and bad input. Sourced by scripts/run_tests.sh (see there for run_test / skip_test).
B=build
SCRATCH=$(mktemp -d /tmp/mixln_core_XXXXXX)
PY=/usr/bin/python3

# --- the stored reference states provably come from PyTorch: regenerate, compare every named
#     tensor on its own scale (dev/make_reference.py: CHECK_REL)
run_test core/reference_regenerates pass $PY dev/make_reference.py --check dev/reference
# ... and they discriminate: a wrong K, norm eps x10, interleaved RoPE or a clipping threshold
# of 0.9x lands at least MIN_MARGINS tolerances away (printed per state)
run_test core/reference_margins pass $PY dev/make_reference.py --margins
# the check can fail: one gradient element changed by 1e-4 of its value
core_neg_regen() {
  mkdir -p "$SCRATCH/neg_ref"
  $PY - dev/reference/gpt_pre.bin "$SCRATCH/neg_ref/gpt_pre.bin" <<'PYEOF' || return 2
import sys
import numpy as np
sys.path.insert(0, "dev")
import formats
data = bytearray(open(sys.argv[1], "rb").read())
off = 0                              # a state is its parts laid end to end
for name, _, v in formats.read_state(bytes(data)):
    if name == "grad l1.fc.w":
        a = np.frombuffer(data, dtype=np.float32, count=v.size, offset=off)
        i = int(np.abs(a).argmax())
        a[i] *= np.float32(1 + 1e-4)
    off += v.nbytes
open(sys.argv[2], "wb").write(data)
PYEOF
  $PY dev/make_reference.py --check "$SCRATCH/neg_ref" --only gpt_pre
}
run_test core/neg_reference_perturbed 'fail:DIFFER  gpt_pre: grad l1\.fc\.w off by' core_neg_regen

# --- machine independence: OpenBLAS picks a kernel per CPU, and each sums in its own order.
#     The regeneration check and the CPU trainer's test under every kernel this CPU can run
#     (OPENBLAS_CORETYPE; SkylakeX needs AVX-512, Haswell AVX2 + FMA)
core_cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
for core in Prescott Haswell SkylakeX; do
  case $core in
    Haswell)  need="avx2 fma" ;;
    SkylakeX) need="avx512f avx512bw avx512dq avx512vl" ;;
    *)        need="" ;;
  esac
  missing=""
  for f in $need; do [[ " $core_cpu_flags " == *" $f "* ]] || missing+=" $f"; done
  if [ -n "$missing" ]; then
    skip_test "core/reference_regenerates_$core" "this CPU lacks$missing"
    skip_test "core/test_gpt_$core" "this CPU lacks$missing"
    continue
  fi
  run_test "core/reference_regenerates_$core" pass env OPENBLAS_CORETYPE=$core OPENBLAS_VERBOSE=2 $PY dev/make_reference.py --check dev/reference
  run_test "core/test_gpt_$core" pass env OPENBLAS_CORETYPE=$core OPENBLAS_VERBOSE=2 $B/test_gpt
done

# --- train_gpt.cpp against every stored state (BLAS, plain loops, ASan+UBSan builds)
run_test core/test_gpt            pass $B/test_gpt
run_test core/test_gpt_attn_block7 pass $B/test_gpt --attn_block 7    # causal blocking with a ragged last block
run_test core/test_gpt_noblas     pass $B/test_gpt_noblas --attn_block 5
run_test core/test_gpt_asan       pass $B/test_gpt_asan
# negative tests: the comparison must be able to fail
run_test core/neg_wrong_post_ln   'fail:llama_mix.bin: MISMATCH'        $B/test_gpt --post_ln_layers 2 dev/reference/llama_mix.bin
run_test core/neg_pre_as_post     'fail:gpt_pre.bin: MISMATCH'          $B/test_gpt --post_ln_layers 4 dev/reference/gpt_pre.bin
run_test core/neg_perturbed_grad  'fail:FAIL +grad l2\.fc\.w '          $B/test_gpt --perturb l2.fc.w dev/reference/gpt_pre.bin
# shapes the stored states do not have (dev/make_reference.py EXTRA_CONFIGS: head sizes 8-80,
# T up to 70, B = 1 and 3, one head), generated here from PyTorch and checked the same way
core_extra_shapes() {
  $PY dev/make_reference.py --set extra --out "$SCRATCH/extra" >/dev/null || return 1
  $B/test_gpt --min_k_margin 0 "$SCRATCH"/extra/*.bin   # a fresh initialisation: no K margin to demand
}
run_test core/test_gpt_extra_shapes pass core_extra_shapes
# the K-margin check can fail: a freshly initialised state (std 0.02) cannot tell K from K+-1
core_neg_weak_margin() {
  [ -f "$SCRATCH/extra/x_gpt_odd.bin" ] || $PY dev/make_reference.py --set extra --only x_gpt_odd --out "$SCRATCH/extra" >/dev/null || return 2
  $B/test_gpt "$SCRATCH/extra/x_gpt_odd.bin"
}
run_test core/neg_weak_k_margin 'fail:FAIL a wrong K=[0-9]+ misses the logits by [0-9]+x' core_neg_weak_margin

# --- host code: shards, loader, checkpoints, flags, schedule
run_test core/test_host           pass $B/test_host
run_test core/test_host_asan      pass $B/test_host_asan

# --- bad reference-state files
head -c 5000 dev/reference/gpt_pre.bin > $SCRATCH/state_trunc.bin
cp dev/reference/gpt_pre.bin $SCRATCH/state_magic.bin
printf 'XXXX' | dd of=$SCRATCH/state_magic.bin conv=notrunc status=none
cp dev/reference/gpt_pre.bin $SCRATCH/state_version.bin
printf '\x09' | dd of=$SCRATCH/state_version.bin bs=1 seek=4 conv=notrunc status=none
run_test core/bad_state_missing   'fail:^error: cannot open .*nope\.bin'                $B/test_gpt $SCRATCH/nope.bin
run_test core/bad_state_truncated 'fail:^error: .*state_trunc\.bin: file is truncated'  $B/test_gpt $SCRATCH/state_trunc.bin
run_test core/bad_state_magic     'fail:^error: .*state_magic\.bin: not a reference state' $B/test_gpt $SCRATCH/state_magic.bin
run_test core/bad_state_version   'fail:^error: .*state_version\.bin: reference state version 9' $B/test_gpt $SCRATCH/state_version.bin

# --- train_gpt end to end on a small random shard
$PY dev/random_shard.py $SCRATCH/train_000.bin --tokens 20000 --vocab 300 --seed 1
$PY dev/random_shard.py $SCRATCH/val_000.bin --tokens 4000 --vocab 300 --seed 2
TINY=(--arch llama --n_layer 4 --n_head 2 --d_model 32 --ffn 64 --vocab 300 --max_seq_len 32 -k 1 -b 4 -t 32 -i "$SCRATCH/train_*.bin" -j "$SCRATCH/val_*.bin")
train_smoke() {   # trains, then checks the log: one step line per step, loss falls, layer norms present
  $B/train_gpt "${TINY[@]}" -x 30 -u 5 -l 3e-3 -d 256 -v 10 -m 2 -n 8 -o $SCRATCH/log.jsonl --out_dir $SCRATCH || return 1
  $PY - "$SCRATCH/log.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if r["kind"] == "step"]
vals = [r for r in rows if r["kind"] == "val"]
assert rows[0]["kind"] == "config" and rows[0]["post_ln_layers"] == 1, rows[0]
assert [r["step"] for r in steps] == list(range(30)), "one step line per step"
assert all(len(r["layer_grad_norms"]) == 4 for r in steps), "per-layer grad norms on every step"
assert steps[-1]["loss"] < steps[0]["loss"] - 0.5, (steps[0]["loss"], steps[-1]["loss"])
assert len(vals) == 4 and vals[-1]["val_loss"] < vals[0]["val_loss"], vals
print("log ok:", len(steps), "steps, loss", steps[0]["loss"], "->", steps[-1]["loss"], "val", vals[-1]["val_loss"])
PYEOF
}
run_test core/train_smoke pass train_smoke
run_test core/train_from_checkpoint pass $B/train_gpt -e $SCRATCH/ckpt_00000030.bin -b 4 -t 32 -x 2 -i "$SCRATCH/train_*.bin" -n 0 -v 0
run_test core/train_help          pass $B/train_gpt --help

# --- bad flags and input to train_gpt: one line, non-zero exit
run_test core/bad_flag_unknown    'fail:^error: unknown flag --frobnicate'                $B/train_gpt --frobnicate 3
run_test core/bad_flag_preset     "fail:^error: --preset: unknown preset 'llama-3b'"      $B/train_gpt -p llama-3b
run_test core/bad_flag_k_high     'fail:^error: --post_ln_layers must be in \[0, n_layer=4\], got 5' $B/train_gpt "${TINY[@]}" -k 5
run_test core/bad_flag_k_neg      'fail:^error: --post_ln_layers must be in \[0, n_layer=4\], got -2' $B/train_gpt "${TINY[@]}" -k -2
run_test core/bad_flag_seq_len    'fail:^error: --seq_len 64 does not fit the model.s max_seq_len 32' $B/train_gpt "${TINY[@]}" -t 64
run_test core/bad_vocab_tokens    'fail:^error: .*(train|val)_000\.bin: token id [0-9]+ .* >= the model.s vocab \(100\)' $B/train_gpt "${TINY[@]}" --vocab 100
head -c 3000 $SCRATCH/ckpt_00000030.bin > $SCRATCH/ckpt_trunc.bin 2>/dev/null
run_test core/bad_ckpt_truncated  'fail:^error: .*ckpt_trunc\.bin: file is truncated'     $B/train_gpt -e $SCRATCH/ckpt_trunc.bin -i "$SCRATCH/train_*.bin"
run_test core/bad_ckpt_missing    'fail:^error: cannot open .*missing\.bin'               $B/train_gpt -e $SCRATCH/missing.bin -i "$SCRATCH/train_*.bin"
run_test core/bad_ckpt_magic      'fail:^error: .*state_magic\.bin: not a checkpoint'     $B/train_gpt -e $SCRATCH/state_magic.bin -i "$SCRATCH/train_*.bin"
run_test core/bad_data_missing    'fail:^error: no files match .*none_\*\.bin'            $B/train_gpt "${TINY[@]}" -i "$SCRATCH/none_*.bin"
# float flags: finite and in range, one line naming the flag (no NaN/dead run that exits 0)
run_test core/bad_flag_lr_inf         "fail:^error: --lr must be a finite number, got 'inf'"      $B/train_gpt "${TINY[@]}" -x 1 --lr inf
run_test core/bad_flag_lr_huge        'fail:^error: --lr value 1e50 is out of range'            $B/train_gpt "${TINY[@]}" -x 1 --lr 1e50
run_test core/bad_flag_lr_high        'fail:^error: --lr must be in \(0, 10\], got 50'           $B/train_gpt "${TINY[@]}" -x 1 --lr 50
run_test core/bad_flag_beta1_nan      "fail:^error: --beta1 must be a finite number, got 'nan'"   $B/train_gpt "${TINY[@]}" -x 1 --beta1 nan
run_test core/bad_flag_beta2_one      'fail:^error: --beta2 must be in \[0, 1\), got 1'           $B/train_gpt "${TINY[@]}" -x 1 --beta2 1
run_test core/bad_flag_adam_eps_zero  'fail:^error: --adam_eps must be in \(0, 1\], got 0'        $B/train_gpt "${TINY[@]}" -x 1 --adam_eps 0
run_test core/bad_flag_adam_eps_neg   'fail:^error: --adam_eps must be in \(0, 1\], got -1'       $B/train_gpt "${TINY[@]}" -x 1 --adam_eps -1
run_test core/bad_flag_grad_clip_nan  "fail:^error: --grad_clip must be a finite number"          $B/train_gpt "${TINY[@]}" -x 1 --grad_clip nan
run_test core/bad_flag_lr_floor_nan   "fail:^error: --lr_floor must be a finite number"           $B/train_gpt "${TINY[@]}" -x 1 --lr_floor nan
run_test core/bad_flag_emb_std_nan    "fail:^error: --emb_std must be a finite number"            $B/train_gpt "${TINY[@]}" -x 1 --emb_std nan
run_test core/bad_flag_rope_theta_0   'fail:^error: --rope_theta must be > 0, got 0'              $B/train_gpt "${TINY[@]}" -x 1 --rope_theta 0
run_test core/bad_flag_rope_theta_neg 'fail:^error: --rope_theta must be > 0, got -5'             $B/train_gpt "${TINY[@]}" -x 1 --rope_theta -5
run_test core/bad_flag_norm_eps_inf   "fail:^error: --norm_eps must be a finite number"           $B/train_gpt "${TINY[@]}" -x 1 --norm_eps inf
run_test core/bad_flag_weight_decay   'fail:^error: --weight_decay must be in \[0, 100\], got -5' $B/train_gpt "${TINY[@]}" -x 1 --weight_decay -5
run_test core/bad_flag_init_std_neg   'fail:^error: --init_std must be in \(0, 100\], got -1'     $B/train_gpt "${TINY[@]}" -x 1 --init_std -1
# sizes: bounded before anything is allocated (no bad_alloc, no signed overflow), memory checked
run_test core/bad_size_max_seq_len 'fail:^error: --max_seq_len must be in \[1, 1048576\], got 2147483647' $B/train_gpt "${TINY[@]}" --max_seq_len 2147483647
run_test core/bad_size_ffn         'fail:^error: --ffn must be in \[1, 1048576\], got 2147483647'         $B/train_gpt "${TINY[@]}" --ffn 2147483647
run_test core/bad_size_vocab       'fail:^error: --vocab must be in \[2, 16777216\], got 2147483647'      $B/train_gpt "${TINY[@]}" --vocab 2147483647
run_test core/bad_size_micro_steps 'fail:^error: --total_batch 4294967296 is 4294967296 micro-steps of B\*T\*ranks = 1 tokens' \
  $B/train_gpt "${TINY[@]}" -d 4294967296 -b 1 -t 1
run_test core/bad_size_memory      "fail:^error: the model's parameters, gradients and AdamW state .* needs [0-9.]+ GiB but this machine has" \
  $B/train_gpt "${TINY[@]}" --n_layer 64 --n_head 64 --d_model 16384 --ffn 65536 -k 1
core_memory_printed() { $B/train_gpt "${TINY[@]}" -x 1 -v 0 -n 0 | grep -E '^data: .*memory [0-9.]+ MiB \(weights, gradients, AdamW [0-9.]+; activations [0-9.]+\)'; }
run_test core/memory_printed pass core_memory_printed
# every flag is checked before a file is touched: no folder made, no temporary file removed
core_flags_before_files() {
  local d=$SCRATCH/flagsfirst
  mkdir -p $d/cwd && touch $d/cwd/ckpt_00000001.bin.tmp.99
  (cd $d/cwd && $OLDPWD/$B/train_gpt "${TINY[@]}" --resume 1) > $d/out.txt 2>&1 && return 1
  cat $d/out.txt
  [ "$(wc -l < $d/out.txt)" = 1 ] && grep -q '^error: --resume needs --out_dir' $d/out.txt && [ -f $d/cwd/ckpt_00000001.bin.tmp.99 ] || return 1
  $B/train_gpt "${TINY[@]}" --lr nan --out_dir $d/never > $d/out2.txt 2>&1 && return 1
  cat $d/out2.txt
  [ ! -e $d/never ] || { echo "$d/never exists: a file is touched before the flags are checked"; return 1; }
}
run_test core/flags_checked_before_files pass core_flags_before_files
# --help shows every default; a preset's derived values are explained; a repeated flag warns
core_help_defaults() {
  $B/train_gpt --help > $SCRATCH/help.txt || return 1
  local n_flags n_def
  n_flags=$(grep -cE '^  (-[a-z], )? *--[a-z_0-9]+ ' $SCRATCH/help.txt); n_def=$(grep -c '\[default: [^]]*\]$' $SCRATCH/help.txt)
  echo "$n_flags flags, $n_def with a default"
  [ "$n_flags" -gt 40 ] && [ "$n_flags" = "$n_def" ] || return 1
  grep -E -- '--batch_size .*\[default: 4\]$' $SCRATCH/help.txt && grep -E -- '--grad_clip .*\[default: 1\]$' $SCRATCH/help.txt &&
    grep -E -- '--steps .*\[default: 1000\]$' $SCRATCH/help.txt && grep -E -- '--warmup .*\[default: 100\]$' $SCRATCH/help.txt
}
run_test core/help_shows_defaults pass core_help_defaults
core_preset_derived() {
  $B/train_gpt -p llama-71m -b 2 -t 16 --d_model 256 --n_head 4 --lr 1e-3 --lr 2e-3 -x 1 -v 0 -n 0 -i "$SCRATCH/none_*.bin" > $SCRATCH/derived.txt 2>&1
  cat $SCRATCH/derived.txt
  grep -q "^note: --total_batch 131072 (tokens per optimizer step) comes from preset llama-71m; with B=2 T=16 a step is 4096 micro-steps" $SCRATCH/derived.txt &&
    grep -q "^note: --ffn 1368 comes from preset llama-71m" $SCRATCH/derived.txt &&
    grep -q "^note: --warmup 1000 (from preset llama-71m) is longer than --steps 1" $SCRATCH/derived.txt &&
    grep -q "^warning: --lr is given 2 times; the last value, '2e-3', is used" $SCRATCH/derived.txt
}
run_test core/preset_overrides_explained pass core_preset_derived

rm -rf "$SCRATCH"
