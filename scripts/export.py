#!/usr/bin/python3
"""Export a dptrain checkpoint as PyTorch (TorchScript) or ONNX.

    scripts/export.py CHECKPOINT -o model.pt     # torch.jit.load("model.pt")
    scripts/export.py CHECKPOINT -o model.onnx   # checked with onnx.checker when onnx is installed

The model is a torch.nn.Sequential that computes what `dptrain predict` does, from raw features as
the data file stores them: the input transform (x * scale + shift per feature, the checkpoint's
/input/scale and /input/shift), then per [layer] a Linear (without bias when the layer has a norm),
BatchNorm1d (running statistics, eval mode) or LayerNorm with the gain and shift, and the activation;
a classifier ends in Softmax (--logits leaves it off). With [data] shape = C,H,W the rows (N, C·H·W)
are reshaped to (N, C, H, W) after the transform, and conv2d, maxpool, avgpool, flatten and dropout
layers become Conv2d (+ BatchNorm2d), MaxPool2d, AvgPool2d, Flatten (also before the first dense
layer after images) and Dropout (the identity in eval mode). docs/checkpoint-format.md has the mapping.
Needs python3-h5py and python3-torch (python3-onnx for the check).
"""
import argparse
import os
import sys

import numpy as np

# Layer keys dptrain writes in the stored config, and their defaults (src/config.c).
LAYER_DEFAULTS = {"type": "dense", "activation": "relu", "norm": "none", "eps": "1e-05", "norm_momentum": "0.1",
                  "padding": "0"}


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
    import h5py  # here, not at the top: scripts/bench_torch.py imports this file without h5py

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
    import h5py

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


