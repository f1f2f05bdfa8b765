#!/usr/bin/env bash
# `dptrain predict`: the /test split by default and --split train, HDF5 and CSV inputs, .h5 (/y,
# /label) and .csv outputs and standard output, the same outputs at 1, 2 and 3 ranks over several
# rounds of rows; n = 0; a checkpoint from before the stored input transform; every bad input (wrong
# width, NaN or Inf rows, truncated, damaged or foreign checkpoints, ...) one error line with its exit
# code at 1 and 2 ranks, and no output left behind.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/infer_lib.sh"
need "$bin" "$build/tests/ckpt_tamper"
make_models || { bad "training the models"; finish; }

# h5_values FILE DATASET: the dataset's values one per line.
h5_values() { h5dump -d "$2" -y -w 0 -m '%.9g' "$1" | sed -n '/DATA {/,/}/p' | tr -s ', ' '\n\n' | grep -E '^-?[0-9]'; }

"$bin" predict "$tmp/bn.h5" "$tmp/class.h5" -o "$tmp/bn.h5.pred.h5" && "$bin" predict "$tmp/bn.h5" "$tmp/class.csv" \
  -o "$tmp/bn.csv.pred.csv" || bad "predict on the HDF5 and the CSV test split"
# The /test split of class.h5 is class.csv: /y and /label equal the CSV's columns.
h5_values "$tmp/bn.h5.pred.h5" /y > "$tmp/y.h5.txt"
tail -n +2 "$tmp/bn.csv.pred.csv" | cut -d, -f1-3 | tr ',' '\n' > "$tmp/y.csv.txt"
d=$(paste -d, "$tmp/y.h5.txt" "$tmp/y.csv.txt" | awk -F, '{ x = $1 - $2; if (x < 0) x = -x; if (x > m) m = x } END { print NR ? m + 0 : "none" }')
[ "$(wc -l < "$tmp/y.h5.txt")" = 450 ] && within "$d" 1e-6 && ok "HDF5 input, .h5 output: /y (150, 3) equals the CSV path's" ||
  bad "/y vs the CSV: $(wc -l < "$tmp/y.h5.txt") values, max difference $d"
h5_values "$tmp/bn.h5.pred.h5" /label > "$tmp/l.h5.txt"
tail -n +2 "$tmp/bn.csv.pred.csv" | cut -d, -f4 | cmp -s - "$tmp/l.h5.txt" && ok "/label is the CSV's label column (argmax)" ||
  bad "/label differs from the CSV's labels"
head -1 "$tmp/bn.csv.pred.csv" | grep -qx 'y0,y1,y2,label' && ok "the CSV header names y0..y2 and label" ||
  bad "CSV header: $(head -1 "$tmp/bn.csv.pred.csv")"
"$bin" predict "$tmp/mse.h5" "$tmp/reg.h5" -o "$tmp/mse.pred.h5" && h5ls "$tmp/mse.pred.h5" > "$tmp/ls" &&
  grep -q '^y .*{150/Inf, 1}' "$tmp/ls" && ! grep -q '^label' "$tmp/ls" && ok "mse: /y (150, 1), no /label" ||
  bad "mse output: $(cat "$tmp/ls")"
"$bin" predict "$tmp/mse.h5" "$tmp/reg.csv" > "$tmp/stdout.csv" && head -1 "$tmp/stdout.csv" | grep -qx y0 &&
  [ "$(wc -l < "$tmp/stdout.csv")" = 151 ] && ok "without -o the CSV goes to standard output" || bad "predict to stdout"

# 9000 rows: rounds of 4096 rows per rank, so 3 rounds at 1 rank, 2 at 2, 1 at 3.
gen_csv "$tmp/big.csv" 9000 5 class
"$bin" convert csv "$tmp/big.csv" -o "$tmp/big.h5" > /dev/null || bad "convert big.csv"
for np in 1 2 3; do
  at_np $np 60 "$bin" predict "$tmp/ln.h5" "$tmp/big.h5" --split train -o "$tmp/big.$np.csv" 2> "$tmp/err" ||
    bad "$np ranks: $(cat "$tmp/err")"
done
for np in 2 3; do
  d=$(max_diff "$tmp/big.1.csv" "$tmp/big.$np.csv") && within "$d" 1e-6 &&
    ok "9000 rows at $np ranks equal 1 rank's (max difference $d)" || bad "$np ranks vs 1: ${d:-failed}"
done
at_np 2 60 "$bin" predict "$tmp/ln.h5" "$tmp/big.csv" -o "$tmp/big.csvin.csv" && d=$(max_diff "$tmp/big.1.csv" "$tmp/big.csvin.csv") &&
  within "$d" 1e-6 && ok "a CSV input at 2 ranks equals the HDF5 input" || bad "CSV input at 2 ranks: ${d:-failed}"
at_np 2 60 "$bin" predict "$tmp/ln.h5" "$tmp/big.h5" --split train -o "$tmp/big.2.h5" && h5ls "$tmp/big.2.h5" |
  grep -q '^label .*{9000' && ok "an .h5 output at 2 ranks holds all 9000 rows" || bad ".h5 output at 2 ranks"

printf 'a,b,c,d,e,f,label\n' > "$tmp/empty.csv"
"$bin" predict "$tmp/bn.h5" "$tmp/empty.csv" -o "$tmp/empty.h5" && h5ls "$tmp/empty.h5" | grep -q '^y .*{0/Inf, 3}' &&
  ok "n = 0: an empty input gives an empty /y" || bad "n = 0: $(h5ls "$tmp/empty.h5" 2>&1)"

