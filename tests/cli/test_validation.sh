#!/usr/bin/env bash
# Validation ([data] val_fraction or a /val group), keep_best's best.h5 and early stopping, at 1 and
# 2 ranks: the held-out rows are never trained on and the same at any rank count, order and resume;
# an overfitting run stops at the evaluation its log says it should, best.h5 holds that evaluation's
# model, and a stop and resume across it changes nothing.
. "$(dirname "$0")/lib.sh"
need "$fbin"

make_synth "$tmp/syn.h5" 600 200 10 3 1
field() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" "$1"; } # FILE KEY: every value of it in metrics.jsonl

cfg() { # file, out_dir, data file, extra lines ([data] first, then whole sections)
  cat > "$1" <<EOC
[data]
path = $3
${4:-}
[layer]
units = 16
[layer]
units = 3
activation = identity
[optimizer]
lr = 0.1
[train]
batch_size = 50
epochs = 3
log_every = 100
out_dir = $2
${5:-}
EOC
}

# trained FILE...: the distinct rows the dumps (DPTRAIN_TEST_DUMP_ROWS) of every rank list, one a line
trained() { cat "$@" | cut -d' ' -f2- | tr ' ' '\n' | sed '/^$/d' | sort -n | uniq; }

# --- val_fraction: 120 of 600 rows held out, never trained on, the same set at 1 and 2 ranks, in
# both orders and across a resume
cfg "$tmp/vf.ini" "$tmp/vf" "$tmp/syn.h5" "val_fraction = 0.2"
for np in 1 2; do
  rm -f "$tmp/rows$np".*
  DPTRAIN_TEST_DUMP_ROWS="$tmp/rows$np" at_np $np 60 "$fbin" train "$tmp/vf.ini" --overwrite > "$tmp/vf$np.out" 2>&1 ||
    bad "np=$np val_fraction run failed: $(tail -2 "$tmp/vf$np.out")"
  grep -q 'validation 120 (val_fraction, held out of train)' "$tmp/vf$np.out" &&
    grep -q '10 steps/epoch' "$tmp/vf$np.out" && ok "np=$np start-up line: 120 validation rows, 10 steps of 480" ||
    bad "np=$np start-up: $(grep -E '^data|^training' "$tmp/vf$np.out")"
  trained "$tmp/rows$np".* > "$tmp/set$np"
  [ "$(wc -l < "$tmp/set$np")" -eq 480 ] && ok "np=$np trains on 480 distinct rows" ||
    bad "np=$np trained on $(wc -l < "$tmp/set$np") distinct rows"
  # every epoch visits each of them once
  n=$(cat "$tmp/rows$np".* | awk '$1 <= 10' | cut -d' ' -f2- | tr ' ' '\n' | sed '/^$/d' | wc -l)
  [ "$n" -eq 480 ] && ok "np=$np epoch 1 visits 480 rows" || bad "np=$np epoch 1 visits $n rows"
  evals=$(grep -c '"val_loss"' "$tmp/vf/metrics.jsonl")
  [ "$evals" -eq 3 ] && [ "$(grep -c '"val_acc"' "$tmp/vf/metrics.jsonl")" -eq 3 ] &&
    grep -q '^final: test_loss .* test_acc .*  val_loss .* val_acc ' "$tmp/vf$np.out" &&
    grep -q 'step      10  test_loss .*  val_loss ' "$tmp/vf$np.out" &&
    ok "np=$np val_loss and val_acc beside test in metrics.jsonl and the log" ||
    bad "np=$np evaluations: $evals val lines; $(grep final "$tmp/vf$np.out")"
  cp "$tmp/vf/metrics.jsonl" "$tmp/vf$np.jsonl"
done
[ -s "$tmp/set1" ] && cmp -s "$tmp/set1" "$tmp/set2" && ok "the same rows held out at 1 and 2 ranks" || bad "held-out rows differ by rank count"
# the validation figures of the two rank counts agree to rounding
if paste -d' ' <(field "$tmp/vf1.jsonl" val_acc) <(field "$tmp/vf2.jsonl" val_acc) |
     awk '{ n++; if ($1 == "" || $2 == "" || ($1 - $2) ^ 2 > 1e-4) bad = 1 } END { exit bad || n != 3 }'; then
  ok "val_acc at 1 and 2 ranks agree"
