"""drnn.io.onnx.load_onnx on real .onnx files.

1. ONNX's own backend test cases for LSTM, GRU and RNN (expected outputs
   shipped with the onnx package).
2. onnx.helper single-node models with every attribute and optional input,
   against ONNX Runtime (layout=1, which ORT refuses, against a transposed
   layout-0 run).
3. torch.onnx.export'ed stacks with heads, against ONNX Runtime.
4. The committed fixtures in tests/fixtures/onnx (no ORT or torch needed).
5. Broken and unsupported files.
6. OnnxModel.to_drnn (drnn convert): plain stacks become DRNNs matching ORT;
   other graphs are refused naming the node.
7. A tf2onnx-shaped graph of a Keras LSTM model, built by hand with
   onnx.helper (tf2onnx needs TensorFlow, which is not installed here).
ORT/torch-dependent tests skip when those are missing, except under CI=true.
"""
import glob
import os
import warnings

import numpy as np
import pytest

import helpers
from helpers import assert_close

onnx = pytest.importorskip("onnx") if os.environ.get("CI", "").lower() != "true" else \
    __import__("onnx")
from onnx import TensorProto, helper as oh  # noqa: E402

from drnn.errors import FormatError, ShapeError, UnsupportedError  # noqa: E402
from drnn.io.onnx import load_onnx  # noqa: E402

TOL = 1e-5
FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "onnx")
_CI = os.environ.get("CI", "").strip().lower() == "true"


def _import_ort():
    try:
        import onnxruntime
    except ImportError as exc:
        if _CI:
            raise
        pytest.skip(f"onnxruntime is not installed ({exc})")
    return onnxruntime


def _ort_run(model, feeds):
    ort = _import_ort()
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def _save(model, tmp_path, name="m.onnx"):
    p = str(tmp_path / name)
    onnx.save(model, p)
    return p


# --------------------------------------------------------------------------
# 1. ONNX backend test cases
# --------------------------------------------------------------------------

def _backend_cases():
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return [c for c in cases if c.model is not None
            and any(n.op_type in ("LSTM", "GRU", "RNN") for n in c.model.graph.node)]


BACKEND = _backend_cases()


def test_backend_cases_found():
    ops = {n.op_type for c in BACKEND for n in c.model.graph.node}
    assert ops == {"LSTM", "GRU", "RNN"} and len(BACKEND) >= 15


@pytest.mark.parametrize("case", BACKEND, ids=[c.name for c in BACKEND])
@pytest.mark.parametrize("weights_as", ["inputs", "initializers"])
def test_onnx_backend_case(case, weights_as, tmp_path):
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    for inputs, expected in case.data_sets:
        feeds = {vi.name: v for vi, v in zip(model.graph.input, inputs)}
        m = model
        if weights_as == "initializers":
            # as exporters write them: W, R, B, P constant, built at load time
            m = onnx.ModelProto()
            m.CopyFrom(model)
            node = m.graph.node[0]
            consts = {node.input[i] for i in (1, 2, 3, 7) if len(node.input) > i and node.input[i]}
            keep = [vi for vi in m.graph.input if vi.name not in consts]
            for name in consts:
                m.graph.initializer.append(onnx.numpy_helper.from_array(feeds.pop(name), name))
            del m.graph.input[:]
            m.graph.input.extend(keep)
        loaded = load_onnx(_save(m, tmp_path))
        if weights_as == "initializers":
            assert loaded.recurrent_layers, "layer not built at load time"
        got = loaded.run(feeds)
        for vi, e in zip(m.graph.output, expected):
            rtol = max(case.rtol, TOL)
            atol = max(case.atol, TOL)
            np.testing.assert_allclose(got[vi.name], e, rtol=rtol, atol=atol,
                                       err_msg=f"{case.name} {vi.name}")


# --------------------------------------------------------------------------
# 2. helper-built single-node models with every attribute vs ONNX Runtime
# --------------------------------------------------------------------------

G = {"LSTM": 4, "GRU": 3, "RNN": 1}


