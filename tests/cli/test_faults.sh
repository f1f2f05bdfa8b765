#!/usr/bin/env bash
# Faults: divergence (abort / skip_step / restore), a stuck rank (collective_timeout), a rank killed
# at random steps and while checkpointing (the job ends non-zero within 10 s and the last complete
# checkpoint loads), a full disk and an unusable directory while checkpointing. The stuck rank and the
# kill while checkpointing use the test build's hooks, which the release binary must not have.
. "$(dirname "$0")/lib.sh"
mnt=$tmp/full
on_exit() { mountpoint -q "$mnt" 2> /dev/null && umount "$mnt"; }
need "$fbin"

# --- the fault-injection hooks are in the test build only (src/faults.h)
leaked=$(strings "$bin" | grep DPTRAIN_TEST_ | sort -u | tr '\n' ' ')
[ -z "$leaked" ] && ok "release build: no DPTRAIN_TEST_ strings in $bin" || bad "release build: $bin holds $leaked"
for v in DPTRAIN_TEST_CRASH_BEFORE_RENAME DPTRAIN_TEST_STALL; do
  strings "$fbin" | grep -qw "$v" && ok "test build: $fbin reads $v" || bad "test build: no $v in $fbin"
done

# Regression data on which SGD with γ = 0.5 and momentum overflows at step 6.
python3 - "$tmp/reg.csv" << 'EOP'
import random, sys
random.seed(1)
with open(sys.argv[1], "w") as f:
    for i in range(400):
        x = [random.gauss(0, 1) for _ in range(8)]
        f.write(",".join("%.5f" % v for v in x + [sum(x[:4])]) + "\n")
EOP
"$bin" convert csv "$tmp/reg.csv" --regression -o "$tmp/reg.h5" > /dev/null || exit 1
cat > "$tmp/nf.ini" <<EOC
[data]
path = $tmp/reg.h5
[model]
loss = mse
[layer]
units = 16
activation = identity
[layer]
units = 1
activation = identity
[optimizer]
name = sgd
lr = 0.5
momentum = 0.9
[train]
batch_size = 40
epochs = 20
log_every = 10
[checkpoint]
every_steps = 5
EOC

# --- divergence
at_np 2 30 "$bin" train "$tmp/nf.ini" -q --set train.out_dir="$tmp/abort" > "$tmp/abort.txt" 2>&1
rc=$?
n=$(grep -c 'dptrain: error:' "$tmp/abort.txt")
if [ $rc = 3 ] && [ "$n" = 1 ] && grep -q 'step 6: the loss is Inf (diverged).*step size 0.5.*dptrain sweep' "$tmp/abort.txt"; then
  ok "abort: exit 3, one line naming the step, the cause and the step size"
else
  bad "abort: exit $rc, $n error lines: $(grep 'dptrain:' "$tmp/abort.txt")"
fi
[ "$(ls "$tmp/abort/checkpoints")" = ckpt-5.h5 ] && ok "abort: no checkpoint after the divergence" ||
  bad "abort: checkpoints $(ls "$tmp/abort/checkpoints")"
# Without bounds (0 = no limit) skip_step goes on to the end; every update from step 6 is skipped.
timeout 30 "$bin" train "$tmp/nf.ini" --set train.out_dir="$tmp/skip" --set train.on_nonfinite=skip_step \
  --set train.max_skips=0 --set train.max_consecutive_skips=0 > "$tmp/skip.txt" 2>&1
rc=$?
[ $rc = 0 ] && grep -q 'step 6: loss or gradient not finite: update skipped' "$tmp/skip.txt" &&
  ok "skip_step: the run goes on, each skipped update reported" || bad "skip_step: exit $rc: $(tail -3 "$tmp/skip.txt")"
# Bounded (max_consecutive_skips 10 is the default), such a run fails as diverged, at 1 and 2 ranks,
# without the checkpoint of that step (every_steps = 5).
for np in 1 2; do
  for bound in "10 100 15 10 updates skipped (10 in a row).*max_consecutive_skips = 10" \
    "0 20 25 20 updates skipped.*max_skips = 20"; do
    read -r row all at want <<< "$bound"
    d=$tmp/skipb$np-$all
    at_np $np 30 "$bin" train "$tmp/nf.ini" --set train.out_dir="$d" --set train.on_nonfinite=skip_step \
      --set train.max_consecutive_skips=$row --set train.max_skips=$all > "$d.txt" 2>&1
    rc=$?
    n=$(grep -c 'dptrain: error:' "$d.txt")
    if [ $rc = 3 ] && [ "$n" = 1 ] && grep -q "dptrain: error: step $at: $want" "$d.txt" && [ ! -e "$d/checkpoints/ckpt-$at.h5" ]; then
      ok "np=$np skip_step, max_consecutive_skips=$row max_skips=$all: exit 3 at step $at, one line, no ckpt-$at.h5"
    else
      bad "np=$np skip_step, max_consecutive_skips=$row max_skips=$all: exit $rc, $n error lines: $(grep 'dptrain: error' "$d.txt") $(ls "$d/checkpoints")"
    fi
  done
