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
        "go_backwards_last": seq(L.GRU(4, go_backwards=True), L.Dense(2)),
        "embedding": seq(L.Embedding(20, 4), L.LSTM(5), L.Dense(3, activation="softmax"),
                         shape=(7,)),
    }


CASES = ["simplernn", "simplernn_relu_last", "lstm", "lstm_last_hardsig", "lstm_nobias",
         "gru_reset_after", "gru_reset_before", "gru_nobias_both", "gru_hardsig",
         "stacked_mixed", "stacked_fused", "bi_concat", "bi_sum_dense", "bi_ave_rnn",
         "bi_sum_last", "dense_heads", "dense_linear_nobias", "go_backwards_last", "embedding"]


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
    refused(keras.Sequential([keras.Input(inp), L.Bidirectional(L.GRU(3), merge_mode="mul")]),
            "'mul'")
    refused(keras.Sequential([keras.Input(inp), L.Masking(), L.LSTM(3)]), "masking")
    refused(keras.Sequential([keras.Input((7,)), L.Embedding(9, 3, mask_zero=True), L.LSTM(3)]),
            "mask_zero")
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
