"""Check the numpy reference's ONNX-only features against ONNX Runtime.

PyTorch has no peepholes, clip, input_forget, configurable activations,
linear_before_reset=0 or a reverse-only direction; ONNX Runtime implements
the ONNX operator spec for all of them.  The reference is written from
that spec; this confirms the reading (float32 in ORT, so tolerance 1e-5).
"""
import numpy as np
import pytest

import helpers
import reference

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: "
                          "ONNX-feature cross-check of the reference skipped")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper as oh  # noqa: E402

_ONNX_NAME = {
    "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "hard_sigmoid": "HardSigmoid",
    "affine": "Affine", "leaky_relu": "LeakyRelu", "thresholded_relu": "ThresholdedRelu",
    "scaled_tanh": "ScaledTanh", "elu": "Elu", "softsign": "Softsign", "softplus": "Softplus",
}
_USES = {"hard_sigmoid": 2, "affine": 2, "scaled_tanh": 2,
         "leaky_relu": 1, "thresholded_relu": 1, "elu": 1}
# torch gate blocks -> onnx gate blocks
_PERM = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN": [0]}


def _blocks(a, kind):
    G = len(_PERM[kind])
    parts = np.split(a, G, axis=0)
    return np.concatenate([parts[i] for i in _PERM[kind]], axis=0)


