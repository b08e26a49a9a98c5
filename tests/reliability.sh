# shellcheck shell=bash
# Reliability suite (checkpoints, bit-exact resume, signals, NaN guards,
# hardened parsers, disk errors). Sourced by scripts/run_tests.sh.
B=build
PY=/usr/bin/python3
RS=$(mktemp -d /tmp/mixln_rel_XXXXXX)
$PY dev/random_shard.py $RS/train_000.bin --tokens 30000 --vocab 300 --seed 3
$PY dev/random_shard.py $RS/train_001.bin --tokens 7000 --vocab 300 --seed 4
$PY dev/random_shard.py $RS/val_000.bin --tokens 3000 --vocab 300 --seed 5
# a tiny Mix-LN model, shuffled data over two shards, accumulation, val, samples, clipping, decay
# (an array, so the shard globs reach the trainer unexpanded)
REL=(--arch llama --n_layer 4 --n_head 2 --d_model 32 --ffn 64 --vocab 300 --max_seq_len 32 -k 1 -b 4 -t 32 -d 256
     -i "$RS/train_*.bin" -j "$RS/val_*.bin" --shuffle_seed 7 -x 24 -u 4 -l 3e-3 -c 0.1 -v 6 -m 2 -s 8 -n 4 --threads 2)

# the uninterrupted reference run (checkpoints every 4 steps, all kept)
rel_reference() { $B/train_gpt "${REL[@]}" --out_dir $RS/ref --ckpt_every 4 --keep_ckpts 100 -o $RS/ref/log.jsonl; }
mkdir -p $RS/ref
run_test rel/reference_run pass rel_reference

# bit-exact resume: continue from the step-12 checkpoint of the reference run
rel_resume() {
  mkdir -p $RS/res && cp $RS/ref/ckpt_00000012.bin $RS/ref/log.jsonl $RS/res/ || return 1
  $B/train_gpt "${REL[@]}" --out_dir $RS/res --ckpt_every 4 -o $RS/res/log.jsonl --resume 1 | tee $RS/res/out.txt || return 1
  grep -q "resume: .*ckpt_00000012.bin (step 12" $RS/res/out.txt || { echo "did not resume from step 12"; return 1; }
  $PY dev/compare_logs.py $RS/ref/log.jsonl $RS/res/log.jsonl
}
run_test rel/resume_bitwise pass rel_resume
# the comparison can fail: a run with another data order differs
rel_neg_compare() {
  $B/train_gpt "${REL[@]}" --shuffle_seed 8 -x 6 -o $RS/other.jsonl >/dev/null || return 0
  $PY dev/compare_logs.py $RS/ref/log.jsonl $RS/other.jsonl
}
run_test rel/neg_compare_differs 'fail:logs differ' rel_neg_compare
# checkpoint keeping: newest K plus milestones
rel_keep() {
  $B/train_gpt "${REL[@]}" -x 12 -v 0 -n 0 --out_dir $RS/keep --ckpt_every 2 --keep_ckpts 2 --milestone_every 4 >/dev/null || return 1
  got=$(cd $RS/keep && ls ckpt_*.bin | tr '\n' ' ')
  want="ckpt_00000004.bin ckpt_00000008.bin ckpt_00000010.bin ckpt_00000012.bin "
  [ "$got" = "$want" ] || { echo "kept: '$got', expected '$want'"; return 1; }
  echo "kept $got"
}
run_test rel/keep_last_and_milestones pass rel_keep

# refusals on resume: config mismatches name the field
# (the copy only when the reference run ran: ONLY may have filtered it out)
mkdir -p $RS/mis && { [ ! -f $RS/ref/ckpt_00000012.bin ] || cp $RS/ref/ckpt_00000012.bin $RS/mis/; }
run_test rel/resume_mismatch_k     'fail:^error: .*ckpt_00000012\.bin: checkpoint has post_ln_layers=1 but the flags say 2' \
  $B/train_gpt "${REL[@]}" -k 2 --out_dir $RS/mis --resume 1
run_test rel/resume_mismatch_width 'fail:^error: .*checkpoint has d_model=32 but the flags say 48' \
  $B/train_gpt "${REL[@]}" --d_model 48 --out_dir $RS/mis --resume 1
run_test rel/resume_mismatch_arch  'fail:^error: .*checkpoint has arch=llama but the flags say gpt' \
  $B/train_gpt "${REL[@]}" --arch gpt --out_dir $RS/mis --resume 1
