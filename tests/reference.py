"""A plain numpy reference for drnn, written from the equations.

Sources: the PyTorch docs of torch.nn.RNN / LSTM / GRU (gate order, biases,
proj_size, packed-sequence semantics) and the ONNX operator spec of
RNN / LSTM / GRU (activations with alpha/beta, clip, input_forget,
peepholes, linear_before_reset).  Nothing here is taken from drnn's code.

Everything is computed in float64 with explicit loops over sequences and
time steps: slow, but small and obviously right.  The classes mirror the
constructors of drnn's layers (same argument names) so that a test can
build the drnn layer and its reference from one description:

    ref = reference.LSTM(5, 17, 2, bidirectional=True, weights=w)
    y, (h_n, c_n) = ref.forward(x, lengths=lengths)

Conventions (the contract drnn implements):
  * weights: dict with PyTorch state_dict names, no module prefix
    (weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k},
    weight_hr_l{k}, weight_peep_l{k}; suffix _reverse for the backward
    direction).  Gate order: LSTM i f g o, GRU r z n; peepholes i f o.
  * x is batch-first (B, T, F).  Sequence b is valid for its first
    lengths[b] steps.  The forward direction runs t = 0 .. len-1, the
    backward direction (and reverse=True) runs t = len-1 .. 0 from the
    initial state.  Outputs past a sequence's length are zero; the final
    state is the state after the sequence's own last processed step.
  * h_n has shape (L*D, B, H_out), index layer*D + direction; LSTM
    c_n (L*D, B, H).
"""
import numpy as np

# --------------------------------------------------------------------------
# activations (ONNX operator spec definitions)
# --------------------------------------------------------------------------


def _sigmoid(x):
    # numerically stable 1/(1+exp(-x))
    return np.exp(-np.logaddexp(0.0, -x))


_ACT = {
    "sigmoid": lambda x, a, b: _sigmoid(x),
    "tanh": lambda x, a, b: np.tanh(x),
    "relu": lambda x, a, b: np.maximum(x, 0.0),
    "linear": lambda x, a, b: x,
    "identity": lambda x, a, b: x,
    "hard_sigmoid": lambda x, a, b: np.clip(a * x + b, 0.0, 1.0),
    "affine": lambda x, a, b: a * x + b,
    "leaky_relu": lambda x, a, b: np.where(x >= 0, x, a * x),
    "thresholded_relu": lambda x, a, b: np.where(x > a, x, 0.0),
    "scaled_tanh": lambda x, a, b: a * np.tanh(b * x),
    "elu": lambda x, a, b: np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0.0))),
    "softsign": lambda x, a, b: x / (1.0 + np.abs(x)),
    "softplus": lambda x, a, b: np.logaddexp(0.0, x),
}

# ONNX defaults for alpha / beta
_ACT_DEFAULTS = {
    "hard_sigmoid": (0.2, 0.5),
    "affine": (1.0, 0.0),
    "leaky_relu": (0.01, 0.0),
    "thresholded_relu": (1.0, 0.0),
    "scaled_tanh": (1.0, 1.0),
    "elu": (1.0, 0.0),
}

ACTIVATION_NAMES = sorted(k for k in _ACT if k != "identity")


def activation(item):
    """A name or (name, alpha, beta) -> a float64 elementwise function."""
    if isinstance(item, str):
        name = item
        alpha, beta = _ACT_DEFAULTS.get(name, (0.0, 0.0))
    else:
        name, alpha, beta = item
    fn = _ACT[name]
    return lambda x: fn(np.asarray(x, dtype=np.float64), float(alpha), float(beta))


_N_ACT = {"RNN": 1, "LSTM": 3, "GRU": 2}
_GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}


def _resolve_activations(kind, activations, nonlinearity, num_directions):
    n = _N_ACT[kind]
    if activations is None:
        if kind == "LSTM":
            items = ["sigmoid", "tanh", "tanh"]
        elif kind == "GRU":
            items = ["sigmoid", "tanh"]
        else:
            items = [nonlinearity]
        per_dir = [items] * num_directions
    else:
        activations = list(activations)
        if len(activations) == n:
            per_dir = [activations] * num_directions
        elif len(activations) == 2 * n and num_directions == 2:
            per_dir = [activations[:n], activations[n:]]
        else:
            raise ValueError("bad activations list")
    return [[activation(a) for a in d] for d in per_dir]


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------


def weight_names(kind, num_layers, bidirectional=False, bias=True, proj_size=0,
                 peepholes=False):
    names = []
    for k in range(num_layers):
        for sfx in ("", "_reverse") if bidirectional else ("",):
            names += [f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}"]
            if bias:
                names += [f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}"]
            if kind == "LSTM" and proj_size:
                names.append(f"weight_hr_l{k}{sfx}")
            if kind == "LSTM" and peepholes:
                names.append(f"weight_peep_l{k}{sfx}")
    return names


