#!/usr/bin/env bash
# Checkpoints end to end: an interrupted and resumed run ends bit-identical to an uninterrupted
# one (same rank count) or within rounding (other rank counts); a writer killed before its rename
# leaves the previous checkpoint intact; damaged, foreign or mismatched checkpoints stop with one
# error line and touch nothing; a signal to one rank stops every rank at a step boundary with a
# checkpoint, and so do SIGUSR1, SIGTERM and SIGINT to mpirun itself (three stops and resumes in a
# row); keep_last prunes; inspect and eval read checkpoints.
. "$(dirname "$0")/lib.sh"
tamper=$build/tests/ckpt_tamper

need "$tamper" "$fbin"
# 1000 rows in batches of 60: 17 steps per epoch (the last one 40 rows), so step 20 is mid-epoch.
make_synth "$tmp/syn.h5" 1000 200 20 5 1

write_cfg() { # file, optimizer (sgd = sgd with momentum 0.9, adam, or bn = sgd on a batch-norm layer)
  local opt=() norm=none
  [ "$2" = adam ] && opt=(optimizer.name=adam optimizer.lr=0.003 optimizer.momentum=)
  [ "$2" = bn ] && norm=batch
  small_config "$1" model.loss=softmax_cross_entropy layer.0.norm=$norm "${opt[@]}" checkpoint.every_steps=0 \
    checkpoint.at_end=true
}

# train NP CONFIG OUT_DIR LOG [args...]: one run of $bin, output to LOG; returns the run's exit status.
train() {
  local np=$1 cfg=$2 out=$3 log=$4
  shift 4
  at_np "$np" 60 "$bin" train "$cfg" --set train.out_dir="$out" "$@" > "$log" 2>&1
}

# "step loss" of every training log line of a metrics.jsonl.
losses() { grep '"loss"' "$1" | sed 's/.*"step":\([0-9]*\).*"loss":\([^,}]*\).*/\1 \2/'; }
last_loss() { losses "$1" | tail -1 | cut -d' ' -f2; }

# md5 of every file under the given directories/files (sorted), to prove nothing was touched.
fingerprint() { find "$@" -type f -print0 | sort -z | xargs -0 md5sum; }

# --- 1. exact resume at the same rank count (np 2): bit-identical checkpoints and losses
for opt in sgd adam bn; do
  write_cfg "$tmp/$opt.ini" $opt
  d=$tmp/$opt
  mkdir -p "$d"
  train 2 "$tmp/$opt.ini" "$d/full" "$d/full.txt" || bad "$opt: uninterrupted run failed: $(tail -3 "$d/full.txt")"
  train 2 "$tmp/$opt.ini" "$d/split" "$d/split1.txt" --set train.max_steps=20 ||
    bad "$opt: first half failed: $(tail -3 "$d/split1.txt")"
  if train 2 "$tmp/$opt.ini" "$d/split" "$d/split2.txt" --resume auto &&
    grep -qF "resumed from $d/split/checkpoints/ckpt-20.h5 at step 20" "$d/split2.txt"; then
    ok "$opt: --resume auto picks ckpt-20.h5 and runs on"
  else
    bad "$opt: resume: $(tail -3 "$d/split2.txt")"
  fi
  timeout 10 "$bin" inspect "$d/split/checkpoints/ckpt-20.h5" | grep -q 'step 20, epoch 2 (position 3 in it)' &&
    ok "$opt: ckpt-20 is mid-epoch (epoch 2, position 3)" ||
    bad "$opt: ckpt-20 position: $(timeout 10 "$bin" inspect "$d/split/checkpoints/ckpt-20.h5" 2>&1 | sed -n 2p)"
  a=$d/full/checkpoints/ckpt-40.h5 b=$d/split/checkpoints/ckpt-40.h5
  if [ -f "$a" ] && [ -f "$b" ]; then
    for g in /model /optimizer; do
      if out=$(h5diff "$a" "$b" $g 2>&1); then
        ok "$opt: $g of ckpt-40.h5 bit-identical after resume"
      else
        bad "$opt: $g differs after resume: $(echo "$out" | head -5)"
      fi
    done
  else
    bad "$opt: ckpt-40.h5 missing (full: $(ls "$d/full/checkpoints" 2>&1), split: $(ls "$d/split/checkpoints" 2>&1))"
  fi
  losses "$d/full/metrics.jsonl" > "$d/full.loss"
  losses "$d/split/metrics.jsonl" > "$d/split.loss"
  if [ "$(wc -l < "$d/full.loss")" -eq 8 ] && cmp -s "$d/full.loss" "$d/split.loss"; then
    ok "$opt: metrics.jsonl losses identical (8 lines, steps 5..40)"
  else
    bad "$opt: metrics.jsonl losses differ: $(diff "$d/full.loss" "$d/split.loss" | head -6 | tr '\n' ' ')"
  fi
