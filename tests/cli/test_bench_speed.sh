#!/usr/bin/env bash
# The single-rank speed rows of `make bench`: `dptrain bench --sgemm` records the
# CPU, the OpenBLAS kernel and the thread count next to the step time and the sgemm time of the
# step's own shapes; scripts/bench_report.py turns them into the "1g" row (sgemm time / step time,
# goal 0.90) and states them in the PyTorch row. No speed is asserted: only the figures and rows.
. "$(dirname "$0")/lib.sh"
need "$bin" "$build/tests/make_synth"

make_synth "$tmp/syn.h5" 600 50 64 5 1
"$bin" bench --data "$tmp/syn.h5" --hidden 16 --batch 32 --threads 1 --seconds 0.3 --sgemm --ckpt-dir "$tmp" \
  > "$tmp/mlp.json" 2> "$tmp/err"
rc=$?
if [ $rc -eq 0 ] && python3 - "$tmp/mlp.json" << 'EOP' 2>> "$tmp/err"; then
import json, sys
r = json.load(open(sys.argv[1]))
assert r["cpu"] and r["kernel"] and r["threads"] == 1, r
assert r["step_s"] > 0 and r["sgemm_step_s"] > 0 and r["stream5_s"] > 0 and r["optim_s_max"] > 0, r
EOP
  ok "bench --sgemm: the CPU, kernel and thread count with the step and sgemm times"
else
  bad "bench --sgemm: exit $rc, $(tail -3 "$tmp/err")"
fi

d=$tmp/bench
mkdir -p "$d/fashion_mlp"
for n in small-np1-1 large-np1 b256-np1 b256-np2; do cp "$tmp/mlp.json" "$d/$n.json"; done
echo '{"step": 10, "test_acc": 0.9, "train_s": 1.0}' > "$d/fashion_mlp/metrics.jsonl"
echo '{"samples_per_s": 1000.0, "threads": 1}' > "$d/torch-small-1.json"
if python3 "$root/scripts/bench_report.py" "$d" > "$tmp/report.json" 2> "$tmp/report"; then
  ok "bench_report with the single-rank rows"
else
  bad "bench_report failed: $(tail -3 "$tmp/report")"
fi
want=$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(round(r["sgemm_step_s"] / r["step_s"], 3))' \
  "$tmp/mlp.json")
python3 - "$tmp/report.json" "$want" << 'EOP' 2> "$tmp/err" && ok "bench.json: row 1g is the sgemm / step ratio of the same run, goal 0.90" ||
import json, sys
rows = {str(r["target"]): r for r in json.load(open(sys.argv[1]))["targets"]}
g = rows["1g"]
assert g["value"] == float(sys.argv[2]) and g["goal"] == 0.90 and g["result"] in ("PASS", "MISS"), g
assert g["result"] == ("PASS" if g["value"] >= 0.90 else "MISS"), g
assert rows["1"]["goal"] == 1.5, rows["1"]
EOP
  bad "bench.json's row 1g: $(tail -3 "$tmp/err")"
kernel=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["kernel"])' "$tmp/mlp.json")
for t in 1 1g; do
  grep -A1 "^$t  *\(PASS\|MISS\) " "$tmp/report" | tail -1 | grep -q "1 BLAS thread(s), OpenBLAS kernel $kernel, CPU ." &&
    ok "report row $t names the thread count, the OpenBLAS kernel and the CPU" ||
    bad "report row $t: $(grep -A1 "^$t " "$tmp/report")"
done
grep -A1 "^1  *\(PASS\|MISS\) " "$tmp/report" | grep -q "torch 1000/s with 1 thread(s)" &&
  ok "report row 1: PyTorch's rate and thread count" || bad "report row 1: $(grep -A1 '^1 ' "$tmp/report")"
finish
