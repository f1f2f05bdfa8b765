#!/usr/bin/env bash
# [data] standardize = per_feature: the statistics `dptrain convert` stores, the transform the
# checkpoint stores (/input/scale, /input/shift), and eval, init_from and resume with it.
. "$(dirname "$0")/lib.sh"

# y = 0.5 u0 - 0.8 u1 + 0.3 u2 (+ noise of 0.003 rms) from features of scales 1e4 (around 5e4), 1e-3
# and 1, and a constant 7: scaled alike, the small feature is lost next to the large one.
gen() { # rows, seed, offset of the first feature
  awk -v n="$1" -v seed="$2" -v off="$3" 'BEGIN { srand(seed); for (i = 0; i < n; i++) {
    u0 = rand(); u1 = rand(); u2 = rand(); y = 0.5 * u0 - 0.8 * u1 + 0.3 * u2 + 0.01 * (rand() - 0.5)
    printf "%.9g,%.9g,%.9g,7,%.9g\n", 5e4 + off + 1e4 * u0, 1e-3 * u1, u2, y } }'
}
gen 2000 1 0 > "$tmp/train.csv"
gen 500 2 0 > "$tmp/test.csv"
gen 2000 3 3000 > "$tmp/train2.csv" # other statistics, the same test rows
"$bin" convert csv "$tmp/train.csv" --test "$tmp/test.csv" --regression -o "$tmp/d.h5" > "$tmp/conv.out" ||
  { echo "$script: convert failed"; exit 1; }
"$bin" convert csv "$tmp/train2.csv" --test "$tmp/test.csv" --regression -o "$tmp/d2.h5" > /dev/null ||
  { echo "$script: convert failed"; exit 1; }

# vals FILE DATASET: its values, one per line
vals() { # (the dataset's own DATA block, not its hash attribute's)
  h5dump -d "$2" -m %.9g "$1" 2> /dev/null | sed -n '/DATA {/,/}/{p;/}/q}' | sed -n 's/^ *([0-9]*): //p' |
    tr ',' '\n' | sed 's/ //g;/^$/d'
}
field() { sed -n "s/.*$2 \([0-9.e+-]*\).*/\1/p" "$1" | tail -1; }

# --- convert stores the training split's per-feature mean and std (of x · scale)
mean=$(vals "$tmp/d.h5" /train/x_mean | tr '\n' ' ') std=$(vals "$tmp/d.h5" /train/x_std | tr '\n' ' ')
if awk -v m="$mean" -v s="$std" 'BEGIN { split(m, a, " "); split(s, b, " ")
     exit !(a[1] > 54800 && a[1] < 55200 && b[1] > 2800 && b[1] < 3000 && a[2] > 4.8e-4 && a[2] < 5.2e-4 &&
            b[2] > 2.7e-4 && b[2] < 3.1e-4 && a[4] == 7 && b[4] == 0) }'; then
  ok "convert stores /train/x_mean ($mean) and /train/x_std ($std)"
else
  bad "convert's statistics: mean '$mean', std '$std'"
fi

cfg() { # file, out_dir, [data] lines
  cat > "$1" <<EOC
[data]
path = $tmp/d.h5
$3
[model]
loss = mse
[layer]
units = 1
activation = identity
[optimizer]
name = sgd
lr = 0.1
momentum = 0.9
[train]
batch_size = 64
epochs = 8
log_every = 50
out_dir = $2
EOC
}

# --- only per-feature standardisation fits it: scalar keeps the small feature at 1e-7, none diverges
read -r gmean gstd < <(sed -n 's/.*has mean \([0-9.]*\) and std \([0-9.]*\).*/\1 \2/p' "$tmp/conv.out")
cfg "$tmp/pf.ini" "$tmp/pf" "standardize = per_feature"
cfg "$tmp/sc.ini" "$tmp/sc" "mean = $gmean
std = $gstd"
cfg "$tmp/no.ini" "$tmp/no" "standardize = none"
for np in 1 2; do
  at_np $np 60 "$bin" train "$tmp/pf.ini" --overwrite > "$tmp/pf$np.out" 2>&1 || bad "np=$np per_feature run failed: $(tail -2 "$tmp/pf$np.out")"
  r=$(field "$tmp/pf$np.out" test_rmse)
  awk -v r="$r" 'BEGIN { exit !(r != "" && r < 0.01) }' && ok "np=$np per_feature: test_rmse $r < 0.01" ||
    bad "np=$np per_feature: test_rmse '$r'"
done
pf_rmse=$(field "$tmp/pf1.out" test_rmse)
at_np 1 60 "$bin" train "$tmp/sc.ini" > "$tmp/sc.out" 2>&1
r=$(field "$tmp/sc.out" test_rmse)
awk -v r="$r" 'BEGIN { exit !(r > 0.1) }' && ok "scalar mean/std ($gmean, $gstd): test_rmse $r > 0.1" ||
  bad "scalar: test_rmse '$r' $(tail -1 "$tmp/sc.out")"
at_np 1 60 "$bin" train "$tmp/no.ini" > "$tmp/no.out" 2>&1
rc=$? r=$(field "$tmp/no.out" test_rmse)
[ $rc -ne 0 ] || awk -v r="$r" 'BEGIN { exit !(r > 0.1) }' && ok "standardize = none diverges or fits badly (exit $rc)" ||
  bad "none: exit $rc, test_rmse '$r'"

