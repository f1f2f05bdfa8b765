#!/usr/bin/env bash
# A corpus of bad inputs, each with the exact error it must produce:
#   tests/bad/config/*.ini   bad configurations; line 1 is "; expect: CODE TEXT"
#   tests/bad/cli.txt        bad command lines, "CODE | TEXT | ARGS"
#   data files and checkpoints made here in a temp dir (binary: build/tests/make_bad_data writes
#   the HDF5 ones, build/tests/ckpt_tamper damages checkpoints), with their expectations below.
# Every case must: end within 5 s, exit with the expected code (never >= 128, never a crash
# message), print exactly one "dptrain: error:" line (usage text may follow it) containing TEXT,
# and leave every input file (configs, data, checkpoints, the run directory) byte-identical.
#
# Ranks: every case runs at 1 rank (no mpirun, ~0.35 s each). A failing 2-rank job under mpirun
# takes ~2 s (Open MPI's teardown after a non-zero exit), so only a representative subset
# (NP2_CASES below: a config parse error, the absurd model size, binary garbage, a data file that is
# not HDF5, a shape error, a label check that needs an allreduce, a damaged checkpoint, another
# model, eval) also runs at 2 ranks, keeping the script near a minute. DPTRAIN_BAD_NP2=all runs every
# config, data and checkpoint case at 2 ranks too (~4 min), DPTRAIN_BAD_NP2=none none.
# Command-line cases run at 1 rank only (parsed before MPI starts, or alike on every rank).
#
# Known bugs are marked "known-bug": they run and print "xfail" (or "XPASS" once fixed) but do not
# fail the test. Ends with "test_bad_input.sh: N failed".
. "$(dirname "$0")/lib.sh"
bad=$root/tests/bad
np2_mode=${DPTRAIN_BAD_NP2:-subset}
NP2_CASES=" config/unknown_key config/huge_units config/garbage data/not_hdf5 data/y_short data/y_big
  ckpt/train-flipped ckpt/train-other_model ckpt/eval-flipped "

need "$build/tests/make_bad_data" "$build/tests/ckpt_tamper" "$build/tests/make_synth"

in=$tmp/in # every input file lives here: fingerprinted before and after each case
mkdir -p "$in/data" "$in/cfg" "$in/ckpt" "$tmp/out"
fingerprint() { find "$in" "$bad" -print0 | sort -z | xargs -0 md5sum 2> /dev/null; find "$in" "$bad" | sort; }

# --- fixtures
make_synth "$in/data/good.h5" 100 20 20 5 1
"$build/tests/make_bad_data" "$in/data" || exit 1
printf 'x,y\n1,2\n' > "$in/data/not_hdf5.h5"
: > "$in/data/empty.h5"
head -c 2000 "$in/data/good.h5" > "$in/data/truncated.h5"
mkdir "$in/data/dir.h5"

subst() { sed -e "s|@DATA@|$in/data/good.h5|g" -e "s|@OUT@|$tmp/out/$2|g" -e "s|@TMP@|$tmp|g" "$1"; }
# A valid config (the unknown_key case with the key fixed), training into the run directory.
subst "$bad/config/unknown_key.ini" ok | sed -e 's/^epoch = 1$/epochs = 1/' -e "s|^out_dir = .*|out_dir = $in/run|" \
  -e 's/^name = sgd$/name = sgd\nmomentum = 0.9/' > "$in/ok.ini"
if ! timeout 30 "$bin" train "$in/ok.ini" --quiet --set train.max_steps=3 > "$tmp/setup.txt" 2>&1 ||
  [ ! -f "$in/run/checkpoints/ckpt-3.h5" ]; then
  echo "test_bad_input.sh: set-up run failed: $(tail -3 "$tmp/setup.txt")"
  exit 1
fi
good=$in/run/checkpoints/ckpt-3.h5

