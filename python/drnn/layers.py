"""drnn's layers: Embedding, RNN, LSTM, GRU and Dense.

Each layer owns its weights (float32, C-contiguous, read-only numpy arrays
under PyTorch's state_dict names and in PyTorch's gate order) and knows
three things about itself:

* ``config()``   -- a JSON-able dict that, with the weights, rebuilds it
                    (``Layer.from_config``); this is what drnn's file format
                    and pickling store;
* ``params()``   -- its weights by name;
* ``_forward()`` -- how it transforms a padded batch, called by DRNN.

The recurrent layers validate everything once, at construction, and hand
the C kernels a ``_core.RecurrentStack``; nothing is re-checked per call but
the input.  Loaders for other frameworks convert to PyTorch's layout before
building a layer, so there is one source of truth for the math.
"""
import numpy as np

from . import _core
from .errors import ShapeError, UnsupportedError

__all__ = ["Layer", "Embedding", "Dense", "RNN", "LSTM", "GRU", "Recurrent"]

# Activation name -> (default alpha, default beta); the kernels know these names.
ACTIVATIONS = {name: (a, b) for name, (_, a, b) in _core.ACTIVATIONS.items()}


def _activation_spec(item, where):
    """Normalise an activation given as a name or (name, alpha[, beta])."""
    if isinstance(item, str):
        name, alpha, beta = item, None, None
    elif isinstance(item, (tuple, list)) and 1 <= len(item) <= 3 and isinstance(item[0], str):
        name, alpha, beta = (list(item) + [None, None])[:3]
    elif isinstance(item, dict) and "name" in item:
        name, alpha, beta = item["name"], item.get("alpha"), item.get("beta")
    else:
        raise UnsupportedError(f"{where}: an activation is a name or (name, alpha, beta), got {item!r}")
    name = name.lower()
    if name not in ACTIVATIONS:
        raise UnsupportedError(
            f"{where}: unknown activation {name!r}; supported: {', '.join(sorted(ACTIVATIONS))}")
    da, db = ACTIVATIONS[name]
    return (name, float(da if alpha is None else alpha), float(db if beta is None else beta))