def make_node_model(kind, F, H, *, direction="forward", layout=0, bias=True, lengths=False,
                    h0=False, c0=False, peep=False, attrs=None, seed=0, B=3, T=5,
                    opset=14):
    """A single-node model with W/R/B/P as initializers; returns (model, feeds)."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    g = G[kind]
    inits = {"W": rng.uniform(-0.6, 0.6, (D, g * H, F)).astype(np.float32),
             "R": rng.uniform(-0.6, 0.6, (D, g * H, H)).astype(np.float32)}
    if bias:
        inits["B"] = rng.uniform(-0.5, 0.5, (D, 2 * g * H)).astype(np.float32)
    if peep:
        inits["P"] = rng.uniform(-0.5, 0.5, (D, 3 * H)).astype(np.float32)
    xshape = (T, B, F) if layout == 0 else (B, T, F)
    feeds = {"X": rng.standard_normal(xshape).astype(np.float32) * 1.5}
    if lengths:
        lens = np.array(([T, 1, 0, 3, 2] * 3)[:B] if lengths == "zero" else
                        ([T, 2, 4, 1, 3] * 3)[:B], np.int32)
        feeds["sequence_lens"] = lens
    sshape = (D, B, H) if layout == 0 else (B, D, H)
    if h0:
        feeds["initial_h"] = rng.uniform(-1, 1, sshape).astype(np.float32)
    if c0:
        feeds["initial_c"] = rng.uniform(-1, 1, sshape).astype(np.float32)
    order = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
    if kind != "LSTM":
        order = order[:6]
    names = [n if (n in inits or n in feeds) else "" for n in order]
    while names and not names[-1]:
        names.pop()
    outs = ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" else [])
    a = dict(hidden_size=H, direction=direction)
    if layout:
        a["layout"] = 1
    a.update(attrs or {})
    node = oh.make_node(kind, names, outs, **a)
    vis = [oh.make_tensor_value_info(n, TensorProto.INT32 if n == "sequence_lens"
                                     else TensorProto.FLOAT, list(v.shape))
           for n, v in feeds.items()]
    graph = oh.make_graph([node], "g", vis, [oh.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                             for o in outs],
                          initializer=[onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = 8
    return model, feeds


def _acts(kind, D, spec):
    """spec: list of (ONNX name, alpha or None, beta or None), n per direction."""
    names = [s[0] for s in spec]
    alphas = [s[1] for s in spec if s[1] is not None]
    betas = [s[2] for s in spec if s[2] is not None]
    out = {"activations": names}
    if alphas:
        out["activation_alpha"] = alphas
    if betas:
        out["activation_beta"] = betas
    return out


NODE_CASES = [
    ("LSTM", "forward", dict()),
    ("LSTM", "bidirectional", dict(peep=True, lengths=True, h0=True, c0=True)),
    ("LSTM", "reverse", dict(peep=True, lengths=True, h0=True, c0=True,
                             attrs=dict(input_forget=1, clip=0.7))),
    ("LSTM", "forward", dict(bias=False, h0=True, attrs=dict(input_forget=1))),
    ("LSTM", "bidirectional", dict(lengths=True, c0=True, attrs=dict(clip=0.4))),
    ("LSTM", "forward", dict(h0=True, c0=True, attrs=_acts("LSTM", 1, [
        ("HardSigmoid", 0.3, 0.4), ("Softsign", None, None), ("ScaledTanh", 0.9, 1.1)]))),
    ("LSTM", "bidirectional", dict(lengths=True, attrs=_acts("LSTM", 2, [
        ("Sigmoid", None, None), ("Affine", 0.5, 0.1), ("Softplus", None, None),
        ("HardSigmoid", 0.2, 0.5), ("Tanh", None, None), ("Elu", 0.8, None)]))),
    ("GRU", "forward", dict()),
    ("GRU", "forward", dict(attrs=dict(linear_before_reset=1), lengths=True, h0=True)),
    ("GRU", "bidirectional", dict(h0=True, lengths=True, attrs=dict(clip=0.3))),
    ("GRU", "reverse", dict(bias=False, attrs=dict(linear_before_reset=1, clip=0.5))),
    ("GRU", "bidirectional", dict(lengths=True, attrs=dict(linear_before_reset=1, **_acts(
        "GRU", 2, [("Sigmoid", None, None), ("LeakyRelu", 0.1, None),
                   ("HardSigmoid", 0.25, 0.45), ("Softsign", None, None)])))),
    ("RNN", "forward", dict(attrs=_acts("RNN", 1, [("ThresholdedRelu", 0.2, None)]))),
    ("RNN", "reverse", dict(lengths=True, h0=True, attrs=dict(clip=0.6))),
    ("RNN", "bidirectional", dict(lengths=True, h0=True, attrs=_acts("RNN", 2, [
        ("Relu", None, None), ("Tanh", None, None)]))),
    ("RNN", "bidirectional", dict(bias=False, attrs=_acts("RNN", 2, [
        ("Elu", 0.8, None), ("ScaledTanh", 0.9, 1.1)]))),
]


def _ids(cases):
    out = []
    for kind, direction, opts in cases:
        keys = sorted(k for k, v in opts.items() if v and k != "attrs")
        keys += sorted((opts.get("attrs") or {}))
        out.append("-".join([kind, direction] + keys))
    return out


def _compare_outputs(got, ref, lengths=None, what=""):
    for name, e in ref.items():
        assert_close(got[name], e, TOL, f"{what} {name}")


@pytest.mark.parametrize("kind,direction,opts", NODE_CASES, ids=_ids(NODE_CASES))
def test_node_vs_onnxruntime(kind, direction, opts, tmp_path):
    model, feeds = make_node_model(kind, 4, 6, direction=direction, **opts)
    expected = _ort_run(model, feeds)
    got = load_onnx(_save(model, tmp_path)).run(feeds)
    _compare_outputs(got, expected, what=f"{kind} {direction}")


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_zero_lengths_vs_onnxruntime(kind, tmp_path):
    """sequence_lens may be 0: outputs zero (ONNX Runtime's Y_h is then 0 too)."""
    model, feeds = make_node_model(kind, 3, 5, direction="bidirectional", lengths="zero",
                                   B=4, bias=True)
    expected = _ort_run(model, feeds)
    got = load_onnx(_save(model, tmp_path)).run(feeds)
    _compare_outputs(got, expected, what=kind)


@pytest.mark.parametrize("kind,direction,opts", [
    ("LSTM", "bidirectional", dict(peep=True, lengths=True, h0=True, c0=True,
                                   attrs=dict(clip=0.8, input_forget=1))),
    ("GRU", "reverse", dict(lengths=True, h0=True, attrs=dict(linear_before_reset=1))),
    ("RNN", "bidirectional", dict(lengths=True, h0=True)),
], ids=["LSTM", "GRU", "RNN"])
def test_layout1_matches_transposed_layout0(kind, direction, opts, tmp_path):
    """ORT refuses layout=1, so compare with ORT's layout-0 run, transposed."""
    m0, f0 = make_node_model(kind, 4, 6, direction=direction, layout=0, seed=3, **opts)
    m1, _ = make_node_model(kind, 4, 6, direction=direction, layout=1, seed=3, **opts)
    f1 = dict(f0)
    f1["X"] = np.ascontiguousarray(f0["X"].transpose(1, 0, 2))
    for s in ("initial_h", "initial_c"):
        if s in f1:
            f1[s] = np.ascontiguousarray(f0[s].transpose(1, 0, 2))
    ref = _ort_run(m0, f0)
    got = load_onnx(_save(m1, tmp_path)).run(f1)
    assert_close(got["Y"], ref["Y"].transpose(2, 0, 1, 3), TOL, "Y")      # [N, T, D, H]
    assert_close(got["Y_h"], ref["Y_h"].transpose(1, 0, 2), TOL, "Y_h")   # [N, D, H]
    if kind == "LSTM":
        assert_close(got["Y_c"], ref["Y_c"].transpose(1, 0, 2), TOL, "Y_c")


def test_clip_is_on_gate_preactivations_only(tmp_path):
    """A small clip with large states: ORT clips gate pre-activations, not c."""
    for T in (1, 5):
        model, feeds = make_node_model("LSTM", 4, 6, c0=True, attrs=dict(clip=0.25), seed=5, T=T)
        feeds["initial_c"] = feeds["initial_c"] * 4.0        # |c0| up to 4 >> clip
        expected = _ort_run(model, feeds)
        got = load_onnx(_save(model, tmp_path, f"clip{T}.onnx")).run(feeds)
        if T == 1:
            assert np.abs(expected["Y_c"]).max() > 1.0       # c itself is not clipped
        _compare_outputs(got, expected, what=f"clip T={T}")


def test_predict_and_description(tmp_path):
    model, feeds = make_node_model("LSTM", 4, 6, direction="bidirectional", peep=True)
    m = load_onnx(_save(model, tmp_path))
    y = m.predict(feeds["X"])
    assert y.shape == (5, 2, 3, 6) and y.dtype == np.float32
    assert m.num_parameters == 2 * (24 * 4 + 24 * 6 + 48 + 18)
    assert m.source["format"] == "onnx" and m.source["file"].endswith("m.onnx")
    assert any("hidden_size 6" in r for r in m.source["read"])
    assert any("activations" in d for d in m.source["defaulted"])
    assert len(m.layers) == 1 and m.layers[0].kind == "LSTM" and m.layers[0].peepholes
    text = m.describe()
    assert "LSTM" in text and "parameters" in text
    # the layer drnn built is also usable on its own (batch-first)
    x = np.ascontiguousarray(feeds["X"].transpose(1, 0, 2))
    yb, _, _ = m.layers[0]._stack.forward(x, None, None, None, True, None)
    assert_close(yb.reshape(3, 5, 2, 6).transpose(1, 2, 0, 3), y, TOL, "layer")


def test_missing_hidden_size_is_inferred(tmp_path):
    model, feeds = make_node_model("GRU", 3, 4)
    attrs = [a for a in model.graph.node[0].attribute if a.name != "hidden_size"]
    del model.graph.node[0].attribute[:]
    model.graph.node[0].attribute.extend(attrs)
    m = load_onnx(_save(model, tmp_path))
    assert any("hidden_size=4" in s for s in m.source["inferred"])
    assert m.predict(feeds["X"]).shape == (5, 1, 3, 4)


def test_inconsistent_hidden_size(tmp_path):
    model, _ = make_node_model("LSTM", 3, 4)
    for a in model.graph.node[0].attribute:
        if a.name == "hidden_size":
            a.i = 5
    with pytest.raises(ShapeError, match="hidden_size"):
        load_onnx(_save(model, tmp_path))


def _glue_graph(opset):
    """Glue operators with their opset-dependent forms, around one GRU."""
    I = lambda name, v: onnx.numpy_helper.from_array(np.asarray(v), name)  # noqa: E731
    inits = [I("i0", np.array([0], np.int64)), I("i1", np.array([1], np.int64)),
             I("neg", np.array([-1], np.int64)), I("big", np.array([2 ** 62], np.int64)),
             I("nbig", np.array([-2 ** 62], np.int64)),
             I("W", np.random.default_rng(7).uniform(-.5, .5, (1, 12, 4)).astype(np.float32)),
             I("R", np.random.default_rng(8).uniform(-.5, .5, (1, 12, 4)).astype(np.float32)),
             I("two", np.array(2.0, np.float32)), I("sh", np.array([0, -1], np.int64)),
             I("lo", np.array(-0.5, np.float32)), I("hi", np.array(0.5, np.float32)),
             I("split", np.array([1, 3], np.int64))]
    new = opset >= 13
    ax = (lambda n, name, axes: oh.make_node(n, [name[0], name[2]], [name[1]])) if new else \
        (lambda n, name, axes: oh.make_node(n, [name[0]], [name[1]], axes=axes))
    nodes = [
        oh.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),            # (T, N, 4)
        oh.make_node("GRU", ["xt", "W", "R"], ["y", "h"], hidden_size=4, linear_before_reset=1),
        ax("Squeeze", ("y", "ys", "i1"), [1]),                                # (T, N, 4)
        oh.make_node("Slice", ["ys", "big", "nbig", "i0", "neg"], ["rev"]) if opset >= 10 else
        oh.make_node("Identity", ["ys"], ["rev"]),
        oh.make_node("Shape", ["rev"], ["shp"]),
        oh.make_node("Gather", ["shp", "i1"], ["n"]),
        oh.make_node("ConstantOfShape", ["shp"], ["ones"],
                     value=onnx.numpy_helper.from_array(np.array([1.5], np.float32))),
        oh.make_node("Mul", ["rev", "ones"], ["m"]),
        oh.make_node("Div", ["m", "two"], ["d"]),
        oh.make_node("Sub", ["d", "ys"], ["sb"]),
        (oh.make_node("Clip", ["sb", "lo", "hi"], ["cl"]) if opset >= 11 else
         oh.make_node("Clip", ["sb"], ["cl"], min=-0.5, max=0.5)),
        (oh.make_node("Split", ["cl", "split"], ["s0", "s1"], axis=2) if new else
         oh.make_node("Split", ["cl"], ["s0", "s1"], axis=2, split=[1, 3])),
        oh.make_node("Concat", ["s1", "s0"], ["cc"], axis=-1),
        oh.make_node("Reshape", ["cc", "sh"], ["rs"]),
        oh.make_node("Flatten", ["cc"], ["fl"], axis=1),
        oh.make_node("Softmax", ["fl"], ["sm"], axis=1),
        oh.make_node("LogSoftmax", ["cc"], ["lsm"], axis=1),
        ax("Unsqueeze", ("h", "hu", "i0"), [0]),
        ax("ReduceSum", ("lsm", "rsum", "neg"), [-1]),
        oh.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
        oh.make_node("Expand", ["nf", "shp"], ["ex"]),
        oh.make_node("Add", ["ex", "rev"], ["z"]),
        oh.make_node("Tanh", ["z"], ["t"]),
        oh.make_node("Sigmoid", ["t"], ["sg"]),
        oh.make_node("Relu", ["sb"], ["rl"]),
    ]
    outs = ["sm", "rs", "hu", "rsum", "sg", "rl"]
    graph = oh.make_graph(nodes, "glue", [oh.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                    [2, 5, 4])],
                          [oh.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
                          initializer=inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = 7
    return model


@pytest.mark.parametrize("opset", [9, 11, 13, 17])
def test_glue_ops_vs_onnxruntime(opset, tmp_path):
    model = _glue_graph(opset)
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    expected = _ort_run(model, {"x": x})
    m = load_onnx(_save(model, tmp_path))
    got = m.run({"x": x})
    for name, e in expected.items():
        assert_close(got[name], e, TOL, f"opset {opset} {name}")
    assert_close(m.predict(x), expected["sm"], TOL, "predict")


# --------------------------------------------------------------------------
# 3. torch.onnx.export'ed stacks vs ONNX Runtime
# --------------------------------------------------------------------------

def _torch_models():
    torch = helpers.import_torch() if _CI else pytest.importorskip("torch")
    nn = torch.nn

    class Head(nn.Module):
        def __init__(self, rnn, out, last=False, act=None, softmax=False):
            super().__init__()
            self.rnn, self.last, self.softmax = rnn, last, softmax
            D = 2 if rnn.bidirectional else 1
            layers = [nn.Linear(D * rnn.hidden_size, out)]
            if act is not None:
                layers += [act, nn.Linear(out, out)]
            self.head = nn.Sequential(*layers)

        def forward(self, x):
            y, _ = self.rnn(x)
            if self.last:
                y = y[:, -1]
            y = self.head(y)
            return torch.softmax(y, -1) if self.softmax else y

    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 6)
            self.rnn = nn.LSTM(6, 8, num_layers=2, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(16, 3)

        def forward(self, ids):
            y, _ = self.rnn(self.emb(ids))
            return self.fc(y)

    class TimeMajor(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(5, 7, num_layers=2)
            self.fc = nn.Linear(7, 2)

        def forward(self, x):                      # (T, B, F)
            y, h = self.rnn(x)
            return torch.tanh(self.fc(h[-1]))

    torch.manual_seed(0)
    return torch, {
        "lstm_bi_2layer_linear": Head(nn.LSTM(5, 8, 2, batch_first=True, bidirectional=True), 3),
        "gru_bi_2layer_mlp": Head(nn.GRU(5, 8, 2, batch_first=True, bidirectional=True), 4,
                                  act=nn.ReLU()),
        "rnn_relu_2layer_last_softmax": Head(nn.RNN(5, 8, 2, nonlinearity="relu",
                                                    batch_first=True), 3, last=True,
                                             softmax=True),
        "rnn_tanh_bi_tanh_head": Head(nn.RNN(5, 6, 1, batch_first=True, bidirectional=True), 3,
                                      act=nn.Tanh()),
        "lstm_last_sigmoid": Head(nn.LSTM(5, 8, 1, batch_first=True), 2, last=True,
                                  act=nn.Sigmoid()),
        "embedding_lstm_linear": Embed(),
        "gru_time_major_final_state": TimeMajor(),
    }


TORCH_NAMES = ["lstm_bi_2layer_linear", "gru_bi_2layer_mlp", "rnn_relu_2layer_last_softmax",
               "rnn_tanh_bi_tanh_head", "lstm_last_sigmoid", "embedding_lstm_linear",
               "gru_time_major_final_state"]


@pytest.fixture(scope="module")
def torch_models():
    return _torch_models()


def _export(torch, module, x, path, opset=17, dynamic=True):
    kw = {}
    if dynamic:
        kw["dynamic_axes"] = {"x": {0: "a", 1: "b"}, "y": {0: "a"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.as_tensor(x),), path, input_names=["x"],
                          output_names=["y"], opset_version=opset, dynamo=False, **kw)


@pytest.mark.parametrize("opset,dynamic", [(17, True), (17, False), (11, True)],
                         ids=["opset17-dynamic", "opset17-static", "opset11-dynamic"])
@pytest.mark.parametrize("name", TORCH_NAMES)
def test_torch_export_vs_onnxruntime(name, opset, dynamic, torch_models, tmp_path):
    torch, models = torch_models
    module = models[name]
    rng = np.random.default_rng(1)
    if name == "embedding_lstm_linear":
        x = rng.integers(0, 20, (3, 7)).astype(np.int64)
    elif name == "gru_time_major_final_state":
        x = rng.standard_normal((7, 3, 5)).astype(np.float32)
    else:
        x = rng.standard_normal((3, 7, 5)).astype(np.float32)
    path = str(tmp_path / f"{name}.onnx")
    _export(torch, module, x, path, opset, dynamic)
    model = onnx.load(path)
    m = load_onnx(path)
    assert m.recurrent_layers
    assert m.num_parameters == sum(p.numel() for p in module.parameters())
    with torch.no_grad():
        y_torch = module(torch.as_tensor(x)).numpy()
    for xx in ([x] if not dynamic else [x, x[:2, :4] if x.ndim == 2 or
                                         name != "gru_time_major_final_state" else x[:4, :2]]):
        xx = np.ascontiguousarray(xx)
        y_ort = _ort_run(model, {"x": xx})["y"]
        y = m.predict(xx)
        assert y.shape == y_ort.shape
        assert float(np.max(np.abs(y - y_ort))) <= TOL, name
    assert float(np.max(np.abs(m.predict(x) - y_torch))) <= TOL


# --------------------------------------------------------------------------
# 4. committed fixtures (no ORT, no torch)
# --------------------------------------------------------------------------

FIXTURES = sorted(glob.glob(os.path.join(FIXTURE_DIR, "*.onnx")))


def test_fixtures_present_and_small():
    names = {os.path.basename(p) for p in FIXTURES}
    assert len(names) >= 3, f"run scripts/make_onnx_fixtures.py (found {sorted(names)})"
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(FIXTURE_DIR, "*")))
    assert total < 150 * 1024