done
# A checkpoint inside an open logging interval (log_every 15, saved at step 20 by every_steps) must
# carry the interval's sums: resuming a copy of the run from ckpt-20 drops the copied lines after
# step 20 and logs steps 30 and 40 exactly as the uninterrupted run did. (A run stopped by
# max_steps logs its last step, so it cannot show this.)
d=$tmp/iv
mkdir -p "$d"
train 2 "$tmp/sgd.ini" "$d/full" "$d/full.txt" --set train.log_every=15 --set checkpoint.every_steps=10 \
  --set checkpoint.keep_last=0 || bad "sgd: log_every 15 run failed: $(tail -3 "$d/full.txt")"
cp -r "$d/full" "$d/split"
rm -f "$d/split/checkpoints/ckpt-30.h5" "$d/split/checkpoints/ckpt-40.h5"
train 2 "$tmp/sgd.ini" "$d/split" "$d/split.txt" --set train.log_every=15 --set checkpoint.every_steps=10 \
  --set checkpoint.keep_last=0 --resume auto
losses "$d/full/metrics.jsonl" > "$d/full.loss"
losses "$d/split/metrics.jsonl" > "$d/split.loss"
# Compare the logged lines without the timing fields (they differ between sessions).
strip() { sed -E 's/,"(samples_per_s|step_ms|train_s|[a-z]+_ms_(mean|max))":[^,}]*//g' "$1"; }
if grep -q 'resumed from .*ckpt-20.h5' "$d/split.txt" && [ "$(wc -l < "$d/full.loss")" -eq 3 ] &&
  cmp -s <(strip "$d/full/metrics.jsonl") <(strip "$d/split/metrics.jsonl"); then
  ok "sgd: resumed inside a logging interval: metrics.jsonl identical to the uninterrupted run's (but samples_per_s)"
else
  bad "sgd: logging interval across the resume: $(diff <(strip "$d/full/metrics.jsonl") <(strip "$d/split/metrics.jsonl") | head -6 | tr '\n' ' ')"
fi

# --- 2. resume at another rank count: equal to the uninterrupted run within rounding
close_to() { # a, b: |a-b| <= 1e-5 |a|
  awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; m = a < 0 ? -a : a; exit !(a != "" && b != "" && d <= 1e-5 * m) }'
}
for opt in sgd adam bn; do
  d=$tmp/$opt
  ref=$(last_loss "$d/full/metrics.jsonl")
  # np 2 -> np 1: the checkpoint of test 1's first half
  train 1 "$tmp/$opt.ini" "$d/to1" "$d/to1.txt" --resume "$d/split/checkpoints/ckpt-20.h5"
  got=$(last_loss "$d/to1/metrics.jsonl" 2> /dev/null)
  close_to "$ref" "$got" && ok "$opt: saved at np 2, resumed at np 1: final loss $got ~ $ref" ||
    bad "$opt: np 2 -> np 1: final loss '$got', uninterrupted $ref: $(tail -2 "$d/to1.txt")"
  # np 1 -> np 3
  train 1 "$tmp/$opt.ini" "$d/to3" "$d/to3a.txt" --set train.max_steps=20 ||
    bad "$opt: np 1 first half failed: $(tail -3 "$d/to3a.txt")"
  train 3 "$tmp/$opt.ini" "$d/to3" "$d/to3b.txt" --resume auto
  got=$(last_loss "$d/to3/metrics.jsonl" 2> /dev/null)
  if grep -q 'resumed from .*ckpt-20.h5' "$d/to3b.txt" && close_to "$ref" "$got"; then
    ok "$opt: saved at np 1, resumed at np 3: final loss $got ~ $ref"
  else
    bad "$opt: np 1 -> np 3: final loss '$got', uninterrupted $ref: $(tail -2 "$d/to3b.txt")"
  fi
