"""drnn against the numpy reference (tests/reference.py), over a broad grid.

Every test builds a drnn layer and its reference twin from the same float32
weights, runs both, and compares outputs and final states (max error
<= 1e-5, relative for values above 1 in magnitude).
"""
import itertools

import numpy as np
import pytest

import drnn
import helpers
import reference
from helpers import assert_close, assert_state_close

_CLS = {"RNN": (drnn.RNN, reference.RNN), "LSTM": (drnn.LSTM, reference.LSTM),
        "GRU": (drnn.GRU, reference.GRU)}


def build(kind, F, H, L=1, *, seed=0, wscale=None, **kw):
    """(drnn layer, reference layer) sharing random float32 weights."""
    w = reference.random_weights(
        kind, F, H, L, bidirectional=kw.get("bidirectional", False),
        bias=kw.get("bias", True), proj_size=kw.get("proj_size", 0),
        peepholes=kw.get("peepholes", False), rng=seed, scale=wscale)
    d_cls, r_cls = _CLS[kind]
    return d_cls(F, H, L, weights=w, **kw), r_cls(F, H, L, weights=w, **kw)


def initial_state(ref_layer, B, rng):
    L, D, H, Ho = ref_layer.num_layers, ref_layer.D, ref_layer.hidden_size, ref_layer.H_out
    h0 = rng.uniform(-1, 1, (L * D, B, Ho)).astype(np.float32)
    if ref_layer.kind == "LSTM":
        return h0, rng.uniform(-1, 1, (L * D, B, H)).astype(np.float32)
    return h0


def check_single(d_layer, r_layer, x, lengths=None, init=None, tol=helpers.TOL):
    """Run a one-layer DRNN model and the reference; compare y and state."""
    model = drnn.DRNN([d_layer])
    kw = {}
    if lengths is not None:
        kw["lengths"] = np.asarray(lengths)
    if init is not None:
        kw["initial_state"] = init
    y, state = model.predict(x, return_state=True, **kw)
    ref_y, ref_state = reference.Model([r_layer]).predict(
        x, lengths=lengths, initial_state=init, return_state=True)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32, (type(y), getattr(y, "dtype", None))
    assert_close(y, ref_y, tol, "y")
    assert_state_close(state, ref_state, tol, "state")
    # return_state=False gives the same output
    y2 = model.predict(x, **kw)
    np.testing.assert_array_equal(y2, y)
    return y, state


# ---------------------------------------------------------------------------
# the main grid: cell variant x direction x depth, with rotating scenarios
# ---------------------------------------------------------------------------

VARIANTS = {
    "rnn_tanh": ("RNN", dict(nonlinearity="tanh")),
    "rnn_relu": ("RNN", dict(nonlinearity="relu")),
    "lstm": ("LSTM", {}),
    "lstm_proj": ("LSTM", dict(proj_size=5)),
    "gru": ("GRU", {}),
    "gru_lbr0": ("GRU", dict(linear_before_reset=False)),
}
DIRECTIONS = {"fwd": {}, "rev": dict(reverse=True), "bi": dict(bidirectional=True)}

# batch, T, input, hidden, lengths, initial state, bias, return_sequences
SCENARIOS = [
    (1, 7, 5, 17, None, False, True, True),
    (4, 9, 5, 17, [9, 1, 5, 3], True, True, True),
    (3, 6, 3, 8, [6, 6, 6], True, False, True),
    (2, 5, 1, 1 + 6, [3, 3], False, True, True),
    (5, 8, 7, 12, [1, 8, 2, 8, 6], True, True, False),
    (1, 1, 4, 9, [1], True, True, True),
    (6, 11, 6, 16, None, True, True, False),
    (3, 10, 2, 33, [10, 4, 7], False, False, True),
]


def _grid():
    out = []
    for i, (v, d, L) in enumerate(itertools.product(VARIANTS, DIRECTIONS, [1, 2, 3])):
        out.append(pytest.param(v, d, L, SCENARIOS[i % len(SCENARIOS)],
                                id=f"{v}-{d}-L{L}-s{i % len(SCENARIOS)}"))
    return out


