"""The command line's demo, predict and bench subcommands, run as a user would
(subprocesses), and its error reporting on bad input."""
import os
import subprocess
import sys

import numpy as np
import pytest

import drnn
from drnn import cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "drnn", *args], capture_output=True,
                          text=True, timeout=120)


def one_error_line(r):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) >= 1
    assert lines[-1].startswith(("drnn: error:", "drnn predict: error:", "drnn demo: error:",
                                 "drnn bench: error:")), r.stderr
    # ours are one line; argparse's are its usage block plus one error line
    if lines[-1].startswith("drnn: error:"):
        assert len(lines) == 1, r.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    m = drnn.DRNN([drnn.LSTM(3, 8, 2, seed=1), drnn.GRU(8, 5, seed=2), drnn.Dense(5, 4, seed=3)])
    path = str(d / "small.safetensors")
    m.save(path)
    return m, path, d


@pytest.mark.parametrize("sub", ["info", "convert", "demo", "predict", "bench"])
def test_every_subcommand_has_help(sub):
    r = run(sub, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: drnn {sub}")


def test_bundled_model_is_shipped():
    assert os.path.getsize(cli.BUNDLED_MODEL) < 8_000_000
    m = drnn.load(cli.BUNDLED_MODEL)
    assert isinstance(m.layers[0], drnn.Embedding) and isinstance(m.layers[1], drnn.LSTM)


def _text(stdout):
    text, sep, stats = stdout.rpartition("\n\n-- ")
    assert sep and "steps/s" in stats and "us per step" in stats
    return text


def test_demo_is_deterministic_for_a_seed():
    a = run("demo", "--length", "120", "--seed", "3")
    b = run("demo", "--length", "120", "--seed", "3")
    c = run("demo", "--length", "120", "--seed", "4")
    for r in (a, b, c):
        assert r.returncode == 0, r.stderr
    ta, tb, tc = _text(a.stdout), _text(b.stdout), _text(c.stdout)
    assert ta.startswith("The ") and len(ta) == len("The ") + 120
    assert ta == tb
    assert ta != tc


def test_demo_matches_the_api():
    """The streamed text equals sampling from model.predict's logits with the same rng."""
    r = run("demo", "--length", "40", "--seed", "7", "--prompt", "def ", "--temperature", "0.5")
    assert r.returncode == 0, r.stderr
    model, chars, _ = cli._bundled()
    index = {c: i for i, c in enumerate(chars)}
    rng = np.random.default_rng(7)
    ids = [index[c] for c in "def "]
    for _ in range(40):
        z = model.predict(np.array(ids))[-1].astype(np.float64) / 0.5
        p = np.exp(z - z.max())
        p /= p.sum()
        ids.append(int(rng.choice(len(p), p=p)))
    assert _text(r.stdout) == "".join(chars[i] for i in ids)


def test_predict_equals_api_features(small):
    m, path, d = small
    x = np.random.default_rng(0).standard_normal((5, 9, 3)).astype(np.float32)
    lengths = np.array([9, 3, 1, 7, 9])
    np.save(d / "x.npy", x)
    np.save(d / "len.npy", lengths)
    out = str(d / "y.npy")
    r = run("predict", path, str(d / "x.npy"), "-o", out, "--lengths", str(d / "len.npy"),
            "--batch-size", "2", "--num-threads", "1")
    assert r.returncode == 0, r.stderr
    assert "3/3 batches" in r.stderr          # the progress bar
    np.testing.assert_array_equal(np.load(out), m.predict(x, lengths=lengths))


def test_predict_equals_api_bundled_tokens(tmp_path):
    m = drnn.load(cli.BUNDLED_MODEL)
    ids = np.random.default_rng(1).integers(0, m.layers[0].num_embeddings, size=(3, 30))
    np.save(tmp_path / "ids.npy", ids)
    r = run("predict", cli.BUNDLED_MODEL, str(tmp_path / "ids.npy"), "-o", str(tmp_path / "y.npy"))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), m.predict(ids))
    # one unbatched sequence
    np.save(tmp_path / "one.npy", ids[0])
    r = run("predict", cli.BUNDLED_MODEL, str(tmp_path / "one.npy"), "-o", str(tmp_path / "y1.npy"))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y1.npy"), m.predict(ids[0]))


def test_bench_prints_its_table():
    r = run("bench", "--steps", "20", "--repeats", "2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = next(l for l in lines if l.startswith("input (batch x time)"))
    assert "drnn" in header
    assert any(l.startswith("1 x 20 ") and l.rstrip().endswith("ms") for l in lines)
    assert any(l.startswith("16 x 20 ") for l in lines)
    peers = [p for p in ("torch", "onnxruntime") if p in header]
    for p in ("torch", "onnxruntime"):
        if p not in header:
            assert "note:" in r.stdout      # a missing peer is said, not silently dropped
    if peers:
        diff = next(l for l in lines if l.startswith("max |output - drnn|"))
        assert all(float(part.split()[-1]) < 1e-3 for part in diff.split(":")[1].split(","))


def test_bench_other_model_drnn_only(small):
    _, path, _ = small
    r = run("bench", path, "--steps", "5", "--repeats", "1", "--batch", "2", "--drnn-only")
    assert r.returncode == 0, r.stderr
    assert "2 x 5 " in r.stdout


def test_bad_inputs_give_one_line(small, tmp_path):
    m, path, d = small
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 3), np.float32))
    np.save(tmp_path / "wrong.npy", np.zeros((2, 4, 7), np.float32))
    np.save(tmp_path / "rank.npy", np.zeros((2, 4, 3, 1), np.float32))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    (tmp_path / "junk.safetensors").write_bytes(b"garbage")
    out = str(tmp_path / "o.npy")
    cases = [
        ("predict", str(tmp_path / "missing.safetensors"), str(tmp_path / "x.npy"), "-o", out),
        ("predict", str(tmp_path / "junk.safetensors"), str(tmp_path / "x.npy"), "-o", out),
        ("predict", path, str(tmp_path / "wrong.npy"), "-o", out),
        ("predict", path, str(tmp_path / "rank.npy"), "-o", out),
        ("predict", path, str(tmp_path / "junk.npy"), "-o", out),
        ("predict", path, str(tmp_path / "nothere.npy"), "-o", out),
        ("bench", str(tmp_path / "missing.safetensors")),
        ("demo", "--prompt", "\u00e9\u00e9"),
        ("demo", "--temperature", "0"),
    ]
    for args in cases:
        line = one_error_line(run(*args))
        assert line.startswith("drnn: error:"), (args, line)
    for args in [("predict", path, str(tmp_path / "x.npy"), "-o", out, "--batch-size", "two"),
                 ("predict", path, str(tmp_path / "x.npy"), "-o", out, "--num-threads", "0"),
                 ("demo", "--length", "many"), ("demo", "--seed", "x"),
                 ("bench", "--repeats", "fast")]:
        r = run(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, args
        assert r.stderr.strip().splitlines()[-1].startswith(f"drnn {args[0]}: error:")
