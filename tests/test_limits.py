"""Inputs at the limits, for predict() and streams.

The rules (README, "Inputs at the limits"):

* time length 0 gives an empty output of the right shape, (B, 0, out) or
  (0, out), and the initial state (zeros by default) as the final state; a
  list may mix empty and non-empty sequences.  A model that returns only
  the last step has none to return: ShapeError.  stream.run of an empty
  chunk returns (0, out) and leaves the state alone.
* batch 0 gives (0, T, out) and states with a batch axis of 0.  A stream
  needs batch_size >= 1.
* T = 1 and hidden size 1 are ordinary sizes: the numpy reference's answer.
* huge (+-1e30), inf and NaN values are computed, not refused: saturating
  cells give the reference's answer (tanh(+inf) = 1, sigmoid(-inf) = 0), a
  NaN gives NaN in its own sequence only, never in its batch neighbours.
* any memory layout (non-contiguous, Fortran order, big-endian) and any
  real dtype (float16/32/64, signed and unsigned integers) are accepted and
  converted to float32 first: the output equals the float32 input's bit for
  bit.  bool, complex, object and strings raise DtypeError.
* a model that starts with an Embedding takes integer ids of any integer
  dtype and byte order; floats raise DtypeError, ids outside [0, num) (also
  uint64 ids beyond the int64 range) raise ShapeError naming the id.
"""
import numpy as np
import pytest

import drnn
import reference as ref
from drnn.errors import DtypeError, ShapeError
from helpers import assert_close

TOL = 1e-5
RNG = np.random.default_rng(7)


def _pair(kind, F, H, L=1, bidirectional=False, dense=None, seed=0, **kw):
    """(drnn model, numpy reference model) with the same weights."""
    w = ref.random_weights(kind, F, H, L, bidirectional=bidirectional, rng=seed,
                           proj_size=kw.get("proj_size", 0))
    layer = getattr(drnn, kind)(F, H, L, bidirectional=bidirectional, weights=w, **kw)
    rlayer = getattr(ref, kind)(F, H, L, bidirectional=bidirectional, weights=w, **kw)
    layers, rlayers = [layer], [rlayer]
    if dense:
        out_in = layer.output_size
        dw = np.random.default_rng(seed + 1).uniform(-0.5, 0.5, (dense, out_in)).astype(np.float32)
        db = np.random.default_rng(seed + 2).uniform(-0.5, 0.5, dense).astype(np.float32)
        layers.append(drnn.Dense(out_in, dense, weight=dw, bias=db))
        rlayers.append(ref.Dense(out_in, dense, weight=dw, bias=db))
    return drnn.DRNN(layers), ref.Model(rlayers)


KINDS = ["RNN", "LSTM", "GRU"]


# ---------------------------------------------------------------------------
# time length 0 and 1
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_zero_time_steps(kind, bidirectional):
    m, _ = _pair(kind, 3, 4, 2, bidirectional, dense=2)
    y = m.predict(np.zeros((5, 0, 3), np.float32))
    assert y.shape == (5, 0, 2) and y.dtype == np.float32
    assert m.predict(np.zeros((0, 3), np.float32)).shape == (0, 2)
    y, st = m.predict(np.zeros((5, 0, 3), np.float32), return_state=True)
    D = 2 if bidirectional else 1
    for s in (st if isinstance(st, tuple) else (st,)):
        assert s.shape == (2 * D, 5, 4) and not s.any()
    # the given initial state comes back unchanged
    h0 = RNG.standard_normal((2 * D, 5, 4)).astype(np.float32)
    init = (h0, h0 * 2) if kind == "LSTM" else h0
    _, st = m.predict(np.zeros((5, 0, 3)), initial_state=init, return_state=True)
    for a, b in zip(st if isinstance(st, tuple) else (st,), init if isinstance(init, tuple)
                    else (init,)):
        np.testing.assert_array_equal(a, b)


def test_zero_time_steps_tokens_and_lists():
    m = drnn.DRNN([drnn.Embedding(10, 3, seed=0), drnn.GRU(3, 4, seed=1)])
    assert m.predict(np.zeros((2, 0), np.int64)).shape == (2, 0, 4)
    assert m.predict(np.zeros(0, np.int64)).shape == (0, 4)
    seqs = [np.array([1, 2, 3]), np.array([], np.int64), np.array([4])]
    ys, st = m.predict(seqs, return_state=True)
    assert [y.shape for y in ys] == [(3, 4), (0, 4), (1, 4)]
    y0, s0 = m.predict(seqs[0][None], return_state=True)
    y2, s2 = m.predict(seqs[2][None], return_state=True)
    np.testing.assert_array_equal(ys[0], y0[0])
    np.testing.assert_array_equal(ys[2], y2[0])
    np.testing.assert_array_equal(st[:, 0], s0[:, 0])
    np.testing.assert_array_equal(st[:, 2], s2[:, 0])
    assert not st[:, 1].any()