@pytest.mark.parametrize("variant,direction,L,scenario", _grid())
def test_grid(variant, direction, L, scenario):
    B, T, F, H, lengths, with_init, bias, ret_seq = scenario
    kind, opts = VARIANTS[variant]
    opts = dict(opts, **DIRECTIONS[direction], bias=bias, return_sequences=ret_seq)
    if opts.get("proj_size", 0) >= H:
        opts["proj_size"] = H - 1
    d_layer, r_layer = build(kind, F, H, L, seed=L * 100 + B, **opts)
    rng = np.random.default_rng(B * 31 + T)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    init = initial_state(r_layer, B, rng) if with_init else None
    y, _ = check_single(d_layer, r_layer, x, lengths, init)
    D = 2 if direction == "bi" else 1
    Ho = opts.get("proj_size") or H
    assert y.shape == ((B, T, D * Ho) if ret_seq else (B, D * Ho))
    if ret_seq and lengths is not None:
        for b, n in enumerate(lengths):
            assert np.all(y[b, n:] == 0), f"sequence {b}: output past length {n} is not 0"


@pytest.mark.parametrize("kind,opts", [
    ("LSTM", dict(bidirectional=True)), ("LSTM", dict(bidirectional=True, proj_size=3)),
    ("GRU", dict(bidirectional=True)), ("RNN", dict(bidirectional=True)),
    ("LSTM", dict(reverse=True)), ("GRU", dict(reverse=True, linear_before_reset=False)),
])
@pytest.mark.parametrize("L", [1, 3])
def test_return_sequences_false_with_lengths(kind, opts, L):
    """The last-step output is each sequence's final state, [fwd, bwd]."""
    d_layer, r_layer = build(kind, 4, 6, L, seed=L + 40, return_sequences=False, **opts)
    rng = np.random.default_rng(L)
    x = rng.standard_normal((4, 7, 4)).astype(np.float32)
    lengths = [7, 1, 3, 5]
    y, st = check_single(d_layer, r_layer, x, lengths, initial_state(r_layer, 4, rng))
    h = st[0] if isinstance(st, tuple) else st
    D = 2 if opts.get("bidirectional") else 1
    np.testing.assert_array_equal(y, np.concatenate([h[(L - 1) * D + d] for d in range(D)], -1))


# ---------------------------------------------------------------------------
# activations, one slot at a time, every kind
# ---------------------------------------------------------------------------

ACT_ITEMS = [
    "sigmoid", "tanh", "relu", "linear", "hard_sigmoid", ("hard_sigmoid", 1 / 6, 0.5),
    ("affine", 0.5, 0.1), "leaky_relu", ("leaky_relu", 0.2, 0.0), "thresholded_relu",
    ("thresholded_relu", 0.1, 0.0), "scaled_tanh", ("scaled_tanh", 0.8, 1.3), "elu",
    ("elu", 0.5, 0.0), "softsign", "softplus",
]
_DEFAULT_ACTS = {"RNN": ["tanh"], "GRU": ["sigmoid", "tanh"], "LSTM": ["sigmoid", "tanh", "tanh"]}


def _act_cases():
    out = []
    for item in ACT_ITEMS:
        for kind, defaults in _DEFAULT_ACTS.items():
            for slot in range(len(defaults)):
                acts = list(defaults)
                acts[slot] = item
                name = item if isinstance(item, str) else "%s(%g,%g)" % item
                out.append(pytest.param(kind, acts, id=f"{kind}-slot{slot}-{name}"))
    return out


@pytest.mark.parametrize("kind,acts", _act_cases())
def test_activation_slots(kind, acts):
    B, T, F, H = 3, 5, 4, 6
    d_layer, r_layer = build(kind, F, H, 1, seed=5, activations=acts)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    check_single(d_layer, r_layer, x, lengths=[5, 2, 4], init=initial_state(r_layer, B, rng))


@pytest.mark.parametrize("kind,acts", [
    ("RNN", [("leaky_relu", 0.1, 0.0), "softsign"]),
    ("GRU", ["sigmoid", "tanh", ("hard_sigmoid", 0.2, 0.5), "softsign"]),
    ("LSTM", ["sigmoid", "tanh", "tanh", ("hard_sigmoid", 0.25, 0.45), ("scaled_tanh", 0.9, 1.1), "softsign"]),
    ("LSTM", ["hard_sigmoid", "elu", "relu", "sigmoid", "tanh", "tanh"]),
])
@pytest.mark.parametrize("L", [1, 2])
def test_activations_per_direction(kind, acts, L):
    B, T, F, H = 2, 6, 5, 7
    d_layer, r_layer = build(kind, F, H, L, seed=9, bidirectional=True, activations=acts)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    check_single(d_layer, r_layer, x, lengths=[6, 3])


