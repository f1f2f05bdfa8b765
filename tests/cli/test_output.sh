#!/usr/bin/env bash
# What users see: the live progress bar on a terminal (a pseudo-terminal made by `script`) and
# plain lines in a log; --quiet and --verbose; the start-up block; the metrics.jsonl schema; the
# Chrome trace timeline (valid JSON, spans for every rank).
. "$(dirname "$0")/lib.sh"

make_synth "$tmp/syn.h5" 2000 300 20 5 1
small_config "$tmp/c.ini" layer.0.norm=batch optimizer.lr=0.1 train.batch_size=50 train.epochs=2 train.max_steps= \
  train.log_every=10 train.out_dir="$tmp/run" train.bucket_mb=0.0001 train.timeline="$tmp/tl.json" train.timeline_steps=6

# --- a terminal: one bar per epoch redrawn in place, no plain step lines
if command -v script > /dev/null; then
  env -u DPTRAIN_PROGRESS script -qec "$bin train $tmp/c.ini" /dev/null > "$tmp/tty.txt" 2>&1
  bars=$(grep -c $'\r\033\[Kepoch 1 \[' "$tmp/tty.txt")
  if grep -q $'\033\[Kepoch 2 \[#*\] 40/40' "$tmp/tty.txt" && ! grep -q '^epoch *1 *step *10 (' "$tmp/tty.txt"; then
    ok "terminal: a live bar per epoch ($bars redraw(s) of epoch 1), no plain step lines"
  else
    bad "terminal: $(cat -v "$tmp/tty.txt" | tail -5)"
  fi
  grep -q 'ETA' "$tmp/tty.txt" && ok "terminal: the bar shows the ETA" || bad "terminal: no ETA"
else
  echo "skip - terminal bar: script(1) not installed"
fi

# --- a log: plain lines every log_every steps, no escape codes; the start-up block
# Each run after the first starts afresh in the same out_dir: --overwrite (without it a fresh start
# beside the previous run's checkpoints is refused).
"$bin" train "$tmp/c.ini" --overwrite > "$tmp/log.txt" 2>&1 || bad "training failed: $(tail -3 "$tmp/log.txt")"
n=$(grep -c '^epoch *[12] *step *[0-9]* ([0-9]*/40)' "$tmp/log.txt")
[ "$n" = 8 ] && ok "log: 8 plain progress lines (every 10 of 80 steps)" || bad "log: $n progress lines: $(head -20 "$tmp/log.txt")"
grep -q $'\033' "$tmp/log.txt" && bad "log: escape codes in a log" || ok "log: no escape codes"
for want in 'rank on 1 node, [0-9]* BLAS thread' 'model: 20 inputs' 'layer 0: dense 20 -> 32, batch norm, relu' \
  'data: .*train 2000 x 20' 'global batch 50, shards of 50 rows per rank'; do
  grep -q "$want" "$tmp/log.txt" && ok "start-up block: $want" || bad "start-up block lacks '$want'"
done
"$bin" train "$tmp/c.ini" --overwrite --quiet > "$tmp/quiet.txt" 2>&1
[ ! -s "$tmp/quiet.txt" ] && ok "--quiet prints nothing" || bad "--quiet printed: $(head -3 "$tmp/quiet.txt")"
"$bin" train "$tmp/c.ini" --overwrite --verbose > "$tmp/verbose.txt" 2>&1
grep -q 'comm wait' "$tmp/verbose.txt" && ok "--verbose shows the step's time split" || bad "--verbose: $(sed -n 8p "$tmp/verbose.txt")"

# --- metrics.jsonl: every line parses; the training and evaluation lines have their fields
if python3 - "$tmp/run/metrics.jsonl" << 'EOP'; then
import json, sys
train = ["step", "epoch", "samples", "epochs_done", "loss", "train_acc", "lr", "grad_norm", "samples_per_s", "step_ms", "compute_ms_mean",
         "comm_ms_mean", "optim_ms_mean", "compute_ms_max", "comm_ms_max", "optim_ms_max"]
evals = ["step", "epoch", "test_loss", "test_acc", "train_s"]
lines = [json.loads(l) for l in open(sys.argv[1])]
t = [l for l in lines if "loss" in l]
e = [l for l in lines if "test_acc" in l]
assert len(t) == 8 and len(e) == 2, (len(t), len(e))
for l in t:
    assert all(k in l for k in train), l
    assert all(l[k] is None or isinstance(l[k], (int, float)) for k in l)
assert sum(l["grad_norm"] is not None for l in t) == 8  # the logged steps' norms
for l in e:
    assert all(k in l for k in evals), l
    assert 0 <= l["test_acc"] <= 1
EOP
  ok "metrics.jsonl: schema of training and evaluation lines"
else
  bad "metrics.jsonl schema: $(head -2 "$tmp/run/metrics.jsonl")"
fi

# --- the timeline at 2 ranks: valid JSON, every rank with data/forward/backward/optimizer and a
# span per gradient bucket (comm = flat: node, the default here, has no buckets)
at_np 2 60 "$bin" train "$tmp/c.ini" --overwrite --quiet --set train.comm=flat > "$tmp/mpi.txt" 2>&1 ||
  bad "2-rank run failed: $(tail -3 "$tmp/mpi.txt")"
if python3 - "$tmp/tl.json" << 'EOP'; then
import json, sys
ev = json.load(open(sys.argv[1]))["traceEvents"]
for rank in (0, 1):
    names = [e["name"] for e in ev if e["pid"] == rank and e["ph"] == "X"]
    for want in ("data", "forward", "backward", "optimizer"):
        assert names.count(want) == 6, (rank, want, names.count(want))
    assert sum(n.startswith("allreduce bucket") for n in names) >= 12, names  # 2 buckets x 6 steps
    assert all(e["dur"] >= 0 for e in ev if e["ph"] == "X")
EOP
  ok "timeline: valid JSON, spans for both ranks, one per bucket"
else
  bad "timeline: $(head -c 300 "$tmp/tl.json")"
fi
# comm = node: a "node reduce" span per step on each rank instead
at_np 2 60 "$bin" train "$tmp/c.ini" --overwrite --quiet --set train.comm=node > "$tmp/node.txt" 2>&1 ||
  bad "2-rank comm = node run failed: $(tail -3 "$tmp/node.txt")"
if python3 - "$tmp/tl.json" << 'EOP'; then
import json, sys
ev = json.load(open(sys.argv[1]))["traceEvents"]
for rank in (0, 1):
    names = [e["name"] for e in ev if e["pid"] == rank and e["ph"] == "X"]
    for want in ("data", "forward", "backward", "optimizer", "node reduce"):
        assert names.count(want) == 6, (rank, want, names.count(want))
    assert not any(n.startswith("allreduce bucket") for n in names), names
EOP
  ok "timeline, comm = node: one node reduce span per step on both ranks"
else
  bad "timeline, comm = node: $(head -c 300 "$tmp/tl.json")"
fi

finish
