#!/usr/bin/env bash
# Streaming (order = blocks, the set read from the file by a reader thread per rank): the rows each
# step trains on are the same at 1, 2 and 3 ranks and after a resume at another rank count, every
# epoch visits every row once; the loss trajectories agree across rank counts and equal the same
# order held in memory; a file changed or unreadable mid-run stops every rank with one error, never a
# hang; memory stays within prefetch_mb plus the model on a file larger than it.
. "$(dirname "$0")/lib.sh"
need "$fbin"

make_synth "$tmp/a.h5" 4000 200 20 5 1
cat > "$tmp/c.ini" << EOC
[data]
path = $tmp/a.h5
in_memory = false
block_rows = 50
shuffle_blocks = 4
prefetch_mb = 0.05
[layer]
units = 16
activation = relu
[layer]
units = 5
activation = identity
[optimizer]
lr = 0.05
[train]
batch_size = 64
epochs = 2
log_every = 1
EOC
spe=63 # steps per epoch: ceil(4000 / 64)

# merged PREFIX NP: "STEP ROW..." per step, the ranks' shards in rank order (the global batch)
merged() {
  local files=() r
  for ((r = 0; r < $2; r++)); do files+=("$1.$r"); done
  awk '{ s = $1; $1 = ""; a[s] = a[s] $0 } END { for (s in a) print s a[s] }' "${files[@]}" | sort -n
}
# run NAME NP [--set ...]: trains with the rows dumped; 0 on success
run() {
  local name=$1 np=$2
  shift 2
  DPTRAIN_TEST_DUMP_ROWS=$tmp/$name.rows at_np "$np" 120 "$fbin" train "$tmp/c.ini" -q \
    --set train.out_dir="$tmp/$name" "$@" > "$tmp/$name.txt" 2>&1
}
losses() { grep -o '"loss":[-0-9.e+]*' "$tmp/$1/metrics.jsonl" | cut -d: -f2; }

for np in 1 2 3; do
  run np$np $np || bad "$np rank(s): $(tail -2 "$tmp/np$np.txt")"
  merged "$tmp/np$np.rows" $np > "$tmp/np$np.merged"
done
"$fbin" train "$tmp/c.ini" --set train.max_steps=1 --set train.out_dir="$tmp/line" > "$tmp/line.txt" 2>&1
grep -q "^order: blocks of 50 rows (0.0012 MB), rows shuffled within windows of 4 blocks; a reader thread per rank prefetches into 0.0492 MB (41 blocks)" \
  "$tmp/line.txt" && ok "the start-up block names the order, the block size, the window and the reader's memory" ||
  bad "start-up line: $(grep '^order' "$tmp/line.txt")"
[ "$(wc -l < "$tmp/np1.merged")" = $((2 * spe)) ] && cmp -s "$tmp/np1.merged" "$tmp/np2.merged" &&
  cmp -s "$tmp/np1.merged" "$tmp/np3.merged" && ok "the rows of every step are the same at 1, 2 and 3 ranks" ||
  bad "rows differ across rank counts ($(wc -l < "$tmp/np1.merged") steps at 1 rank)"
# every epoch a permutation of the 4000 rows, windows of 4 blocks of 50 rows, epochs different
awk -v spe=$spe '{ e = int(($1 - 1) / spe); for (i = 2; i <= NF; i++) { n[e]++; if (!seen[e, $i]++) u[e]++;
    if ($i < 0 || $i >= 4000) bad = 1; p = pos[e]++; w = int(p / 200); if (!blk[e, w, int($i / 50)]++) nb[e, w]++ } }
  END { for (e = 0; e < 2; e++) { if (n[e] != 4000 || u[e] != 4000) bad = 1
          for (w = 0; w < 20; w++) if (nb[e, w] != 4) bad = 1 }
        exit bad }' "$tmp/np1.merged" && ok "each epoch visits each row once, in windows of 4 whole blocks" ||
  bad "an epoch is not a permutation of the rows in windows of whole blocks"
e0=$(head -$spe "$tmp/np1.merged" | cut -d' ' -f2- | md5sum)
e1=$(tail -$spe "$tmp/np1.merged" | cut -d' ' -f2- | md5sum)
[ "$e0" != "$e1" ] && ok "the two epochs' orders differ" || bad "epoch 2 repeats epoch 1's order"
run seed2 1 --set train.seed=2
merged "$tmp/seed2.rows" 1 | cmp -s - "$tmp/np1.merged" && bad "another seed gives the same order" ||
  ok "another seed gives another order"