def test_activations_explicit_defaults_equal_default():
    w = reference.random_weights("LSTM", 3, 5, rng=1)
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    a = drnn.DRNN([drnn.LSTM(3, 5, weights=w)]).predict(x)
    b = drnn.DRNN([drnn.LSTM(3, 5, weights=w, activations=["sigmoid", "tanh", "tanh"])]).predict(x)
    np.testing.assert_array_equal(a, b)


def test_rnn_activation_overrides_nonlinearity_default():
    # activations=["relu"] on an RNN with the default nonlinearity must act like relu
    d1, r = build("RNN", 4, 6, seed=3, activations=["relu"])
    d2, _ = build("RNN", 4, 6, seed=3, nonlinearity="relu")
    x = np.random.default_rng(1).standard_normal((2, 5, 4)).astype(np.float32)
    y, _ = check_single(d1, r, x)
    np.testing.assert_allclose(drnn.DRNN([d2]).predict(x), y, atol=1e-6)


# ---------------------------------------------------------------------------
# ONNX-only features: clip, peepholes, input_forget
# ---------------------------------------------------------------------------

FEATURE_CASES = [
    ("RNN", dict(clip=0.5)),
    ("RNN", dict(clip=0.3, bidirectional=True, nonlinearity="relu")),
    ("GRU", dict(clip=0.4)),
    ("GRU", dict(clip=0.4, linear_before_reset=False, bidirectional=True)),
    ("LSTM", dict(clip=0.3)),
    ("LSTM", dict(clip=0.6, bidirectional=True)),
    ("LSTM", dict(peepholes=True)),
    ("LSTM", dict(peepholes=True, bidirectional=True)),
    ("LSTM", dict(peepholes=True, reverse=True, clip=0.5)),
    ("LSTM", dict(input_forget=True)),
    ("LSTM", dict(input_forget=True, bidirectional=True, clip=0.5)),
    ("LSTM", dict(input_forget=True, peepholes=True)),
    ("LSTM", dict(input_forget=True, peepholes=True, clip=0.2, bidirectional=True)),
    ("LSTM", dict(peepholes=True, proj_size=3)),
    ("LSTM", dict(peepholes=True, bias=False)),
    ("LSTM", dict(clip=0.5, activations=["hard_sigmoid", "softsign", "relu"])),
    ("GRU", dict(clip=0.5, activations=["hard_sigmoid", "relu"])),
]


@pytest.mark.parametrize("kind,opts", FEATURE_CASES,
                         ids=[f"{k}-" + "-".join(f"{a}={v}" for a, v in sorted(o.items()))
                              for k, o in FEATURE_CASES])
@pytest.mark.parametrize("L", [1, 2])
def test_onnx_features(kind, opts, L):
    B, T, F, H = 3, 7, 5, 9
    d_layer, r_layer = build(kind, F, H, L, seed=L + 17, **opts)
    rng = np.random.default_rng(L)
    x = (2.0 * rng.standard_normal((B, T, F))).astype(np.float32)
    check_single(d_layer, r_layer, x, lengths=[7, 1, 4], init=initial_state(r_layer, B, rng))


def test_clip_changes_result():
    """Guard against a clip that is silently ignored."""
    w = reference.random_weights("LSTM", 4, 6, rng=2)
    x = (3 * np.random.default_rng(0).standard_normal((2, 5, 4))).astype(np.float32)
    a = drnn.DRNN([drnn.LSTM(4, 6, weights=w)]).predict(x)
    b = drnn.DRNN([drnn.LSTM(4, 6, weights=w, clip=0.1)]).predict(x)
    assert np.max(np.abs(a - b)) > 1e-3