done

# A periodic checkpoint on the last step must not cost the run its final evaluation.
train 1 "$tmp/sgd.ini" "$tmp/lastsave" "$tmp/lastsave.txt" --set checkpoint.every_steps=10
grep -q '^final: test_loss' "$tmp/lastsave.txt" && grep -q '"step":40,.*"test_acc"' "$tmp/lastsave/metrics.jsonl" &&
  ok "a checkpoint at the last step keeps the final evaluation" ||
  bad "no final evaluation when the last step also checkpoints: $(tail -3 "$tmp/lastsave.txt")"

# --- 3. atomicity: a writer killed between writing ckpt-30.h5.tmp and renaming it
d=$tmp/atom
train 2 "$tmp/sgd.ini" "$d" "$tmp/atom1.txt" --set train.max_steps=20 || bad "atomicity: first run failed"
sum20=$(md5sum < "$d/checkpoints/ckpt-20.h5")
# bin=$fbin: the test build, which has the hook
if DPTRAIN_TEST_CRASH_BEFORE_RENAME=1 bin=$fbin train 2 "$tmp/sgd.ini" "$d" "$tmp/atom2.txt" --resume auto \
  --set checkpoint.every_steps=10; then
  bad "atomicity: the run killed while saving exited 0"
else
  ok "atomicity: the run killed while saving step 30 fails"
fi
[ -e "$d/checkpoints/ckpt-30.h5" ] && bad "atomicity: ckpt-30.h5 exists after the kill" ||
  ok "atomicity: no ckpt-30.h5 (ckpt-30.h5.tmp $([ -e "$d/checkpoints/ckpt-30.h5.tmp" ] && echo left || echo absent))"
[ "$(md5sum < "$d/checkpoints/ckpt-20.h5")" = "$sum20" ] && ok "atomicity: ckpt-20.h5 unchanged" ||
  bad "atomicity: ckpt-20.h5 changed"
if train 2 "$tmp/sgd.ini" "$d" "$tmp/atom3.txt" --resume auto --set checkpoint.every_steps=10 &&
  grep -qF "resumed from $d/checkpoints/ckpt-20.h5" "$tmp/atom3.txt"; then
  ok "atomicity: --resume auto afterwards resumes from ckpt-20.h5"
else
  bad "atomicity: resume after the kill: $(grep -m1 resumed "$tmp/atom3.txt") $(tail -2 "$tmp/atom3.txt")"
fi
ls "$d/checkpoints" | grep -q '\.tmp$' && bad "atomicity: temp file left after the next save: $(ls "$d/checkpoints")" ||
  ok "atomicity: the next save removed the stale temp file"
# The crashed session logged steps 25 and 30; the resume must drop them and log its own.
losses "$d/metrics.jsonl" > "$tmp/atom.loss"
cmp -s "$tmp/sgd/full.loss" "$tmp/atom.loss" && ok "atomicity: metrics.jsonl equals the uninterrupted run's" ||
  bad "atomicity: metrics.jsonl differs: $(diff "$tmp/sgd/full.loss" "$tmp/atom.loss" | head -6 | tr '\n' ' ')"
h5diff "$tmp/sgd/full/checkpoints/ckpt-40.h5" "$d/checkpoints/ckpt-40.h5" /model > /dev/null 2>&1 &&
  ok "atomicity: final model bit-identical to the uninterrupted run" || bad "atomicity: final model differs"

