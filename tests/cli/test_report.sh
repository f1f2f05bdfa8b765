#!/usr/bin/env bash
# What a run reports is true of what it measured: every logged rate is the rate of the steps it
# covers (also around evaluations and resumes); regression reports RMSE and MAE, not an accuracy of 0;
# a finite divergence is noticed; L-BFGS lines show what a full-batch method does; the progress bar
# fits the terminal and ends an epoch with the epoch's mean loss.
. "$(dirname "$0")/lib.sh"
need "$bin" "$build/tests/make_synth"

make_synth "$tmp/syn.h5" 4096 200 200 5 1
small_config "$tmp/rate.ini" layer.0.units=1024 train.batch_size=256 train.epochs=6 train.max_steps= train.log_every=12 \
  train.eval_every=5 train.threads=1 train.out_dir="$tmp/rate" checkpoint.every_steps=20

# rates.py METRICS NP: every training line's samples_per_s is its samples over its steps' time
# (samples_per_s x step_ms = the batch, to rounding), within 3x of the run's median, and no step is
# shorter than its compute (the old interval clock, reset by an evaluation, made them 2-12x shorter).
cat > "$tmp/rates.py" << 'EOP'
import json, statistics, sys
t = [l for l in map(json.loads, open(sys.argv[1])) if "samples_per_s" in l]
np = int(sys.argv[2])
assert len(t) >= 8, len(t)
med = statistics.median(l["samples_per_s"] for l in t)
for l in t:
    r = l["samples_per_s"]
    assert med / 3 <= r <= med * 3, ("rate far from the median", r, med, l["step"])
    per_step = r * l["step_ms"] / 1e3
    assert abs(per_step - 256) < 0.5, ("samples_per_s x step_ms is not a batch", per_step, l["step"])
    # at 2 ranks the other rank may start a step before rank 0 (which writes the log) and end with it
    assert l["compute_ms_mean"] <= l["step_ms"] * (1.001 if np == 1 else 1.5), ("step shorter than its compute", l)
EOP
# rate_run NP ARGS...: trains and checks the rates; once more when only the median check failed (other
# jobs on a 2-core machine can slow one interval down; a wrong rate fails every time).
rate_run() {
  local np=$1 try
  shift
  rm -rf "$tmp/rate.before"
  [ -d "$tmp/rate" ] && cp -a "$tmp/rate" "$tmp/rate.before" # a resume starts again from the same files
  for try in 1 2; do
    at_np $np 120 "$bin" train "$tmp/rate.ini" --quiet "$@" > "$tmp/rate$np.txt" 2>&1 || return 1
    python3 "$tmp/rates.py" "$tmp/rate/metrics.jsonl" $np > "$tmp/rates$np.txt" 2>&1 && return 0
    grep -q 'far from the median' "$tmp/rates$np.txt" || return 1
    rm -rf "$tmp/rate"
    [ -d "$tmp/rate.before" ] && cp -a "$tmp/rate.before" "$tmp/rate"
  done
  return 1
}
for np in 1 2; do
  rm -rf "$tmp/rate"
  if rate_run $np; then
    ok "np=$np: every logged rate is its steps' rate, within 3x of the median (eval_every 5)"
  else
    bad "np=$np rates: $(tail -3 "$tmp/rate$np.txt") $(tail -2 "$tmp/rates$np.txt")"
  fi
  # A resumed run's first line covers only the steps it timed itself.
  if rate_run $np --set train.epochs=8 --resume auto; then
    ok "np=$np: rates stay true across a resume"
  else
    bad "np=$np resumed rates: $(tail -3 "$tmp/rate$np.txt") $(tail -2 "$tmp/rates$np.txt")"
  fi
done

# --- regression (loss = mse): RMSE and MAE wherever classification shows an accuracy
python3 - "$tmp/reg.csv" "$tmp/regt.csv" << 'EOP'
import random, sys
random.seed(2)
for path, n in ((sys.argv[1], 600), (sys.argv[2], 150)):
    with open(path, "w") as f:
        for i in range(n):
            x = [random.gauss(0, 1) for _ in range(6)]
            f.write(",".join("%.5f" % v for v in x + [x[0] - 2 * x[1] + x[2] * x[3] + 0.5]) + "\n")
