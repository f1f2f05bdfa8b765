# Shared by test_infer.sh, test_predict.sh and test_export.sh (sourced after lib.sh): small CSV data
# sets with features of very different scales, converted, and three trained models in $tmp; images and
# a CNN (make_cnn).

# gen_csv FILE ROWS SEED class|reg: 6 features of scales 1 .. 100 and a label (3 classes) or a target.
gen_csv() {
  awk -v n="$2" -v seed="$3" -v kind="$4" 'BEGIN {
    srand(seed); split("1 10 100 0.1 5 50", s, " ");
    for (i = 0; i < n; i++) {
      c = int(rand() * 3); line = ""; t = 0;
      for (j = 1; j <= 6; j++) {
        u = rand() + rand() + rand() - 1.5;
        if (kind == "class" && j % 3 == c) u += 1.2;
        v = (u + 1) * s[j]; t += (j % 2 ? 1 : -0.5) * u;
        line = line sprintf("%.6g,", v);
      }
      print line (kind == "class" ? c : sprintf("%.6g", t));
    }
  }' > "$1"
}

# train_model NAME LOSS NORM STANDARDIZE: trains $tmp/NAME.ini on its data; the final checkpoint is $tmp/NAME.h5.
train_model() {
  local name=$1 loss=$2 norm=$3 std=$4 data=$tmp/class.h5 out=3 act=identity scalar=
  [ "$loss" = mse ] && data=$tmp/reg.h5 out=1
  [ "$std" = scalar ] && scalar=$'mean = 10\nstd = 20'
  cat > "$tmp/$name.ini" <<EOC
[data]
path = $data
standardize = $std
$scalar
[model]
loss = $loss
[layer]
units = 16
activation = tanh
norm = $norm
[layer]
units = $out
activation = $act
[optimizer]
name = sgd
lr = 0.05
momentum = 0.9
[train]
batch_size = 50
epochs = 4
log_every = 100
out_dir = $tmp/run-$name
EOC
  "$bin" train "$tmp/$name.ini" --quiet > "$tmp/$name.log" 2>&1 || { echo "train $name failed:"; cat "$tmp/$name.log"; return 1; }
  cp "$(ls "$tmp/run-$name"/checkpoints/ckpt-*.h5 | tail -1)" "$tmp/$name.h5"
}

# make_models: class.csv/class.h5 (600 training, 150 test rows; x scale 0.5), reg.csv/reg.h5 alike, and
# the models bn (batch norm, scalar standardisation), ln (layer norm, per feature) and mse (per feature).
make_models() {
  gen_csv "$tmp/class_train.csv" 600 1 class && gen_csv "$tmp/class.csv" 150 2 class &&
    gen_csv "$tmp/reg_train.csv" 600 3 reg && gen_csv "$tmp/reg.csv" 150 4 reg &&
    "$bin" convert csv "$tmp/class_train.csv" --test "$tmp/class.csv" --scale 0.5 -o "$tmp/class.h5" > /dev/null &&
    "$bin" convert csv "$tmp/reg_train.csv" --test "$tmp/reg.csv" --regression -o "$tmp/reg.h5" > /dev/null &&
    train_model bn softmax_cross_entropy batch scalar && train_model ln softmax_cross_entropy layer per_feature &&
    train_model mse mse none per_feature
}

# max_diff A B: the largest absolute difference between the numbers of two CSVs, row by row over B's
# columns (A may have a header line and more columns); fails when the row counts differ.
max_diff() {
  awk -F, 'NR == FNR { if ($1 !~ /^ *[-+.0-9]/) next; a[++na] = $0; next }
    $1 !~ /^ *[-+.0-9]/ { next }
    { split(a[++nb], p, ","); for (i = 1; i <= NF; i++) { d = p[i] - $i; if (d < 0) d = -d; if (d > m) m = d } }
    END { if (na != nb) { print "rows: " na " vs " nb; exit 1 } printf "%.3g\n", m }' "$1" "$2"
}

# within MAX TOL: MAX (from max_diff) is at most TOL.
within() { awk -v m="$1" -v t="$2" 'BEGIN { exit !(m != "" && m + 0 <= t + 0) }'; }

# gen_img_csv FILE ROWS SEED: rows of one 2x6x6 image (72 pixels of 0..159, channel-major as
# [data] shape reads them) and a label (3 classes: a brighter corner of channel 0 or 1, or both).
gen_img_csv() {
  awk -v n="$2" -v seed="$3" 'BEGIN {
    srand(seed);
    for (i = 0; i < n; i++) {
      c = int(rand() * 3); line = "";
      for (ch = 0; ch < 2; ch++)
        for (y = 0; y < 6; y++)
          for (x = 0; x < 6; x++) {
            v = rand() * 120;
            if ((c == ch || c == 2) && x + y < 5 + 3 * ch) v += 40;
            line = line sprintf("%d,", v);
          }
      print line c;
    }
  }' > "$1"
}

# make_cnn [NAME [implicit]]: img.csv/img.h5 (400 training, 100 test rows) and the model NAME (cnn)
# in $tmp/NAME.h5: every image layer (conv2d with batch norm, maxpool, a rectangular padded conv2d,
# avgpool with stride 1, flatten: left implicit with `implicit`), then dense, dropout and the output,
# per-feature standardisation.
make_cnn() {
  local name=${1:-cnn} flatten=flatten
  [ "${2:-}" = implicit ] && flatten=
  [ -f "$tmp/img.h5" ] || { gen_img_csv "$tmp/img_train.csv" 400 5 && gen_img_csv "$tmp/img.csv" 100 6 &&
    "$bin" convert csv "$tmp/img_train.csv" --test "$tmp/img.csv" -o "$tmp/img.h5" > /dev/null; } || return 1
  cat > "$tmp/$name.ini" << EOC
[data]
path = $tmp/img.h5
shape = 2,6,6
standardize = per_feature
[layer]
type = conv2d
filters = 4
kernel = 3
padding = same
norm = batch
[layer]
type = maxpool
kernel = 2
[layer]
type = conv2d
filters = 5
kernel = 2,1
padding = 1
activation = tanh
[layer]
type = avgpool
kernel = 2
stride = 1
${flatten:+[layer]
type = flatten}
[layer]
units = 12
[layer]
type = dropout
rate = 0.25
[layer]
units = 3
activation = identity
[optimizer]
name = adam
lr = 0.01
[train]
batch_size = 50
epochs = 6
log_every = 100
out_dir = $tmp/run-$name
EOC
  "$bin" train "$tmp/$name.ini" --quiet > "$tmp/$name.log" 2>&1 || { echo "train $name failed:"; cat "$tmp/$name.log"; return 1; }
  cp "$(ls "$tmp/run-$name"/checkpoints/ckpt-*.h5 | tail -1)" "$tmp/$name.h5"
}
