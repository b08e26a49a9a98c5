# shellcheck shell=bash
# tests/cuda.sh - the CUDA trainer (train_gpt.cu) and its test (test_gpt.cu), sourced by
# scripts/run_tests.sh; built by the Makefile. Without a GPU everything runs through the
# CPU emulation of CUDA (dev/cuda_emu): test_gpt.cu against the stored PyTorch states in fp32,
# bf16 and pure bf16 with the bitwise resume check (gpt's GELU in a GEMM epilogue, and once,
# fp32, in separate kernels), negative tests, the emulated trainer
# against the CPU trainer, its own checkpoint/resume, bad input, and the data-parallel trainer
# under `mpirun -np 2` (where MPI is installed) against the CPU trainer. The nvcc builds run on a
# GPU when there is one, and otherwise must say so (exit 77 / a one-line error), never crash.
CB=${BUILD:-build}/cuda
CPY=/usr/bin/python3
CSCRATCH=$(mktemp -d /tmp/mixln_cuda_XXXXXX)

if [ -x "$CB/test_gpt_cuda_emu" ]; then
  # all stored configs, all stored steps, fp32 (about 1e-4 of each tensor's scale), resume check
  run_test cuda/test_gpt_emu_fp32 pass "$CB/test_gpt_cuda_emu" --precision fp32
  # bf16 (per-tensor table) and pure bf16: every config, the first 3 stored steps (emulation is slow)
  run_test cuda/test_gpt_emu_bf16 pass "$CB/test_gpt_cuda_emu" --precision bf16 --steps 3
  run_test cuda/test_gpt_emu_bf16_matmul_attention pass "$CB/test_gpt_cuda_emu" --precision bf16 --attention matmul --steps 3 \
    --resume_steps 0
  run_test cuda/test_gpt_emu_pure_bf16 pass "$CB/test_gpt_cuda_emu" --precision pure_bf16 --steps 3 \
    dev/reference/llama_mix.bin dev/reference/gpt_post.bin dev/reference/llama_mix6.bin
  # shapes the stored states do not have (dev/make_reference.py --set extra: head sizes 8-80,
  # 12 not a multiple of 8 and 80 over flash attention's limit, T up to 70 across two flash
  # tiles, B = 1 and 3), generated from PyTorch here; fp32 and bf16, 3 steps
  cuda_extra_shapes() {   # $@: test_gpt.cu flags
    [ -f "$CSCRATCH/extra/x_gpt_odd.bin" ] || $CPY dev/make_reference.py --set extra --out "$CSCRATCH/extra" >/dev/null || return 1
    "$CB/test_gpt_cuda_emu" --steps 3 "$@" "$CSCRATCH"/extra/*.bin
  }
  run_test cuda/test_gpt_emu_fp32_extra_shapes pass cuda_extra_shapes --precision fp32
  run_test cuda/test_gpt_emu_bf16_extra_shapes pass cuda_extra_shapes --precision bf16
  # the same checks with the emulation's streams run as late / as early as CUDA allows, and
  # at random points in between (CUDA_EMU_STREAMS, dev/cuda_emu/README.md; a fixed seed):
  # no result may depend on when queued work runs
  for m in late early random:3; do
    run_test "cuda/test_gpt_emu_bf16_streams_${m/:/}" pass env CUDA_EMU_STREAMS=$m "$CB/test_gpt_cuda_emu" --precision bf16 --steps 3 \
      dev/reference/gpt_mix.bin dev/reference/llama_mix.bin
  done
  # the runs above put gpt's GELU into the fc GEMM's epilogue (--gelu_fusion 1, the default);
  # the unfused path (GELU and GELU-gradient kernels) on the gpt states, fp32, 3 steps
  run_test cuda/test_gpt_emu_fp32_no_gelu_fusion pass "$CB/test_gpt_cuda_emu" --precision fp32 --gelu_fusion 0 \
    --steps 3 --resume_steps 0 dev/reference/gpt_mix.bin dev/reference/gpt_post.bin dev/reference/gpt_pre.bin
  # negative tests: the comparisons must be able to fail
  run_test cuda/neg_wrong_post_ln 'fail:llama_mix.bin: MISMATCH' "$CB/test_gpt_cuda_emu" --post_ln_layers 2 --steps 0 \
    --resume_steps 0 dev/reference/llama_mix.bin
  run_test cuda/neg_perturbed_grad 'fail:FAIL +grad l2\.fc\.w ' "$CB/test_gpt_cuda_emu" --perturb l2.fc.w --steps 0 \
    --resume_steps 0 dev/reference/gpt_pre.bin
  run_test cuda/neg_perturbed_grad_bf16 'fail:FAIL +grad l1\.qkv\.w ' "$CB/test_gpt_cuda_emu" --precision bf16 \
    --perturb l1.qkv.w --steps 0 --resume_steps 0 dev/reference/llama_post.bin
  run_test cuda/bad_test_flag 'fail:^error: --precision must be fp32, bf16 or pure_bf16' "$CB/test_gpt_cuda_emu" --precision fp16
  run_test cuda/bad_test_gelu_fusion 'fail:^error: --gelu_fusion must be 0 or 1, got 2' "$CB/test_gpt_cuda_emu" --gelu_fusion 2
else
  skip_test cuda/test_gpt_emu "emulated build absent (no CUDA headers)"
fi

if [ -x "$CB/train_gpt_cuda_emu" ]; then
  T=$CB/train_gpt_cuda_emu
  $CPY dev/random_shard.py "$CSCRATCH/train_000.bin" --tokens 4000 --vocab 300 --seed 1 >/dev/null
  $CPY dev/random_shard.py "$CSCRATCH/val_000.bin" --tokens 1000 --vocab 300 --seed 2 >/dev/null
  CTINY=(--arch llama --n_layer 2 --n_head 2 --d_model 32 --ffn 88 --vocab 300 --max_seq_len 16 -k 1 -b 2 -t 16
         -i "$CSCRATCH/train_*.bin" -l 3e-3 -u 2 -n 0 -v 0)
  # gpt with 2 micro-steps per step: the bias gradients (GEMM epilogues) must accumulate;
  # ffn 88 is padded to 128 on the device (zero units through the fused GELU)
  CTINY_GPT=(--arch gpt --n_layer 2 --n_head 2 --d_model 32 --ffn 88 --vocab 300 --max_seq_len 16 -k 1 -b 2 -t 16 -d 64
             -i "$CSCRATCH/train_*.bin" -l 3e-3 -u 2 -n 0 -v 0)
  # the emulated CUDA trainer (fp32) follows the CPU trainer step for step (args: the flags of
  # both; CU_FLAGS: flags of the CUDA trainer only; LAUNCH: a launcher for it, e.g. mpirun);
  # validation lines too, where there are some
  cuda_vs_cpu() {
    ${LAUNCH:-} "$T" "$@" ${CU_FLAGS:-} --precision fp32 -x 4 -o "$CSCRATCH/cu.jsonl" || return 1
    ${BUILD:-build}/train_gpt "$@" -x 4 -o "$CSCRATCH/cpu.jsonl" || return 1
    $CPY - "$CSCRATCH/cu.jsonl" "$CSCRATCH/cpu.jsonl" <<'PYEOF'
import json, sys
a, b = ([json.loads(l) for l in open(p) if '"kind":"step"' in l] for p in sys.argv[1:3])
assert len(a) == len(b) == 4, (len(a), len(b))
va, vb = ([json.loads(l) for l in open(p) if '"kind":"val"' in l] for p in sys.argv[1:3])
assert len(va) == len(vb), ("val lines", len(va), len(vb))
for x, y in zip(va, vb):
    assert x["step"] == y["step"] and abs(x["val_loss"] - y["val_loss"]) <= 1e-5 * abs(y["val_loss"]), (x, y)
    print("val at step", x["step"], "cuda", x["val_loss"], "cpu", y["val_loss"])
for x, y in zip(a, b):
    assert x.get("skipped") == y.get("skipped"), (x["step"], "skipped", x.get("skipped"), y.get("skipped"))
    for k in ("loss", "grad_norm"):
        if y[k] is None:   # non-finite (JSON null): the same on both sides
            assert x[k] is None, (x["step"], k, x[k], y[k])
            continue
        assert abs(x[k] - y[k]) <= 1e-4 * abs(y[k]), (x["step"], k, x[k], y[k])
    for u, v in zip(x["layer_grad_norms"], y["layer_grad_norms"]):
        if v is None:
            assert u is None, (x["step"], u, v)
            continue
        assert abs(u - v) <= 1e-4 * abs(v) + 1e-9, (x["step"], u, v)
    print("step", x["step"], "loss cuda", x["loss"], "cpu", y["loss"])
PYEOF
  }
  run_test cuda/train_emu_vs_cpu pass cuda_vs_cpu "${CTINY[@]}"
  run_test cuda/train_emu_vs_cpu_gpt_accum pass cuda_vs_cpu "${CTINY_GPT[@]}"
  # samples (common/sample.h): the emulated CUDA trainer (fp32) draws the same tokens as the
  # CPU trainer from the same seed, printed as token ids, and as text through a tokenizer file
  # (a made-up 300-token one: id i decodes to "wi ", id 299 is the end-of-text prompt)
  cuda_samples_vs_cpu() {
    $CPY - "$CSCRATCH/tok300.bin" <<'PYEOF' || return 1
import struct, sys
toks = [("w%d " % i).encode() for i in range(299)] + [b"<eot>"]
head = [20240328, 2, 300, 299, 0, 0] + [0] * 250
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<256i", *head) + b"".join(bytes([len(t)]) + t for t in toks))
PYEOF
    local S=(-x 4 -s 2 -n 8) tok
    for tok in "" "$CSCRATCH/tok300.bin"; do
      "$T" "${CTINY[@]}" "${S[@]}" ${tok:+--tokenizer "$tok"} --precision fp32 | grep '^sample' > "$CSCRATCH/s_cu.txt" || return 1
      ${BUILD:-build}/train_gpt "${CTINY[@]}" "${S[@]}" ${tok:+--tokenizer "$tok"} | grep '^sample' > "$CSCRATCH/s_cpu.txt" || return 1
      cat "$CSCRATCH/s_cu.txt"
      [ "$(wc -l < "$CSCRATCH/s_cu.txt")" -eq 2 ] || { echo "expected 2 samples (steps 2 and 4)"; return 1; }
      if [ -n "$tok" ]; then grep -q '^sample: w[0-9]' "$CSCRATCH/s_cu.txt" || { echo "not decoded"; return 1; }; fi
      diff "$CSCRATCH/s_cu.txt" "$CSCRATCH/s_cpu.txt" || { echo "samples differ from the CPU trainer's"; return 1; }
    done
  }
  run_test cuda/train_emu_samples_vs_cpu pass cuda_samples_vs_cpu
  run_test cuda/bad_tokenizer_missing 'fail:^error: cannot open .*no_tok\.bin' "$T" "${CTINY[@]}" -x 1 --tokenizer "$CSCRATCH/no_tok.bin"
  # the emulation's deferred streams (CUDA_EMU_STREAMS, dev/cuda_emu/README.md): the async
  # uploads from the two alternating pinned staging sets (3 micro-steps: each set refilled),
  # the device-side step and its downloads must not depend on work having run early or late
  for m in late early random:3; do
    LAUNCH="env CUDA_EMU_STREAMS=$m" run_test "cuda/train_emu_vs_cpu_gpt_accum3_streams_${m/:/}" pass cuda_vs_cpu "${CTINY_GPT[@]}" -d 96
  done
  # a NaN planted in a gradient at step 2 (of 4): the device must skip that update (AdamW reads
  # the finite flag on the device) and the next steps follow the CPU trainer's, which skipped too
  export MIXLN_TEST_NAN_AT=1   # the test hook (common/trainer.h): a NaN gradient at step 2, in both trainers
  run_test cuda/train_emu_vs_cpu_nan_skip pass cuda_vs_cpu "${CTINY[@]}" --nonfinite skip
  unset MIXLN_TEST_NAN_AT
  # checkpoint every 2 steps, then resume from step 2: the log continues bitwise (bf16 mode)
  cuda_resume() {
    rm -rf "$CSCRATCH/run"
    "$T" "${CTINY[@]}" -x 4 --ckpt_every 2 --keep_ckpts 5 --out_dir "$CSCRATCH/run" -o "$CSCRATCH/full.jsonl" || return 1
    cp "$CSCRATCH/full.jsonl" "$CSCRATCH/part.jsonl"
    rm "$CSCRATCH/run/ckpt_00000004.bin"
    # the log offset recorded in the step-2 checkpoint cuts part.jsonl back before appending
    "$T" "${CTINY[@]}" -x 4 --ckpt_every 2 --keep_ckpts 5 --out_dir "$CSCRATCH/run" -o "$CSCRATCH/part.jsonl" --resume 1 | tee "$CSCRATCH/resume.txt" || return 1
    grep -q "resume: .*ckpt_00000002.bin (step 2" "$CSCRATCH/resume.txt" || { echo "did not resume from step 2"; return 1; }
    $CPY dev/compare_logs.py "$CSCRATCH/full.jsonl" "$CSCRATCH/part.jsonl"
  }
  run_test cuda/train_emu_resume_bitwise pass cuda_resume
  # a full disk (a tmpfs that holds one 0.6 MB checkpoint, not two): the write at step 4 fails
  # with a one-line error and a non-zero exit, no temporary file is left, and the step-2
  # checkpoint is intact (the CPU trainer loads it). LAUNCH, CU_FLAGS: as cuda_vs_cpu
  cuda_disk_full() {
    local d="$CSCRATCH/full" rc ok=1
    mkdir -p "$d"
    mount -t tmpfs -o size=1000k tmpfs "$d" || return 1
    # shellcheck disable=SC2086
    ${LAUNCH:-} "$T" "${CTINY[@]}" ${CU_FLAGS:-} -x 4 --ckpt_every 2 --keep_ckpts 1 --out_dir "$d" > "$CSCRATCH/full.txt" 2>&1; rc=$?
    grep -E "checkpoint|error" "$CSCRATCH/full.txt"
    [ $rc -ne 0 ] || { echo "expected a non-zero exit when the last checkpoint cannot be written"; ok=0; }
    grep -q "^error: checkpoint at step 4 not saved: writing .*ckpt_00000004.bin failed: No space left on device" "$CSCRATCH/full.txt" || ok=0
    [ -f "$d/ckpt_00000002.bin" ] && ! compgen -G "$d/*.tmp.*" >/dev/null || { echo "previous checkpoint missing or temp file left"; ok=0; }
    ${BUILD:-build}/train_gpt -e "$d/ckpt_00000002.bin" -b 2 -t 16 -x 1 -i "$CSCRATCH/train_*.bin" -n 0 -v 0 >/dev/null ||
      { echo "previous checkpoint unreadable"; ok=0; }
    umount "$d"
    [ $ok -eq 1 ]
  }
  CUDA_TMPFS=0
  mkdir -p "$CSCRATCH/tmpfs_probe"
  if mount -t tmpfs -o size=4k tmpfs "$CSCRATCH/tmpfs_probe" 2>/dev/null; then umount "$CSCRATCH/tmpfs_probe"; CUDA_TMPFS=1; fi
  if [ $CUDA_TMPFS = 1 ]; then run_test cuda/train_emu_disk_full pass cuda_disk_full
  else skip_test cuda/train_emu_disk_full "mounting a tmpfs needs root"; fi
  # the analysis modes (--mode angular / layer_drop; docs/ANALYSIS.md) of the CUDA trainer,
  # fp32, against dev/model.py on every stored state, as tests/analysis.sh checks the CPU
  # trainer's: the distances of all layer pairs, the loss without each layer, batches of 3,
  # the opposite-state checkpoint; and the comparison must be able to fail (--wrong_skip)
  run_test cuda/analysis_emu_vs_pytorch pass $CPY dev/test_analysis.py angular layer_drop batched opposite \
    --train_gpt "$T" --trainer_flags "--precision fp32"
  run_test cuda/neg_analysis_wrong_skip 'fail:MISMATCH gpt_pre\.bin layer_drop' $CPY dev/test_analysis.py layer_drop --wrong_skip \
    --states dev/reference/gpt_pre.bin --train_gpt "$T" --trainer_flags "--precision fp32"
  run_test cuda/bad_analysis_no_out 'fail:^error: --mode angular needs --analysis_out FILE.json' \
    "$T" "${CTINY[@]}" --mode angular -j "$CSCRATCH/val_*.bin"
  # an analysis is forward only (no gradients, no optimizer state, shared scratch activations):
  # with the emulated device's memory set between the two plans (CUDA_EMU_MEM_MIB; the plan
  # keeps a 64 MiB margin), the analysis of a 4.5M-parameter llama (big vocab, cheap to emulate)
  # fits and training does not;
  # and the forward-only bf16 model (flash attention, shared buffers) gives the full model's
  # validation loss of the training layout (the step-0 validation of a run from the same
  # checkpoint, same batches) to float precision
  cuda_analysis_fits() {
    local M=(--arch llama --n_layer 2 --n_head 2 --d_model 128 --ffn 256 --vocab 16384 --max_seq_len 16 -k 1 -b 2 -t 16)
    local D="$CSCRATCH/fits"
    mkdir -p "$D"
    ${BUILD:-build}/train_gpt "${M[@]}" -x 1 -i "$CSCRATCH/train_*.bin" --ckpt_every 1 --out_dir "$D" >/dev/null || return 1
    local A=(-e "$D/ckpt_00000001.bin" -j "$CSCRATCH/val_*.bin" -b 2 -t 16 --val_steps 3)
    CUDA_EMU_MEM_MIB=104 "$T" "${A[@]}" --mode layer_drop --analysis_out "$D/drop.json" | tee "$D/drop.txt" || return 1
    grep -q "memory plan (bf16, forward only): .* gradients 0.0 MiB" "$D/drop.txt" || { echo "no forward-only plan"; return 1; }
    if CUDA_EMU_MEM_MIB=104 "$T" "${A[@]}" -i "$CSCRATCH/train_*.bin" -x 1 > "$D/train_small.txt" 2>&1; then
      echo "training fitted in 104 MiB: the test's threshold says nothing"; return 1
    fi
    grep -q "not enough GPU memory" "$D/train_small.txt" || { cat "$D/train_small.txt"; return 1; }
    "$T" "${A[@]}" -i "$CSCRATCH/train_*.bin" -x 1 --val_every 1 -o "$D/train.jsonl" >/dev/null || return 1
    $CPY - "$D/drop.json" "$D/train.jsonl" <<'PYEOF'
import json, sys
full = json.load(open(sys.argv[1]))["full_loss"]
val = [json.loads(l) for l in open(sys.argv[2]) if '"kind":"val"' in l][0]
assert val["step"] == 0, val
print("forward-only full loss", full, "training layout step-0 val loss", val["val_loss"])
assert abs(full - val["val_loss"]) <= 1e-6 * abs(full), "forward-only loss differs"
PYEOF
  }
  run_test cuda/analysis_emu_forward_only_fits pass cuda_analysis_fits
  # data parallel (kernels/nccl_wrap.cuh): the emulated trainer under mpirun, 2 ranks, each with
  # its own emulated device (CUDA_EMU_DEVICES); the emulation's all-reduce goes through MPI
  if command -v mpicxx >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1; then
    MPIRUN=(mpirun --oversubscribe --allow-run-as-root -np 2 -x CUDA_EMU_DEVICES=2)
    CVAL=(--val_data "$CSCRATCH/val_*.bin" -v 3 --val_every 2)
    # one step = 2 ranks x 1 micro-batch against the CPU trainer's 2 micro-batches (gpt, 64
    # tokens); then llama, 2 ranks x 2 micro-batches against 4; 3 validation batches split 2 + 1
    LAUNCH="${MPIRUN[*]}" run_test cuda/train_emu_ddp_vs_cpu_gpt pass cuda_vs_cpu "${CTINY_GPT[@]}" "${CVAL[@]}"
    LAUNCH="${MPIRUN[*]}" run_test cuda/train_emu_ddp_vs_cpu_llama_accum pass cuda_vs_cpu "${CTINY[@]}" -d 128 "${CVAL[@]}"
    # the gradient buckets' all-reduce on its own stream, run as late and as early as the
    # stream order allows, and at random points (a missing wait shows: dev/test/bug_stream_order.cu)
    for m in late early random:3; do
      LAUNCH="${MPIRUN[*]} -x CUDA_EMU_STREAMS=$m" run_test "cuda/train_emu_ddp_vs_cpu_llama_streams_${m/:/}" pass cuda_vs_cpu "${CTINY[@]}" \
        -d 128 "${CVAL[@]}"
    done
    # a NaN in a gradient at step 2: every rank skips that update, as the CPU trainer does
    export MIXLN_TEST_NAN_AT=1
    LAUNCH="${MPIRUN[*]} -x MIXLN_TEST_NAN_AT" run_test cuda/train_emu_ddp_vs_cpu_nan_skip pass cuda_vs_cpu "${CTINY[@]}" -d 64 --nonfinite skip
    unset MIXLN_TEST_NAN_AT
    # resume under 2 ranks from a 2-rank checkpoint: bitwise (bf16); the same checkpoint
    # continued by one process (2 micro-steps) follows the 2-rank run within rounding
    cuda_ddp_resume() {
      rm -rf "$CSCRATCH/drun"
      "${MPIRUN[@]}" "$T" "${CTINY[@]}" -d 64 -x 4 --ckpt_every 2 --keep_ckpts 5 --out_dir "$CSCRATCH/drun" \
        -o "$CSCRATCH/dfull.jsonl" || return 1
      [ "$(grep -c '"kind":"step"' "$CSCRATCH/dfull.jsonl")" = 4 ] || { echo "the log is not rank 0's alone"; return 1; }
      cp "$CSCRATCH/dfull.jsonl" "$CSCRATCH/dpart.jsonl"
      cp "$CSCRATCH/dfull.jsonl" "$CSCRATCH/dsingle.jsonl"
      mv "$CSCRATCH/drun/ckpt_00000004.bin" "$CSCRATCH/dckpt4.bin"
      "${MPIRUN[@]}" "$T" "${CTINY[@]}" -d 64 -x 4 --ckpt_every 2 --keep_ckpts 5 --out_dir "$CSCRATCH/drun" \
        -o "$CSCRATCH/dpart.jsonl" --resume 1 > "$CSCRATCH/dresume.txt" || return 1
      grep -q "resume: .*ckpt_00000002.bin (step 2" "$CSCRATCH/dresume.txt" || { echo "did not resume from step 2"; return 1; }
      $CPY dev/compare_logs.py "$CSCRATCH/dfull.jsonl" "$CSCRATCH/dpart.jsonl" || return 1
      rm "$CSCRATCH/drun/ckpt_00000004.bin"
      "$T" "${CTINY[@]}" -d 64 -x 4 --ckpt_every 2 --keep_ckpts 5 --out_dir "$CSCRATCH/drun" -o "$CSCRATCH/dsingle.jsonl" \
        --resume 1 || return 1
      $CPY - "$CSCRATCH/dfull.jsonl" "$CSCRATCH/dsingle.jsonl" <<'PYEOF'
import json, sys
a, b = ([json.loads(l) for l in open(p) if '"kind":"step"' in l] for p in sys.argv[1:3])
assert [x["step"] for x in a] == [x["step"] for x in b] == [0, 1, 2, 3], "steps"
for x, y in zip(a[2:], b[2:]):   # bf16 gradients: the two sums round differently
    for k in ("loss", "grad_norm"):
        assert abs(x[k] - y[k]) <= 2e-2 * abs(x[k]), (x["step"], k, x[k], y[k])
    print("step", x["step"], "2 ranks", x["loss"], "1 process", y["loss"])
PYEOF
    }
    run_test cuda/train_emu_ddp_resume pass cuda_ddp_resume
    # SIGTERM to rank 1 alone: every rank stops after the same step, rank 0 checkpoints it, exit 0
    cuda_ddp_signal() {
      rm -rf "$CSCRATCH/dsig" "$CSCRATCH/dsig.jsonl"
      "${MPIRUN[@]}" "$T" "${CTINY[@]}" -d 64 -x 500 --out_dir "$CSCRATCH/dsig" -o "$CSCRATCH/dsig.jsonl" > "$CSCRATCH/dsig.txt" 2>&1 &
      local mp=$! p sent=0
      for _ in $(seq 600); do grep -q '"kind":"step"' "$CSCRATCH/dsig.jsonl" 2>/dev/null && break; sleep 0.1; done
      for p in $(pgrep -P "$mp"); do
        if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1'; then kill -TERM "$p"; sent=1; fi
      done
      [ $sent = 1 ] || { echo "rank 1 not found among mpirun's children"; kill "$mp"; return 1; }
      wait "$mp" || { echo "mpirun exit $?"; cat "$CSCRATCH/dsig.txt"; return 1; }
      cat "$CSCRATCH/dsig.txt"
      local n; n=$(grep -c '"kind":"step"' "$CSCRATCH/dsig.jsonl")
      grep -q "received SIGTERM at step $n: wrote checkpoint" "$CSCRATCH/dsig.txt" || { echo "no checkpoint at step $n"; return 1; }
      [ -f "$CSCRATCH/dsig/ckpt_$(printf %08d "$n").bin" ] && [ "$n" -lt 500 ]
    }
    run_test cuda/train_emu_ddp_signal pass cuda_ddp_signal
    # a full disk under 2 ranks with the sharded state: the checkpoint write fails on rank 0,
    # every rank learns it and exits non-zero, the previous checkpoint stays
    if [ "$CUDA_TMPFS" = 1 ]; then
      LAUNCH="${MPIRUN[*]}" CU_FLAGS="-d 64 --zero 1" run_test cuda/train_emu_ddp_zero1_disk_full pass cuda_disk_full
    else skip_test cuda/train_emu_ddp_zero1_disk_full "mounting a tmpfs needs root"; fi
    # the collectives themselves (dev/test/test_nccl.cu) on 2 and 3 ranks: all-reduce, ZeRO-1's
    # reduce to the owners and all-gather over uneven ranges (one empty), the host collectives
    for n in 2 3; do
      run_test cuda/nccl_emu_mpi_np$n pass mpirun --oversubscribe --allow-run-as-root -np $n -x CUDA_EMU_DEVICES=$n "$CB/test_nccl_emu_mpi"
    done
    # the analyses with their 3 batches split over 2 ranks (2 + 1) give the one-process
    # numbers (bf16; the sums differ only in their order)
    cuda_analysis_ddp() {
      rm -rf "$CSCRATCH/an"
      "$T" "${CTINY[@]}" -x 2 --out_dir "$CSCRATCH/an/run" > /dev/null || return 1
      local mode ck="$CSCRATCH/an/run/ckpt_00000002.bin" A
      for mode in angular layer_drop; do
        A=(--mode "$mode" -e "$ck" -j "$CSCRATCH/val_*.bin" -b 2 -t 16 -m 3)
        "$T" "${A[@]}" --analysis_out "$CSCRATCH/an/$mode.1.json" > "$CSCRATCH/an/$mode.1.txt" || return 1
        "${MPIRUN[@]}" "$T" "${A[@]}" --analysis_out "$CSCRATCH/an/$mode.2.json" > "$CSCRATCH/an/$mode.2.txt" || return 1
        grep -q "split over 2 ranks" "$CSCRATCH/an/$mode.2.txt" || { echo "$mode: not split over 2 ranks"; return 1; }
      done
      $CPY - "$CSCRATCH/an" <<'PYEOF'
import json, os, sys
def flat(x):
    if isinstance(x, dict): return [v for k in sorted(x) for v in flat(x[k])]
    if isinstance(x, list): return [v for e in x for v in flat(e)]
    return [x]
for mode in ("angular", "layer_drop"):
    a, b = (flat(json.load(open(os.path.join(sys.argv[1], f"{mode}.{n}.json")))) for n in (1, 2))
    assert len(a) == len(b), (mode, len(a), len(b))
    for x, y in zip(a, b):
        assert x == y if isinstance(x, str) else abs(x - y) <= 1e-12 * abs(x) + 1e-9, (mode, x, y)
    print(mode, len(a), "values: 2 ranks == 1 process")
PYEOF
    }
    run_test cuda/analysis_emu_ddp pass cuda_analysis_ddp
    # ZeRO-1 (--zero 1, the optimizer state sharded over the ranks): the same run as --zero 0,
    # bit for bit: the logs (loss, norms, per-layer norms, validation) and the step-2 and
    # step-4 checkpoints' parameters and AdamW state (cmp_ckpt_state: all but the header, whose
    # log offset counts the digits of the timing fields, and the checksum over it). args: the number of ranks, then the flags;
    # ZENV: more of mpirun's -x settings.
    # two checkpoints' parameters and AdamW state: the bytes between the 1024-byte header and
    # the 8-byte checksum (docs/FORMATS.md; the header holds the run id and the log offset, and
    # the checksum covers the header)
    cmp_ckpt_state() {
      local n=$(($(stat -c %s "$1") - 1024 - 8))
      [ "$(stat -c %s "$1")" = "$(stat -c %s "$2")" ] || { echo "$1 and $2 differ in size"; return 1; }
      cmp -i 1024 -n "$n" "$1" "$2"
    }
    cuda_zero_same() {
      local np=$1; shift
      local extra M
      read -ra extra <<< "${ZENV:-}"
      M=(mpirun --oversubscribe --allow-run-as-root -np "$np" -x CUDA_EMU_DEVICES="$np" "${extra[@]}")
      for z in 0 1; do
        rm -rf "$CSCRATCH/z$z"
        "${M[@]}" "$T" "$@" -x 4 --ckpt_every 2 --keep_ckpts 5 --zero $z --out_dir "$CSCRATCH/z$z" -o "$CSCRATCH/z$z.jsonl" \
          > "$CSCRATCH/z$z.txt" || { cat "$CSCRATCH/z$z.txt"; return 1; }
      done
      grep "ZeRO-1, this rank holds" "$CSCRATCH/z1.txt" || { echo "--zero 1 did not shard"; return 1; }
      $CPY dev/compare_logs.py "$CSCRATCH/z0.jsonl" "$CSCRATCH/z1.jsonl" || return 1
      for s in 00000002 00000004; do cmp_ckpt_state "$CSCRATCH/z0/ckpt_$s.bin" "$CSCRATCH/z1/ckpt_$s.bin" || return 1; done
      echo "checkpoints at steps 2 and 4: parameters and AdamW state identical"
    }
    # bf16: llama on 2 ranks with validation; gpt on 3 (three uneven shards); fp32 llama on 3
    # (a shard starting inside layer 0, so its bucket goes to two owners) with 2 micro-steps
    # each; pure bf16 (bf16 moments) llama on 3
    run_test cuda/train_emu_zero1_same_llama_bf16 pass cuda_zero_same 2 "${CTINY[@]}" -d 64 "${CVAL[@]}"
    run_test cuda/train_emu_zero1_same_gpt_bf16_3ranks pass cuda_zero_same 3 "${CTINY_GPT[@]}" -d 96
    run_test cuda/train_emu_zero1_same_llama_fp32_3ranks pass cuda_zero_same 3 "${CTINY[@]}" -d 192 --precision fp32
    run_test cuda/train_emu_zero1_same_llama_pure_3ranks pass cuda_zero_same 3 "${CTINY[@]}" -d 96 --precision pure_bf16
    # the reductions to the owners on their stream, run late, early and at random points
    for m in late early random:3; do
      ZENV="-x CUDA_EMU_STREAMS=$m" run_test "cuda/train_emu_zero1_same_llama_streams_${m/:/}" pass cuda_zero_same 2 "${CTINY[@]}" -d 64
    done
    # and against the CPU trainer (fp32), with a NaN gradient at step 2: the sharded norm
    # partials carry it to every rank, every rank skips the update
    export MIXLN_TEST_NAN_AT=1
    CU_FLAGS="--zero 1" LAUNCH="${MPIRUN[*]} -x MIXLN_TEST_NAN_AT" run_test cuda/train_emu_zero1_vs_cpu_nan_skip pass cuda_vs_cpu \
      "${CTINY[@]}" -d 64 --nonfinite skip
    unset MIXLN_TEST_NAN_AT
    # resume with --zero 1 from a sharded run's step-2 checkpoint (each rank loads its shard
    # of the state): the log continues bitwise, the step-4 checkpoint is the same file
    cuda_zero_resume() {
      rm -rf "$CSCRATCH/zr"
      "${MPIRUN[@]}" "$T" "${CTINY[@]}" -d 64 -x 4 --zero 1 --ckpt_every 2 --keep_ckpts 5 --out_dir "$CSCRATCH/zr" \
        -o "$CSCRATCH/zfull.jsonl" > /dev/null || return 1
      cp "$CSCRATCH/zfull.jsonl" "$CSCRATCH/zpart.jsonl"
      mv "$CSCRATCH/zr/ckpt_00000004.bin" "$CSCRATCH/zckpt4.bin"
      "${MPIRUN[@]}" "$T" "${CTINY[@]}" -d 64 -x 4 --zero 1 --ckpt_every 2 --keep_ckpts 5 --out_dir "$CSCRATCH/zr" \
        -o "$CSCRATCH/zpart.jsonl" --resume 1 > "$CSCRATCH/zresume.txt" || return 1
      grep -q "resume: .*ckpt_00000002.bin (step 2" "$CSCRATCH/zresume.txt" || { echo "did not resume from step 2"; return 1; }
      $CPY dev/compare_logs.py "$CSCRATCH/zfull.jsonl" "$CSCRATCH/zpart.jsonl" || return 1
      cmp_ckpt_state "$CSCRATCH/zckpt4.bin" "$CSCRATCH/zr/ckpt_00000004.bin" && echo "step-4 checkpoints: parameters and AdamW state identical"
    }
    run_test cuda/train_emu_zero1_resume pass cuda_zero_resume
    run_test cuda/bad_zero 'fail:^error: --zero must be 0 or 1, got 2' "$T" "${CTINY[@]}" --zero 2
    run_test cuda/bad_ddp_devices 'fail:^error: 2 processes on this node but 1 CUDA device' \
      mpirun --oversubscribe --allow-run-as-root -np 2 -x CUDA_EMU_DEVICES=1 "$T" "${CTINY[@]}" -x 1
    run_test cuda/bad_ddp_total_batch 'fail:^error: --total_batch 32 is not a multiple of B\*T\*ranks = 64' \
      "${MPIRUN[@]}" "$T" "${CTINY[@]}" -d 32 -x 1
    # a build without MPI refuses a launch of several processes instead of training twice alone
    run_test cuda/bad_ddp_no_mpi_build 'fail:^error: started as one of several processes \(mpirun\), but this build has no MPI' \
      "${MPIRUN[@]}" "$CB/train_gpt_cuda_emu_nompi" "${CTINY[@]}" -x 1
  else
    skip_test cuda/train_emu_ddp "no MPI (libopenmpi-dev, openmpi-bin)"
  fi
  # bad input: one-line errors
  run_test cuda/bad_precision      "fail:^error: --precision must be fp32, bf16 or pure_bf16, got 'fp8'" "$T" "${CTINY[@]}" --precision fp8
  run_test cuda/bad_attention      "fail:^error: --attention must be flash or matmul, got 'sdpa'" "$T" "${CTINY[@]}" --attention sdpa
  run_test cuda/bad_gelu_fusion    'fail:^error: --gelu_fusion must be 0 or 1, got 2'   "$T" "${CTINY[@]}" --gelu_fusion 2
  run_test cuda/no_test_hooks_in_help pass bash -c "! \"$T\" --help | grep -E 'inject_nan|slow_ckpt|flash_dq|bias_grad'"
  run_test cuda/bad_flag_unknown   'fail:^error: unknown flag --frobnicate'             "$T" --frobnicate 3
  run_test cuda/bad_no_model       'fail:^error: no model given'                        "$T" -i "$CSCRATCH/train_*.bin"
  run_test cuda/bad_k_high         'fail:^error: --post_ln_layers must be in \[0, n_layer=2\], got 3' "$T" "${CTINY[@]}" -k 3
  run_test cuda/bad_seq_len        'fail:^error: --seq_len 32 does not fit the model.s max_seq_len 16' "$T" "${CTINY[@]}" -t 32
  run_test cuda/bad_data_missing   'fail:^error: no files match .*none_\*\.bin'         "$T" "${CTINY[@]}" -i "$CSCRATCH/none_*.bin"
  run_test cuda/bad_tokens_vocab   'fail:^error: .*train_000\.bin: token id [0-9]+ .* >= the model.s vocab \(100\)' "$T" "${CTINY[@]}" --vocab 100 -x 1
  run_test cuda/bad_ckpt_missing   'fail:^error: cannot open .*missing\.bin'            "$T" -e "$CSCRATCH/missing.bin" -i "$CSCRATCH/train_*.bin"
  run_test cuda/bad_out_of_memory  'fail:^error: not enough GPU memory: the plan needs [0-9.]+ MiB' "$T" -p llama-7b -b 64 -i "$CSCRATCH/train_*.bin" --vocab 32000
  run_test cuda/bad_mode           "fail:^error: --mode must be train, angular or layer_drop, got 'angles'" "$T" "${CTINY[@]}" --mode angles \
    --val_data "$CSCRATCH/val_*.bin" --analysis_out "$CSCRATCH/a.json"
  run_test cuda/bad_analysis_no_val 'fail:^error: --mode layer_drop needs --val_data' "$T" "${CTINY[@]}" --mode layer_drop \
    --analysis_out "$CSCRATCH/a.json"
  # resume under another precision or another config: refused, naming the field
  cuda_bad_resume() {   # a one-step bf16 run leaves ckpt_00000001.bin, then resume with $@ changed
    [ -f "$CSCRATCH/ck/ckpt_00000001.bin" ] || "$T" "${CTINY[@]}" -x 1 --out_dir "$CSCRATCH/ck" >/dev/null || return 0
    "$T" "${CTINY[@]}" -x 2 --out_dir "$CSCRATCH/ck" --resume 1 "$@"
  }
  run_test cuda/bad_resume_precision 'fail:^error: .*ckpt_00000001\.bin: checkpoint holds precision bf16 but this run is fp32' \
    cuda_bad_resume --precision fp32
  run_test cuda/bad_resume_config  'fail:^error: .*ckpt_00000001\.bin: checkpoint has d_model=32 but the flags say 48' \
    cuda_bad_resume --d_model 48
  run_test cuda/train_help         pass "$T" --help
  # the run's folder (common/run.h), checksums, signals, the log and the skip limit, as in
  # tests/reliability.sh for the CPU trainer
  cuda_out_dir() {
    local d="$CSCRATCH/own" && rm -rf "$d"
    "$T" "${CTINY[@]}" -x 1 --out_dir "$d" >/dev/null || return 1
    "$T" "${CTINY[@]}" -x 1 --out_dir "$d" > "$CSCRATCH/own.txt" 2>&1 && return 1
    cat "$CSCRATCH/own.txt"
    grep -q "^error: --out_dir .*/own already holds 1 checkpoint(s)" "$CSCRATCH/own.txt" || return 1
    "$T" "${CTINY[@]}" -x 100000000 --out_dir "$d" --resume 1 -o "$d/log.jsonl" > /dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 600); do grep -q '"kind":"step"' "$d/log.jsonl" 2>/dev/null && break; sleep 0.1; done
    "$T" "${CTINY[@]}" -x 1 --out_dir "$d" --resume 1 > "$CSCRATCH/own2.txt" 2>&1; local rc=$?
    kill -9 $pid; wait $pid 2>/dev/null
    cat "$CSCRATCH/own2.txt"
    [ $rc -ne 0 ] && grep -q "^error: --out_dir .*/own is in use by another run (process $pid holds" "$CSCRATCH/own2.txt"
  }
  run_test cuda/train_emu_out_dir_one_run pass cuda_out_dir
  # the newest checkpoint damaged: resume falls back to the next older one, and continues bitwise
  cuda_checksum() {
    local d="$CSCRATCH/sum" && rm -rf "$d"
    "$T" "${CTINY[@]}" -x 4 --ckpt_every 1 --keep_ckpts 5 --out_dir "$d" -o "$CSCRATCH/sumfull.jsonl" >/dev/null || return 1
    cp "$CSCRATCH/sumfull.jsonl" "$CSCRATCH/sumpart.jsonl" && rm "$d/ckpt_00000004.bin"
    printf '\x55' | dd of="$d/ckpt_00000003.bin" bs=1 seek=20000 conv=notrunc status=none
    "$T" "${CTINY[@]}" -x 4 --ckpt_every 1 --keep_ckpts 5 --out_dir "$d" -o "$CSCRATCH/sumpart.jsonl" --resume 1 > "$CSCRATCH/sum.txt" || return 1
    grep resume "$CSCRATCH/sum.txt"
    grep -q "ckpt_00000003.bin: checksum mismatch (the file is damaged); renamed" "$CSCRATCH/sum.txt" &&
      grep -q "^resume: .*ckpt_00000002.bin (step 2" "$CSCRATCH/sum.txt" || return 1
    $CPY dev/compare_logs.py "$CSCRATCH/sumfull.jsonl" "$CSCRATCH/sumpart.jsonl"
  }
  run_test cuda/train_emu_checksum_fallback pass cuda_checksum
  # SIGTERM in a long step (2 micro-steps, 1.5 s before each): stops at a micro-step boundary,
  # saves the last completed step; the resumed run continues bitwise
  cuda_signal_mid_step() {
    local d="$CSCRATCH/long" && rm -rf "$d" && mkdir -p "$d"
    "$T" "${CTINY[@]}" -x 2 -d 64 -o "$CSCRATCH/longfull.jsonl" >/dev/null || return 1
    MIXLN_TEST_SLOW_MICRO_MS=1500 "$T" "${CTINY[@]}" -x 2 -d 64 --out_dir "$d" -o "$d/log.jsonl" > "$d/out.txt" 2>&1 &
    local pid=$!
    for _ in $(seq 1200); do grep -q '"kind":"step"' "$d/log.jsonl" 2>/dev/null && break; sleep 0.1; done
    sleep 1; kill -TERM $pid; wait $pid || { echo "exit $?"; cat "$d/out.txt"; return 1; }
    grep -E "stopped|received" "$d/out.txt"
    grep -q "^step 2 stopped after [0-9] of 2 micro-steps" "$d/out.txt" &&
      grep -q "received SIGTERM at step 1: wrote checkpoint" "$d/out.txt" || return 1
    "$T" "${CTINY[@]}" -x 2 -d 64 --out_dir "$d" -o "$d/log.jsonl" --resume 1 > /dev/null || return 1
    $CPY dev/compare_logs.py "$CSCRATCH/longfull.jsonl" "$d/log.jsonl"
  }
  run_test cuda/train_emu_signal_stops_long_step pass cuda_signal_mid_step
  run_test cuda/train_emu_log_dev_full 'fail:^error: writing log /dev/full failed: No space left on device; the log ends with its last complete line' \
    "$T" "${CTINY[@]}" -x 2 -o /dev/full
  cuda_skip_limit() {   # NaN weights (a checkpoint rewritten as version 1, every parameter NaN)
    rm -rf "$CSCRATCH/nanw" && "$T" "${CTINY[@]}" -x 1 --out_dir "$CSCRATCH/nanw" >/dev/null || return 1
    $CPY - "$CSCRATCH/nanw/ckpt_00000001.bin" "$CSCRATCH/nanw.bin" <<'PYEOF' || return 1
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
struct.pack_into("<i", b, 4, 1)
n = struct.unpack_from("<Q", b, 80)[0]
b[1024:1024 + 4 * n] = struct.pack("<I", 0x7FC00000) * n
open(sys.argv[2], "wb").write(bytes(b[:-8]))
PYEOF
    "$T" -e "$CSCRATCH/nanw.bin" -b 2 -t 16 -i "$CSCRATCH/train_*.bin" -n 0 -v 0 -x 50 --skip_limit 2
  }
  run_test cuda/train_emu_skip_limit 'fail:^error: steps 1 to 2 were all skipped for a non-finite loss or gradient \(--skip_limit 2\)' cuda_skip_limit
  run_test cuda/bad_flag_lr_huge   'fail:^error: --lr value 1e50 is out of range' "$T" "${CTINY[@]}" --lr 1e50
  run_test cuda/bad_size_vocab     'fail:^error: --vocab must be in \[2, 16777216\], got 2147483647' "$T" "${CTINY[@]}" --vocab 2147483647
