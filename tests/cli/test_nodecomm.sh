#!/usr/bin/env bash
# [train] comm = node (src/nodesync.c: the weights and optimizer state once per node in shared
# memory, the gradients summed there, each rank updating its slice) against comm = flat: the same
# loss trajectory at 1 to 4 ranks (SGD with momentum, clipping and synchronised batch norm; Adam);
# with deterministic = true the same final /model and /optimizer bits; resumes across modes and rank
# counts; L-BFGS's fallback to flat, said in the start-up line; skip_step and restore on a diverging
# run; sweeps; a stuck rank under the watchdog; a bad value of the key.
. "$(dirname "$0")/lib.sh"
need "$bin" "$fbin" "$build/tests/make_synth"
command -v h5diff > /dev/null || { echo "$script: h5diff missing (hdf5-tools)"; exit 1; }

make_synth "$tmp/syn.h5" 600 100 20 5 1
# The gradient norm starts near 1.8: clip_norm = 0.1 clips every step.
small_config "$tmp/sgd.ini" layer.0.norm=batch optimizer.clip_norm=0.1 train.max_steps=20 train.log_every=1
small_config "$tmp/adam.ini" optimizer.name=adam optimizer.lr=0.01 optimizer.momentum= train.max_steps=20 train.log_every=1

# train NAME CONFIG NP COMM [args...]: trains into $tmp/NAME, its output in $tmp/NAME.txt.
train() {
  local name=$1 cfg=$2 np=$3 comm=$4
  shift 4
  at_np "$np" 60 "$bin" train "$cfg" --set train.out_dir="$tmp/$name" --set train.comm="$comm" "$@" > "$tmp/$name.txt" 2>&1 ||
    { bad "$name: exit $?: $(grep dptrain: "$tmp/$name.txt" | tail -2)"; return 1; }
}

# same_loss WHAT A B: the training lines of A's and B's metrics.jsonl have the same steps and losses
# within 1e-6 relative.
same_loss() {
  local why
  if why=$(python3 - "$tmp/$2/metrics.jsonl" "$tmp/$3/metrics.jsonl" 2>&1 << 'EOP'
import json, sys
a, b = ([(l["step"], l["loss"]) for l in map(json.loads, open(p)) if "loss" in l] for p in sys.argv[1:3])
assert [s for s, _ in a] == [s for s, _ in b] and a, ([s for s, _ in a], [s for s, _ in b])
for (s, x), (_, y) in zip(a, b):
    assert abs(x - y) <= 1e-6 * abs(x), f"step {s}: {x} vs {y}"
EOP
  ); then
    ok "$1: the same loss trajectory within 1e-6"
  else
    bad "$1: $(tail -1 <<< "$why")"
  fi
}

# --- (a) the trajectories, and the start-up line that says which mode ran
for opt in sgd adam; do
  for np in 1 2 3 4; do
    train $opt-node$np "$tmp/$opt.ini" $np node && train $opt-flat$np "$tmp/$opt.ini" $np flat &&
      same_loss "$opt np=$np node vs flat" $opt-node$np $opt-flat$np
  done
done
grep -o '"grad_norm":[^,]*' "$tmp/sgd-node2/metrics.jsonl" | awk -F: '$2 <= 0.1 { low = 1 } END { exit low || NR != 20 }' &&
  ok "sgd: every step's gradient norm is above clip_norm = 0.1: clipped" ||
  bad "sgd: clip_norm = 0.1 does not clip every step: $(grep -o '"grad_norm":[^,]*' "$tmp/sgd-node2/metrics.jsonl" | tr '\n' ' ')"
for np in 1 2 3 4; do
  s=$([ $np = 1 ] || echo s)
  want="gradients summed in the node's shared memory in $np slice$s; weights and optimizer state once per node ([0-9.e-]* MB shared), the update split $np way$s$"
  grep -q "$want" "$tmp/sgd-node$np.txt" && ok "np=$np comm = node: the start-up line says so" ||
    bad "np=$np comm = node: $(grep 'training:' "$tmp/sgd-node$np.txt")"
done
grep -q "gradients in 1 allreduce bucket$" "$tmp/sgd-flat2.txt" && ok "np=2 comm = flat: 'gradients in 1 allreduce bucket'" ||
  bad "np=2 comm = flat: $(grep 'training:' "$tmp/sgd-flat2.txt")"
# auto: node at 2 ranks on one node, flat at 1 with the reason.
train auto2 "$tmp/sgd.ini" 2 auto && grep -qF "gradients summed in the node's shared memory in 2 slices" "$tmp/auto2.txt" &&
  ok "np=2 comm = auto: node" || bad "np=2 comm = auto: $(grep 'training:' "$tmp/auto2.txt")"
train auto1 "$tmp/sgd.ini" 1 auto && grep -qF "gradients in 1 allreduce bucket (comm = flat: one rank per node)" "$tmp/auto1.txt" &&
  ok "np=1 comm = auto: flat, one rank per node" || bad "np=1 comm = auto: $(grep 'training:' "$tmp/auto1.txt")"

