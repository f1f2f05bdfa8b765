#!/usr/bin/env bash
# Every path a run reads or writes is checked before its first step, on the rank that uses it, with
# one error naming the path and its key (relative paths: against which directory); `config --check`
# checks that the files exist and fit the model; configs installed by `make install` work from any
# directory. At 1 and 2 ranks.
. "$(dirname "$0")/lib.sh"
need "$bin"

mkdir -p "$tmp/cfg"
make_synth "$tmp/cfg/syn.h5" 200 50 8 3 1
small_config "$tmp/cfg/c.ini" data.path="$tmp/cfg/syn.h5" layer.0.units=8 layer.1.units=3 train.batch_size=50 \
  train.epochs=1 train.max_steps=4 train.log_every= train.out_dir="$tmp/run"
touch "$tmp/afile"
abs_bin=$(cd "$(dirname "$bin")" && pwd)/dptrain # for the runs in other directories

# fails NAME NP CODE TEXT ARGS...: exit CODE, exactly one error line holding TEXT, and no training
# step (no progress line, no checkpoint, no metrics).
fails() {
  local name=$1 np=$2 code=$3 text=$4 rc n
  shift 4
  rm -rf "$tmp/run"
  at_np "$np" 30 "$bin" "$@" > "$tmp/out.txt" 2>&1
  rc=$?
  n=$(grep -c 'dptrain: error:' "$tmp/out.txt")
  if [ "$rc" = "$code" ] && [ "$n" = 1 ] && grep 'dptrain: error:' "$tmp/out.txt" | grep -qF -- "$text" &&
    ! grep -q '^epoch\|^done:' "$tmp/out.txt" && [ ! -e "$tmp/run/checkpoints" ] && [ ! -e "$tmp/run/metrics.jsonl" ]; then
    ok "np=$np $name: exit $code before the first step: $(grep 'dptrain: error:' "$tmp/out.txt" | cut -c1-160)"
  else
    bad "np=$np $name: exit $rc, $n error lines, want '$text': $(head -4 "$tmp/out.txt")"
  fi
}

for np in 1 2; do
  fails "timeline under a file" $np 1 "$tmp/afile/tl: cannot create directory: $tmp/afile is not a directory ([train] timeline's directory)" \
    train "$tmp/cfg/c.ini" --set train.timeline="$tmp/afile/tl/trace.json"
  fails "missing --resume file" $np 1 "$tmp/nope.h5: cannot open checkpoint: No such file or directory (--resume)" \
    train "$tmp/cfg/c.ini" --resume "$tmp/nope.h5"
  fails "missing init_from" $np 1 "$tmp/nope.h5: cannot open checkpoint: No such file or directory ([model] init_from)" \
    train "$tmp/cfg/c.ini" --set model.init_from="$tmp/nope.h5"
  fails "out_dir is a file" $np 1 "$tmp/afile: cannot create directory: it is not a directory ([train] out_dir)" \
    train "$tmp/cfg/c.ini" --set train.out_dir="$tmp/afile"
  fails "checkpoint dir under a file" $np 1 "$tmp/afile/ck: cannot create directory: $tmp/afile is not a directory ([checkpoint] dir)" \
    train "$tmp/cfg/c.ini" --set checkpoint.dir="$tmp/afile/ck"
  fails "missing data file" $np 1 "$tmp/no.h5: cannot open data file: No such file or directory ([data] path)" \
    train "$tmp/cfg/c.ini" --set data.path="$tmp/no.h5"
done
mkdir -p "$tmp/mrun/metrics.jsonl"
fails "metrics.jsonl is a directory" 1 1 "$tmp/mrun/metrics.jsonl: cannot write the metrics there: it is a directory" \
  train "$tmp/cfg/c.ini" --set train.out_dir="$tmp/mrun"

# The rank that reads the data checks it: only rank 1 lacks its file, and both ranks stop alike.
rm -rf "$tmp/run"
timeout --kill-after=2 30 "${mpi[@]}" -np 1 "$bin" train "$tmp/cfg/c.ini" : -np 1 "$bin" train "$tmp/cfg/c.ini" \
  --set data.path="$tmp/gone.h5" > "$tmp/out.txt" 2>&1
rc=$?
if [ $rc = 1 ] && [ "$(grep -c "dptrain: error: $tmp/gone.h5: cannot open data file" "$tmp/out.txt")" = 1 ] &&
  ! grep -q '^epoch' "$tmp/out.txt"; then
  ok "np=2 data missing on rank 1 only: exit 1, one line from rank 1, no step"
else
  bad "np=2 data missing on rank 1 only: exit $rc: $(head -4 "$tmp/out.txt")"
fi

