#!/usr/bin/env bash
# scripts/plot.py end to end: plots of a real (tiny) training run, of two runs on one figure, and of
# a hand-written sweep CSV with diverged and NaN rows; every output must be a PNG. What a figure
# shows: the x axis (epochs when batch sizes differ, --x samples), RMSE for mse runs, both panels
# for mixed runs; the samples and epochs_done fields it reads. Without matplotlib for /usr/bin/python3
# (the script's interpreter) the test is skipped.
. "$(dirname "$0")/lib.sh"
plot=scripts/plot.py
if ! /usr/bin/python3 -c 'import matplotlib' 2> /dev/null; then
  echo "skipped: matplotlib not installed"
  exit 0
fi
is_png() { [ -s "$1" ] && [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; }

make_synth "$tmp/syn.h5" 400 100 10 3 1
for lr in 0.1 0.02; do
  small_config "$tmp/t$lr.ini" layer.0.units=16 layer.1.units=3 optimizer.lr=$lr schedule.name=cosine train.batch_size=32 \
    train.epochs=3 train.max_steps= train.log_every=4 train.eval_every=10 train.out_dir="$tmp/run-lr$lr" checkpoint.at_end=false
  timeout 60 "$bin" train "$tmp/t$lr.ini" --quiet > "$tmp/train.out" 2>&1 || bad "training lr=$lr failed: $(tail -3 "$tmp/train.out")"
done

# one run, default output next to it
if "$plot" "$tmp/run-lr0.1" > "$tmp/p.out" 2>&1 && is_png "$tmp/run-lr0.1/run.png"; then
  ok "one run: wrote RUN_DIR/run.png (PNG)"
else
  bad "one run: $(tail -3 "$tmp/p.out")"
fi
# two runs on one figure, -o
if "$plot" "$tmp/run-lr0.1" "$tmp/run-lr0.02" -o "$tmp/both.png" > "$tmp/p.out" 2>&1 && is_png "$tmp/both.png"; then
  ok "two runs: wrote -o both.png (PNG)"
else
  bad "two runs: $(tail -3 "$tmp/p.out")"
fi
# two runs, default output in the current directory
if (cd "$tmp" && "$OLDPWD/$plot" run-lr0.1 run-lr0.02 > p.out 2>&1) && is_png "$tmp/run.png"; then
  ok "two runs: wrote ./run.png (PNG)"
else
  bad "two runs, default output: $(tail -3 "$tmp/p.out")"
fi
# what each figure shows: one run against the step; runs of different batch sizes against the epoch
# (a step is a different amount of data); train and test loss on one panel
sed -e 's/^batch_size = 32/batch_size = 96/' -e "s|run-lr0.1|run-b96|" "$tmp/t0.1.ini" > "$tmp/b96.ini"
timeout 60 "$bin" train "$tmp/b96.ini" --quiet > "$tmp/train.out" 2>&1 || bad "training batch 96 failed: $(tail -3 "$tmp/train.out")"
"$plot" "$tmp/run-lr0.1" -o "$tmp/one.png" > "$tmp/p.out" 2>&1
grep -q 'one.png: loss, accuracy, γ against the step$' "$tmp/p.out" && ok "one run: loss, accuracy, γ against the step" ||
  bad "one run: $(cat "$tmp/p.out")"
"$plot" "$tmp/run-lr0.1" "$tmp/run-lr0.02" -o "$tmp/same.png" > "$tmp/p.out" 2>&1
grep -q 'against the step$' "$tmp/p.out" && ok "same batch size: against the step" || bad "same batch: $(cat "$tmp/p.out")"
"$plot" "$tmp/run-lr0.1" "$tmp/run-b96" -o "$tmp/batches.png" > "$tmp/p.out" 2>&1
grep -q 'against the epoch$' "$tmp/p.out" && is_png "$tmp/batches.png" && ok "batch sizes 32 and 96: against the epoch" ||
  bad "batch sizes differ: $(cat "$tmp/p.out")"
"$plot" "$tmp/run-lr0.1" "$tmp/run-b96" --x samples -o "$tmp/samples.png" > "$tmp/p.out" 2>&1
grep -q 'against the training samples$' "$tmp/p.out" && is_png "$tmp/samples.png" && ok "--x samples" ||
  bad "--x samples: $(cat "$tmp/p.out")"
if /usr/bin/python3 - "$tmp/run-b96/metrics.jsonl" << 'EOP'; then
import json, sys
t = [r for r in map(json.loads, open(sys.argv[1])) if "loss" in r]
assert [r["samples"] for r in t[:2]] == [384, 688], t[:2]  # 400 rows: 4 batches of 96, one of 16; logged every 4
assert [r["epochs_done"] for r in t[:2]] == [0.8, 1.6], t[:2]
assert t[-1]["samples"] == 1200 and t[-1]["epochs_done"] == 3.0, t[-1]
EOP
  ok "metrics carry samples and epochs_done (5 steps an epoch, the last of 16 rows)"
else
  bad "samples/epochs_done: $(head -2 "$tmp/run-b96/metrics.jsonl")"
fi
# an mse run logs RMSE where a classification run logs accuracy: RMSE is plotted (the lines as
# the trainer writes them, here by hand); mixed with a classification run, both panels
mkdir -p "$tmp/mse"
cat > "$tmp/mse/metrics.jsonl" <<'EOJ'
{"step":5,"epoch":1,"samples":160,"epochs_done":0.5,"loss":0.9,"rmse":0.95,"mae":0.8,"lr":0.01}
{"step":10,"epoch":1,"samples":320,"epochs_done":1,"loss":0.5,"rmse":0.71,"mae":0.6,"lr":0.01}
{"step":10,"epoch":1,"test_loss":0.6,"test_rmse":0.77,"test_mae":0.65,"train_s":0.1}
{"step":15,"epoch":2,"samples":480,"epochs_done":1.5,"loss":0.3,"rmse":0.55,"mae":0.4,"lr":0.005}
EOJ
"$plot" "$tmp/mse" > "$tmp/p.out" 2>&1
grep -q ': loss, RMSE, γ against the step$' "$tmp/p.out" && is_png "$tmp/mse/run.png" && ok "mse run: RMSE instead of accuracy" ||
  bad "mse run: $(cat "$tmp/p.out")"
# ... and a real mse run: regression targets from a CSV
/usr/bin/python3 -c '
import random, sys
random.seed(1)
for path, n in ((sys.argv[1], 200), (sys.argv[2], 50)):
    with open(path, "w") as f:
        for _ in range(n):
            x = [random.uniform(-1, 1) for _ in range(3)]
            f.write(",".join(f"{v:.4f}" for v in x) + f",{0.5 * x[0] - x[1] * x[2]:.4f}\n")
' "$tmp/reg.csv" "$tmp/regt.csv"
"$bin" convert csv "$tmp/reg.csv" --test "$tmp/regt.csv" --regression -o "$tmp/reg.h5" > /dev/null 2>&1 ||
  bad "convert regression CSV failed"
printf '[data]\npath = %s\n[model]\nloss = mse\n[layer]\nunits = 8\nactivation = tanh\n[layer]\nunits = 1\nactivation = identity\n[optimizer]\nname = adam\nlr = 0.01\n[train]\nbatch_size = 20\nepochs = 3\nlog_every = 5\nout_dir = %s\n[checkpoint]\nat_end = false\n' \
  "$tmp/reg.h5" "$tmp/run-mse" > "$tmp/reg.ini"
timeout 60 "$bin" train "$tmp/reg.ini" --quiet > "$tmp/train.out" 2>&1 || bad "mse training failed: $(tail -3 "$tmp/train.out")"
"$plot" "$tmp/run-mse" > "$tmp/p.out" 2>&1
grep -q ': loss, RMSE, γ against the step$' "$tmp/p.out" && is_png "$tmp/run-mse/run.png" &&
  ok "a trained mse run: RMSE instead of accuracy" || bad "trained mse run: $(cat "$tmp/p.out")"
"$plot" "$tmp/mse" "$tmp/run-lr0.1" -o "$tmp/mixed.png" > "$tmp/p.out" 2>&1
grep -q ': loss, accuracy, RMSE, γ against' "$tmp/p.out" && ok "mse and classification runs: both panels" ||
  bad "mixed runs: $(cat "$tmp/p.out")"

# a run whose metrics contain nulls (non-finite values) and no evaluation lines
mkdir -p "$tmp/nulls"
cat > "$tmp/nulls/metrics.jsonl" <<'EOJ'
{"step":5,"epoch":1,"loss":1.2,"train_acc":0.4,"lr":0.1,"grad_norm":3.1,"samples_per_s":1000}
{"step":10,"epoch":1,"loss":null,"train_acc":null,"lr":0.1,"grad_norm":null,"samples_per_s":1000}
{"step":15,"epoch":1,"loss":0.8,"train_acc":0.6,"lr":0.1,"grad_norm":null,"samples_per_s":null}
EOJ
"$plot" "$tmp/nulls" -o "$tmp/nulls.png" > "$tmp/p.out" 2>&1 && is_png "$tmp/nulls.png" &&
  ok "nulls and no evaluations: PNG" || bad "nulls: $(tail -3 "$tmp/p.out")"
# metrics of an older dptrain (no samples field) and no config.ini: no samples axis, said so
"$plot" "$tmp/nulls" --x samples -o "$tmp/x.png" > /dev/null 2> "$tmp/e.err"
[ $? -eq 1 ] && grep -q 'metrics.jsonl: no "samples" field.*--x step' "$tmp/e.err" && ok "--x samples without samples: exit 1, named" ||
  bad "--x samples on old metrics: $(cat "$tmp/e.err")"

# sweep CSV as `dptrain sweep` writes it: diverged rows with huge and NaN losses
cat > "$tmp/sweep.csv" <<'EOC'
lr,final_loss,best_loss,diverged,steps
0.001,1.4582,1.369,0,300
0.00316228,1.0129,0.89809,0,300
0.01,0.73989,0.57193,0,300
0.0316228,0.60387,0.34958,0,300
0.1,0.53605,0.28644,0,300
0.316228,0.52818,0.35377,0,300
1,19.565,2.7011,1,2
3.16228,nan,2.7011,1,2
10,4973.1,2.7011,1,2
EOC
if "$plot" --sweep "$tmp/sweep.csv" > "$tmp/p.out" 2>&1 && is_png "$tmp/sweep.png"; then
  ok "sweep: wrote sweep.png next to the CSV (PNG)"
else
  bad "sweep: $(tail -3 "$tmp/p.out")"
fi
"$plot" --sweep "$tmp/sweep.csv" -o "$tmp/s2.png" > "$tmp/p.out" 2>&1 && is_png "$tmp/s2.png" &&
  ok "sweep -o: PNG" || bad "sweep -o: $(tail -3 "$tmp/p.out")"
printf 'lr,final_loss,best_loss,diverged,steps\n1,nan,2,1,2\n10,inf,2,1,1\n' > "$tmp/alldiv.csv"
"$plot" --sweep "$tmp/alldiv.csv" -o "$tmp/alldiv.png" > "$tmp/p.out" 2>&1 && is_png "$tmp/alldiv.png" &&
  ok "sweep where every step size diverged: PNG" || bad "all diverged: $(tail -3 "$tmp/p.out")"

# errors: usage 2, unreadable input 1, matplotlib missing 3 (python -S hides dist-packages;
# DPTRAIN_NO_INSTALL=1: report instead of installing)
"$plot" > /dev/null 2>&1; [ $? -eq 2 ] && ok "no arguments: exit 2" || bad "no arguments: not exit 2"
"$plot" "$tmp/nope" > /dev/null 2> "$tmp/e.err"
[ $? -eq 1 ] && grep -q 'metrics.jsonl' "$tmp/e.err" && ok "missing metrics.jsonl: exit 1, named" || bad "missing metrics.jsonl"
DPTRAIN_NO_INSTALL=1 /usr/bin/python3 -S "$plot" "$tmp/run-lr0.1" -o "$tmp/x.png" > /dev/null 2> "$tmp/e.err"
rc=$?
if [ $rc -eq 3 ] && [ "$(wc -l < "$tmp/e.err")" -eq 1 ] && grep -q 'apt-get install python3-matplotlib' "$tmp/e.err"; then
  ok "without matplotlib: exit 3, one line naming the package"
else
  bad "without matplotlib: exit $rc: $(cat "$tmp/e.err")"
fi

finish