run_test rel/resume_mismatch_batch 'fail:^error: .*checkpoint has batch_size=4 but the flags say 8' \
  $B/train_gpt "${REL[@]}" -b 8 -d 256 --out_dir $RS/mis --resume 1

# SIGKILL while a checkpoint is being written, at several moments; then resume to
# the end and compare with the uninterrupted run
wait_for() {   # wait_for SECONDS COMMAND...: poll until the command succeeds
  local end=$((SECONDS + $1)); shift
  until "$@" 2>/dev/null; do [ $SECONDS -ge $end ] && return 1; sleep 0.02; done
}
writing() { compgen -G "$RS/kill/ckpt_*.bin.tmp.$1" >/dev/null; }   # process $1 is writing a checkpoint
not_writing() { ! writing "$1"; }
rel_sigkill() {
  mkdir -p $RS/kill
  local round pid
  for round in 1 2 3 4; do
    MIXLN_TEST_SLOW_CKPT_MS=150 $B/train_gpt "${REL[@]}" --out_dir $RS/kill --ckpt_every 2 --keep_ckpts 2 -o $RS/kill/log.jsonl \
      --resume 1 > $RS/kill/round$round.txt 2>&1 &
    pid=$!
    wait_for 60 writing $pid || { echo "round $round: no checkpoint write seen"; kill -9 $pid; return 1; }
    case $round in
      1) ;;                                                   # at the start of a write
      2) sleep 0.1 ;;                                         # late in the write
      3) wait_for 60 not_writing $pid; wait_for 60 writing $pid ;;   # in the next write, after progress
      4) wait_for 60 not_writing $pid ;;                      # just after a write completed
    esac
    kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
    echo "round $round: killed; complete checkpoints: $(cd $RS/kill && ls ckpt_*.bin 2>/dev/null | tr '\n' ' ')" \
         "unfinished: $(cd $RS/kill && ls *.tmp.* 2>/dev/null | tr '\n' ' ')"
  done
  $B/train_gpt "${REL[@]}" --out_dir $RS/kill --ckpt_every 2 --keep_ckpts 2 -o $RS/kill/log.jsonl --resume 1 > $RS/kill/final.txt 2>&1 ||
    { cat $RS/kill/final.txt; return 1; }
  grep "resume" $RS/kill/final.txt
  ! compgen -G "$RS/kill/*.tmp.*" >/dev/null || { echo "unfinished checkpoint files left behind"; return 1; }
  $PY dev/compare_logs.py $RS/ref/log.jsonl $RS/kill/log.jsonl
}
run_test rel/sigkill_during_checkpoint pass rel_sigkill

# SIGTERM / SIGINT: finish the step, checkpoint, exit 0 with a resume hint; the resumed run matches
rel_signal() {
  local sig=$1 d=$RS/sig_$1
  mkdir -p $d
  $B/train_gpt "${REL[@]}" --out_dir $d -o $d/log.jsonl > $d/out.txt 2>&1 &
  local pid=$!
  wait_for 60 grep -q '"step":2' $d/log.jsonl || { kill -9 $pid; echo "training did not start"; return 1; }
  kill -$sig $pid
  wait $pid; local rc=$?
  cat $d/out.txt | tail -3
  [ $rc -eq 0 ] || { echo "exit code $rc after SIG$sig"; return 1; }
  grep -q "received SIG$sig at step [0-9]*: wrote checkpoint\|resume with the same command plus --resume 1" $d/out.txt || return 1
  $B/train_gpt "${REL[@]}" --out_dir $d -o $d/log.jsonl --resume 1 > $d/out2.txt 2>&1 || { cat $d/out2.txt; return 1; }
  $PY dev/compare_logs.py $RS/ref/log.jsonl $d/log.jsonl
}
run_test rel/sigterm_checkpoint_resume pass rel_signal TERM
run_test rel/sigint_checkpoint_resume  pass rel_signal INT

