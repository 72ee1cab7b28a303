"""drnn against golden fixtures recorded from PyTorch (no torch needed).

The fixtures are written by scripts/make_fixtures.py; see its docstring for
the file layout.  Each fixture is also checked against the numpy reference,
so a bad fixture and a bad reference cannot hide each other.
"""
import glob
import json
import os

import numpy as np
import pytest

import drnn
import helpers
import reference
from helpers import assert_close, assert_state_close

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
FIXTURES = sorted(glob.glob(os.path.join(FIXTURE_DIR, "*.npz")))
EXPECTED = {"lstm_proj_bidirectional", "gru_2layer", "rnn_relu_bidirectional",
            "stack_lengths", "embedding_lstm_linear"}


def test_all_fixtures_present():
    names = {os.path.splitext(os.path.basename(p))[0] for p in FIXTURES}
    missing = EXPECTED - names
    assert not missing, f"missing fixtures {sorted(missing)}: run scripts/make_fixtures.py"
    assert sum(os.path.getsize(p) for p in FIXTURES) < 200 * 1024


def load_fixture(path):
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    config = json.loads(data.pop("config").tobytes().decode("utf-8"))
    return config, data


def _layer_weights(data, i):
    pre = f"layer{i}/"
    return {k[len(pre):]: v for k, v in data.items() if k.startswith(pre)}


def build_models(config, data):
    d_layers, r_layers = [], []
    for i, entry in enumerate(config["layers"]):
        typ, args, kw = entry["type"], entry["args"], entry["kwargs"]
        w = _layer_weights(data, i)
        if typ == "Embedding":
            d_layers.append(drnn.Embedding(*args, weight=w["weight"]))
            r_layers.append(reference.Embedding(*args, weight=w["weight"]))
        elif typ == "Dense":
            bias = w.get("bias", False)
            d_layers.append(drnn.Dense(*args, weight=w["weight"], bias=bias, **kw))
            r_layers.append(reference.Dense(*args, weight=w["weight"], bias=bias, **kw))
        else:
            d_layers.append(getattr(drnn, typ)(*args, weights=w, **kw))
            r_layers.append(getattr(reference, typ)(*args, weights=w, **kw))
    return drnn.DRNN(d_layers), reference.Model(r_layers)


def _states(config, data, prefix_h, prefix_c):
    kinds = [e["type"] for e in config["layers"] if e["type"] in ("RNN", "LSTM", "GRU")]
    if f"{prefix_h}_0" not in data:
        return None
    st = [(data[f"{prefix_h}_{j}"], data[f"{prefix_c}_{j}"]) if k == "LSTM"
          else data[f"{prefix_h}_{j}"] for j, k in enumerate(kinds)]
    return st[0] if len(st) == 1 else st


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: os.path.basename(p)[:-4])
def test_golden(path):
    config, data = load_fixture(path)
    model, _ = build_models(config, data)
    lengths = data.get("lengths")
    init = _states(config, data, "h0", "c0")
    expected_state = _states(config, data, "hn", "cn")
    y, st = model.predict(data["x"], lengths=lengths, initial_state=init, return_state=True)
    assert_close(y, data["y"], what=f"{config['name']}: y")
    assert_state_close(st, expected_state, what=f"{config['name']}: state")


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: os.path.basename(p)[:-4])
def test_golden_fixture_matches_reference(path):
    config, data = load_fixture(path)
    _, ref = build_models(config, data)
    lengths = data.get("lengths")
    init = _states(config, data, "h0", "c0")
    y, st = ref.predict(data["x"], lengths=lengths, initial_state=init, return_state=True)
    assert_close(y, data["y"], helpers.TOL, f"{config['name']}: reference y")
    assert_state_close(st, _states(config, data, "hn", "cn"), helpers.TOL, "reference state")