# --- (b) deterministic mode: the same bits as flat
final() { ls "$tmp/$1"/checkpoints/ckpt-*.h5 | sort -t- -k2 -n | tail -1; }
same_bits() { # what, run, run
  local a b
  a=$(final "$2") && b=$(final "$3") || { bad "$1: no checkpoint"; return; }
  if h5diff "$a" "$b" /model > /dev/null && h5diff "$a" "$b" /optimizer > /dev/null; then
    ok "$1: /model and /optimizer identical"
  else
    bad "$1: $(h5diff -c "$a" "$b" /model 2>&1 | head -3)"
  fi
}
for np in 1 2 3; do
  train det-node$np "$tmp/sgd.ini" $np node --set train.deterministic=true --set train.chunk_rows=8 &&
    train det-flat$np "$tmp/sgd.ini" $np flat --set train.deterministic=true --set train.chunk_rows=8 &&
    same_bits "deterministic np=$np node vs flat" det-node$np det-flat$np
done
[ -f "$tmp/det-node1.txt" ] && [ -f "$tmp/det-node3.txt" ] && same_bits "deterministic node np=1 vs np=3" det-node1 det-node3
grep -qF "gradients by exact sums; weights and optimizer state once per node" "$tmp/det-node2.txt" &&
  ok "deterministic np=2 comm = node: exact sums, one copy per node" || bad "deterministic np=2: $(grep 'training:' "$tmp/det-node2.txt")"

# --- (c) resumed across modes and rank counts: as the uninterrupted run (sgd-flat1)
train r1 "$tmp/sgd.ini" 2 node --set train.max_steps=10 &&
  train r1 "$tmp/sgd.ini" 3 node --resume auto && same_loss "node 2 ranks x 10 steps + node 3 ranks x 10 (resumed)" sgd-flat1 r1
train r2 "$tmp/sgd.ini" 1 flat --set train.max_steps=10 &&
  train r2 "$tmp/sgd.ini" 2 node --resume auto && same_loss "flat 1 rank x 10 steps + node 2 ranks x 10 (resumed)" sgd-flat1 r2
train r3 "$tmp/adam.ini" 3 node --set train.max_steps=10 &&
  train r3 "$tmp/adam.ini" 1 flat --resume auto && same_loss "adam: node 3 ranks x 10 steps + flat 1 rank x 10 (resumed)" adam-flat1 r3

# --- (d) L-BFGS keeps a copy per rank: flat, with the reason, also when node is asked for
small_config "$tmp/lbfgs.ini" optimizer.name=lbfgs optimizer.lr= optimizer.momentum= optimizer.max_iter=5 \
  train.batch_size=full train.max_steps= train.log_every=1
for comm in node auto; do
  train lbfgs-$comm "$tmp/lbfgs.ini" 2 $comm && grep -q '^done: 5 iterations' "$tmp/lbfgs-$comm.txt" &&
    grep -qF "gradients in 1 allreduce bucket (comm = flat: lbfgs keeps a copy per rank)" "$tmp/lbfgs-$comm.txt" &&
    ok "lbfgs comm = $comm np=2: trains 5 iterations, flat with the reason" ||
    bad "lbfgs comm = $comm np=2: $(grep -e training: -e done: -e dptrain: "$tmp/lbfgs-$comm.txt")"
done

# --- (e) a diverging run (SGD with γ = 0.5 and momentum overflows at step 6, as in test_faults.sh):
# skip_step and restore do under node what they do under flat
python3 - "$tmp/reg.csv" << 'EOP'
import random, sys
random.seed(1)
with open(sys.argv[1], "w") as f:
    for i in range(400):
        x = [random.gauss(0, 1) for _ in range(8)]
        f.write(",".join("%.5f" % v for v in x + [sum(x[:4])]) + "\n")
EOP
"$bin" convert csv "$tmp/reg.csv" --regression -o "$tmp/reg.h5" > /dev/null || exit 1
small_config "$tmp/nf.ini" data.path="$tmp/reg.h5" model.loss=mse layer.0.units=16 layer.0.activation=identity \
  layer.1.units=1 optimizer.lr=0.5 train.batch_size=40 train.max_steps= train.epochs=3 train.log_every=10 checkpoint.every_steps=5
