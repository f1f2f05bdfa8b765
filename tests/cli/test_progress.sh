#!/usr/bin/env bash
# The live progress bar on terminals of several widths (pseudo-terminals made by script(1), sized
# with stty): no redraw is wider than the terminal (a wrapped bar leaves stale lines behind, as
# "\r\033[K" clears only its last row), narrow terminals drop parts rather than wrap, and an epoch's
# final bar shows the epoch's mean loss over its samples, not its last (short) batch's. At 1 and 2
# ranks (under mpirun the width comes from COLUMNS, as the launcher's pseudo-terminal has none).
. "$(dirname "$0")/lib.sh"
need "$bin"
if ! command -v script > /dev/null; then
  echo "skip - progress bar: script(1) not installed"
  finish
fi

# 1000 rows in batches of 300: 300, 300, 300 and a short one of 100 per epoch
make_synth "$tmp/syn.h5" 1000 100 12 4 1
small_config "$tmp/c.ini" layer.0.units=16 layer.1.units=4 optimizer.lr=0.5 optimizer.momentum= train.batch_size=300 \
  train.epochs=2 train.max_steps= train.log_every=1 train.out_dir= checkpoint.at_end=false

# bars FILE: the bar's redraws in a captured terminal, escape codes removed (the start-up block and
# notes are plain lines, which a terminal may wrap harmlessly); widest FILE: the longest of them
bars() { tr '\r' '\n' < "$1" | sed 's/\x1b\[K//g' | grep '^epoch [0-9]* \['; }
widest() { bars "$1" | awk '{ if (length($0) > w) w = length($0) } END { print w + 0 }'; }

# bar COLS OUT NP: trains on a COLS-wide pseudo-terminal, into $tmp/run-NP-COLS
bar() {
  local launch="$bin train $tmp/c.ini --set train.out_dir=$tmp/run-$3-$1"
  [ "$3" -gt 1 ] && launch="${mpi[*]} -np $3 -x DPTRAIN_PROGRESS -x COLUMNS $launch"
  DPTRAIN_PROGRESS=bar COLUMNS=$1 timeout 60 script -qec "stty cols $1; $launch" /dev/null > "$2" 2>&1
}

for np in 1 2; do
  for cols in 70 48 200; do
    bar "$cols" "$tmp/tty$cols.txt" "$np" || bad "np $np, $cols columns: training failed: $(tail -3 "$tmp/tty$cols.txt")"
    w=$(widest "$tmp/tty$cols.txt")
    grep -q $'\033\[Kepoch 2 \[#*\] 4/4' "$tmp/tty$cols.txt" && [ "$w" -lt "$cols" ] &&
      ok "np $np, $cols columns: every redraw fits ($w characters at most)" ||
      bad "np $np, $cols columns: widest line $w: $(cat -v "$tmp/tty$cols.txt" | tail -3)"
  done
  bars "$tmp/tty200.txt" | grep -q 'samples/s  ETA [0-9:]* (run [0-9:]*)$' && ok "np $np, 200 columns: every part shown" ||
    bad "np $np, 200 columns: $(cat -v "$tmp/tty200.txt" | tail -2)"
  bars "$tmp/tty48.txt" | grep -q 'ETA' && ! bars "$tmp/tty48.txt" | grep -q 'samples/s' &&
    ok "np $np, 48 columns: samples/s dropped, the ETA kept" || bad "np $np, 48 columns: $(cat -v "$tmp/tty48.txt" | tail -2)"

  # The final bar of each epoch: the mean of its four batches' losses weighted by their rows
  # (metrics.jsonl has every step's loss at log_every = 1)
  want=$(python3 - "$tmp/run-$np-70/metrics.jsonl" << 'EOP'
import json, sys
t = [r for r in map(json.loads, open(sys.argv[1])) if "loss" in r]
rows = [300, 300, 300, 100]
for e in (0, 1):
    print(f"{sum(r['loss'] * n for r, n in zip(t[4 * e:4 * e + 4], rows)) / 1000:.4f}")
EOP
  )
  got=$(tr '\r' '\n' < "$tmp/tty70.txt" | sed -n 's/.*\] 4\/4  epoch loss \([0-9.]*\).*/\1/p')
  last=$(python3 -c 'import json,sys; print("%.4f" % [json.loads(l) for l in open(sys.argv[1])][3]["loss"])' "$tmp/run-$np-70/metrics.jsonl")
  [ -n "$want" ] && [ "$(echo $got)" = "$(echo $want)" ] && [ "$last" != "$(echo "$want" | head -1)" ] &&
    ok "np $np: each epoch ends on its mean loss over the samples ($(echo $got))" ||
    bad "np $np: epoch ends show '$(echo $got)', expected '$(echo $want)' (last batch $last)"
done

finish