# --- the checkpoint stores the transform: scale = 1/std, shift = -mean/std (std 0 counts as 1)
ckpt=$(ls "$tmp"/pf/checkpoints/ckpt-*.h5 | tail -1)
sc=$(vals "$ckpt" /input/scale | tr '\n' ' ') sh=$(vals "$ckpt" /input/shift | tr '\n' ' ')
if awk -v m="$mean" -v s="$std" -v a="$sc" -v b="$sh" 'function rel(x, y) { return (x - y) / (y ? y : 1) }
     BEGIN { split(m, M, " "); split(s, S, " "); split(a, A, " "); split(b, B, " "); bad = length(A) != 4
       for (j = 1; j <= 4; j++) { sd = S[j] > 0 ? S[j] : 1
         if (rel(A[j], 1 / sd) ^ 2 > 1e-10 || rel(B[j], -M[j] / sd) ^ 2 > 1e-10) bad = 1 }
       exit bad }'; then
  ok "/input/scale ($sc) and /input/shift ($sh) are the file's statistics"
else
  bad "/input/scale '$sc', /input/shift '$sh' for mean '$mean', std '$std'"
fi

# --- eval applies the checkpoint's transform, also on a file with other statistics
for data in "$tmp/d.h5" "$tmp/d2.h5"; do
  for np in 1 2; do
    at_np $np 60 "$bin" eval "$ckpt" --data "$data" > "$tmp/ev.out" 2>&1
    r=$(field "$tmp/ev.out" test_rmse)
    [ "$r" = "$pf_rmse" ] && ok "np=$np eval on $(basename "$data") reproduces test_rmse $r" ||
      bad "np=$np eval on $(basename "$data"): '$r', the run's $pf_rmse: $(tail -1 "$tmp/ev.out")"
  done
done

# --- init_from takes the checkpoint's transform with its weights (this config says none)
cfg "$tmp/init.ini" "$tmp/init" "standardize = none"
sed -i "s|^loss = mse|&\ninit_from = $ckpt|" "$tmp/init.ini"
at_np 2 60 "$bin" train "$tmp/init.ini" --set optimizer.lr=1e-9 --set train.max_steps=1 > "$tmp/init.out" 2>&1
r=$(field "$tmp/init.out" test_rmse) ick=$(ls "$tmp"/init/checkpoints/ckpt-*.h5 2> /dev/null | tail -1)
awk -v r="$r" -v p="$pf_rmse" 'BEGIN { exit !(r != "" && (r - p) ^ 2 < 1e-8) }' &&
  [ -n "$ick" ] && [ "$(vals "$ick" /input/scale | tr '\n' ' ')" = "$sc" ] &&
  ok "init_from applies and stores the checkpoint's transform (test_rmse $r)" ||
  bad "init_from: test_rmse '$r' (want $pf_rmse), scale '$(vals "$ick" /input/scale | tr '\n' ' ')': $(tail -1 "$tmp/init.out")"
# ... and its resume goes on with it
at_np 1 60 "$bin" train "$tmp/init.ini" --resume auto --set optimizer.lr=1e-9 --set train.max_steps=2 \
  > "$tmp/init2.out" 2>&1 && ok "a resumed init_from run keeps the transform it took" ||
  bad "resume of the init_from run: $(tail -1 "$tmp/init2.out")"

# --- a resume refuses a data file whose statistics changed; with the same file it goes on
cp "$tmp/d.h5" "$tmp/d_orig.h5"
cp "$tmp/d2.h5" "$tmp/d.h5"
for np in 1 2; do
  at_np $np 60 "$bin" train "$tmp/pf.ini" --resume auto --set train.epochs=9 > "$tmp/re.out" 2> "$tmp/re.err"
  rc=$?
  [ $rc -eq 2 ] && [ "$(grep -c 'dptrain: error:' "$tmp/re.err")" -eq 1 ] && grep -q 'input transform' "$tmp/re.err" &&
    ok "np=$np resume refuses a changed transform (exit 2, one line)" ||
    bad "np=$np resume with changed statistics: exit $rc: $(cat "$tmp/re.err")"
done
cp "$tmp/d_orig.h5" "$tmp/d.h5"
at_np 2 60 "$bin" train "$tmp/pf.ini" --resume auto --set train.epochs=9 > "$tmp/re.out" 2>&1 &&
  ok "resume with the same statistics goes on" || bad "resume: $(tail -1 "$tmp/re.out")"

# --- per_feature without the statistics in the file: one clear line
cfg "$tmp/old.ini" "$tmp/old" "standardize = per_feature"
sed -i "s|$tmp/d.h5|$tmp/nostats.h5|" "$tmp/old.ini"
# a data file as older converts wrote it: /train/x and /train/y only
h5copy -i "$tmp/d.h5" -o "$tmp/nostats.h5" -s /train/x -d /train/x -p > /dev/null 2>&1
h5copy -i "$tmp/d.h5" -o "$tmp/nostats.h5" -s /train/y -d /train/y > /dev/null 2>&1
at_np 1 60 "$bin" train "$tmp/old.ini" > "$tmp/old.out" 2> "$tmp/old.err"
rc=$?
[ $rc -ne 0 ] && grep -q "nostats.h5: no /train/x_mean.*dptrain convert" "$tmp/old.err" &&
  ok "per_feature on a file without statistics: exit $rc, names the file and dptrain convert" ||
  bad "per_feature without statistics: exit $rc: $(cat "$tmp/old.err")"
# mean/std with another mode is a contradiction
cfg "$tmp/mix.ini" "$tmp/mix" "standardize = per_feature
mean = 3"
at_np 1 30 "$bin" train "$tmp/mix.ini" > /dev/null 2> "$tmp/mix.err"
rc=$?
[ $rc -eq 2 ] && grep -q "mean and std apply with standardize = scalar" "$tmp/mix.err" &&
  ok "mean with standardize = per_feature is refused" || bad "mean + per_feature: exit $rc: $(cat "$tmp/mix.err")"

finish