def random_weights(kind, input_size, hidden_size, num_layers=1, *,
                   bidirectional=False, bias=True, proj_size=0, peepholes=False,
                   rng=None, scale=None):
    """float32 weights in PyTorch naming, uniform(-s, s), s = 1/sqrt(H)."""
    rng = np.random.default_rng(rng)
    G = _GATES[kind]
    H = hidden_size
    H_out = proj_size if proj_size else H
    D = 2 if bidirectional else 1
    s = 1.0 / np.sqrt(H) if scale is None else scale
    w = {}

    def u(*shape):
        return rng.uniform(-s, s, size=shape).astype(np.float32)

    for k in range(num_layers):
        in_k = input_size if k == 0 else D * H_out
        for sfx in ("", "_reverse")[:D]:
            w[f"weight_ih_l{k}{sfx}"] = u(G * H, in_k)
            w[f"weight_hh_l{k}{sfx}"] = u(G * H, H_out)
            if bias:
                w[f"bias_ih_l{k}{sfx}"] = u(G * H)
                w[f"bias_hh_l{k}{sfx}"] = u(G * H)
            if kind == "LSTM" and proj_size:
                w[f"weight_hr_l{k}{sfx}"] = u(proj_size, H)
            if kind == "LSTM" and peepholes:
                w[f"weight_peep_l{k}{sfx}"] = u(3 * H)
    return w


# --------------------------------------------------------------------------
# recurrent layers
# --------------------------------------------------------------------------


