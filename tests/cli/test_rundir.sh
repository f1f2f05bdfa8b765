#!/usr/bin/env bash
# One run per run directory: a fresh run into a directory that holds another run's checkpoints is
# refused (exit 2, naming the directory, its newest checkpoint and the ways on) and changes nothing;
# --overwrite moves the old run aside instead of deleting anything; --resume of a checkpoint from
# elsewhere is refused the same way there unless it is of the same run (its run id); a second run on a
# directory in use is refused while the first goes on; a lock left by a killed run is taken over and
# reported.
. "$(dirname "$0")/lib.sh"

make_synth "$tmp/syn.h5" 1000 200 20 5 1
small_config "$tmp/c.ini" checkpoint.every_steps=20 checkpoint.keep_last=1
train() { # NP OUT_DIR LOG [args...]
  local np=$1 out=$2 log=$3
  shift 3
  at_np "$np" 60 "$bin" train "$tmp/c.ini" --set train.out_dir="$out" "$@" > "$log" 2>&1
}
fingerprint() { find "$@" -print0 | sort -z | xargs -0 md5sum 2> /dev/null; find "$@" | sort; }

# --- a fresh run into another run's directory: refused, nothing changed
r=$tmp/old
train 1 "$r" "$tmp/old.txt" --set train.seed=7 || bad "set-up run failed: $(tail -3 "$tmp/old.txt")"
for np in 1 2; do
  before=$(fingerprint "$r")
  train $np "$r" "$tmp/refused.txt"
  rc=$?
  after=$(fingerprint "$r")
  n=$(grep -c 'dptrain: error:' "$tmp/refused.txt")
  line=$(grep 'dptrain: error:' "$tmp/refused.txt")
  if [ $rc = 2 ] && [ "$n" = 1 ] && [[ $line == *"$r/checkpoints already holds another run's checkpoints"* ]] &&
    [[ $line == *"newest $r/checkpoints/ckpt-40.h5"* ]] && [[ $line == *"--resume auto"* ]] &&
    [[ $line == *"another [train] out_dir"* ]] && [[ $line == *"--overwrite"* ]]; then
    ok "np=$np fresh run into a directory with checkpoints: exit 2, one line with the directory, newest and ways on"
  else
    bad "np=$np fresh run into another run's directory: exit $rc, $n error lines: $(head -3 "$tmp/refused.txt")"
  fi
  [ "$before" = "$after" ] && ok "np=$np the refused start changed nothing" ||
    bad "np=$np the refused start changed: $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | head -4 | tr '\n' ' ')"
done
# The same with a [checkpoint] dir of its own, shared by another out_dir.
train 1 "$tmp/other" "$tmp/other.txt" --set checkpoint.dir="$r/checkpoints"
[ $? = 2 ] && grep -q "$r/checkpoints already holds" "$tmp/other.txt" && [ ! -e "$tmp/other/metrics.jsonl" ] &&
  ok "a fresh run whose [checkpoint] dir holds another run's checkpoints is refused too" ||
  bad "shared [checkpoint] dir: $(tail -2 "$tmp/other.txt")"

# --- --resume PATH from outside the checkpoint directory: only into an empty one or the same run's
b=$tmp/runb
train 1 "$b" "$tmp/b.txt" --set train.max_steps=20 || bad "set-up run b failed: $(tail -3 "$tmp/b.txt")"
cp "$b/checkpoints/ckpt-20.h5" "$tmp/saved-b.h5"
"$bin" inspect "$tmp/saved-b.h5" | head -1 | grep -q ", run $(hostname)-[0-9]*-[0-9T]*Z$" &&
  ok "inspect names the checkpoint's run" || bad "inspect: $("$bin" inspect "$tmp/saved-b.h5" 2>&1 | head -1)"
