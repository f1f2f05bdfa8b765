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
. "$(dirname "$0")/lib.sh"
fuzz=$root/tests/fuzz
# the inputs' temp files go to a directory of our own, removed at the end
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
      { cat "$tmp/make.log"; bad "$bin: cannot build"; continue; }
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
      ok "$t: corpus (${#corpus[@]} inputs)"
    else
      for f in "${corpus[@]}"; do
        run "$bin" "$f" && continue
        rc=$?
        bad "$t: corpus/$t/$(basename "$f") (exit $rc)"
        head -30 "$tmp/out" | sed 's/^/    /'
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
        xfail "$t: regressions/$t/$name (known bug, asan-only: not detectable in this build)"
      elif [ $rc = 0 ]; then
        xpass "$t: regressions/$t/$name (listed in KNOWN, now passes: take it off the list)"
      else
        xfail "$t: regressions/$t/$name (known bug, exit $rc)"
      fi
      ;;
    *)
      if [ $rc = 0 ]; then
        ok "$t: regressions/$t/$name"
      else
        bad "$t: regressions/$t/$name (exit $rc)"
        head -30 "$tmp/out" | sed 's/^/    /'
      fi
      ;;
    esac
  done
done

finish "$passes passed, $xfails xfail, $xpasses XPASS, $fails failed"
