"""The command line: `drnn info` and `drnn convert`, run as a user would."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import drnn


def run(*args):
    return subprocess.run([sys.executable, "-m", "drnn", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def saved(tmp_path):
    m = drnn.DRNN([drnn.Embedding(12, 4, seed=0), drnn.LSTM(4, 6, 2, seed=1),
                   drnn.GRU(6, 5, bidirectional=True, seed=2), drnn.Dense(10, 3, seed=3)])
    path = str(tmp_path / "m.safetensors")
    m.save(path)
    return m, path


def test_info_lists_layers_and_parameters(saved):
    m, path = saved
    r = run("info", path)
    assert r.returncode == 0, r.stderr
    assert f"{m.num_parameters:,} parameters" in r.stdout
    for kind in ("Embedding", "LSTM", "GRU", "Dense"):
        assert kind in r.stdout
    assert "token ids" in r.stdout and "kernels:" in r.stdout


def test_convert_plain_npz_with_architecture(saved, tmp_path):
    m, _ = saved
    npz = tmp_path / "w.npz"
    np.savez(npz, **{f"layers.{i}.{k}": v for i, l in enumerate(m.layers)
                     for k, v in l.params().items()})
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(m.config()))
    out = str(tmp_path / "out.safetensors")
    r = run("convert", str(npz), out, "--architecture", str(arch))
    assert r.returncode == 0, r.stderr
    ids = np.arange(20).reshape(2, 10) % 12
    np.testing.assert_array_equal(drnn.load(out).predict(ids), m.predict(ids))


@pytest.mark.parametrize("content", [None, b"", b"not a model at all", b"PK\x03\x04broken"])
def test_bad_files_give_one_line_and_nonzero_status(tmp_path, content):
    path = tmp_path / "model.safetensors"
    if content is not None:
        path.write_bytes(content)
    r = run("info", str(path))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drnn: error:") and str(path) in lines[0]


def test_npz_without_architecture_is_refused(saved, tmp_path):
    m, _ = saved
    npz = tmp_path / "w.npz"
    np.savez(npz, **{"layers.0.weight": m.layers[0].weight})
    r = run("info", str(npz))
    assert r.returncode != 0 and "architecture" in r.stderr


def test_help():
    for cmd in ([], ["info"], ["convert"]):
        r = run(*cmd, "--help")
        assert r.returncode == 0 and "usage" in r.stdout


def test_convert_refuses_keras_masking_and_says_why(tmp_path):
    pytest.importorskip("h5py")
    keras = pytest.importorskip("keras")
    from keras import layers as L
    model = keras.Sequential([keras.Input((6, 3)), L.Masking(0.0), L.LSTM(4), L.Dense(2)])
    src = str(tmp_path / "m.keras")
    model.save(src)
    out = str(tmp_path / "out.safetensors")
    r = run("convert", src, out)
    assert r.returncode != 0 and "masking" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(out)
    r = run("convert", src, out, "--ignore-masking")
    assert r.returncode == 0, r.stderr
    x = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(drnn.load(out).predict(x), model.predict(x, verbose=0), atol=1e-5)
    r = run("info", src)
    assert r.returncode == 0 and "masking: Masking" in r.stdout


def test_convert_onnx_stack_and_refusal():
    pytest.importorskip("onnx")
    import tempfile
    fx = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "onnx")
    src = os.path.join(fx, "torch_lstm_bi_2layer_linear.onnx")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out.safetensors")
        r = run("convert", src, out)
        assert r.returncode == 0, r.stderr
        with np.load(os.path.join(fx, "torch_lstm_bi_2layer_linear.npz")) as z:
            feeds = {k[3:]: z[k] for k in z.files if k.startswith("in_")}
            expected = [z[k] for k in z.files if k.startswith("out_")][0]
        x = next(iter(feeds.values()))
        np.testing.assert_allclose(drnn.load(out).predict(x), expected, atol=1e-5)
        assert "converted from the ONNX graph" in r.stdout
        r = run("info", src)
        assert "drnn convert: yes" in r.stdout
        bad = os.path.join(fx, "torch_embedding_gru_mlp.onnx")
        r = run("convert", bad, out + "2.safetensors")
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert "'/Gather'" in r.stderr and "bidirectional" in r.stderr
        assert not os.path.exists(out + "2.safetensors")


def test_timeout_stops_a_hanging_parse():
    """--timeout parses in a child process: the HDF5 library's loop on this
    damaged file (tests/test_fuzz.py) ends as a one-line error."""
    pytest.importorskip("h5py")
    path = os.path.join(os.path.dirname(__file__), "fixtures", "hostile",
                        "h5_global_heap_hang.h5")
    r = run("info", path, "--timeout", "2")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drnn: error:") and path in lines[0]