# non-finite guard with an injected NaN gradient
rel_nan_skip() {
  MIXLN_TEST_NAN_AT=3 $B/train_gpt "${REL[@]}" -x 8 -v 0 -n 0 --nonfinite skip -o $RS/nan.jsonl || return 1
  $PY - $RS/nan.jsonl <<'PYEOF'
import json, math, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"step"' in l and '"kind":"step"' in l]
bad = [r["step"] for r in steps if r.get("skipped")]
assert bad == [3], f"skipped steps {bad}, expected [3]"
assert steps[3]["grad_norm"] is None, steps[3]
assert all(math.isfinite(r["loss"]) for r in steps) and len(steps) == 8
print("skipped exactly step 3; training continued to step", steps[-1]["step"])
PYEOF
}
run_test rel/nan_skip pass rel_nan_skip
run_test rel/nan_stop 'fail:^error: non-finite loss or gradient at step 4; stopped \(last good state saved to .*ckpt_00000003\.bin\)' \
  env MIXLN_TEST_NAN_AT=3 $B/train_gpt "${REL[@]}" -x 8 -v 0 -n 0 --nonfinite stop --out_dir $RS/nanstop
run_test rel/nan_stop_checkpoint_loads pass $B/train_gpt -e $RS/nanstop/ckpt_00000003.bin -b 4 -t 32 -x 1 -i "$RS/train_*.bin" -n 0 -v 0

# disk full: a small tmpfs holds one checkpoint, not two; the write fails with a
# one-line error and the previous checkpoint stays intact
rel_disk_full() {
  local d=$RS/full
  mkdir -p $d
  mount -t tmpfs -o size=1400k tmpfs $d 2>/dev/null || { echo "SKIP: cannot mount a tmpfs"; return 0; }
  $B/train_gpt "${REL[@]}" -x 4 -v 0 -n 0 --out_dir $d --ckpt_every 2 --keep_ckpts 1 > $RS/full.txt 2>&1; local rc=$?
  cat $RS/full.txt | grep -E "checkpoint|error"
  local ok=1
  [ $rc -ne 0 ] || { echo "expected a non-zero exit when the last checkpoint cannot be written"; ok=0; }
  grep -q "^error: checkpoint at step 4 not saved: writing .*ckpt_00000004.bin failed: No space left on device (the previous file, if any, is unchanged)" $RS/full.txt || ok=0
  [ -f $d/ckpt_00000002.bin ] && ! compgen -G "$d/*.tmp.*" >/dev/null || { echo "previous checkpoint missing or temp file left"; ok=0; }
  $B/train_gpt -e $d/ckpt_00000002.bin -b 4 -t 32 -x 1 -i "$RS/train_*.bin" -n 0 -v 0 >/dev/null || { echo "previous checkpoint unreadable"; ok=0; }
  umount $d
  [ $ok -eq 1 ]
}
if mount -t tmpfs -o size=4k tmpfs $RS 2>/dev/null; then umount $RS; run_test rel/disk_full_keeps_previous pass rel_disk_full
else skip_test rel/disk_full_keeps_previous "mounting a tmpfs needs root"; fi
run_test rel/unwritable_log 'fail:^error: cannot open /nonexistent/dir/log\.jsonl' $B/train_gpt "${REL[@]}" -x 1 -o /nonexistent/dir/log.jsonl

# --- one run per --out_dir (a lock, run ids, no mixing); checksums; every header field compared
# on resume; --init_from with --resume. A small model, 1 thread (RT: the flags; RD: the data)
RT=(--arch llama --n_layer 2 --n_head 2 --d_model 32 --ffn 64 --vocab 300 --max_seq_len 32 -k 1 -b 2 -t 16 -u 1 -v 0 -n 0
    --threads 1 -i "$RS/train_*.bin")
