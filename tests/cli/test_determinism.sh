#!/usr/bin/env bash
# [train] deterministic: the final checkpoints' /model and /optimizer are bit for bit the same
# (h5diff exit 0) at 1 to 5 ranks for SGD with momentum, shuffling and an uneven last batch; Adam
# with batch norm where some ranks get no chunk; L-BFGS on the full batch. Also across bucket_mb, and
# for 2 ranks stopped halfway and resumed at 3, layer norm, mse, and one chunk per rank (the exchange
# of floats). A diverging run still stops on its non-finite loss; unsynchronised batch norm is refused.
. "$(dirname "$0")/lib.sh"
need "$bin" "$build/tests/make_synth"
command -v h5diff > /dev/null || { echo "$script: h5diff missing (hdf5-tools)"; exit 1; }

make_synth "$tmp/syn.h5" 203 61 12 4 3 # 203 rows: batches of 50 leave 3

# write_cfg NAME OPTIMIZER-AND-TRAIN-LINES [LAYER-NORM]: a 12-16-16-4 network.
write_cfg() {
  cat > "$tmp/$1.ini" <<EOC
[data]
path = $tmp/syn.h5
[layer]
units = 16
activation = relu
norm = ${3:-none}
[layer]
units = 16
activation = tanh
norm = ${3:-none}
[layer]
units = 4
activation = identity
$2
log_every = 1
deterministic = true
EOC
}
write_cfg sgd "[optimizer]
name = sgd
lr = 0.1
momentum = 0.9
[train]
batch_size = 50
epochs = 3
shuffle = true
chunk_rows = 8"
write_cfg adam_bn "[optimizer]
name = adam
lr = 0.01
[train]
batch_size = 24
epochs = 2
chunk_rows = 16" batch
write_cfg lbfgs "[optimizer]
name = lbfgs
max_iter = 6
[train]
batch_size = full
chunk_rows = 32"

# train NAME NP OUT [--set ...]: the run's final checkpoint path on stdout.
train() {
  local name=$1 np=$2 out=$3
  shift 3
  at_np "$np" 120 "$bin" train "$tmp/$name.ini" --quiet --set "train.out_dir=$tmp/$out" "$@" > "$tmp/$out.log" 2>&1 ||
    { bad "$name np=$np: exit $?: $(tail -2 "$tmp/$out.log")"; return 1; }
  ls "$tmp/$out"/checkpoints/ckpt-*.h5 | sort -t- -k2 -n | tail -1
}

same() { # what, reference checkpoint, checkpoint
  if h5diff "$2" "$3" /model > /dev/null && h5diff "$2" "$3" /optimizer > /dev/null; then
    ok "$1: /model and /optimizer identical"
  else
    bad "$1: differs from the reference: $(h5diff -c "$2" "$3" /model 2>&1 | head -3)"
  fi
}

for name in sgd adam_bn lbfgs; do
  ref=$(train $name 1 $name-np1) || continue
  for np in 2 3 4 5; do
    got=$(train $name $np $name-np$np) && same "$name np=$np" "$ref" "$got"
  done
done

# Layer norm's per-chunk gain and shift gradients.
ref=$(train sgd 1 ln-np1 --set layer.0.norm=layer --set layer.1.norm=layer) &&
  got=$(train sgd 3 ln-np3 --set layer.0.norm=layer --set layer.1.norm=layer) &&
  same "sgd, layer norm np=3" "$ref" "$got"

# Read from the file (order = auto: blocks), the chunks' rows are read directly, not through the ring.
ref=$(train sgd 1 file-np1 --set data.in_memory=false) && got=$(train sgd 3 file-np3 --set data.in_memory=false) &&
  same "sgd from the file np=3" "$ref" "$got"

# No rank with more than one chunk (2 chunks of 25: the ranks exchange floats, not int64; at 3 ranks
# one rank has none): the same bits as the int64 reduce-scatter at 1 rank.
ref=$(train sgd 1 one-np1 --set train.chunk_rows=25)
for np in 2 3; do
  got=$(train sgd $np one-np$np --set train.chunk_rows=25) && same "sgd one chunk a rank np=$np" "$ref" "$got"
