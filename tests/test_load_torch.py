"""drnn.io.torch_pt.load_pt: PyTorch checkpoints read without torch.

Three parts:
* committed fixtures (tests/fixtures/torch/*.pt + expected outputs in .npz)
  and hand-built hostile / broken archives -- no torch needed;
* real files written by torch.save in tmp_path, compared with the torch
  module's output over a grid of cell types and options (torch needed:
  skipped without it, an error under CI=true);
* a subprocess proving that loading never imports torch.
"""
import glob
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from helpers import assert_close, import_torch

import drnn
from drnn.errors import FormatError, ShapeError, UnsupportedError
from drnn.io.torch_pt import load_pt

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = sorted(glob.glob(os.path.join(HERE, "fixtures", "torch", "*.pt")))
LEGACY_MAGIC = (0x1950a86a20f9469cfc6c).to_bytes(10, "little")


# ---------------------------------------------------------------------------
# a tiny protocol-2 pickle writer, so broken state_dicts can be built without torch
# ---------------------------------------------------------------------------

class G:
    """A global reference in the pickle (module, name)."""

    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    """func(*args) in the pickle: GLOBAL + args tuple + REDUCE."""

    def __init__(self, func, *args):
        self.func, self.args = func, args


class PID:
    """A persistent id (BINPERSID) around a tuple."""

    def __init__(self, value):
        self.value = value


def _enc(obj, out):
    if isinstance(obj, G):
        out += b"c" + f"{obj.module}\n{obj.name}\n".encode()
    elif isinstance(obj, Call):
        _enc(obj.func, out)
        _enc(tuple(obj.args), out)
        out += b"R"
    elif isinstance(obj, PID):
        _enc(obj.value, out)
        out += b"Q"
    elif obj is None:
        out += b"N"
    elif obj is True or obj is False:
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
        out += b"J" + struct.pack("<i", obj)
    elif isinstance(obj, float):
        out += b"G" + struct.pack(">d", obj)
    elif isinstance(obj, str):
        raw = obj.encode()
        out += b"X" + struct.pack("<I", len(raw)) + raw
    elif isinstance(obj, tuple):
        out += b"("
        for v in obj:
            _enc(v, out)
        out += b"t"
    elif isinstance(obj, dict):
        out += b"}"
        if obj:
            out += b"("
            for k, v in obj.items():
                _enc(k, out)
                _enc(v, out)
            out += b"u"
    else:
        raise TypeError(type(obj))


def dumps(obj):
    out = bytearray(b"\x80\x02")
    _enc(obj, out)
    return bytes(out + b".")


def tensor(key, numel, size, stride=None, offset=0, storage="FloatStorage"):
    """What torch.save writes for a tensor: _rebuild_tensor_v2(persistent storage, ...)."""
    if stride is None:
        stride, acc = [], 1
        for s in reversed(size):
            stride.insert(0, acc)
            acc *= s
    return Call(G("torch._utils", "_rebuild_tensor_v2"),
                PID(("storage", G("torch", storage), key, "cpu", numel)),
                offset, tuple(size), tuple(stride), False,
                Call(G("collections", "OrderedDict")))


