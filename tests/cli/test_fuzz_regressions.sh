#!/usr/bin/env bash
# Replays the fuzz targets' seed corpus (tests/fuzz/corpus/<target>/) and their regression inputs
# (tests/fuzz/regressions/<target>/) through the targets built without libFuzzer
# ($build/tests/fuzzrun_<target>, from tests/fuzz/fuzz_<target>.c and tests/fuzz/run_inputs.c, part
# of `make tests`; built here with make when missing). Every input must return normally: a crash
# (exit >= 128), a sanitizer report or any non-zero exit fails the test.
#
# A regression input that still crashes because its bug is not fixed yet is listed, by file name,
# in tests/fuzz/regressions/<target>/KNOWN (one per line; '#' starts a comment): it runs and prints
# "xfail" (or "XPASS" once fixed: then take it off the list) but does not fail the test. A name
# followed by "asan-only" is a silent memory error: without ASan in the runner it passes anyway,
# which prints "xfail" too, not XPASS.
# Ends with "test_fuzz_regressions.sh: N failed".
set -u
build=${1:-build}
root=$(cd "$(dirname "$0")/../.." && pwd)
fuzz=$root/tests/fuzz
fails=0 passes=0 xfails=0 xpasses=0
# the inputs' temp files go to a directory of our own, removed at the end
tmp=$(mktemp -d /tmp/dptrain-fuzzreg-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export DPTRAIN_FUZZ_TMPDIR=$tmp

targets=()
for src in "$fuzz"/fuzz_*.c; do
  t=$(basename "$src" .c)
  targets+=("${t#fuzz_}")
done

for t in "${targets[@]}"; do
  bin=$build/tests/fuzzrun_$t
  if [ ! -x "$bin" ]; then
    make -C "$root" --no-print-directory BUILD="$build" "$bin" > "$tmp/make.log" 2>&1 ||
      { cat "$tmp/make.log"; echo "FAIL - $bin: cannot build"; fails=$((fails + 1)); continue; }
  fi
done

# run BIN FILE...: the exit status, with the output saved in $tmp/out
run() {
  timeout --kill-after=2 20 "$@" > "$tmp/out" 2>&1
}

for t in "${targets[@]}"; do
  bin=$build/tests/fuzzrun_$t
  [ -x "$bin" ] || continue
  # the corpus in one process (fast); on a failure each file alone, to name it
  corpus=("$fuzz/corpus/$t"/*)
  if [ -e "${corpus[0]}" ]; then
    if run "$bin" "${corpus[@]}"; then
      echo "ok   - $t: corpus (${#corpus[@]} inputs)"
      passes=$((passes + 1))
    else
      for f in "${corpus[@]}"; do
        run "$bin" "$f" && continue
        rc=$?
        echo "FAIL - $t: corpus/$t/$(basename "$f") (exit $rc)"
        head -30 "$tmp/out" | sed 's/^/    /'
        fails=$((fails + 1))
      done
    fi
  fi
  dir=$fuzz/regressions/$t
  [ -d "$dir" ] || continue
  known=" " asan_only=" "
  if [ -f "$dir/KNOWN" ]; then
    known=" $(sed 's/#.*//' "$dir/KNOWN" | awk 'NF { print $1 }' | tr '\n' ' ') "
    asan_only=" $(sed 's/#.*//' "$dir/KNOWN" | awk '$2 == "asan-only" { print $1 }' | tr '\n' ' ') "
  fi
  has_asan=0
  grep -q __asan_init "$bin" 2> /dev/null && has_asan=1
  for f in "$dir"/*; do
    name=$(basename "$f")
    case "$name" in KNOWN | README* | *.md) continue ;; esac
    run "$bin" "$f"
    rc=$?
    case "$known" in
    *" $name "*)
      if [ $rc = 0 ] && [ $has_asan = 0 ] && case "$asan_only" in *" $name "*) true ;; *) false ;; esac then
        echo "xfail - $t: regressions/$t/$name (known bug, asan-only: not detectable in this build)"
        xfails=$((xfails + 1))
      elif [ $rc = 0 ]; then
        echo "XPASS - $t: regressions/$t/$name (listed in KNOWN, now passes: take it off the list)"
        xpasses=$((xpasses + 1))
      else
        echo "xfail - $t: regressions/$t/$name (known bug, exit $rc)"
        xfails=$((xfails + 1))
      fi
      ;;
    *)
      if [ $rc = 0 ]; then
        echo "ok   - $t: regressions/$t/$name"
        passes=$((passes + 1))
      else
        echo "FAIL - $t: regressions/$t/$name (exit $rc)"
        head -30 "$tmp/out" | sed 's/^/    /'
        fails=$((fails + 1))
      fi
      ;;
    esac
  done
done

echo "test_fuzz_regressions.sh: $passes passed, $xfails xfail, $xpasses XPASS, $fails failed"
[ $fails -eq 0 ]
