"""drnn.io.keras.load_keras against live Keras 3 (torch backend) and committed fixtures.

Live tests build real Keras models, save them as .keras and legacy .h5 and
compare drnn's predict() with Keras' (max abs error <= 1e-5).  They skip when
keras is missing, except under CI=true, where they fail.  Fixture and
hostile-file tests need only h5py.
"""
import json
import os
import zipfile

import numpy as np
import pytest

from helpers import assert_close

os.environ.setdefault("KERAS_BACKEND", "torch")

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "keras")
CI = os.environ.get("CI", "").strip().lower() == "true"


def _need(modname):
    try:
        return __import__(modname)
    except ImportError as exc:
        if CI:
            raise ImportError(f"{modname} is required when CI=true but could not be "
                              f"imported: {exc}") from exc
        pytest.skip(f"{modname} is not installed ({exc})")


def import_keras():
    """Import keras (torch backend); skip the test if missing, fail under CI=true."""
    _need("h5py")
    if os.environ.get("KERAS_BACKEND", "torch") != "torch":
        pytest.skip("these tests run Keras with KERAS_BACKEND=torch")
    return _need("keras")


@pytest.fixture
def h5py():
    return _need("h5py")


def load_keras(*a, **kw):
    from drnn.io.keras import load_keras as f
    return f(*a, **kw)


def _errors():
    from drnn.errors import FormatError, UnsupportedError
    return FormatError, UnsupportedError


RNG = np.random.default_rng(2024)
X = RNG.standard_normal((3, 7, 4)).astype(np.float32)
TOK = RNG.integers(1, 20, (3, 7)).astype(np.int32)


def _check(model, x, tmp_path, exts=(".keras", ".h5")):
    ref = np.asarray(model.predict(x, verbose=0))
    for ext in exts:
        path = tmp_path / f"m{ext}"
        model.save(str(path))
        m = load_keras(path)
        assert m.source["format"] == ("keras3" if ext == ".keras" else "keras-h5")
        assert m.source["file"] == str(path)
        assert_close(m.predict(x), ref, what=f"{ext} output")
        # max abs error, as the brief pins it
        assert float(np.max(np.abs(m.predict(x) - ref))) <= 1e-5
    return m


def _models():
    keras = import_keras()
    from keras import layers as L

    def seq(*ls, shape=(7, 4)):
        return lambda: keras.Sequential([keras.Input(shape)] + list(ls))

    return {
        "simplernn": seq(L.SimpleRNN(5, return_sequences=True)),
        "simplernn_relu_last": seq(L.SimpleRNN(5, activation="relu")),
        "lstm": seq(L.LSTM(6, return_sequences=True)),
        "lstm_last_hardsig": seq(L.LSTM(5, recurrent_activation="hard_sigmoid")),
        "lstm_nobias": seq(L.LSTM(5, use_bias=False, return_sequences=True)),
        "gru_reset_after": seq(L.GRU(5, return_sequences=True)),
        "gru_reset_before": seq(L.GRU(5, reset_after=False, return_sequences=True)),
        "gru_nobias_both": seq(L.GRU(4, use_bias=False, return_sequences=True),
                               L.GRU(4, use_bias=False, reset_after=False)),
        "gru_hardsig": seq(L.GRU(5, recurrent_activation="hard_sigmoid", return_sequences=True)),
        "stacked_mixed": seq(L.LSTM(5, return_sequences=True), L.Dropout(0.5),
                             L.GRU(4, return_sequences=True), L.SimpleRNN(3)),
        "stacked_fused": seq(L.LSTM(5, return_sequences=True), L.LSTM(5, return_sequences=True),
                             L.LSTM(5)),
        "bi_concat": seq(L.Bidirectional(L.LSTM(4, return_sequences=True)),
                         L.Bidirectional(L.GRU(3))),
        "bi_sum_dense": seq(L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode="sum"),
                            L.Dense(3, activation="relu")),
        "bi_ave_rnn": seq(L.Bidirectional(L.SimpleRNN(4, return_sequences=True),
                                          merge_mode="ave"), L.LSTM(3)),
        "bi_sum_last": seq(L.Bidirectional(L.LSTM(4), merge_mode="sum")),
        "dense_heads": seq(L.GRU(6, return_sequences=True), L.Dense(5, activation="tanh"),
                           L.Dense(4, activation="sigmoid"), L.Dense(3, activation="softmax")),
        "dense_linear_nobias": seq(L.LSTM(4), L.Dense(2, use_bias=False)),
        "dense_log_softmax": seq(L.LSTM(4, return_sequences=True),
                                 L.Dense(3, activation="log_softmax")),
        "go_backwards_last": seq(L.GRU(4, go_backwards=True), L.Dense(2)),
        "embedding": seq(L.Embedding(20, 4), L.LSTM(5), L.Dense(3, activation="softmax"),
                         shape=(7,)),
    }