else
  skip_test cuda/train_emu "emulated build absent (no CUDA headers)"
fi

# kernel tests of the trainer's kernel families (dev/test/test_<name>.cu), in the three
# emulated flavours as tests/kernels.sh runs its own (TSan with ASLR off where setarch can)
CKTESTS="attention classifier flash_attention activation embedding rope matmul adamw gradnorm nccl"
CK_TSAN=()
if setarch "$(uname -m)" -R true >/dev/null 2>&1; then CK_TSAN=(setarch "$(uname -m)" -R); fi
for t in $CKTESTS; do
  for flavor in gxx tsan asan; do
    bin="${BUILD:-build}/kernels/$flavor/test_$t"
    if [ ! -f "${CUDA_HOME:-/usr/local/cuda}/include/cuda_bf16.h" ] ||
       { [ $flavor != gxx ] && ! command -v clang++-14 >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; }; then
      skip_test "cuda/kernels/$t/$flavor" "no toolchain for the $flavor build"; continue
    fi
    if [ $flavor = tsan ]; then
      TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1 exitcode=66} run_test "cuda/kernels/$t/$flavor" pass "${CK_TSAN[@]}" "$bin"
    else
      ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:exitcode=67} run_test "cuda/kernels/$t/$flavor" pass "$bin"
    fi
  done
  if [ -x "${BUILD:-build}/kernels/nvcc/test_$t" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
      run_test "cuda/kernels/$t/gpu" pass "${BUILD:-build}/kernels/nvcc/test_$t"
    else
      run_test "cuda/kernels/$t/nvcc-nogpu" pass bash -c \
        'out=$("$1" 2>&1); rc=$?; echo "$out"; echo "exit status $rc"; [ $rc -eq 77 ] && grep -q "^SKIP .*no CUDA device" <<<"$out"' \
        _ "${BUILD:-build}/kernels/nvcc/test_$t"
    fi
  fi
done

# out_has TEXT REGEX...: print TEXT; succeed if every REGEX matches a line of it (the checks
# of the dev/ scripts below, which read profiler CSVs)
out_has() {
  local out=$1 re; shift
  echo "$out"
  for re in "$@"; do grep -q -- "$re" <<<"$out" || { echo "missing: $re"; return 1; }; done
}

# dev/nsys_gaps.py (gpu_check's timeline of a step) on a synthetic trace worked out by hand:
# AdamW ends at 1, 11, 21, 31 us; --skip 1 keeps the steps (11, 21] and (21, 31] us; in each,
# two overlapping kernels 0.5-3.0 us into the step (busy 2.5 us, counted once), one at 9.0-9.5,
# AdamW at 9.6-10.0: busy 3.4 of 10 us, gaps 0.5 and 0.1 us (< 5 us) and 6.0 us
nsys_gaps_check() {
  { echo "Generating SQLite file notice"
    echo '"Start (ns)","Duration (ns)","CorrId","Name"'
    echo '600,400,1,"void adamw_kernel<float, float>(...)"'
    for base in 10000 20000 30000; do
      echo "$((base + 1500)),1500,2,\"k1\""
      echo "$((base + 2500)),1500,3,\"k2, overlapping\""
      echo "$((base + 10000)),500,4,\"k3\""
      echo "$((base + 10600)),400,5,\"void adamw_kernel<float, float>(...)\""
    done; } > "$CSCRATCH/trace.csv"
  out=$($CPY dev/nsys_gaps.py "$CSCRATCH/trace.csv" --skip 1) || return 1
  out_has "$out" "over 2 step(s): span 0.010 ms/step, busy 0.003 ms (34.0%), idle 0.007 ms: 2 gaps < 5 us (0.001 ms), 1 longer (0.006 ms)" \
    "^ *6.0 us  after k2, overlapping  before k3"
}
run_test cuda/nsys_gaps_synthetic pass nsys_gaps_check
run_test cuda/nsys_gaps_no_header 'fail:^nsys_gaps: no cuda_gpu_trace CSV header' $CPY dev/nsys_gaps.py dev/model.py

# dev/ncu_limits.py (gpu_check's flash-attention limiters) on a hand-made ncu CSV: two launches
# of one kernel averaged (times in ns with a thousands separator, printed in us), stall
# reasons sorted with their shares of the sum, the top 2 kept, a metric it does not know ignored
ncu_csv() {
  { echo '==PROF== Connected to process 1'
    echo '"ID","Kernel Name","gpu__time_duration.sum","sm__warps_active.avg.pct_of_peak_sustained_active","smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio","smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio","smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio","some__other_metric"'
    echo '"","","nsecond","%","ratio","ratio","ratio","x"'
    echo '"0","fwd","200,000","20","1.0","3.0","0.5","7"'
    echo '"1","fwd","202,000","22","1.4","2.6","0.5","7"'; } > "$CSCRATCH/limits.csv"
}
ncu_limits_check() {
  ncu_csv
  out=$($CPY dev/ncu_limits.py "$CSCRATCH/limits.csv" --top-stalls 2) || return 1
  out_has "$out" "^fwd  (2 launches)$" "^  time/launch 201.0 us, achieved occupancy % 21.0$" \
    "^  stalls (cycles per issued instruction, 4.50 in all): long_scoreboard 2.80 (62%), barrier 1.20 (27%)$"
}
run_test cuda/ncu_limits_synthetic pass ncu_limits_check
# dev/ncu_summary.py (gpu_check's per-kernel table) on the same CSV: 402 us over 2 steps
ncu_summary_check() {
  ncu_csv
  out=$($CPY dev/ncu_summary.py "$CSCRATCH/limits.csv" --steps 2) || return 1
  out_has "$out" "^2 launches, 0.20 ms of kernel time per step (2 step(s) profiled)$" "^    0.201 100.0%        2  fwd$"
}
run_test cuda/ncu_summary_synthetic pass ncu_summary_check
run_test cuda/ncu_limits_no_header 'fail:^error: .*: no ncu CSV header' $CPY dev/ncu_limits.py dev/model.py

# nvcc builds: on a GPU they run the same checks for real; without one they must say so
if [ -x "$CB/train_gpt_nvcc" ] && [ -x "$CB/test_gpt_nvcc" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    run_test cuda/test_gpt_gpu_fp32 pass "$CB/test_gpt_nvcc" --precision fp32
    run_test cuda/test_gpt_gpu_bf16 pass "$CB/test_gpt_nvcc" --precision bf16
    run_test cuda/test_gpt_gpu_bf16_matmul_attention pass "$CB/test_gpt_nvcc" --precision bf16 --attention matmul
    run_test cuda/test_gpt_gpu_pure_bf16 pass "$CB/test_gpt_nvcc" --precision pure_bf16
  else
    run_test cuda/train_nvcc_nogpu 'fail:^error: no CUDA device found \(cudaGetDeviceCount' "$CB/train_gpt_nvcc" -p gpt2-124m -i "$CSCRATCH/train_*.bin"
    run_test cuda/test_nvcc_nogpu pass bash -c \
      'out=$("$1" 2>&1); rc=$?; echo "$out"; echo "exit status $rc"; [ $rc -eq 77 ] && grep -q "^SKIP test_gpt_cuda: no CUDA device" <<<"$out"' \
      _ "$CB/test_gpt_nvcc"
    skip_test cuda/test_gpt_gpu "no GPU (nvidia-smi -L lists none)"
    # scripts/gpu_check.sh works up to the device part: builds, ptxas table, clean no-device exits, skip (77)
    run_test cuda/gpu_check_nogpu pass bash -c \
      'OUT_DIR="$1" bash scripts/gpu_check.sh; rc=$?; echo "exit status $rc"; [ $rc -eq 77 ] && grep -q "^SKIP device checks" "$1/summary.txt"' \
      _ "$CSCRATCH/gpu_check"
  fi
else
  skip_test cuda/nvcc "nvcc builds absent (no nvcc)"
fi
