"""Runs an ONNX model with numpy, in float64: the operators scripts/export.py's graphs use (MLPs with
batch or layer norm, CNNs), for tests/cli/test_export.sh where onnx has no reference evaluator of its
own (onnx.reference is onnx >= 1.13; Debian 12 has 1.12). An operator outside that set is an error,
never a guess.

    from onnx_numpy import run
    y = run(onnx.load("model.onnx"), x)   # x (n, features): the graph's one input; its one output
"""
import numpy as np
from onnx import helper, numpy_helper


def _windows(x, kernel, strides):
    """Every offset (i, j) of a kernel over x (N, C, H, W): x's (N, C, oh, ow) slice at that offset."""
    (kh, kw), (sh, sw) = kernel, strides
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield i, j, x[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]


def _pad2d(x, pads):
    top, left, bottom, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def _conv(x, w, b=None, kernel_shape=None, pads=(0, 0, 0, 0), strides=(1, 1), dilations=(1, 1), group=1):
    if tuple(dilations) != (1, 1) or group != 1:
        raise NotImplementedError("Conv with dilations or groups")
    y = 0
    for i, j, patch in _windows(_pad2d(x, pads), w.shape[2:], strides):
        y = y + np.einsum("ncyx,fc->nfyx", patch, w[:, :, i, j])
    return y + (b.reshape(1, -1, 1, 1) if b is not None else 0)


def _pool(reduce, x, kernel_shape, pads=(0, 0, 0, 0), strides=None, ceil_mode=0, count_include_pad=0):
    if ceil_mode or any(pads):
        raise NotImplementedError("pooling with ceil_mode or pads")
    parts = [p for _, _, p in _windows(x, kernel_shape, strides or kernel_shape)]
    return reduce(np.stack(parts), axis=0)


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _gemm(a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    y = alpha * (a.T if transA else a) @ (b.T if transB else b)
    return y + beta * c if c is not None else y


def _reshape(x, shape, allowzero=0):
    shape = [x.shape[k] if s == 0 and not allowzero else s for k, s in enumerate(shape)]
    return x.reshape(shape)


def _pad(x, pads, value=None, mode=b"constant"):
    if mode != b"constant":
        raise NotImplementedError(f"Pad mode {mode}")
    n = x.ndim
    return np.pad(x, list(zip(pads[:n], pads[n:])), constant_values=0 if value is None else value)


def _batchnorm(x, scale, bias, mean, var, epsilon=1e-5, momentum=0.9):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    norm = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + epsilon)
    return norm * scale.reshape(shape) + bias.reshape(shape)


OPS = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Pow": np.power, "Sqrt": np.sqrt,
    "MatMul": np.matmul, "Relu": lambda x: np.maximum(x, 0), "Tanh": np.tanh, "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "Softmax": _softmax, "Gemm": _gemm, "BatchNormalization": _batchnorm, "Conv": _conv,
    "MaxPool": lambda x, **a: _pool(np.max, x, **a), "AveragePool": lambda x, **a: _pool(np.mean, x, **a),
    "ReduceMean": lambda x, axes=None, keepdims=1: x.mean(axis=tuple(axes), keepdims=bool(keepdims)),
    "Flatten": lambda x, axis=1: x.reshape(int(np.prod(x.shape[:axis])), -1),
    "Shape": lambda x: np.array(x.shape, np.int64), "Gather": lambda x, i, axis=0: np.take(x, i, axis=axis),
    "Unsqueeze": lambda x, axes: np.expand_dims(x, tuple(axes)), "Concat": lambda *xs, axis: np.concatenate(xs, axis),
    "Reshape": _reshape, "Pad": _pad,
}


def run(model, x):
    """The graph's output for input x, every value in float64 (integers stay integers)."""
    g = model.graph
    env = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    env = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in env.items()}
    env[g.input[0].name] = np.asarray(x, np.float64)
    for n in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Constant":
            v = numpy_helper.to_array(attrs["value"])
            env[n.output[0]] = v.astype(np.float64) if v.dtype.kind == "f" else v
            continue
        if n.op_type not in OPS:
            raise NotImplementedError(f"ONNX operator {n.op_type}")
        args = [env[i] if i else None for i in n.input]
        while args and args[-1] is None:
            args.pop()
        env[n.output[0]] = OPS[n.op_type](*args, **attrs)
    return env[g.output[0].name]
