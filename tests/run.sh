#!/usr/bin/env bash
# The whole test suite: cmocka unit tests, the multi-rank tests under mpirun with 1, 2 and 3 ranks,
# and the command-line tests. Every test runs under a timeout, so a hang fails instead of blocking.
# Ends with one line: "tests: N passed, N failed".
set -u
build=${1:-build}
export BUILD=$build
pass=0
fail=0
failed=()

run() {
  local name=$1
  shift
  echo "=== $name"
  local t0=$SECONDS
  if timeout --kill-after=5 "${TEST_TIMEOUT:-240}" "$@"; then
    pass=$((pass + 1))
    echo "--- ok: $name ($((SECONDS - t0)) s)"
  else
    echo "--- FAILED: $name (exit $?)"
    fail=$((fail + 1))
    failed+=("$name")
  fi
}

for t in "$build"/tests/test_*; do
  [ -x "$t" ] || continue
  case "$(basename "$t")" in test_parallel) continue ;; esac
  run "$(basename "$t")" "$t"
done

# np > cores needs --oversubscribe; 2-core machines are the norm here.
for np in 1 2 3; do
  run "test_parallel -np $np" mpirun -np "$np" --oversubscribe ${MPIRUN_FLAGS:-} "$build/tests/test_parallel"
done

for s in tests/cli/test_*.sh; do # not lib.sh, which they source
  run "$(basename "$s")" bash "$s" "$build"
done

echo
[ $fail -gt 0 ] && printf 'failed: %s\n' "${failed[@]}"
echo "tests: $pass passed, $fail failed"
[ $fail -eq 0 ]