def pair(text, what):
    """A kernel as the config writes it: k or kh,kw."""
    try:
        v = [int(p) for p in text.split(",")]
    except ValueError:
        v = []
    if len(v) not in (1, 2) or min(v) < 1:
        fail(f"{what}: '{text}' is not a kernel size (k or kh,kw)")
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def modules(layers, shape, t, where):
    """The torch modules of the [layer] sections on inputs of `shape` ((C, H, W) images or (n,)
    features). t: the checkpoint's /model tensors, or None for PyTorch's own initialisation
    (scripts/bench_torch.py trains the same network)."""
    import torch
    from torch import nn

    acts = {"identity": None, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    mods = []

    def tensor(i, name, dims):
        if t is None:
            return None
        a = t.get(f"layer{i}/{name}")
        if a is None or a.size != int(np.prod(dims)):
            fail(f"{where}: /model/layer{i}/{name} is {'missing' if a is None else a.shape}, the config's "
                 f"layer {i} needs {tuple(dims)}")
        return torch.from_numpy(np.ascontiguousarray(a.reshape(dims)))

    def load(mod, i, names, dims):
        for attr, name in names:
            v = tensor(i, name, dims)
            if v is not None:
                getattr(mod, attr).data = v

    for i, cfg in enumerate(layers):
        cfg = {**LAYER_DEFAULTS, **cfg}
        kind, norm, what = cfg["type"], cfg["norm"], f"{where}: layer {i}"
        if kind == "dense" and len(shape) == 3:  # the implicit flatten before the first dense layer
            mods.append(nn.Flatten())
            shape = (int(np.prod(shape)),)
        if kind == "dense":
            out = int(cfg["units"])
            lin = nn.Linear(shape[0], out, bias=norm == "none")
            load(lin, i, [("weight", "weight")], (out, shape[0]))
            if norm == "none":
                load(lin, i, [("bias", "bias")], (out,))
            mods.append(lin)
            shape = (out,)
        elif kind == "conv2d":
            if len(shape) != 3:
                fail(f"{what}: conv2d after a flat layer")
            (c, h, w), f = shape, int(cfg["filters"])
            (kh, kw), s = pair(cfg["kernel"], what), int(cfg.get("stride", 0)) or 1  # 0: the default
            ph, pw = ((kh - 1) // 2, (kw - 1) // 2) if cfg["padding"] == "same" else (int(cfg["padding"]),) * 2
            conv = nn.Conv2d(c, f, (kh, kw), stride=s, padding=(ph, pw), bias=norm == "none")
            load(conv, i, [("weight", "weight")], (f, c, kh, kw))
            if norm == "none":
                load(conv, i, [("bias", "bias")], (f,))
            mods.append(conv)
            shape = (f, (h + 2 * ph - kh) // s + 1, (w + 2 * pw - kw) // s + 1)
        elif kind in ("maxpool", "avgpool"):
            if len(shape) != 3:
                fail(f"{what}: {kind} after a flat layer")
            k = pair(cfg["kernel"], what)
            s = int(cfg.get("stride", 0)) or k[0]
            mods.append((nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d)(k, stride=s))
            shape = (shape[0], (shape[1] - k[0]) // s + 1, (shape[2] - k[1]) // s + 1)
            continue
        elif kind == "flatten":
            if len(shape) == 3:
                mods.append(nn.Flatten())
                shape = (int(np.prod(shape)),)
            continue
        elif kind == "dropout":
            mods.append(nn.Dropout(float(cfg["rate"])))
            continue
        else:
            fail(f"{what}: unknown layer type '{kind}'")
        eps, units = float(cfg["eps"]), shape[0]
        if norm == "batch":
            bn = (nn.BatchNorm1d if kind == "dense" else nn.BatchNorm2d)(units, eps=eps,
                                                                         momentum=float(cfg["norm_momentum"]))
            # dptrain and PyTorch both keep the unbiased running variance.
            load(bn, i, [("weight", "gain"), ("bias", "shift"), ("running_mean", "running_mean"),
                         ("running_var", "running_var")], (units,))
            mods.append(bn)
        elif norm == "layer" and kind == "dense":
            ln = nn.LayerNorm(units, eps=eps)
            load(ln, i, [("weight", "gain"), ("bias", "shift")], (units,))
            mods.append(ln)
        elif norm != "none":
            fail(f"{what}: norm '{norm}' is not supported for {kind} layers")
        if cfg["activation"] not in acts:
            fail(f"{what}: unknown activation '{cfg['activation']}'")
        if acts[cfg["activation"]]:
            mods.append(acts[cfg["activation"]]())
    return mods


def input_shape(data, where):
    """[data] shape = C,H,W as a tuple, or None for flat rows."""
    text = data.get("shape", "")
    if not text or text in ("0", "none"):
        return None
    try:
        v = tuple(int(p) for p in text.split(","))
    except ValueError:
        v = ()
    if len(v) != 3 or min(v) < 1:
        fail(f"{where}: [data] shape = {text} is not C,H,W")
    return v


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

    class Images(nn.Module):
        """Rows (N, C·H·W) as the data file stores them, one C×H×W image each, to (N, C, H, W)."""

        def __init__(self, c, h, w):
            super().__init__()
            self.c, self.h, self.w = c, h, w

        def forward(self, x):
            return x.reshape(x.shape[0], self.c, self.h, self.w)

    text, t, transform = read_checkpoint(path)
    sections, layers = parse_config(text)
    if not layers:
        fail(f"{path}: the stored config has no [layer] sections")
    shape = input_shape(sections.get("data", {}), path)
    if transform:
        n_in = transform[0].size
    elif shape:
        n_in = int(np.prod(shape))
    elif "layer0/weight" in t:
        n_in = t["layer0/weight"].shape[1]
    else:
        fail(f"{path}: missing /model/layer0/weight")
    if shape and int(np.prod(shape)) != n_in:
        fail(f"{path}: [data] shape = {','.join(map(str, shape))} does not match the model's {n_in} inputs")
    scale, shift = transform if transform else legacy_transform(path, sections.get("data", {}), n_in)
    mods = [InputTransform(scale, shift)] + ([Images(*shape)] if shape else [])
    mods += modules(layers, shape or (n_in,), t, path)
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
