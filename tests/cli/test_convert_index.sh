#!/usr/bin/env bash
# A data file whose chunk index is damaged (one flipped bit in a chunk's key in the v1 B-tree, which
# has no checksum: HDF5 would read that chunk as zeros, silently) is refused at open, before any row is
# read, for the training set read per batch and for the test set, at 1 and 2 ranks.
. "$(dirname "$0")/lib.sh"
need "$bin" "$build/tests/ckpt_tamper"

# 2 KiB rows, 128 a chunk: the flipped key (offset 0 made 256) names another chunk. (HDF5 keys chunks
# by offset / chunk size, so a bit below the chunk size changes nothing that is read.)
"$bin" convert synthetic -o "$tmp/good.h5" --rows 2000 --test-rows 1000 --features 512 --chunk-mb 0.25 > /dev/null ||
  { bad "convert synthetic failed"; finish; }
cat > "$tmp/c.ini" << EOC
[data]
path = $tmp/bad.h5
in_memory = false
[layer]
units = 10
activation = identity
[train]
batch_size = 100
epochs = 1
EOC
timeout 60 "$bin" train "$tmp/c.ini" -q --set data.path="$tmp/good.h5" --set train.out_dir="$tmp/good" > "$tmp/g.txt" 2>&1 &&
  ok "the undamaged file trains, read per batch" || bad "undamaged file: $(grep -m2 error "$tmp/g.txt")"
for ds in train/x train/y test/x test/y; do
  cp "$tmp/good.h5" "$tmp/bad.h5"
  "$build/tests/ckpt_tamper" index "$tmp/bad.h5" $ds || { bad "ckpt_tamper index $ds failed"; continue; }
  cmp -s "$tmp/good.h5" "$tmp/bad.h5" && { bad "ckpt_tamper index $ds changed nothing"; continue; }
  # What HDF5 itself makes of it: the chunk's rows read as zeros, without an error.
  [ $ds = train/x ] && h5dump -d /train/x -s 0,0 -c 1,4 "$tmp/bad.h5" | grep -q '(0,0): 0, 0, 0, 0' &&
    ok "/train/x chunk index damaged: h5dump reads its first chunk as zeros, silently"
  for np in 1 2; do
    at_np $np 30 "$bin" train "$tmp/c.ini" -q --set train.out_dir="$tmp/r-$np-${ds/\//-}" > "$tmp/r.txt" 2>&1
    rc=$?
    if [ $rc = 1 ] && [ "$(grep -c 'dptrain: error:' "$tmp/r.txt")" = 1 ] &&
      grep -q "error: $tmp/bad.h5: /$ds: the chunk of rows 0\.\.127 is missing from the chunk index" "$tmp/r.txt" &&
      ! grep -qs '"step"' "$tmp/r-$np-${ds/\//-}/metrics.jsonl"; then
      ok "/$ds chunk index damaged, $np rank(s): exit 1 before training, one line naming file and dataset"
    else
      bad "/$ds chunk index damaged, $np rank(s): exit $rc: $(grep -v '^---' "$tmp/r.txt" | head -3)"
    fi
  done
done
# eval and rechunk open the data the same way.
ck=$(ls "$tmp"/good/checkpoints/ckpt-*.h5 | tail -1)
cp "$tmp/good.h5" "$tmp/bad.h5"
"$build/tests/ckpt_tamper" index "$tmp/bad.h5" test/x || bad "ckpt_tamper index test/x failed"
for np in 1 2; do
  at_np $np 30 "$bin" eval "$ck" --data "$tmp/bad.h5" > "$tmp/e.txt" 2>&1
  [ $? = 1 ] && grep -q "bad.h5: /test/x: the chunk of rows 0\.\.127 is missing" "$tmp/e.txt" &&
    ok "eval, $np rank(s): refuses the damaged test set" || bad "eval, $np rank(s): $(head -2 "$tmp/e.txt")"
done
"$bin" convert rechunk "$tmp/bad.h5" "$tmp/re.h5" > "$tmp/e.txt" 2>&1
[ $? = 1 ] && grep -q "bad.h5: /test/x: the chunk of rows 0\.\.127 is missing" "$tmp/e.txt" && [ ! -e "$tmp/re.h5" ] &&
  ok "rechunk refuses it too" || bad "rechunk of a damaged index: $(head -2 "$tmp/e.txt")"

finish