done

# The bucket layout does not enter the exact sum.
ref=$(train sgd 1 sgd-np1-again)
for mb in 0 0.0005 4; do
  got=$(train sgd 2 sgd-mb$mb --set train.bucket_mb=$mb) && same "sgd np=2 bucket_mb=$mb" "$ref" "$got"
done

# 2 ranks for 7 steps, resumed at 3 ranks to 14: as 14 steps at 1 rank (constant step size).
ref=$(train sgd 1 whole --set train.max_steps=14)
half=$(train sgd 2 half --set train.max_steps=7)
if [ -n "$half" ]; then
  got=$(train sgd 3 resumed --set train.max_steps=14 --resume "$half")
  [ -n "$got" ] && [ "$(basename "$got")" = ckpt-14.h5 ] &&
    same "2 ranks x 7 steps + 3 ranks x 7 (resumed)" "$ref" "$got"
  got=$(train adam_bn 2 bn-half --set train.max_steps=7) &&
    got=$(train adam_bn 5 bn-resumed --resume "$got") && same "adam_bn 2 ranks + 5 ranks (resumed)" \
      "$(ls "$tmp"/adam_bn-np1/checkpoints/ckpt-*.h5 | sort -t- -k2 -n | tail -1)" "$got"
fi

# Regression on which SGD with step size 0.5 and momentum overflows at step 6 (as in test_faults.sh):
# identical before, and the non-finite loss or gradient still stops every rank.
python3 - "$tmp/reg.csv" << 'EOP'
import random, sys
random.seed(1)
with open(sys.argv[1], "w") as f:
    for i in range(400):
        x = [random.gauss(0, 1) for _ in range(8)]
        f.write(",".join("%.5f" % v for v in x + [sum(x[:4])]) + "\n")
EOP
"$bin" convert csv "$tmp/reg.csv" --regression -o "$tmp/reg.h5" > /dev/null || exit 1
cat > "$tmp/mse.ini" <<EOC
[data]
path = $tmp/reg.h5
[model]
loss = mse
[layer]
units = 16
activation = identity
[layer]
units = 1
activation = identity
[optimizer]
name = sgd
lr = 0.5
momentum = 0.9
[train]
batch_size = 40
epochs = 20
log_every = 1
deterministic = true
chunk_rows = 16
EOC
ref=$(train mse 1 mse-np1 --set train.max_steps=5) && got=$(train mse 3 mse-np3 --set train.max_steps=5) &&
  same "mse np=3" "$ref" "$got"
[ -n "$ref" ] && [ "$(grep -h '"mae"' "$tmp/mse-np1/metrics.jsonl" | tail -1 | sed 's/"samples_per_s".*//')" = \
  "$(grep -h '"mae"' "$tmp/mse-np3/metrics.jsonl" | tail -1 | sed 's/"samples_per_s".*//')" ] &&
  ok "mse np=3: the same loss and MAE as np=1" || bad "mse: the logged loss or MAE differs between 1 and 3 ranks"
for np in 1 2 3; do # 3 chunks: at 3 ranks the non-finite values go through the exchange of floats
  at_np $np 60 "$bin" train "$tmp/mse.ini" --quiet --set "train.out_dir=$tmp/nan$np" > "$tmp/nan.out" 2> "$tmp/nan.err"
  rc=$?
  if [ $rc -eq 3 ] && [ "$(grep -c 'dptrain: error: step 6: .*(diverged)' "$tmp/nan.err")" = 1 ]; then
    ok "np=$np diverging: exit 3 at step 6, one error line"
  else
    bad "np=$np diverging: exit $rc: $(grep dptrain: "$tmp/nan.err")"
  fi
done

at_np 1 30 "$bin" train "$tmp/adam_bn.ini" --set layer.0.sync=false --set "train.out_dir=$tmp/nosync" \
  > /dev/null 2> "$tmp/nosync.err"
rc=$?
[ $rc -ne 0 ] && grep -q 'deterministic needs batch norm over the global batch' "$tmp/nosync.err" &&
  ok "sync = false refused: exit $rc" || bad "sync = false: exit $rc: $(cat "$tmp/nosync.err")"

finish