for np in 1 2; do
  before=$(fingerprint "$r")
  train $np "$r" "$tmp/mixed.txt" --resume "$tmp/saved-b.h5"
  rc=$?
  after=$(fingerprint "$r")
  line=$(grep 'dptrain: error:' "$tmp/mixed.txt")
  if [ $rc = 2 ] && [ "$(grep -c 'dptrain: error:' "$tmp/mixed.txt")" = 1 ] &&
    [[ $line == *"$r/checkpoints already holds the checkpoints of another run (newest $r/checkpoints/ckpt-40.h5, run "* ]] &&
    [[ $line == *"than $tmp/saved-b.h5 (run $(hostname)-"* ]] && [[ $line == *"--resume auto"* ]] &&
    [[ $line == *"another [train] out_dir"* ]] && [[ $line == *"--overwrite"* ]] && [ "$before" = "$after" ]; then
    ok "np=$np --resume of another run's checkpoint into a directory with checkpoints: exit 2, the ways on, nothing changed"
  else
    bad "np=$np --resume into another run's directory: exit $rc: $(head -3 "$tmp/mixed.txt")"
  fi
  rm -rf "$tmp/empty$np"
  train $np "$tmp/empty$np" "$tmp/empty.txt" --resume "$tmp/saved-b.h5" --set train.max_steps=30 &&
    [ -f "$tmp/empty$np/checkpoints/ckpt-30.h5" ] && ok "np=$np --resume from elsewhere into an empty directory trains" ||
    bad "np=$np --resume into an empty directory: $(tail -2 "$tmp/empty.txt")"
done
# A checkpoint of an older dptrain carries no run id: not known to be the same run, so refused too.
cp "$tmp/saved-b.h5" "$tmp/old-b.h5"
"$build/tests/ckpt_tamper" unattr "$tmp/old-b.h5" run_id || bad "ckpt_tamper unattr failed"
train 1 "$b" "$tmp/old.txt" --resume "$tmp/old-b.h5"
[ $? = 2 ] && grep -qF "than $tmp/old-b.h5 (run unknown)" "$tmp/old.txt" &&
  ok "--resume of a checkpoint without a run id into a directory with checkpoints: refused (unknown run)" ||
  bad "older checkpoint from elsewhere: $(head -2 "$tmp/old.txt")"
# The same run's checkpoint from elsewhere (a copy, a backup) continues in its own directory.
train 2 "$b" "$tmp/b2.txt" --resume "$tmp/saved-b.h5" --set train.max_steps=30 &&
  grep -qF "resumed from $tmp/saved-b.h5 at step 20" "$tmp/b2.txt" && [ -f "$b/checkpoints/ckpt-30.h5" ] &&
  ok "--resume of the same run's checkpoint from elsewhere into its directory trains" ||
  bad "same run from elsewhere: $(grep error "$tmp/b2.txt" | head -2)"
# --overwrite moves the other run aside first, as for a fresh start.
cp -r "$r" "$tmp/rcopy"
old_ckpt=$(md5sum < "$r/checkpoints/ckpt-40.h5")
if train 2 "$tmp/rcopy" "$tmp/mixed-over.txt" --resume "$tmp/saved-b.h5" --overwrite --set train.max_steps=30; then
  prev=$(ls -d "$tmp/rcopy"/previous-* 2> /dev/null | head -1)
  [ -n "$prev" ] && [ "$(md5sum < "$prev/checkpoints/ckpt-40.h5")" = "$old_ckpt" ] &&
    [ "$(ls "$tmp/rcopy/checkpoints")" = ckpt-30.h5 ] &&
    grep -qF "overwrite: the previous run's checkpoints are now in $prev/checkpoints" "$tmp/mixed-over.txt" &&
    ok "--resume PATH --overwrite: the other run moved aside, the resumed run trains there" ||
    bad "--resume PATH --overwrite: $(ls -R "$tmp/rcopy" | tr '\n' ' ')"
else
  bad "--resume PATH --overwrite failed: $(tail -2 "$tmp/mixed-over.txt")"
fi
rm -rf "$tmp/rcopy"

# --- --overwrite: the old run moves into previous-<time>/, byte for byte; the new run trains
old_ckpt=$(md5sum < "$r/checkpoints/ckpt-40.h5") old_metrics=$(md5sum < "$r/metrics.jsonl")
if train 2 "$r" "$tmp/over.txt" --overwrite --set train.max_steps=20; then
  prev=$(ls -d "$r"/previous-* 2> /dev/null | head -1)
  if [ -n "$prev" ] && [ "$(md5sum < "$prev/checkpoints/ckpt-40.h5")" = "$old_ckpt" ] &&
    [ "$(md5sum < "$prev/metrics.jsonl")" = "$old_metrics" ] && [ -f "$prev/config.ini" ] &&
    grep -qF "overwrite: the previous run's checkpoints are now in $prev/checkpoints" "$tmp/over.txt"; then
    ok "--overwrite moved the old checkpoints, metrics.jsonl and config.ini into $(basename "$prev") unchanged"
  else
    bad "--overwrite: $(ls -R "$r" | tr '\n' ' ') / $(grep overwrite "$tmp/over.txt")"
  fi
  [ "$(ls "$r/checkpoints")" = ckpt-20.h5 ] && ok "--overwrite: the new run's checkpoint stays (keep_last counts only its own)" ||
    bad "--overwrite: checkpoints left: $(ls "$r/checkpoints" | tr '\n' ' ')"
  if train 1 "$r" "$tmp/over2.txt" --resume auto && grep -qF "resumed from $r/checkpoints/ckpt-20.h5 at step 20" "$tmp/over2.txt"; then
    ok "--resume auto afterwards continues the new run, not the old one"
  else
    bad "--resume auto after --overwrite: $(grep -e resumed -e error "$tmp/over2.txt" | head -2)"
  fi
