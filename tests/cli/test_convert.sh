#!/usr/bin/env bash
# Data files laid out for streaming: convert's chunks of whole rows (about 2 MB, y by the same rows),
# `convert rechunk` from every layout dptrain reads (contiguous, chunked, compressed; uint8 or float32;
# labels or targets) in bounded memory, and `convert synthetic` (shapes, chunks, determinism, learnable).
. "$(dirname "$0")/lib.sh"
need "$bin" "$fbin"

# chunks FILE DATASET: the dataset's chunk dimensions as h5dump prints them ("2048, 256"), or CONTIGUOUS.
chunks() {
  h5dump -pH -d "$2" "$1" 2> /dev/null | sed -n 's/.*CHUNKED ( \(.*\) ).*/\1/p; s/.*\(CONTIGUOUS\).*/\1/p' | head -1
}
# same A B WHAT: h5diff finds the same objects, values and attributes in both files.
same() {
  if h5diff "$1" "$2" > "$tmp/diff.txt" 2>&1; then ok "$3"; else bad "$3: $(head -3 "$tmp/diff.txt")"; fi
}
# peak_kb COMMAND...: runs it, leaves its peak RSS in kB in $peak; returns its exit status.
peak_kb() {
  /usr/bin/time -f '%M' -o "$tmp/rss" "$@" > "$tmp/cmd.txt" 2>&1
  local rc=$?
  peak=$(tail -1 "$tmp/rss")
  return $rc
}
cat > "$tmp/c.ini" << EOC
[data]
path = $tmp/data.h5
in_memory = false
[layer]
units = 64
activation = relu
[layer]
units = 10
activation = identity
[optimizer]
name = sgd
lr = 0.05
momentum = 0.9
[train]
batch_size = 128
epochs = 2
log_every = 1000
EOC
# trains FILE WHAT [--set ...]: a short run on FILE ends with exit 0 and a test accuracy.
trains() {
  local f=$1 what=$2
  shift 2
  if timeout 60 "$bin" train "$tmp/c.ini" -q --set data.path="$f" --set train.out_dir="$tmp/run-$RANDOM" "$@" \
    > "$tmp/train.txt" 2>&1; then
    ok "$what"
  else
    bad "$what: $(grep -m2 'error' "$tmp/train.txt")"
  fi
}

# --- convert: x in chunks of whole rows of about 2 MB, y in chunks of the same rows
make_synth "$tmp/u8.h5" 20000 3000 200 10 1 # 200-byte rows: 10485 a chunk, 2 chunks of train, 1 of test
[ "$(chunks "$tmp/u8.h5" /train/x)" = "10485, 200" ] && [ "$(chunks "$tmp/u8.h5" /train/y)" = 10485 ] &&
  [ "$(chunks "$tmp/u8.h5" /test/x)" = "3000, 200" ] && ok "convert: /train/x in 2 MB chunks of whole rows, y by the same rows" ||
  bad "convert's chunks: x $(chunks "$tmp/u8.h5" /train/x), y $(chunks "$tmp/u8.h5" /train/y), test $(chunks "$tmp/u8.h5" /test/x)"
python3 -c "
import random
random.seed(3)
with open('$tmp/r.csv', 'w') as f:
    for i in range(3000):
        f.write(','.join('%.3f' % random.random() for _ in range(300)) + ',%.3f\n' % random.random())"
"$bin" convert csv "$tmp/r.csv" --regression -o "$tmp/reg.h5" > /dev/null || bad "convert csv --regression failed"
[ "$(chunks "$tmp/reg.h5" /train/x)" = "1747, 300" ] && [ "$(chunks "$tmp/reg.h5" /train/y)" = "1747, 1" ] &&
  ok "convert csv: float rows in 2 MB chunks (1747 rows of 1200 bytes), targets by the same rows" ||
  bad "convert csv chunks: x $(chunks "$tmp/reg.h5" /train/x), y $(chunks "$tmp/reg.h5" /train/y)"

# --- rechunk: every layout in, the streaming layout out, the same data, attributes and extra datasets
h5repack -l CONTI "$tmp/u8.h5" "$tmp/conti.h5" && h5repack -f GZIP=6 -l CHUNK=77x200 "$tmp/u8.h5" "$tmp/gz.h5" &&
  h5copy -i "$tmp/u8.h5" -o "$tmp/gz.h5" -s /test -d /val || bad "h5repack or h5copy failed" # gz.h5 has a /val