# a fresh run into a folder holding another run's checkpoints is refused (its own new ones
# would be pruned against the other run's, and a later --resume 1 would continue the other run)
rel_fresh_refused() {
  rm -rf $RS/used && $B/train_gpt "${RT[@]}" -x 30 --out_dir $RS/used --ckpt_every 10 >/dev/null || return 1
  $B/train_gpt "${RT[@]}" -x 6 --out_dir $RS/used --ckpt_every 2
}
run_test rel/fresh_run_into_used_out_dir 'fail:^error: --out_dir .*/used already holds 3 checkpoint\(s\) \(newest .*ckpt_00000030\.bin\): continue that run with --resume 1' rel_fresh_refused
# --overwrite 1 deletes them first, and the new run keeps its own checkpoints
rel_overwrite() {
  $B/train_gpt "${RT[@]}" -x 6 --out_dir $RS/used --ckpt_every 2 --overwrite 1 | grep -v '^step' || return 1
  got=$(cd $RS/used && ls ckpt_*.bin | tr '\n' ' ')
  [ "$got" = "ckpt_00000002.bin ckpt_00000004.bin ckpt_00000006.bin " ] || { echo "kept: '$got'"; return 1; }
}
run_test rel/overwrite_deletes_other_run pass rel_overwrite
# pruning deletes only the run's own checkpoints: another run's older checkpoint in the
# folder (copied in) survives a resumed run that keeps 1
rel_prune_own() {
  rm -rf $RS/own $RS/other
  $B/train_gpt "${RT[@]}" -x 1 --out_dir $RS/other >/dev/null || return 1
  $B/train_gpt "${RT[@]}" -x 4 --out_dir $RS/own --ckpt_every 2 --keep_ckpts 1 >/dev/null || return 1
  cp $RS/other/ckpt_00000001.bin $RS/own/
  $B/train_gpt "${RT[@]}" -x 8 --out_dir $RS/own --ckpt_every 2 --keep_ckpts 1 --resume 1 | grep -E 'resume|wrote' || return 1
  got=$(cd $RS/own && ls ckpt_*.bin | tr '\n' ' ')
  [ "$got" = "ckpt_00000001.bin ckpt_00000008.bin " ] || { echo "kept: '$got' (expected the other run's step 1 and ours, 8)"; return 1; }
}
run_test rel/prune_only_own_run pass rel_prune_own
# a second trainer on a folder in use: one-line error; a SIGKILLed run does not block the next
rel_lock() {
  rm -rf $RS/lock && mkdir -p $RS/lock
  $B/train_gpt "${RT[@]}" -x 100000000 --out_dir $RS/lock -o $RS/lock/log.jsonl > $RS/lock/first.txt 2>&1 &
  local pid=$!
  wait_for 60 grep -q '"kind":"step"' $RS/lock/log.jsonl || { kill -9 $pid; echo "first run did not start"; return 1; }
  $B/train_gpt "${RT[@]}" -x 2 --out_dir $RS/lock --resume 1 > $RS/lock/second.txt 2>&1; local rc=$?
  kill -9 $pid; wait $pid 2>/dev/null
  cat $RS/lock/second.txt
  [ $rc -ne 0 ] && [ "$(wc -l < $RS/lock/second.txt)" = 1 ] || { echo "second writer not refused in one line"; return 1; }
  grep -q "^error: --out_dir .*/lock is in use by another run (process $pid holds .*/lock/train.lock)" $RS/lock/second.txt || return 1
  $B/train_gpt "${RT[@]}" -x 2 --out_dir $RS/lock --resume 1 > $RS/lock/third.txt 2>&1 || { cat $RS/lock/third.txt; return 1; }
  echo "after SIGKILL of $pid the next run took the folder"
}
run_test rel/out_dir_lock pass rel_lock
# every config field of the header must match on resume (here: norm_eps, rope_theta, emb_std)
run_test rel/resume_mismatch_norm_eps  'fail:^error: .*ckpt_00000012\.bin: checkpoint has norm_eps=9\.99999997e-07 but the flags say 9\.99999975e-06' \
  $B/train_gpt "${REL[@]}" --norm_eps 1e-5 --out_dir $RS/mis --resume 1
run_test rel/resume_mismatch_rope_theta 'fail:^error: .*ckpt_00000012\.bin: checkpoint has rope_theta=10000 but the flags say 500000' \
  $B/train_gpt "${REL[@]}" --rope_theta 500000 --out_dir $RS/mis --resume 1
run_test rel/resume_mismatch_emb_std   'fail:^error: .*ckpt_00000012\.bin: checkpoint has emb_std=0\.0199999996 but the flags say 0\.5' \
  $B/train_gpt "${REL[@]}" --emb_std 0.5 --out_dir $RS/mis --resume 1
