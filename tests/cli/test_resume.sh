#!/usr/bin/env bash
# Resume checks what it resumes: keys that change the model, the data or the optimizer's state and
# differ from the checkpoint's stored configuration stop it with one line listing them (files
# untouched); keys safe to change apply with one line each; resuming a finished run says so and
# exits 0; init_from is not read on resume; and a run stopped by SIGTERM and resumed writes the
# metrics.jsonl of an uninterrupted run.
. "$(dirname "$0")/lib.sh"

# 1000 rows in batches of 60: 17 steps per epoch.
make_synth "$tmp/syn.h5" 1000 200 20 5 1
small_config "$tmp/c.ini" schedule.name=cosine
train() { # NP CONFIG OUT_DIR LOG [args...]
  local np=$1 cfg=$2 out=$3 log=$4
  shift 4
  at_np "$np" 60 "$bin" train "$cfg" --set train.out_dir="$out" "$@" > "$log" 2>&1
}
fingerprint() { find "$@" -print0 | sort -z | xargs -0 md5sum 2> /dev/null; find "$@" | sort; }

h=$tmp/half
train 2 "$tmp/c.ini" "$h" "$tmp/half.txt" --set train.max_steps=20 || bad "set-up run failed: $(tail -3 "$tmp/half.txt")"
ck=$h/checkpoints/ckpt-20.h5

# --- keys that must match: exit 2, one line naming each, nothing changed (1 and 2 ranks)
refused() { # name, config, texts (|-separated), args...
  local name=$1 cfg=$2 texts=$3 np rc n before after t miss
  shift 3
  for np in 1 2; do
    before=$(fingerprint "$h")
    train $np "$cfg" "$h" "$tmp/r.txt" --resume auto "$@"
    rc=$?
    after=$(fingerprint "$h")
    n=$(grep -c 'dptrain: error:' "$tmp/r.txt")
    miss=
    IFS='|' read -r -a want <<< "$texts"
    for t in "${want[@]}"; do
      grep 'dptrain: error:' "$tmp/r.txt" | grep -qF -- "$t" || miss="$miss '$t'"
    done
    if [ $rc = 2 ] && [ "$n" = 1 ] && [ -z "$miss" ] && [ "$before" = "$after" ] &&
      grep -qF "$ck was saved by a run with another model, data or optimizer" "$tmp/r.txt"; then
      ok "np=$np resume with $name: exit 2, one line naming it, files untouched"
    else
      bad "np=$np resume with $name: exit $rc, $n lines, missing$miss$([ "$before" = "$after" ] || echo ', files changed'): $(head -2 "$tmp/r.txt")"
    fi
  done
}
refused "another seed" "$tmp/c.ini" "train.seed 1 -> 2" --set train.seed=2
refused "another activation" "$tmp/c.ini" "layer.0.activation relu -> tanh" --set layer.0.activation=tanh
refused "a larger batch" "$tmp/c.ini" "train.batch_size 60 -> 100" --set train.batch_size=100
refused "several differences" "$tmp/c.ini" "optimizer.momentum 0.9 -> 0.5|schedule.name cosine -> constant|layer.1.init auto -> xavier_normal" \
  --set optimizer.momentum=0.5 --set schedule.name=constant --set layer.1.init=xavier_normal
awk '/^\[optimizer\]/ { print "[layer]\nunits = 5\nactivation = identity" } 1' "$tmp/c.ini" |
  sed '0,/^units = 5$/s//units = 6/' > "$tmp/three.ini"
refused "another layer count" "$tmp/three.ini" "the checkpoint's model has 2 layers, the config 3"

# --- keys safe to change: applied, one line each, with what the run length does to the schedule
cp -r "$h" "$tmp/longer"
if train 2 "$tmp/c.ini" "$tmp/longer" "$tmp/longer.txt" --resume auto --set train.max_steps=40 --set train.log_every=10 &&
  grep -q "^done: 40 steps" "$tmp/longer.txt"; then
  ok "resume with a new max_steps and log_every runs on to step 40"
else
  bad "safe changes: $(grep -e error -e done "$tmp/longer.txt" | head -2)"
fi
grep -q "^resume: train.max_steps 20 -> 40: the run ends at step 40 instead of 20, and the cosine schedule now decays over 40 steps (step size [0-9.e-]* at step 21, [0-9.e-]* before)$" "$tmp/longer.txt" &&
  ok "max_steps: one line old -> new with the new end and the cosine schedule's step size" ||
  bad "no max_steps line: $(grep '^resume:' "$tmp/longer.txt" | tr '\n' ' ')"
grep -qx "resume: train.log_every 5 -> 10" "$tmp/longer.txt" && ok "log_every: one line old -> new" ||
  bad "no log_every line: $(grep '^resume:' "$tmp/longer.txt" | tr '\n' ' ')"
# out_dir differs too (the run was copied): safe, so said; nothing else changed.
grep -qx "resume: train.out_dir $h -> $tmp/longer" "$tmp/longer.txt" &&
  [ "$(grep -c '^resume:' "$tmp/longer.txt")" = 3 ] && ok "no line for keys that did not change" ||
  bad "resume lines: $(grep '^resume:' "$tmp/longer.txt" | tr '\n' ' ')"

