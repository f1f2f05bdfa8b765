# The scaffolding every tests/cli/*.sh shares; each sources it first: . "$(dirname "$0")/lib.sh"
# Every script takes the build directory as $1 (default build) and ends with finish, whose line
# "<script>: N failed" is what tests/run.sh and CI read.
set -u
script=$(basename "$0")
build=${1:-build}
bin=$build/dptrain
# The test build: the same sources with the fault-injection hooks of src/faults.h, which the release
# binary must not have. Only the tests that set DPTRAIN_TEST_* run it.
fbin=$build/test/dptrain
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

tmp=$(mktemp -d "/tmp/dptrain-${script%.sh}-XXXXXX")
# A script redefines on_exit for clean-up of its own (a mount, a background job) before $tmp goes.
on_exit() { :; }
trap 'on_exit; rm -rf "$tmp"' EXIT

fails=0 passes=0 xfails=0 xpasses=0
ok() { echo "ok   - $1"; passes=$((passes + 1)); }
bad() { echo "FAIL - $1"; fails=$((fails + 1)); }
# Known bugs: they run and are reported, but do not fail the script.
xfail() { echo "xfail - $1"; xfails=$((xfails + 1)); }
xpass() { echo "XPASS - $1"; xpasses=$((xpasses + 1)); }
# finish [SUMMARY]: prints "<script>: SUMMARY" (default "N failed") and exits, non-zero after a failure.
finish() {
  echo "$script: ${1:-$fails failed}"
  exit $((fails > 0))
}

# need FILE...: ends the script at once when one of the programs `make tests` builds is missing.
need() {
  local f
  for f; do
    [ -x "$f" ] || { echo "$script: $f missing (make tests)"; exit 1; }
  done
}

# make_synth OUT.h5 N_TRAIN N_TEST DIM CLASSES SEED: synthetic data (tests/tools/make_synth.c).
make_synth() {
  "$build/tests/make_synth" "$@" > /dev/null || { echo "$script: make_synth $* failed"; exit 1; }
}

# Open MPI refuses to run as root unless told: the Makefile says so, this is for a script run by hand.
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# More ranks than cores: 2-core machines are the norm here. MPIRUN_FLAGS (make passes it on) adds
# options of the user's own.
read -ra mpirun_flags <<< "${MPIRUN_FLAGS:-}"
mpi=(mpirun --oversubscribe "${mpirun_flags[@]}")

# at_np NP SECONDS COMMAND...: COMMAND under `timeout SECONDS` (SIGKILL 2 s later, for a rank that
# ignores SIGTERM), by itself at 1 rank, under mpirun at more, which gets the DPTRAIN_* variables.
# Its exit status is the command's (124 or 137 when timed out).
at_np() {
  local np=$1 secs=$2 v fwd=()
  shift 2
  if [ "$np" -gt 1 ]; then
    for v in $(compgen -e DPTRAIN_); do
      fwd+=(-x "$v")
    done
    set -- "${mpi[@]}" -np "$np" "${fwd[@]}" "$@"
  fi
  timeout --kill-after=2 "$secs" "$@"
}

# rank_pid PATTERN RANK: the pid of rank RANK of the job whose command line holds PATTERN: the process
# with that rank in its environment (timeout's and mpirun's command lines match too; dptrain may
# re-execute itself through /proc/self/exe, so its name is no guide).
rank_pid() {
  local p
  for p in $(pgrep -f -- "$1"); do
    tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && { echo "$p"; return; }
  done
}
