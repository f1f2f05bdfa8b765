#!/usr/bin/env bash
# A small CNN (conv2d with batch norm, max pooling, dropout, dense) on 2x6x6 images: the start-up
# lines describe its layers; its loss trajectory at 1, 2 and 3 ranks agrees within 2e-5 relative
# (dropout's mask does not depend on the ranks); with [train] deterministic the final /model is the
# same bits at 1, 2 and 3 ranks; a run stopped at step 5 and resumed ends where the uninterrupted one
# does; and each bad layer configuration stops with exit 2 and one line naming the layer.
. "$(dirname "$0")/lib.sh"
need "$bin" "$build/tests/make_synth"
command -v h5diff > /dev/null || { echo "$script: h5diff missing (hdf5-tools)"; exit 1; }

make_synth "$tmp/img.h5" 96 32 72 3 3 # rows of 2x6x6
cat > "$tmp/cnn.ini" <<EOC
[data]
path = $tmp/img.h5
shape = 2,6,6
[layer]
type = conv2d
filters = 4
kernel = 3
padding = same
norm = batch
[layer]
type = maxpool
kernel = 2
[layer]
type = dropout
rate = 0.25
[layer]
units = 3
activation = identity
[optimizer]
name = sgd
lr = 0.05
momentum = 0.9
[train]
batch_size = 24
epochs = 100
max_steps = 10
log_every = 1
out_dir = $tmp/unused
EOC

# train NP OUT LOG [--set ...]
train() {
  local np=$1 out=$2 log=$3
  shift 3
  at_np "$np" 60 "$bin" train "$tmp/cnn.ini" --set train.out_dir="$tmp/$out" "$@" > "$tmp/$log" 2>&1
}
losses() { grep '"loss"' "$1" | sed 's/.*"step":\([0-9]*\).*"loss":\([^,}]*\).*/\1 \2/'; }

# --- the start-up block names each layer's shapes
if train 1 np1 np1.txt &&
  grep -qx '  layer 0: conv2d 2x6x6 -> 4x6x6, 3x3 stride 1 pad 1, batch norm, relu, weight (4, 2, 3, 3), 80 parameters' "$tmp/np1.txt" &&
  grep -qx '  layer 1: maxpool 4x6x6 -> 4x3x3, 2x2 stride 2' "$tmp/np1.txt" &&
  grep -qx '  layer 2: dropout 4x3x3, rate 0.25' "$tmp/np1.txt" &&
  grep -qx '  layer 3: dense 36 -> 3, identity, weight (3, 36), 111 parameters' "$tmp/np1.txt"; then
  ok "start-up: one line per layer with its shapes"
else
  bad "start-up lines: $(grep -e 'layer' -e ERROR "$tmp/np1.txt" | tr '\n' ' ')"
fi

# --- the same loss trajectory at 1, 2 and 3 ranks
losses "$tmp/np1/metrics.jsonl" > "$tmp/np1.loss"
for np in 2 3; do
  train $np np$np np$np.txt || { bad "np=$np: exit $?: $(tail -2 "$tmp/np$np.txt")"; continue; }
  losses "$tmp/np$np/metrics.jsonl" > "$tmp/np$np.loss"
  if [ "$(wc -l < "$tmp/np1.loss")" = 10 ] &&
    paste -d' ' "$tmp/np1.loss" "$tmp/np$np.loss" |
    awk '{ d = $2 - $4; if (d < 0) d = -d; if ($1 != $3 || d > 2e-5 * ($2 < 0 ? -$2 : $2)) bad = 1 } END { exit bad }'; then
    ok "np=$np: 10 losses within 2e-5 relative of 1 rank's"
  else
    bad "np=$np: losses differ: $(paste -d' ' "$tmp/np1.loss" "$tmp/np$np.loss" | head -4 | tr '\n' ' ')"
  fi
done

# --- deterministic: the same bits at any rank count (chunks of 4 rows: a conv2d's chunk is 4 images)
for np in 1 2 3; do
  train $np det$np det$np.txt --set train.deterministic=true --set train.chunk_rows=4 ||
    bad "deterministic np=$np: exit $?: $(tail -2 "$tmp/det$np.txt")"
