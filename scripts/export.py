#!/usr/bin/python3
"""Export a dptrain checkpoint as PyTorch (TorchScript) or ONNX.

    scripts/export.py CHECKPOINT -o model.pt     # torch.jit.load("model.pt")
    scripts/export.py CHECKPOINT -o model.onnx   # checked with onnx.checker when onnx is installed

The model is a torch.nn.Sequential that computes what `dptrain predict` does, from raw features as
the data file stores them: the input transform (x * scale + shift per feature, the checkpoint's
/input/scale and /input/shift), then per [layer] a Linear (without bias when the layer has a norm),
BatchNorm1d (running statistics, eval mode) or LayerNorm with the gain and shift, and the activation;
a classifier ends in Softmax (--logits leaves it off). docs/checkpoint-format.md has the mapping.
Needs python3-h5py and python3-torch (python3-onnx for the check).
"""
import argparse
import os
import sys

import h5py
import numpy as np

# Layer keys dptrain writes in the stored config, and their defaults (src/config.c).
LAYER_DEFAULTS = {"activation": "relu", "norm": "none", "eps": "1e-05", "norm_momentum": "0.1"}


def fail(msg):
    sys.exit(f"export.py: error: {msg}")


def parse_config(text):
    """The stored INI text: {section: {key: value}} and the list of [layer] sections in order."""
    sections, layers, cur = {}, [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1].strip()
            cur = {}
            if name == "layer":
                layers.append(cur)
            else:
                sections[name] = cur
            continue
        key, sep, value = line.partition("=")
        if sep and cur is not None:
            value = value.strip()
            for c in (" ;", "\t;"):  # a comment starts at a ';' after a blank
                value = value.split(c, 1)[0].rstrip()
            cur[key.strip()] = value
    return sections, layers


def read_checkpoint(path):
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        fail(f"{path}: not an HDF5 file (truncated or not a checkpoint): {e}")
    with f:
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != "dptrain-checkpoint":
            fail(f"{path}: not a dptrain checkpoint (no format attribute 'dptrain-checkpoint')")
        if "config" not in f or "model" not in f:
            fail(f"{path}: no /config or /model")
        text = bytes(np.asarray(f["config"])).decode()
        tensors = {}
        f["model"].visititems(lambda name, obj: tensors.__setitem__(name, np.asarray(obj, dtype=np.float32))
                              if isinstance(obj, h5py.Dataset) else None)
        transform = None
        if "input/scale" in f and "input/shift" in f:
            transform = (np.asarray(f["input/scale"], np.float32), np.asarray(f["input/shift"], np.float32))
    return text, tensors, transform


def legacy_transform(path, data, n_in):
    """Checkpoints from before /input: the data file's scale attribute and [data] mean, std."""
    if data.get("standardize", "scalar") != "scalar":
        fail(f"{path} predates the stored input transform and uses standardize = {data['standardize']}")
    dpath = data.get("path", "")
    try:
        with h5py.File(dpath, "r") as d:
            scale = float(d["train/x"].attrs.get("scale", 1.0))
    except (OSError, KeyError) as e:
        fail(f"{path} predates the stored input transform (/input/scale, /input/shift), and the data file its "
             f"config names, for the `scale` attribute, is not usable: {dpath}: {e}")
    mean, std = float(data.get("mean", 0)), float(data.get("std", 1))
    # As dp_dataset_standardize folds it, in float32.
    return (np.full(n_in, np.float32(scale / std), np.float32), np.full(n_in, np.float32(-mean / std), np.float32))


def build(path, logits):
    import torch
    from torch import nn

    class InputTransform(nn.Module):
        """x * scale + shift per feature: the transform training applied to the stored features."""

        def __init__(self, scale, shift):
            super().__init__()
            self.register_buffer("scale", torch.from_numpy(scale))
            self.register_buffer("shift", torch.from_numpy(shift))

        def forward(self, x):
            return x * self.scale + self.shift

    text, t, transform = read_checkpoint(path)
    sections, layers = parse_config(text)
    if not layers:
        fail(f"{path}: the stored config has no [layer] sections")
    n_in = t["layer0/weight"].shape[1]
    scale, shift = transform if transform else legacy_transform(path, sections.get("data", {}), n_in)
    mods = [InputTransform(scale, shift)]
    acts = {"identity": None, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    for i, cfg in enumerate(layers):
        cfg = {**LAYER_DEFAULTS, **cfg}
        w = t.get(f"layer{i}/weight")
        if w is None:
            fail(f"{path}: missing /model/layer{i}/weight")
        out, inp = w.shape
        norm = cfg["norm"]
        lin = nn.Linear(inp, out, bias=norm == "none")
        lin.weight.data = torch.from_numpy(w)
        if norm == "none":
            lin.bias.data = torch.from_numpy(t[f"layer{i}/bias"])
        mods.append(lin)
        eps = float(cfg["eps"])
        if norm == "batch":
            bn = nn.BatchNorm1d(out, eps=eps, momentum=float(cfg["norm_momentum"]))
            bn.weight.data, bn.bias.data = torch.from_numpy(t[f"layer{i}/gain"]), torch.from_numpy(t[f"layer{i}/shift"])
            # dptrain and PyTorch both keep the unbiased running variance.
            bn.running_mean.data = torch.from_numpy(t[f"layer{i}/running_mean"])
            bn.running_var.data = torch.from_numpy(t[f"layer{i}/running_var"])
            mods.append(bn)
        elif norm == "layer":
            ln = nn.LayerNorm(out, eps=eps)
            ln.weight.data, ln.bias.data = torch.from_numpy(t[f"layer{i}/gain"]), torch.from_numpy(t[f"layer{i}/shift"])
            mods.append(ln)
        elif norm != "none":
            fail(f"{path}: layer {i}: unknown norm '{norm}'")
        if cfg["activation"] not in acts:
            fail(f"{path}: layer {i}: unknown activation '{cfg['activation']}'")
        if acts[cfg["activation"]]:
            mods.append(acts[cfg["activation"]]())
    if sections.get("model", {}).get("loss", "softmax_cross_entropy") != "mse" and not logits:
        mods.append(nn.Softmax(dim=1))
    return nn.Sequential(*mods).eval(), n_in


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("-o", "--output", required=True, help="model.pt (TorchScript) or model.onnx")
    ap.add_argument("--logits", action="store_true", help="a classifier's raw outputs, without the softmax")
    ap.add_argument("--opset", type=int, default=13, help="ONNX opset (default 13)")
    a = ap.parse_args()
    ext = os.path.splitext(a.output)[1].lower()
    if ext not in (".pt", ".onnx"):
        fail(f"-o {a.output}: the output must end in .pt or .onnx")
    try:
        import torch
    except ImportError:
        fail("PyTorch is missing (Debian: apt-get install python3-torch)")
    model, n_in = build(a.checkpoint, a.logits)
    tmp = a.output + ".tmp"
    with torch.no_grad():
        if ext == ".pt":
            torch.jit.save(torch.jit.script(model), tmp)
        else:
            torch.onnx.export(model, torch.zeros(1, n_in), tmp, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=a.opset)
            try:
                import onnx
                onnx.checker.check_model(onnx.load(tmp))
            except ImportError:
                print("export.py: onnx is not installed: the file was not checked", file=sys.stderr)
    os.replace(tmp, a.output)
    print(f"wrote {a.output}: {len(model)} modules, {n_in} inputs")


if __name__ == "__main__":
    main()