# outcome NAME NP COMM [args...]: the exit code and the lines about skips, restores and errors.
outcome() {
  local name=$1
  at_np "$2" 60 "$bin" train "$tmp/nf.ini" --set train.out_dir="$tmp/$name" --set train.comm="$3" "${@:4}" > "$tmp/$name.txt" 2>&1 < /dev/null
  echo "exit $?"
  grep -e 'update skipped' -e 'restored' -e 'dptrain: error' -e '^done:' "$tmp/$name.txt" | sed -e "s|$tmp/$name/|OUT/|g" -e 's/ in [0-9.]* s.*//'
}
# skip_step without bounds goes on to the end; with the default bound of 10 in a row it fails at
# step 15; restore at γ = 0.15 reloads ckpt-5 at step 10, trains on and reloads ckpt-10 at step 11.
n_case=0
for np in 2 3; do
  while IFS='|' read -r what args; do
    n_case=$((n_case + 1))
    # shellcheck disable=SC2086
    node=$(outcome nf-node$n_case "$np" node $args)
    # shellcheck disable=SC2086
    flat=$(outcome nf-flat$n_case "$np" flat $args)
    if [ "$node" = "$flat" ] && [ "$(wc -l <<< "$node")" -gt 1 ]; then
      ok "np=$np $what: as under flat ($(head -1 <<< "$node"), the same $(($(wc -l <<< "$node") - 1)) lines)"
    else
      bad "np=$np $what: node: $(tr '\n' '|' <<< "$node") flat: $(tr '\n' '|' <<< "$flat")"
    fi
  done << EOC
skip_step, no bounds|--set train.on_nonfinite=skip_step --set train.max_skips=0 --set train.max_consecutive_skips=0
skip_step, 10 in a row at most|--set train.on_nonfinite=skip_step
restore|--set train.on_nonfinite=restore --set train.max_restores=3 --set optimizer.lr=0.15
EOC
done
grep -q 'step 11: loss or gradient not finite: restored .*/ckpt-10.h5 (step 10)' "$tmp/nf-node3.txt" &&
  ok "np=2 restore under comm = node: trained on from the restored ckpt-5 to ckpt-10" ||
  bad "np=2 restore under comm = node: $(grep -e restored -e 'dptrain: error' "$tmp/nf-node3.txt")"

# --- (f) sweeps: each group its own windows, at 1 and 2 ranks per run
small_config "$tmp/sweep.ini" layer.0.activation=tanh optimizer.momentum= train.max_steps= sweep.steps=30
for k in 1 2; do
  for comm in node flat; do
    at_np 2 60 "$bin" sweep "$tmp/sweep.ini" --lr 1e-3:1000:5 --ranks-per-run $k -o "$tmp/sweep-$comm$k.csv" \
      --set train.comm=$comm > "$tmp/sweep-$comm$k.txt" 2>&1 || bad "sweep comm = $comm, $k rank(s) per run: $(tail -2 "$tmp/sweep-$comm$k.txt")"
  done
  if paste -d, "$tmp/sweep-node$k.csv" "$tmp/sweep-flat$k.csv" | awk -F, '
       NR == 1 { next }
       { rows++; if ($1 != $6 || $4 != $9 || $5 != $10) bad = 1
         for (c = 2; c <= 3; c++) { d = $c - $(c + 5); if (d < 0) d = -d; if (d > 1e-6 * ($c < 0 ? -$c : $c)) bad = 1 } }
       END { exit bad || rows != 5 }'; then
    ok "sweep, $k rank(s) per run: comm = node's CSV is flat's within 1e-6"
  else
    bad "sweep, $k rank(s) per run: $(paste -d' ' "$tmp/sweep-node$k.csv" "$tmp/sweep-flat$k.csv" | tr '\n' '|')"
  fi
done

# --- (g) a stuck rank (no batch norm: the step's first collective is the node barrier)
start=$(date +%s)
DPTRAIN_TEST_STALL=1:5 at_np 2 60 "$fbin" train "$tmp/sgd.ini" -q --set layer.0.norm=none --set train.comm=node \
  --set train.out_dir="$tmp/stall" --set train.collective_timeout=2 > "$tmp/stall.txt" 2>&1
rc=$?
took=$(($(date +%s) - start))
if [ $rc != 0 ] && [ $rc != 124 ] && [ $took -le 15 ] && [ "$(grep -c 'dptrain: error:' "$tmp/stall.txt")" = 1 ] &&
  grep -q 'rank 0: step 5: the node barrier did not complete within 2 s' "$tmp/stall.txt"; then
  ok "stuck rank under comm = node: exit $rc after ${took}s, one line naming the step and the node barrier"
else
  bad "stuck rank under comm = node: exit $rc after ${took}s: $(grep dptrain "$tmp/stall.txt" | head -3)"
fi

# --- (g2) a bad value: one line naming the key and the choices, at 1 and 2 ranks (the config corpus
# has it at 1 rank too: tests/bad/config/comm_bad.ini)
for np in 1 2; do
  at_np $np 30 "$bin" train "$tmp/sgd.ini" --set train.comm=bogus --set train.out_dir="$tmp/bogus" > "$tmp/bogus.txt" 2>&1
  rc=$?
  if [ $rc = 2 ] && [ "$(grep -c 'dptrain: error:' "$tmp/bogus.txt")" = 1 ] &&
    grep -qF "dptrain: error: --set train.comm=bogus: expected one of auto, node, flat, got 'bogus'" "$tmp/bogus.txt"; then
    ok "np=$np comm = bogus: exit 2, one line naming the key and the choices"
  else
    bad "np=$np comm = bogus: exit $rc: $(grep dptrain "$tmp/bogus.txt")"
  fi
done

finish
