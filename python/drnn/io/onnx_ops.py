"""The operators drnn's ONNX runner executes, and the RNN-operator conversion.

Design: every glue operator is a small numpy function ``op(ctx, inputs)``
where ``inputs`` is the node's input list (None for an omitted optional
input) and ``ctx`` carries the node's attributes and the model's default-
domain opset (for the operators whose signature changed between opsets:
Squeeze/Unsqueeze/ReduceSum/Split axes as attribute (<13) or input (>=13),
Slice (<10 attributes), Clip (<11 attributes), Softmax (<13 coerces to 2-D)).
It returns a list of outputs.  ``OPS`` maps op_type to the function;
anything not in ``OPS`` and not one of LSTM / GRU / RNN is refused at load
time by onnx.py.

The LSTM, GRU and RNN operators are not computed here: ``recurrent_layer``
turns an ONNX node's W, R, B, P and attributes into a drnn layer (PyTorch
gate order and state_dict names), and ``run_recurrent`` moves X,
sequence_lens, initial_h and initial_c between ONNX's layouts and the
kernels' batch-first one.  Initialisers are read-only; no function here
writes into an input.
"""
import contextlib
import threading

import numpy as np

from ..errors import FormatError, ShapeError, UnsupportedError

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


class Ctx:
    """What an operator needs besides its inputs."""

    __slots__ = ("attrs", "opset", "where")

    def __init__(self, attrs, opset, where):
        self.attrs = attrs
        self.opset = opset
        self.where = where

    def get(self, name, default=None):
        return self.attrs.get(name, default)


def _ints(v):
    return [int(i) for i in np.asarray(v).reshape(-1)]


def _axes(ctx, inputs, idx, attr="axes"):
    """Axes from an input (newer opsets) or an attribute (older ones)."""
    if len(inputs) > idx and inputs[idx] is not None:
        return _ints(inputs[idx])
    a = ctx.get(attr)
    return None if a is None else _ints(a)


MAX_ELEMENTS = 1 << 31     # a shape computed from a file larger than this is refused
_LIMIT = threading.local()  # a tighter limit while folding constants at load time


@contextlib.contextmanager
def size_limit(max_elements):
    """Within this block, ops refuse outputs of more than max_elements (this thread)."""
    old = getattr(_LIMIT, "n", None)
    _LIMIT.n = max_elements
    try:
        yield
    finally:
        _LIMIT.n = old


def _check_size(shape, where):
    n = 1
    for s in shape:
        n *= int(s)
    if n > (getattr(_LIMIT, "n", None) or MAX_ELEMENTS):
        raise ShapeError(f"{where}: refusing to allocate a tensor of shape {list(shape)} "
                         f"({n:,} elements)")


def _norm_axis(axis, rank, where):
    axis = int(axis)
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"{where}: axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


# ONNX TensorProto data types -> numpy
ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16,
               6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64,
               12: np.uint32, 13: np.uint64}


def np_dtype(code, where):
    dt = ONNX_DTYPES.get(int(code))
    if dt is None:
        raise UnsupportedError(f"{where}: tensor data type {code} is not supported "
                               f"(supported: float, double, half, integer and bool types)")
    return dt


def _binary(fn):
    def op(ctx, inputs):
        a, b = inputs[0], inputs[1]
        return [np.asarray(fn(a, b)).astype(np.result_type(a, b), copy=False)]
    return op


def _unary(fn):
    def op(ctx, inputs):
        x = inputs[0]
        return [np.asarray(fn(x)).astype(x.dtype, copy=False)]
    return op


def _div(a, b):
    if np.issubdtype(np.result_type(a, b), np.integer):
        # ONNX integer Div truncates toward zero
        with np.errstate(divide="ignore"):
            return np.trunc(np.true_divide(a, b)).astype(np.result_type(a, b))
    return np.divide(a, b)


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _softmax_nd(x, axis, log=False):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    s = np.sum(e, axis=axis, keepdims=True)
    if log:
        return (x - m) - np.log(s)
    return e / s


