"""Bad inputs raise clear errors; NaN propagates; save/load is bit-exact."""
import os
import pickle

import numpy as np
import pytest

import drnn
import reference
from helpers import assert_close


@pytest.fixture(scope="module")
def lstm_model():
    # input 5, hidden 7, 2 layers, bidirectional: h0/c0 (4, B, 7)
    return drnn.DRNN([drnn.LSTM(5, 7, 2, bidirectional=True, seed=1)])


@pytest.fixture(scope="module")
def gru_model():
    return drnn.DRNN([drnn.GRU(5, 6, seed=2)])


X = np.zeros((2, 4, 5), np.float32)


# ---------------------------------------------------------------------------
# input shape and dtype
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 4, 6), (2, 4, 4), (4, 6), (1, 3, 1)])
def test_wrong_feature_size(lstm_model, shape):
    with pytest.raises(ValueError, match=r"(?s)5.*" + str(shape[-1]) + r"|" + str(shape[-1]) + r".*5"):
        lstm_model.predict(np.zeros(shape, np.float32))


def test_wrong_feature_size_message_names_features(lstm_model):
    with pytest.raises(ValueError, match="feature") as ei:
        lstm_model.predict(np.zeros((2, 4, 9), np.float32))
    msg = str(ei.value)
    assert "5" in msg and "9" in msg, msg


@pytest.mark.parametrize("shape", [(), (5,), (1, 2, 4, 5), (1, 1, 1, 1, 5)])
def test_wrong_rank(lstm_model, shape):
    with pytest.raises(ValueError, match=r"(?i)shape|dim|rank") as ei:
        lstm_model.predict(np.zeros(shape, np.float32))
    assert str(shape) in str(ei.value) or str(len(shape)) in str(ei.value), str(ei.value)


@pytest.mark.parametrize("bad", [
    np.array([[["a"] * 5] * 4]),
    np.zeros((1, 4, 5), dtype=object),
    np.zeros((1, 4, 5), dtype=np.complex64),
    np.zeros((1, 4, 5), dtype=np.complex128),
    "not an array",
    b"bytes",
], ids=["str", "object", "complex64", "complex128", "pystr", "pybytes"])
def test_non_numeric_dtype(lstm_model, bad):
    with pytest.raises((TypeError, ValueError), match=r"(?i)dtype|type|real|float|numer"):
        lstm_model.predict(bad)


def test_list_input_with_bad_sequence(lstm_model):
    with pytest.raises(ValueError, match="6"):
        lstm_model.predict([np.zeros((3, 5), np.float32), np.zeros((2, 6), np.float32)])


def test_empty_time_axis(lstm_model):
    # zero time steps: either a clear error or an empty (B, 0, out) result
    try:
        y = lstm_model.predict(np.zeros((2, 0, 5), np.float32))
    except ValueError as e:
        assert "time" in str(e) or "0" in str(e), str(e)
    else:
        assert y.shape == (2, 0, 14)


# ---------------------------------------------------------------------------
# lengths
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("lengths", [[5, 2], [4, 9], [0, 2], [-1, 3], [2, 0]],
                         ids=["gt_T", "gt_T_2", "zero", "negative", "zero_last"])
def test_lengths_out_of_range(lstm_model, lengths):
    with pytest.raises(ValueError, match=r"lengths") as ei:
        lstm_model.predict(X, lengths=lengths)
    assert "4" in str(ei.value), f"message should name the time axis (4): {ei.value}"


@pytest.mark.parametrize("lengths", [[2], [2, 2, 2], [[2, 2]]], ids=["one", "three", "2d"])
def test_lengths_wrong_count(lstm_model, lengths):
    with pytest.raises(ValueError, match=r"lengths") as ei:
        lstm_model.predict(X, lengths=lengths)
    assert "2" in str(ei.value), str(ei.value)


def test_lengths_non_integer(lstm_model):
    with pytest.raises((TypeError, ValueError), match="lengths"):
        lstm_model.predict(X, lengths=[2.5, 3.0])


# ---------------------------------------------------------------------------
# initial states
# ---------------------------------------------------------------------------

def _z(*shape):
    return np.zeros(shape, np.float32)


