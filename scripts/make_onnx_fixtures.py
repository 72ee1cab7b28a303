#!/usr/bin/env python
"""Write the ONNX fixtures tests/fixtures/onnx/*.onnx + *.npz.

    python scripts/make_onnx_fixtures.py [--out tests/fixtures/onnx]

Needs onnx, onnxruntime and torch (drnn is not used: the expected outputs
come from ONNX Runtime).  For each NAME:

  NAME.onnx   a real ONNX model (torch.onnx.export, dynamo=False, or onnx.helper)
  NAME.npz    (np.load(..., allow_pickle=False))
                in_<input name>    every graph input fed to ONNX Runtime
                out_<output name>  every graph output ONNX Runtime returned

tests/test_load_onnx.py::test_fixture runs drnn's load_onnx(NAME.onnx).run()
on the in_ arrays and compares with out_ (1e-5).  Seeds are fixed; keep the
total under 150 KB.
"""
import argparse
import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper as oh, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(os.path.dirname(HERE), "tests", "fixtures", "onnx")


def torch_lstm_bi_2layer_linear():
    """torch: 2-layer bidirectional LSTM (5 -> 8) + Linear(16, 3), dynamic batch/time."""
    torch.manual_seed(1)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(5, 8, 2, batch_first=True, bidirectional=True)
            self.fc = torch.nn.Linear(16, 3)

        def forward(self, x):
            return self.fc(self.rnn(x)[0])

    x = np.random.default_rng(1).standard_normal((2, 6, 5)).astype(np.float32)
    return M().eval(), {"x": x}


def torch_embedding_gru_mlp():
    """torch: Embedding(30, 6) + bidirectional GRU(6 -> 7) + Linear/ReLU/Linear on the last step."""
    torch.manual_seed(2)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(30, 6)
            self.rnn = torch.nn.GRU(6, 7, batch_first=True, bidirectional=True)
            self.fc1 = torch.nn.Linear(14, 5)
            self.fc2 = torch.nn.Linear(5, 2)

        def forward(self, ids):
            y, _ = self.rnn(self.emb(ids))
            return torch.softmax(self.fc2(torch.relu(self.fc1(y[:, -1]))), -1)

    ids = np.random.default_rng(2).integers(0, 30, (3, 5)).astype(np.int64)
    return M().eval(), {"x": ids}


def export(module, feeds, path):
    x = next(iter(feeds.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.as_tensor(x),), path, input_names=["x"],
                          output_names=["y"], opset_version=17, dynamo=False,
                          dynamic_axes={"x": {0: "batch", 1: "time"}, "y": {0: "batch"}})


def helper_lstm_all_options():
    """onnx.helper: bidirectional LSTM with B, P, sequence_lens, initial_h/c, clip,
    activations with alpha/beta (opset 14, layout 0); all inputs but X's weights fed."""
    rng = np.random.default_rng(3)
    T, N, F, H, D = 5, 3, 4, 6, 2
    W = rng.uniform(-0.6, 0.6, (D, 4 * H, F)).astype(np.float32)
    R = rng.uniform(-0.6, 0.6, (D, 4 * H, H)).astype(np.float32)
    B = rng.uniform(-0.4, 0.4, (D, 8 * H)).astype(np.float32)
    P = rng.uniform(-0.4, 0.4, (D, 3 * H)).astype(np.float32)
    feeds = {"X": rng.standard_normal((T, N, F)).astype(np.float32),
             "sequence_lens": np.array([5, 2, 4], np.int32),
             "initial_h": rng.uniform(-1, 1, (D, N, H)).astype(np.float32),
             "initial_c": rng.uniform(-1, 1, (D, N, H)).astype(np.float32)}
    node = oh.make_node(
        "LSTM", ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"],
        ["Y", "Y_h", "Y_c"], hidden_size=H, direction="bidirectional", clip=1.5,
        activations=["HardSigmoid", "Tanh", "Softsign", "Sigmoid", "ScaledTanh", "Tanh"],
        activation_alpha=[0.25, 0.9], activation_beta=[0.45, 1.1])
    vis = [oh.make_tensor_value_info(k, TensorProto.INT32 if k == "sequence_lens"
                                     else TensorProto.FLOAT, list(v.shape))
           for k, v in feeds.items()]
    outs = [oh.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("Y", "Y_h", "Y_c")]
    inits = [numpy_helper.from_array(a, n) for n, a in (("W", W), ("R", R), ("B", B), ("P", P))]
    graph = oh.make_graph([node], "lstm_all_options", vis, outs, initializer=inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 14)])
    model.ir_version = 8
    return model, feeds