@pytest.mark.parametrize("path", FIXTURES, ids=[os.path.basename(p) for p in FIXTURES])
def test_fixture(path):
    with np.load(path[:-len(".onnx")] + ".npz", allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    m = load_onnx(path)
    feeds = {k[3:]: v for k, v in data.items() if k.startswith("in_")}
    expected = {k[4:]: v for k, v in data.items() if k.startswith("out_")}
    got = m.run(feeds)
    for name, e in expected.items():
        assert_close(got[name], e, TOL, f"{os.path.basename(path)} {name}")
    if len(feeds) == 1:
        first = m.output_names[0]
        assert_close(m.predict(next(iter(feeds.values()))), expected[first], TOL, "predict")


# --------------------------------------------------------------------------
# 5. broken, hostile and unsupported files
# --------------------------------------------------------------------------

def _good_bytes():
    model, _ = make_node_model("LSTM", 3, 4)
    return model.SerializeToString()


@pytest.mark.parametrize("content", ["empty", "truncated", "random", "text", "no_graph"])
def test_broken_file(content, tmp_path):
    path = tmp_path / f"{content}.onnx"
    if content == "empty":
        data = b""
    elif content == "truncated":
        data = _good_bytes()[:-37]
    elif content == "random":
        data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    elif content == "text":
        data = b"this is not an onnx model\n" * 10
    else:
        data = onnx.ModelProto(ir_version=8).SerializeToString()
    path.write_bytes(data)
    with pytest.raises(FormatError) as exc:
        load_onnx(str(path))
    assert str(path) in str(exc.value)


def test_unsupported_op_named(tmp_path):
    nodes = [oh.make_node("Relu", ["x"], ["a"]), oh.make_node("Conv", ["a", "w"], ["y"])]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[onnx.numpy_helper.from_array(
                              np.zeros((1, 1, 1), np.float32), "w")])
    path = _save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), tmp_path)
    with pytest.raises(UnsupportedError) as exc:
        load_onnx(path)
    assert "Conv" in str(exc.value) and path in str(exc.value)