def _softmax(log):
    def op(ctx, inputs):
        x = inputs[0]
        if ctx.opset >= 13:
            axis = _norm_axis(ctx.get("axis", -1), x.ndim, ctx.where)
            return [_softmax_nd(x, axis, log).astype(x.dtype, copy=False)]
        axis = _norm_axis(ctx.get("axis", 1), x.ndim, ctx.where)
        shape = x.shape
        flat = x.reshape(int(np.prod(shape[:axis], dtype=np.int64)), -1)
        return [_softmax_nd(flat, 1, log).reshape(shape).astype(x.dtype, copy=False)]
    return op


# --------------------------------------------------------------------------
# glue operators
# --------------------------------------------------------------------------


def op_identity(ctx, inputs):
    return [inputs[0]]


def op_constant(ctx, inputs):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in ctx.attrs:
            v = ctx.attrs[key]
            if key == "value":
                return [v]
            dt = np.float32 if "float" in key else np.int64
            return [np.asarray(v, dtype=dt)]
    raise UnsupportedError(f"{ctx.where}: Constant without a value/value_float(s)/value_int(s) "
                           "attribute is not supported")


def op_constant_of_shape(ctx, inputs):
    value = ctx.get("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    shape = _ints(inputs[0])
    if any(s < 0 for s in shape):
        raise ShapeError(f"{ctx.where}: negative dimension in shape {shape}")
    _check_size(shape, ctx.where)
    return [np.full(shape, value.reshape(-1)[0], dtype=value.dtype)]


def op_cast(ctx, inputs):
    return [inputs[0].astype(np_dtype(ctx.get("to"), ctx.where))]


def op_cast_like(ctx, inputs):
    return [inputs[0].astype(inputs[1].dtype)]


def op_shape(ctx, inputs):
    shape = np.asarray(inputs[0].shape, dtype=np.int64)
    start, end = ctx.get("start", 0), ctx.get("end")
    return [shape[start:end] if end is not None else shape[start:]]


def op_size(ctx, inputs):
    return [np.asarray(inputs[0].size, dtype=np.int64)]


def op_transpose(ctx, inputs):
    perm = ctx.get("perm")
    return [np.transpose(inputs[0], None if perm is None else _ints(perm))]


def op_squeeze(ctx, inputs):
    x = inputs[0]
    axes = _axes(ctx, inputs, 1) if ctx.opset >= 13 else _axes(ctx, [], 1)
    if axes is None:
        return [np.squeeze(x)]
    axes = tuple(_norm_axis(a, x.ndim, ctx.where) for a in axes)
    for a in axes:
        if x.shape[a] != 1:
            raise ShapeError(f"{ctx.where}: cannot squeeze axis {a} of size {x.shape[a]} "
                             f"(shape {x.shape})")
    return [np.squeeze(x, axis=axes)]


def op_unsqueeze(ctx, inputs):
    x = inputs[0]
    axes = _axes(ctx, inputs, 1) if ctx.opset >= 13 else _axes(ctx, [], 1)
    if axes is None:
        raise FormatError(f"{ctx.where}: Unsqueeze needs axes")
    rank = x.ndim + len(axes)
    axes = sorted(_norm_axis(a, rank, ctx.where) for a in axes)
    out = x
    for a in axes:
        out = np.expand_dims(out, a)
    return [out]


def op_flatten(ctx, inputs):
    x = inputs[0]
    axis = int(ctx.get("axis", 1))
    if axis < 0:
        axis += x.ndim
    if not 0 <= axis <= x.ndim:
        raise ShapeError(f"{ctx.where}: axis {ctx.get('axis')} out of range for rank {x.ndim}")
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    return [x.reshape(outer, -1) if x.size or outer else x.reshape(outer, 0)]


def op_reshape(ctx, inputs):
    x = inputs[0]
    if ctx.opset < 5:
        shape = _ints(ctx.get("shape"))
    else:
        shape = _ints(inputs[1])
    allowzero = int(ctx.get("allowzero", 0))
    out = []
    for i, s in enumerate(shape):
        if s == 0 and not allowzero:
            if i >= x.ndim:
                raise ShapeError(f"{ctx.where}: shape {shape} copies dimension {i} of a "
                                 f"rank-{x.ndim} input")
            out.append(x.shape[i])
        else:
            out.append(s)
    try:
        return [x.reshape(out)]
    except ValueError as e:
        raise ShapeError(f"{ctx.where}: cannot reshape {x.shape} to {shape}: {e}") from None


def op_expand(ctx, inputs):
    x, shape = inputs[0], _ints(inputs[1])
    try:
        target = np.broadcast_shapes(x.shape, tuple(shape))
    except ValueError:
        raise ShapeError(f"{ctx.where}: cannot expand {x.shape} to {shape}") from None
    _check_size(target, ctx.where)
    return [np.broadcast_to(x, target).copy()]


def op_tile(ctx, inputs):
    reps = _ints(inputs[1])
    _check_size(list(inputs[0].shape) + reps, ctx.where)
    return [np.tile(inputs[0], reps)]


def op_concat(ctx, inputs):
    xs = [x for x in inputs if x is not None]
    axis = _norm_axis(ctx.get("axis", 0), xs[0].ndim, ctx.where)
    try:
        return [np.concatenate(xs, axis=axis)]
    except ValueError as e:
        raise ShapeError(f"{ctx.where}: cannot concatenate shapes {[x.shape for x in xs]} "
                         f"on axis {axis}: {e}") from None


def op_split(ctx, inputs):
    x = inputs[0]
    axis = _norm_axis(ctx.get("axis", 0), x.ndim, ctx.where)
    split = _axes(ctx, inputs, 1, "split") if ctx.opset >= 13 else _axes(ctx, [], 1, "split")
    n_out = ctx.get("_n_outputs")
    if split is None:
        n = int(ctx.get("num_outputs", n_out))
        size = -(-x.shape[axis] // n)
        split = [min(size, x.shape[axis] - k * size) for k in range(n)]
    if sum(split) != x.shape[axis]:
        raise ShapeError(f"{ctx.where}: split {split} does not add up to {x.shape[axis]}")
    idx = np.cumsum(split)[:-1]
    return list(np.split(x, idx, axis=axis))


def op_slice(ctx, inputs):
    x = inputs[0]
    if ctx.opset < 10:
        starts, ends = _ints(ctx.get("starts")), _ints(ctx.get("ends"))
        axes = ctx.get("axes")
        steps = None
    else:
        starts, ends = _ints(inputs[1]), _ints(inputs[2])
        axes = inputs[3] if len(inputs) > 3 else None
        steps = inputs[4] if len(inputs) > 4 else None
    axes = list(range(len(starts))) if axes is None else _ints(axes)
    steps = [1] * len(starts) if steps is None else _ints(steps)
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = _norm_axis(a, x.ndim, ctx.where)
        if st == 0:
            raise ShapeError(f"{ctx.where}: slice step 0")
        n = x.shape[a]
        # ONNX clamps; huge sentinels (INT64_MAX / MIN) must not overflow Python slices
        s = max(-n - 1, min(n, s))
        e = max(-n - 1, min(n, e))
        if st < 0:
            s = n - 1 if s >= n else s
            e = None if e < -n else e
        else:
            s = 0 if s < -n else s
        sl[a] = slice(s, e, st)
    return [x[tuple(sl)]]


def op_gather(ctx, inputs):
    x, idx = inputs[0], np.asarray(inputs[1])
    axis = _norm_axis(ctx.get("axis", 0), x.ndim, ctx.where)
    n = x.shape[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        bad = idx[(idx < -n) | (idx >= n)].reshape(-1)[0]
        raise ShapeError(f"{ctx.where}: index {int(bad)} is outside [-{n}, {n}) "
                         f"(axis {axis} of shape {x.shape})")
    return [np.take(x, idx.astype(np.int64), axis=axis)]


def op_matmul(ctx, inputs):
    a, b = inputs
    try:
        return [np.matmul(a, b)]
    except ValueError:
        raise ShapeError(f"{ctx.where}: cannot multiply {a.shape} by {b.shape}") from None


def op_gemm(ctx, inputs):
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if ctx.get("transA", 0):
        a = a.T
    if ctx.get("transB", 0):
        b = b.T
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ShapeError(f"{ctx.where}: cannot multiply {a.shape} by {b.shape}")
    y = a @ b
    alpha, beta = ctx.get("alpha", 1.0), ctx.get("beta", 1.0)
    if alpha != 1.0:
        y = y * np.asarray(alpha, y.dtype)
    if c is not None:
        y = y + (c if beta == 1.0 else c * np.asarray(beta, c.dtype))
    return [y.astype(np.result_type(inputs[0], inputs[1]), copy=False)]


def op_clip(ctx, inputs):
    x = inputs[0]
    if ctx.opset < 11:
        lo, hi = ctx.get("min"), ctx.get("max")
    else:
        lo = inputs[1] if len(inputs) > 1 else None
        hi = inputs[2] if len(inputs) > 2 else None
    out = x
    if lo is not None:
        out = np.maximum(out, np.asarray(lo, x.dtype))
    if hi is not None:
        out = np.minimum(out, np.asarray(hi, x.dtype))
    return [out]


def op_where(ctx, inputs):
    return [np.where(inputs[0], inputs[1], inputs[2])]


def op_range(ctx, inputs):
    start, limit, delta = (np.asarray(v).reshape(()) for v in inputs)
    if delta == 0:
        raise ShapeError(f"{ctx.where}: Range with delta 0")
    _check_size([max(0, int(np.ceil((limit - start) / delta)))], ctx.where)
    return [np.arange(start, limit, delta, dtype=np.result_type(start, limit, delta))]


def _reduce(fn):
    def op(ctx, inputs):
        x = inputs[0]
        new_style = ctx.opset >= 18 or (fn is np.sum and ctx.opset >= 13)
        axes = _axes(ctx, inputs, 1) if new_style else _axes(ctx, [], 1)
        keep = bool(ctx.get("keepdims", 1))
        if not axes:
            if ctx.get("noop_with_empty_axes", 0):
                return [x]
            axes = None
        else:
            axes = tuple(_norm_axis(a, x.ndim, ctx.where) for a in axes)
        return [np.asarray(fn(x, axis=axes, keepdims=keep)).astype(x.dtype, copy=False)]
    return op


def _arg(fn):
    def op(ctx, inputs):
        x = inputs[0]
        axis = _norm_axis(ctx.get("axis", 0), x.ndim, ctx.where)
        if ctx.get("select_last_index", 0):
            r = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
        else:
            r = fn(x, axis=axis)
        r = r.astype(np.int64)
        return [np.expand_dims(r, axis) if ctx.get("keepdims", 1) else r]
    return op


def _variadic(fn):
    def op(ctx, inputs):
        out = inputs[0]
        for v in inputs[1:]:
            out = fn(out, v)
        return [out]
    return op


def _act(fn, **defaults):
    def op(ctx, inputs):
        x = inputs[0]
        kw = {k: np.asarray(ctx.get(k, v), x.dtype) for k, v in defaults.items()}
        with np.errstate(over="ignore"):
            return [np.asarray(fn(x, **kw)).astype(x.dtype, copy=False)]
    return op


def op_dropout(ctx, inputs):
    x = inputs[0]
    return [x, np.ones(x.shape, dtype=np.bool_)]


def op_pow(ctx, inputs):
    return [np.power(inputs[0], inputs[1]).astype(inputs[0].dtype, copy=False)]


OPS = {
    "Identity": op_identity,
    "Constant": op_constant,
    "ConstantOfShape": op_constant_of_shape,
    "Cast": op_cast,
    "CastLike": op_cast_like,
    "Shape": op_shape,
    "Size": op_size,
    "Transpose": op_transpose,
    "Squeeze": op_squeeze,
    "Unsqueeze": op_unsqueeze,
    "Flatten": op_flatten,
    "Reshape": op_reshape,
    "Expand": op_expand,
    "Tile": op_tile,
    "Concat": op_concat,
    "Split": op_split,
    "Slice": op_slice,
    "Gather": op_gather,
    "MatMul": op_matmul,
    "Gemm": op_gemm,
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(_div),
    "Pow": op_pow,
    "Max": _variadic(np.maximum),
    "Min": _variadic(np.minimum),
    "Sum": _variadic(np.add),
    "Equal": lambda ctx, i: [np.equal(i[0], i[1])],
    "Less": lambda ctx, i: [np.less(i[0], i[1])],
    "Greater": lambda ctx, i: [np.greater(i[0], i[1])],
    "LessOrEqual": lambda ctx, i: [np.less_equal(i[0], i[1])],
    "GreaterOrEqual": lambda ctx, i: [np.greater_equal(i[0], i[1])],
    "Not": lambda ctx, i: [np.logical_not(i[0])],
    "And": lambda ctx, i: [np.logical_and(i[0], i[1])],
    "Or": lambda ctx, i: [np.logical_or(i[0], i[1])],
    "Where": op_where,
    "Range": op_range,
    "Clip": op_clip,
    "Neg": _unary(np.negative),
    "Abs": _unary(np.abs),
    "Exp": _unary(np.exp),
    "Log": _unary(np.log),
    "Sqrt": _unary(np.sqrt),
    "Reciprocal": _unary(np.reciprocal),
    "Sign": _unary(np.sign),
    "Floor": _unary(np.floor),
    "Ceil": _unary(np.ceil),
    "Relu": _unary(lambda x: np.maximum(x, 0)),
    "Tanh": _unary(np.tanh),
    "Sigmoid": _unary(_sigmoid),
    "LeakyRelu": _act(lambda x, alpha: np.where(x >= 0, x, alpha * x), alpha=0.01),
    "Elu": _act(lambda x, alpha: np.where(x > 0, x, alpha * (np.exp(np.minimum(x, 0)) - 1)),
                alpha=1.0),
    "Selu": _act(lambda x, alpha, gamma: gamma * np.where(
        x > 0, x, alpha * (np.exp(np.minimum(x, 0)) - 1)),
        alpha=1.67326319217681884765625, gamma=1.05070102214813232421875),
    "HardSigmoid": _act(lambda x, alpha, beta: np.clip(alpha * x + beta, 0, 1),
                        alpha=0.2, beta=0.5),
    "Softplus": _unary(lambda x: np.logaddexp(0, x)),
    "Softsign": _unary(lambda x: x / (1 + np.abs(x))),
    "Softmax": _softmax(False),
    "LogSoftmax": _softmax(True),
    "ReduceSum": _reduce(np.sum),
    "ReduceMean": _reduce(np.mean),
    "ReduceMax": _reduce(np.max),
    "ReduceMin": _reduce(np.min),
    "ArgMax": _arg(np.argmax),
    "ArgMin": _arg(np.argmin),
    "Dropout": op_dropout,
}

# --------------------------------------------------------------------------
# LSTM / GRU / RNN -> drnn layers
# --------------------------------------------------------------------------

RECURRENT_OPS = ("LSTM", "GRU", "RNN")

# ONNX gate blocks -> PyTorch gate blocks: torch block k is ONNX block PERM[k]
GATE_PERM = {"LSTM": [0, 2, 3, 1],     # i o f c -> i f g o
             "GRU": [1, 0, 2],         # z r h   -> r z n
             "RNN": [0]}
N_ACTS = {"LSTM": 3, "GRU": 2, "RNN": 1}
DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"],
                "RNN": ["Tanh"]}
# ONNX activation name (lower case) -> (drnn name, uses alpha, uses beta)
ONNX_ACTIVATIONS = {
    "sigmoid": ("sigmoid", False, False), "tanh": ("tanh", False, False),
    "relu": ("relu", False, False), "hardsigmoid": ("hard_sigmoid", True, True),
    "affine": ("affine", True, True), "leakyrelu": ("leaky_relu", True, False),
    "thresholdedrelu": ("thresholded_relu", True, False),
    "scaledtanh": ("scaled_tanh", True, True), "elu": ("elu", True, False),
    "softsign": ("softsign", False, False), "softplus": ("softplus", False, False),
}
# input slots of the operators
SLOT = {"X": 0, "W": 1, "R": 2, "B": 3, "sequence_lens": 4, "initial_h": 5,
        "initial_c": 6, "P": 7}


def _blocks(a, perm):
    """Reorder the gate blocks on axis 0 of a (G*H, ...) array."""
    parts = np.split(np.asarray(a), len(perm), axis=0)
    return np.concatenate([parts[k] for k in perm], axis=0)


def parse_activations(op, attrs, D, where, notes):
    """ONNX activations/alpha/beta -> drnn specs, n per direction, forward's first.

    alpha and beta are consumed in list order by the functions that take them
    (as onnxruntime does); a function the lists run out for gets the ONNX
    operator's default.
    """
    n = N_ACTS[op]
    names = attrs.get("activations")
    if names is None:
        names = DEFAULT_ACTS[op] * D
        notes["defaulted"].append(f"{where}: activations {DEFAULT_ACTS[op]} (ONNX default)")
    else:
        names = [s.decode() if isinstance(s, bytes) else str(s) for s in names]
        if len(names) == n and D == 2:
            names = names * 2
        if len(names) != n * D:
            raise FormatError(f"{where}: {op} with {D} direction(s) needs {n * D} activations, "
                              f"got {len(names)} ({names})")
    alphas = list(attrs.get("activation_alpha") or [])
    betas = list(attrs.get("activation_beta") or [])
    specs = []
    for name in names:
        entry = ONNX_ACTIVATIONS.get(name.lower())
        if entry is None:
            raise UnsupportedError(
                f"{where}: activation {name!r} is not supported; supported: "
                "Sigmoid, Tanh, Relu, HardSigmoid, Affine, LeakyRelu, ThresholdedRelu, "
                "ScaledTanh, Elu, Softsign, Softplus")
        dname, ua, ub = entry
        alpha = beta = None
        if ua and alphas:
            alpha = float(alphas.pop(0))
        if ub and betas:
            beta = float(betas.pop(0))
        if (ua and alpha is None) or (ub and beta is None):
            notes["defaulted"].append(f"{where}: {name} alpha/beta (ONNX default)")
        specs.append((dname, alpha, beta))
    return specs


def recurrent_layer(op, attrs, W, R, B, P, where, notes):
    """Build the drnn layer for one ONNX LSTM/GRU/RNN node from its weights."""
    from .. import layers as L

    direction = attrs.get("direction", "forward")
    if isinstance(direction, bytes):
        direction = direction.decode()
    if direction not in ("forward", "reverse", "bidirectional"):
        raise FormatError(f"{where}: direction must be forward, reverse or bidirectional, "
                          f"got {direction!r}")
    D = 2 if direction == "bidirectional" else 1
    G = len(GATE_PERM[op])
    W = np.asarray(W)
    R = np.asarray(R)
    if W.ndim != 3 or R.ndim != 3:
        raise ShapeError(f"{where}: W and R must be 3-D [D, G*H, in] and [D, G*H, H], got "
                         f"{W.shape} and {R.shape}")
    H = R.shape[2]
    if "hidden_size" in attrs:
        if int(attrs["hidden_size"]) != H:
            raise ShapeError(f"{where}: hidden_size={attrs['hidden_size']} but R has shape "
                             f"{R.shape} (expected [{D}, {G}*hidden_size, hidden_size])")
    else:
        notes["inferred"].append(f"{where}: hidden_size={H} from R {R.shape}")
    F = W.shape[2]
    if W.shape[:2] != (D, G * H) or R.shape != (D, G * H, H):
        raise ShapeError(f"{where}: {op} ({direction}, hidden_size {H}) expects W [{D}, {G * H}, "
                         f"in] and R [{D}, {G * H}, {H}], got W {W.shape} and R {R.shape}")
    if B is not None and np.shape(B) != (D, 2 * G * H):
        raise ShapeError(f"{where}: B must have shape [{D}, {2 * G * H}], got {np.shape(B)}")
    if P is not None:
        if op != "LSTM":
            raise FormatError(f"{where}: P (peepholes) is an LSTM input")
        if np.shape(P) != (D, 3 * H):
            raise ShapeError(f"{where}: P must have shape [{D}, {3 * H}], got {np.shape(P)}")
    perm = GATE_PERM[op]
    weights = {}
    for d in range(D):
        sfx = "_l0" + ("_reverse" if d else "")
        weights["weight_ih" + sfx] = _blocks(W[d], perm)
        weights["weight_hh" + sfx] = _blocks(R[d], perm)
        if B is not None:
            b = np.asarray(B[d])
            weights["bias_ih" + sfx] = _blocks(b[:G * H], perm)
            weights["bias_hh" + sfx] = _blocks(b[G * H:], perm)
        if P is not None:
            p = np.asarray(P[d])
            weights["weight_peep" + sfx] = np.concatenate([p[:H], p[2 * H:], p[H:2 * H]])
    kw = dict(bidirectional=D == 2, reverse=direction == "reverse", bias=B is not None,
              activations=parse_activations(op, attrs, D, where, notes), weights=weights)
    clip = attrs.get("clip")
    if clip is not None:
        clip = float(clip)
        if not clip > 0:
            raise FormatError(f"{where}: clip must be > 0, got {clip}")
        kw["clip"] = clip
    if op == "LSTM":
        kw["peepholes"] = P is not None
        kw["input_forget"] = bool(attrs.get("input_forget", 0))
        cls = L.LSTM
    elif op == "GRU":
        kw["linear_before_reset"] = bool(attrs.get("linear_before_reset", 0))
        cls = L.GRU
    else:
        cls = L.RNN
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise FormatError(f"{where}: layout must be 0 or 1, got {layout}")
    try:
        return cls(F, H, 1, **kw)
    except (ShapeError, UnsupportedError) as e:
        raise type(e)(f"{where}: {e}") from None


def run_recurrent(layer, op, attrs, inputs, n_outputs, where, num_threads):
    """Run a drnn layer on an ONNX node's runtime inputs; returns [Y, Y_h(, Y_c)]."""
    layout = int(attrs.get("layout", 0))
    X = inputs[0]
    if X is None or X.ndim != 3:
        raise ShapeError(f"{where}: X must be 3-D, got {None if X is None else X.shape}")
    x = X if layout == 1 else X.transpose(1, 0, 2)
    x = np.ascontiguousarray(x, dtype=np.float32)
    Bn, T, F = x.shape
    if F != layer.input_size:
        raise ShapeError(f"{where}: X has {F} features, W expects {layer.input_size} "
                         f"(X shape {X.shape}, layout {layout})")
    D, H = layer.num_directions, layer.hidden_size

    def get(name):
        i = SLOT[name]
        return inputs[i] if len(inputs) > i else None

    lengths = get("sequence_lens")
    if lengths is not None:
        lengths = np.asarray(lengths).reshape(-1)
        if lengths.shape != (Bn,):
            raise ShapeError(f"{where}: sequence_lens must have shape [{Bn}], got "
                             f"{np.shape(get('sequence_lens'))}")
        if lengths.size and (lengths.min() < 0 or lengths.max() > T):
            raise ShapeError(f"{where}: sequence_lens must be in [0, {T}], got "
                             f"{lengths.tolist()}")
        lengths = np.ascontiguousarray(lengths, dtype=np.int32)

    def state(name):
        s = get(name)
        if s is None:
            return None
        s = np.asarray(s)
        if layout == 1:
            s = s.transpose(1, 0, 2) if s.ndim == 3 else s
        if s.shape != (D, Bn, H):
            raise ShapeError(f"{where}: {name} must have shape "
                             f"{[D, Bn, H] if layout == 0 else [Bn, D, H]}, got {get(name).shape}")
        return np.ascontiguousarray(s, dtype=np.float32)

    h0, c0 = state("initial_h"), None
    if op == "LSTM":
        c0 = state("initial_c")
        if (h0 is None) != (c0 is None):
            zeros = np.zeros((D, Bn, H), np.float32)
            h0 = zeros if h0 is None else h0
            c0 = zeros if c0 is None else c0
    y, hn, cn = layer._stack.forward(x, lengths, h0, c0, True, num_threads)
    y = np.asarray(y).reshape(Bn, T, D, H)
    if layout == 0:
        Y = y.transpose(1, 2, 0, 3)                  # [T, D, N, H]
        states = [hn, cn]
    else:
        Y = y                                         # [N, T, D, H]
        states = [None if s is None else np.asarray(s).transpose(1, 0, 2) for s in (hn, cn)]
    out = [np.ascontiguousarray(Y), np.ascontiguousarray(states[0])]
    if op == "LSTM":
        out.append(np.ascontiguousarray(states[1]))
    dtype = X.dtype if X.dtype.kind == "f" else np.float32
    return [o.astype(dtype, copy=False) for o in out[:max(n_outputs, 1)]]
