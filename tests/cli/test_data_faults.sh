#!/usr/bin/env bash
# Data and checkpoint files under faults: a data file rewritten, replaced or truncated while it is
# read per batch; non-regular files (FIFOs, directories) as data, checkpoint or config; checkpoints
# and data files damaged where HDF5 itself checks nothing; HDF5 writes that fail for lack of space.
. "$(dirname "$0")/lib.sh"
mnt=$tmp/full
on_exit() { mountpoint -q "$mnt" 2> /dev/null && umount "$mnt"; }
need "$fbin"

make_synth "$tmp/a.h5" 20000 500 40 5 1
make_synth "$tmp/b.h5" 20000 500 40 5 2
cat > "$tmp/c.ini" << EOC
[data]
path = $tmp/data.h5
in_memory = false
[layer]
units = 32
activation = relu
[layer]
units = 5
activation = identity
[train]
batch_size = 64
epochs = 100000
log_every = 10
EOC

# --- a data file changed under a run that reads it per batch: every rank stops, one line
# changed NP HOW: trains at NP ranks, does HOW to the data file after step 30, expects exit 1 soon.
changed() {
  local np=$1 how=$2 d=$tmp/run-$1-$2
  cp "$tmp/a.h5" "$tmp/data.h5"
  at_np "$np" 60 "$bin" train "$tmp/c.ini" -q --set train.out_dir="$d" > "$d.txt" 2>&1 &
  local job=$! s
  for _ in $(seq 300); do
    s=$(tail -1 "$d/metrics.jsonl" 2> /dev/null | sed -n 's/{"step":\([0-9]*\).*/\1/p')
    [ -n "$s" ] && [ "$s" -ge 30 ] && break
    sleep 0.05
  done
  case $how in
    rewritten) cp "$tmp/b.h5" "$tmp/data.h5" ;;
    replaced) cp "$tmp/b.h5" "$tmp/new.h5" && mv "$tmp/new.h5" "$tmp/data.h5" ;;
    truncated) truncate -s 300000 "$tmp/data.h5" ;;
    removed) rm "$tmp/data.h5" ;;
  esac
  wait $job
  local rc=$? n
  n=$(grep -c 'dptrain: error:' "$d.txt")
  if [ $rc = 1 ] && [ "$n" = 1 ] && grep -q "error: $tmp/data.h5: the data file .* during the run" "$d.txt"; then
    ok "data file $how at step ~$s, $np rank(s): exit 1, one line: $(grep -o 'the data file [a-z ]*' "$d.txt")"
  else
    bad "data file $how, $np rank(s): exit $rc, $n error lines: $(grep dptrain "$d.txt" | head -3)"
  fi
}
changed 1 rewritten
changed 1 replaced
changed 1 truncated
changed 1 removed
changed 2 rewritten
changed 2 truncated
# Held in memory, the file is read once: changing it afterwards changes nothing the run uses.
cp "$tmp/a.h5" "$tmp/data.h5"
timeout 30 "$bin" train "$tmp/c.ini" -q --set data.in_memory=true --set train.max_steps=20 \
  --set train.out_dir="$tmp/inmem" > "$tmp/inmem.txt" 2>&1 && ok "in memory: a run that only reads at start is fine" ||
  bad "in memory: $(tail -2 "$tmp/inmem.txt")"

# --- a FIFO (or directory) where a file is expected: refused at once, before anything opens it
mkfifo "$tmp/fifo"
mkdir "$tmp/adir"
cp "$tmp/a.h5" "$tmp/data.h5"
timeout 30 "$bin" train "$tmp/c.ini" -q --set train.max_steps=20 --set train.out_dir="$tmp/good" > /dev/null 2>&1 ||
  bad "a short run for a checkpoint failed"