def test_custom_domain_and_control_flow_refused(tmp_path):
    node = oh.make_node("FusedLSTM", ["x"], ["y"], domain="com.example")
    graph = oh.make_graph([node], "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = _save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17),
                                                     oh.make_opsetid("com.example", 1)]), tmp_path)
    with pytest.raises(UnsupportedError, match="com.example.FusedLSTM"):
        load_onnx(path)


def test_undefined_input_and_bad_shapes(tmp_path):
    node = oh.make_node("Relu", ["nowhere"], ["y"])
    graph = oh.make_graph([node], "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = _save(oh.make_model(graph), tmp_path, "undef.onnx")
    with pytest.raises(FormatError, match="nowhere"):
        load_onnx(path)
    model, feeds = make_node_model("LSTM", 3, 4)
    model.graph.initializer[1].CopyFrom(onnx.numpy_helper.from_array(
        np.zeros((1, 16, 5), np.float32), "R"))
    with pytest.raises(ShapeError, match="R"):
        load_onnx(_save(model, tmp_path, "badshape.onnx"))
    model, feeds = make_node_model("LSTM", 3, 4)
    m = load_onnx(_save(model, tmp_path, "ok.onnx"))
    with pytest.raises(ShapeError, match="features"):
        m.predict(np.zeros((5, 3, 7), np.float32))


def test_huge_constant_refused(tmp_path):
    shape = onnx.numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "s")
    node = oh.make_node("ConstantOfShape", ["s"], ["y"])
    graph = oh.make_graph([node], "g", [], [oh.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                      None)], initializer=[shape])
    with pytest.raises(ShapeError, match="refusing"):
        load_onnx(_save(oh.make_model(graph), tmp_path))