# --- 4. validation: one error line, non-zero exit, within 10 s, nothing touched
v=$tmp/val # a real run directory (metrics.jsonl, config.ini, checkpoints/ckpt-20.h5) holding the bad files
train 2 "$tmp/adam.ini" "$v" "$tmp/val.txt" --set train.max_steps=20 || bad "validation: set-up run failed"
c=$v/checkpoints
good=$c/ckpt-20.h5
head -c 3000 "$good" > "$c/truncated.h5"
cp "$good" "$c/flipped.h5"
"$tamper" flip "$c/flipped.h5" model/layer0/weight || bad "ckpt_tamper flip failed"
cmp -s "$good" "$c/flipped.h5" && bad "ckpt_tamper flip changed nothing"
cp "$good" "$c/v99.h5"
"$tamper" version "$c/v99.h5" 99 || bad "ckpt_tamper version failed"
echo "not a checkpoint" > "$c/text.h5"
"$tamper" flip "$c/none.h5" model/layer0/weight 2> /dev/null && bad "ckpt_tamper flip on a missing file exited 0"

expect_error() { # name, text, config, args...
  local name=$1 text=$2 cfg=$3 np before after rc n
  shift 3
  for np in 1 2; do
    before=$(fingerprint "$v" "$tmp/syn.h5")
    at_np $np 10 "$bin" train "$cfg" --set train.out_dir="$v" "$@" > "$tmp/e.out" 2> "$tmp/e.err"
    rc=$?
    after=$(fingerprint "$v" "$tmp/syn.h5")
    n=$(cat "$tmp/e.out" "$tmp/e.err" | grep -c 'dptrain: error:')
    local timed_out=0
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && timed_out=1
    if [ $rc -ne 0 ] && [ $timed_out = 0 ] && [ "$n" -eq 1 ] && grep -qF -- "$text" "$tmp/e.err" && [ "$before" = "$after" ]; then
      ok "np=$np $name: exit $rc, one line, files untouched"
    else
      [ "$before" = "$after" ] || echo "#   changed: $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | tr '\n' ' ')"
      bad "np=$np $name: exit $rc$([ $timed_out = 1 ] && echo ' (timed out or killed)'), $n error lines, want '$text': $(grep -m3 . "$tmp/e.err" | tr '\n' ' ')"
    fi
  done
}
expect_error "truncated checkpoint" "truncated" "$tmp/adam.ini" --resume "$c/truncated.h5"
expect_error "flipped weight byte" "checksum" "$tmp/adam.ini" --resume "$c/flipped.h5"
expect_error "format version 99" "version 99" "$tmp/adam.ini" --resume "$c/v99.h5"
expect_error "foreign HDF5 file" "not a dptrain checkpoint" "$tmp/adam.ini" --resume "$tmp/syn.h5"
expect_error "text file" "not an HDF5 file" "$tmp/adam.ini" --resume "$c/text.h5"
expect_error "missing file" "$c/missing.h5: cannot open" "$tmp/adam.ini" --resume "$c/missing.h5"
# The stored config is compared first: the key is named, not the tensor it shapes.
expect_error "other model" "to resume it these must match: layer.0.units 32 -> 16" "$tmp/adam.ini" \
  --set layer.0.units=16 --resume "$good"
expect_error "other optimizer" "adam" "$tmp/sgd.ini" --resume "$good"
expect_error "init_from with other shapes" "/model/layer0/weight" "$tmp/adam.ini" --set layer.0.units=16 \
  --set model.init_from="$good"

# --- 5. a signal to one rank stops both at a step boundary, with a checkpoint
write_cfg "$tmp/sig.ini" sgd
sed -i -e 's/^log_every = .*/log_every = 50/' -e 's/^epochs = .*/epochs = 1000000/' -e 's/^max_steps = .*/max_steps = 0/' -e 's/^at_end = .*/at_end = false/' \
  "$tmp/sig.ini"