@pytest.mark.parametrize("state,expect", [
    ((_z(4, 2, 7), _z(4, 2, 6)), r"\(4, 2, 7\)"),          # c0 hidden
    ((_z(2, 2, 7), _z(4, 2, 7)), r"\(4, 2, 7\)"),          # h0 layers*dirs
    ((_z(4, 3, 7), _z(4, 3, 7)), r"\(4, 2, 7\)"),          # batch mismatch
    ((_z(4, 7), _z(4, 7)), r"\(4, 2, 7\)"),                # unbatched state, batched x
], ids=["c0_hidden", "h0_layers", "batch", "rank"])
def test_lstm_state_shape_mismatch(lstm_model, state, expect):
    with pytest.raises(ValueError, match=expect):
        lstm_model.predict(X, initial_state=state)


def test_lstm_state_needs_h_and_c(lstm_model):
    with pytest.raises((ValueError, TypeError), match=r"(?i)c_?0|c_n|cell|2|tuple"):
        lstm_model.predict(X, initial_state=_z(4, 2, 7))


@pytest.mark.parametrize("state", [_z(1, 2, 5), _z(2, 2, 6), _z(2, 6)], ids=["hidden", "layers", "rank"])
def test_gru_state_shape_mismatch(gru_model, state):
    with pytest.raises(ValueError, match=r"\(1, 2, 6\)"):
        gru_model.predict(X, initial_state=state)


def test_unbatched_input_with_batched_state(gru_model):
    with pytest.raises(ValueError, match=r"\(1, 6\)"):
        gru_model.predict(X[0], initial_state=_z(1, 2, 6))


def test_state_list_wrong_length():
    m = drnn.DRNN([drnn.GRU(5, 6, seed=1), drnn.GRU(6, 3, seed=2)])
    with pytest.raises((ValueError, TypeError), match=r"2"):
        m.predict(X, initial_state=[_z(1, 2, 6)])


# ---------------------------------------------------------------------------
# embedding ids
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def emb_model():
    return drnn.DRNN([drnn.Embedding(10, 5, seed=1), drnn.LSTM(5, 3, seed=1)])


@pytest.mark.parametrize("ids", [[[1, 10]], [[1, -1]], [[10 ** 9, 0]]], ids=["eq_V", "negative", "huge"])
def test_embedding_id_out_of_range(emb_model, ids):
    with pytest.raises((ValueError, IndexError), match="10"):
        emb_model.predict(np.array(ids))


def test_embedding_float_ids(emb_model):
    with pytest.raises((TypeError, ValueError), match=r"(?i)int"):
        emb_model.predict(np.array([[1.5, 2.0]]))


# ---------------------------------------------------------------------------
# construction errors
# ---------------------------------------------------------------------------

def test_missing_weight_named():
    with pytest.raises(ValueError, match="weight_hh_l0"):
        drnn.LSTM(5, 7, weights={"weight_ih_l0": np.zeros((28, 5), np.float32)})


@pytest.mark.parametrize("args", [(4, 4, 10 ** 9), (4, 1 << 21, 1), (1 << 25, 4, 1)])
def test_sizes_past_the_kernels_limits_refused_at_once(args):
    with pytest.raises(drnn.ShapeError, match="at most 4096 layers"):
        drnn.GRU(*args)


def test_wrong_weight_shape_named():
    w = reference.random_weights("GRU", 5, 7, rng=0)
    w["weight_hh_l0"] = np.zeros((21, 6), np.float32)
    with pytest.raises(ValueError, match=r"weight_hh_l0"):
        drnn.GRU(5, 7, weights=w)


def test_unknown_activation():
    with pytest.raises(ValueError, match="nope"):
        drnn.LSTM(5, 7, activations=["nope", "tanh", "tanh"], seed=0)


def test_wrong_activation_count():
    with pytest.raises(ValueError, match="3"):
        drnn.LSTM(5, 7, activations=["sigmoid", "tanh"], seed=0)


def test_stack_size_mismatch():
    with pytest.raises(ValueError, match=r"(?s)(8.*7|7.*8)"):
        drnn.DRNN([drnn.LSTM(5, 7, seed=1), drnn.GRU(8, 3, seed=1)])


# ---------------------------------------------------------------------------
# NaN propagation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [
    lambda: drnn.LSTM(5, 7, 2, bidirectional=True, seed=1),
    lambda: drnn.GRU(5, 7, seed=1),
    lambda: drnn.RNN(5, 7, nonlinearity="relu", seed=1),
    lambda: drnn.LSTM(5, 7, proj_size=3, peepholes=True, seed=1),
], ids=["lstm_bi", "gru", "rnn_relu", "lstm_proj_peep"])
def test_nan_propagates_per_sequence(layer):
    m = drnn.DRNN([layer()])
    x = np.random.default_rng(0).standard_normal((3, 6, 5)).astype(np.float32)
    x[1, 2, 3] = np.nan
    y, st = m.predict(x, return_state=True)
    clean = m.predict(x[[0, 2]])
    bi = y.shape[-1] == 14
    # forward direction: NaN from step 2 on; the other sequences are untouched
    assert np.all(np.isnan(y[1, 2:, :7 if bi else None]))
    if not bi:
        assert np.all(np.isfinite(y[1, :2]))
    else:
        assert np.all(np.isnan(y[1, :3, 7:]))   # backward direction: steps <= 2
    np.testing.assert_array_equal(y[[0, 2]], clean)
    h = st[0] if isinstance(st, tuple) else st
    assert np.all(np.isnan(h[..., 1, :])) and np.all(np.isfinite(h[..., [0, 2], :]))


