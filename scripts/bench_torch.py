#!/usr/bin/python3
"""PyTorch reference for `make bench`: the same MLP, data, optimizer and thread count as dptrain.

Usage: scripts/bench_torch.py [--steps N] [--hidden 512,256] [--batch 128] [--seconds S] [--config FILE]
Prints one JSON object: {"samples_per_s": ..., "torch": version, ...}. Exit 3 when torch is missing.

Trains on Fashion-MNIST read from Debian's dataset-fashion-mnist IDX files (the source of
data/fashion_mnist.h5), scaled by 1/255 as dptrain does, with mini-batch SGD, momentum 0.9.
--config FILE trains the network of a dptrain config instead (`dptrain bench --config FILE`): its
[layer] sections as scripts/export.py maps them (Conv2d, BatchNorm2d, MaxPool2d, Dropout, ...) on
the [data] shape, with its optimizer (sgd or adam/adamw and their settings).
Run it with the environment dptrain runs with (OPENBLAS_NUM_THREADS=1, and OPENBLAS_CORETYPE if
dptrain had to set it: Debian's torch uses the same OpenBLAS)."""
import argparse
import gzip
import json
import os
import sys
import time

try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"bench_torch: {e.name} is not installed (apt-get install python3-torch)", file=sys.stderr)
    sys.exit(3)

SRC = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


def idx(path, dims):
    with gzip.open(path, "rb") as f:
        data = f.read()
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def mlp(hidden):
    sizes = [784] + [int(h) for h in hidden.split(",")] + [10]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers), sizes[1:-1]


def from_config(path):
    """The network and optimizer of a dptrain config, built as scripts/export.py maps a checkpoint."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import export

    with open(path) as f:
        sections, layers = export.parse_config(f.read())
    shape = export.input_shape(sections.get("data", {}), path) or (784,)
    mods = export.modules(layers, shape, None, path)
    # Rows of C·H·W to images, as dptrain reads them.
    model = torch.nn.Sequential(*([torch.nn.Unflatten(1, shape)] if len(shape) == 3 else []), *mods)
    o = sections.get("optimizer", {})
    name, lr, wd = o.get("name", "sgd"), float(o.get("lr", 0) or 0), float(o.get("weight_decay", 0))
    if name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr or 0.01, momentum=float(o.get("momentum", 0)),
                              nesterov=o.get("nesterov", "false") == "true", weight_decay=wd)
    elif name in ("adam", "adamw"):
        opt = (torch.optim.Adam if name == "adam" else torch.optim.AdamW)(
            model.parameters(), lr=lr or 1e-3, betas=(float(o.get("beta1", 0.9)), float(o.get("beta2", 0.999))),
            eps=float(o.get("eps", 1e-8)), weight_decay=wd)
    else:
        sys.exit(f"bench_torch: {path}: optimizer {name} is not benchmarked (sgd, adam, adamw)")
    return model.train(), opt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", default="512,256")
    ap.add_argument("--config", help="the network and optimizer of this dptrain config instead of the MLP")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=5.0, help="measure for about this long")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    x = torch.from_numpy(idx(f"{SRC}/train-images-idx3-ubyte.gz", 3).reshape(60000, 784).astype(np.float32) / 255)
    y = torch.from_numpy(idx(f"{SRC}/train-labels-idx1-ubyte.gz", 1).astype(np.int64))
    if a.config:
        (model, opt), hidden = from_config(a.config), None
    else:
        model, hidden = mlp(a.hidden)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    perm = torch.randperm(60000)

    def step(k):
        idx_ = perm[(k * a.batch) % (60000 - a.batch):][: a.batch]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx_]), y[idx_])
        loss.backward()
        opt.step()
        return loss

    for k in range(20):  # warm-up
        step(k)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < a.seconds:
        step(20 + steps)
        steps += 1
    dt = time.perf_counter() - t0
    print(json.dumps({"torch": torch.__version__, "hidden": hidden, "config": a.config, "batch": a.batch,
                      "threads": a.threads, "steps": steps, "seconds": dt, "samples_per_s": steps * a.batch / dt}))


if __name__ == "__main__":
    main()
