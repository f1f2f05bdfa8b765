#!/usr/bin/env bash
# The make targets users start by hand: `make run NP=3` on a machine with fewer cores, with and
# without MPIRUN_FLAGS, which reaches every mpirun make starts; `make bench` says no issue numbers.
. "$(dirname "$0")/lib.sh"
need "$bin"

make_synth "$tmp/syn.h5" 300 60 8 3 1
small_config "$tmp/tiny.ini" layer.0.units=8 layer.1.units=3 train.batch_size=30 train.epochs=1 train.max_steps=3 \
  train.log_every= train.out_dir="$tmp/run"
absb=$(cd "$build" && pwd)
# make run plots into the tree's run.png: the user's own is put back afterwards.
if [ -e "$root/run.png" ]; then cp -p "$root/run.png" "$tmp/user-run.png"; fi
on_exit() { if [ -e "$tmp/user-run.png" ]; then mv -f "$tmp/user-run.png" "$root/run.png"; else rm -f "$root/run.png"; fi; }
# -o all -o deps: the tree may be mid-edit and the packages are there (make test installed them);
# DATA_DIR: the Fashion-MNIST conversion `make run` asks for goes to the temp dir, not data/.
# run_make NAME WANT_FLAGS NOT_WANT ARGS...: make run ARGS trains, and its mpirun line has WANT_FLAGS.
run_make() {
  local name=$1 want=$2 not=$3 line
  shift 3
  rm -rf "$tmp/run"
  DATA_DIR=$tmp/data timeout 120 make -s -o all -o deps -C "$root" run BUILD="$absb" CONFIG="$tmp/tiny.ini" "$@" \
    > "$tmp/make.txt" 2>&1
  local rc=$?
  line=$(grep -m1 '^mpirun -np' "$tmp/make.txt")
  if [ $rc = 0 ] && [[ "$line" == *"$want"* ]] && { [ -z "$not" ] || [[ "$line" != *"$not"* ]]; } &&
    grep -q '^dptrain: ' "$tmp/make.txt" && [ -s "$tmp/run/metrics.jsonl" ]; then
    ok "$name: $line"
  else
    bad "$name: exit $rc, line '$line': $(grep -v '^ok' "$tmp/make.txt" | head -8)"
  fi
}
cores=$(nproc)
np=$((cores + 1))
run_make "make run NP=$np MPIRUN_FLAGS=--oversubscribe" "-np $np --oversubscribe" "--bind-to" NP=$np MPIRUN_FLAGS=--oversubscribe
run_make "make run NP=$np (more ranks than cores by itself)" "-np $np --oversubscribe" "--bind-to" NP=$np
run_make "make run NP=1 keeps a core per rank" "-np 1 --bind-to core" "" NP=1
run_make "make run: MPIRUN_FLAGS reaches mpirun" "--bind-to none --report-bindings" "--bind-to core" NP=2 \
  MPIRUN_FLAGS="--bind-to none --report-bindings"
grep -q 'not bound\|bound: UNBOUND\|unbound' "$tmp/make.txt" && ok "make run: --report-bindings took effect" ||
  echo "note - --report-bindings printed no binding line here"

# MPIRUN_FLAGS reaches the scripts' mpirun too (bench, soak and the test suite read it from make).
out=$(MPIRUN_FLAGS="--mca btl self,vader" bash -c ". '$root/tests/cli/lib.sh' '$build' > /dev/null; echo \"\${mpi[*]}\"")
[[ "$out" == "mpirun --oversubscribe --mca btl self,vader" ]] && ok "lib.sh: MPIRUN_FLAGS in its mpirun" ||
  bad "lib.sh mpirun: '$out'"
grep -q 'MPIRUN_FLAGS' "$root/scripts/bench.sh" "$root/scripts/soak.sh" "$root/tests/run.sh" &&
  ok "bench.sh, soak.sh, run.sh read MPIRUN_FLAGS" || bad "a script ignores MPIRUN_FLAGS"

# What `make bench` (and every other command) prints comes from these: figures and targets, never
# the tracker's issue numbers.
hits=$(grep -nEi '\bissues? ?#?[0-9]|#[0-9]+' "$root"/scripts/* "$root"/src/*.[ch] "$root/Makefile" | head -3)
[ -z "$hits" ] && ok "make bench and the program: no issue numbers in what they print" || bad "issue numbers: $hits"

finish