# ---------------------------------------------------------------------------
# larger sizes (error accumulation) and long sequences
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind,B,T,F,H,opts", [
    ("LSTM", 2, 60, 40, 256, dict(bidirectional=True)),
    ("GRU", 3, 50, 33, 200, dict(num_layers=2)),
    ("RNN", 2, 80, 16, 128, {}),
    ("LSTM", 1, 1000, 8, 32, {}),
    ("GRU", 1, 600, 8, 24, dict(bidirectional=True)),
    ("LSTM", 3, 40, 20, 96, dict(proj_size=48, num_layers=2)),
])
def test_larger_sizes(kind, B, T, F, H, opts):
    opts = dict(opts)
    L = opts.pop("num_layers", 1)
    d_layer, r_layer = build(kind, F, H, L, seed=H, **opts)
    rng = np.random.default_rng(H)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    lengths = None if B == 1 else [T] + [max(1, T // (b + 2)) for b in range(1, B)]
    check_single(d_layer, r_layer, x, lengths=lengths)


# ---------------------------------------------------------------------------
# input forms: 2-D, list, float64, non-contiguous
# ---------------------------------------------------------------------------

def test_unbatched_2d_input_and_state():
    d_layer, r_layer = build("LSTM", 5, 8, 2, seed=1, bidirectional=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (4, 8)).astype(np.float32)
    c0 = rng.uniform(-1, 1, (4, 8)).astype(np.float32)
    model = drnn.DRNN([d_layer])
    y, (h, c) = model.predict(x, initial_state=(h0, c0), return_state=True)
    ref_y, (ref_h, ref_c) = reference.Model([r_layer]).predict(
        x[None], initial_state=(h0[:, None], c0[:, None]), return_state=True)
    assert_close(y, ref_y[0], what="y")
    assert_close(h, ref_h[:, 0], what="h_n")
    assert_close(c, ref_c[:, 0], what="c_n")


def test_unbatched_2d_gru_state():
    d_layer, r_layer = build("GRU", 3, 4, 1, seed=1)
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    y, h = drnn.DRNN([d_layer]).predict(x, return_state=True)
    ref_y, ref_h = reference.Model([r_layer]).predict(x[None], return_state=True)
    assert_close(y, ref_y[0])
    assert_close(h, ref_h[:, 0], what="h_n")


@pytest.mark.parametrize("kind,opts", [("GRU", dict(bidirectional=True)), ("LSTM", dict(proj_size=3)),
                                       ("RNN", dict(reverse=True))])
def test_list_input(kind, opts):
    d_layer, r_layer = build(kind, 4, 7, 2, seed=2, **opts)
    rng = np.random.default_rng(3)
    seqs = [rng.standard_normal((n, 4)).astype(np.float32) for n in (5, 1, 9, 3)]
    ys = drnn.DRNN([d_layer]).predict(seqs)
    assert isinstance(ys, list) and len(ys) == 4
    ref = reference.Model([r_layer])
    for s, y in zip(seqs, ys):
        assert_close(y, ref.predict(s[None])[0])


def test_float64_and_noncontiguous_input():
    d_layer, r_layer = build("LSTM", 5, 6, 1, seed=4, bidirectional=True)
    rng = np.random.default_rng(5)
    big = rng.standard_normal((4, 12, 10))
    x = big[::2, ::2, ::2]            # float64, strided in every axis
    assert not x.flags.c_contiguous
    model = drnn.DRNN([d_layer])
    y = model.predict(x)
    assert y.dtype == np.float32
    assert_close(y, reference.Model([r_layer]).predict(x.astype(np.float32)))
    np.testing.assert_array_equal(model.predict(np.ascontiguousarray(x, dtype=np.float32)), y)
    np.testing.assert_array_equal(model.predict(np.asfortranarray(x)), y)


@pytest.mark.parametrize("lengths_dtype", [np.int32, np.int64, list])
def test_lengths_types(lengths_dtype):
    d_layer, r_layer = build("GRU", 3, 5, 1, seed=6, bidirectional=True)
    x = np.random.default_rng(6).standard_normal((3, 6, 3)).astype(np.float32)
    lengths = [2, 6, 4]
    ln = lengths if lengths_dtype is list else np.array(lengths, dtype=lengths_dtype)
    y = drnn.DRNN([d_layer]).predict(x, lengths=ln)
    assert_close(y, reference.Model([r_layer]).predict(x, lengths=lengths))


def test_padding_content_is_ignored():
    d_layer, _ = build("LSTM", 3, 5, 2, seed=7, bidirectional=True)
    model = drnn.DRNN([d_layer])
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    x2 = x.copy()
    x2[0, 3:] = 1e6
    x2[1, 1:] = np.nan
    a, sa = model.predict(x, lengths=[3, 1], return_state=True)
    b, sb = model.predict(x2, lengths=[3, 1], return_state=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa[0], sb[0])
    np.testing.assert_array_equal(sa[1], sb[1])


def test_batch_equals_single_sequences():
    d_layer, _ = build("GRU", 4, 10, 2, seed=8, bidirectional=True)
    model = drnn.DRNN([d_layer])
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 7, 4)).astype(np.float32)
    lengths = [7, 3, 1, 5, 7]
    y = model.predict(x, lengths=lengths)
    for b, n in enumerate(lengths):
        assert_close(y[b, :n], model.predict(x[b, :n]), 1e-6, f"sequence {b}")