else
  bad "val_acc: $(field "$tmp/vf1.jsonl" val_acc | tr '\n' ' ') vs $(field "$tmp/vf2.jsonl" val_acc | tr '\n' ' ')"
fi
# blocks order, read from the file (streamed): the same rows left out
rm -f "$tmp/rowsb".*
DPTRAIN_TEST_DUMP_ROWS="$tmp/rowsb" at_np 2 60 "$fbin" train "$tmp/vf.ini" --overwrite --set data.in_memory=false \
  --set data.order=blocks --set data.block_rows=40 --set data.shuffle_blocks=2 > "$tmp/vfb.out" 2>&1 || bad "blocks run failed: $(tail -2 "$tmp/vfb.out")"
trained "$tmp/rowsb".* > "$tmp/setb"
[ -s "$tmp/set1" ] && cmp -s "$tmp/set1" "$tmp/setb" && ok "order = blocks, streamed: the same 480 rows trained on" ||
  bad "order = blocks trained on $(wc -l < "$tmp/setb") rows, other than random's"
# stopped after 13 steps and resumed at the other rank count: the same rows, step for step
rm -f "$tmp/rowsr".*
DPTRAIN_TEST_DUMP_ROWS="$tmp/rowsr" at_np 1 60 "$fbin" train "$tmp/vf.ini" --overwrite --set train.max_steps=13 \
  > /dev/null 2>&1 &&
  DPTRAIN_TEST_DUMP_ROWS="$tmp/rowsr" at_np 2 60 "$fbin" train "$tmp/vf.ini" --resume auto > "$tmp/vfr.out" 2>&1 ||
  bad "stop/resume run failed: $(tail -2 "$tmp/vfr.out")"
step_rows() { cat "$@" | awk '{ s = $1; $1 = ""; r[s] = r[s] $0 } END { for (s in r) print s, r[s] }' | sort -n; }
[ "$(step_rows "$tmp/rowsr".* | wc -l)" -eq 30 ] && cmp -s <(step_rows "$tmp/rows1".*) <(step_rows "$tmp/rowsr".*) &&
  ok "resumed at 2 ranks after 13 steps at 1: every step's rows as uninterrupted" ||
  bad "stop/resume: the rows of some step differ"
awk -v a="$(field "$tmp/vf/metrics.jsonl" val_loss | tail -1)" -v b="$(field "$tmp/vf2.jsonl" val_loss | tail -1)" \
  'BEGIN { exit !(a != "" && b != "" && (a - b) ^ 2 < 1e-10) }' &&
  ok "resumed run's last val_loss as the uninterrupted run's (to rounding: 13 steps ran at 1 rank)" ||
  bad "resumed val_loss $(field "$tmp/vf/metrics.jsonl" val_loss | tail -1), uninterrupted $(field "$tmp/vf2.jsonl" val_loss | tail -1)"

# --- regression: val_rmse and val_mae
awk 'BEGIN { srand(5); for (i = 0; i < 300; i++) { a = rand(); b = rand(); printf "%.6f,%.6f,%.6f\n", a, b, a - 2 * b } }' \
  > "$tmp/reg.csv"
"$bin" convert csv "$tmp/reg.csv" --regression -o "$tmp/reg.h5" > /dev/null
cfg "$tmp/reg.ini" "$tmp/reg" "$tmp/reg.h5" "val_fraction = 0.1"
sed -i 's/^units = 3$/units = 1/; s/^\[layer\]$/&/; s/^\[data\]$/[model]\nloss = mse\n&/' "$tmp/reg.ini"
at_np 2 60 "$bin" train "$tmp/reg.ini" > "$tmp/reg.out" 2>&1
grep -q '"val_loss":.*"val_rmse":.*"val_mae":' "$tmp/reg/metrics.jsonl" &&
  grep -q 'final: val_loss .* val_rmse .* val_mae ' "$tmp/reg.out" && ok "mse: val_loss, val_rmse, val_mae" ||
  bad "mse validation: $(tail -2 "$tmp/reg.out")"