def helper_gru_rnn_stack_opset11():
    """onnx.helper, opset 11 (Squeeze axes as attribute): GRU (linear_before_reset=0,
    input_forget n/a) -> Squeeze -> RNN reverse (Relu) -> Squeeze -> Transpose ->
    MatMul + Add -> LogSoftmax; batch-first input transposed in-graph."""
    rng = np.random.default_rng(4)
    N, T, F, H1, H2, O = 2, 6, 3, 5, 4, 3
    inits = {
        "W1": rng.uniform(-0.6, 0.6, (1, 3 * H1, F)), "R1": rng.uniform(-0.6, 0.6, (1, 3 * H1, H1)),
        "B1": rng.uniform(-0.4, 0.4, (1, 6 * H1)),
        "W2": rng.uniform(-0.6, 0.6, (1, H2, H1)), "R2": rng.uniform(-0.6, 0.6, (1, H2, H2)),
        "B2": rng.uniform(-0.4, 0.4, (1, 2 * H2)),
        "Wd": rng.uniform(-0.6, 0.6, (H2, O)), "bd": rng.uniform(-0.4, 0.4, (O,)),
    }
    inits = {k: v.astype(np.float32) for k, v in inits.items()}
    nodes = [
        oh.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        oh.make_node("GRU", ["xt", "W1", "R1", "B1"], ["y1", ""], hidden_size=H1,
                     linear_before_reset=0),
        oh.make_node("Squeeze", ["y1"], ["s1"], axes=[1]),
        oh.make_node("RNN", ["s1", "W2", "R2", "B2"], ["y2", "h2"], hidden_size=H2,
                     direction="reverse", activations=["Relu"]),
        oh.make_node("Squeeze", ["y2"], ["s2"], axes=[1]),
        oh.make_node("Transpose", ["s2"], ["s2t"], perm=[1, 0, 2]),
        oh.make_node("MatMul", ["s2t", "Wd"], ["m"]),
        oh.make_node("Add", ["m", "bd"], ["logits"]),
        oh.make_node("LogSoftmax", ["logits"], ["y"], axis=2),
    ]
    graph = oh.make_graph(
        nodes, "gru_rnn_stack",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", F])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 11)])
    model.ir_version = 6
    feeds = {"x": rng.standard_normal((N, T, F)).astype(np.float32)}
    return model, feeds


def write(out, name, model_path, feeds):
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    results = sess.run(None, feeds)
    arrays = {f"in_{k}": v for k, v in feeds.items()}
    arrays.update({f"out_{k}": v for k, v in zip(names, results)})
    np.savez_compressed(os.path.join(out, name + ".npz"), **arrays)
    print(f"wrote {name}: inputs {list(feeds)}, outputs {names}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, make in (("torch_lstm_bi_2layer_linear", torch_lstm_bi_2layer_linear),
                       ("torch_embedding_gru_mlp", torch_embedding_gru_mlp)):
        module, feeds = make()
        path = os.path.join(args.out, name + ".onnx")
        export(module, feeds, path)
        write(args.out, name, path, feeds)
    for name, make in (("helper_lstm_all_options", helper_lstm_all_options),
                       ("helper_gru_rnn_stack_opset11", helper_gru_rnn_stack_opset11)):
        model, feeds = make()
        path = os.path.join(args.out, name + ".onnx")
        onnx.save(model, path)
        write(args.out, name, path, feeds)
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"total {total / 1024:.1f} KB")


if __name__ == "__main__":
    main()