# checksums: bytes flipped in the middle of the newest checkpoint; resume falls back to the
# next older one (saying so) and the run still matches an uninterrupted one bit for bit
rel_checksum() {
  rm -rf $RS/sum $RS/sumref && mkdir -p $RS/sum
  $B/train_gpt "${RT[@]}" -x 8 --out_dir $RS/sum --ckpt_every 2 --keep_ckpts 5 -o $RS/sumref.jsonl >/dev/null || return 1
  cp $RS/sumref.jsonl $RS/sum/log.jsonl && mv $RS/sum/ckpt_00000008.bin $RS/sum/final.bin
  printf '\x55\xaa' | dd of=$RS/sum/ckpt_00000006.bin bs=1 seek=30000 conv=notrunc status=none
  $B/train_gpt "${RT[@]}" -x 8 --out_dir $RS/sum --ckpt_every 2 --keep_ckpts 5 -o $RS/sum/log.jsonl --resume 1 > $RS/sum/out.txt 2>&1 ||
    { cat $RS/sum/out.txt; return 1; }
  grep resume $RS/sum/out.txt
  grep -q "^resume: .*ckpt_00000006.bin: checksum mismatch (the file is damaged); renamed to .*ckpt_00000006.bin.damaged" $RS/sum/out.txt &&
    grep -q "^resume: .*ckpt_00000004.bin (step 4" $RS/sum/out.txt || { echo "no fallback to step 4"; return 1; }
  $PY dev/compare_logs.py $RS/sumref.jsonl $RS/sum/log.jsonl
}
run_test rel/checksum_fallback pass rel_checksum
run_test rel/checksum_names_file 'fail:^error: .*ckpt_00000006\.bin\.damaged: checksum mismatch \(stored [0-9a-f]+, computed [0-9a-f]+\): the file is damaged' \
  $B/train_gpt "${RT[@]}" -x 1 -e $RS/sum/ckpt_00000006.bin.damaged
# a version-1 checkpoint (no run id, no checksum) still loads: the step-4 one rewritten as version 1
rel_v1_loads() {
  $PY - $RS/sum/ckpt_00000004.bin $RS/v1.bin <<'PYEOF' || return 1
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
assert struct.unpack_from("<i", b, 4)[0] == 2
struct.pack_into("<i", b, 4, 1)
b[46 * 4:48 * 4] = bytes(8)
open(sys.argv[2], "wb").write(bytes(b[:-8]))
PYEOF
  $B/train_gpt "${RT[@]}" -x 1 -e $RS/v1.bin | grep "init from"
}
run_test rel/checkpoint_version1_loads pass rel_v1_loads
# --init_from X --resume 1 --out_dir D: from X while D has no checkpoint, then from D
rel_init_resume() {
  rm -rf $RS/warm
  local cmd=($B/train_gpt -e $RS/sum/ckpt_00000004.bin -b 2 -t 16 -u 1 -v 0 -n 0 --threads 1 -i "$RS/train_*.bin"
             --out_dir $RS/warm --ckpt_every 2 --resume 1)
  "${cmd[@]}" -x 2 > $RS/warm1.txt || { cat $RS/warm1.txt; return 1; }
  "${cmd[@]}" -x 4 > $RS/warm2.txt || { cat $RS/warm2.txt; return 1; }
  grep -E "resume|init from" $RS/warm1.txt $RS/warm2.txt
  grep -q "resume: no checkpoint in .*/warm, starting from --init_from" $RS/warm1.txt && grep -q "^init from" $RS/warm1.txt &&
    grep -q "holds a checkpoint; --init_from .* is not used" $RS/warm2.txt && grep -q "^resume: .*ckpt_00000002.bin (step 2" $RS/warm2.txt
}
run_test rel/init_from_then_resume pass rel_init_resume