ck=$(ls "$tmp"/good/checkpoints/ckpt-*.h5 | head -1)
# refused WHAT EXIT MESSAGE NP COMMAND...: ends within 5 s with that one error line and exit code.
refused() {
  local what=$1 want=$2 msg=$3 np=$4 out=$tmp/refused.txt
  shift 4
  local start=$(date +%s%N)
  at_np "$np" 10 "$@" > "$out" 2>&1
  local rc=$? ms=$((($(date +%s%N) - start) / 1000000))
  if [ $rc = "$want" ] && [ $ms -le 5000 ] && [ "$(grep -c 'dptrain: error:' "$out")" = 1 ] &&
    grep -q "dptrain: error: .*$msg" "$out"; then
    ok "$what, $np rank(s): exit $rc in $ms ms: $(grep -o 'error: .*' "$out" | head -c 120)"
  else
    bad "$what, $np rank(s): exit $rc after $ms ms: $(head -3 "$out")"
  fi
}
for np in 1 2; do
  refused "FIFO as the config" 2 "fifo: cannot read: it is a FIFO" $np "$bin" train "$tmp/fifo"
  refused "FIFO as the data file" 1 "fifo: data file must be a regular file, this is a FIFO" $np \
    "$bin" train "$tmp/c.ini" -q --set data.path="$tmp/fifo" --set train.out_dir="$tmp/f1"
  refused "FIFO as --resume" 1 "fifo: checkpoint must be a regular file, this is a FIFO" $np \
    "$bin" train "$tmp/c.ini" -q --resume "$tmp/fifo" --set train.out_dir="$tmp/f2"
  refused "FIFO as init_from" 1 "fifo: checkpoint must be a regular file, this is a FIFO" $np \
    "$bin" train "$tmp/c.ini" -q --set model.init_from="$tmp/fifo" --set train.out_dir="$tmp/f3"
  refused "FIFO as eval's --data" 1 "fifo: data file must be a regular file, this is a FIFO" $np \
    "$bin" eval "$ck" --data "$tmp/fifo"
done
refused "FIFO to inspect" 1 "fifo: checkpoint must be a regular file, this is a FIFO" 1 "$bin" inspect "$tmp/fifo"
refused "FIFO to eval" 1 "fifo: checkpoint must be a regular file, this is a FIFO" 1 "$bin" eval "$tmp/fifo"
refused "FIFO as a CSV file to convert" 1 "fifo: a CSV file must be a regular file, this is a FIFO" 1 \
  "$bin" convert csv "$tmp/fifo" -o "$tmp/fifo-csv.h5"
refused "FIFO as an IDX file to convert" 1 "fifo: an IDX file must be a regular file" 1 \
  "$bin" convert idx "$tmp/fifo" "$tmp/fifo" -o "$tmp/idx-out.h5"
refused "directory as the data file" 1 "adir: data file must be a regular file, this is a directory" 1 \
  "$bin" train "$tmp/c.ini" -q --set data.path="$tmp/adir" --set train.out_dir="$tmp/f4"
refused "/dev/zero as the data file" 1 "zero: data file must be a regular file, this is a device" 1 \
  "$bin" train "$tmp/c.ini" -q --set data.path=/dev/zero --set train.out_dir="$tmp/f5"
# A stop signal during start-up ends the run at once (before the handler: by the signal; after it:
# exit 0 before the first step, or at the first step boundary with a checkpoint), never after a wait.
for delay in 0.02 0.05 0.1 0.2; do
  start=$(date +%s%N)
  timeout 20 "$bin" train "$tmp/c.ini" --set train.out_dir="$tmp/sig-$delay" > "$tmp/sig.txt" 2>&1 &
  job=$!
  sleep $delay
  kill -TERM $job 2> /dev/null
  wait $job
  rc=$?
  ms=$((($(date +%s%N) - start) / 1000000))
  if { [ $rc = 143 ] || { [ $rc = 0 ] && grep -q 'stopped by a signal \(at step [0-9]\|during start-up\)' "$tmp/sig.txt"; }; } &&
    [ $ms -le 5000 ]; then
    ok "SIGTERM ${delay}s into start-up: exit $rc after $ms ms"
  else
    bad "SIGTERM ${delay}s into start-up: exit $rc after $ms ms: $(tail -2 "$tmp/sig.txt")"
  fi
done

# --- checkpoints damaged where HDF5 checks nothing: the chunk index, a chunk zeroed with its checksum;
# an attribute (in checksummed metadata). resume, init_from, eval and inspect all refuse them.
tamper=$build/tests/ckpt_tamper
cp "$tmp/a.h5" "$tmp/data.h5"
timeout 30 "$bin" train "$tmp/c.ini" -q --set train.max_steps=20 --set optimizer.momentum=0.9 \
  --set train.out_dir="$tmp/mom" > /dev/null 2>&1 || bad "a run with momentum failed"