def run_ort(kind, w, x, H, *, direction, lengths=None, h0=None, c0=None,
            activations=None, clip=None, input_forget=False, peepholes=False,
            linear_before_reset=1):
    B, T, F = x.shape
    D = 2 if direction == "bidirectional" else 1
    sfx = ["", "_reverse"][:D]
    W = np.stack([_blocks(w[f"weight_ih_l0{s}"], kind) for s in sfx])
    R = np.stack([_blocks(w[f"weight_hh_l0{s}"], kind) for s in sfx])
    Bb = np.stack([np.concatenate([_blocks(w[f"bias_ih_l0{s}"], kind),
                                   _blocks(w[f"bias_hh_l0{s}"], kind)]) for s in sfx])
    inputs = {"X": np.ascontiguousarray(x.transpose(1, 0, 2)).astype(np.float32),
              "W": W, "R": R, "B": Bb}
    names = ["X", "W", "R", "B", "sequence_lens", "initial_h"]
    inputs["sequence_lens"] = np.asarray(lengths if lengths is not None else [T] * B, np.int32)
    inputs["initial_h"] = (np.zeros((D, B, H), np.float32) if h0 is None
                           else np.asarray(h0, np.float32))
    if kind == "LSTM":
        names += ["initial_c", "P"]
        inputs["initial_c"] = (np.zeros((D, B, H), np.float32) if c0 is None
                               else np.asarray(c0, np.float32))
        if peepholes:
            P = []
            for s in sfx:
                p = w[f"weight_peep_l0{s}"]
                P.append(np.concatenate([p[:H], p[2 * H:], p[H:2 * H]]))  # i f o -> i o f
            inputs["P"] = np.stack(P)
        else:
            inputs["P"] = np.zeros((D, 3 * H), np.float32)
    attrs = dict(hidden_size=H, direction=direction)
    if activations is not None:
        acts, alphas, betas = [], [], []
        for a in activations:
            name, al, be = (a, None, None) if isinstance(a, str) else a
            acts.append(_ONNX_NAME[name])
            n = _USES.get(name, 0)
            if n:
                assert al is not None
                alphas.append(float(al))
            if n == 2:
                betas.append(float(be))
        attrs["activations"] = acts
        if alphas:
            attrs["activation_alpha"] = alphas
        if betas:
            attrs["activation_beta"] = betas
    if clip is not None:
        attrs["clip"] = float(clip)
    if kind == "LSTM":
        attrs["input_forget"] = int(input_forget)
    if kind == "GRU":
        attrs["linear_before_reset"] = int(linear_before_reset)
    node = oh.make_node(kind, names, ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" else []), **attrs)
    vi = [oh.make_tensor_value_info(n, TensorProto.INT32 if n == "sequence_lens" else TensorProto.FLOAT,
                                    list(inputs[n].shape)) for n in names]
    outs = [oh.make_tensor_value_info(n, TensorProto.FLOAT, None)
            for n in ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" else [])]
    graph = oh.make_graph([node], "g", vi, outs)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 14)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    res = sess.run(None, {n: inputs[n] for n in names})
    Y = res[0]  # (T, D, B, H)
    y = Y.transpose(2, 0, 1, 3).reshape(B, T, D * H)
    return y, res[1], (res[2] if kind == "LSTM" else None)


ACT_ITEMS = [
    ("hard_sigmoid", 0.2, 0.5), ("affine", 0.5, 0.1), ("leaky_relu", 0.1, 0.0),
    ("thresholded_relu", 0.2, 0.0), ("scaled_tanh", 0.9, 1.1), ("elu", 0.8, 0.0),
    "softsign", "softplus", "relu", "sigmoid", "tanh",
]

CASES = [
    # kind, direction, options
    ("LSTM", "forward", dict(peepholes=True)),
    ("LSTM", "bidirectional", dict(peepholes=True, clip=0.4)),
    ("LSTM", "forward", dict(input_forget=True)),
    ("LSTM", "reverse", dict(input_forget=True, peepholes=True, clip=0.7)),
    ("LSTM", "forward", dict(activations=[("hard_sigmoid", 0.2, 0.5), "softsign", ("scaled_tanh", 0.9, 1.1)])),
    ("LSTM", "bidirectional", dict(activations=["sigmoid", ("affine", 0.5, 0.1), "softplus",
                                                ("hard_sigmoid", 0.3, 0.4), "tanh", ("elu", 0.8, 0.0)])),
    ("GRU", "forward", dict(linear_before_reset=0)),
    ("GRU", "bidirectional", dict(linear_before_reset=0, clip=0.3)),
    ("GRU", "reverse", dict(clip=0.5)),
    ("GRU", "forward", dict(activations=["softsign", ("leaky_relu", 0.1, 0.0)])),
    ("GRU", "bidirectional", dict(linear_before_reset=0,
                                  activations=["sigmoid", "tanh", ("hard_sigmoid", 0.2, 0.5), "softsign"])),
    ("RNN", "forward", dict(activations=[("thresholded_relu", 0.2, 0.0)])),
    ("RNN", "reverse", dict(activations=["softplus"], clip=0.6)),
    ("RNN", "bidirectional", dict(activations=[("elu", 0.8, 0.0), ("scaled_tanh", 0.9, 1.1)])),
    ("RNN", "forward", dict(activations=[("leaky_relu", 0.1, 0.0)], clip=2.0)),
]


@pytest.mark.parametrize("kind,direction,opts", CASES,
                         ids=[f"{c[0]}-{c[1]}-{'-'.join(sorted(c[2]))}" for c in CASES])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_reference_matches_onnxruntime(kind, direction, opts, with_lengths):
    B, T, F, H = 3, 6, 5, 7
    rng = np.random.default_rng(11)
    D = 2 if direction == "bidirectional" else 1
    w = reference.random_weights(kind, F, H, 1, bidirectional=D == 2,
                                 peepholes=opts.get("peepholes", False), rng=rng)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    lengths = [6, 1, 4] if with_lengths else None
    h0 = rng.uniform(-1, 1, (D, B, H)).astype(np.float32)
    c0 = rng.uniform(-1, 1, (D, B, H)).astype(np.float32)
    y_o, hn_o, cn_o = run_ort(kind, w, x, H, direction=direction, lengths=lengths,
                              h0=h0, c0=c0, **opts)
    ref_opts = dict(opts)
    if "linear_before_reset" in ref_opts:
        ref_opts["linear_before_reset"] = bool(ref_opts["linear_before_reset"])
    ref = getattr(reference, kind)(F, H, 1, bidirectional=D == 2,
                                   reverse=direction == "reverse", weights=w, **ref_opts)
    y, hn, cn = ref.forward(x, lengths=lengths, h0=h0, c0=c0 if kind == "LSTM" else None)
    if with_lengths:
        # only the valid span is compared here (padding is checked in drnn tests)
        y_o = helpers.zero_past_lengths(y_o, lengths)
    helpers.assert_close(y, y_o, 1e-5, "y")
    helpers.assert_close(hn, hn_o, 1e-5, "h_n")
    if kind == "LSTM":
        helpers.assert_close(cn, cn_o, 1e-5, "c_n")