# --- keys that need validation data, and two sources of it
expect_error() { # name, text, config
  at_np 1 30 "$bin" train "$3" > /dev/null 2> "$tmp/e.err"
  local rc=$?
  [ $rc -eq 2 ] && [ "$(grep -c 'dptrain: error:' "$tmp/e.err")" -eq 1 ] && grep -qF -- "$2" "$tmp/e.err" &&
    ok "$1: exit 2, one line" || bad "$1: exit $rc: $(cat "$tmp/e.err")"
}
cfg "$tmp/k1.ini" "$tmp/k1" "$tmp/syn.h5" "" "early_stop_patience = 2
[checkpoint]
keep_best = val_acc"
expect_error "keep_best and patience without validation data" \
  "[checkpoint] keep_best = val_acc and [train] early_stop_patience = 2 need validation data: set [data] val_fraction, or add a /val group to $tmp/syn.h5" "$tmp/k1.ini"
cfg "$tmp/k2.ini" "$tmp/k2" "$tmp/syn.h5" "" "early_stop_patience = 2"
expect_error "early_stop_patience without validation data" "[train] early_stop_patience = 2 needs validation data" "$tmp/k2.ini"
cp "$tmp/syn.h5" "$tmp/withval.h5"
h5copy -i "$tmp/syn.h5" -o "$tmp/withval.h5" -s /test -d /val
cfg "$tmp/k3.ini" "$tmp/k3" "$tmp/withval.h5" "val_fraction = 0.1"
expect_error "val_fraction with a /val group" "[data] val_fraction = 0.1, but $tmp/withval.h5 has a /val group" "$tmp/k3.ini"
cfg "$tmp/k4.ini" "$tmp/k4" "$tmp/reg.h5" "" "[checkpoint]
keep_best = val_acc"
sed -i 's/^\[data\]$/[model]\nloss = mse\n&/' "$tmp/k4.ini"
expect_error "keep_best = val_acc for mse" "keep_best = val_acc needs a classifier" "$tmp/k4.ini"

# --- early stopping on a model that overfits 30% label noise; /val is its own group, and a file
# whose /test is those same rows lets `eval` reproduce the validation figures
gen() { awk -v n="$1" -v seed="$2" 'BEGIN { srand(seed); for (i = 0; i < n; i++) { a = 2 * rand() - 1; b = 2 * rand() - 1
  c = a + 0.3 * b > 0; if (rand() < 0.3) c = 1 - c; printf "%.6f,%.6f,%d\n", a, b, c } }'; }