def test_zero_time_steps_last_step_model_refused():
    m = drnn.DRNN([drnn.LSTM(3, 4, return_sequences=False, seed=0)])
    with pytest.raises(ShapeError, match="zero time steps"):
        m.predict(np.zeros((2, 0, 3), np.float32))
    with pytest.raises(ShapeError, match="empty chunk"):
        m.stream().run(np.zeros((0, 3), np.float32))


def test_stream_empty_chunk_keeps_state():
    m, _ = _pair("LSTM", 3, 4, dense=2)
    s = m.stream()
    s.run(RNG.standard_normal((4, 3)))
    before = s.state
    assert s.run(np.zeros((0, 3), np.float32)).shape == (0, 2)
    for a, b in zip(before, s.state):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_one_time_step(kind):
    m, r = _pair(kind, 3, 5, 2, True, dense=2)
    x = RNG.standard_normal((3, 1, 3)).astype(np.float32)
    assert_close(m.predict(x), r.predict(x), TOL)
    mu, ru = _pair(kind, 3, 5, 2, False, dense=2)
    s = mu.stream(batch_size=3)
    assert_close(s.step(x[:, 0]), ru.predict(x)[:, 0], TOL)


# ---------------------------------------------------------------------------
# batch 0, hidden size 1
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_zero_batch(kind):
    m, _ = _pair(kind, 3, 4, 2, True, dense=2)
    y, st = m.predict(np.zeros((0, 6, 3), np.float32), return_state=True)
    assert y.shape == (0, 6, 2)
    for s in (st if isinstance(st, tuple) else (st,)):
        assert s.shape == (4, 0, 4)
    assert m.predict(np.zeros((0, 6, 3)), lengths=np.zeros(0, np.int64)).shape == (0, 6, 2)
    assert m.predict(np.zeros((0, 0, 3))).shape == (0, 0, 2)
    with pytest.raises(ShapeError, match="batch_size"):
        _pair(kind, 3, 4)[0].stream(batch_size=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_hidden_size_one(kind, bidirectional):
    m, r = _pair(kind, 1, 1, 2, bidirectional, dense=1)
    x = RNG.standard_normal((2, 7, 1)).astype(np.float32)
    lengths = [7, 3]
    assert_close(m.predict(x, lengths=lengths), r.predict(x, lengths=lengths), TOL)
    if not bidirectional:
        s = m.stream(batch_size=2)
        got = np.stack([s.step(x[:, t]) for t in range(7)], axis=1)
        np.testing.assert_array_equal(got, m.predict(x))


def test_projection_size_one():
    m, r = _pair("LSTM", 2, 2, 2, True, proj_size=1)
    x = RNG.standard_normal((2, 5, 2)).astype(np.float32)
    assert_close(m.predict(x), r.predict(x), TOL)


# ---------------------------------------------------------------------------
# huge values, inf and NaN
# ---------------------------------------------------------------------------

def _compare_nonfinite(got, want):
    want = np.asarray(want, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want.astype(np.float32)))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want.astype(np.float32)))
    fin = np.isfinite(got) & np.isfinite(want)
    assert_close(got[fin], want[fin], TOL)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [1e30, -1e30])
def test_huge_values(kind, scale):
    m, r = _pair(kind, 3, 4, 2, True, dense=2)
    x = (RNG.standard_normal((2, 5, 3)) * scale).astype(np.float32)
    y = m.predict(x)
    assert np.all(np.isfinite(y))
    assert_close(y, r.predict(x), TOL)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_inputs_saturate(kind, value):
    # one feature: the pre-activations are +-inf (no inf - inf), the cells saturate
    m, r = _pair(kind, 1, 4, 2, False, dense=2)
    x = RNG.standard_normal((2, 6, 1)).astype(np.float32)
    x[0, 2] = value
    x[1, :] = value
    _compare_nonfinite(m.predict(x), r.predict(x))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_relu_rnn_overflows_to_inf_like_the_reference():
    m, r = _pair("RNN", 1, 3, 1, False, nonlinearity="relu")
    x = np.full((1, 3, 1), np.inf, np.float32)
    _compare_nonfinite(m.predict(x), r.predict(x))


@pytest.mark.parametrize("kind", KINDS)
def test_nan_stays_in_its_sequence(kind):
    m, r = _pair(kind, 3, 4, 2, True, dense=2)
    x = RNG.standard_normal((3, 5, 3)).astype(np.float32)
    x[1, 2, 0] = np.nan
    y = m.predict(x)
    assert np.isnan(y[1]).any()
    clean = np.delete(x, 1, axis=0)
    np.testing.assert_array_equal(np.delete(y, 1, axis=0), m.predict(clean))
    assert_close(np.delete(y, 1, axis=0), r.predict(clean), TOL)


