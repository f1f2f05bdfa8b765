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
# A script redefines on_exit for clean-up of its own (a mount) before $tmp goes; its background jobs
# (bg) are ended first.
on_exit() { :; }
trap 'bg_end_all; on_exit; rm -rf "$tmp"' EXIT

# bg COMMAND...: COMMAND in the background, its pid in $! as usual and recorded, so that a script that
# fails half-way leaves no process behind: the exit trap kills and reaps what is still recorded. So
# COMMAND is a program (or timeout, which passes the signal on), not a shell function, whose
# subshell would die alone. bg_wait PID: waits for it and forgets it; returns its exit status.
bg_pids=()
bg() {
  "$@" &
  bg_pids+=("$!")
}
bg_wait() {
  local rc p keep=()
  wait "$1"
  rc=$?
  for p in "${bg_pids[@]}"; do
    [ "$p" = "$1" ] || keep+=("$p")
  done
  bg_pids=("${keep[@]}")
  return $rc
}
bg_end_all() {
  local p
  for p in "${bg_pids[@]}"; do
    kill "$p" 2> /dev/null && wait "$p" 2> /dev/null
  done
  bg_pids=()
}
# wait_for SECONDS COMMAND...: runs COMMAND every 0.1 s until it succeeds (0) or SECONDS pass (1).
wait_for() {
  local i n=$(($1 * 10))
  shift
  for ((i = 0; i < n; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

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

# small_config FILE [SECTION.KEY=VALUE ...]: the small config most scripts train, on $tmp/syn.h5 (20
# inputs, 5 classes, as make_synth makes it): a 32-unit relu layer and a 5-unit output, SGD with
# momentum, batch 60, 40 steps, logging every 5, into $tmp/unused. Each argument replaces a key in
# its section, or adds it there (a missing section goes at the end), as --set names it: train.epochs=2,
# layer.0.units=64, checkpoint.every_steps=20; an empty value (train.max_steps=) removes the key.
small_config() {
  local file=$1
  shift
  printf '%s\n' "[data]" "path = $tmp/syn.h5" "[layer]" "units = 32" "activation = relu" "[layer]" "units = 5" \
    "activation = identity" "[optimizer]" "name = sgd" "lr = 0.05" "momentum = 0.9" "[train]" "batch_size = 60" \
    "epochs = 100" "max_steps = 40" "log_every = 5" "out_dir = $tmp/unused" |
    awk -v sets="$(printf '%s\n' "$@")" '
      function put(j) { done[j] = 1; if (val[j] != "") print key[j] " = " val[j] }
      function flush(s, j) { for (j = 1; j <= n; j++) if (!done[j] && sec[j] == s) put(j) }
      BEGIN {
        m = split(sets, a, "\n")
        for (i = 1; i <= m; i++) {
          if (a[i] == "") continue
          eq = index(a[i], "="); name = substr(a[i], 1, eq - 1); match(name, /\.[^.]*$/)
          n++; sec[n] = substr(name, 1, RSTART - 1); key[n] = substr(name, RSTART + 1); val[n] = substr(a[i], eq + 1)
        }
      }
      /^\[/ { flush(cur); s = substr($0, 2, length($0) - 2); cur = s == "layer" ? "layer." layers++ : s; print; next }
      { k = $1; for (j = 1; j <= n; j++) if (!done[j] && sec[j] == cur && key[j] == k) { put(j); next } print }
      END {
        flush(cur)
        for (j = 1; j <= n; j++) if (!done[j]) { print "[" (sec[j] ~ /^layer\./ ? "layer" : sec[j]) "]"; flush(sec[j]) }
      }' > "$file"
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