s=$tmp/sig
# Not at_np: that would run in a subshell, and killing it would leave the job running.
bg timeout 120 "${mpi[@]}" -np 2 "$bin" train "$tmp/sig.ini" --set train.out_dir="$s" > "$tmp/sig.txt" 2>&1
bgpid=$!
wait_for 10 eval '[ -f "$s/metrics.jsonl" ] && [ "$(wc -l < "$s/metrics.jsonl")" -ge 2 ]'
target=$(rank_pid "$tmp/sig.ini" 1)
if [ -z "$target" ]; then
  bad "signal: no rank 1 process found: $(tail -3 "$tmp/sig.txt")"
else
  kill -USR1 "$target"
  if ! wait_for 20 eval '! kill -0 $bgpid 2> /dev/null'; then
    bad "signal: still running 20 s after SIGUSR1 to rank 1"
    kill $bgpid
  fi
  bg_wait $bgpid
  rc=$?
  n=$(sed -n 's/.*stopped by a signal at step \([0-9]*\).*/\1/p' "$tmp/sig.txt")
  if [ $rc -eq 0 ] && [ -n "$n" ]; then
    ok "signal: SIGUSR1 to rank 1 only: exit 0, stopped at step $n"
  else
    bad "signal: exit $rc, step '$n': $(tail -3 "$tmp/sig.txt")"
  fi
  if [ -n "$n" ] && [ -f "$s/checkpoints/ckpt-$n.h5" ]; then
    ok "signal: ckpt-$n.h5 written"
    if at_np 2 60 "$bin" train "$tmp/sig.ini" --set train.out_dir="$s" --resume auto \
      --set train.max_steps=$((n + 10)) > "$tmp/sig2.txt" 2>&1 &&
      grep -qF "resumed from $s/checkpoints/ckpt-$n.h5 at step $n " "$tmp/sig2.txt" &&
      grep -q "^done: $((n + 10)) steps" "$tmp/sig2.txt"; then
      ok "signal: --resume auto runs on from step $n to $((n + 10))"
    else
      bad "signal: resume: $(grep -e resumed -e "done:" "$tmp/sig2.txt" | tr '\n' ' ') $(tail -2 "$tmp/sig2.txt")"
    fi
  else
    bad "signal: no ckpt-$n.h5: $(ls "$s/checkpoints" 2>&1 | tr '\n' ' ')"
  fi
fi

# --- 5b. the signal a user, a scheduler or Ctrl-C sends goes to mpirun itself: SIGUSR1 (forwarded),
# then SIGTERM and SIGINT (mpirun aborts the job: SIGCONT now, SIGTERM after odls_base_sigkill_timeout,
# SIGKILL after twice that), three runs in a row, each resuming the previous one's checkpoint. Each
# checkpoint write takes 4 s: more than the ranks would have were SIGTERM their cue, less than 2 x 3 s.
m=$tmp/sigm prev=
for sig in USR1 TERM INT; do
  DPTRAIN_TEST_SLOW_CHECKPOINT=4 bg timeout 120 "${mpi[@]}" --mca odls_base_sigkill_timeout 3 -x DPTRAIN_TEST_SLOW_CHECKPOINT \
    -np 2 "$fbin" train "$tmp/sig.ini" --set train.out_dir="$m" --set train.eval_every=1000000 \
    --resume auto > "$tmp/sigm-$sig.txt" 2>&1
  bgpid=$!
  wait_for 10 grep -q '^epoch.* step ' "$tmp/sigm-$sig.txt"
  mp=$(pgrep -P $bgpid -x mpirun)
  [ -n "$mp" ] && kill -$sig "$mp"
  wait_for 30 eval '! kill -0 $bgpid 2> /dev/null' || kill $bgpid
  bg_wait $bgpid
  rc=$?
  n=$(sed -n 's/.*stopped by a signal at step \([0-9]*\).*/\1/p' "$tmp/sigm-$sig.txt")
  # mpirun reports its own abort as exit 1 after SIGTERM or SIGINT, however cleanly the ranks stopped.
  want=1
  [ $sig = USR1 ] && want=0
  if [ -n "$n" ] && [ $rc -eq $want ] && [ -f "$m/checkpoints/ckpt-$n.h5" ]; then
    ok "SIG$sig to mpirun: stopped at step $n with ckpt-$n.h5, mpirun exit $rc"
  else
    bad "SIG$sig to mpirun (pid '$mp'): exit $rc, step '$n': $(tail -3 "$tmp/sigm-$sig.txt")"
  fi
  if [ -n "$prev" ]; then
    grep -qF "resumed from $m/checkpoints/ckpt-$prev.h5 at step $prev " "$tmp/sigm-$sig.txt" &&
      ok "SIG$sig to mpirun: that run had resumed from step $prev" ||
      bad "SIG$sig to mpirun: did not resume from step $prev: $(grep resume "$tmp/sigm-$sig.txt")"
  fi
  prev=$n