def _as_weight(value, shape, where):
    """A weight as a read-only float32 C-contiguous array of exactly `shape`."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise ShapeError(f"{where}: expected a float array of shape {shape}, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ShapeError(f"{where}: expected shape {tuple(shape)}, got {arr.shape}")
    arr = np.array(arr, dtype=np.float32, order="C", copy=True)
    arr.setflags(write=False)
    return arr


def _uniform(rng, shape, bound):
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


class Layer:
    """Base class.  Subclasses set ``kind`` and implement the methods below."""

    kind = "layer"

    def config(self):
        raise NotImplementedError

    def params(self):
        raise NotImplementedError

    @property
    def input_size(self):
        raise NotImplementedError

    @property
    def output_size(self):
        raise NotImplementedError

    @property
    def num_parameters(self):
        return int(sum(p.size for p in self.params().values()))

    @staticmethod
    def from_config(config, params):
        """Rebuild a layer from ``config()`` and ``params()`` output."""
        kind = config.get("type")
        cls = _LAYER_TYPES.get(kind)
        if cls is None:
            raise UnsupportedError(f"unknown layer type {kind!r}; expected one of {sorted(_LAYER_TYPES)}")
        kwargs = {k: v for k, v in config.items() if k != "type"}
        return cls._from_params(kwargs, params)

    @classmethod
    def _from_params(cls, kwargs, params):
        return cls(**kwargs, weights=params)

    def __reduce__(self):
        # Pickles as config + raw weights: no re-validation surprises, no C state.
        return (Layer.from_config, (self.config(), self.params()))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{self.kind}({args})"


class Embedding(Layer):
    """Token ids (batch, time) -> vectors (batch, time, embedding_dim)."""

    kind = "Embedding"

    def __init__(self, num_embeddings, embedding_dim, *, weight=None, weights=None, seed=None):
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        if self.num_embeddings < 1 or self.embedding_dim < 1:
            raise ShapeError("Embedding: num_embeddings and embedding_dim must be >= 1")
        if weights is not None:
            unknown = set(weights) - {"weight"}
            if unknown:
                raise ShapeError(f"Embedding: unexpected weights {sorted(unknown)}; expected 'weight'")
            weight = weights.get("weight")
        shape = (self.num_embeddings, self.embedding_dim)
        if weight is None:
            weight = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        self.weight = _as_weight(weight, shape, "Embedding weight")

    @property
    def input_size(self):
        return None   # token ids, not features

    @property
    def output_size(self):
        return self.embedding_dim

    def config(self):
        return {"type": self.kind, "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim}

    def params(self):
        return {"weight": self.weight}

    def _forward(self, ids, lengths, state, num_threads=None):
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            bad = ids[(ids < 0) | (ids >= self.num_embeddings)].flat[0]
            raise ShapeError(f"Embedding: token id {int(bad)} is outside [0, {self.num_embeddings})")
        return self.weight[ids], None


_DENSE_ACTIVATIONS = {"identity": "linear", "linear": "linear", "relu": "relu",
                      "tanh": "tanh", "sigmoid": "sigmoid", "softmax": "linear",
                      "log_softmax": "linear"}
# Row-wise heads after the activation, as the C dense kernel numbers them.
_SOFTMAX_MODES = {"softmax": 1, "log_softmax": 2}


class Dense(Layer):
    """y = activation(x W^T + b) over the last axis, W of shape (out, in) like nn.Linear.

    activation: identity (alias linear), relu, tanh, sigmoid, softmax or
    log_softmax (the last two over the last axis).  bias=None draws a random bias when weight is None too;
    bias=False means no bias.
    """

    kind = "Dense"

    def __init__(self, in_features, out_features, *, activation="identity", weight=None,
                 bias=None, use_bias=True, weights=None, seed=None):
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        if self.in_features < 1 or self.out_features < 1:
            raise ShapeError("Dense: in_features and out_features must be >= 1")
        activation = str(activation).lower()
        if activation not in _DENSE_ACTIVATIONS:
            raise UnsupportedError(f"Dense: unknown activation {activation!r}; expected one of "
                                   f"{', '.join(_DENSE_ACTIVATIONS)}")
        self.activation = "identity" if activation == "linear" else activation
        if bias is False:
            use_bias, bias = False, None
        if weights is not None:
            unknown = set(weights) - {"weight", "bias"}
            if unknown:
                raise ShapeError(f"Dense: unexpected weights {sorted(unknown)}; expected weight, bias")
            if "weight" not in weights:
                raise ShapeError(f"Dense: missing weight of shape ({self.out_features}, {self.in_features})")
            weight, bias = weights["weight"], weights.get("bias")
            use_bias = bias is not None
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        if weight is None:
            weight = _uniform(rng, (self.out_features, self.in_features), bound)
            if use_bias and bias is None:
                bias = _uniform(rng, (self.out_features,), bound)
        elif use_bias and bias is None:
            bias = np.zeros(self.out_features, np.float32)
        self.weight = _as_weight(weight, (self.out_features, self.in_features), "Dense weight")
        self.bias = _as_weight(bias, (self.out_features,), "Dense bias") if use_bias else None
        self._kernel = _core.DenseKernel(self.weight, self.bias)

    @property
    def input_size(self):
        return self.in_features

    @property
    def output_size(self):
        return self.out_features

    def config(self):
        return {"type": self.kind, "in_features": self.in_features,
                "out_features": self.out_features, "activation": self.activation,
                "use_bias": self.bias is not None}

    def params(self):
        p = {"weight": self.weight}
        if self.bias is not None:
            p["bias"] = self.bias
        return p

    def _forward(self, x, lengths, state, num_threads=None):
        rows = np.ascontiguousarray(x.reshape(-1, self.in_features), dtype=np.float32)
        y = self._kernel.forward(rows, (_DENSE_ACTIVATIONS[self.activation], 0.0, 0.0),
                                 softmax=_SOFTMAX_MODES.get(self.activation, 0),
                                 num_threads=num_threads)
        return y.reshape(x.shape[:-1] + (self.out_features,)), None


class Recurrent(Layer):
    """A stack of num_layers recurrent layers of one cell type (RNN, LSTM, GRU).

    Weights use PyTorch's state_dict names without a module prefix --
    ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``,
    ``weight_hr_l{k}`` (LSTM proj_size) and ``weight_peep_l{k}`` (LSTM
    peepholes, (3H,) in order i, f, o), with suffix ``_reverse`` for the
    backward direction -- and PyTorch's gate order.  weights=None draws them
    uniformly from +-1/sqrt(hidden_size) with ``seed``, as PyTorch initialises.

    Output: (batch, time, D*H_out) with D = 2 if bidirectional ([forward,
    backward] concatenated) and H_out = proj_size or hidden_size; with
    return_sequences=False, (batch, D*H_out): the last layer's final hidden
    state of each direction (each sequence's own last step).  A
    bidirectional layer's ``merge_mode`` (Keras' Bidirectional) may combine
    the two directions of its last layer instead: "concat" (default), "sum",
    "ave" or "mul" (elementwise product), which give H_out features.
    """

    cell = None          # "rnn" | "lstm" | "gru"
    gates = None
    n_activations = None
    default_activations = None

    def __init__(self, input_size, hidden_size, num_layers=1, *, bidirectional=False,
                 bias=True, reverse=False, return_sequences=True, activations=None,
                 clip=None, proj_size=0, peepholes=False, input_forget=False,
                 linear_before_reset=True, merge_mode="concat", weights=None, seed=None):
        self.input_size_ = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bidirectional = bool(bidirectional)
        self.bias = bool(bias)
        self.reverse = bool(reverse)
        self.return_sequences = bool(return_sequences)
        self.proj_size = int(proj_size)
        self.peepholes = bool(peepholes)
        self.input_forget = bool(input_forget)
        self.linear_before_reset = bool(linear_before_reset)
        self.clip = None if clip is None else float(clip)
        name = self.kind
        if self.input_size_ < 1 or self.hidden_size < 1 or self.num_layers < 1:
            raise ShapeError(f"{name}: input_size, hidden_size and num_layers must be >= 1, got "
                             f"{self.input_size_}, {self.hidden_size}, {self.num_layers}")
        # The kernels' limits (csrc/sequence.c drnn_check_desc), checked before
        # anything is allocated or looped over.
        if self.num_layers > 4096 or self.hidden_size > 1 << 20 or self.input_size_ > 1 << 24:
            raise ShapeError(f"{name}: at most 4096 layers, hidden_size 2**20 and input_size "
                             f"2**24; got {self.num_layers}, {self.hidden_size}, "
                             f"{self.input_size_}")
        if self.bidirectional and self.reverse:
            raise UnsupportedError(f"{name}: reverse=True is for a unidirectional layer")
        self.merge_mode = "concat" if merge_mode is None else str(merge_mode)
        if self.merge_mode not in _MERGE_MODES:
            raise UnsupportedError(f"{name}: merge_mode must be one of {', '.join(_MERGE_MODES)}, "
                                   f"got {merge_mode!r}")
        if self.merge_mode != "concat" and not self.bidirectional:
            raise UnsupportedError(f"{name}: merge_mode={self.merge_mode!r} needs "
                                   "bidirectional=True")
        if self.proj_size < 0 or self.proj_size >= self.hidden_size and self.proj_size:
            raise ShapeError(f"{name}: proj_size must be in [0, hidden_size), got {self.proj_size}")
        if self.clip is not None and not self.clip > 0:
            raise ShapeError(f"{name}: clip must be > 0 or None, got {clip!r}")
        self.activations = self._parse_activations(activations)

        D = self.num_directions
        H, G = self.hidden_size, self.gates * self.hidden_size
        Hout = self.hidden_out
        expected = {}
        for layer in range(self.num_layers):
            in_l = self.input_size_ if layer == 0 else D * Hout
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                expected["weight_ih" + sfx] = (G, in_l)
                expected["weight_hh" + sfx] = (G, Hout)
                if self.bias:
                    expected["bias_ih" + sfx] = (G,)
                    expected["bias_hh" + sfx] = (G,)
                if self.proj_size:
                    expected["weight_hr" + sfx] = (self.proj_size, H)
                if self.peepholes:
                    expected["weight_peep" + sfx] = (3 * H,)
        if weights is None:
            rng = np.random.default_rng(seed)
            bound = 1.0 / np.sqrt(H)
            weights = {k: _uniform(rng, s, bound) for k, s in expected.items()}
        else:
            weights = dict(weights)
            missing = [k for k in expected if k not in weights]
            if missing:
                raise ShapeError(f"{name}: missing weights {missing} (expected "
                                 + ", ".join(f"{k} {expected[k]}" for k in missing) + ")")
            unknown = sorted(set(weights) - set(expected))
            if unknown:
                raise ShapeError(f"{name}: unexpected weights {unknown} for this configuration "
                                 f"(bias={self.bias}, proj_size={self.proj_size}, "
                                 f"peepholes={self.peepholes}, num_layers={self.num_layers}, "
                                 f"bidirectional={self.bidirectional})")
        self.weights = {k: _as_weight(weights[k], s, f"{name} {k}") for k, s in expected.items()}

        per_direction = []
        for layer in range(self.num_layers):
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                per_direction.append({
                    "w_ih": self.weights["weight_ih" + sfx],
                    "w_hh": self.weights["weight_hh" + sfx],
                    "b_ih": self.weights.get("bias_ih" + sfx),
                    "b_hh": self.weights.get("bias_hh" + sfx),
                    "w_hr": self.weights.get("weight_hr" + sfx),
                    "peep": self.weights.get("weight_peep" + sfx),
                })
        padded = [list(a) + [("linear", 0.0, 0.0)] * (3 - len(a)) for a in self.activations]
        self._stack = _core.RecurrentStack(
            self.cell, self.input_size_, H, self.num_layers, D, self.proj_size, self.reverse,
            self.linear_before_reset, self.input_forget, self.clip or 0.0, padded, per_direction)

    # -- description -------------------------------------------------------
    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def hidden_out(self):
        return self.proj_size or self.hidden_size

    @property
    def input_size(self):
        return self.input_size_

    @property
    def output_size(self):
        if self.merge_mode != "concat":
            return self.hidden_out
        return self.num_directions * self.hidden_out

    @property
    def state_shapes(self):
        """Shapes of this layer's state entries for a batch of B: [(h), (c)]."""
        LD = self.num_layers * self.num_directions
        shapes = [(LD, self.hidden_out)]
        if self.cell == "lstm":
            shapes.append((LD, self.hidden_size))
        return shapes

    def _parse_activations(self, activations):
        n = self.n_activations
        if activations is None:
            activations = self.default_activations
        activations = list(activations)
        D = self.num_directions
        if len(activations) == n:
            activations = activations * D
        elif len(activations) != n * D:
            raise UnsupportedError(
                f"{self.kind}: expected {n} activations (or {n * D}, per direction), "
                f"got {len(activations)}")
        specs = [_activation_spec(a, self.kind) for a in activations]
        return [specs[d * n:(d + 1) * n] for d in range(D)]

    def config(self):
        cfg = {"type": self.kind, "input_size": self.input_size_,
               "hidden_size": self.hidden_size, "num_layers": self.num_layers,
               "bidirectional": self.bidirectional, "bias": self.bias,
               "reverse": self.reverse, "return_sequences": self.return_sequences,
               "activations": [list(a) for d in self.activations for a in d],
               "clip": self.clip}
        if self.cell == "lstm":
            cfg.update(proj_size=self.proj_size, peepholes=self.peepholes,
                       input_forget=self.input_forget)
        if self.cell == "gru":
            cfg["linear_before_reset"] = self.linear_before_reset
        if self.merge_mode != "concat":
            cfg["merge_mode"] = self.merge_mode
        return cfg

    def params(self):
        return dict(self.weights)

    def __repr__(self):
        cfg = self.config()
        defaults = {"bidirectional": False, "bias": True, "reverse": False,
                    "return_sequences": True, "clip": None, "proj_size": 0, "peepholes": False,
                    "input_forget": False, "linear_before_reset": True, "merge_mode": "concat"}
        default_acts = [list(a) for d in self._parse_activations(None) for a in d] \
            if self.default_activations else None
        args = [f"{cfg['input_size']}, {cfg['hidden_size']}"]
        if self.num_layers != 1:
            args.append(f"num_layers={self.num_layers}")
        args += [f"{k}={v!r}" for k, v in cfg.items() if k in defaults and v != defaults[k]]
        if cfg["activations"] != default_acts and not (
                self.cell == "rnn" and cfg["activations"] in ([["tanh", 0.0, 0.0]] * self.num_directions,)):
            args.append(f"activations={[tuple(a) for a in cfg['activations']]!r}")
        return f"{self.kind}({', '.join(args)})"

    # -- running -----------------------------------------------------------
    def _forward(self, x, lengths, state, num_threads=None):
        """x (B, T, input_size) float32 C-contiguous; state: list of arrays or None."""
        h0 = c0 = None
        if state is not None:
            h0 = state[0]
            if self.cell == "lstm":
                c0 = state[1]
        y, hn, cn = self._stack.forward(x, lengths, h0, c0, True, num_threads)
        new_state = [hn] if self.cell != "lstm" else [hn, cn]
        if not self.return_sequences:
            D, L = self.num_directions, self.num_layers
            last = hn[(L - 1) * D:L * D]                   # (D, B, H_out)
            y = np.ascontiguousarray(np.concatenate(list(last), axis=-1))
        if self.merge_mode != "concat":
            H = self.hidden_out
            fwd, bwd = y[..., :H], y[..., H:]
            if self.merge_mode == "sum":
                y = fwd + bwd
            elif self.merge_mode == "ave":
                y = (fwd + bwd) / np.float32(2)
            else:
                y = fwd * bwd
        return y, new_state