CASES = ["simplernn", "simplernn_relu_last", "lstm", "lstm_last_hardsig", "lstm_nobias",
         "gru_reset_after", "gru_reset_before", "gru_nobias_both", "gru_hardsig",
         "stacked_mixed", "stacked_fused", "bi_concat", "bi_sum_dense", "bi_ave_rnn",
         "bi_sum_last", "dense_heads", "dense_linear_nobias", "dense_log_softmax",
         "go_backwards_last", "embedding"]


@pytest.mark.parametrize("case", CASES)
def test_matches_keras(case, tmp_path):
    keras = import_keras()
    keras.utils.set_random_seed(CASES.index(case) + 1)
    model = _models()[case]()
    x = TOK if case == "embedding" else X
    m = _check(model, x, tmp_path)
    if case == "stacked_fused":
        assert len(m.layers) == 1 and m.layers[0].num_layers == 3
    if case in ("lstm_last_hardsig", "gru_hardsig"):
        rec = m.layers[0].activations[0][0]
        assert rec[0] == "hard_sigmoid" and abs(rec[1] - 1 / 6) < 1e-7 and rec[2] == 0.5


def test_functional_chain(tmp_path):
    keras = import_keras()
    from keras import layers as L
    keras.utils.set_random_seed(7)
    i = keras.Input((7, 4))
    h = L.Bidirectional(L.GRU(4, return_sequences=True, reset_after=False))(i)
    h = L.Dropout(0.2)(h)
    h = L.LSTM(3, return_sequences=True)(h)
    m = _check(keras.Model(i, L.Dense(2, activation="tanh")(h)), X, tmp_path)
    assert any("Functional" in r for r in m.source["read"])


