#!/usr/bin/env bash
# `dptrain bench --config FILE` times the model of a config file (a CNN here) at 1 and 2 ranks: its
# FLOPs count every output pixel, --sgemm times the conv layers' im2col GEMM shapes and their kernels
# alone; scripts/bench_report.py turns that and a PyTorch figure into the CNN row; configs/fashion_cnn.ini,
# which make bench times, is a valid config. Nothing here asserts a speed: only that the figures are
# there, positive and of the right shapes.
. "$(dirname "$0")/lib.sh"
need "$bin" "$build/tests/make_synth"

make_synth "$tmp/syn.h5" 600 50 64 5 1
cat > "$tmp/cnn.ini" << EOF
[data]
path = $tmp/syn.h5
shape = 1,8,8
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
units = 5
activation = identity
[optimizer]
name = adam
[train]
batch_size = 60
out_dir = $tmp/unused
EOF

# check.py JSON ROWS: the CNN's figures; ROWS: the conv layer's im2col rows (shard x 8 x 8).
cat > "$tmp/check.py" << 'EOP'
import json, sys
r = json.load(open(sys.argv[1]))
rows = int(sys.argv[2])
assert r["config"].endswith("cnn.ini") and r["batch"] == 32, r
# conv2d 9 -> 4 over 64 pixels (no dx in layer 0), then dense 64 -> 5
assert r["flops_per_sample"] == 4 * 9 * 4 * 64 + 6 * 64 * 5, r["flops_per_sample"]
assert r["samples_per_s"] > 0 and r["sgemm_step_s"] > 0, r
(c,) = r["conv_layers"]
assert (c["layer"], c["rows"], c["in"], c["out"]) == (0, rows, 9, 4), c
assert c["s"] > 0 and c["sgemm_s"] > 0 and r["conv_s"] == c["s"] and r["conv_sgemm_s"] == c["sgemm_s"], r
EOP
for np in 1 2; do
  if at_np $np 120 "$bin" bench --config "$tmp/cnn.ini" --batch 32 --threads 1 --seconds 0.3 --sgemm \
    > "$tmp/cnn-np$np.json" 2> "$tmp/err" &&
    python3 "$tmp/check.py" "$tmp/cnn-np$np.json" $((32 * 64 / np)) 2>> "$tmp/err"; then
    ok "bench --config at $np rank(s): the CNN's FLOPs, its conv layer's GEMM and kernel times"
  else
    bad "bench --config at $np rank(s): $(tail -3 "$tmp/err")"
  fi
done
cp "$tmp/cnn-np1.json" "$tmp/cnn-np1.keep"

# Without --config the MLP, as before: no conv figures.
"$bin" bench --data "$tmp/syn.h5" --hidden 16 --batch 32 --threads 1 --seconds 0.3 --sgemm --ckpt-dir "$tmp" \
  > "$tmp/mlp.json" 2> "$tmp/err" &&
  python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r["hidden"] == "16" and "conv_s" not in r, r' \
    "$tmp/mlp.json" && ok "bench without --config: the MLP, without conv figures" || bad "bench MLP: $(tail -3 "$tmp/err")"

# The config make bench times (and README's CNN) fits 784-wide rows of 10 classes as it stands.
make_synth "$tmp/fashion.h5" 200 20 784 10 1
"$bin" config --check "$root/configs/fashion_cnn.ini" --set data.path="$tmp/fashion.h5" --set train.out_dir="$tmp/fc" \
  > "$tmp/out" 2>&1 && ok "configs/fashion_cnn.ini passes config --check" || bad "fashion_cnn.ini: $(head -3 "$tmp/out")"

"$bin" bench --config "$tmp/missing.ini" > /dev/null 2> "$tmp/err"
rc=$?
[ $rc -eq 2 ] && grep -q "missing.ini" "$tmp/err" && [ "$(wc -l < "$tmp/err")" = 1 ] &&
  ok "bench --config of a missing file: one error naming it, exit 2" || bad "bench --config missing: exit $rc, $(cat "$tmp/err")"

# bench_report.py: the CNN row from the measurements, with the conv layers' share; SKIPPED without
# PyTorch's figure. The MLP rows get the MLP measurement under every name they read.
d=$tmp/bench
mkdir -p "$d/fashion_mlp"
for n in small-np1 large-np1 b256-np1 b256-np2; do cp "$tmp/mlp.json" "$d/$n.json"; done
cp "$tmp/cnn-np1.keep" "$d/cnn-np1-1.json"
echo '{"step": 10, "test_acc": 0.9, "train_s": 1.0}' > "$d/fashion_mlp/metrics.jsonl"
if python3 "$root/scripts/bench_report.py" "$d" > /dev/null 2> "$tmp/report"; then
  grep -A1 "^cnn *SKIPPED" "$tmp/report" | grep -q "python3-torch not installed" &&
    ok "bench_report: the CNN row is SKIPPED without PyTorch's figure" || bad "bench_report without torch: $(cat "$tmp/report")"
else
  bad "bench_report failed: $(tail -3 "$tmp/report")"
fi
echo '{"samples_per_s": 1000.0}' > "$d/torch-cnn-1.json"
python3 "$root/scripts/bench_report.py" "$d" > "$tmp/report.json" 2> "$tmp/report"
if grep -q "^cnn *\(PASS\|MISS\) .* 1.0  CNN 1 rank vs PyTorch, 1 thread, batch 128" "$tmp/report" &&
  grep -A1 "^cnn " "$tmp/report" |
  grep -q "conv layers alone .* ms of the .* ms step (.*%), the sgemm time of their im2col shapes"; then
  ok "bench_report: the CNN row against PyTorch with the conv layers' share and their sgemm time"
else
  bad "bench_report's CNN row: $(grep -A1 '^cnn' "$tmp/report")"
fi
python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r["measurements"]["cnn_np1"]["conv_layers"], r' \
  "$tmp/report.json" && ok "bench.json keeps the CNN measurement" || bad "bench.json without cnn_np1"
finish