# losses: 2 and 3 ranks within 2e-5 of 1 rank; the same order in memory is the same run
losses np1 > "$tmp/l1"
for np in 2 3; do
  losses np$np | paste "$tmp/l1" - | awk -v np=$np '{ d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1)
      if (r > m) m = r } END { printf "%d ranks: worst relative difference %.2g over %d steps\n", np, m, NR; exit !(NR == 126 && m <= 2e-5) }' > "$tmp/cmp.txt" &&
    ok "loss trajectory streamed: $(cat "$tmp/cmp.txt")" || bad "loss trajectory streamed: $(cat "$tmp/cmp.txt")"
done
run mem 1 --set data.in_memory=true --set data.order=blocks
losses mem | cmp -s - "$tmp/l1" && ok "order = blocks held in memory trains exactly as streamed (a ring of 41 of 80 blocks)" ||
  bad "in memory and streamed differ: $(losses mem | head -2) vs $(head -2 "$tmp/l1")"
run random 1 --set data.order=random
merged "$tmp/random.rows" 1 | cmp -s - "$tmp/np1.merged" && bad "order = random gives the block order" ||
  ok "order = random is another order (a full permutation)"

# a resume at another rank count continues the same order: 2 ranks to step 40, then 3 ranks
run part 2 --set train.max_steps=40 && run part 3 --resume auto ||
  bad "resume: $(tail -2 "$tmp/part.txt")"
# the dumps of both sessions share a prefix: rank files 0 and 1 hold both, 2 only the second
awk '{ s = $1; $1 = ""; a[s] = a[s] $0 } END { for (s in a) print s a[s] }' "$tmp/part.rows.0" "$tmp/part.rows.1" \
  "$tmp/part.rows.2" | sort -n > "$tmp/part.merged"
cmp -s "$tmp/part.merged" "$tmp/np1.merged" && ok "resumed mid-epoch at 3 ranks from 2: the same rows every step" ||
  bad "resume at another rank count changed the rows ($(wc -l < "$tmp/part.merged") steps)"

# --- failures while streaming: every rank stops with one error line, never a hang
make_synth "$tmp/b.h5" 4000 200 20 5 2
# broken NP HOW: the file changes under a run whose reader is slowed down (10 ms a block)
broken() {
  local np=$1 how=$2 d=$tmp/broken-$1-$2
  cp "$tmp/a.h5" "$tmp/data.h5"
  DPTRAIN_TEST_STREAM_SLOW=10 at_np "$np" 60 "$fbin" train "$tmp/c.ini" -q --set data.path="$tmp/data.h5" \
    --set train.epochs=1000 --set train.out_dir="$d" > "$d.txt" 2>&1 &
  local job=$! s
  for _ in $(seq 400); do
    s=$(tail -1 "$d/metrics.jsonl" 2> /dev/null | sed -n 's/{"step":\([0-9]*\).*/\1/p')
    [ -n "$s" ] && [ "$s" -ge 5 ] && break
    sleep 0.05
  done
  case $how in
    truncated) truncate -s 100000 "$tmp/data.h5" ;;
    removed) rm "$tmp/data.h5" ;;
    replaced) cp "$tmp/b.h5" "$tmp/new.h5" && mv "$tmp/new.h5" "$tmp/data.h5" ;;
  esac
  wait $job
  local rc=$? n
  n=$(grep -c 'dptrain: error:' "$d.txt")
  if [ $rc = 1 ] && [ "$n" = 1 ] && grep -q "error: $tmp/data.h5: the data file .* during the run.*(the streaming reader" "$d.txt"; then
    ok "streamed file $how at step ~$s, $np rank(s): exit 1, one line: $(grep -o 'the data file [a-z ]*\|the streaming reader[^)]*' "$d.txt" | tr '\n' ' ')"
  else
    bad "streamed file $how, $np rank(s): exit $rc, $n error lines: $(grep dptrain "$d.txt" | head -3)"
  fi
}
for np in 1 2; do
  broken $np truncated
  broken $np removed
  broken $np replaced
