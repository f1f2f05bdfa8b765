#!/usr/bin/env bash
# How dptrain's output reads: counts with the right plural ("1 step", "2 steps") at 1 and 2 ranks;
# out_dir/config.ini and inspect print numbers in the shortest form that reads back the same
# ("lr = 0.2", not 0.20000000000000001); `config --list` in aligned columns; the timeline's tracks
# and processes named by metadata events.
. "$(dirname "$0")/lib.sh"
need "$bin"

make_synth "$tmp/syn.h5" 64 16 6 3 1
small_config "$tmp/c.ini" layer.0.units=8 layer.1.units=3 optimizer.lr=0.2 train.batch_size=full train.epochs=1 \
  train.max_steps= train.log_every= train.out_dir= train.threads=1 train.timeline="$tmp/tl.json"

# a "1" before a plural noun: "1 steps", "1 ranks", ...
singular_plurals() {
  grep -Eo '(^|[^0-9.])1 (steps|ranks|nodes|threads|BLAS threads|layers|parameters|rows|samples|iterations|evaluations|allreduce buckets|buckets|slices|ways|step sizes|groups|cores|restores)\b' "$1"
}

for np in 1 2; do
  out=$tmp/run$np
  at_np "$np" 60 "$bin" train "$tmp/c.ini" --set train.out_dir="$out" > "$tmp/out$np.txt" 2>&1 ||
    bad "np $np: training failed: $(tail -3 "$tmp/out$np.txt")"
  want="dptrain: $np rank$([ "$np" = 1 ] || echo s) on 1 node, 1 BLAS thread per rank"
  grep -qF "$want" "$tmp/out$np.txt" && ok "np $np: '$want'" || bad "np $np: no '$want': $(head -1 "$tmp/out$np.txt")"
  # 2 ranks on one node: [train] comm = auto is node
  reduction=$([ "$np" = 1 ] && echo 'gradients in 1 allreduce bucket' || echo "gradients summed in the node's shared memory in 2 slices")
  for want in "1 step/epoch, 1 step, $reduction" 'done: 1 step, 64 samples'; do
    grep -qF "$want" "$tmp/out$np.txt" && ok "np $np: '$want'" || bad "np $np: no '$want': $(cat "$tmp/out$np.txt")"
  done
  bad_words=$(singular_plurals "$tmp/out$np.txt")
  [ -z "$bad_words" ] && ok "np $np: no '1 <plural>' in the output" || bad "np $np: $bad_words"

  # config.ini: the shortest form of each number, and it trains the same run again
  for want in 'lr = 0.2' 'momentum = 0.9' 'eps = 1e-05' 'beta2 = 0.999'; do
    grep -qx "$want" "$out/config.ini" && ok "np $np: config.ini has '$want'" ||
      bad "np $np: config.ini lacks '$want': $(grep -E "^${want%% *} " "$out/config.ini")"
  done
  grep -Eq '= -?[0-9.]+[0-9]{12,}' "$out/config.ini" && bad "np $np: long numbers in config.ini: $(grep -E '[0-9]{12,}' "$out/config.ini")" ||
    ok "np $np: no 17-digit numbers in config.ini"

  # inspect: the same numbers, the counts' plurals
  "$bin" inspect "$out/checkpoints/ckpt-1.h5" > "$tmp/insp$np.txt" 2>&1 || bad "np $np: inspect failed: $(head -3 "$tmp/insp$np.txt")"
  grep -qx 'lr = 0.2' "$tmp/insp$np.txt" && grep -qF "saved by $np rank$([ "$np" = 1 ] || echo s)" "$tmp/insp$np.txt" &&
    ok "np $np: inspect prints 'lr = 0.2' and 'saved by $np rank...'" || bad "np $np: inspect: $(head -3 "$tmp/insp$np.txt")"

  # the timeline: every rank a named process with two named tracks
  if python3 - "$tmp/tl.json" "$np" << 'EOP'; then
import json, sys
ev = json.load(open(sys.argv[1]))["traceEvents"]
np = int(sys.argv[2])
meta = [e for e in ev if e["ph"] == "M"]
for r in range(np):
    assert {"name": "process_name", "ph": "M", "pid": r, "args": {"name": f"rank {r}"}} in meta, meta
    tracks = {e["tid"]: e["args"]["name"] for e in meta if e["name"] == "thread_name" and e["pid"] == r}
    assert tracks == {0: "computation and I/O", 1: "gradient allreduce"}, tracks
    used = {e["tid"] for e in ev if e["ph"] == "X" and e["pid"] == r}
    assert used <= set(tracks), used
EOP
    ok "np $np: timeline processes and tracks named"
  else
    bad "np $np: timeline metadata: $(head -c 400 "$tmp/tl.json")"
  fi
done

# comm = node at 1 rank: one slice, the update split one way
"$bin" train "$tmp/c.ini" --set train.out_dir="$tmp/node1" --set train.comm=node > "$tmp/node1.txt" 2>&1 ||
  bad "np 1 comm = node: training failed: $(tail -3 "$tmp/node1.txt")"
grep -q "in 1 slice; weights and optimizer state once per node ([0-9.e-]* MB shared), the update split 1 way$" "$tmp/node1.txt" &&
  [ -z "$(singular_plurals "$tmp/node1.txt")" ] && ok "np 1 comm = node: '1 slice', 'split 1 way'" ||
  bad "np 1 comm = node: $(grep training: "$tmp/node1.txt") $(singular_plurals "$tmp/node1.txt")"

# errors about one column or one unit say so in the singular
printf '1\n2\n' > "$tmp/one.csv"
"$bin" convert csv "$tmp/one.csv" --label-col 5 -o "$tmp/one.h5" > /dev/null 2> "$tmp/e.err"
grep -q 'label column 5 does not exist (the row has 1 column)$' "$tmp/e.err" && ok "convert: 'the row has 1 column'" ||
  bad "convert, one column: $(cat "$tmp/e.err")"
printf '0.1,0.2,0.3\n0.4,0.5,0.6\n0.7,0.8,0.9\n' > "$tmp/reg.csv"
"$bin" convert csv "$tmp/reg.csv" --regression --label-col 0 -o "$tmp/reg.h5" > /dev/null 2>&1 || bad "convert regression failed"
"$bin" train "$tmp/c.ini" --set data.path="$tmp/reg.h5" --set model.loss=mse --set train.out_dir="$tmp/reg" \
  > /dev/null 2> "$tmp/e.err"
grep -q '/y has 1 target per row, but the last \[layer\] has 3 units$' "$tmp/e.err" &&
  ok "train: 'has 1 target per row, but the last [layer] has 3 units'" || bad "train, one target: $(cat "$tmp/e.err")"

# config --list: every row's description starts in the header's column
"$bin" config --list > "$tmp/list.txt"
col=$(head -1 "$tmp/list.txt" | awk '{ print index($0, "description") }')
misaligned=$(awk -v c="$col" 'NR > 1 && (substr($0, c - 1, 1) != " " || substr($0, c, 1) == " ")' "$tmp/list.txt")
[ "$col" -gt 1 ] && [ -z "$misaligned" ] && ok "config --list: descriptions aligned at column $col" ||
  bad "config --list misaligned: $(echo "$misaligned" | head -3)"

finish