class RNN(Recurrent):
    """Elman RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh), act tanh (default) or relu."""

    kind = "RNN"
    cell = "rnn"
    gates = 1
    n_activations = 1

    def __init__(self, input_size, hidden_size, num_layers=1, *, nonlinearity="tanh", **kw):
        if kw.get("activations") is None:
            if nonlinearity not in ("tanh", "relu"):
                raise UnsupportedError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
            kw["activations"] = [nonlinearity]
        for opt in ("proj_size", "peepholes", "input_forget"):
            if kw.get(opt):
                raise UnsupportedError(f"RNN: {opt} is an LSTM option")
        super().__init__(input_size, hidden_size, num_layers, **kw)


class LSTM(Recurrent):
    """LSTM (gate order i f g o) with optional projection (proj_size) and peepholes."""

    kind = "LSTM"
    cell = "lstm"
    gates = 4
    n_activations = 3
    default_activations = ("sigmoid", "tanh", "tanh")


class GRU(Recurrent):
    """GRU (gate order r z n); linear_before_reset=True is PyTorch's form."""

    kind = "GRU"
    cell = "gru"
    gates = 3
    n_activations = 2
    default_activations = ("sigmoid", "tanh")

    def __init__(self, input_size, hidden_size, num_layers=1, **kw):
        for opt in ("proj_size", "peepholes", "input_forget"):
            if kw.get(opt):
                raise UnsupportedError(f"GRU: {opt} is an LSTM option")
        super().__init__(input_size, hidden_size, num_layers, **kw)


_MERGE_MODES = ("concat", "sum", "ave", "mul")

_LAYER_TYPES = {cls.kind: cls for cls in (Embedding, Dense, RNN, LSTM, GRU)}