def test_stream_recovers_from_nan_after_reset():
    m, _ = _pair("GRU", 3, 4, dense=2)
    s = m.stream()
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    s.step(np.full(3, np.nan, np.float32))
    assert np.isnan(s.step(x[0])).all()
    s.reset()
    np.testing.assert_array_equal(s.run(x), m.predict(x))


# ---------------------------------------------------------------------------
# memory layouts and dtypes
# ---------------------------------------------------------------------------

def _layouts(x):
    """(name, array) views of x in every layout; values equal x's float32 values."""
    strided = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), np.float32)[..., ::2]
    strided[...] = x
    rev = np.ascontiguousarray(x[:, ::-1])[:, ::-1]
    return [("fortran", np.asfortranarray(x)), ("strided", strided), ("reversed_view", rev),
            ("big_endian", x.astype(">f4")), ("float64", x.astype(np.float64)),
            ("big_endian_f64", x.astype(">f8")), ("float16", x.astype(np.float16)),
            ("transposed_view", np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2))]


@pytest.fixture(scope="module")
def lstm_pair():
    return _pair("LSTM", 3, 5, 2, False, dense=2)


def test_layouts_and_float_dtypes(lstm_pair):
    m, _ = lstm_pair
    x = RNG.standard_normal((3, 4, 3)).astype(np.float16).astype(np.float32)  # f16-exact
    want = m.predict(x)
    for name, arr in _layouts(x):
        np.testing.assert_array_equal(m.predict(arr), want, err_msg=name)
        np.testing.assert_array_equal(m.predict(arr[0]), want[0], err_msg=name)
        np.testing.assert_array_equal(m.predict(list(arr)), list(want), err_msg=name)
        s = m.stream(batch_size=3)
        np.testing.assert_array_equal(s.run(arr), want, err_msg=name)
        s = m.stream()
        got = np.stack([s.step(arr[0, t]) for t in range(4)])
        np.testing.assert_array_equal(got, want[0], err_msg=name)


@pytest.mark.parametrize("dtype", ["i1", "u1", "<i2", ">i2", "i4", "u4", "i8", "u8"])
def test_integer_features_are_converted(lstm_pair, dtype):
    m, r = lstm_pair
    x = RNG.integers(0, 100, (2, 4, 3)).astype(dtype)
    want = m.predict(x.astype(np.float32))
    np.testing.assert_array_equal(m.predict(x), want)
    np.testing.assert_array_equal(m.stream(batch_size=2).run(x), want)
    assert_close(want, r.predict(x.astype(np.float64)), TOL)


@pytest.mark.parametrize("bad", [np.zeros((1, 2, 3), bool), np.zeros((1, 2, 3), np.complex64),
                                 np.zeros((1, 2, 3), object), np.array([["a", "b", "c"]]),
                                 np.zeros((1, 2, 3), "M8[s]")],
                         ids=["bool", "complex", "object", "str", "datetime"])
def test_non_real_dtypes_refused(lstm_pair, bad):
    m, _ = lstm_pair
    with pytest.raises(DtypeError):
        m.predict(bad)
    with pytest.raises(DtypeError):
        m.stream().step(bad.reshape(-1)[:3])
    with pytest.raises(DtypeError):
        m.stream().run(bad[0])


@pytest.mark.parametrize("dtype", ["i1", "u1", ">i4", "<u2", "i8", ">u8"])
def test_token_ids_any_integer_dtype(dtype):
    m = drnn.DRNN([drnn.Embedding(50, 3, seed=0), drnn.LSTM(3, 4, seed=1)])
    ids = RNG.integers(0, 50, (2, 5))
    want = m.predict(ids)
    np.testing.assert_array_equal(m.predict(ids.astype(dtype)), want)
    np.testing.assert_array_equal(m.predict(np.asfortranarray(ids.astype(dtype))), want)
    np.testing.assert_array_equal(m.stream(batch_size=2).run(ids.astype(dtype)), want)
    s = m.stream()
    got = np.stack([s.step(np.asarray(t, dtype)) for t in ids[0]])
    np.testing.assert_array_equal(got, want[0])


def test_token_ids_refused():
    m = drnn.DRNN([drnn.Embedding(50, 3, seed=0), drnn.GRU(3, 4, seed=1)])
    with pytest.raises(DtypeError):
        m.predict(np.zeros((2, 3), np.float32))
    with pytest.raises(ShapeError, match="-1"):
        m.predict(np.array([[1, -1]]))
    with pytest.raises(ShapeError, match="50"):
        m.predict(np.array([[1, 50]]))
    with pytest.raises(ShapeError, match=str(2**63)):
        m.predict(np.array([[1, 2**63]], np.uint64))
    with pytest.raises(ShapeError, match=str(2**64 - 1)):
        m.stream().step(np.uint64(2**64 - 1))