def test_weights_only_files_with_architecture(tmp_path, h5py):
    keras = import_keras()
    from keras import layers as L
    from keras.src.legacy.saving import legacy_h5_format
    keras.utils.set_random_seed(8)
    model = keras.Sequential([keras.Input((7, 4)), L.LSTM(4, return_sequences=True),
                              L.GRU(3, reset_after=False), L.Dense(2)])
    ref = np.asarray(model.predict(X, verbose=0))
    arch = model.to_json()
    FormatError, _ = _errors()
    # Keras 3 save_weights: the new layout
    p3 = tmp_path / "m.weights.h5"
    model.save_weights(str(p3))
    with pytest.raises(FormatError, match="architecture="):
        load_keras(p3)
    for a in (arch, json.loads(arch)):
        m = load_keras(p3, architecture=a)
        assert m.source["format"] == "keras3"
        assert_close(m.predict(X), ref)
    # tf.keras 2 style save_weights(".h5"): legacy layout at the root, chunked layer_names
    p2 = tmp_path / "legacy_weights.h5"
    with h5py.File(p2, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
        names = f.attrs["layer_names"]
        del f.attrs["layer_names"]
        f.attrs["layer_names0"] = names[:1]
        f.attrs["layer_names1"] = names[1:]
    m = load_keras(p2, architecture=arch)
    assert m.source["format"] == "keras-h5"
    assert_close(m.predict(X), ref)


def test_tf_keras2_hard_sigmoid(tmp_path, h5py):
    """A file written by Keras 2 means hard_sigmoid = clip(0.2x + 0.5)."""
    keras = import_keras()
    from keras import layers as L
    keras.utils.set_random_seed(9)
    model = keras.Sequential([keras.Input((7, 4)),
                              L.GRU(4, recurrent_activation="hard_sigmoid")])
    p = tmp_path / "m.h5"
    model.save(str(p))
    with h5py.File(p, "a") as f:
        f.attrs["keras_version"] = "2.15.0"
        f["model_weights"].attrs["keras_version"] = "2.15.0"
    m = load_keras(p)
    assert m.layers[0].activations[0][0] == ("hard_sigmoid", pytest.approx(0.2), 0.5)
    assert any("tf.keras 2" in r for r in m.source["read"])


def test_refusals(tmp_path):
    keras = import_keras()
    from keras import layers as L
    FormatError, UnsupportedError = _errors()

    def refused(model, match):
        p = tmp_path / "r.keras"
        model.save(str(p))
        with pytest.raises(UnsupportedError, match=match):
            load_keras(p)
    inp = (7, 4)
    refused(keras.Sequential([keras.Input(inp), L.GRU(3, go_backwards=True,
                                                       return_sequences=True)]),
            "go_backwards")
    # Keras itself cannot build Bidirectional(merge_mode=None) -> Dense; a hand-edited config can
    p = tmp_path / "none.keras"
    keras.Sequential([keras.Input(inp), L.Bidirectional(L.GRU(3, return_sequences=True)),
                      L.Dense(2)]).save(str(p))
    with zipfile.ZipFile(p) as zi:
        members = {n: zi.read(n) for n in zi.namelist()}
    cfg = json.loads(members["config.json"])
    cfg["config"]["layers"][1]["config"]["merge_mode"] = None
    members["config.json"] = json.dumps(cfg).encode()
    with zipfile.ZipFile(p, "w") as zo:
        for n, data in members.items():
            zo.writestr(n, data)
    with pytest.raises(UnsupportedError, match="merge_mode=None"):
        load_keras(p)
    refused(keras.Sequential([keras.Input(inp), L.Dense(4), L.Masking(), L.LSTM(3)]),
            "Masking layer only as the model's first")
    refused(keras.Sequential([keras.Input(inp), L.Masking(), L.LSTM(3, return_sequences=True),
                              L.SpatialDropout1D(0.1), L.LSTM(2)]), "drops the Keras mask")
    refused(keras.Sequential([keras.Input(inp), L.Conv1D(3, 2)]), "Conv1D")
    refused(keras.Sequential([keras.Input(inp), L.LSTM(3, activation="selu")]), "selu")


def test_ignore_masking_right_padded(tmp_path):
    keras = import_keras()
    from keras import layers as L
    keras.utils.set_random_seed(10)
    model = keras.Sequential([keras.Input((7, 4)), L.Masking(0.0),
                              L.Bidirectional(L.GRU(4)), L.Dense(2)])
    lengths = np.array([7, 4, 2])
    x = X.copy()
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0
    ref = np.asarray(model.predict(x, verbose=0))
    p = tmp_path / "m.keras"
    model.save(str(p))
    m = load_keras(p, ignore_masking=True)
    assert m.source["masking"][0]["type"] == "Masking"
    assert_close(m.predict(x, lengths=lengths), ref)


def test_lambda_config_refused_not_run(tmp_path):
    keras = import_keras()
    from keras import layers as L
    _, UnsupportedError = _errors()
    model = keras.Sequential([keras.Input((7, 4)), L.LSTM(3, return_sequences=True),
                              L.Lambda(lambda t: t * 2)])
    p = tmp_path / "lam.keras"
    model.save(str(p))
    with pytest.raises(UnsupportedError, match="Lambda"):
        load_keras(p)


# --------------------------------------------------------------------------
# without keras: committed fixtures and hostile files (h5py only)
# --------------------------------------------------------------------------

FIXTURE_FILES = ["lstm_hardsig_dense.keras", "bigru_reset_before.h5",
                 "functional_embedding_gru_rnn.keras"]


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixture(name, h5py):
    m = load_keras(os.path.join(FIXTURES, name))
    d = np.load(os.path.join(FIXTURES, name.rsplit(".", 1)[0] + ".npz"), allow_pickle=False)
    y = m.predict(d["x"])
    assert float(np.max(np.abs(y - d["y"]))) <= 1e-5
    assert m.source["format"] == ("keras-h5" if name.endswith(".h5") else "keras3")
    assert m.source["read"]


def _hostile(h5py, tmp_path):
    src = os.path.join(FIXTURES, "lstm_hardsig_dense.keras")
    h5src = os.path.join(FIXTURES, "bigru_reset_before.h5")
    data, h5data = open(src, "rb").read(), open(h5src, "rb").read()
    files = {}
    files["empty.keras"] = b""
    files["empty.h5"] = b""
    files["magic.keras"] = b"\x00NOTAZIP" + data[8:]
    files["magic.h5"] = b"GIF89a" + h5data[6:]
    files["trunc.keras"] = data[:len(data) // 2]
    files["trunc.h5"] = h5data[:len(h5data) // 2]
    files["tiny.h5"] = h5data[:100]
    out = {}
    for n, b in files.items():
        p = tmp_path / n
        p.write_bytes(b)
        out[n] = p
    # a zip without config.json
    p = tmp_path / "noconfig.keras"
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(p, "w") as zo:
        for item in zi.namelist():
            if item != "config.json":
                zo.writestr(item, zi.read(item))
    out["noconfig.keras"] = p
    # an HDF5 file with weights but no model_config
    p = tmp_path / "noconfig.h5"
    p.write_bytes(h5data)
    with h5py.File(p, "a") as f:
        del f.attrs["model_config"]
    out["noconfig.h5"] = p
    # a weight of the wrong shape
    p = tmp_path / "shape.h5"
    p.write_bytes(h5data)
    with h5py.File(p, "a") as f:
        g = f["model_weights/dense_1"]
        key = [k for k in g.attrs["weight_names"] if str(k).endswith("kernel")][0]
        key = key.decode() if isinstance(key, bytes) else str(key)
        del g[key]
        g[key] = np.zeros((5, 3), np.float32)
    out["shape.h5"] = p
    # malformed config JSON
    p = tmp_path / "badjson.keras"
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(p, "w") as zo:
        for item in zi.namelist():
            zo.writestr(item, b"{not json" if item == "config.json" else zi.read(item))
    out["badjson.keras"] = p
    return out


HOSTILE = ["empty.keras", "empty.h5", "magic.keras", "magic.h5", "trunc.keras", "trunc.h5",
           "tiny.h5", "noconfig.keras", "noconfig.h5", "shape.h5", "badjson.keras"]


@pytest.mark.parametrize("name", HOSTILE)
def test_broken_files(name, h5py, tmp_path):
    FormatError, _ = _errors()
    p = _hostile(h5py, tmp_path)[name]
    with pytest.raises(FormatError) as info:
        load_keras(p)
    assert str(p) in str(info.value)


def test_lambda_in_config_refused_without_keras(h5py, tmp_path):
    """A hand-made config holding a Lambda (marshalled code) is refused, never run."""
    _, UnsupportedError = _errors()
    src = os.path.join(FIXTURES, "lstm_hardsig_dense.keras")
    with zipfile.ZipFile(src) as zi:
        cfg = json.loads(zi.read("config.json"))
        members = {n: zi.read(n) for n in zi.namelist()}
    cfg["config"]["layers"].append({
        "module": "keras.layers", "class_name": "Lambda",
        "config": {"name": "evil", "function": {"class_name": "__lambda__", "config": {
            "code": "4wEAAAAAAAAA", "defaults": None, "closure": None}},
            "arguments": {}}})
    p = tmp_path / "lambda.keras"
    with zipfile.ZipFile(p, "w") as zo:
        for n, b in members.items():
            zo.writestr(n, json.dumps(cfg) if n == "config.json" else b)
    with pytest.raises(UnsupportedError, match="Lambda"):
        load_keras(p)
    # also through architecture= for a weights-only load
    cfg["config"]["layers"][-1]["class_name"] = "MyLayer"
    with pytest.raises(UnsupportedError, match="code"):
        load_keras(src, architecture=cfg)


def test_drnn_does_not_import_keras_or_torch(h5py):
    import subprocess
    import sys
    code = ("import sys, drnn; from drnn.io.keras import load_keras; "
            f"load_keras({os.path.join(FIXTURES, FIXTURE_FILES[0])!r}); "
            "bad = [m for m in ('keras', 'torch', 'tensorflow') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_h5py_message(monkeypatch):
    import builtins
    real = builtins.__import__

    def fake(name, *a, **kw):
        if name == "h5py":
            raise ImportError("No module named 'h5py'")
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match=r"pip install drnn\[keras\]"):
        load_keras(os.path.join(FIXTURES, FIXTURE_FILES[0]))


# --------------------------------------------------------------------------
# masking (Masking, Embedding(mask_zero=True)) and merge modes mul / None
# --------------------------------------------------------------------------

def _mask_pattern(kind, B=5, T=8):
    """(B, T) bool: True = step kept."""
    m = np.ones((B, T), bool)
    if kind == "right":
        for b, n in enumerate([8, 5, 3, 1, 6]):
            m[b, n:] = False
    elif kind == "left":
        for b, n in enumerate([0, 2, 5, 7, 1]):
            m[b, :n] = False
    elif kind == "holes":
        m[0, [1, 2]] = False
        m[1, [0, 7]] = False
        m[2, 3:6] = False
        m[3, ::2] = False
        m[4, [6]] = False
    elif kind == "mixed":          # every kind at once, with fully masked rows
        m[0, 5:] = False
        m[1, :3] = False
        m[2, [1, 4, 5]] = False
        m[3, :] = False
        m[4, :] = False
    return m


MASKS = ["right", "left", "holes", "mixed"]


def _masked_models():
    keras = import_keras()
    from keras import layers as L

    def seq(*ls, shape=(8, 3), mask=True):
        pre = [L.Masking(0.0)] if mask else []
        return lambda: keras.Sequential([keras.Input(shape)] + pre + list(ls))

    return {
        "lstm_seq": seq(L.LSTM(4, return_sequences=True)),
        "lstm_last": seq(L.LSTM(4)),
        "gru_seq_dense": seq(L.GRU(4, return_sequences=True), L.Dense(2, activation="tanh")),
        "gru_before_last": seq(L.GRU(4, reset_after=False), L.Dense(2)),
        "rnn_seq": seq(L.SimpleRNN(4, return_sequences=True)),
        "rnn_last": seq(L.SimpleRNN(4, activation="relu")),
        "stacked_mixed": seq(L.LSTM(5, return_sequences=True), L.Dropout(0.3),
                             L.Dense(4, activation="relu"), L.GRU(4, return_sequences=True),
                             L.SimpleRNN(3, return_sequences=True), L.Dense(2)),
        "stacked_fused_last": seq(L.LSTM(4, return_sequences=True), L.LSTM(4),
                                  L.Dense(2, activation="softmax")),
        "zero_output_seq": seq(L.LSTM(4, return_sequences=True, zero_output_for_mask=True),
                               L.Dense(2)),
        "zero_output_last": seq(L.GRU(4, zero_output_for_mask=True), L.Dense(2)),
        "go_backwards_last": seq(L.LSTM(4, go_backwards=True), L.Dense(2)),
        "bi_concat_seq": seq(L.Bidirectional(L.LSTM(4, return_sequences=True)), L.Dense(2)),
        "bi_sum_seq": seq(L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode="sum")),
        "bi_ave_stack": seq(L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode="ave"),
                            L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="ave")),
        "bi_mul_last": seq(L.Bidirectional(L.SimpleRNN(4), merge_mode="mul"), L.Dense(2)),
        "bi_mul_seq": seq(L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="mul"),
                          L.Dense(3, activation="sigmoid")),
        "bi_concat_last": seq(L.Bidirectional(L.GRU(3)), L.Dense(2)),
        "bi_none_seq": seq(L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode=None)),
        "bi_none_last": seq(L.Bidirectional(L.GRU(3), merge_mode=None)),
        "embedding_stack": seq(L.Embedding(20, 4, mask_zero=True),
                               L.LSTM(5, return_sequences=True), L.Dropout(0.2),
                               L.Bidirectional(L.GRU(3, return_sequences=True)),
                               L.LSTM(4, return_sequences=True),
                               L.Dense(3, activation="softmax"), shape=(8,), mask=False),
        "embedding_last": seq(L.Embedding(20, 4, mask_zero=True), L.GRU(5, return_sequences=True),
                              L.GRU(4), shape=(8,), mask=False),
    }