[ "$(chunks "$tmp/conti.h5" /train/x)" = CONTIGUOUS ] || bad "h5repack -l CONTI left $(chunks "$tmp/conti.h5" /train/x)"
trains "$tmp/conti.h5" "a contiguous (unchunked) file trains, read per batch" --set data.in_memory=false
trains "$tmp/conti.h5" "a contiguous (unchunked) file trains, held in memory" --set data.in_memory=true
for src in u8 conti gz reg; do
  out=$tmp/re-$src.h5
  if "$bin" convert rechunk "$tmp/$src.h5" "$out" --chunk-mb 0.5 > "$tmp/re.txt" 2>&1; then
    same "$tmp/$src.h5" "$out" "rechunk $src: the same datasets, values and attributes (h5diff)"
  else
    bad "rechunk $src: $(head -2 "$tmp/re.txt")"
    continue
  fi
  want="2621, 200"
  [ $src = reg ] && want="436, 300"
  [ "$(chunks "$out" /train/x)" = "$want" ] && [ "$(chunks "$out" /train/y)" = "${want%%,*}$([ $src = reg ] && echo ', 1')" ] &&
    h5dump -pH -d /train/x "$out" | grep -q FLETCHER32 && h5dump -pH -d /train/x "$out" | grep -q '"hash64"' &&
    ok "rechunk $src: 0.5 MB chunks ($want), y by the same rows, Fletcher32, hash64" ||
    bad "rechunk $src: x $(chunks "$out" /train/x), y $(chunks "$out" /train/y)"
done
h5dump -a /train/x/scale "$tmp/re-gz.h5" | grep -q '0.00392157' && h5dump -d /train/x_mean -H "$tmp/re-gz.h5" > /dev/null 2>&1 &&
  ok "rechunk keeps the scale attribute and the statistics datasets" || bad "rechunk lost scale or /train/x_mean"
[ "$(chunks "$tmp/re-gz.h5" /val/x)" = "2621, 200" ] && ok "rechunk re-lays /val too" ||
  bad "rechunk's /val/x: $(chunks "$tmp/re-gz.h5" /val/x)"
trains "$tmp/re-gz.h5" "a rechunked file trains held in memory (its new hashes verified)" --set data.in_memory=true
trains "$tmp/re-gz.h5" "a rechunked file trains read per batch" --set data.in_memory=false
# Errors name the file and the dataset; nothing is left under OUT.
"$bin" convert rechunk "$tmp/nothere.h5" "$tmp/x.h5" > "$tmp/e.txt" 2>&1
[ $? = 1 ] && grep -q "nothere.h5: cannot open data file" "$tmp/e.txt" && [ ! -e "$tmp/x.h5" ] &&
  ok "rechunk of a missing file: exit 1, names it" || bad "rechunk of a missing file: $(head -2 "$tmp/e.txt")"
cp "$tmp/u8.h5" "$tmp/flip.h5"
"$build/tests/ckpt_tamper" flip "$tmp/flip.h5" train/x || bad "ckpt_tamper flip failed"
"$bin" convert rechunk "$tmp/flip.h5" "$tmp/x.h5" > "$tmp/e.txt" 2>&1
[ $? = 1 ] && grep -q "flip.h5: /train/x: reading rows 0\.\.[0-9]* failed (checksum" "$tmp/e.txt" && [ ! -e "$tmp/x.h5" ] &&
  [ ! -e "$tmp/x.h5.tmp" ] && ok "rechunk of a damaged chunk: exit 1, names file, dataset and rows, nothing left" ||
  bad "rechunk of a damaged chunk: $(head -2 "$tmp/e.txt")"
for args in "$tmp/u8.h5" "$tmp/u8.h5 $tmp/u8.h5" "$tmp/u8.h5 $tmp/y.h5 --chunk-mb 0"; do
  "$bin" convert rechunk $args > "$tmp/e.txt" 2>&1
  [ $? = 2 ] && grep -q 'usage: dptrain convert' "$tmp/e.txt" && ok "rechunk ${args//$tmp\//}: usage error, exit 2" ||
    bad "rechunk ${args//$tmp\//}: $(head -2 "$tmp/e.txt")"
done

