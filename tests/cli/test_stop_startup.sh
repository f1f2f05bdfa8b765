#!/usr/bin/env bash
# A stop signal while a run is still starting up (reading its data, or its checkpoint once rank 0
# holds the run directory's lock) ends it at the end of that phase, before the first step: exit 0
# with one line, no checkpoint written or changed, no lock left. At 1 rank, and at 2 ranks under
# mpirun for each way of stopping it there. DPTRAIN_TEST_SLOW_STARTUP makes the phase take 3 s and
# says when it began; the 30 s bound fails only on a hang.
. "$(dirname "$0")/lib.sh"
need "$fbin"

make_synth "$tmp/syn.h5" 300 60 20 5 1
small_config "$tmp/c.ini" train.max_steps=20
line="stopped by a signal during start-up, before the first step: nothing trained, no checkpoint written"

# stop NAME NP PHASE SIGNAL TO WANT_RC OUT_DIR [args...]: starts a run whose PHASE is slow, sends
# SIGNAL to TO (job: the process started, mpirun at 2 ranks; rank1: rank 1 alone) once the phase
# began, and checks how it ends: exit WANT_RC, the line once, the checkpoints as they were, no lock.
stop() {
  local name=$1 np=$2 phase=$3 sig=$4 to=$5 want=$6 out=$7 before job rc
  shift 7
  before=$(md5sum "$out"/checkpoints/* 2> /dev/null)
  if [ "$np" = 1 ]; then
    DPTRAIN_TEST_SLOW_STARTUP=$phase:3 bg "$fbin" train "$tmp/c.ini" --set train.out_dir="$out" "$@" > "$tmp/log.txt" 2>&1
  else
    DPTRAIN_TEST_SLOW_STARTUP=$phase:3 bg "${mpi[@]}" -np 2 -x DPTRAIN_TEST_SLOW_STARTUP "$fbin" train "$tmp/c.ini" \
      --set train.out_dir="$out" "$@" > "$tmp/log.txt" 2>&1
  fi
  job=$!
  wait_for 20 grep -q 'fault: slow start-up' "$tmp/log.txt" || bad "$name: the slow phase never began"
  if [ "$to" = rank1 ]; then
    kill -"$sig" "$(rank_pid "$tmp/c.ini" 1)"
  else
    kill -"$sig" $job
  fi
  wait_for 30 eval '! kill -0 $job 2> /dev/null' || { bad "$name: still running 30 s after the signal"; kill -KILL $job; }
  bg_wait $job
  rc=$?
  if [ $rc = "$want" ] && [ "$(grep -cF "$line" "$tmp/log.txt")" = 1 ] && ! grep -q 'dptrain: error' "$tmp/log.txt" &&
    [ "$before" = "$(md5sum "$out"/checkpoints/* 2> /dev/null)" ] && [ ! -e "$out/.dptrain.lock" ]; then
    ok "$name: exit $want, one line, the checkpoints as they were, no lock left"
  else
    bad "$name: exit $rc: $(grep -v '^fault' "$tmp/log.txt" | head -3) / $(ls -a "$out" "$out/checkpoints" 2> /dev/null | tr '\n' ' ')"
  fi
}

stop "np=1 SIGTERM while reading the data" 1 data TERM job 0 "$tmp/a1"
stop "np=1 SIGINT while the lock is held" 1 checkpoint INT job 0 "$tmp/a2"
# A resumed run: its checkpoint stays the newest, unchanged.
timeout 30 "$bin" train "$tmp/c.ini" --quiet --set train.max_steps=10 --set train.out_dir="$tmp/r" ||
  bad "set-up run failed"
stop "np=1 SIGTERM while resuming" 1 checkpoint TERM job 0 "$tmp/r" --resume auto
stop "np=2 SIGUSR1 to mpirun while reading the data" 2 data USR1 job 0 "$tmp/b1"
stop "np=2 SIGTERM to rank 1 while reading the data" 2 data TERM rank1 0 "$tmp/b2"
# SIGTERM to mpirun: its SIGCONT is the stop; a phase longer than its kill delay (2 s) needs a longer
# one (mpirun then ends the stopped ranks only after it).
export OMPI_MCA_odls_base_sigkill_timeout=4
stop "np=2 SIGTERM to mpirun while resuming (mpirun exits 1)" 2 checkpoint TERM job 1 "$tmp/r" --resume auto
unset OMPI_MCA_odls_base_sigkill_timeout
timeout 60 "$bin" train "$tmp/c.ini" --quiet --set train.out_dir="$tmp/r" --resume auto &&
  [ -f "$tmp/r/checkpoints/ckpt-20.h5" ] && ok "the run stopped during start-up resumes afterwards" ||
  bad "resume after the stops failed"

finish