MASKED_CASES = [
    "lstm_seq", "lstm_last", "gru_seq_dense", "gru_before_last", "rnn_seq", "rnn_last",
    "stacked_mixed", "stacked_fused_last", "zero_output_seq", "zero_output_last",
    "go_backwards_last", "bi_concat_seq", "bi_sum_seq", "bi_ave_stack", "bi_mul_last",
    "bi_mul_seq", "bi_concat_last", "bi_none_seq", "bi_none_last", "embedding_stack",
    "embedding_last"]


def _masked_input(case, kind):
    rng = np.random.default_rng(MASKED_CASES.index(case) * 10 + MASKS.index(kind))
    mask = _mask_pattern(kind)
    if case.startswith("embedding"):
        x = rng.integers(1, 20, mask.shape)
        x[~mask] = 0
    else:
        x = rng.standard_normal(mask.shape + (3,)).astype(np.float32)
        x[~mask] = 0.0
    return x, mask


def _max_err(y, ref):
    if isinstance(ref, (list, tuple)):
        assert isinstance(y, tuple) and len(y) == len(ref) == 2
        return max(_max_err(a, b) for a, b in zip(y, ref))
    assert y.shape == np.shape(ref)
    return float(np.max(np.abs(y - np.asarray(ref))))


@pytest.mark.parametrize("case", MASKED_CASES)
def test_masking_matches_keras(case, tmp_path):
    keras = import_keras()
    from drnn.io.keras import KerasModel
    keras.utils.set_random_seed(100 + MASKED_CASES.index(case))
    model = _masked_models()[case]()
    exts = (".keras", ".h5") if case in ("stacked_mixed", "bi_none_seq") else (".keras",)
    for ext in exts:
        path = tmp_path / f"m{ext}"
        model.save(str(path))
        m = load_keras(path)
        assert isinstance(m, KerasModel)
        assert any("masking" in r for r in m.source["read"]) or case.startswith("bi_none")
        for kind in MASKS:
            x, _ = _masked_input(case, kind)
            ref = model.predict(x, verbose=0)
            err = _max_err(m.predict(x), ref)
            assert err <= 1e-5, (ext, kind, err)