gen 100 11 > "$tmp/otr.csv"
gen 100 12 > "$tmp/oval.csv"
gen 200 13 > "$tmp/ote.csv"
"$bin" convert csv "$tmp/otr.csv" --test "$tmp/ote.csv" -o "$tmp/of.h5" > /dev/null
"$bin" convert csv "$tmp/oval.csv" -o "$tmp/ov.h5" > /dev/null
"$bin" convert csv "$tmp/otr.csv" --test "$tmp/oval.csv" -o "$tmp/valtest.h5" > /dev/null
h5copy -i "$tmp/ov.h5" -o "$tmp/of.h5" -s /train -d /val
cat > "$tmp/of.ini" <<EOC
[data]
path = $tmp/of.h5
[layer]
units = 128
[layer]
units = 128
[layer]
units = 2
activation = identity
[optimizer]
name = adam
lr = 0.01
[train]
batch_size = 20
epochs = 200
log_every = 1000
early_stop_patience = 4
out_dir = $tmp/of
[checkpoint]
keep_best = val_loss
keep_last = 1
EOC
for np in 1 2; do
  at_np $np 120 "$bin" train "$tmp/of.ini" --overwrite > "$tmp/of$np.out" 2>&1
  rc=$?
  j=$tmp/of/metrics.jsonl
  # expected: patience evaluations after the first one with the lowest val_loss
  grep val_loss "$j" > "$tmp/evals"
  read -r best_i best_step best_loss best_acc n_evals last_step < <(paste -d' ' <(field "$tmp/evals" step) \
    <(field "$tmp/evals" val_loss) <(field "$tmp/evals" val_acc) |
    awk '{ n++; if (n == 1 || $2 < b) { b = $2; bi = n; bs = $1; ba = $3 } ls = $1 } END { print bi, bs, b, ba, n, ls }')
  line=$(grep '^early stop at step' "$tmp/of$np.out")
  if [ $rc -eq 0 ] && [ "$n_evals" -eq $((best_i + 4)) ] && [ "$last_step" -lt 2000 ] &&
     [[ $line == "early stop at step $last_step: val_loss did not improve"*"4 evaluations"*"the best was val_loss"*"at step $best_step: its model is $tmp/of/checkpoints/best.h5" ]]; then
    ok "np=$np stops 4 evaluations after the best (evaluation $best_i, step $best_step) at step $last_step, exit 0"
  else
    bad "np=$np early stop: exit $rc, $n_evals evaluations, best $best_i at $best_step; '$line'"
  fi
  ls "$tmp"/of/checkpoints/ > "$tmp/ls"
  [ "$(grep -c '^ckpt-' "$tmp/ls")" -eq 1 ] && grep -qx best.h5 "$tmp/ls" &&
    ok "np=$np best.h5 beside keep_last = 1 checkpoint" || bad "np=$np checkpoints: $(tr '\n' ' ' < "$tmp/ls")"
  at_np $np 60 "$bin" eval "$tmp/of/checkpoints/best.h5" --data "$tmp/valtest.h5" > "$tmp/ev.out" 2>&1
  want=$(printf 'test_loss %.5f  test_acc %.4f' "$best_loss" "$best_acc")
  grep -qF "$want" "$tmp/ev.out" && ok "np=$np eval of best.h5 on the validation rows: $want" ||
    bad "np=$np eval of best.h5: $(cat "$tmp/ev.out"), want $want"
  cp "$j" "$tmp/of$np.jsonl"
  cp "$tmp/of/checkpoints/best.h5" "$tmp/best$np.h5"
  echo "$last_step $best_step" > "$tmp/stop$np"
done

# --- stopped (max_steps) before the early stop and resumed across it: the same stop, the same best
read -r stop_step best_step < "$tmp/stop2"
mid=$((best_step > 20 ? best_step - 10 : 10))
at_np 2 120 "$bin" train "$tmp/of.ini" --overwrite --set train.max_steps=$mid > /dev/null 2>&1 &&
  at_np 2 120 "$bin" train "$tmp/of.ini" --resume auto > "$tmp/ofr.out" 2>&1
rc=$?
norm() { sed 's/,"train_s":[^,}]*//' "$1" | grep val_loss; }
[ $rc -eq 0 ] && grep -q "^early stop at step $stop_step: .*at step $best_step: " "$tmp/ofr.out" &&
  cmp -s <(norm "$tmp/of2.jsonl") <(norm "$tmp/of/metrics.jsonl") &&
  ok "stopped at step $mid, resumed: early stop at step $stop_step again, the same evaluations" ||
  bad "resume across the early stop: exit $rc, $(grep '^early stop' "$tmp/ofr.out")"
at_np 2 60 "$bin" eval "$tmp/of/checkpoints/best.h5" --data "$tmp/valtest.h5" > "$tmp/ev2.out" 2>&1
at_np 2 60 "$bin" eval "$tmp/best2.h5" --data "$tmp/valtest.h5" > "$tmp/ev1.out" 2>&1
[ "$(cut -d: -f2 "$tmp/ev1.out")" = "$(cut -d: -f2 "$tmp/ev2.out")" ] && ok "best.h5 after the resume is the uninterrupted run's" ||
  bad "best.h5 after the resume: $(cat "$tmp/ev2.out") vs $(cat "$tmp/ev1.out")"
# resumed once more, the ended run stays ended
at_np 1 60 "$bin" train "$tmp/of.ini" --resume auto > "$tmp/ofe.out" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q "early stopping ended this run at step $stop_step .*nothing to train" "$tmp/ofe.out" &&
  ok "resuming an early-stopped run: nothing to train, exit 0" || bad "resume after the stop: exit $rc: $(tail -2 "$tmp/ofe.out")"

finish