class _Recurrent:
    kind = None

    def __init__(self, input_size, hidden_size, num_layers=1, *,
                 bidirectional=False, bias=True, nonlinearity="tanh",
                 proj_size=0, peepholes=False, input_forget=False,
                 linear_before_reset=True, weights=None,
                 return_sequences=True, reverse=False, activations=None,
                 clip=None):
        if weights is None:
            raise ValueError("the reference needs explicit weights")
        if reverse and bidirectional:
            raise ValueError("reverse is for unidirectional layers")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.D = 2 if bidirectional else 1
        self.bias = bias
        self.proj_size = proj_size
        self.H_out = proj_size if proj_size else hidden_size
        self.peepholes = peepholes
        self.input_forget = input_forget
        self.linear_before_reset = linear_before_reset
        self.return_sequences = return_sequences
        self.reverse = reverse
        self.clip = clip
        self.acts = _resolve_activations(self.kind, activations, nonlinearity, self.D)
        self.w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        expected = set(weight_names(self.kind, num_layers, bidirectional, bias,
                                    proj_size, peepholes))
        if set(self.w) != expected:
            raise ValueError(f"weights {sorted(self.w)} != {sorted(expected)}")

    @property
    def out_features(self):
        return self.D * self.H_out

    def _clip(self, v):
        if self.clip is None or self.clip <= 0:
            return v
        return np.clip(v, -self.clip, self.clip)

    def _p(self, name, layer, d):
        sfx = "_reverse" if d == 1 else ""
        return self.w.get(f"{name}_l{layer}{sfx}")

    def step(self, layer, d, x, h, c):
        raise NotImplementedError

    def forward(self, x, lengths=None, h0=None, c0=None):
        """x (B, T, F) -> y (B, T, D*H_out) or (B, D*H_out), h_n, c_n."""
        x = np.asarray(x, dtype=np.float64)
        B, T, F = x.shape
        assert F == self.input_size, (F, self.input_size)
        if lengths is None:
            lengths = np.full(B, T, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        L, D, H, Ho = self.num_layers, self.D, self.hidden_size, self.H_out
        h_n = np.zeros((L * D, B, Ho))
        c_n = np.zeros((L * D, B, H))
        inp = x
        for layer in range(L):
            out = np.zeros((B, T, D * Ho))
            for d in range(D):
                idx = layer * D + d
                backward = (d == 1) or self.reverse
                for b in range(B):
                    n = int(lengths[b])
                    h = np.zeros(Ho) if h0 is None else np.asarray(h0[idx, b], np.float64)
                    c = np.zeros(H) if c0 is None else np.asarray(c0[idx, b], np.float64)
                    steps = range(n - 1, -1, -1) if backward else range(n)
                    for t in steps:
                        h, c = self.step(layer, d, inp[b, t], h, c)
                        out[b, t, d * Ho:(d + 1) * Ho] = h
                    h_n[idx, b] = h
                    c_n[idx, b] = c
            inp = out
        if self.return_sequences:
            y = inp
        else:
            last = (L - 1) * D
            y = np.concatenate([h_n[last + d] for d in range(D)], axis=-1)
        return y, h_n, c_n


class RNN(_Recurrent):
    kind = "RNN"

    def step(self, layer, d, x, h, c):
        (f,) = self.acts[d]
        a = self._p("weight_ih", layer, d) @ x + self._p("weight_hh", layer, d) @ h
        if self.bias:
            a = a + self._p("bias_ih", layer, d) + self._p("bias_hh", layer, d)
        return f(self._clip(a)), c


class LSTM(_Recurrent):
    kind = "LSTM"

    def step(self, layer, d, x, h, c):
        f_act, g_act, h_act = self.acts[d]
        H = self.hidden_size
        a = self._p("weight_ih", layer, d) @ x + self._p("weight_hh", layer, d) @ h
        if self.bias:
            a = a + self._p("bias_ih", layer, d) + self._p("bias_hh", layer, d)
        ai, af, ag, ao = a[:H], a[H:2 * H], a[2 * H:3 * H], a[3 * H:]
        if self.peepholes:
            p = self._p("weight_peep", layer, d)
            ai = ai + p[:H] * c
            af = af + p[H:2 * H] * c
        i = f_act(self._clip(ai))
        if self.input_forget:
            f = 1.0 - i
        else:
            f = f_act(self._clip(af))
        g = g_act(self._clip(ag))
        c_new = f * c + i * g
        if self.peepholes:
            ao = ao + p[2 * H:] * c_new
        o = f_act(self._clip(ao))
        h_new = o * h_act(c_new)
        if self.proj_size:
            h_new = self._p("weight_hr", layer, d) @ h_new
        return h_new, c_new


class GRU(_Recurrent):
    kind = "GRU"

    def step(self, layer, d, x, h, c):
        f_act, g_act = self.acts[d]
        H = self.hidden_size
        W_ih, W_hh = self._p("weight_ih", layer, d), self._p("weight_hh", layer, d)
        if self.bias:
            b_ih, b_hh = self._p("bias_ih", layer, d), self._p("bias_hh", layer, d)
        else:
            b_ih = b_hh = np.zeros(3 * H)
        gi = W_ih @ x + b_ih
        gh = W_hh @ h + b_hh
        r = f_act(self._clip(gi[:H] + gh[:H]))
        z = f_act(self._clip(gi[H:2 * H] + gh[H:2 * H]))
        if self.linear_before_reset:
            an = gi[2 * H:] + r * gh[2 * H:]
        else:
            an = gi[2 * H:] + W_hh[2 * H:] @ (r * h) + b_hh[2 * H:]
        n = g_act(self._clip(an))
        return (1.0 - z) * n + z * h, c


# --------------------------------------------------------------------------
# other layers
# --------------------------------------------------------------------------


class Embedding:
    kind = "Embedding"

    def __init__(self, num_embeddings, embedding_dim, *, weight):
        self.weight = np.asarray(weight, dtype=np.float64)
        assert self.weight.shape == (num_embeddings, embedding_dim)
        self.out_features = embedding_dim

    def forward(self, ids):
        return self.weight[np.asarray(ids, dtype=np.int64)]


def _softmax(x):
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def _log_softmax(x):
    m = np.max(x, axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


class Dense:
    kind = "Dense"
    _ACTS = {
        "identity": lambda x: x,
        "relu": lambda x: np.maximum(x, 0.0),
        "tanh": np.tanh,
        "sigmoid": _sigmoid,
        "softmax": _softmax,
        "log_softmax": _log_softmax,
    }

    def __init__(self, in_features, out_features, *, activation="identity",
                 weight, bias=None):
        self.weight = np.asarray(weight, dtype=np.float64)
        assert self.weight.shape == (out_features, in_features)
        self.bias = None if bias is None or bias is False else np.asarray(bias, np.float64)
        self.act = self._ACTS[activation]
        self.out_features = out_features

    def forward(self, x):
        y = np.asarray(x, np.float64) @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        return self.act(y)


# --------------------------------------------------------------------------
# a model: a list of layers
# --------------------------------------------------------------------------


class Model:
    def __init__(self, layers):
        self.layers = list(layers)

    def predict(self, x, lengths=None, initial_state=None, return_state=False):
        """x: (B, T, F) floats or (B, T) ids; batch-first and batched only.

        initial_state / returned state follow the drnn contract: for one
        recurrent layer h_n (RNN, GRU) or (h_n, c_n) (LSTM); for several a
        list with one such entry per recurrent layer.
        """
        rec = [layer for layer in self.layers if isinstance(layer, _Recurrent)]
        if initial_state is None:
            init = [None] * len(rec)
        elif len(rec) == 1:
            init = [initial_state]
        else:
            init = list(initial_state)
        states = []
        y = x
        has_time = True
        ri = 0
        B = np.asarray(x).shape[0]
        for layer in self.layers:
            if isinstance(layer, _Recurrent):
                s = init[ri]
                h0 = c0 = None
                if s is not None:
                    if layer.kind == "LSTM":
                        h0, c0 = s
                    else:
                        h0 = s
                y, h_n, c_n = layer.forward(y, lengths=lengths, h0=h0, c0=c0)
                states.append((h_n, c_n) if layer.kind == "LSTM" else h_n)
                has_time = layer.return_sequences
                ri += 1
            else:
                y = layer.forward(y)
        if has_time and lengths is not None:
            y = np.array(y, dtype=np.float64)
            T = y.shape[1]
            for b in range(B):
                y[b, int(lengths[b]):T] = 0.0
        if not return_state:
            return y
        return y, (states[0] if len(states) == 1 else states)