def test_pickle_and_threads(tmp_path):
    import pickle
    from concurrent.futures import ThreadPoolExecutor
    model, feeds = make_node_model("GRU", 3, 4, direction="bidirectional", B=2)
    m = load_onnx(_save(model, tmp_path))
    y = m.predict(feeds["X"])
    m2 = pickle.loads(pickle.dumps(m))
    assert_close(m2.predict(feeds["X"]), y, 0.0)
    with ThreadPoolExecutor(2) as ex:
        for r in ex.map(lambda _: m.predict(feeds["X"], num_threads=1), range(4)):
            assert_close(r, y, 0.0)


def test_initializers_read_only(tmp_path):
    model, feeds = make_node_model("GRU", 3, 4)
    m = load_onnx(_save(model, tmp_path))
    assert all(not v.flags.writeable for v in m._consts.values())


def test_missing_onnx_package_message(monkeypatch):
    import builtins
    import drnn.io.onnx as mod
    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(UnsupportedError, match=r"pip install drnn\[onnx\]"):
        mod.load_onnx("whatever.onnx")


# --------------------------------------------------------------------------
# 6. to_drnn / drnn convert: pure stacks become DRNNs, the rest is refused
# --------------------------------------------------------------------------

def _extra_torch_models(torch):
    nn = torch.nn

    class Mixed(nn.Module):            # Embedding -> LSTM -> bi-GRU -> MLP -> softmax
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 6)
            self.lstm = nn.LSTM(6, 7, batch_first=True)
            self.gru = nn.GRU(7, 5, batch_first=True, bidirectional=True)
            self.fc1 = nn.Linear(10, 6)
            self.fc2 = nn.Linear(6, 4)

        def forward(self, ids):
            y, _ = self.lstm(self.emb(ids))
            y, _ = self.gru(y)
            return torch.softmax(self.fc2(torch.relu(self.fc1(y))), -1)

    class TimeMajorSeq(nn.Module):     # time-major in and out, no head
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(5, 6, num_layers=3)

        def forward(self, x):
            return self.rnn(x)[0]

    class FinalState(nn.Module):       # h_n[-1] of a one-layer GRU, Linear, sigmoid
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(5, 6, batch_first=True)
            self.fc = nn.Linear(6, 1)

        def forward(self, x):
            _, h = self.rnn(x)
            return torch.sigmoid(self.fc(h[-1]))

    torch.manual_seed(1)
    return {"mixed_embedding_lstm_bigru_mlp": Mixed(), "lstm_3layer_time_major": TimeMajorSeq(),
            "gru_final_state_sigmoid": FinalState()}


