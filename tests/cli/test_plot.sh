#!/usr/bin/env bash
# scripts/plot.py end to end: plots of a real (tiny) training run, of two runs on one figure, and of
# a hand-written sweep CSV with diverged and NaN rows; every output must be a PNG. Without
# matplotlib for /usr/bin/python3 (the script's interpreter) the test is skipped.
. "$(dirname "$0")/lib.sh"
plot=scripts/plot.py
if ! /usr/bin/python3 -c 'import matplotlib' 2> /dev/null; then
  echo "skipped: matplotlib not installed"
  exit 0
fi
is_png() { [ -s "$1" ] && [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; }

make_synth "$tmp/syn.h5" 400 100 10 3 1
for lr in 0.1 0.02; do
  cat > "$tmp/t$lr.ini" <<EOC
[data]
path = $tmp/syn.h5
[layer]
units = 16
activation = relu
[layer]
units = 3
activation = identity
[optimizer]
name = sgd
lr = $lr
momentum = 0.9
[schedule]
name = cosine
[train]
batch_size = 32
epochs = 3
log_every = 4
eval_every = 10
out_dir = $tmp/run-lr$lr
[checkpoint]
at_end = false
EOC
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
# a run whose metrics contain nulls (non-finite values) and no evaluation lines
mkdir -p "$tmp/nulls"
cat > "$tmp/nulls/metrics.jsonl" <<'EOJ'
{"step":5,"epoch":1,"loss":1.2,"train_acc":0.4,"lr":0.1,"grad_norm":3.1,"samples_per_s":1000}
{"step":10,"epoch":1,"loss":null,"train_acc":null,"lr":0.1,"grad_norm":null,"samples_per_s":1000}
{"step":15,"epoch":1,"loss":0.8,"train_acc":0.6,"lr":0.1,"grad_norm":null,"samples_per_s":null}
EOJ
"$plot" "$tmp/nulls" -o "$tmp/nulls.png" > "$tmp/p.out" 2>&1 && is_png "$tmp/nulls.png" &&
  ok "nulls and no evaluations: PNG" || bad "nulls: $(tail -3 "$tmp/p.out")"

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
