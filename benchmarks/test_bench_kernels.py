"""pytest-benchmark micro-benchmarks of drnn's kernels, each checked once against numpy.

    python -m pytest benchmarks --benchmark-only          # time them
    python -m pytest benchmarks --benchmark-disable       # just run the checks

These live outside tests/ (the main run is `python -m pytest tests`), so timing
never runs in the test suite.  Pattern: every benchmark times one call through
the public API (DRNN.predict) or one kernel entry point (drnn._core), and the
value the benchmark fixture returns -- the result of a timed call -- is then
compared with a float64 numpy reference of the same maths (PyTorch semantics:
LSTM gates i f g o, GRU r z n with the reset applied to W_hn h + b_hn).
Inputs and weights are drawn from fixed seeds; the reference cells below are
written once and shared by every cell-type benchmark.
"""
import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
import drnn                                   # noqa: E402
from drnn import _core                        # noqa: E402

ATOL = 1e-4     # the peer-comparison tolerance; T <= 100 keeps float32 drift far below it


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _lstm_cell(gi, gh, h, c):
    i, f, g, o = np.split(gi + gh, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def _gru_cell(gi, gh, h, c):
    ir, iz, inn = np.split(gi, 3, axis=-1)
    hr, hz, hn = np.split(gh, 3, axis=-1)
    r, z = sigmoid(ir + hr), sigmoid(iz + hz)
    n = np.tanh(inn + r * hn)
    return (1.0 - z) * n + z * h, c


def _rnn_cell(gi, gh, h, c):
    return np.tanh(gi + gh), c


CELLS = {"LSTM": _lstm_cell, "GRU": _gru_cell, "RNN": _rnn_cell}


def reference(layer, x):
    """Single-layer, unidirectional recurrent layer over x (B, T, F), zero initial state."""
    p = {k: v.astype(np.float64) for k, v in layer.params().items()}
    cell = CELLS[layer.kind]
    B, T, _ = x.shape
    h = np.zeros((B, layer.hidden_size))
    c = np.zeros_like(h)
    gi = x.astype(np.float64) @ p["weight_ih_l0"].T + p["bias_ih_l0"]
    ys = []
    for t in range(T):
        h, c = cell(gi[:, t], h @ p["weight_hh_l0"].T + p["bias_hh_l0"], h, c)
        ys.append(h)
    return np.stack(ys, axis=1)


def inputs(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).uniform(-scale, scale, size=shape).astype(np.float32)


def recurrent_model(cell, hidden):
    layer = getattr(drnn, cell)(hidden, hidden, seed=1)
    return drnn.DRNN([layer]), layer


@pytest.mark.benchmark(group="step")
@pytest.mark.parametrize("hidden", [64, 256])
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_step(benchmark, cell, hidden):
    """One recurrent step: predict on a (1, 1, F) input."""
    model, layer = recurrent_model(cell, hidden)
    x = inputs(1, 1, hidden)
    y = benchmark(model.predict, x)
    np.testing.assert_allclose(y, reference(layer, x), atol=ATOL, rtol=0)


@pytest.mark.benchmark(group="sequence")
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_sequence(benchmark, cell, batch):
    """One layer of hidden 256 over T = 100 steps."""
    model, layer = recurrent_model(cell, 256)
    x = inputs(batch, 100, 256)
    y = benchmark(model.predict, x)
    np.testing.assert_allclose(y, reference(layer, x), atol=ATOL, rtol=0)


@pytest.mark.benchmark(group="dense")
@pytest.mark.parametrize("activation", ["identity", "softmax"])
def test_dense_head(benchmark, activation):
    """A classifier head 256 -> 10 on every step of a (8, 100, 256) batch."""
    layer = drnn.Dense(256, 10, activation=activation, seed=2)
    model = drnn.DRNN([layer])
    x = inputs(8, 100, 256)
    y = benchmark(model.predict, x)
    ref = x.astype(np.float64) @ layer.weight.T.astype(np.float64) + layer.bias
    if activation == "softmax":
        ref = np.exp(ref - ref.max(axis=-1, keepdims=True))
        ref /= ref.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(y, ref, atol=ATOL, rtol=0)


@pytest.mark.benchmark(group="activation")
@pytest.mark.parametrize("name,fn", [("sigmoid", sigmoid), ("tanh", np.tanh)],
                         ids=["sigmoid", "tanh"])
def test_activation(benchmark, name, fn):
    """An activation in place over 1M floats; each round gets a fresh copy (untimed)."""
    x0 = inputs(1 << 20, seed=3, scale=10.0)
    spec = (name, 0.0, 0.0)
    y = benchmark.pedantic(_core.activation, setup=lambda: ((x0.copy(), spec), {}),
                           rounds=50, warmup_rounds=2)
    np.testing.assert_allclose(y, fn(x0.astype(np.float64)), atol=1e-5, rtol=0)