# A read-only file system: root may write anywhere else, so this is the case that refuses root too.
ro=$tmp/ro
if mkdir -p "$ro" && mount -t tmpfs -o size=64k tmpfs "$ro" 2> /dev/null; then
  on_exit() { umount "$ro" 2> /dev/null; }
  mkdir "$ro/old"
  if mount -o remount,ro "$ro" 2> /dev/null; then
    fails "out_dir on a read-only file system" 1 1 "$ro/run: cannot create directory: $ro: Read-only file system ([train] out_dir)" \
      train "$tmp/cfg/c.ini" --set train.out_dir="$ro/run"
    fails "an existing read-only out_dir" 2 1 "$ro/old: cannot write in directory: Read-only file system ([train] out_dir)" \
      train "$tmp/cfg/c.ini" --set train.out_dir="$ro/old"
  else
    echo "skip - read-only out_dir: cannot remount the tmpfs read-only"
  fi
else
  echo "skip - read-only out_dir: cannot mount a read-only tmpfs here"
fi

# The timeline in a directory that does not exist yet is made, as out_dir is.
rm -rf "$tmp/run"
if timeout 30 "$bin" train "$tmp/cfg/c.ini" --quiet --set train.timeline="$tmp/new/deep/tl.json" > "$tmp/out.txt" 2>&1 &&
  python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$tmp/new/deep/tl.json"; then
  ok "timeline in a new directory: made, trace written"
else
  bad "timeline in a new directory: $(head -3 "$tmp/out.txt")"
fi

# Relative paths resolve against the current directory; the error says which, and where the file is.
mkdir -p "$tmp/elsewhere"
sed "s|^path = .*|path = syn.h5|" "$tmp/cfg/c.ini" > "$tmp/cfg/rel.ini"
(cd "$tmp/elsewhere" && timeout 30 "$abs_bin" train ../cfg/rel.ini > "$tmp/out.txt" 2>&1)
rc=$?
want="syn.h5: cannot open data file: No such file or directory ([data] path, relative to the current directory $tmp/elsewhere; the config's directory has ../cfg/syn.h5"
grep -qF "$want" "$tmp/out.txt" && [ $rc = 1 ] && ok "relative data path: names the current directory and the config's" ||
  bad "relative data path: exit $rc: $(cat "$tmp/out.txt")"
(cd "$tmp/elsewhere" && timeout 30 "$abs_bin" train rel.ini > "$tmp/out.txt" 2>&1)
grep -qF "rel.ini: cannot open: No such file or directory (relative to the current directory $tmp/elsewhere)" "$tmp/out.txt" &&
  ok "relative config path: names the current directory" || bad "relative config path: $(cat "$tmp/out.txt")"
(cd "$tmp/elsewhere" && timeout 30 "$abs_bin" inspect gone.h5 > "$tmp/out.txt" 2>&1
  timeout 30 "$abs_bin" eval gone.h5 >> "$tmp/out.txt" 2>&1)
[ "$(grep -cF "gone.h5: cannot open checkpoint: No such file or directory (relative to the current directory $tmp/elsewhere)" "$tmp/out.txt")" = 2 ] &&
  ok "inspect, eval: a relative checkpoint path names the current directory" || bad "inspect/eval relative: $(cat "$tmp/out.txt")"

# --- eval, inspect and convert's -o: the same checks before anything opens a file (one line, no hang)
timeout 30 "$bin" train "$tmp/cfg/c.ini" --quiet --set train.out_dir="$tmp/ev" > /dev/null 2>&1
evck=$tmp/ev/checkpoints/ckpt-4.h5
mkdir -p "$tmp/adir"
mkfifo "$tmp/fifo"
# once NAME NP CODE TEXT ARGS...: exit CODE within the timeout, exactly one error line holding TEXT.
once() {
  local name=$1 np=$2 code=$3 text=$4 rc n
  shift 4
  at_np "$np" 30 "$@" > "$tmp/out.txt" 2>&1
  rc=$?
  n=$(grep -c 'dptrain: error:' "$tmp/out.txt")
  [ "$rc" = "$code" ] && [ "$n" = 1 ] && grep 'dptrain: error:' "$tmp/out.txt" | grep -qF -- "$text" &&
    ok "np=$np $name: exit $code, one line" || bad "np=$np $name: exit $rc, $n error lines, want '$text': $(head -3 "$tmp/out.txt")"
}
for what in inspect eval; do
  once "$what of a missing file" 1 1 "$tmp/none.h5: cannot open checkpoint: No such file or directory" "$bin" $what "$tmp/none.h5"
  once "$what of a directory" 1 1 "$tmp/adir: checkpoint must be a regular file, this is a directory" "$bin" $what "$tmp/adir"
  once "$what of a FIFO" 1 1 "$tmp/fifo: checkpoint must be a regular file, this is a FIFO" "$bin" $what "$tmp/fifo"