done
if [ -n "$prev" ] && at_np 2 60 "$bin" train "$tmp/sig.ini" --set train.out_dir="$m" --resume auto \
  --set train.max_steps=$((prev + 10)) > "$tmp/sigm-end.txt" 2>&1 &&
  grep -q "^done: $((prev + 10)) steps" "$tmp/sigm-end.txt"; then
  ok "signals to mpirun: the third checkpoint resumes to step $((prev + 10))"
else
  bad "signals to mpirun: final resume: $(tail -2 "$tmp/sigm-end.txt")"
fi

# --- 6. keep_last
train 2 "$tmp/sgd.ini" "$tmp/keep" "$tmp/keep.txt" --set train.max_steps=30 --set checkpoint.every_steps=5 \
  --set checkpoint.keep_last=2 || bad "keep_last: run failed: $(tail -3 "$tmp/keep.txt")"
left=$(ls "$tmp/keep/checkpoints" 2>&1 | tr '\n' ' ')
[ "$left" = "ckpt-25.h5 ckpt-30.h5 " ] && ok "keep_last=2: exactly ckpt-25.h5 and ckpt-30.h5 remain, no temp files" ||
  bad "keep_last=2: left $left"

# --- 7. inspect and eval
ck=$tmp/adam/full/checkpoints/ckpt-40.h5
if timeout 10 "$bin" inspect "$ck" > "$tmp/insp.txt" 2>&1; then
  for want in "step 40," "optimizer adam" "layer0: weight (32, 20), bias" "layer1: weight (5, 32), bias"; do
    grep -qF "$want" "$tmp/insp.txt" && ok "inspect prints '$want'" || bad "inspect lacks '$want': $(head -5 "$tmp/insp.txt")"
  done
else
  bad "inspect failed: $(head -3 "$tmp/insp.txt")"
fi
timeout 10 "$bin" inspect "$tmp/sgd/full/checkpoints/ckpt-40.h5" | grep -q "optimizer sgd, state: momentum" &&
  ok "inspect prints 'optimizer sgd, state: momentum'" || bad "inspect of the sgd checkpoint"
at_np 1 30 "$bin" eval "$ck" > "$tmp/ev1.txt" 2>&1
rc1=$?
at_np 2 30 "$bin" eval "$ck" > "$tmp/ev2.txt" 2>&1
rc2=$?
e1=$(grep -o 'test_loss .*' "$tmp/ev1.txt") e2=$(grep -o 'test_loss .*' "$tmp/ev2.txt")
if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ -n "$e1" ] && [ "$e1" = "$e2" ]; then
  ok "eval at np 1 and np 2: $e1"
else
  bad "eval: np 1 (exit $rc1) '$e1', np 2 (exit $rc2) '$e2': $(tail -2 "$tmp/ev2.txt")"
fi
# The same numbers as the training run's last evaluation (same model, same test split).
want=$(grep '^final:' "$tmp/adam/full.txt" | grep -o 'test_loss .*')
[ -n "$want" ] && [ "$e1" = "$want" ] && ok "eval matches the run's final evaluation" ||
  bad "eval '$e1', the run's final evaluation '$want'"

finish