# --- synthetic: shapes, chunks, determinism for a seed, learnable
"$bin" convert synthetic -o "$tmp/s1.h5" --rows 20000 --test-rows 2000 --seed 7 > "$tmp/s.txt" 2>&1 ||
  bad "convert synthetic: $(head -2 "$tmp/s.txt")"
dims() { h5dump -H -d "$2" "$1" 2> /dev/null | sed -n 's/.*DATASPACE  SIMPLE { ( \([^)]*\) ).*/\1/p'; }
[ "$(dims "$tmp/s1.h5" /train/x)" = "20000, 256" ] && [ "$(dims "$tmp/s1.h5" /train/y)" = 20000 ] &&
  [ "$(dims "$tmp/s1.h5" /test/x)" = "2000, 256" ] && [ "$(chunks "$tmp/s1.h5" /train/x)" = "2048, 256" ] &&
  [ "$(chunks "$tmp/s1.h5" /train/y)" = 2048 ] && h5dump -H -d /train/x "$tmp/s1.h5" | grep -q H5T_IEEE_F32LE &&
  [ "$(dims "$tmp/s1.h5" /train/x_std)" = 256 ] &&
  ok "synthetic: (20000, 256) float32 in 2 MB chunks of 2048 rows, labels by the same rows, a test split, statistics" ||
  bad "synthetic shapes: x $(dims "$tmp/s1.h5" /train/x) in $(chunks "$tmp/s1.h5" /train/x), test $(dims "$tmp/s1.h5" /test/x)"
"$bin" convert synthetic -o "$tmp/s2.h5" --rows 20000 --test-rows 2000 --seed 7 --chunk-mb 0.3 > /dev/null 2>&1
same "$tmp/s1.h5" "$tmp/s2.h5" "synthetic: the same seed gives the same data, whatever the chunk size"
"$bin" convert synthetic -o "$tmp/s3.h5" --rows 20000 --test-rows 2000 --seed 8 > /dev/null 2>&1
h5diff -q "$tmp/s1.h5" "$tmp/s3.h5" > /dev/null 2>&1 && bad "synthetic: seeds 7 and 8 gave the same data" ||
  ok "synthetic: another seed, other data"
h5dump -d /train/y -y -w 0 -o "$tmp/y.txt" "$tmp/s1.h5" > /dev/null 2>&1
classes=$(tr -cs '0-9' '\n' < "$tmp/y.txt" | grep . | sort -u | tr '\n' ' ')
[ "$classes" = "0 1 2 3 4 5 6 7 8 9 " ] && ok "synthetic: labels 0..9, each of them" || bad "synthetic: labels $classes"
for np in 1 2; do
  at_np $np 90 "$bin" train "$tmp/c.ini" --set data.path="$tmp/s1.h5" --set train.out_dir="$tmp/syn-$np" \
    > "$tmp/syn$np.txt" 2>&1
  acc=$(sed -n 's/^final: .*test_acc \([0-9.]*\).*/\1/p' "$tmp/syn$np.txt")
  if [ -n "$acc" ] && awk "BEGIN { exit !($acc > 0.5) }"; then
    ok "synthetic is learnable, $np rank(s), read per batch: test accuracy $acc after 2 epochs (chance 0.1)"
  else
    bad "synthetic, $np rank(s): accuracy '${acc}': $(grep -m2 error "$tmp/syn$np.txt")"
  fi
done
timeout 60 "$bin" config --check "$root/configs/synthetic_5m.ini" --set data.path="$tmp/s1.h5" \
  --set train.out_dir="$tmp/cfg" > "$tmp/cfg.txt" 2>&1 && ok "configs/synthetic_5m.ini is valid for a synthetic file" ||
  bad "configs/synthetic_5m.ini: $(head -2 "$tmp/cfg.txt")"
for args in "--rows 10" "-o $tmp/u.h5" "-o $tmp/u.h5 --rows 0" "-o $tmp/u.h5 --rows 10 --classes 1" "-o $tmp/u.h5 --rows 10 --bogus 3"; do
  "$bin" convert synthetic $args > "$tmp/e.txt" 2>&1
  [ $? = 2 ] && grep -q 'usage: dptrain convert' "$tmp/e.txt" && [ ! -e "$tmp/u.h5" ] &&
    ok "synthetic ${args//$tmp\//}: usage error, exit 2: $(grep -o 'error: .*' "$tmp/e.txt" | head -c 80)" ||
    bad "synthetic ${args//$tmp\//}: $(head -2 "$tmp/e.txt")"