EOP
"$bin" convert csv "$tmp/reg.csv" --test "$tmp/regt.csv" --regression -o "$tmp/reg.h5" > /dev/null || exit 1
cat > "$tmp/reg.ini" <<EOC
[data]
path = $tmp/reg.h5
[model]
loss = mse
[layer]
units = 32
activation = tanh
[layer]
units = 1
activation = identity
[optimizer]
name = sgd
lr = 0.05
momentum = 0.9
[train]
batch_size = 50
epochs = 6
log_every = 4
out_dir = $tmp/reg
EOC
cat > "$tmp/regcheck.py" << 'EOP'
import json, math, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
t = [l for l in lines if "loss" in l]
e = [l for l in lines if "test_loss" in l]
assert t and e, (len(t), len(e))
for l in t:
    assert "train_acc" not in l and "rmse" in l and "mae" in l, l
    assert abs(l["rmse"] ** 2 - l["loss"]) <= 1e-6 * max(1, l["loss"]), l
    assert 0 < l["mae"] <= l["rmse"] * 1.0001, l  # mean |e| <= sqrt(mean e^2)
for l in e:
    assert "test_acc" not in l and "test_rmse" in l and "test_mae" in l, l
    assert abs(l["test_rmse"] ** 2 - l["test_loss"]) <= 1e-6 * max(1, l["test_loss"]), l
    assert 0 < l["test_mae"] <= l["test_rmse"] * 1.0001, l
assert e[-1]["test_rmse"] < 0.6 * e[0]["test_rmse"], (e[0], e[-1])  # it learns
print("%.6f %.6f" % (e[-1]["test_rmse"], e[-1]["test_mae"]))
EOP
for np in 1 2; do
  rm -rf "$tmp/reg"
  if at_np $np 120 "$bin" train "$tmp/reg.ini" > "$tmp/reg$np.txt" 2>&1 &&
    python3 "$tmp/regcheck.py" "$tmp/reg/metrics.jsonl" > "$tmp/regm$np.txt" 2>&1; then
    ok "np=$np mse: metrics.jsonl has rmse, mae, test_rmse, test_mae (no accuracy), rmse^2 = loss, mae <= rmse"
  else
    bad "np=$np mse metrics: $(tail -3 "$tmp/reg$np.txt") $(tail -2 "$tmp/regm$np.txt")"
  fi
  if grep -q '^epoch .* loss [0-9.]*  rmse [0-9.e-]*  mae [0-9.e-]*  lr' "$tmp/reg$np.txt" && ! grep -q ' acc ' "$tmp/reg$np.txt" &&
    grep -q 'test_rmse .* test_mae' "$tmp/reg$np.txt" && grep -q '^final: test_loss .* test_rmse .* test_mae' "$tmp/reg$np.txt" &&
    ! grep -q 'test_acc' "$tmp/reg$np.txt"; then
    ok "np=$np mse: progress, evaluation and final lines show rmse and mae, no acc"
  else
    bad "np=$np mse progress: $(grep -m3 -E 'acc|rmse' "$tmp/reg$np.txt")"
  fi
done
# The MAE is summed across ranks like the loss: 1 and 2 ranks agree on it.
[ -s "$tmp/regm1.txt" ] && [ -s "$tmp/regm2.txt" ] && awk -v a="$(cat "$tmp/regm1.txt")" -v b="$(cat "$tmp/regm2.txt")" \
  'BEGIN { split(a, x); split(b, y); exit !(x[1] - y[1] < 1e-3 && y[1] - x[1] < 1e-3 && x[2] - y[2] < 1e-3 && y[2] - x[2] < 1e-3) }' &&
  ok "mse: test_rmse and test_mae agree at 1 and 2 ranks ($(cat "$tmp/regm1.txt"))" ||
  bad "mse: 1 rank $(cat "$tmp/regm1.txt") vs 2 ranks $(cat "$tmp/regm2.txt")"