@pytest.mark.parametrize("variant", ["rnn_tanh", "lstm", "lstm_proj", "gru", "gru_lbr0"])
@pytest.mark.parametrize("direction", ["fwd", "rev", "bi"])
@pytest.mark.parametrize("H", [16, 32])
def test_batch1_states_in_output_rows(variant, direction, H):
    """Batch 1 with the hidden size a multiple of every vector width: each
    step's state is written into its output row and read back there.  Two
    layers (the first writes the workspace), a length short of T (padded
    steps zero, final state at the length), initial states, 1 and 2 threads."""
    kind, opts = VARIANTS[variant]
    opts = dict(opts, **DIRECTIONS[direction])
    d_layer, r_layer = build(kind, 5, H, 2, seed=H, **opts)
    rng = np.random.default_rng(H)
    x = rng.standard_normal((1, 9, 5)).astype(np.float32)
    init = initial_state(r_layer, 1, rng)
    for lengths in (None, [6]):
        y, state = check_single(d_layer, r_layer, x, lengths, init)
        model = drnn.DRNN([d_layer])
        y2, state2 = model.predict(x, lengths=lengths, initial_state=init, return_state=True,
                                   num_threads=2)
        np.testing.assert_array_equal(y2, y)
        for a, b in zip(state if isinstance(state, tuple) else [state],
                        state2 if isinstance(state2, tuple) else [state2]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", ["rnn_tanh", "gru", "gru_lbr0", "lstm"])
@pytest.mark.parametrize("B", [1, 3, 7])
def test_block_groupings_small_batches(variant, B):
    """Small batches visit their blocks of hidden units in groups whose sizes
    depend on how many blocks there are (and on the vector width), rows in
    groups and one by one.  Every grouping gives the reference's numbers,
    and the same bits as those rows inside a batch of 13 (whose recurrent
    sums run as one GEMM)."""
    rng = np.random.default_rng(5)
    for H in (16, 32, 48, 64, 80, 96, 112, 144, 200):
        kind, opts = VARIANTS[variant]
        d_layer, r_layer = build(kind, 6, H, 1, seed=H, **opts)
        x = rng.standard_normal((13, 6, 6)).astype(np.float32)
        y, _ = check_single(d_layer, r_layer, x[:B], None, None)
        y13 = drnn.DRNN([d_layer]).predict(x, num_threads=1)
        np.testing.assert_array_equal(y13[:B], y, err_msg=f"H={H}")


# ---------------------------------------------------------------------------
# mixed stacks, dense and embedding
# ---------------------------------------------------------------------------

def _mixed(rng_seed=0, bidirectional=True, dense_act="tanh", ret_seq=True):
    V, E, H1, H2, O = 23, 6, 9, 7, 4
    rng = np.random.default_rng(rng_seed)
    emb_w = rng.standard_normal((V, E)).astype(np.float32)
    lw = reference.random_weights("LSTM", E, H1, 2, bidirectional=bidirectional, rng=rng)
    D = 2 if bidirectional else 1
    gw = reference.random_weights("GRU", D * H1, H2, 1, rng=rng)
    dw = rng.uniform(-0.4, 0.4, (O, H2)).astype(np.float32)
    db = rng.uniform(-0.4, 0.4, O).astype(np.float32)
    d_model = drnn.DRNN([
        drnn.Embedding(V, E, weight=emb_w),
        drnn.LSTM(E, H1, 2, bidirectional=bidirectional, weights=lw),
        drnn.GRU(D * H1, H2, weights=gw, return_sequences=ret_seq),
        drnn.Dense(H2, O, activation=dense_act, weight=dw, bias=db),
    ])
    r_model = reference.Model([
        reference.Embedding(V, E, weight=emb_w),
        reference.LSTM(E, H1, 2, bidirectional=bidirectional, weights=lw),
        reference.GRU(D * H1, H2, weights=gw, return_sequences=ret_seq),
        reference.Dense(H2, O, activation=dense_act, weight=dw, bias=db),
    ])
    return d_model, r_model, (V, E, H1, H2, O, D)


@pytest.mark.parametrize("dense_act", ["identity", "relu", "tanh", "sigmoid", "softmax"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_mixed_stack_embedding_lstm_gru_dense(dense_act, bidirectional):
    d_model, r_model, (V, E, H1, H2, O, D) = _mixed(1, bidirectional, dense_act)
    rng = np.random.default_rng(2)
    B, T = 4, 8
    ids = rng.integers(0, V, (B, T))
    lengths = [8, 1, 5, 3]
    init = [(rng.uniform(-1, 1, (2 * D, B, H1)).astype(np.float32),
             rng.uniform(-1, 1, (2 * D, B, H1)).astype(np.float32)),
            rng.uniform(-1, 1, (1, B, H2)).astype(np.float32)]
    y, st = d_model.predict(ids, lengths=lengths, initial_state=init, return_state=True)
    ref_y, ref_st = r_model.predict(ids, lengths=lengths, initial_state=init, return_state=True)
    assert y.shape == (B, T, O)
    assert_close(y, ref_y, what="y")
    assert isinstance(st, list) and len(st) == 2
    assert_state_close(st, ref_st)
    # without lengths / initial state
    assert_close(d_model.predict(ids), r_model.predict(ids), what="y (no lengths)")


def test_mixed_stack_return_sequences_false():
    d_model, r_model, (V, *_rest) = _mixed(3, True, "softmax", ret_seq=False)
    rng = np.random.default_rng(3)
    ids = rng.integers(0, V, (3, 6))
    lengths = [6, 2, 4]
    y = d_model.predict(ids, lengths=lengths)
    assert y.shape == (3, 4)
    assert_close(y, r_model.predict(ids, lengths=lengths))
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)


def test_mixed_stack_token_input_forms():
    d_model, r_model, (V, *_rest) = _mixed(4, True, "identity")
    rng = np.random.default_rng(4)
    seqs = [rng.integers(0, V, n) for n in (4, 1, 7)]
    ys = d_model.predict(seqs)
    assert isinstance(ys, list) and [y.shape[0] for y in ys] == [4, 1, 7]
    for s, y in zip(seqs, ys):
        ref = r_model.predict(s[None])[0]
        assert_close(y, ref)
        assert_close(d_model.predict(s), ref, what="1-D token input")
        assert_close(d_model.predict(s.astype(np.int32)), ref, what="int32 token input")


def test_stack_of_recurrent_layers_state_list():
    rng = np.random.default_rng(9)
    layers = [build("GRU", 5, 6, 2, seed=1, bidirectional=True),
              build("RNN", 12, 4, 1, seed=2, nonlinearity="relu", reverse=True),
              build("LSTM", 4, 7, 1, seed=3, proj_size=2)]
    d_model = drnn.DRNN([p[0] for p in layers])
    r_model = reference.Model([p[1] for p in layers])
    B = 3
    x = rng.standard_normal((B, 6, 5)).astype(np.float32)
    init = [initial_state(p[1], B, rng) for p in layers]
    y, st = d_model.predict(x, lengths=[6, 2, 5], initial_state=init, return_state=True)
    ref_y, ref_st = r_model.predict(x, lengths=[6, 2, 5], initial_state=init, return_state=True)
    assert_close(y, ref_y)
    assert_state_close(st, ref_st)
    assert st[2][0].shape == (1, B, 2) and st[2][1].shape == (1, B, 7)


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh", "sigmoid", "softmax",
                                        "log_softmax"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_alone(activation, use_bias):
    rng = np.random.default_rng(10)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32) if use_bias else False
    d = drnn.DRNN([drnn.Dense(7, 5, activation=activation, weight=w, bias=b)])
    r = reference.Model([reference.Dense(7, 5, activation=activation, weight=w, bias=b)])
    x = rng.standard_normal((3, 4, 7)).astype(np.float32)
    assert_close(d.predict(x), r.predict(x))
    if activation.endswith("softmax"):
        # logits of +-1e4 neither overflow nor lose the small ones
        big = (x * 1e3).astype(np.float32)
        assert_close(d.predict(big), r.predict(big), tol=1e-4)


def test_embedding_dense():
    rng = np.random.default_rng(11)
    ew = rng.standard_normal((10, 3)).astype(np.float32)
    dw = rng.standard_normal((2, 3)).astype(np.float32)
    db = rng.standard_normal(2).astype(np.float32)
    d = drnn.DRNN([drnn.Embedding(10, 3, weight=ew), drnn.Dense(3, 2, weight=dw, bias=db)])
    r = reference.Model([reference.Embedding(10, 3, weight=ew), reference.Dense(3, 2, weight=dw, bias=db)])
    ids = rng.integers(0, 10, (2, 5))
    assert_close(d.predict(ids), r.predict(ids))


# ---------------------------------------------------------------------------
# random initialisation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [drnn.RNN, drnn.LSTM, drnn.GRU])
def test_seeded_random_init(cls):
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    a = drnn.DRNN([cls(3, 8, 2, seed=123)]).predict(x)
    b = drnn.DRNN([cls(3, 8, 2, seed=123)]).predict(x)
    c = drnn.DRNN([cls(3, 8, 2, seed=124)]).predict(x)
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 1e-4
    assert np.all(np.isfinite(a)) and np.max(np.abs(a)) > 1e-3


# ---------------------------------------------------------------------------
# robustness of the call itself
# ---------------------------------------------------------------------------

def test_integer_and_float16_input_are_converted():
    d_layer, r_layer = build("GRU", 3, 5, 1, seed=12, bidirectional=True)
    model = drnn.DRNN([d_layer])
    xi = np.random.default_rng(12).integers(-2, 3, (2, 4, 3))
    ref = reference.Model([r_layer]).predict(xi.astype(np.float32))
    assert_close(model.predict(xi), ref, what="int64 input")
    assert_close(model.predict(xi.astype(np.float16)), ref, what="float16 input")


def test_state_dtype_layout_and_input_untouched():
    d_layer, r_layer = build("LSTM", 4, 6, 2, seed=13, bidirectional=True)
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (4, 3, 6))
    c0 = np.asfortranarray(rng.uniform(-1, 1, (4, 3, 6)))   # float64, not C-contiguous
    x_copy, h0_copy, c0_copy = x.copy(), h0.copy(), c0.copy()
    y, (h, c) = drnn.DRNN([d_layer]).predict(x, lengths=[5, 2, 3], initial_state=(h0, c0),
                                              return_state=True)
    ref_y, ref_st = reference.Model([r_layer]).predict(x, lengths=[5, 2, 3],
                                                       initial_state=(h0, c0), return_state=True)
    assert h.dtype == np.float32 and c.dtype == np.float32
    assert_close(y, ref_y)
    assert_state_close((h, c), ref_st)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(h0, h0_copy)
    np.testing.assert_array_equal(c0, c0_copy)


