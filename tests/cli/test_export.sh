#!/usr/bin/env bash
# scripts/export.py: the TorchScript export of an MLP with batch norm, one with layer norm, an mse
# regression with per-feature standardisation and a CNN (every image layer, dropout; flatten explicit
# and implicit) reproduces `dptrain predict` within 1e-5; so does the ONNX export, which passes
# onnx.checker, run by onnx's reference evaluator (onnx >= 1.13) or else tests/tools/onnx_numpy.py;
# bad checkpoints and outputs are one clear error. Without Debian's python3-torch, python3-onnx or
# python3-h5py (scripts/install-deps.sh --test) it says SKIPPED and why.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/infer_lib.sh"
need "$bin"
py=/usr/bin/python3
for mod in h5py torch onnx; do
  "$py" -c "import $mod" 2> /dev/null || finish "SKIPPED: $py cannot import $mod (scripts/install-deps.sh --test installs python3-h5py, python3-torch, python3-onnx)"
done
export=$root/scripts/export.py
make_models && make_cnn && make_cnn cnn_implicit implicit || { bad "training the models"; finish; }

for m in bn ln mse cnn cnn_implicit; do
  data=$tmp/class.csv
  [ $m = mse ] && data=$tmp/reg.csv
  [[ $m = cnn* ]] && data=$tmp/img.csv
  "$bin" predict "$tmp/$m.h5" "$data" -o "$tmp/$m.pred.csv" || bad "$m: predict"
  if ! "$export" "$tmp/$m.h5" -o "$tmp/$m.pt" > "$tmp/log" 2>&1; then
    bad "$m: export to .pt: $(cat "$tmp/log")"
    continue
  fi
  d=$("$py" - "$tmp/$m.pt" "$data" "$tmp/$m.pred.csv" << 'EOP'
import sys, numpy as np, torch
model = torch.jit.load(sys.argv[1])
x = np.loadtxt(sys.argv[2], delimiter=",", dtype=np.float32, ndmin=2)
ref = np.loadtxt(sys.argv[3], delimiter=",", skiprows=1, ndmin=2)
with torch.no_grad():
    y = model(torch.from_numpy(x[:, :-1])).numpy()  # the last column is the label or target
print(f"{np.abs(y - ref[:, :y.shape[1]]).max():.3g}")
EOP
  )
  within "$d" 1e-5 && ok "$m: the TorchScript export reproduces predict (max difference $d)" || bad "$m: .pt vs predict: $d"
  if "$export" "$tmp/$m.h5" -o "$tmp/$m.onnx" > "$tmp/log" 2>&1 &&
    d=$(PYTHONPATH=$root/tests/tools "$py" - "$tmp/$m.onnx" "$data" "$tmp/$m.pred.csv" 2>> "$tmp/log" << 'EOP'
import sys, numpy as np, onnx
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m)
x = np.loadtxt(sys.argv[2], delimiter=",", dtype=np.float32, ndmin=2)[:, :-1]
ref = np.loadtxt(sys.argv[3], delimiter=",", skiprows=1, ndmin=2)
try:
    from onnx.reference import ReferenceEvaluator
    y = ReferenceEvaluator(m).run(None, {"x": x})[0]
except ImportError:  # onnx < 1.13
    from onnx_numpy import run
    y = run(m, x)
print(f"{np.abs(y - ref[:, :y.shape[1]]).max():.3g}")
EOP
    ) && within "$d" 1e-5; then
    ok "$m: the ONNX export passes onnx.checker and, run, reproduces predict (max difference $d)"
  else
    bad "$m: ONNX: ${d:+max difference $d; }$(tail -3 "$tmp/log")"
  fi
done
"$py" -c "import torch, sys; print(torch.jit.load(sys.argv[1]))" "$tmp/bn.pt" > "$tmp/modules"
grep -q BatchNorm1d "$tmp/modules" && grep -q Softmax "$tmp/modules" && ok "bn: BatchNorm1d and a final Softmax" ||
  bad "bn modules: $(cat "$tmp/modules")"
# module_names PT: the TorchScript model's modules in order, on one line.
module_names() {
  "$py" -c "import torch, sys; print(torch.jit.load(sys.argv[1]))" "$1" | grep -o 'original_name=[A-Za-z0-9]*' |
    cut -d= -f2 | tr '\n' ' '
}
want="Sequential InputTransform Images Conv2d BatchNorm2d ReLU MaxPool2d Conv2d Tanh AvgPool2d Flatten Linear ReLU"
want+=" Dropout Linear Softmax "
got=$(module_names "$tmp/cnn.pt")
[ "$got" = "$want" ] && ok "cnn: the modules in order: $want" || bad "cnn modules: $got"
got=$(module_names "$tmp/cnn_implicit.pt")
[ "$got" = "$want" ] && ok "cnn_implicit: a Flatten before the first dense layer" || bad "cnn_implicit modules: $got"

# expect_fail NAME PATTERN ARGS...
expect_fail() {
  local name=$1 pat=$2
  shift 2
  if ! "$export" "$@" > /dev/null 2> "$tmp/err" && grep -q -- "$pat" "$tmp/err"; then
    ok "$name is one clear error"
  else
    bad "$name: $(cat "$tmp/err")"
  fi
}
head -c 2000 "$tmp/bn.h5" > "$tmp/truncated.h5"
expect_fail "a truncated checkpoint" "truncated.h5: not an HDF5 file" "$tmp/truncated.h5" -o "$tmp/x.pt"
expect_fail "a foreign HDF5 file" "not a dptrain checkpoint" "$tmp/class.h5" -o "$tmp/x.pt"
expect_fail "an unknown output type" "must end in .pt or .onnx" "$tmp/bn.h5" -o "$tmp/x.txt"
finish