want=$(awk '{ print $2 }' "$tmp/regm2.txt")
ck=$(ls "$tmp"/reg/checkpoints/ckpt-*.h5 | tail -1)
at_np 2 60 "$bin" eval "$ck" > "$tmp/regeval.txt" 2>&1
got=$(sed -n 's/.*test_mae \([0-9.e-]*\).*/\1/p' "$tmp/regeval.txt")
if grep -q 'test_rmse' "$tmp/regeval.txt" && ! grep -q 'test_acc' "$tmp/regeval.txt" &&
  awk -v a="$got" -v b="$want" 'BEGIN { exit !(a - b < 1e-4 && b - a < 1e-4) }'; then
  ok "eval of an mse checkpoint: test_rmse and test_mae ($got, as the run's last evaluation)"
else
  bad "eval mse: $(cat "$tmp/regeval.txt") (want test_mae $want)"
fi
at_np 2 60 "$bin" sweep "$tmp/reg.ini" --lr 0.01,0.1 --steps 20 -o "$tmp/regsweep.csv" > "$tmp/regsweep.txt" 2>&1
if head -1 "$tmp/regsweep.csv" | grep -q ',final_rmse$' && grep -q 'final_rmse' "$tmp/regsweep.txt"; then
  ok "sweep with mse: the table and the CSV have final_rmse"
else
  bad "sweep mse: $(cat "$tmp/regsweep.txt") $(head -2 "$tmp/regsweep.csv")"
fi

# --- a divergence that stays finite: SGD with a step size far too large, on synthetic classes
div_run() { # np, out file, extra --set arguments
  local np=$1 out=$2
  shift 2
  rm -rf "$tmp/div"
  at_np $np 120 "$bin" train "$tmp/rate.ini" --set optimizer.lr=20 --set optimizer.momentum=0 \
    --set train.eval_every=0 --set train.epochs=2 --set layer.0.units=64 --set train.out_dir="$tmp/div" "$@" > "$out" 2> "$out.err"
}
for np in 1 2; do
  div_run $np "$tmp/div$np.txt"
  rc=$?
  n=$(grep -c 'warning: step [0-9]*: the loss .* diverge_factor' "$tmp/div$np.txt")
  if [ $rc = 0 ] && [ "$n" = 1 ] && grep -q 'step size 20 is probably too large' "$tmp/div$np.txt" &&
    python3 -c 'import json,math,sys; l=[json.loads(x) for x in open(sys.argv[1]) if "\"loss\"" in x]; assert all(math.isfinite(x["loss"]) for x in l)' "$tmp/div/metrics.jsonl"; then
    ok "np=$np finite divergence: one warning naming the step size, the run goes on (on_divergence = warn)"
  else
    bad "np=$np divergence warn: exit $rc, $n warning(s): $(grep -m3 -E 'warning|loss' "$tmp/div$np.txt")"
  fi
  div_run $np "$tmp/diva$np.txt" --set train.on_divergence=abort
  rc=$?
  if [ $rc = 3 ] && [ "$(grep -c 'dptrain: error:' "$tmp/diva$np.txt.err")" = 1 ] &&
    grep -q 'training diverged; the step size 20 is probably too large' "$tmp/diva$np.txt.err"; then
    ok "np=$np on_divergence = abort: exit 3, one error line with the step-size hint"
  else
    bad "np=$np divergence abort: exit $rc: $(cat "$tmp/diva$np.txt.err" | head -3)"
  fi
done
# The yardstick is the run's first loss, kept in checkpoints: a run resumed after its first step
# warns against the same first value as the uninterrupted one (np=1 above), not its own first step.
first() { grep -o 'its first value ([^)]*)' "$1"; }
div_run 1 "$tmp/divr0.txt" --set train.max_steps=1
at_np 1 120 "$bin" train "$tmp/rate.ini" --set optimizer.lr=20 --set optimizer.momentum=0 --set train.eval_every=0 \
  --set train.epochs=2 --set layer.0.units=64 --set train.out_dir="$tmp/div" --resume auto > "$tmp/divr.txt" 2>&1