done
(cd "$tmp/elsewhere" && timeout 30 "$abs_bin" inspect ../adir > "$tmp/out.txt" 2>&1)
grep -qF "../adir: checkpoint must be a regular file, this is a directory (relative to the current directory $tmp/elsewhere)" \
  "$tmp/out.txt" && ok "inspect: a relative path that is a directory names the current directory" ||
  bad "inspect relative directory: $(cat "$tmp/out.txt")"
for np in 1 2; do
  once "eval of a directory" $np 1 "$tmp/adir: checkpoint must be a regular file, this is a directory" "$bin" eval "$tmp/adir"
  once "eval of a FIFO" $np 1 "$tmp/fifo: checkpoint must be a regular file, this is a FIFO" "$bin" eval "$tmp/fifo"
  once "eval --data a directory" $np 1 "$tmp/adir: data file must be a regular file, this is a directory (--data)" \
    "$bin" eval "$evck" --data "$tmp/adir"
  (cd "$tmp/elsewhere" && at_np $np 30 "$abs_bin" eval "$evck" --data nope.h5 > "$tmp/out.txt" 2>&1)
  rc=$?
  [ $rc = 1 ] && [ "$(grep -c 'dptrain: error:' "$tmp/out.txt")" = 1 ] &&
    grep -qF "nope.h5: cannot open data file: No such file or directory (--data, relative to the current directory $tmp/elsewhere)" \
      "$tmp/out.txt" && ok "np=$np eval --data relative and missing: names the current directory" ||
    bad "np=$np eval --data relative: exit $rc: $(cat "$tmp/out.txt")"
done
# The stored config's data path, when it is gone.
cp "$tmp/cfg/syn.h5" "$tmp/moved.h5"
timeout 30 "$bin" train "$tmp/cfg/c.ini" --quiet --set data.path="$tmp/moved.h5" --set train.out_dir="$tmp/ev2" > /dev/null 2>&1
rm -f "$tmp/moved.h5"
once "eval whose stored data path is gone" 2 1 \
  "$tmp/moved.h5: cannot open data file: No such file or directory ([data] path of the checkpoint's config)" \
  "$bin" eval "$tmp/ev2/checkpoints/ckpt-4.h5"
if [ "$(id -u)" != 0 ]; then
  cp "$evck" "$tmp/locked.h5" && chmod 000 "$tmp/locked.h5"
  once "inspect of an unreadable file" 1 1 "$tmp/locked.h5: cannot open checkpoint: Permission denied" "$bin" inspect "$tmp/locked.h5"
  once "eval of an unreadable file" 2 1 "$tmp/locked.h5: cannot open checkpoint: Permission denied" "$bin" eval "$tmp/locked.h5"
else
  echo "skip - unreadable checkpoints: root reads any file"
fi
printf '1,2,0\n3,4,1\n' > "$tmp/t.csv"
once "convert -o a directory" 1 1 "$tmp/adir: cannot write the converted data there: it is a directory, not a regular file (-o)" \
  "$bin" convert csv "$tmp/t.csv" -o "$tmp/adir"
once "convert -o under a file" 1 1 "$tmp/afile: cannot create directory: it is not a directory (-o)" \
  "$bin" convert csv "$tmp/t.csv" -o "$tmp/afile/x.h5"
timeout 30 "$bin" convert csv "$tmp/t.csv" -o "$tmp/conv/new/t.h5" > "$tmp/out.txt" 2>&1 && [ -s "$tmp/conv/new/t.h5" ] &&
  ok "convert -o into a new directory makes it" || bad "convert -o new directory: $(cat "$tmp/out.txt")"

(cd "$tmp/cfg" && timeout 30 "$abs_bin" train rel.ini --quiet --set train.out_dir=relrun > "$tmp/out.txt" 2>&1) &&
  [ -s "$tmp/cfg/relrun/metrics.jsonl" ] && ok "relative paths from the config's directory: trains, out_dir made there" ||
  bad "relative paths: $(head -3 "$tmp/out.txt")"

# The sweep writes its CSV after all its runs: a CSV it cannot write stops it before the first.
for np in 1 2; do
  at_np $np 30 "$bin" sweep "$tmp/cfg/c.ini" --lr 0.1,0.2 --steps 3 -o "$tmp/afile/s.csv" > "$tmp/out.txt" 2>&1
  rc=$?
  [ $rc = 1 ] && grep -qF "$tmp/afile: cannot create directory: it is not a directory (the sweep's CSV's directory)" "$tmp/out.txt" &&
    ! grep -q 'final_loss' "$tmp/out.txt" && ok "np=$np sweep: an unwritable CSV stops it before the first run" ||
    bad "np=$np sweep CSV: exit $rc: $(head -3 "$tmp/out.txt")"