def write_archive(path, pkl, storages=(), top="archive", extra=(), byteorder="little"):
    """A zip laid out like torch.save's (records stored uncompressed)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{top}/data.pkl", pkl)
        z.writestr(f"{top}/byteorder", byteorder)
        for key, data in dict(storages).items():
            z.writestr(f"{top}/data/{key}", data)
        for name, data in extra:
            z.writestr(name, data)
        z.writestr(f"{top}/version", "3\n")
    return str(path)


def state_dict_file(path, shapes, short=None):
    """A state_dict archive with float32 storages of the given shapes (random values)."""
    rng = np.random.default_rng(0)
    entries, storages = {}, {}
    for i, (name, shape) in enumerate(shapes.items()):
        n = int(np.prod(shape))
        entries[name] = tensor(str(i), n, shape)
        data = rng.standard_normal(n).astype("<f4").tobytes()
        storages[str(i)] = data[:short] if short is not None and i == 0 else data
    return write_archive(path, dumps(entries), storages)


def lstm_shapes(prefix, inp, hid, layers=1):
    out = {}
    for k in range(layers):
        i = inp if k == 0 else hid
        out.update({f"{prefix}weight_ih_l{k}": (4 * hid, i), f"{prefix}weight_hh_l{k}": (4 * hid, hid),
                    f"{prefix}bias_ih_l{k}": (4 * hid,), f"{prefix}bias_hh_l{k}": (4 * hid,)})
    return out


def raises_naming(exc, path, *words):
    """Assert load_pt(path) raises exc whose message names the file and each word."""
    with pytest.raises(exc) as info:
        load_pt(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in: {msg}"
    return msg


# ---------------------------------------------------------------------------
# committed fixtures (no torch)
# ---------------------------------------------------------------------------

def test_fixtures_exist_and_small():
    assert len(FIXTURES) >= 4
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(HERE, "fixtures", "torch", "*")))
    assert total < 100_000


@pytest.mark.parametrize("pt", FIXTURES, ids=[os.path.basename(p) for p in FIXTURES])
def test_fixture_matches_torch_output(pt):
    data = np.load(pt[:-3] + ".npz", allow_pickle=False)
    options = json.loads(bytes(data["options"]).decode())
    kinds = options.pop("layers")
    options.pop("torch_version", None)
    model = load_pt(pt, **options)
    assert [l.kind for l in model.layers] == kinds
    assert model.source["format"] == "pytorch" and model.source["file"] == pt
    for part in ("read", "inferred", "defaulted"):
        assert all(isinstance(s, str) for s in model.source[part])
    assert_close(model.predict(data["x"]), data["y"])


def test_fixture_source_notes():
    pt = os.path.join(HERE, "fixtures", "torch", "gru_head_checkpoint.pt")
    model = load_pt(pt, dense_activations=["sigmoid"])
    read = " ".join(model.source["read"])
    assert "model_state_dict" in read and "'epoch'" in read and "optimizer_state_dict" in read
    assert any("GRU" in s and "hidden_size 6" in s for s in model.source["inferred"])
    assert any("batch-first" in s for s in model.source["defaulted"])
    rnn = load_pt(os.path.join(HERE, "fixtures", "torch", "rnn_relu_nobias.pt"))
    assert any("nonlinearity 'tanh'" in s for s in rnn.source["defaulted"])


def test_loading_never_imports_torch():
    pt = os.path.join(HERE, "fixtures", "torch", "embedding_lstm_proj_head.pt")
    code = ("import sys, numpy as np\n"
            "from drnn.io.torch_pt import load_pt\n"
            f"m = load_pt({pt!r}, dense_activations=['relu', 'identity'], return_sequences=False)\n"
            "m.predict(np.zeros((1, 3), np.int64))\n"
            "assert 'torch' not in sys.modules, sorted(k for k in sys.modules if 'torch' in k)\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


# ---------------------------------------------------------------------------
# hostile and broken files (no torch)
# ---------------------------------------------------------------------------

def _payload_os(marker):
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


def _payload_eval(marker):
    return (b"cbuiltins\neval\n(S'open(" + repr(str(marker)).encode()
            + b", \"w\").close()'\ntR.")


class _Posix:      # what pickle.dumps of a __reduce__ exploit looks like (posix.system)
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("make", [_payload_os, _payload_eval,
                                  lambda m: pickle.dumps(_Posix(m), protocol=2),
                                  lambda m: pickle.dumps(_Posix(m), protocol=4)],
                         ids=["os.system", "builtins.eval", "posix.system", "stack_global"])
def test_hostile_pickle_is_refused_without_running(tmp_path, make):
    # The payload is real: a plain pickle.loads runs it and creates the file.
    proof = tmp_path / "proof"
    pickle.loads(make(proof))
    assert proof.exists()
    marker = tmp_path / "pwned"
    path = write_archive(tmp_path / "evil.pt", make(marker))
    msg = raises_naming(FormatError, path, "global")
    assert any(g in msg for g in ("os.system", "builtins.eval", "posix.system"))
    assert not marker.exists()


def test_hostile_global_inside_wrapper_extras(tmp_path):
    marker = tmp_path / "pwned"
    evil = Call(G("os", "system"), f"touch {marker}")
    pkl = dumps({"model": {"w.weight": tensor("0", 4, (2, 2))}, "extra": evil})
    path = write_archive(tmp_path / "evil.pt", pkl, {"0": b"\0" * 16})
    raises_naming(FormatError, path, "os.system")
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("torch.storage", "_load_from_bytes"),
                                         ("torch.nn.modules.rnn", "LSTM"),
                                         ("__main__", "Net"), ("numpy", "load"),
                                         ("torch._utils", "_rebuild_qtensor")])
def test_other_globals_refused(tmp_path, module, name):
    path = write_archive(tmp_path / "g.pt", dumps(Call(G(module, name))))
    raises_naming(FormatError, path, f"{module}.{name}")


def test_build_on_a_tensor_refused(tmp_path):
    # BUILD on the state_dict is fine (its _metadata); on a tensor it is not.
    body = bytearray(b"\x80\x02")
    _enc(tensor("0", 4, (2, 2)), body)
    _enc({"x": 1}, body)
    body += b"b."
    path = write_archive(tmp_path / "b.pt", bytes(body), {"0": b"\0" * 16})
    raises_naming(FormatError, path, "state")


def test_ext_opcode_refused(tmp_path):
    path = write_archive(tmp_path / "e.pt", b"\x80\x02\x82\x01.")
    raises_naming(FormatError, path, "extension")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    raises_naming(FormatError, str(p), "empty")


def test_wrong_magic(tmp_path):
    p = tmp_path / "img.pt"
    p.write_bytes(b"GIF89a" + b"\0" * 100)
    raises_naming(FormatError, str(p), "not a PyTorch checkpoint", "magic")


def test_bare_pickle_refused(tmp_path):
    p = tmp_path / "plain.pt"
    p.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    raises_naming(FormatError, str(p), "bare pickle")


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.99])
def test_truncated_zip(tmp_path, cut):
    raw = open(FIXTURES[0], "rb").read()
    p = tmp_path / "cut.pt"
    p.write_bytes(raw[:int(len(raw) * cut)])
    raises_naming(FormatError, str(p), "truncated")


def test_corrupt_storage_bytes_crc(tmp_path):
    raw = bytearray(open(os.path.join(HERE, "fixtures", "torch", "rnn_relu_nobias.pt"), "rb").read())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename)
    n, m = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + n + m       # local header lengths (torch pads extra)
    raw[start] ^= 0xFF
    p = tmp_path / "crc.pt"
    p.write_bytes(bytes(raw))
    raises_naming(FormatError, str(p), "corrupt")


def test_legacy_format(tmp_path):
    p = tmp_path / "legacy.pt"
    p.write_bytes(b"\x80\x02\x8a\x0a" + LEGACY_MAGIC + b".\x80\x02M\xe9\x03.")
    msg = raises_naming(FormatError, str(p), "legacy", "torch.save(model.state_dict()")
    assert "1.6" in msg


def test_torchscript_archive(tmp_path):
    path = write_archive(tmp_path / "ts.pt", dumps({}), extra=[
        ("archive/constants.pkl", dumps(())), ("archive/code/__torch__/m.py", "def f(): pass")])
    raises_naming(FormatError, path, "TorchScript", "state_dict")


def test_missing_data_pkl(tmp_path):
    p = tmp_path / "nodata.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/version", "3\n")
    raises_naming(FormatError, str(p), "data.pkl")


def test_missing_storage_record(tmp_path):
    path = write_archive(tmp_path / "m.pt", dumps({"w.weight": tensor("0", 4, (2, 2))}))
    raises_naming(FormatError, path, "data/0")


def test_storage_shorter_than_declared(tmp_path):
    path = state_dict_file(tmp_path / "short.pt", lstm_shapes("lstm.", 3, 4), short=20)
    raises_naming(FormatError, path, "shorter", "data/0")


def test_view_out_of_storage_bounds(tmp_path):
    pkl = dumps({"fc.weight": tensor("0", 6, (2, 3), offset=2)})
    path = write_archive(tmp_path / "oob.pt", pkl, {"0": b"\0" * 24})
    raises_naming(FormatError, path, "storage holds 6")


def test_broadcast_view_refused(tmp_path):
    pkl = dumps({"fc.weight": tensor("0", 1, (1000, 1000), stride=(0, 0))})
    path = write_archive(tmp_path / "bc.pt", pkl, {"0": b"\0" * 4})
    raises_naming(FormatError, path, "overlapping")


def test_compressed_records_refused(tmp_path):
    src = os.path.join(HERE, "fixtures", "torch", "rnn_relu_nobias.pt")
    p = tmp_path / "deflated.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    raises_naming(FormatError, str(p), "compressed")


def test_big_endian_and_strided_storage(tmp_path):
    # byteorder "big" is honoured; offset + strides select a transposed view
    base = np.arange(20, dtype=np.float32)
    pkl = dumps({"fc.weight": tensor("0", 20, (2, 3), stride=(1, 4), offset=5),
                 "fc.bias": tensor("0", 20, (2,), offset=18)})
    path = write_archive(tmp_path / "be.pt", pkl, {"0": base.astype(">f4").tobytes()},
                         byteorder="big")
    dense = load_pt(path).layers[0]
    np.testing.assert_array_equal(dense.weight, [[5, 9, 13], [6, 10, 14]])
    np.testing.assert_array_equal(dense.bias, [18, 19])
    bad = write_archive(tmp_path / "bo.pt", pkl, {"0": b"\0" * 80}, byteorder="middle")
    raises_naming(FormatError, bad, "byteorder")


def test_square_lone_weight_named_linear(tmp_path):
    model = load_pt(state_dict_file(tmp_path / "sq.pt", {"in_proj.weight": (3, 3),
                                                         **lstm_shapes("lstm.", 3, 4)}))
    assert [l.kind for l in model.layers] == ["Dense", "LSTM"]
    model = load_pt(state_dict_file(tmp_path / "emb.pt", {"embed.weight": (3, 3),
                                                          **lstm_shapes("lstm.", 3, 4)}))
    assert [l.kind for l in model.layers] == ["Embedding", "LSTM"]


def test_handbuilt_state_dict_loads(tmp_path):
    # the writer above is faithful: a consistent handmade file loads
    shapes = {"embedding.weight": (10, 3), **lstm_shapes("lstm.", 3, 4, 2), "fc.weight": (2, 4),
              "fc.bias": (2,)}
    model = load_pt(state_dict_file(tmp_path / "ok.pt", shapes))
    assert [l.kind for l in model.layers] == ["Embedding", "LSTM", "Dense"]
    assert model.layers[1].num_layers == 2


@pytest.mark.parametrize("shapes,words", [
    ({"rnn.weight_ih_l0": (12, 3), "rnn.weight_hh_l0": (12, 5)}, ["weight_hh_l0", "1, 3 or 4"]),
    ({**lstm_shapes("lstm.", 3, 4), "lstm.weight_ih_l1": (16, 5), "lstm.weight_hh_l1": (16, 4),
      "lstm.bias_ih_l1": (16,), "lstm.bias_hh_l1": (16,)}, ["weight_ih_l1", "(16, 4)"]),
    ({**lstm_shapes("lstm.", 3, 4), "lstm.weight_ih_l0_reverse": (16, 3)}, ["lstm", "missing"]),
    ({"lstm.weight_ih_l0": (16, 3), "lstm.weight_hh_l0": (16, 4), "lstm.bias_ih_l0": (12,)},
     ["bias_hh_l0", "missing"]),
    ({**lstm_shapes("lstm.", 3, 4), "lstm.bias_hh_l0": (12,)}, ["bias_hh_l0", "(16,)"]),
    ({"gru.weight_ih_l0": (12, 3), "gru.weight_hh_l0": (12, 4), "gru.weight_hr_l0": (2, 4)},
     ["weight_hr_l0", "LSTM"]),
    ({**lstm_shapes("lstm.", 3, 4), "fc.weight": (2, 5), "fc.bias": (2,)}, ["do not chain"]),
    ({"lstm.weight_ih_l0": (16, 3)}, ["missing", "weight_hh_l0"]),
    ({**lstm_shapes("lstm.", 3, 4), "norm.weight": (4,), "norm.bias": (4,)}, ["norm", "2-D"]),
    ({**lstm_shapes("lstm.", 3, 4), "bn.running_mean": (4,)}, ["unknown keys", "bn.running_mean"]),
    ({**lstm_shapes("lstm.", 3, 4), "lstm.weight_foo": (4, 4)}, ["unknown keys", "lstm.weight_foo"]),
    ({"fc.weight": (2, 3), "fc.bias": (3,)}, ["bias", "(2,)"]),
    ({"sq.weight": (4, 4), **lstm_shapes("lstm.", 4, 5)}, ["square", "embedding"]),
    ({**lstm_shapes("lstm.", 3, 4), "embedding.weight": (4, 4)}, ["embedding", "first"]),
])
def test_shape_inconsistent_state_dicts(tmp_path, shapes, words):
    path = state_dict_file(tmp_path / "bad.pt", shapes)
    raises_naming(FormatError, path, *words)


def test_not_a_state_dict(tmp_path):
    path = write_archive(tmp_path / "list.pt", dumps((1, 2)))
    raises_naming(FormatError, path, "tuple")
    path = write_archive(tmp_path / "cfg.pt", dumps({"epoch": 3, "lr": 0.1}))
    raises_naming(FormatError, path, "no state_dict", "epoch")
    path = write_archive(tmp_path / "none.pt", dumps({}))
    raises_naming(FormatError, path, "empty")


def test_bad_options(tmp_path):
    fx = os.path.join(HERE, "fixtures", "torch")
    with pytest.raises(UnsupportedError, match="dense_activations"):
        load_pt(os.path.join(fx, "gru_head_checkpoint.pt"), dense_activations=["relu", "relu"])
    with pytest.raises(UnsupportedError, match="activation"):
        load_pt(os.path.join(fx, "gru_head_checkpoint.pt"), dense_activations=["gelu"])
    with pytest.raises(UnsupportedError, match="nonlinearity"):
        load_pt(os.path.join(fx, "rnn_relu_nobias.pt"), nonlinearity="sigmoid")
    with pytest.raises(FormatError, match="no such file"):
        load_pt(str(tmp_path / "missing.pt"))


# ---------------------------------------------------------------------------
# real torch.save files (torch needed)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch():
    return import_torch()


def _torch_out(torch, m, x):
    with torch.no_grad():
        out = m(torch.as_tensor(x))
    return (out[0] if isinstance(out, tuple) else out).numpy()


GRID = [
    ("RNN", dict(nonlinearity="tanh"), 1, False),
    ("RNN", dict(nonlinearity="relu"), 2, True),
    ("RNN", dict(nonlinearity="relu", bias=False), 3, False),
    ("LSTM", {}, 1, False),
    ("LSTM", {}, 2, True),
    ("LSTM", dict(proj_size=3), 2, True),
    ("LSTM", dict(bias=False), 3, False),
    ("LSTM", dict(bias=False, proj_size=2), 1, True),
    ("GRU", {}, 1, True),
    ("GRU", {}, 3, False),
    ("GRU", dict(bias=False), 2, True),
]


@pytest.mark.parametrize("kind,kw,layers,bidir", GRID,
                         ids=[f"{k}-{kw}-L{l}-{'bi' if b else 'uni'}" for k, kw, l, b in GRID])
@pytest.mark.parametrize("wrapper", [None, "state_dict", "model", "model_state_dict"])
def test_torch_grid(torch, tmp_path, kind, kw, layers, bidir, wrapper):
    torch.manual_seed(layers * 7 + bidir)
    cls = getattr(torch.nn, kind)
    m = cls(5, 6, num_layers=layers, bidirectional=bidir, batch_first=True, **kw).eval()
    sd = m.state_dict()
    obj = sd if wrapper is None else {"epoch": 3, wrapper: sd,
                                      "optimizer": torch.optim.SGD(m.parameters(), 0.1).state_dict()}
    path = str(tmp_path / "m.pt")
    torch.save(obj, path)
    model = load_pt(path, nonlinearity=kw.get("nonlinearity", "tanh"))
    assert [l.kind for l in model.layers] == [kind]
    layer = model.layers[0]
    assert (layer.num_layers, layer.bidirectional, layer.bias) == (layers, bidir, kw.get("bias", True))
    x = np.random.default_rng(1).standard_normal((3, 7, 5)).astype(np.float32)
    assert_close(model.predict(x), _torch_out(torch, m, x))


def test_gru_vs_rnn_with_three_times_hidden(torch, tmp_path):
    torch.manual_seed(0)
    gru = torch.nn.GRU(4, 3, batch_first=True).eval()
    rnn = torch.nn.RNN(4, 9, batch_first=True).eval()
    assert gru.weight_ih_l0.shape == rnn.weight_ih_l0.shape
    x = np.random.default_rng(2).standard_normal((2, 5, 4)).astype(np.float32)
    for m, kind, h in ((gru, "GRU", 3), (rnn, "RNN", 9)):
        path = str(tmp_path / f"{kind}.pt")
        torch.save(m.state_dict(), path)
        model = load_pt(path)
        assert model.layers[0].kind == kind and model.layers[0].hidden_size == h
        assert_close(model.predict(x), _torch_out(torch, m, x))


def _modules(torch):
    nn = torch.nn

    class EmbLSTMLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(30, 8)
            self.lstm = nn.LSTM(8, 10, num_layers=2, batch_first=True, bidirectional=True)
            self.out = nn.Linear(20, 4)

        def forward(self, ids):
            return self.out(self.lstm(self.emb(ids))[0])

    class Tokens(nn.Module):     # embedding not named like one: found by the next input
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(50, 6)
            self.gru = nn.GRU(6, 5, batch_first=True)
            self.head = nn.Linear(5, 2)

        def forward(self, ids):
            return self.head(self.gru(self.table(ids))[0])

    class TwoLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(5, 8, batch_first=True)
            self.fc1 = nn.Linear(8, 6)
            self.fc2 = nn.Linear(6, 3, bias=False)

        def forward(self, x):
            y, _ = self.rnn(x)
            return torch.softmax(self.fc2(torch.tanh(self.fc1(y[:, -1]))), dim=-1)

    class ProjectIn(nn.Module):  # a bias-free Linear in front: found by its rows
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(5, 7, bias=False)
            self.body = nn.Sequential(nn.GRU(7, 4, batch_first=True))

        def forward(self, x):
            return self.body(self.proj(x))[0]

    class Stack(nn.Module):      # mixed cells, ModuleList, DataParallel-like prefix
        def __init__(self):
            super().__init__()
            self.cells = nn.ModuleList([nn.GRU(5, 6, batch_first=True, bidirectional=True),
                                        nn.RNN(12, 4, batch_first=True, nonlinearity="relu")])

        def forward(self, x):
            return self.cells[1](self.cells[0](x)[0])[0]

    return [
        ("emb_lstm_linear", EmbLSTMLinear, {}, ["Embedding", "LSTM", "Dense"], True),
        ("tokens", Tokens, {}, ["Embedding", "GRU", "Dense"], True),
        ("two_linear", TwoLinear, dict(return_sequences=False,
                                       dense_activations=["tanh", "softmax"]),
         ["LSTM", "Dense", "Dense"], False),
        ("project_in", ProjectIn, {}, ["Dense", "GRU"], False),
        ("stack", Stack, dict(nonlinearity="relu"), ["GRU", "RNN"], False),
    ]


@pytest.mark.parametrize("case", range(5))
def test_torch_custom_modules(torch, tmp_path, case):
    name, cls, options, kinds, tokens = _modules(torch)[case]
    torch.manual_seed(case)
    m = cls().eval()
    path = str(tmp_path / f"{name}.pth")
    sd = m.state_dict()
    if name == "stack":
        sd = {"module." + k: v for k, v in sd.items()}     # as saved from DataParallel
    torch.save({"model_state_dict": sd, "epoch": 1}, path)
    model = load_pt(path, **options)
    assert [l.kind for l in model.layers] == kinds
    rng = np.random.default_rng(case)
    x = rng.integers(0, 30, (3, 6)) if tokens else rng.standard_normal((3, 6, 5)).astype(np.float32)
    assert_close(model.predict(x), _torch_out(torch, m, x))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_torch_pickle_protocols(torch, tmp_path, protocol):
    torch.manual_seed(protocol)
    m = torch.nn.GRU(3, 4, num_layers=2, batch_first=True).eval()
    path = str(tmp_path / "p.pt")
    torch.save({"state_dict": m.state_dict()}, path, pickle_protocol=protocol)
    x = np.random.default_rng(3).standard_normal((2, 5, 3)).astype(np.float32)
    assert_close(load_pt(path).predict(x), _torch_out(torch, m, x))


def test_torch_half_and_double(torch, tmp_path):
    torch.manual_seed(5)
    x = np.random.default_rng(5).standard_normal((2, 4, 3)).astype(np.float32)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        m = torch.nn.LSTM(3, 4, batch_first=True).to(dtype)
        path = str(tmp_path / "m.pt")
        torch.save(m.state_dict(), path)
        ref = torch.nn.LSTM(3, 4, batch_first=True)
        ref.load_state_dict({k: v.float() for k, v in m.state_dict().items()})
        assert_close(load_pt(path).predict(x), _torch_out(torch, ref.eval(), x))


def test_torch_parameters_and_views(torch, tmp_path):
    # nn.Parameter objects (rebuilt by _rebuild_parameter) and tensors that are
    # strided views sharing one storage (offsets and strides honoured)
    torch.manual_seed(6)
    m = torch.nn.GRU(3, 4, batch_first=True).eval()
    big = torch.randn(12, 20)
    sd = {"weight_ih_l0": torch.nn.Parameter(big[:, 2:5]),
          "weight_hh_l0": big[:, 8:12],
          "bias_ih_l0": big.t()[7, :],       # non-contiguous: stride 20
          "bias_hh_l0": m.bias_hh_l0.detach()}
    m.load_state_dict({k: v.detach() for k, v in sd.items()})
    path = str(tmp_path / "views.pt")
    torch.save(sd, path)
    x = np.random.default_rng(6).standard_normal((2, 5, 3)).astype(np.float32)
    assert_close(load_pt(path).predict(x), _torch_out(torch, m, x))


def test_torch_real_legacy_and_torchscript(torch, tmp_path):
    m = torch.nn.LSTM(3, 4, batch_first=True)
    legacy = str(tmp_path / "legacy.pt")
    torch.save(m.state_dict(), legacy, _use_new_zipfile_serialization=False)
    raises_naming(FormatError, legacy, "legacy", "state_dict")
    ts = str(tmp_path / "script.pt")
    torch.jit.save(torch.jit.script(m), ts)
    raises_naming(FormatError, ts, "TorchScript")
    whole = str(tmp_path / "whole.pt")
    torch.save(m, whole)
    raises_naming(FormatError, whole, "torch.nn.modules.rnn.LSTM", "state_dict")


def test_torch_inconsistent_state_dict(torch, tmp_path):
    sd = torch.nn.LSTM(3, 4, num_layers=2).state_dict()
    sd["weight_hh_l1"] = torch.zeros(16, 5)
    path = str(tmp_path / "bad.pt")
    torch.save(sd, path)
    msg = raises_naming(FormatError, path, "weight_hh_l1")
    assert isinstance(FormatError(msg), ValueError)


def test_drnn_public_api_untouched():
    # the loader adds no import-time dependency to drnn itself
    assert hasattr(drnn, "DRNN") and issubclass(FormatError, ValueError)
    assert issubclass(ShapeError, ValueError)