if grep -q '^resumed from .* at step 1 ' "$tmp/divr.txt" && [ -n "$(grep '^warning: ' "$tmp/div1.txt")" ] &&
  [ "$(first "$tmp/divr.txt")" = "$(first "$tmp/div1.txt")" ]; then
  ok "divergence after a resume: warned against $(first "$tmp/divr.txt"), from the checkpoint"
else
  bad "divergence after a resume: $(grep -E '^(resumed|warning)' "$tmp/divr.txt") vs $(grep '^warning' "$tmp/div1.txt")"
fi
# A healthy run (the mse runs above) says nothing of divergence.
grep -q diverge "$tmp/reg1.txt" "$tmp/reg2.txt" && bad "a healthy run warned of divergence" ||
  ok "a healthy run has no divergence warning"

# --- L-BFGS: each line shows the loss, |g|, the objective evaluations and the accepted step length;
# no accuracy and no samples/s (each iteration evaluates the whole set several times)
cat > "$tmp/lbfgs.ini" <<EOC
[data]
path = $tmp/syn.h5
[layer]
units = 5
activation = identity
[optimizer]
name = lbfgs
max_iter = 12
tolerance_change = 0
tolerance_grad = 0
[train]
batch_size = full
log_every = 3
out_dir = $tmp/lbfgs
EOC
cat > "$tmp/lbfgscheck.py" << 'EOP'
import json, math, sys
t = [l for l in map(json.loads, open(sys.argv[1])) if "loss" in l]
assert len(t) == 4, len(t)
for l in t:
    assert "train_acc" not in l and "samples_per_s" not in l, l
    assert isinstance(l["evals"], int) and l["evals"] >= 3, l  # at least one per iteration of the line
    assert l["line_step"] is not None and l["line_step"] > 0 and math.isfinite(l["grad_norm"]), l
assert t[-1]["loss"] < t[0]["loss"], t
EOP
for np in 1 2; do
  rm -rf "$tmp/lbfgs"
  if at_np $np 120 "$bin" train "$tmp/lbfgs.ini" > "$tmp/lb$np.txt" 2>&1 &&
    python3 "$tmp/lbfgscheck.py" "$tmp/lbfgs/metrics.jsonl" > "$tmp/lbc$np.txt" 2>&1; then
    ok "np=$np lbfgs: metrics.jsonl lines have evals, line_step and grad_norm, no train_acc or samples_per_s"
  else
    bad "np=$np lbfgs metrics: $(tail -3 "$tmp/lb$np.txt") $(tail -2 "$tmp/lbc$np.txt")"
  fi
  lines=$(grep '^epoch .*step .*(' "$tmp/lb$np.txt")
  if [ "$(echo "$lines" | grep -c '  |g| [0-9.e+-]*  evals [0-9]*  line step [0-9.e+-]*  lr')" = 4 ] &&
    ! echo "$lines" | grep -qE ' acc |samples/s|nan'; then
    ok "np=$np lbfgs: progress lines show |g|, evals and the line step, no acc, samples/s or nan"
    grep -q '^done: 12 iterations, [0-9]* full-batch evaluations in' "$tmp/lb$np.txt" && ! grep -q 'samples/s' "$tmp/lb$np.txt" &&
      ok "np=$np lbfgs: the summary counts iterations and evaluations, no samples/s" ||
      bad "np=$np lbfgs summary: $(grep '^done' "$tmp/lb$np.txt")"
  rm -rf "$tmp/lbfgs"
  DPTRAIN_PROGRESS=bar COLUMNS=120 at_np $np 120 "$bin" train "$tmp/lbfgs.ini" > "$tmp/lbbar$np.txt" 2>&1
  if grep -q $'\033\[Kepoch 12 \[#*\] 1/1  epoch loss' "$tmp/lbbar$np.txt" && ! grep -q 'samples/s' "$tmp/lbbar$np.txt"; then
    ok "np=$np lbfgs: the progress bar shows no samples/s"
  else
    bad "np=$np lbfgs bar: $(cat -v "$tmp/lbbar$np.txt" | grep -m2 'epoch 1[12] ')"
  fi
  else
    bad "np=$np lbfgs progress: $(echo "$lines" | head -2)"
  fi
done

finish