done
for np in 1 2; do
  DPTRAIN_TEST_STREAM_FAIL=30 at_np $np 60 "$fbin" train "$tmp/c.ini" -q --set train.out_dir="$tmp/fail$np" \
    > "$tmp/fail$np.txt" 2>&1
  rc=$?
  [ $rc = 1 ] && [ "$(grep -c 'dptrain: error:' "$tmp/fail$np.txt")" = 1 ] &&
    grep -q "a.h5: /train/x: injected read error (the streaming reader, rows [0-9]*\.\.[0-9]* for step [0-9]*)" "$tmp/fail$np.txt" &&
    ok "a read error in the reader, $np rank(s): exit 1, one line naming the rows" ||
    bad "a read error in the reader, $np rank(s): exit $rc: $(grep dptrain "$tmp/fail$np.txt" | head -3)"
done
# a stop signal while the reader waits or reads: a checkpoint at the step boundary, the thread joined
DPTRAIN_TEST_STREAM_SLOW=10 timeout 60 "$fbin" train "$tmp/c.ini" --set train.epochs=1000 \
  --set train.out_dir="$tmp/sig" > "$tmp/sig.txt" 2>&1 &
job=$!
for _ in $(seq 400); do
  [ -f "$tmp/sig/metrics.jsonl" ] && [ "$(grep -c '"loss"' "$tmp/sig/metrics.jsonl")" -ge 5 ] && break
  sleep 0.05
done
kill -TERM $job
wait $job
rc=$?
[ $rc = 0 ] && grep -q "stopped by a signal at step [0-9]" "$tmp/sig.txt" &&
  ok "SIGTERM while streaming: exit 0 at a step boundary, with a checkpoint" ||
  bad "SIGTERM while streaming: exit $rc: $(tail -2 "$tmp/sig.txt")"
"$fbin" train "$tmp/c.ini" -q --set data.prefetch_mb=0.01 --set train.out_dir="$tmp/small" > "$tmp/small.txt" 2>&1
[ $? = 2 ] && grep -q "prefetch_mb = 0.01 holds 8 blocks of 50 rows .* may need 12 (shuffle_blocks = 4): raise prefetch_mb" \
  "$tmp/small.txt" && ok "a ring too small for one step is refused at start" || bad "small ring: $(cat "$tmp/small.txt")"

# --- memory: a 64 MB training set streamed through an 8 MB ring
make_synth "$tmp/big.h5" 64000 100 1000 5 3
make_synth "$tmp/small.h5" 2000 100 1000 5 3
peak() { # peak RSS in kB of a streamed run of one epoch on $1
  DPTRAIN_TEST_PEAK_RSS=1 timeout 120 "$fbin" train "$tmp/c.ini" -q --set data.path="$1" --set data.block_rows=0 \
    --set data.shuffle_blocks=1 --set data.prefetch_mb=8 --set train.batch_size=256 --set train.epochs=1 \
    --set train.log_every=50 --set train.out_dir="$tmp/peak-$(basename "$1")" 2>&1 | sed -n 's/^rank 0 peak VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p'
}
big=$(peak "$tmp/big.h5") small=$(peak "$tmp/small.h5")
if nm -D "$fbin" 2> /dev/null | grep -q " __asan_init"; then # its quarantine keeps freed memory resident
  [ -n "$big" ] && ok "a 64 MB set streamed with prefetch_mb = 8 (AddressSanitizer build: peak RSS not checked)" ||
    bad "streamed 64 MB with prefetch_mb = 8 failed"
elif [ -n "$big" ] && [ -n "$small" ] && [ "$big" -le $((small + 8000 + 16000)) ]; then
  ok "a 64 MB set streamed with prefetch_mb = 8: peak RSS $((big / 1000)) MB, $(((big - small) / 1000)) MB above a 2 MB set's"
else
  bad "streamed 64 MB with prefetch_mb = 8: peak ${big:-?} kB, a 2 MB set's ${small:-?} kB"
fi
# --- x read straight from the file (O_DIRECT) in convert's layout: the same training as in memory;
# a damaged chunk fails its Fletcher32 check with the file and rows
"$fbin" convert synthetic -o "$tmp/d.h5" --rows 6000 --features 64 --classes 5 --test-rows 500 --chunk-mb 0.05 > /dev/null ||
  bad "convert synthetic failed"