# signals within a long step (20 micro-steps of 200 ms, MIXLN_TEST_SLOW_MICRO_MS): the first
# SIGTERM stops at the next micro-step boundary, checkpoints the last completed step and exits
# 0 within a second; the resumed run matches an uninterrupted one bit for bit
rel_signal_mid_step() {
  local d=$RS/long && rm -rf $d $RS/long_ref.jsonl && mkdir -p $d
  $B/train_gpt "${RT[@]}" -x 3 -d 640 -o $RS/long_ref.jsonl >/dev/null || return 1
  MIXLN_TEST_SLOW_MICRO_MS=200 $B/train_gpt "${RT[@]}" -x 3 -d 640 --out_dir $d -o $d/log.jsonl > $d/out.txt 2>&1 &
  local pid=$!
  wait_for 60 grep -q '"kind":"step"' $d/log.jsonl || { kill -9 $pid; echo "no step done"; return 1; }
  sleep 1
  local t0=$SECONDS
  kill -TERM $pid; wait $pid; local rc=$?
  cat $d/out.txt | grep -v '^step  '
  [ $rc -eq 0 ] && [ $((SECONDS - t0)) -le 2 ] || { echo "exit $rc after $((SECONDS - t0)) s"; return 1; }
  grep -q "^step 2 stopped after [0-9]* of 20 micro-steps" $d/out.txt &&
    grep -q "received SIGTERM at step 1: wrote checkpoint .*ckpt_00000001.bin" $d/out.txt || return 1
  $B/train_gpt "${RT[@]}" -x 3 -d 640 --out_dir $d -o $d/log.jsonl --resume 1 > $d/out2.txt 2>&1 || { cat $d/out2.txt; return 1; }
  $PY dev/compare_logs.py $RS/long_ref.jsonl $d/log.jsonl
}
run_test rel/signal_stops_long_step pass rel_signal_mid_step
# a second signal exits at once (here: while the first one's checkpoint is being written, slowly)
rel_second_signal() {
  local d=$RS/twice && rm -rf $d && mkdir -p $d
  MIXLN_TEST_SLOW_CKPT_MS=20000 $B/train_gpt "${RT[@]}" -x 100000000 --out_dir $d -o $d/log.jsonl > $d/out.txt 2>&1 &
  local pid=$!
  wait_for 60 grep -q '"kind":"step"' $d/log.jsonl || { kill -9 $pid; echo "no step done"; return 1; }
  kill -INT $pid
  wait_for 30 compgen -G "$d/ckpt_*.bin.tmp.$pid" || { kill -9 $pid; echo "no checkpoint write"; return 1; }
  local t0=$SECONDS
  kill -INT $pid; wait $pid; local rc=$?
  cat $d/out.txt | grep -v '^step  '
  [ $rc -ne 0 ] && [ $((SECONDS - t0)) -le 2 ] || { echo "exit $rc after $((SECONDS - t0)) s"; return 1; }
  grep -q "received a second stop signal: exiting at once" $d/out.txt
}
run_test rel/second_signal_exits_at_once pass rel_second_signal
# SIGTERM without --out_dir: nothing saved, so the run did not finish: non-zero, and it says so
rel_signal_no_out_dir() {
  $B/train_gpt "${RT[@]}" -x 100000000 -o $RS/noout.jsonl > $RS/noout.txt 2>&1 &
  local pid=$!
  wait_for 60 grep -q '"kind":"step"' $RS/noout.jsonl || { kill -9 $pid; echo "no step done"; return 1; }
  kill -TERM $pid; wait $pid; local rc=$?
  tail -1 $RS/noout.txt
  [ $rc -ne 0 ] && grep -q "received SIGTERM at step [0-9]*: no --out_dir, so nothing is saved and the run did not finish" $RS/noout.txt
}
run_test rel/sigterm_without_out_dir_fails pass rel_signal_no_out_dir
# a log on a full disk (/dev/full; a 64 KiB tmpfs that fills up after some steps): reported,
# no partial line, the last completed step checkpointed, exit 1; the run resumes after its last
# complete line once there is space
rel_log_dev_full() {
  rm -rf $RS/lf
  $B/train_gpt "${RT[@]}" -x 5 --out_dir $RS/lf -o /dev/full
}
run_test rel/log_write_fails_dev_full 'fail:^error: writing log /dev/full failed: No space left on device; the log ends with its last complete line; the run stops' rel_log_dev_full
rel_log_full_disk() {
  local m=$RS/logfs d=$RS/lfull
  rm -rf $d $RS/lfull_ref.jsonl && mkdir -p $m
  mount -t tmpfs -o size=64k tmpfs $m || return 1
  dd if=/dev/zero of=$m/fill bs=1k count=56 status=none
  $B/train_gpt "${RT[@]}" -x 40 --out_dir $d -o $m/log.jsonl > $RS/lfull.txt 2>&1; local rc=$?
  grep -E "error|stopping|checkpoint" $RS/lfull.txt
  local ok=1
  [ $rc -eq 1 ] || { echo "exit $rc"; ok=0; }
  [ "$(tail -c 1 $m/log.jsonl | od -An -c | tr -d ' ')" = '\n' ] || { echo "partial last line"; ok=0; }
  $PY -c "import json,sys; [json.loads(l) for l in open(sys.argv[1])]" $m/log.jsonl || ok=0
  local n; n=$(grep -c '"kind":"step"' $m/log.jsonl)
  grep -q "stopping at step $((n + 1)) because the log could not be written: wrote checkpoint .*ckpt_0*$((n + 1)).bin" $RS/lfull.txt || ok=0
  rm $m/fill
  $B/train_gpt "${RT[@]}" -x 40 --out_dir $d -o $m/log.jsonl --resume 1 > $RS/lfull2.txt 2>&1 || { cat $RS/lfull2.txt; ok=0; }
  $B/train_gpt "${RT[@]}" -x 40 -o $RS/lfull_ref.jsonl > /dev/null || ok=0
  $PY dev/compare_logs.py --from-step $((n + 1)) $RS/lfull_ref.jsonl $m/log.jsonl || ok=0
  umount $m
  [ $ok -eq 1 ]
}
if mount -t tmpfs -o size=4k tmpfs $RS 2>/dev/null; then umount $RS; run_test rel/log_write_fails_full_disk pass rel_log_full_disk
else skip_test rel/log_write_fails_full_disk "mounting a tmpfs needs root"; fi
# --nonfinite skip on a model whose weights are NaN: stops after --skip_limit consecutive
# skipped steps with a clear message and exit 1 (the weights: a checkpoint's, set to NaN)
rel_skip_limit() {
  $B/train_gpt "${RT[@]}" -x 1 --out_dir $RS/nanw >/dev/null || return 1
  $PY - $RS/nanw/ckpt_00000001.bin $RS/nanw.bin <<'PYEOF' || return 1
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
struct.pack_into("<i", b, 4, 1)                      # version 1: no checksum to recompute
n = struct.unpack_from("<Q", b, 80)[0]
b[1024:1024 + 4 * n] = struct.pack("<I", 0x7FC00000) * n   # every parameter NaN
open(sys.argv[2], "wb").write(bytes(b[:-8]))
PYEOF
  $B/train_gpt -e $RS/nanw.bin -b 2 -t 16 -v 0 -n 0 --threads 1 -i "$RS/train_*.bin" -x 50 --skip_limit 3
}
run_test rel/skip_limit_stops 'fail:^error: steps 1 to 3 were all skipped for a non-finite loss or gradient \(--skip_limit 3\)' rel_skip_limit