CONVERT_NAMES = TORCH_NAMES + ["mixed_embedding_lstm_bigru_mlp", "lstm_3layer_time_major",
                               "gru_final_state_sigmoid"]
TIME_MAJOR = ("gru_time_major_final_state", "lstm_3layer_time_major")


@pytest.mark.parametrize("opset,dynamic", [(17, True), (17, False), (11, True)],
                         ids=["opset17-dynamic", "opset17-static", "opset11-dynamic"])
@pytest.mark.parametrize("name", CONVERT_NAMES)
def test_torch_export_converts_to_drnn(name, opset, dynamic, torch_models, tmp_path):
    """to_drnn() of torch.onnx.export'ed stacks: a DRNN matching the graph (ORT) to 1e-5,
    batch-first whatever the graph's layout, that survives drnn's own format."""
    import drnn
    torch, models = torch_models
    module = models[name] if name in models else _extra_torch_models(torch)[name]
    rng = np.random.default_rng(2)
    tokens = "embedding" in name
    x = rng.integers(0, 20, (3, 7)).astype(np.int64) if tokens else \
        rng.standard_normal((3, 7, 5)).astype(np.float32)
    if name in TIME_MAJOR:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    path = str(tmp_path / f"{name}.onnx")
    _export(torch, module, x, path, opset, dynamic)
    m = load_onnx(path)
    d = m.to_drnn()
    assert isinstance(d, drnn.DRNN)
    assert d.num_parameters == sum(p.numel() for p in module.parameters())
    assert "drnn convert: yes" in m.describe()
    xb = np.ascontiguousarray(x.transpose(1, 0, 2)) if name in TIME_MAJOR else x
    y_ort = _ort_run(onnx.load(path), {"x": x})["y"]
    y = d.predict(xb)
    if name == "lstm_3layer_time_major":
        y = y.transpose(1, 0, 2)
        assert any("time-major" in r for r in d.source["read"])
    assert y.shape == y_ort.shape
    assert float(np.max(np.abs(y - y_ort))) <= TOL, name
    assert float(np.max(np.abs(y - np.asarray(m.predict(x))))) <= TOL
    out = str(tmp_path / "out.safetensors")
    d.save(out)
    np.testing.assert_array_equal(drnn.load(out).predict(xb), d.predict(xb))


def test_convert_fuses_layers_and_keeps_last_step(torch_models, tmp_path):
    torch, models = torch_models
    x = np.zeros((3, 7, 5), np.float32)
    path = str(tmp_path / "m.onnx")
    _export(torch, models["rnn_relu_2layer_last_softmax"], x, path)
    d = load_onnx(path).to_drnn()
    kinds = [(l.kind, getattr(l, "num_layers", None)) for l in d.layers]
    assert kinds == [("RNN", 2), ("Dense", None)]
    assert not d.returns_sequences and d.layers[1].activation == "softmax"


@pytest.mark.parametrize("kind,direction,opts", [
    ("LSTM", "bidirectional", {"peep": True, "attrs": {"clip": 2.0}}),
    ("GRU", "reverse", {"attrs": {"linear_before_reset": 1}}),
    ("RNN", "forward", {"attrs": {"activations": ["Relu"]}}),
    ("LSTM", "forward", {"layout": 1, "bias": False}),
])
def test_single_node_graph_converts(kind, direction, opts, tmp_path):
    """A lone LSTM/GRU/RNN node whose Y is the output (T, D, N, H): every attribute carries over."""
    model, feeds = make_node_model(kind, 4, 5, direction=direction, **opts)
    m = load_onnx(_save(model, tmp_path))
    d = m.to_drnn()
    x = feeds["X"]
    xb = x if opts.get("layout") else x.transpose(1, 0, 2)
    y = np.asarray(m.predict(x))
    B, T = xb.shape[:2]
    y = y.reshape(B, T, -1) if opts.get("layout") else y.transpose(2, 0, 1, 3).reshape(B, T, -1)
    assert float(np.max(np.abs(d.predict(np.ascontiguousarray(xb)) - y))) <= TOL