def test_results_are_not_reused_buffers():
    d_layer, _ = build("GRU", 3, 4, 1, seed=14)
    model = drnn.DRNN([d_layer])
    rng = np.random.default_rng(14)
    x1 = rng.standard_normal((2, 5, 3)).astype(np.float32)
    x2 = rng.standard_normal((2, 5, 3)).astype(np.float32)
    y1, s1 = model.predict(x1, return_state=True)
    keep_y, keep_s = y1.copy(), s1.copy()
    model.predict(x2, return_state=True)
    np.testing.assert_array_equal(y1, keep_y)
    np.testing.assert_array_equal(s1, keep_s)


def test_model_shared_across_threads():
    from concurrent.futures import ThreadPoolExecutor
    d_layer, r_layer = build("LSTM", 6, 24, 2, seed=15, bidirectional=True)
    model = drnn.DRNN([d_layer])
    rng = np.random.default_rng(15)
    xs = [rng.standard_normal((3, 20, 6)).astype(np.float32) for _ in range(8)]
    expected = [model.predict(x) for x in xs]
    with ThreadPoolExecutor(4) as ex:
        for _ in range(3):
            got = list(ex.map(model.predict, xs))
            for g, e in zip(got, expected):
                np.testing.assert_array_equal(g, e)
    assert_close(expected[0], reference.Model([r_layer]).predict(xs[0]))