# --- a finished run resumed: says so, exit 0, writes nothing
before=$(fingerprint "$tmp/longer")
train 2 "$tmp/c.ini" "$tmp/longer" "$tmp/again.txt" --resume auto --set train.log_every=10
rc=$?
after=$(fingerprint "$tmp/longer")
if [ $rc = 0 ] && grep -q "^resume: $tmp/longer/checkpoints/ckpt-40.h5 is at step 40, the end of this run's 40 steps: nothing to train" "$tmp/again.txt" &&
  ! grep -q '^done:' "$tmp/again.txt" && [ "$before" = "$after" ]; then
  ok "resuming a finished run: exit 0, says so, no 'done: 0 samples', files untouched"
else
  bad "finished run: exit $rc: $(grep -e resume -e done "$tmp/again.txt" | tr '\n' ' ')"
fi

# --- init_from matters only at a fresh start: a fine-tuned run resumes and evaluates without it
cp "$ck" "$tmp/base.h5"
train 1 "$tmp/c.ini" "$tmp/ft" "$tmp/ft1.txt" --set model.init_from="$tmp/base.h5" --set train.max_steps=10 ||
  bad "fine-tune run failed: $(tail -2 "$tmp/ft1.txt")"
rm "$tmp/base.h5"
for np in 1 2; do
  if train $np "$tmp/c.ini" "$tmp/ft" "$tmp/ft2.txt" --set model.init_from="$tmp/base.h5" --resume auto \
    --set train.max_steps=$((10 + 5 * np)) && grep -q "^done: $((10 + 5 * np)) steps" "$tmp/ft2.txt"; then
    ok "np=$np a fine-tuned run resumes after its init_from file is gone"
  else
    bad "np=$np resume without the init_from file: $(grep -e error -e done "$tmp/ft2.txt" | head -2)"
  fi
  at_np $np 30 "$bin" eval "$tmp/ft/checkpoints/ckpt-$((10 + 5 * np)).h5" > "$tmp/fteval.txt" 2>&1 &&
    grep -q 'test_acc' "$tmp/fteval.txt" && ok "np=$np eval of the fine-tuned checkpoint without its init_from file" ||
    bad "np=$np eval without the init_from file: $(head -2 "$tmp/fteval.txt")"
done

# --- a SIGTERM stop and its resume log what an uninterrupted run logs
sed -e 's/^name = cosine$/name = constant/' -e 's/^epochs = .*/epochs = 1000000/' -e 's/^max_steps = .*/max_steps = 0/' \
  -e 's/^log_every = .*/log_every = 7/' "$tmp/c.ini" > "$tmp/sig.ini"
s=$tmp/sig
bg timeout 120 "${mpi[@]}" -np 2 "$bin" train "$tmp/sig.ini" --set train.out_dir="$s" > "$tmp/sig.txt" 2>&1
job=$!
wait_for 10 eval '[ -f "$s/metrics.jsonl" ] && [ "$(wc -l < "$s/metrics.jsonl")" -ge 3 ]'
target=$(rank_pid "$tmp/sig.ini" 1)
[ -n "$target" ] && kill -TERM "$target"
bg_wait $job
rc=$?
n=$(sed -n 's/.*stopped by a signal at step \([0-9]*\).*/\1/p' "$tmp/sig.txt")
if [ -z "$n" ]; then
  bad "SIGTERM to rank 1: exit $rc, no stop step: $(tail -3 "$tmp/sig.txt")"
else
  # The open interval's timing sums are in the checkpoint: n mod 7 steps since the last line.
  got=$(h5dump -a /interval_timed_steps "$s/checkpoints/ckpt-$n.h5" 2> /dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p')
  [ "$got" = $((n % 7)) ] && h5dump -a /interval_wall "$s/checkpoints/ckpt-$n.h5" > /dev/null 2>&1 &&
    ok "ckpt-$n.h5 holds the open interval's timings ($got steps)" || bad "interval timings in ckpt-$n.h5: '$got', want $((n % 7))"
  end=$((n + 23))
  train 2 "$tmp/sig.ini" "$s" "$tmp/sig2.txt" --resume auto --set train.max_steps=$end ||
    bad "resume after SIGTERM: $(tail -2 "$tmp/sig2.txt")"
  train 2 "$tmp/sig.ini" "$tmp/ref" "$tmp/ref.txt" --set train.max_steps=$end || bad "reference run failed"
  strip() { sed -E 's/,"(samples_per_s|step_ms|train_s|[a-z]+_ms_(mean|max))":[^,}]*//g' "$1"; }
  if cmp -s <(strip "$tmp/ref/metrics.jsonl") <(strip "$s/metrics.jsonl"); then
    ok "stopped at step $n by SIGTERM and resumed: metrics.jsonl equals the uninterrupted run's (timings aside)"
  else
    bad "metrics after SIGTERM at step $n: $(diff <(strip "$tmp/ref/metrics.jsonl") <(strip "$s/metrics.jsonl") | head -6 | tr '\n' ' ')"
  fi
  # The first line after the resume times its whole interval, the steps before the stop included.
  first=$(awk -F'"step":' -v n="$n" '/"loss"/ { split($2, a, ","); if (a[1] + 0 > n) { print; exit } }' "$s/metrics.jsonl")
  [[ $first == *'"step_ms":'[0-9]* ]] && [[ $first == *'"compute_ms_mean":'[0-9]* ]] &&
    ok "the first line after the resume has its timings" || bad "first line after the resume: $first"
fi

finish