def _refused(path, *words):
    m = load_onnx(path)
    with pytest.raises(UnsupportedError) as info:
        m.to_drnn()
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    for w in words:
        assert w in msg, msg
    assert "drnn convert: no" in m.describe()
    return msg


def test_convert_log_softmax_head_fixture(tmp_path):
    """GRU -> reverse RNN(relu) -> MatMul+Add -> LogSoftmax (committed fixture,
    its glue transposing to and from time-major): converts, and the DRNN
    gives the graph's recorded output."""
    path = os.path.join(FIXTURE_DIR, "helper_gru_rnn_stack_opset11.onnx")
    ref = np.load(os.path.join(FIXTURE_DIR, "helper_gru_rnn_stack_opset11.npz"))
    d = load_onnx(path).to_drnn()
    assert d.layers[-1].activation == "log_softmax"
    y = d.predict(ref["in_x"])
    assert float(np.max(np.abs(y - ref["out_y"]))) <= TOL


def test_convert_refusals_name_the_node(tmp_path):
    # y[:, -1] of a bidirectional GRU (committed fixture): not its final state
    _refused(os.path.join(FIXTURE_DIR, "torch_embedding_gru_mlp.onnx"), "'/Gather'",
             "bidirectional")
    # several graph inputs
    _refused(os.path.join(FIXTURE_DIR, "helper_lstm_all_options.onnx"), "4 inputs")
    # Y_c as the output
    model, _ = make_node_model("LSTM", 3, 4)
    model.graph.output[0].CopyFrom(model.graph.output[2])
    del model.graph.output[1:]
    _refused(_save(model, tmp_path, "yc.onnx"), "Y_c")
    # a second computed input: Y + X-dependent tensor
    model, _ = make_node_model("GRU", 3, 3)
    g = model.graph
    g.node.append(oh.make_node("Transpose", ["X"], ["Xt"], perm=[0, 1, 2]))
    g.node.append(oh.make_node("Squeeze", ["Y", "ax"], ["Ys"]))
    g.node.append(oh.make_node("Add", ["Ys", "Xt"], ["Z"]))
    g.initializer.append(onnx.numpy_helper.from_array(np.array([1], np.int64), "ax"))
    del g.output[:]
    g.output.append(oh.make_tensor_value_info("Z", TensorProto.FLOAT, None))
    _refused(_save(model, tmp_path, "add.onnx"), "(Add)", "'Xt'")


def test_convert_refuses_nonzero_initial_state(tmp_path):
    """A constant non-zero initial_h fits the pattern but not the numbers: the probe catches it."""
    model, feeds = make_node_model("GRU", 3, 4, B=2)
    g = model.graph
    g.initializer.append(onnx.numpy_helper.from_array(np.full((1, 2, 4), 0.5, np.float32), "h0"))
    node = g.node[0]
    while len(node.input) < 6:
        node.input.append("")
    node.input[5] = "h0"
    msg = _refused(_save(model, tmp_path, "h0.onnx"), "does not reproduce")
    assert "difference" in msg


# --------------------------------------------------------------------------
# 7. a tf2onnx-shaped graph of a Keras LSTM model, built by hand
# --------------------------------------------------------------------------
# tf2onnx is not installable here (it needs TensorFlow).  This graph is built
# with onnx.helper in the shape tf2onnx's LSTM rewriter (rewriter/
# lstm_tf2_rewriter.py, lstm_rewriter.py) gives a Keras LSTM: the batch-major
# input Transposed to time-major; per layer one LSTM node, layout 0, direction
# forward, W/R/B constants with Keras' gate blocks i f c o reordered to ONNX's
# i o f c (blocks 0, 3, 1, 2), B = [Keras bias, zeros] (Keras has one bias),
# activations listed explicitly, initial_h / initial_c = Unsqueeze(axes 0) of
# zeros computed from the input's shape, Y Squeezed on the num_directions axis;
# return_sequences=False as the last time step (Slice -1 + Squeeze), and a
# Dense as MatMul + Add + Softmax.  The weights come from a real Keras 3 model,
# so the test checks the whole path: drnn's reading of the graph, ORT, Keras.