else
  bad "--overwrite run failed: $(tail -3 "$tmp/over.txt")"
fi
"$bin" train "$tmp/c.ini" --overwrite --resume auto > "$tmp/both.txt" 2>&1
[ $? = 2 ] && grep -q "give one of them" "$tmp/both.txt" && ok "--overwrite with --resume: exit 2" ||
  bad "--overwrite with --resume: $(head -2 "$tmp/both.txt")"

# A [checkpoint] dir that is out_dir itself, by another name: one lock, not a stale one of its own.
if train 1 "$tmp/same" "$tmp/same.txt" --set checkpoint.dir="$tmp/same/" && ! grep -q '^note:' "$tmp/same.txt" &&
  [ -f "$tmp/same/ckpt-40.h5" ] && [ ! -e "$tmp/same/.dptrain.lock" ]; then
  ok "[checkpoint] dir = out_dir: trains, one lock, removed at the end"
else
  bad "[checkpoint] dir = out_dir: $(grep -e note -e error "$tmp/same.txt" | head -2) $(ls -a "$tmp/same" | tr '\n' ' ')"
fi

# --- two runs at once on one directory: the second is refused, the first goes on
write_long() { sed -e 's/^max_steps = .*/max_steps = 0/' -e 's/^epochs = .*/epochs = 1000000/' "$tmp/c.ini" > "$tmp/long.ini"; }
write_long
l=$tmp/busy
# Not under timeout: $! must be dptrain's own pid (the exit trap ends it if the script fails).
bg "$bin" train "$tmp/long.ini" --set train.out_dir="$l" > "$tmp/first.txt" 2>&1
bgpid=$!
wait_for 10 test -s "$l/metrics.jsonl"
for np in 1 2; do
  at_np $np 30 "$bin" train "$tmp/long.ini" --set train.out_dir="$l" --resume auto > "$tmp/second.txt" 2>&1
  rc=$?
  if [ $rc = 2 ] && [ "$(grep -c 'dptrain: error:' "$tmp/second.txt")" = 1 ] &&
    grep -q "dptrain: error: $l is in use by another dptrain run (host $(hostname) pid $bgpid since" "$tmp/second.txt"; then
    ok "np=$np a second run on a directory in use: exit 2 naming the owner's host and pid"
  else
    bad "np=$np second run on a busy directory: exit $rc: $(head -2 "$tmp/second.txt")"
  fi
done
kill -0 $bgpid 2> /dev/null && ok "the first run goes on" || bad "the first run ended: $(tail -2 "$tmp/first.txt")"
kill -TERM $bgpid
bg_wait $bgpid
rc=$?
[ $rc = 0 ] && grep -q 'stopped by a signal' "$tmp/first.txt" && [ ! -e "$l/.dptrain.lock" ] &&
  ok "the first run stops cleanly and removes its lock" || bad "first run: exit $rc, lock $(ls -a "$l" | tr '\n' ' ')"

# --- a lock left by a killed run: taken over, and said so
bg "$bin" train "$tmp/long.ini" --set train.out_dir="$tmp/killed" > "$tmp/killed.txt" 2>&1
bgpid=$!
wait_for 10 test -s "$tmp/killed/checkpoints/ckpt-20.h5"
kill -KILL $bgpid
bg_wait $bgpid 2> /dev/null
if [ -s "$tmp/killed/.dptrain.lock" ]; then
  ok "a killed run leaves its lock file"
  if train 1 "$tmp/killed" "$tmp/taken.txt" --resume auto --set train.max_steps=45 &&
    grep -q "note: $tmp/killed/.dptrain.lock was left by a run that is gone (host .* pid [0-9]* since .*): taken over" "$tmp/taken.txt"; then
    ok "the next run takes the stale lock over and reports it"
  else
    bad "stale lock: $(head -3 "$tmp/taken.txt")"
  fi
else
  bad "no lock file after the kill: $(ls -a "$tmp/killed" | tr '\n' ' ')"
fi

finish