def test_masking_nonzero_mask_value_and_no_masked_step(tmp_path):
    """mask_value is read from the config; a step is masked only when every feature equals it."""
    keras = import_keras()
    from keras import layers as L
    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((8, 3)), L.Masking(-1.5),
                              L.LSTM(4, return_sequences=True), L.Dense(2)])
    p = tmp_path / "m.keras"
    model.save(str(p))
    m = load_keras(p)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 8, 3)).astype(np.float32)
    x[0, 2] = -1.5            # masked
    x[1, 3, 0] = -1.5         # one feature only: not masked
    x[2, 5:] = -1.5
    for xx in (x, x[:, :, :] + 0):
        assert _max_err(m.predict(xx), model.predict(xx, verbose=0)) <= 1e-5
    # no masked step: same numbers as the plain stack
    y = rng.standard_normal((2, 8, 3)).astype(np.float32)
    assert _max_err(m.predict(y), model.predict(y, verbose=0)) <= 1e-5
    np.testing.assert_array_equal(m.predict(y), m.model.predict(y))


def test_masking_input_forms_lengths_and_state(tmp_path):
    """list / single inputs and lengths= on a masked model; final state = last unmasked step."""
    keras = import_keras()
    from keras import layers as L
    keras.utils.set_random_seed(12)
    model = keras.Sequential([keras.Input((8, 3)), L.Masking(0.0),
                              L.LSTM(4, return_sequences=True), L.GRU(3, return_sequences=True)])
    p = tmp_path / "m.keras"
    model.save(str(p))
    m = load_keras(p)
    plain = load_keras(p, ignore_masking=True)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 8, 3)).astype(np.float32)
    x[0, [2, 3]] = 0.0
    x[1, :4] = 0.0
    x[2, 6:] = 0.0
    lengths = np.array([8, 6, 5])
    xr = x.copy()
    for b, n in enumerate(lengths):
        xr[b, n:] = 0.0
    ref = np.asarray(model.predict(xr, verbose=0))
    y = m.predict(x, lengths=lengths)
    for b, n in enumerate(lengths):
        assert_close(y[b, :n], ref[b, :n])
        assert not y[b, n:].any()
    ys = m.predict([x[b, :n] for b, n in enumerate(lengths)])
    for b, n in enumerate(lengths):
        assert_close(ys[b], ref[b, :n])
    assert_close(m.predict(x[1]), np.asarray(model.predict(x[1:2], verbose=0))[0])
    # final states: the plain stack run on each row's unmasked steps alone
    _, states = m.predict(x, return_state=True)
    for b in range(3):
        keep = np.any(x[b] != 0, axis=-1)
        _, st = plain.predict(x[b][keep], return_state=True)
        assert_close(states[0][0][:, b], st[0][0])       # LSTM h
        assert_close(states[0][1][:, b], st[0][1])       # LSTM c
        assert_close(states[1][:, b], st[1])             # GRU h
    # initial_state goes through; a fully masked row keeps it
    x[2] = 0.0
    s0 = [(np.full((1, 3, 4), 0.1, np.float32), np.full((1, 3, 4), -0.2, np.float32)),
          np.full((1, 3, 3), 0.3, np.float32)]
    _, st = m.predict(x, initial_state=s0, return_state=True)
    np.testing.assert_array_equal(st[1][:, 2], s0[1][:, 2])
    np.testing.assert_array_equal(st[0][1][:, 2], s0[0][1][:, 2])