done
# The counts are in the checkpoint: 15 skips before a stop at step 20, 5 more after the resume.
d=$tmp/skipr
sk=(--set train.out_dir="$d" --set train.on_nonfinite=skip_step --set train.max_consecutive_skips=0 --set train.max_skips=20)
at_np 2 30 "$bin" train "$tmp/nf.ini" "${sk[@]}" --set train.max_steps=20 > "$d.txt" 2>&1 &&
  at_np 2 30 "$bin" train "$tmp/nf.ini" "${sk[@]}" --resume auto > "$d-2.txt" 2>&1
rc=$?
[ $rc = 3 ] && grep -q "dptrain: error: step 25: 20 updates skipped" "$d-2.txt" &&
  ok "skip_step: the skip count survives a resume (exit 3 at step 25)" ||
  bad "skip_step across a resume: exit $rc: $(grep -e 'dptrain: error' -e resumed "$d.txt" "$d-2.txt")"
at_np 2 60 "$bin" train "$tmp/nf.ini" --set train.out_dir="$tmp/restore" \
  --set train.on_nonfinite=restore --set train.max_restores=3 --set checkpoint.every_steps=1 > "$tmp/restore.txt" 2>&1
rc=$?
r=$(grep -c 'restored .*ckpt-[0-9]*.h5' "$tmp/restore.txt")
if [ "$r" -ge 1 ] && grep -q 'step size x0.5' "$tmp/restore.txt"; then
  ok "restore: reloaded the last checkpoint with half the step size ($r time(s), exit $rc)"
else
  bad "restore: exit $rc: $(grep -v '^epoch' "$tmp/restore.txt" | head -5)"
fi

# --- the classification set and config for the rest
make_synth "$tmp/syn.h5" 3000 0 20 5 1
small_config "$tmp/c.ini" layer.0.units=64 train.batch_size=30 train.epochs=100000 train.max_steps= train.log_every=20 \
  checkpoint.every_steps=20 checkpoint.keep_last=2

# --- a stuck rank: the others give up after collective_timeout with one message (comm = flat: the
# gradient allreduce; test_nodecomm.sh has comm = node's node barrier)
start=$(date +%s)
DPTRAIN_TEST_STALL=1:30 at_np 2 60 "$fbin" train "$tmp/c.ini" -q --set train.comm=flat \
  --set train.out_dir="$tmp/stall" --set train.collective_timeout=2 > "$tmp/stall.txt" 2>&1
rc=$?
took=$(($(date +%s) - start))
if [ $rc != 0 ] && [ $rc != 124 ] && [ $took -le 12 ] &&
  grep -q 'rank 0: step 30: the gradient allreduce did not complete within 2 s' "$tmp/stall.txt"; then
  ok "stuck rank: the job ends with exit $rc after ${took}s, naming the step and the collective"
else
  bad "stuck rank: exit $rc after ${took}s: $(grep dptrain "$tmp/stall.txt" | head -3)"
fi

# --- known slow phases are no stuck rank: rank 0's checkpoint writes (3 s each) with a 1 s
# collective_timeout: the others wait in the next step's allreduce, or in the final agreement
for np in 1 2; do
  DPTRAIN_TEST_SLOW_CHECKPOINT=3 at_np $np 60 "$fbin" train "$tmp/c.ini" -q --set train.out_dir="$tmp/slow$np" \
    --set train.collective_timeout=1 --set train.max_steps=25 --set checkpoint.keep_last=0 > "$tmp/slow$np.txt" 2>&1
  rc=$?
  left=$(ls "$tmp/slow$np/checkpoints" 2>&1 | tr '\n' ' ')
  [ $rc = 0 ] && [ "$left" = "ckpt-20.h5 ckpt-25.h5 " ] &&
    ok "np=$np: 3 s checkpoint writes under collective_timeout = 1: exit 0, $left" ||
    bad "np=$np: slow checkpoint writes: exit $rc, $left: $(grep dptrain "$tmp/slow$np.txt" | head -3)"
done
strings "$fbin" | grep -qw DPTRAIN_TEST_SLOW_CHECKPOINT && ok "test build: $fbin reads DPTRAIN_TEST_SLOW_CHECKPOINT" ||
  bad "test build: no DPTRAIN_TEST_SLOW_CHECKPOINT in $fbin"

