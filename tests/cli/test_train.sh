#!/usr/bin/env bash
# End to end through the command line: training on synthetic data at 1 and 2 ranks, and the
# errors a user meets first, each one line naming the file or key, with the documented exit code.
. "$(dirname "$0")/lib.sh"

make_synth "$tmp/syn.h5" 2000 500 20 5 1

write_cfg() { # file, out_dir [, one more [train] KEY=VALUE]
  small_config "$1" model.loss=softmax_cross_entropy optimizer.lr=0.1 train.batch_size=64 train.epochs=4 train.max_steps= \
    train.log_every=10 train.out_dir="$2" ${3:+"train.$3"}
}

# --- training: the loss must fall below a stated threshold (it starts near ln 5 = 1.61)
for np in 1 2; do
  write_cfg "$tmp/ok.ini" "$tmp/run$np"
  if at_np $np 120 "$bin" train "$tmp/ok.ini" > "$tmp/out$np.txt" 2>&1; then
    last_loss=$(grep '"loss"' "$tmp/run$np/metrics.jsonl" | tail -1 | sed 's/.*"loss":\([^,}]*\).*/\1/')
    acc=$(grep '"test_acc"' "$tmp/run$np/metrics.jsonl" | tail -1 | sed 's/.*"test_acc":\([^,}]*\).*/\1/')
    if awk -v l="$last_loss" -v a="$acc" 'BEGIN { exit !(l < 0.2 && a > 0.9) }'; then
      ok "np=$np trains: final loss $last_loss < 0.2, test_acc $acc > 0.9"
    else
      bad "np=$np final loss $last_loss, test_acc $acc (want < 0.2, > 0.9)"
    fi
    [ -s "$tmp/run$np/config.ini" ] && ok "np=$np wrote config.ini" || bad "np=$np config.ini missing"
    grep -q '^epoch' "$tmp/out$np.txt" && ok "np=$np prints progress" || bad "np=$np no progress lines"
  else
    bad "np=$np training failed: $(tail -3 "$tmp/out$np.txt")"
  fi
done

# --- errors: exit code, and exactly one "dptrain: error:" line containing the expected text
expect_error() { # name, exit code, text, args...
  local name=$1 code=$2 text=$3
  shift 3
  for np in 1 2; do
    at_np $np 60 "$bin" "$@" > "$tmp/e.out" 2> "$tmp/e.err"
    local rc=$? n
    n=$(grep -c 'dptrain: error:' "$tmp/e.err")
    if [ $rc -eq "$code" ] && [ "$n" -eq 1 ] && grep -qF -- "$text" "$tmp/e.err"; then
      ok "np=$np $name: exit $rc, one line"
    else
      bad "np=$np $name: exit $rc (want $code), $n error lines, want text '$text': $(head -3 "$tmp/e.err")"
    fi
  done
}

expect_error "missing config" 2 "nope.ini: cannot open" train "$tmp/nope.ini"
write_cfg "$tmp/c1.ini" "$tmp/run"
sed -i "s|^path = .*|path = $tmp/missing.h5|" "$tmp/c1.ini"
expect_error "missing data file" 1 "$tmp/missing.h5" train "$tmp/c1.ini"
write_cfg "$tmp/c2.ini" "$tmp/run"
sed -i 's/^units = 5$/units = 3/' "$tmp/c2.ini"
expect_error "labels out of range" 2 "labels range 0..4, but the last [layer] has 3 units" train "$tmp/c2.ini"
write_cfg "$tmp/c3.ini" "$tmp/run"
expect_error "batch size 0" 2 "batch_size" train "$tmp/c3.ini" --set train.batch_size=0
write_cfg "$tmp/c4.ini" "$tmp/run" log_evry=10
expect_error "unknown key" 2 "did you mean" train "$tmp/c4.ini"

# --- usage
"$bin" --help | grep -q '^usage: dptrain' && ok "--help" || bad "--help"
"$bin" train --help | grep -q 'usage: dptrain train' && ok "train --help" || bad "train --help"
"$bin" --version | grep -q '^dptrain ' && ok "--version" || bad "--version"
"$bin" frobnicate 2> "$tmp/u.err"; [ $? -eq 2 ] && grep -q "unknown command 'frobnicate'" "$tmp/u.err" && ok "unknown command: exit 2" || bad "unknown command"
"$bin" train "$tmp/ok.ini" --bogus 2> "$tmp/u.err"; [ $? -eq 2 ] && grep -q "unknown option '--bogus'" "$tmp/u.err" && ok "unknown option: exit 2" || bad "unknown option"
"$bin" train 2> "$tmp/u.err"; [ $? -eq 2 ] && grep -q "missing CONFIG" "$tmp/u.err" && ok "missing CONFIG: exit 2" || bad "missing CONFIG"

finish