def test_masked_model_cannot_be_saved_or_streamed(tmp_path):
    keras = import_keras()
    from keras import layers as L
    _, UnsupportedError = _errors()
    model = keras.Sequential([keras.Input((8,)), L.Embedding(9, 3, mask_zero=True), L.LSTM(3)])
    p = tmp_path / "m.keras"
    model.save(str(p))
    m = load_keras(p)
    with pytest.raises(UnsupportedError, match="masking"):
        m.save(str(tmp_path / "out.safetensors"))
    with pytest.raises(UnsupportedError, match="masking"):
        m.stream()
    import pickle
    tok = np.array([[1, 2, 0, 3, 0, 0, 0, 0]])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(m)).predict(tok), m.predict(tok))
    # ignore_masking=True: the plain stack, which can be saved
    plain = load_keras(p, ignore_masking=True)
    plain.save(str(tmp_path / "out.safetensors"))


@pytest.mark.parametrize("merge", ["mul", None])
def test_merge_mul_and_none_without_mask(merge, tmp_path):
    keras = import_keras()
    from keras import layers as L
    keras.utils.set_random_seed(13)
    for rs in (True, False):
        model = keras.Sequential([keras.Input((7, 4)),
                                  L.Bidirectional(L.LSTM(4, return_sequences=True),
                                                  merge_mode="concat"),
                                  L.Bidirectional(L.GRU(3, return_sequences=rs),
                                                  merge_mode=merge)])
        p = tmp_path / "m.keras"
        model.save(str(p))
        m = load_keras(p)
        ref = model.predict(X, verbose=0)
        assert _max_err(m.predict(X), ref) <= 1e-5
        if merge == "mul":
            assert m.layers[-1].merge_mode == "mul" and m.output_size == 3
            # drnn's own format keeps the merge mode
            out = tmp_path / "m.safetensors"
            m.save(str(out))
            import drnn
            np.testing.assert_array_equal(drnn.load(str(out)).predict(X), m.predict(X))
        else:
            assert m.output_size == 3
            ys = m.predict([X[0], X[1, :4]])
            assert isinstance(ys, tuple) and len(ys[0]) == 2
            assert_close(ys[0][0], np.asarray(ref[0])[0])


def test_cli_predict_merge_none_pair_joined_over_batches(tmp_path):
    """`drnn predict` on a model returning (forward, backward): each output
    joined over the --batch-size chunks, the pair stacked on axis 0."""
    import subprocess
    import sys
    keras = import_keras()
    L = keras.layers
    km = keras.Sequential([keras.Input((6, 3)),
                           L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode=None)])
    path = str(tmp_path / "bi_none.keras")
    km.save(path)
    x = np.random.default_rng(3).standard_normal((5, 6, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = str(tmp_path / "y.npy")
    r = subprocess.run([sys.executable, "-m", "drnn", "predict", path, str(tmp_path / "x.npy"),
                        "-o", out, "--batch-size", "2"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    import drnn
    fwd, bwd = drnn.load(path).predict(x)
    np.testing.assert_array_equal(np.load(out), np.stack([fwd, bwd]))
    kf, kb = km.predict(x, verbose=0)
    assert_close(np.load(out), np.stack([np.asarray(kf), np.asarray(kb)]))