if python3 -c "import os, sys; os.close(os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT))" "$tmp/d.h5" 2> /dev/null; then
  direct() { # NAME NP [--set ...]
    local name=$1 np=$2
    shift 2
    at_np "$np" 120 "$fbin" train "$tmp/c.ini" --set data.path="$tmp/d.h5" --set data.block_rows=0 --set data.prefetch_mb=2 --set data.direct_io=true \
      --set train.out_dir="$tmp/$name" "$@" > "$tmp/$name.txt" 2>&1
  }
  direct d-auto 1 --set data.direct_io=auto
  grep -q "^order: .*prefetches into [0-9.]* MB ([0-9]* blocks)$" "$tmp/d-auto.txt" &&
    ok "direct_io = auto on a file that fits in memory: read through the page cache" ||
    bad "direct_io = auto: $(grep '^order' "$tmp/d-auto.txt")"
  for np in 1 2; do
    direct d-mem$np $np --set data.in_memory=true --set data.order=blocks || bad "in memory: $(tail -2 "$tmp/d-mem$np.txt")"
    direct d-np$np $np || bad "direct at $np: $(tail -2 "$tmp/d-np$np.txt")"
    grep -q "^order: .*chunks read with O_DIRECT, past the page cache" "$tmp/d-np$np.txt" &&
      [ -n "$(losses d-np$np)" ] && [ "$(losses d-np$np)" = "$(losses d-mem$np)" ] &&
      ok "chunks read with O_DIRECT at $np rank(s): the start-up line says so, losses equal the run in memory" ||
      bad "O_DIRECT at $np rank(s): $(grep '^order' "$tmp/d-np$np.txt")"
  done
  off=$(/usr/bin/python3 -c "import h5py, sys; print(h5py.File(sys.argv[1], 'r')['train/x'].id.get_chunk_info(3).byte_offset)" \
    "$tmp/d.h5" 2> /dev/null)
  if [ -n "$off" ]; then
    printf '\x5a' | dd of="$tmp/d.h5" bs=1 seek=$((off + 1000)) conv=notrunc 2> /dev/null
    for np in 1 2; do
      direct d-bad$np $np
      rc=$?
      [ $rc != 0 ] && [ "$(grep -c 'train/x: reading rows [0-9]*\.\.[0-9]* failed (checksum mismatch' "$tmp/d-bad$np.txt")" = 1 ] &&
        ok "a damaged chunk read with O_DIRECT at $np rank(s): exit $rc, one line naming the file and rows" ||
        bad "damaged chunk at $np rank(s): exit $rc: $(grep -i error "$tmp/d-bad$np.txt")"
    done
    # a NaN where a streamed epoch reaches it (not at start-up: a set larger than memory is checked as
    # it is read), and by the per-batch reads of order = random
    "$fbin" convert synthetic -o "$tmp/nan.h5" --rows 6000 --features 64 --classes 5 --test-rows 500 \
      --chunk-mb 0.05 > /dev/null
    /usr/bin/python3 -c "import h5py, sys; h5py.File(sys.argv[1], 'r+')['train/x'][5000, 3] = float('nan')" "$tmp/nan.h5"
    for np in 1 2; do
      for order in blocks random; do
        direct nan-$order$np $np --set data.path="$tmp/nan.h5" --set data.order=$order
        rc=$?
        [ $rc = 1 ] && [ "$(grep -c "nan.h5: /train/x: row 5000, column 3 is NaN (expected finite values)" \
          "$tmp/nan-$order$np.txt")" = 1 ] &&
          { [ $order = random ] || grep -q '"loss"' "$tmp/nan-$order$np/metrics.jsonl"; } &&
          ok "a NaN in a set read from the file ($order, $np rank(s)): exit 1 when it is read, one line naming row and column" ||
          bad "NaN read from the file ($order, $np): exit $rc: $(grep -i error "$tmp/nan-$order$np.txt")"
      done
    done
  else
    ok "SKIPPED: a damaged chunk read with O_DIRECT and a NaN read from the file (need python3-h5py)"
  fi
else
  ok "SKIPPED: chunks read with O_DIRECT ($tmp's file system refuses O_DIRECT)"
fi
finish