good=$tmp/mom/checkpoints/ckpt-20.h5
damaged() { # damaged NAME MESSAGE TAMPER-ARGS...: a copy of $good damaged so, then refused four ways
  local name=$1 msg=$2 f=$tmp/$1.h5
  shift 2
  cp "$good" "$f"
  "$tamper" "$1" "$f" "$2" || { bad "$name: ckpt_tamper $* failed"; return; }
  cmp -s "$good" "$f" && { bad "$name: ckpt_tamper changed nothing"; return; }
  refused "$name: --resume" 1 "$msg" 1 "$bin" train "$tmp/c.ini" -q --set optimizer.momentum=0.9 --resume "$f" \
    --set train.out_dir="$tmp/r-$name"
  refused "$name: inspect" 1 "$msg" 1 "$bin" inspect "$f"
  case $2 in model/*)
    refused "$name: eval" 1 "$msg" 2 "$bin" eval "$f"
    refused "$name: init_from" 1 "$msg" 2 "$bin" train "$tmp/c.ini" -q --set model.init_from="$f" \
      --set train.out_dir="$tmp/i-$name" ;;
  esac
}
hash_msg="does not match its stored hash"
damaged index-weight "model/layer0/weight: the data $hash_msg" index model/layer0/weight
damaged index-bias "model/layer1/bias: the data $hash_msg" index model/layer1/bias
damaged zero-weight "model/layer0/weight: the data $hash_msg" zero model/layer0/weight
damaged index-momentum "optimizer/momentum/layer1/weight: the data $hash_msg" index optimizer/momentum/layer1/weight
damaged zero-momentum "optimizer/momentum/layer0/weight: the data $hash_msg" zero optimizer/momentum/layer0/weight
damaged flip-config "/config: checksum mismatch" flip config
damaged zero-config "/config: the data $hash_msg" zero config
python3 - "$good" "$tmp/attr.h5" << 'EOP'
import struct, sys
d = bytearray(open(sys.argv[1], 'rb').read())
i = d.find(struct.pack('<q', 20), d.find(b'step\0'))  # the value of the root attribute step
d[i] ^= 1
open(sys.argv[2], 'wb').write(d)
EOP
refused "attribute step flipped: --resume" 1 "attributes cannot be read (a metadata checksum failed" 1 \
  "$bin" train "$tmp/c.ini" -q --set optimizer.momentum=0.9 --resume "$tmp/attr.h5" --set train.out_dir="$tmp/r-attr"
refused "attribute step flipped: inspect" 1 "attributes cannot be read" 1 "$bin" inspect "$tmp/attr.h5"
# Files written before the hashes: verified when present, so they still load.
cp "$good" "$tmp/old.h5"
for ds in model/layer0/weight model/layer0/bias model/layer1/weight model/layer1/bias config; do
  "$tamper" unhash "$tmp/old.h5" $ds || bad "ckpt_tamper unhash $ds failed"
done
timeout 30 "$bin" train "$tmp/c.ini" -q --set optimizer.momentum=0.9 --resume "$tmp/old.h5" --set train.max_steps=25 \
  --set train.out_dir="$tmp/r-old" > "$tmp/old.txt" 2>&1 && timeout 10 "$bin" inspect "$tmp/old.h5" > /dev/null &&
  ok "a checkpoint without hashes (older) resumes and inspects" || bad "older checkpoint: $(tail -2 "$tmp/old.txt")"
timeout 10 "$bin" inspect "$good" | grep -q '^verified: [0-9]* datasets' && ok "inspect: says what it verified" ||
  bad "inspect: no verified line"

# --- damaged data: `dptrain convert` (and make_synth, through the same writer) checksums every chunk
h5dump -pH "$tmp/a.h5" 2> /dev/null | grep -q FLETCHER32 && ok "data files are written with Fletcher32 chunks" ||
  bad "data file without Fletcher32: $(h5dump -pH "$tmp/a.h5" 2>&1 | grep -A2 FILTERS | head -3)"
for ds in train/x train/y test/y; do
  cp "$tmp/a.h5" "$tmp/bad-data.h5"
  "$tamper" flip "$tmp/bad-data.h5" $ds || bad "ckpt_tamper flip $ds failed"
  for mem in true false; do
    refused "data $ds flipped, in_memory = $mem" 1 "bad-data.h5: /${ds%/*}/${ds#*/}: reading rows .* failed (checksum" 2 \
      "$bin" train "$tmp/c.ini" -q --set data.path="$tmp/bad-data.h5" --set data.in_memory=$mem \
      --set train.epochs=1 --set train.out_dir="$tmp/bd-$mem"
  done
done
# A chunk zeroed with its checksum passes Fletcher32 (as a chunk the damaged index hides reads as
# zeros): a split loaded whole is checked against its hash.
for how in zero; do
  for ds in train/x train/y; do
    cp "$tmp/a.h5" "$tmp/bad-data.h5"
    "$tamper" $how "$tmp/bad-data.h5" $ds || bad "ckpt_tamper $how $ds failed"
    refused "data $ds: $how, in memory" 1 "bad-data.h5: /$ds: the rows read do not match the stored hash" 2 \
      "$bin" train "$tmp/c.ini" -q --set data.path="$tmp/bad-data.h5" --set data.in_memory=true \
      --set train.epochs=1 --set train.out_dir="$tmp/bh-$how-${ds#*/}"
  done
done

# --- the memory checks count every rank on the node (the test build's DPTRAIN_TEST_NODE_MEMORY sets
# the node's memory): a model that fits one rank but not two is refused at two, before allocating
cp "$tmp/a.h5" "$tmp/data.h5"
export DPTRAIN_TEST_NODE_MEMORY=500e6
at_np 1 60 "$fbin" train "$tmp/c.ini" -q --set layer.0.units=83000 --set train.max_steps=2 \
  --set train.out_dir="$tmp/mem1" > "$tmp/mem1.txt" 2>&1 && ok "memory: a model of 0.33 GB trains at 1 rank of a 0.5 GB node" ||
  bad "memory, 1 rank: $(head -2 "$tmp/mem1.txt")"
refused "memory: the same model at 2 ranks of a 0.5 GB node" 2 \
  "each rank needs 0.3[0-9]* GB .*: 0.6[0-9]* GB for the 2 ranks on this node, more than its 0.5 GB of memory" 2 \
  "$fbin" train "$tmp/c.ini" -q --set layer.0.units=83000 --set train.max_steps=2 --set train.out_dir="$tmp/mem2"
# in_memory = auto counts labels and the epoch's order too: x alone (0.8 MB) would fit half of 1.8 MB
for m in 1.8e6:"streamed" 3e6:"in memory"; do
  DPTRAIN_TEST_NODE_MEMORY=${m%%:*} timeout 30 "$fbin" train "$tmp/c.ini" --set data.in_memory=auto \
    --set train.max_steps=1 --set train.out_dir="$tmp/auto-${m%%:*}" > "$tmp/auto.txt" 2>&1
  grep -q "^data: .*uint8, ${m#*:}" "$tmp/auto.txt" && ok "in_memory = auto on a ${m%%:*}-byte node: ${m#*:}" ||
    bad "in_memory = auto, ${m%%:*}: $(grep -m1 '^data:\|error' "$tmp/auto.txt")"
done
unset DPTRAIN_TEST_NODE_MEMORY

# --- every dataset a run reads is checked, the targets too: NaN, Inf, a float64 beyond float32
mkdir "$tmp/bad" && "$build/tests/make_bad_data" "$tmp/bad" || bad "make_bad_data failed"
cat > "$tmp/mse.ini" << EOC
[data]
path = $tmp/bad/yt_nan.h5
[model]
loss = mse
[layer]
units = 1
activation = identity
[train]
batch_size = 10
epochs = 1
EOC
for np in 1 2; do
  refused "NaN in the float targets" 1 "yt_nan.h5: /train/y: row 12, column 0 is NaN" $np \
    "$bin" train "$tmp/mse.ini" -q --set train.out_dir="$tmp/yt1"
  refused "a float64 target beyond float32" 1 "yt_huge.h5: /train/y: row 3, column 0 is Inf (expected finite values within" \
    $np "$bin" train "$tmp/mse.ini" -q --set data.path="$tmp/bad/yt_huge.h5" --set train.out_dir="$tmp/yt2"
  refused "-Inf in the test targets" 1 "yt_test_inf.h5: /test/y: row 7, column 0 is Inf" $np \
    "$bin" train "$tmp/mse.ini" -q --set data.path="$tmp/bad/yt_test_inf.h5" --set train.out_dir="$tmp/yt3"
done
# eval checks its data as training does
timeout 30 "$bin" train "$tmp/mse.ini" -q --set data.path="$tmp/bad/y_float.h5" --set optimizer.lr=1e-7 \
  --set train.out_dir="$tmp/ev" \
  > /dev/null 2>&1 || bad "a regression run on y_float.h5 failed"
for np in 1 2; do
  refused "eval on -Inf test targets" 1 "yt_test_inf.h5: /test/y: row 7, column 0 is Inf" $np \
    "$bin" eval "$(ls "$tmp"/ev/checkpoints/ckpt-*.h5 | tail -1)" --data "$tmp/bad/yt_test_inf.h5"
done
# Checkpoint names are never rebuilt into another file's: "ckpt-007.h5" is not step 7's file
mkdir -p "$tmp/names/checkpoints"
cp "$ck" "$tmp/names/checkpoints/ckpt-007.h5"
timeout 30 "$bin" train "$tmp/c.ini" -q --set train.max_steps=3 --set train.out_dir="$tmp/names" --resume auto \
  > "$tmp/names.txt" 2>&1
rc=$?
[ $rc = 0 ] && ! grep -q 'ckpt-7.h5' "$tmp/names.txt" && [ -e "$tmp/names/checkpoints/ckpt-007.h5" ] &&
  ok "ckpt-007.h5: not taken for step 7's checkpoint, left alone" || bad "ckpt-007.h5: exit $rc: $(head -2 "$tmp/names.txt")"

# --- HDF5 meets a full disk (the free-space estimate bypassed by the test build's hook): every size,
# whichever write or close fails, ends in one error line and exit 1, never a crash at exit
make_synth "$tmp/syn.h5" 3000 0 20 5 1
if mkdir -p "$mnt" && mount -t tmpfs -o size=64k tmpfs "$mnt" 2> /dev/null; then
  for np in 1 2; do
    for units in 48 64 100 200; do
      rm -rf "${mnt:?}"/*
      DPTRAIN_TEST_NO_SPACE_CHECK=1 at_np $np 60 "$fbin" train "$tmp/c.ini" -q --set data.path="$tmp/syn.h5" \
        --set data.in_memory=true --set layer.0.units=$units --set layer.1.units=5 --set checkpoint.every_steps=20 \
        --set checkpoint.keep_last=0 --set train.max_steps=200 --set checkpoint.dir="$mnt" \
        --set train.out_dir="$tmp/full-$np-$units" > "$tmp/full.txt" 2>&1
      rc=$?
      prev=$(ls "$mnt" | grep -v '\.tmp$' | sort -t- -k2 -n | tail -1)
      if [ $rc = 1 ] && [ "$(grep -c 'dptrain: error:' "$tmp/full.txt")" = 1 ] &&
        grep -q "writing the checkpoint failed (No space left on device)" "$tmp/full.txt" &&
        ! ls "$mnt" | grep -q '\.tmp$' && ! grep -qi 'segmentation\|signal' "$tmp/full.txt" &&
        { [ -z "$prev" ] || timeout 10 "$bin" inspect "$mnt/$prev" > /dev/null; }; then
        ok "HDF5 on a full disk, $np rank(s), units $units: exit 1, one line, no temp file, '${prev:-none}' loads"
      else
        bad "HDF5 on a full disk, $np rank(s), units $units: exit $rc: $(grep -v '^---' "$tmp/full.txt" | head -4)"
      fi
    done
  done
  rm -rf "${mnt:?}"/*
  head -c 40000 /dev/urandom > "$mnt/filler"
  python3 -c "
import random
random.seed(2)
with open('$tmp/big.csv', 'w') as f:
    for i in range(3000):
        f.write(','.join('%.4f' % random.random() for _ in range(8)) + ',%d\n' % (i % 3))"
  timeout 30 "$bin" convert csv "$tmp/big.csv" -o "$mnt/out.h5" > "$tmp/conv.txt" 2>&1
  rc=$?
  [ $rc = 1 ] && grep -q "out.h5.tmp: writing the data file failed (No space left on device)" "$tmp/conv.txt" &&
    [ ! -e "$mnt/out.h5" ] && [ ! -e "$mnt/out.h5.tmp" ] && ok "convert to a full disk: exit 1, one line, nothing left" ||
    bad "convert to a full disk: exit $rc: $(head -3 "$tmp/conv.txt")"
  umount "$mnt"
else
  echo "skip - full disk: cannot mount a small tmpfs here"
fi

finish