# --- the check
# run_case NAME NP CODE TEXT KNOWN_BUG ARGS...: runs dptrain ARGS at NP ranks and checks everything.
run_case() {
  local name=$1 np=$2 code=$3 text=$4 known=$5
  shift 5
  local before after rc n why=()
  before=$(fingerprint)
  at_np "$np" 5 "$bin" "$@" > "$tmp/e.out" 2> "$tmp/e.err" < /dev/null
  rc=$?
  after=$(fingerprint)
  cat "$tmp/e.out" "$tmp/e.err" > "$tmp/e.all"
  n=$(grep -ac 'dptrain: error:' "$tmp/e.all")
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && why+=("timed out after 5 s")
  [ $rc -ge 128 ] && [ $rc -ne 137 ] && why+=("killed by signal $((rc - 128))")
  grep -aqE 'Segmentation fault|core dumped|exited on signal|ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:' "$tmp/e.all" &&
    why+=("crash: $(grep -a -m1 -E 'Segmentation fault|core dumped|exited on signal|ERROR: [A-Za-z]*Sanitizer|runtime error:' "$tmp/e.all")")
  [ $rc -eq "$code" ] || why+=("exit $rc, want $code")
  [ "$n" -eq 1 ] || why+=("$n 'dptrain: error:' lines, want 1")
  [ "$n" -ge 1 ] && ! grep -a 'dptrain: error:' "$tmp/e.all" | grep -aqF -- "$text" && why+=("error line lacks '$text'")
  if [ "$before" != "$after" ]; then
    why+=("files changed: $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | head -4 | tr '\n' ' ')")
  fi
  local label="np=$np $name"
  if [ ${#why[@]} -eq 0 ]; then
    if [ "$known" = 1 ]; then
      xpass "$label: passes now: remove its known-bug mark"
    else
      ok "$label: exit $rc, one error line, files untouched"
    fi
    return
  fi
  local msg="$label: $(IFS=';'; echo "${why[*]}") | stderr: $(grep -a -m2 . "$tmp/e.err" | tr '\n' ' ')"
  if [ "$known" = 1 ]; then
    xfail "$msg"
  else
    bad "$msg"
  fi
}

# each_np KIND/NAME CODE TEXT KNOWN ARGS...: at 1 rank, and at 2 ranks if selected.
each_np() {
  local id=$1
  shift
  run_case "$id" 1 "$@"
  if [ "$np2_mode" = all ] || { [ "$np2_mode" = subset ] && [[ " $(echo $NP2_CASES) " == *" $id "* ]]; }; then
    run_case "$id" 2 "$@"
  fi
}

# --- 1. configurations: tests/bad/config/*.ini, and the ones that cannot be committed as text
printf '' > "$in/cfg/empty.ini"
printf '\x7fELF\x02\x01\x01\x00\x00\x00\xde\xad\xbe\xef\n\xff\xfe[data]\n' > "$in/cfg/garbage.ini"
printf '\xff\xfe\xfd\x80\x81 = \xc3\x28\n' > "$in/cfg/garbage_high.ini"
printf '[data]\npath = a\x00b.h5\n' > "$in/cfg/nul_byte.ini"
{ printf '[data]\npath = '; head -c 5000 /dev/zero | tr '\0' a; echo; } > "$in/cfg/long_line.ini"
# 1100 characters: read in whole (longer than inih's 198), refused whole, never cut to DP_PATH_MAX
{ printf '[data]\npath = /'; head -c 1100 /dev/zero | tr '\0' a; echo; } > "$in/cfg/long_path.ini"
{ printf '[data]\npath = x.h5\n'; for _ in $(seq 70); do printf '[layer]\nunits = 4\n'; done; } > "$in/cfg/too_many_layers.ini"
gen_expect() { # name code text
  printf '%s\n' "$2 $3" > "$in/cfg/$1.expect"
}
gen_expect empty 2 "empty.ini: [data] path is required"
gen_expect garbage 2 "garbage.ini:1: not a text line (control character 0x00)"
gen_expect garbage_high 2 "garbage_high.ini:1: key '"
gen_expect nul_byte 2 "nul_byte.ini:2: not a text line (control character 0x00)"
gen_expect long_line 2 "long_line.ini:2: line longer than"
gen_expect long_path 2 "long_path.ini:2: [data] path: expected a non-empty string shorter than 1024 characters"
gen_expect too_many_layers 2 "too_many_layers.ini:131: too many [layer] sections (at most 64)"
for f in "$bad"/config/*.ini; do
  name=$(basename "$f" .ini)
  sed -n '1s/^; expect: //p' "$f" > "$in/cfg/$name.expect"
  [ -s "$in/cfg/$name.expect" ] || { bad "config/$name: no '; expect: CODE TEXT' on line 1"; continue; }
  subst "$f" "cfg-$name" > "$in/cfg/$name.ini"
done
for e in "$in"/cfg/*.expect; do
  name=$(basename "$e" .expect)
  read -r code text < "$e"
  text=${text//@TMP@/$tmp}
  known=0
  grep -q '^; known-bug' "$in/cfg/$name.ini" && known=1
  each_np "config/$name" "$code" "$text" $known train "$in/cfg/$name.ini"
done
# A directory given as the config: fopen succeeds, reading fails with EISDIR, and the parser reports
# the empty result instead of the directory.
run_case "config/a directory" 1 2 "$in/data/dir.h5: cannot read: it is a directory" 0 train "$in/data/dir.h5"

# --- 2. data files: the ok config pointed at each bad file with --set data.path
# data_case NAME CODE TEXT [known-bug]
data_case() {
  local name=$1 code=$2 text=$3 known=0
  [ "${4:-}" = known-bug ] && known=1
  local f=$in/data/$name.h5
  each_np "data/$name" "$code" "$f: $text" $known train "$in/ok.ini" --set data.path="$f" \
    --set train.out_dir="$tmp/out/data-$name"
}
data_case not_hdf5 1 "not an HDF5 file (convert data with \`dptrain convert\`)"
data_case empty 1 "not an HDF5 file"
data_case dir 1 "data file must be a regular file, this is a directory"
data_case truncated 1 "HDF5 cannot open the file (damaged or truncated?)"
data_case missing 1 "cannot open data file: No such file or directory"
data_case no_train 1 "missing group /train (expected /train/x and /train/y)"
data_case no_x 1 "missing dataset /train/x (expected an (N, D) array of uint8 or float32)"
data_case no_y 1 "missing dataset /train/y (expected (N) integer labels or (N, K) float32 targets)"
data_case x_rank1 1 "/train/x: expected 2 dimensions (N, D), found 1"
data_case x_rank3 1 "/train/x: expected 1 or 2 dimensions, found 3"
data_case x_int16 1 "/train/x: expected uint8 or float32 elements"
data_case x_f64 1 "/train/x: expected uint8 or float32 elements"
data_case x_zero_rows 1 "/train/x: expected at least one row and one column, found (0, 20)"
data_case x_zero_cols 1 "/train/x: expected at least one row and one column, found (100, 0)"
data_case x_scale0 1 "/train/x: attribute 'scale' must be one finite non-zero number"
data_case y_int64 1 "/train/y: expected (N) integer labels of at most 32 bits or (N, K) float targets"
data_case y_rank2_int 1 "/train/y: expected (N) integer labels of at most 32 bits or (N, K) float targets"
data_case y_short 1 "/train/y: expected 100 rows like its x, found 90"
data_case y_float 2 "/train/y: loss softmax_cross_entropy needs integer class labels (N), found float targets"
data_case y_big 2 "/train/y: labels range 0..7, but the last [layer] has 5 units: expected labels in 0..4"
data_case y_neg 2 "/train/y: labels range -1..4, but the last [layer] has 5 units: expected labels in 0..4"
data_case test_dim 2 "/test/x has 19 features per row, the model takes 20"
data_case test_short 1 "/test/y: expected 20 rows like its x, found 10"
# Known bug: non-finite x is never checked (dp_dataset_check_finite in src/data.c is not called).
# Before commit b52b3bb the run exited 0 and saved a checkpoint with NaN weights; since, it stops
# some steps in with exit 3 "diverged ... the step size 0.1 is probably too large", blaming lr.
data_case x_nan 1 "/train/x: row 37, column 3 is NaN (expected finite values)"
data_case x_inf 1 "/train/x: row 5, column 0 is Inf (expected finite values)"

# --- 3. checkpoints: damaged copies of the set-up run's ckpt-3.h5; resumed into the run directory
# itself (its metrics.jsonl, config.ini and checkpoints must not change), evaluated and inspected.
c=$in/ckpt
head -c 3000 "$good" > "$c/truncated.h5"
head -c $(($(stat -c %s "$good") - 200)) "$good" > "$c/truncated_tail.h5"
cp "$good" "$c/flipped.h5"
"$build/tests/ckpt_tamper" flip "$c/flipped.h5" model/layer0/weight || bad "ckpt_tamper flip failed"
cp "$good" "$c/flipped_optimizer.h5"
"$build/tests/ckpt_tamper" flip "$c/flipped_optimizer.h5" optimizer/momentum/layer1/weight || bad "ckpt_tamper flip (optimizer) failed"
cp "$good" "$c/v99.h5"
"$build/tests/ckpt_tamper" version "$c/v99.h5" 99 || bad "ckpt_tamper version failed"
cp "$good" "$c/v0.h5"
"$build/tests/ckpt_tamper" version "$c/v0.h5" 0 || bad "ckpt_tamper version 0 failed"
cmp -s "$good" "$c/flipped.h5" && bad "ckpt_tamper flip changed nothing"
echo "not a checkpoint" > "$c/text.h5"
: > "$c/empty.h5"
# A run directory whose newest checkpoint is damaged: --resume auto must stop on it, not skip it.
cp -r "$in/run" "$in/autorun"
head -c 3000 "$good" > "$in/autorun/checkpoints/ckpt-9.h5"
# The set-up model with a third layer.
awk '/^\[optimizer\]/ { print "[layer]\nunits = 5\nactivation = identity" } 1' "$in/ok.ini" |
  sed '0,/^units = 5$/s//units = 6/' > "$in/three_layers.ini"

ckpt_train() { # name code text known args...
  local name=$1 code=$2 text=$3 known=$4
  shift 4
  each_np "ckpt/train-$name" "$code" "$text" "$known" train "$in/ok.ini" "$@"
}
ckpt_train truncated 1 "$c/truncated.h5: HDF5 cannot open it (truncated or damaged)" 0 --resume "$c/truncated.h5"
ckpt_train truncated_tail 1 "$c/truncated_tail.h5: HDF5 cannot open it (truncated or damaged)" 0 --resume "$c/truncated_tail.h5"
ckpt_train flipped 1 "$c/flipped.h5: /model/layer0/weight: checksum mismatch or damaged data" 0 --resume "$c/flipped.h5"
ckpt_train flipped_optimizer 1 "$c/flipped_optimizer.h5: /optimizer/momentum/layer1/weight: checksum mismatch" 0 \
  --resume "$c/flipped_optimizer.h5"
ckpt_train v99 1 "$c/v99.h5: checkpoint format version 99, this dptrain reads version 1" 0 --resume "$c/v99.h5"
ckpt_train v0 1 "$c/v0.h5: checkpoint format version 0, this dptrain reads version 1" 0 --resume "$c/v0.h5"
ckpt_train text 1 "$c/text.h5: not an HDF5 file (truncated or not a checkpoint)" 0 --resume "$c/text.h5"
ckpt_train empty 1 "$c/empty.h5: not an HDF5 file (truncated or not a checkpoint)" 0 --resume "$c/empty.h5"
ckpt_train missing 1 "$c/missing.h5: cannot open checkpoint: No such file or directory" 0 --resume "$c/missing.h5"
ckpt_train data_file 1 "$in/data/good.h5: not a dptrain checkpoint (no format attribute 'dptrain-checkpoint')" 0 \
  --resume "$in/data/good.h5"
# Another model or optimizer is a configuration error, found in the checkpoint's stored config by key.
ckpt_train other_model 2 "to resume it these must match: layer.0.units 8 -> 16" 0 \
  --resume "$good" --set layer.0.units=16
ckpt_train other_optimizer 2 "to resume it these must match: optimizer.name sgd -> adam" 0 \
  --resume "$good" --set optimizer.name=adam
ckpt_train auto_newest_damaged 1 "$in/autorun/checkpoints/ckpt-9.h5: HDF5 cannot open it (truncated or damaged)" 0 \
  --resume auto --set train.out_dir="$in/autorun"
ckpt_train init_from_flipped 1 "$c/flipped.h5: /model/layer0/weight: checksum mismatch or damaged data" 0 \
  --set model.init_from="$c/flipped.h5" --set train.out_dir="$tmp/out/init_from_flipped"
each_np "ckpt/train-other_layer_count" 2 "the checkpoint's model has 2 layers, the config 3" 0 \
  train "$in/three_layers.ini" --resume "$good"
for k in truncated flipped v99 text missing; do
  each_np "ckpt/eval-$k" 1 "$c/$k.h5: " 0 eval "$c/$k.h5"
done
each_np "ckpt/eval-data_file" 1 "not a dptrain checkpoint" 0 eval "$in/data/good.h5"
each_np "ckpt/eval-no_test_split" 1 "$in/data/x_rank1.h5: no /test group to evaluate on" 0 eval "$good" --data "$in/data/x_rank1.h5"
for k in truncated v99 text missing; do
  run_case "ckpt/inspect-$k" 1 1 "$c/$k.h5: " 0 inspect "$c/$k.h5"
done

# --- 4. command lines: tests/bad/cli.txt
while IFS= read -r line; do
  case "$line" in '' | '#'*) continue ;; esac
  known=0
  if [[ $line == known-bug\ * ]]; then
    known=1
    line=${line#known-bug }
  fi
  code=$(echo "$line" | cut -d'|' -f1 | xargs)
  text=$(echo "$line" | cut -d'|' -f2 | sed 's/^ //; s/ $//')
  args=$(echo "$line" | cut -d'|' -f3-)
  args=${args//@CFG@/$in/ok.ini}
  args=${args//@CKPT@/$good}
  args=${args//@TMP@/$tmp}
  text=${text//@TMP@/$tmp}
  read -r -a argv <<< "$args"
  run_case "cli: dptrain$(printf ' %s' "${argv[@]}" | sed "s|$tmp|TMP|g")" 1 "$code" "$text" $known "${argv[@]}"
done < "$bad/cli.txt"

echo "# $passes ok, $fails failed, $xfails known failures (xfail), $xpasses known failures now passing (XPASS)"
finish