done
for np in 2 3; do
  if out=$(h5diff "$tmp/det1/checkpoints/ckpt-10.h5" "$tmp/det$np/checkpoints/ckpt-10.h5" /model 2>&1); then
    ok "deterministic np=$np: /model identical to 1 rank's"
  else
    bad "deterministic np=$np: /model differs: $(echo "$out" | head -3 | tr '\n' ' ')"
  fi
done

# --- a resume mid-run reproduces the uninterrupted run (dropout's masks follow the step)
train 2 split split1.txt --set train.max_steps=5 || bad "first half: $(tail -2 "$tmp/split1.txt")"
if train 2 split split2.txt --resume auto && grep -qF "resumed from $tmp/split/checkpoints/ckpt-5.h5" "$tmp/split2.txt" &&
  h5diff "$tmp/np2/checkpoints/ckpt-10.h5" "$tmp/split/checkpoints/ckpt-10.h5" /model > /dev/null &&
  cmp -s "$tmp/np2.loss" <(losses "$tmp/split/metrics.jsonl"); then
  ok "resumed at step 5: /model and losses identical to the uninterrupted run's"
else
  bad "resume: $(tail -2 "$tmp/split2.txt"; h5diff "$tmp/np2/checkpoints/ckpt-10.h5" "$tmp/split/checkpoints/ckpt-10.h5" /model 2>&1 | head -2)"
fi

# --- bad layers: exit 2 and one line naming the layer (or the shape) and the sizes
bad_case() { # what, config, expected text, --set ...
  local what=$1 cfg=$2 want=$3
  shift 3
  local sets=() s
  for s; do sets+=(--set "$s"); done
  at_np 1 30 "$bin" train "$cfg" --quiet --set train.out_dir="$tmp/bad" "${sets[@]}" > "$tmp/bad.txt" 2>&1
  local rc=$? n
  n=$(wc -l < "$tmp/bad.txt")
  if [ $rc = 2 ] && [ "$n" = 1 ] && grep -qF -- "$want" "$tmp/bad.txt"; then
    ok "$what: exit 2, one line"
  else
    bad "$what: exit $rc, $n lines: $(head -3 "$tmp/bad.txt" | tr '\n' ' ')"
  fi
}
c=$tmp/cnn.ini
bad_case "shape against the row width" "$c" "[data] shape = 2,6,5 is 60 values per row, the data's rows have 72" \
  data.shape=2,6,5
bad_case "kernel larger than its input" "$c" "[layer 0] conv2d: kernel 7x7 is larger than its input 6x6 (padding 0)" \
  layer.0.kernel=7 layer.0.padding=0
bad_case "pool that leaves nothing" "$c" "[layer 1] maxpool: window 8x8 is larger than its input 6x6" layer.1.kernel=8
bad_case "dropout rate 1" "$c" "[layer 2] rate = 1: expected a rate in [0, 1)" layer.2.rate=1
# The memory check before anything is allocated counts conv activations and the im2col scratch.
DPTRAIN_TEST_NODE_MEMORY=100000000 "$fbin" train "$c" --quiet --set train.out_dir="$tmp/big" --set layer.0.filters=4000 \
  > "$tmp/big.txt" 2>&1
rc=$?
if [ $rc = 2 ] && [ "$(wc -l < "$tmp/big.txt")" = 1 ] && grep -q "more than its 0.1 GB of memory; a smaller batch_size" "$tmp/big.txt"; then
  ok "a CNN larger than the node's memory: exit 2, one line, before allocating"
else
  bad "CNN memory check: exit $rc: $(head -2 "$tmp/big.txt")"
fi
sed 's/^type = conv2d$/units = 8\n[layer]\ntype = conv2d/' "$c" > "$tmp/dense_first.ini"
bad_case "conv after dense" "$tmp/dense_first.ini" "[layer 1] type = conv2d after [layer 0] (dense)"
finish