# faults found before the first step: an --out_dir that is a regular file, and a token id
# beyond the vocabulary late in the last shard (found when the loader opens the data, not at
# the step that reads it)
touch $RS/a_file
run_test rel/out_dir_is_a_file 'fail:^error: cannot open the lock file .*/a_file/train\.lock: Not a directory' \
  $B/train_gpt "${RT[@]}" -x 2 --out_dir $RS/a_file
rel_bad_id_early() {
  mkdir -p $RS/badid
  $PY dev/random_shard.py $RS/badid/train_000.bin --tokens 5000 --vocab 300 --seed 3 >/dev/null || return 1
  $PY dev/random_shard.py $RS/badid/train_001.bin --tokens 5000 --vocab 300 --seed 4 >/dev/null || return 1
  printf '\xff\x01' | dd of=$RS/badid/train_001.bin bs=1 seek=$((1024 + 2 * 4990)) conv=notrunc status=none   # id 511
  $B/train_gpt --arch llama --n_layer 2 --n_head 2 --d_model 32 --ffn 64 --vocab 300 --max_seq_len 32 -b 2 -t 16 -v 0 -n 0 \
    --threads 1 -i "$RS/badid/train_*.bin" -x 400 > $RS/badid/out.txt 2>&1; local rc=$?
  tail -1 $RS/badid/out.txt
  [ $rc -ne 0 ] && ! grep -q '^step ' $RS/badid/out.txt &&
    grep -q "^error: .*train_001.bin: token id 511 at position 4990 is >= the model's vocab (300)" $RS/badid/out.txt
}
run_test rel/bad_token_id_found_before_training pass rel_bad_id_early

# fuzz every binary reader for a bounded time (libFuzzer + ASan/UBSan), from the committed seeds
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
for name in checkpoint shard refstate tokenizer; do
  if [ -x $B/fuzz/fuzz_$name ] && [ -d dev/fuzz/corpus/$name ]; then
    mkdir -p $RS/corpus_$name
    run_test rel/fuzz_$name pass $B/fuzz/fuzz_$name -max_total_time=$FUZZ_SECONDS -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix=$RS/fuzz_$name- \
      -print_final_stats=1 $RS/corpus_$name dev/fuzz/corpus/$name
  elif [ -x $B/fuzz/fuzz_$name ]; then skip_test rel/fuzz_$name "no seed corpus dev/fuzz/corpus/$name yet"
  else skip_test rel/fuzz_$name "no clang++ (libFuzzer) to build the fuzzer"; fi
done
rm -rf "$RS"
