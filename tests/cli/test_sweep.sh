#!/usr/bin/env bash
# `dptrain sweep` end to end: a log grid of step sizes on synthetic data. The result for a step size
# must not depend on how many groups run at once (1 rank vs 2 ranks in 2 groups: identical), nor,
# beyond rounding, on how many ranks train it (2 ranks in 1 group); the largest step sizes diverge
# and are marked; the best step size is reported; errors print one line at 1 and 2 ranks, no abort.
. "$(dirname "$0")/lib.sh"

make_synth "$tmp/syn.h5" 1000 0 20 5 1
cat > "$tmp/s.ini" <<EOC
[data]
path = $tmp/syn.h5
[layer]
units = 32
activation = tanh
[layer]
units = 5
activation = identity
[optimizer]
name = sgd
[train]
batch_size = 50
out_dir = $tmp/out
[sweep]
steps = 60
EOC

sweep() { # name, np, extra args...
  local name=$1 np=$2
  shift 2
  if at_np "$np" 120 "$bin" sweep "$tmp/s.ini" --lr 1e-3:1000:7 -o "$tmp/$name.csv" "$@" \
    > "$tmp/$name.txt" 2>&1; then
    ok "$name: sweep ran"
  else
    bad "$name: sweep failed: $(tail -3 "$tmp/$name.txt")"
  fi
}
sweep one 1
sweep groups 2 --ranks-per-run 1
sweep dp 2 --ranks-per-run 2

[ "$(wc -l < "$tmp/one.csv")" = 8 ] && ok "sweep.csv has a header and 7 rows" || bad "sweep.csv: $(cat "$tmp/one.csv")"
cmp -s "$tmp/one.csv" "$tmp/groups.csv" && ok "2 groups give the same results as 1" ||
  bad "2 groups differ from 1: $(diff "$tmp/one.csv" "$tmp/groups.csv")"
# The 2-rank data-parallel runs agree on the runs that did not diverge: within 1e-4 relative, as
# rounding differences (the shards sum in another order) grow over 60 steps, most at small losses.
if paste -d, "$tmp/one.csv" "$tmp/dp.csv" | awk -F, 'NR > 1 && $4 == 0 {
       d = $2 - $7; if (d < 0) d = -d; if (d > 1e-4 * $2) bad = 1 }
     END { exit bad }'; then
  ok "2 ranks per run agree with 1 within 1e-4"
else
  bad "2 ranks per run differ: $(paste -d' ' "$tmp/one.csv" "$tmp/dp.csv")"
fi
awk -F, '$1 == 1000 && $4 == 1 { found = 1 } END { exit !found }' "$tmp/one.csv" &&
  ok "lr 1000 diverged" || bad "lr 1000 not marked diverged: $(cat "$tmp/one.csv")"
awk -F, '$1 == 0.001 && $4 == 0 { found = 1 } END { exit !found }' "$tmp/one.csv" &&
  ok "lr 0.001 did not diverge" || bad "lr 0.001 marked diverged"
grep -q '^best lr: ' "$tmp/one.txt" && ok "prints the best lr" || bad "no best lr line: $(cat "$tmp/one.txt")"
grep -q '<- best' "$tmp/one.txt" && ok "marks the best row" || bad "no best row"

# Errors: one "dptrain: error:" line at 1 and 2 ranks, the right exit code, no Open MPI abort banner
# (ranks that agree on an error end without MPI_Abort).
printf '[data]\npath = x.h5\n[layer]\nunits = 4\n[train]\nepochs = 1\n[train]\nseed = 2\n' > "$tmp/dup.ini"
while IFS='|' read -r code text args; do
  code=${code// /} text=$(sed 's/^ *//; s/ *$//' <<< "$text")
  for np in 1 2; do
    # shellcheck disable=SC2086
    at_np $np 30 "$bin" sweep $args > "$tmp/err.txt" 2>&1 < /dev/null
    rc=$?
    n=$(grep -c 'dptrain: error:' "$tmp/err.txt")
    if [ $rc = "$code" ] && [ "$n" = 1 ] && grep -qF -- "$text" "$tmp/err.txt" &&
      ! grep -q 'MPI_ABORT' "$tmp/err.txt"; then
      ok "np=$np sweep$args: exit $rc, one line"
    else
      bad "np=$np sweep$args: exit $rc, $n error lines: $(grep -e dptrain -e MPI_ABORT "$tmp/err.txt" | head -3)"
    fi
  done
done << EOC
2 | --lr 'abc': expected | $tmp/s.ini --lr abc
2 | --steps expects a positive integer | $tmp/s.ini --steps 0
2 | must divide the | $tmp/s.ini --ranks-per-run 3
2 | duplicate section [train] | $tmp/dup.ini
1 | cannot open data file | $tmp/s.ini --lr 0.1 --set data.path=$tmp/none.h5
2 | unknown option '--bogus' | $tmp/s.ini --bogus
EOC

finish