def _tf2onnx_shaped_keras_lstm(kmodel, T, F, seq_lens=False, opset=13):
    from onnx import numpy_helper as nh
    inits, nodes = [], []

    def const(name, value):
        inits.append(nh.from_array(np.asarray(value), name))
        return name

    def node(op, ins, outs, **attrs):
        nodes.append(oh.make_node(op, ins, outs, name=outs[0].split(":")[0], **attrs))
        return outs[0]

    ifco_to_iofc = [0, 3, 1, 2]

    def reorder(m, H):                   # (rows, 4H) Keras -> (4H, rows) ONNX
        return np.concatenate([m[:, k * H:(k + 1) * H] for k in ifco_to_iofc], axis=1).T

    x = "input_1"
    cur = node("Transpose", [x], ["lstm/transpose:0"], perm=[1, 0, 2])
    # zeros (batch, H) from the input's shape, as tf2onnx converts Keras' get_initial_state
    shape = node("Shape", [x], ["lstm/Shape:0"])
    batch = node("Gather", [shape, const("zero_idx", np.array(0, np.int64))],
                 ["lstm/strided_slice:0"], axis=0)
    batch1 = node("Unsqueeze", [batch, const("axes0", np.array([0], np.int64))],
                  ["lstm/batch:0"])
    rnn_layers = [l for l in kmodel.layers if l.__class__.__name__ == "LSTM"]
    dense = [l for l in kmodel.layers if l.__class__.__name__ == "Dense"]
    for i, layer in enumerate(rnn_layers):
        kernel, rec, bias = [np.asarray(w) for w in layer.get_weights()]
        H = rec.shape[0]
        p = f"lstm_{i}"
        dims = node("Concat", [batch1, const(f"{p}/units", np.array([H], np.int64))],
                    [f"{p}/zeros/packed:0"], axis=0)
        zeros = node("ConstantOfShape", [dims], [f"{p}/zeros:0"],
                     value=nh.from_array(np.zeros(1, np.float32)))
        h0 = node("Unsqueeze", [zeros, "axes0"], [f"{p}/h0:0"])
        c0 = node("Unsqueeze", [zeros, "axes0"], [f"{p}/c0:0"])
        W = const(f"{p}/W", reorder(kernel, H)[None].astype(np.float32))
        R = const(f"{p}/R", reorder(rec, H)[None].astype(np.float32))
        B = const(f"{p}/B", np.concatenate([reorder(bias[None], H).reshape(-1),
                                            np.zeros(4 * H, np.float32)])[None])
        lens = ""
        if seq_lens and i == len(rnn_layers) - 1:
            T_ = node("Gather", [shape, const("one_idx", np.array(1, np.int64))],
                      [f"{p}/T:0"], axis=0)
            lens64 = node("Expand", [T_, batch1], [f"{p}/lens64:0"])
            lens = node("Cast", [lens64], [f"{p}/sequence_lens:0"], to=TensorProto.INT32)
        y = node("LSTM", [cur, W, R, B, lens, h0, c0],
                 [f"{p}/LSTM:0", f"{p}/LSTM:1", f"{p}/LSTM:2"], direction="forward",
                 hidden_size=H, activations=["Sigmoid", "Tanh", "Tanh"])
        y = node("Squeeze", [y, const(f"{p}/axes1", np.array([1], np.int64))],
                 [f"{p}/Squeeze:0"])
        if layer.return_sequences:
            cur = y                              # stays time-major for the next layer
        else:
            last = node("Slice", [y, const(f"{p}/start", np.array([-1], np.int64)),
                                  const(f"{p}/end", np.array([2 ** 63 - 1], np.int64)),
                                  "axes0"], [f"{p}/strided_slice:0"])
            cur = node("Squeeze", [last, "axes0"], [f"{p}/last:0"])
    if rnn_layers[-1].return_sequences:
        cur = node("Transpose", [cur], ["lstm/transpose_1:0"], perm=[1, 0, 2])
    for j, layer in enumerate(dense):
        k, b = [np.asarray(w) for w in layer.get_weights()]
        cur = node("MatMul", [cur, const(f"dense_{j}/kernel", k.astype(np.float32))],
                   [f"dense_{j}/MatMul:0"])
        cur = node("Add", [cur, const(f"dense_{j}/bias", b.astype(np.float32))],
                   [f"dense_{j}/BiasAdd:0"])
        if layer.get_config()["activation"] == "softmax":
            cur = node("Softmax", [cur], [f"dense_{j}/Softmax:0"], axis=-1)
    nodes.append(oh.make_node("Identity", [cur], ["dense"], name="Identity"))
    graph = oh.make_graph(nodes, "tf2onnx", [oh.make_tensor_value_info(
        x, TensorProto.FLOAT, ["unk__6", T, F])], [oh.make_tensor_value_info(
            "dense", TensorProto.FLOAT, ["unk__6", 3] if not kmodel.layers[-2].return_sequences
            else ["unk__6", T, 3])], initializer=inits)
    model = oh.make_model(graph, producer_name="tf2onnx-shaped (built by hand)",
                          opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("variant", ["last_softmax", "sequences", "seq_lens"])
def test_tf2onnx_shaped_keras_lstm_graph_built_by_hand(variant, tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = __import__("keras") if _CI else pytest.importorskip("keras")
    from keras import layers as L
    keras.utils.set_random_seed(5)
    T, F = 6, 4
    last = variant != "sequences"
    kmodel = keras.Sequential([keras.Input((T, F)), L.LSTM(5, return_sequences=True),
                               L.LSTM(4, return_sequences=not last),
                               L.Dense(3, activation="softmax" if last else "linear")])
    model = _tf2onnx_shaped_keras_lstm(kmodel, T, F, seq_lens=variant == "seq_lens")
    path = _save(model, tmp_path, "tf2onnx_shaped.onnx")
    x = np.random.default_rng(6).standard_normal((3, T, F)).astype(np.float32)
    m = load_onnx(path)
    y = m.predict(x)
    y_keras = np.asarray(kmodel.predict(x, verbose=0))
    y_ort = _ort_run(model, {"input_1": x})["dense"]
    assert y.shape == y_ort.shape == y_keras.shape
    assert float(np.max(np.abs(y - y_ort))) <= TOL
    assert float(np.max(np.abs(y - y_keras))) <= TOL
    # ... and it is a plain stack: drnn convert can write it
    d = m.to_drnn()
    assert [l.kind for l in d.layers] == ["LSTM", "LSTM", "Dense"]   # 5 and 4 units: two stacks
    assert d.returns_sequences == (variant == "sequences")
    assert float(np.max(np.abs(d.predict(x) - y_keras))) <= TOL