# A checkpoint from before /input/scale and /input/shift: the transform from the data file's scale
# attribute and the stored [data] mean and std, as training applied it then.
if /usr/bin/python3 -c 'import h5py' 2> /dev/null; then
  cp "$tmp/bn.h5" "$tmp/old.h5"
  /usr/bin/python3 -c 'import h5py, sys; f = h5py.File(sys.argv[1], "r+"); del f["input"]' "$tmp/old.h5"
  "$bin" predict "$tmp/old.h5" "$tmp/class.csv" -o "$tmp/old.csv" && d=$(max_diff "$tmp/bn.csv.pred.csv" "$tmp/old.csv") &&
    within "$d" 1e-6 && ok "a checkpoint without /input: the data file's scale and [data] mean, std" ||
    bad "old checkpoint: ${d:-failed}"
  mv "$tmp/class.h5" "$tmp/class.away.h5"
  "$bin" predict "$tmp/old.h5" "$tmp/class.csv" 2> "$tmp/err" >/dev/null
  grep -q "old.h5 predates the stored input transform" "$tmp/err" && ok "... and without its data file, a clear error" ||
    bad "old checkpoint without data: $(cat "$tmp/err")"
  mv "$tmp/class.away.h5" "$tmp/class.h5"
else
  echo "SKIPPED - checkpoints without /input: /usr/bin/python3 cannot import h5py (scripts/install-deps.sh --test)"
fi

# expect_error NAME EXIT PATTERN NP ARGS...: predict fails with that exit and one error line matching.
expect_error() {
  local name=$1 want=$2 pat=$3 np=$4 rc
  shift 4
  at_np "$np" 60 "$bin" predict "$@" > /dev/null 2> "$tmp/err"
  rc=$?
  if [ $rc = "$want" ] && [ "$(grep -c '^dptrain: error:' "$tmp/err")" = 1 ] && grep -q -- "$pat" "$tmp/err"; then
    ok "$name ($np rank$([ "$np" = 1 ] || echo s)): exit $want"
  else
    bad "$name ($np ranks): exit $rc, $(cat "$tmp/err")"
  fi
}
cut -d, -f1-5 "$tmp/class.csv" > "$tmp/narrow.csv"
"$bin" convert csv "$tmp/narrow.csv" --regression -o "$tmp/narrow.h5" > /dev/null
awk -F, -v OFS=, 'NR == 100 { $3 = "nan" } 1' "$tmp/big.csv" > "$tmp/nan.csv"
awk -F, -v OFS=, 'NR == 5001 { $2 = "inf" } 1' "$tmp/big.csv" > "$tmp/inf.csv" # rank 1's rows at 2 ranks
head -c 3000 "$tmp/bn.h5" > "$tmp/truncated.h5"
cp "$tmp/bn.h5" "$tmp/flipped.h5" && "$build/tests/ckpt_tamper" flip "$tmp/flipped.h5" /model/layer0/weight
cp "$tmp/bn.h5" "$tmp/zeroed.h5" && "$build/tests/ckpt_tamper" zero "$tmp/zeroed.h5" /input/scale
for np in 1 2; do
  expect_error "wrong width (CSV)" 2 "narrow.csv:1: 5 fields, the model takes 6 features" $np "$tmp/bn.h5" "$tmp/narrow.csv"
  expect_error "wrong width (HDF5)" 2 "narrow.h5: /train/x has 4 features per row, the model takes 6" $np "$tmp/bn.h5" "$tmp/narrow.h5" \
    --split train
  expect_error "a NaN row" 1 "nan.csv: row 99, feature 2 is NaN" $np "$tmp/bn.h5" "$tmp/nan.csv" -o "$tmp/nan.out.csv"
  expect_error "an Inf row" 1 "inf.csv: row 5000, feature 1 is infinite" $np "$tmp/bn.h5" "$tmp/inf.csv"
  expect_error "a truncated checkpoint" 1 "truncated.h5" $np "$tmp/truncated.h5" "$tmp/class.h5"
  expect_error "a damaged weight" 1 "flipped.h5: /model/layer0/weight: checksum mismatch" $np "$tmp/flipped.h5" "$tmp/class.h5"
  expect_error "a zeroed input transform" 1 "zeroed.h5: /input/scale: the data does not match its stored hash" $np \
    "$tmp/zeroed.h5" "$tmp/class.h5"
  expect_error "a foreign checkpoint" 1 "not a dptrain checkpoint" $np "$tmp/class.h5" "$tmp/class.h5"
  expect_error "no /test split" 1 "no /test group to predict (--split train takes /train)" $np "$tmp/bn.h5" "$tmp/big.h5"
done
[ ! -e "$tmp/nan.out.csv" ] && [ ! -e "$tmp/nan.out.csv.tmp" ] && ok "a failed predict leaves no output" ||
  bad "a failed predict left $(ls "$tmp"/nan.out*)"
expect_error "an unknown output type" 2 "must end in .h5" 1 "$tmp/bn.h5" "$tmp/class.h5" -o "$tmp/out.txt"
expect_error "a missing data file" 1 "nothere.h5" 1 "$tmp/bn.h5" "$tmp/nothere.h5"
expect_error "a missing argument" 2 "predict needs a checkpoint and a data file" 1 "$tmp/bn.h5"
expect_error "a directory as data" 1 "$tmp" 1 "$tmp/bn.h5" "$tmp"
expect_error "a bad --split" 2 "--split expects train or test" 1 "$tmp/bn.h5" "$tmp/class.h5" --split val
expect_error "a text file as data" 1 "neither an HDF5 data file nor a .csv" 1 "$tmp/bn.h5" "$tmp/bn.ini"
finish