def test_nan_everywhere_no_crash():
    m = drnn.DRNN([drnn.GRU(5, 4, seed=3), drnn.Dense(4, 2, activation="softmax", seed=3)])
    y = m.predict(np.full((2, 3, 5), np.nan, np.float32))
    assert y.shape == (2, 3, 2) and np.all(np.isnan(y))


# ---------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------

def _hand_built():
    rng = np.random.default_rng(42)
    V, E, H1, P, H2, O = 17, 6, 8, 5, 7, 3
    emb = rng.standard_normal((V, E)).astype(np.float32)
    lw = reference.random_weights("LSTM", E, H1, 2, bidirectional=True, proj_size=P,
                                  peepholes=True, rng=rng)
    gw = reference.random_weights("GRU", 2 * P, H2, 1, rng=rng)
    dw = rng.standard_normal((O, H2)).astype(np.float32)
    db = rng.standard_normal(O).astype(np.float32)
    model = drnn.DRNN([
        drnn.Embedding(V, E, weight=emb),
        drnn.LSTM(E, H1, 2, bidirectional=True, proj_size=P, peepholes=True, clip=2.5,
                  activations=["sigmoid", ("scaled_tanh", 0.9, 1.1), "tanh"], weights=lw),
        drnn.GRU(2 * P, H2, linear_before_reset=False, reverse=True,
                 activations=[("hard_sigmoid", 0.25, 0.45), "softsign"], weights=gw),
        drnn.Dense(H2, O, activation="softmax", weight=dw, bias=db),
    ])
    arrays = [emb, dw, db, *lw.values(), *gw.values()]
    return model, arrays, V


def _read_safetensors(path):
    import json
    import struct
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = (v["dtype"], tuple(v["shape"]), data[s:e])
    return out


def test_save_load_round_trip_bit_exact(tmp_path):
    model, arrays, V = _hand_built()
    rng = np.random.default_rng(1)
    ids = rng.integers(0, V, (3, 7))
    lengths = [7, 2, 5]
    y0, s0 = model.predict(ids, lengths=lengths, return_state=True)
    path = os.path.join(tmp_path, "m.drnn.safetensors")
    model.save(path)
    loaded = drnn.load(path)
    y1, s1 = loaded.predict(ids, lengths=lengths, return_state=True)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(s1[0][0], s0[0][0])
    np.testing.assert_array_equal(s1[0][1], s0[0][1])
    np.testing.assert_array_equal(s1[1], s0[1])
    # every weight is stored bit-exactly in the file
    stored = _read_safetensors(path)
    blobs = {(shape, raw) for dtype, shape, raw in stored.values() if dtype == "F32"}
    for a in arrays:
        a = np.ascontiguousarray(a, dtype="<f4")
        assert (a.shape, a.tobytes()) in blobs, f"a weight of shape {a.shape} is not stored bit-exactly"
    # saving the loaded model gives the same tensors again
    path2 = os.path.join(tmp_path, "m2.drnn.safetensors")
    loaded.save(path2)
    assert _read_safetensors(path2) == stored


def test_load_of_saved_model_handles_each_option(tmp_path):
    """Options that only change the math (clip, activations, reverse, ...) survive a save."""
    model, _, V = _hand_built()
    ids = np.random.default_rng(2).integers(0, V, (2, 5))
    path = os.path.join(tmp_path, "m.drnn.safetensors")
    model.save(path)
    loaded = drnn.load(path)
    np.testing.assert_array_equal(loaded.predict(ids), model.predict(ids))
    # and the reference agrees, so the options really were in effect
    ref = _hand_built_reference()
    assert_close(model.predict(ids), ref.predict(ids))


