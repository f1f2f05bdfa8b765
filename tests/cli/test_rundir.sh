#!/usr/bin/env bash
# One run per run directory: a fresh run into a directory that holds another run's checkpoints is
# refused (exit 2, naming the directory, its newest checkpoint and the ways on) and changes nothing;
# --overwrite moves the old run aside instead of deleting anything; a second run on a directory in
# use is refused while the first goes on; a lock left by a killed run is taken over and reported.
. "$(dirname "$0")/lib.sh"
bgpid=
on_exit() { [ -n "$bgpid" ] && kill "$bgpid" 2> /dev/null && wait "$bgpid" 2> /dev/null; }

make_synth "$tmp/syn.h5" 1000 200 20 5 1
cat > "$tmp/c.ini" <<EOC
[data]
path = $tmp/syn.h5
[layer]
units = 32
[layer]
units = 5
activation = identity
[optimizer]
name = sgd
lr = 0.05
momentum = 0.9
[train]
batch_size = 60
epochs = 100
max_steps = 40
log_every = 5
out_dir = $tmp/unused
[checkpoint]
every_steps = 20
keep_last = 1
EOC
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
# Not under timeout: $! must be dptrain's own pid (on_exit ends it if the script fails).
"$bin" train "$tmp/long.ini" --set train.out_dir="$l" > "$tmp/first.txt" 2>&1 &
bgpid=$!
for _ in $(seq 100); do
  [ -s "$l/metrics.jsonl" ] && break
  sleep 0.1
done
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
wait $bgpid
rc=$?
bgpid=
[ $rc = 0 ] && grep -q 'stopped by a signal' "$tmp/first.txt" && [ ! -e "$l/.dptrain.lock" ] &&
  ok "the first run stops cleanly and removes its lock" || bad "first run: exit $rc, lock $(ls -a "$l" | tr '\n' ' ')"

# --- a lock left by a killed run: taken over, and said so
"$bin" train "$tmp/long.ini" --set train.out_dir="$tmp/killed" > "$tmp/killed.txt" 2>&1 &
bgpid=$!
for _ in $(seq 100); do
  [ -s "$tmp/killed/checkpoints/ckpt-20.h5" ] && break
  sleep 0.1
done
kill -KILL $bgpid
wait $bgpid 2> /dev/null
bgpid=
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