done

# --- HDF5's file lock: where flock fails (NFS, Lustre without it) every HDF5 open fails unless
# HDF5_USE_FILE_LOCKING=FALSE. dptrain reads data files without that lock: an exclusive flock held
# here stands in for such a file system; h5dump, which locks, shows the difference.
exec {lockfd}< "$tmp/s1.h5"
flock -x $lockfd
h5dump -H "$tmp/s1.h5" > /dev/null 2>&1 && bad "h5dump opened a file locked exclusively: this check shows nothing"
trains "$tmp/s1.h5" "a data file HDF5 could not lock trains (read without HDF5's lock)"
"$bin" convert rechunk "$tmp/s1.h5" "$tmp/s1-re.h5" > "$tmp/e.txt" 2>&1 && ok "rechunk reads it too" ||
  bad "rechunk of a locked file: $(head -2 "$tmp/e.txt")"
HDF5_USE_FILE_LOCKING=TRUE timeout 60 "$bin" train "$tmp/c.ini" -q --set data.path="$tmp/s1.h5" \
  --set train.out_dir="$tmp/locked" > /dev/null 2>&1 && bad "HDF5_USE_FILE_LOCKING=TRUE: the locked file opened" ||
  ok "HDF5_USE_FILE_LOCKING=TRUE still turns HDF5's lock on"
flock -u $lockfd
exec {lockfd}<&-

# --- bounded memory: with the test build's DPTRAIN_TEST_OUT_MEM_MAX, a 60 MB file takes the path of a
# large one (HDF5 writes it itself); generating and rechunking it then hold a few pieces, not the file.
# AddressSanitizer's quarantine keeps freed memory resident, so under it only the results are checked.
export DPTRAIN_TEST_OUT_MEM_MAX=1e6
limit=55000 note=""
nm -D "$fbin" 2> /dev/null | grep -q " __asan_init" && limit=999999999 note=" (AddressSanitizer build: bound not checked)"
peak_kb "$fbin" convert synthetic -o "$tmp/big.h5" --rows 60000 --features 256 --test-rows 0 &&
  [ "$peak" -lt $limit ] && ok "synthetic of 60 MB written in pieces: peak RSS ${peak} kB$note" ||
  bad "synthetic, bounded memory: peak ${peak} kB: $(head -2 "$tmp/cmd.txt")"
peak_kb "$fbin" convert rechunk "$tmp/big.h5" "$tmp/big-re.h5" --chunk-mb 1 && [ "$peak" -lt $limit ] &&
  ok "rechunk of 60 MB streamed in pieces: peak RSS ${peak} kB$note" ||
  bad "rechunk, bounded memory: peak ${peak} kB: $(head -2 "$tmp/cmd.txt")"
same "$tmp/big.h5" "$tmp/big-re.h5" "rechunk written by HDF5 directly: the same data"
# Written by HDF5 itself, a file is first checked against the free space: a full disk is one error.
mnt=$tmp/small
on_exit() { mountpoint -q "$mnt" 2> /dev/null && umount "$mnt"; }
if mkdir -p "$mnt" && mount -t tmpfs -o size=4m tmpfs "$mnt" 2> /dev/null; then
  "$fbin" convert synthetic -o "$mnt/s.h5" --rows 60000 > "$tmp/e.txt" 2>&1
  rc=$?
  [ $rc = 1 ] && grep -q "s.h5.tmp: writing the data file failed (No space left on device)" "$tmp/e.txt" &&
    [ -z "$(ls "$mnt")" ] && ok "synthetic larger than the disk: exit 1, one line, nothing left" ||
    bad "synthetic on a full disk: exit $rc: $(head -2 "$tmp/e.txt")"
  umount "$mnt"
else
  echo "skip - full disk: cannot mount a small tmpfs here"
fi
unset DPTRAIN_TEST_OUT_MEM_MAX
peak_kb "$bin" convert rechunk "$tmp/big.h5" "$tmp/big-mem.h5" && [ "$peak" -gt 60000 ] &&
  ok "below 256 MB the file is built in memory (peak ${peak} kB): a full disk stays a plain error" ||
  bad "rechunk in memory: peak ${peak} kB"

finish