# --- a rank killed (SIGKILL) at a random step, 3 ranks, several trials
for trial in 1 2 3; do
  d=$tmp/kill$trial
  at_np 3 120 "$bin" train "$tmp/c.ini" -q --set train.out_dir="$d" > "$tmp/kill$trial.txt" 2>&1 &
  job=$!
  target=$((RANDOM % 3))
  want=$((40 + RANDOM % 200)) # steps before the kill
  for _ in $(seq 200); do
    s=$(tail -1 "$d/metrics.jsonl" 2> /dev/null | sed -n 's/{"step":\([0-9]*\).*/\1/p')
    [ -n "$s" ] && [ "$s" -ge $want ] && break
    sleep 0.05
  done
  pid=$(rank_pid "$d" $target)
  killed=$(date +%s%N)
  [ -n "$pid" ] && kill -KILL "$pid"
  wait $job
  rc=$?
  ms=$((($(date +%s%N) - killed) / 1000000))
  if [ -n "$pid" ] && [ $rc != 0 ] && [ $rc != 124 ] && [ $ms -le 10000 ]; then
    ok "trial $trial: rank $target killed after step ~$want: the job ended with exit $rc in $ms ms"
  else
    bad "trial $trial: rank $target (pid '$pid'): exit $rc after $ms ms"
  fi
  latest=$(ls "$d/checkpoints" | grep -v '\.tmp$' | sort -t- -k2 -n | tail -1)
  if [ -n "$latest" ] && timeout 30 "$bin" train "$tmp/c.ini" -q --set train.out_dir="$d" --resume auto \
    --set train.max_steps=$(($(echo "$latest" | tr -dc 0-9) + 1)) > "$tmp/kill$trial-resume.txt" 2>&1; then
    ok "trial $trial: --resume auto continues from the last complete checkpoint ($latest)"
  else
    bad "trial $trial: resume from '$latest' failed: $(tail -2 "$tmp/kill$trial-resume.txt" 2> /dev/null)"
  fi
done

# --- a rank killed while rank 0 writes a checkpoint
d=$tmp/killckpt
DPTRAIN_TEST_CRASH_BEFORE_RENAME=1 at_np 3 60 "$fbin" train "$tmp/c.ini" -q --set train.out_dir="$d" \
  > "$tmp/killckpt.txt" 2>&1
rc=$?
# The temp file must be there: a kill before the first checkpoint would leave nothing to check.
if [ $rc != 0 ] && [ $rc != 124 ] && [ -z "$(ls "$d/checkpoints" | grep -v '\.tmp$')" ] &&
  ls "$d/checkpoints" | grep -q '\.tmp$'; then
  ok "killed while writing its first checkpoint: exit $rc, nothing but a temp file left"
else
  bad "killed while checkpointing: exit $rc, $(ls "$d/checkpoints" 2>&1)"
fi

# --- a full disk, and a directory that cannot be made, while checkpointing
# 96 KiB hold the first checkpoint (27 KiB) but not the room the second asks for.
if mkdir -p "$mnt" && mount -t tmpfs -o size=96k tmpfs "$mnt" 2> /dev/null; then
  timeout 30 "$bin" train "$tmp/c.ini" -q --set train.out_dir="$tmp/full-run" --set checkpoint.dir="$mnt" \
    --set train.max_steps=60 > "$tmp/full.txt" 2>&1
  rc=$?
  if [ $rc = 1 ] && grep -q "dptrain: error: $mnt/ckpt-40.h5.tmp: writing the checkpoint failed (No space" \
    "$tmp/full.txt" && [ "$(ls "$mnt")" = ckpt-20.h5 ] && timeout 10 "$bin" inspect "$mnt/ckpt-20.h5" > /dev/null; then
    ok "disk full: exit 1, one line naming the file, no temp file, the previous checkpoint loads"
  else
    bad "disk full: exit $rc: $(grep dptrain "$tmp/full.txt") / left: $(ls "$mnt")"
  fi
else
  echo "skip - disk full: cannot mount a small tmpfs here"
fi
touch "$tmp/afile"
timeout 30 "$bin" train "$tmp/c.ini" -q --set train.out_dir="$tmp/nodir-run" --set checkpoint.dir="$tmp/afile/ckpt" \
  --set train.max_steps=25 > "$tmp/nodir.txt" 2>&1
rc=$?
[ $rc = 1 ] && grep -q "dptrain: error: $tmp/afile/ckpt: cannot create directory" "$tmp/nodir.txt" &&
  ok "unusable checkpoint directory: exit 1, one line naming it" || bad "unusable dir: exit $rc: $(grep dptrain "$tmp/nodir.txt")"

finish