done
timeout 60 "$bin" sweep "$tmp/cfg/c.ini" --lr 0.1,0.2 --steps 3 -o "$tmp/sw/new/s.csv" > "$tmp/out.txt" 2>&1 &&
  [ -s "$tmp/sw/new/s.csv" ] && ok "sweep: -o into a new directory makes it" || bad "sweep -o new dir: $(tail -3 "$tmp/out.txt")"

# --- config --check: the files exist and fit
for np in 1 2; do
  at_np $np 30 "$bin" config --check "$tmp/cfg/c.ini" > "$tmp/out.txt" 2>&1
  rc=$?
  [ $rc = 0 ] && [ "$(grep -c ': ok (2 layers, 99 parameters); .*syn.h5: train 200 x 8, test 50 fit' "$tmp/out.txt")" = 1 ] &&
    ok "np=$np config --check: ok once, with the data's shape" || bad "np=$np config --check: exit $rc: $(cat "$tmp/out.txt")"
done
# check_fails NAME CODE TEXT ARGS...: config --check exits CODE with one error line holding TEXT, writes nothing.
check_fails() {
  local name=$1 code=$2 text=$3 rc
  shift 3
  rm -rf "$tmp/run"
  timeout 30 "$bin" config --check "$@" > "$tmp/out.txt" 2>&1
  rc=$?
  if [ $rc = "$code" ] && [ "$(grep -c 'dptrain: error:' "$tmp/out.txt")" = 1 ] && grep -qF -- "$text" "$tmp/out.txt" &&
    [ ! -e "$tmp/run" ]; then
    ok "config --check, $name: exit $code"
  else
    bad "config --check, $name: exit $rc, want $code '$text': $(cat "$tmp/out.txt")"
  fi
}
check_fails "missing data" 1 "$tmp/no.h5: cannot open data file" "$tmp/cfg/c.ini" --set data.path="$tmp/no.h5"
check_fails "not HDF5" 1 "$tmp/afile: not an HDF5 file" "$tmp/cfg/c.ini" --set data.path="$tmp/afile"
check_fails "labels beyond the last layer" 2 "/train/y: labels range 0..2, but the last [layer] has 2 units" \
  "$tmp/cfg/c.ini" --set layer.1.units=2
check_fails "mse on labels" 2 "/train/y: loss mse needs float32 targets" "$tmp/cfg/c.ini" --set model.loss=mse
check_fails "timeline under a file" 1 "([train] timeline's directory)" "$tmp/cfg/c.ini" --set train.timeline="$tmp/afile/x/t.json"
# init_from against the model: a checkpoint of this model fits, one of another does not.
timeout 30 "$bin" train "$tmp/cfg/c.ini" --quiet --set train.out_dir="$tmp/src" > /dev/null 2>&1
ck=$(ls "$tmp"/src/checkpoints/ckpt-*.h5 2> /dev/null | head -1)
if [ -n "$ck" ]; then
  timeout 30 "$bin" config --check "$tmp/cfg/c.ini" --set model.init_from="$ck" > "$tmp/out.txt" 2>&1 &&
    grep -qF "init_from $ck fits" "$tmp/out.txt" && ok "config --check: a fitting init_from" || bad "init_from fits: $(cat "$tmp/out.txt")"
  check_fails "init_from of another model" 1 "$ck: /model/layer0/weight is (8, 8) in the checkpoint, (9, 8)" "$tmp/cfg/c.ini" --set model.init_from="$ck" --set layer.0.units=9
else
  bad "no checkpoint for the init_from checks"
fi

# --- make install: the installed configs name the installed data and check out from any directory
# (-o all: this tree may be mid-edit; the binary under test is the one installed).
inst=$tmp/inst
if make -s -o all -C "$root" install PREFIX="$inst" BUILD="$(cd "$build" && pwd)" > "$tmp/install.txt" 2>&1; then
  if [ -f "$inst/share/dptrain/data/fashion_mnist.h5" ]; then
    (cd / && timeout 60 "$inst/bin/dptrain" config --check "$inst/share/dptrain/configs/fashion_mlp.ini" > "$tmp/out.txt" 2>&1) &&
      grep -q 'ok (3 layers' "$tmp/out.txt" && ok "installed fashion_mlp.ini checks out from /" ||
      bad "installed config from /: $(cat "$tmp/out.txt")"
  else
    echo "skip - installed configs: no Fashion-MNIST to install ($(tail -1 "$tmp/install.txt"))"
  fi
  grep -q "^path = $inst/share/dptrain/data/fashion_mnist.h5" "$inst/share/dptrain/configs/fashion_adam.ini" &&
    ok "installed configs: data path absolute" || bad "installed data path: $(grep '^path' "$inst/share/dptrain/configs/fashion_adam.ini")"
else
  bad "make install: $(tail -3 "$tmp/install.txt")"
fi

finish