def _hand_built_reference():
    rng = np.random.default_rng(42)
    V, E, H1, P, H2, O = 17, 6, 8, 5, 7, 3
    emb = rng.standard_normal((V, E)).astype(np.float32)
    lw = reference.random_weights("LSTM", E, H1, 2, bidirectional=True, proj_size=P,
                                  peepholes=True, rng=rng)
    gw = reference.random_weights("GRU", 2 * P, H2, 1, rng=rng)
    dw = rng.standard_normal((O, H2)).astype(np.float32)
    db = rng.standard_normal(O).astype(np.float32)
    return reference.Model([
        reference.Embedding(V, E, weight=emb),
        reference.LSTM(E, H1, 2, bidirectional=True, proj_size=P, peepholes=True, clip=2.5,
                       activations=["sigmoid", ("scaled_tanh", 0.9, 1.1), "tanh"], weights=lw),
        reference.GRU(2 * P, H2, linear_before_reset=False, reverse=True,
                      activations=[("hard_sigmoid", 0.25, 0.45), "softsign"], weights=gw),
        reference.Dense(H2, O, activation="softmax", weight=dw, bias=db),
    ])


def test_pickle_round_trip():
    model, _, V = _hand_built()
    ids = np.random.default_rng(3).integers(0, V, (2, 4))
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.predict(ids), model.predict(ids))


def test_load_missing_file(tmp_path):
    with pytest.raises((OSError, ValueError), match="nope"):
        drnn.load(os.path.join(tmp_path, "nope.drnn.safetensors"))


def test_load_corrupt_file(tmp_path):
    model, _, _ = _hand_built()
    path = os.path.join(tmp_path, "m.drnn.safetensors")
    model.save(path)
    with open(path, "rb") as f:
        blob = f.read()
    bad = os.path.join(tmp_path, "bad.drnn.safetensors")
    with open(bad, "wb") as f:
        f.write(blob[: len(blob) // 2])      # truncated
    with pytest.raises(ValueError):
        drnn.load(bad)


# ---------------------------------------------------------------------------
# more construction errors: sizes and options that cannot work
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("make,match", [
    (lambda: drnn.LSTM(5, 0, seed=1), "hidden_size"),
    (lambda: drnn.GRU(0, 3, seed=1), "input_size"),
    (lambda: drnn.RNN(5, 3, 0, seed=1), "num_layers"),
    (lambda: drnn.LSTM(5, 3, proj_size=3, seed=1), "proj_size"),
    (lambda: drnn.LSTM(5, 3, proj_size=-1, seed=1), "proj_size"),
    (lambda: drnn.GRU(5, 3, reverse=True, bidirectional=True, seed=1), "reverse"),
    (lambda: drnn.RNN(5, 3, nonlinearity="sigmoid", seed=1), "sigmoid"),
    (lambda: drnn.LSTM(5, 3, clip=-1.0, seed=1), "clip"),
    (lambda: drnn.LSTM(5, 3, clip=float("nan"), seed=1), "clip"),
    (lambda: drnn.Dense(5, 3, activation="gelu", seed=1), "gelu"),
    (lambda: drnn.Dense(5, 3, weight=np.zeros((5, 3), np.float32)), r"\(3, 5\)"),
    (lambda: drnn.Embedding(5, 3, weight=np.zeros((3, 5), np.float32)), r"\(5, 3\)"),
    (lambda: drnn.DRNN([]), "layer"),
    (lambda: drnn.DRNN([drnn.LSTM(5, 3, seed=1, return_sequences=False), drnn.GRU(3, 3, seed=1)]),
     "GRU|sequence"),
], ids=["hidden0", "input0", "layers0", "proj_eq_hidden", "proj_neg", "reverse_bi",
        "nonlinearity", "clip_neg", "clip_nan", "dense_act", "dense_weight_T", "emb_weight_T",
        "empty_model", "rnn_after_last_step"])
def test_invalid_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_unexpected_weight_named():
    w = reference.random_weights("LSTM", 5, 3, rng=0)
    w["weight_ih_l1"] = np.zeros((12, 3), np.float32)
    with pytest.raises(ValueError, match="weight_ih_l1"):
        drnn.LSTM(5, 3, weights=w)


def test_complex_weights_rejected():
    w = reference.random_weights("LSTM", 5, 3, rng=0)
    w["weight_ih_l0"] = w["weight_ih_l0"].astype(np.complex64)
    with pytest.raises((TypeError, ValueError), match="weight_ih_l0"):
        drnn.LSTM(5, 3, weights=w)


def test_complex_state_rejected(gru_model):
    with pytest.raises((TypeError, ValueError), match=r"(?i)dtype|float|complex"):
        gru_model.predict(X, initial_state=np.zeros((1, 2, 6), np.complex64))
