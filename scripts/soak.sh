#!/usr/bin/env bash
# `make soak` (not in CI): 2 ranks, many short epochs, checkpoints every few steps, and random
# SIGTERM / --resume auto cycles; the final weights and optimizer state must equal an uninterrupted
# run's bit for bit. Usage: scripts/soak.sh [BUILD_DIR] [CYCLES]
set -u
build=${1:-build}
cycles=${2:-20}
bin=$build/dptrain
tmp=$(mktemp -d /tmp/dptrain-soak-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
read -ra extra <<< "${MPIRUN_FLAGS:-}" # extra mpirun options, from make
mpi=(mpirun -np 2 --oversubscribe "${extra[@]}")
[ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)

"$build/tests/make_synth" "$tmp/syn.h5" 600 100 20 5 7 > /dev/null || exit 1
cat > "$tmp/soak.ini" <<EOC
[data]
path = $tmp/syn.h5
[layer]
units = 32
activation = tanh
norm = batch
[layer]
units = 5
activation = identity
[optimizer]
name = adam
lr = 0.003
[train]
batch_size = 50
epochs = 600
log_every = 12
[checkpoint]
every_steps = 7
keep_last = 2
EOC
total=$((600 * 12))

echo "soak: uninterrupted run of $total steps"
"${mpi[@]}" "$bin" train "$tmp/soak.ini" -q --set train.out_dir="$tmp/ref" || { echo "soak: reference run failed"; exit 1; }

rank_pid() { # out_dir: the pid of rank 1
  for p in $(pgrep -f -- "$1"); do
    tr '\0' '\n' < /proc/$p/environ 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1" && { echo $p; return; }
  done
}
stops=0
for c in $(seq "$cycles"); do
  "${mpi[@]}" "$bin" train "$tmp/soak.ini" --set train.out_dir="$tmp/run" --resume auto > "$tmp/cycle.txt" 2>&1 &
  job=$!
  sleep "0.$((RANDOM % 9 + 1))"
  pid=$(rank_pid "$tmp/run")
  [ -n "$pid" ] && kill -TERM "$pid" 2> /dev/null
  wait $job
  rc=$?
  grep -q 'stopped by a signal' "$tmp/cycle.txt" && stops=$((stops + 1))
  [ $rc = 0 ] || { echo "soak: cycle $c exited $rc: $(tail -3 "$tmp/cycle.txt")"; exit 1; }
  [ -f "$tmp/run/checkpoints/ckpt-$total.h5" ] && break
done
echo "soak: $stops signal stops; finishing"
"${mpi[@]}" "$bin" train "$tmp/soak.ini" -q --set train.out_dir="$tmp/run" --resume auto ||
  { echo "soak: the last resume failed"; exit 1; }
for g in /model /optimizer; do
  if ! h5diff "$tmp/ref/checkpoints/ckpt-$total.h5" "$tmp/run/checkpoints/ckpt-$total.h5" $g > "$tmp/diff.txt"; then
    echo "soak: FAIL: $g differs from the uninterrupted run: $(head -5 "$tmp/diff.txt")"
    exit 1
  fi
done
echo "soak: PASS: $stops SIGTERM/resume cycles, final weights and optimizer state bit-identical"
