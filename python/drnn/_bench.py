"""Helpers for `drnn bench`: rebuild a drnn.DRNN as a torch.nn.Module (from the
layers' own parameters), export that to ONNX, and time all three.

torch and onnxruntime are imported only here, only when asked for, and only
if installed; a model that PyTorch cannot express (peepholes, ONNX-only
activations, clip, ...) is benchmarked in drnn alone, with a note saying why.
"""
import os
import statistics
import tempfile
import time

import numpy as np


class Unavailable(Exception):
    """A peer framework cannot run this model (missing, or a feature it lacks)."""


def _torch_recurrent_kwargs(layer):
    from .layers import GRU, LSTM, RNN
    why = []
    if layer.reverse:
        why.append("reverse=True")
    if layer.clip is not None:
        why.append("clip")
    if isinstance(layer, LSTM) and (layer.peepholes or layer.input_forget):
        why.append("peepholes/input_forget")
    if isinstance(layer, GRU) and not layer.linear_before_reset:
        why.append("linear_before_reset=False")
    acts = [list(a) for d in layer.activations for a in d]
    if isinstance(layer, RNN):
        names = {a[0] for a in acts}
        if len(names) != 1 or not names <= {"tanh", "relu"}:
            why.append(f"activations {acts}")
        nonlin = acts[0][0]
    else:
        default = [list(a) for d in layer._parse_activations(None) for a in d]
        if acts != default:
            why.append(f"activations {acts}")
        nonlin = None
    if why:
        raise Unavailable(f"{layer.kind} with {', '.join(why)} has no PyTorch equivalent")
    kw = dict(num_layers=layer.num_layers, bias=layer.bias, batch_first=True,
              bidirectional=layer.bidirectional)
    if isinstance(layer, LSTM) and layer.proj_size:
        kw["proj_size"] = layer.proj_size
    if nonlin:
        kw["nonlinearity"] = nonlin
    return kw


def to_torch(model):
    """A torch.nn.Module computing what `model` (a drnn.DRNN) computes, on
    batch-first input, with the same weights."""
    try:
        import torch
        import torch.nn as nn
    except ImportError:
        raise Unavailable("torch is not installed") from None
    from .layers import GRU, LSTM, RNN, Dense, Embedding, Recurrent

    acts = {"identity": None, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    mods, kinds = [], []
    for layer in model.layers:
        if isinstance(layer, Embedding):
            m = nn.Embedding(layer.num_embeddings, layer.embedding_dim)
            m.weight.data = torch.from_numpy(np.array(layer.weight))
            mods.append(m)
            kinds.append("embed")
        elif isinstance(layer, Dense):
            m = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
            m.weight.data = torch.from_numpy(np.array(layer.weight))
            if layer.bias is not None:
                m.bias.data = torch.from_numpy(np.array(layer.bias))
            mods.append(m)
            kinds.append("dense")
            if layer.activation in ("softmax", "log_softmax"):
                mods.append(nn.Softmax(dim=-1) if layer.activation == "softmax"
                            else nn.LogSoftmax(dim=-1))
                kinds.append("act")
            elif acts.get(layer.activation, 0) is not None:
                if layer.activation not in acts:
                    raise Unavailable(f"Dense activation {layer.activation!r}")
                mods.append(acts[layer.activation]())
                kinds.append("act")
        elif isinstance(layer, Recurrent):
            cls = {LSTM: nn.LSTM, GRU: nn.GRU, RNN: nn.RNN}[type(layer)]
            m = cls(layer.input_size, layer.hidden_size, **_torch_recurrent_kwargs(layer))
            for name, value in layer.params().items():
                getattr(m, name).data = torch.from_numpy(np.array(value))
            mods.append(m)
            kinds.append("last" if not layer.return_sequences else "seq")
        else:
            raise Unavailable(f"layer {type(layer).__name__}")

    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(mods)

        def forward(self, x):
            for m, kind in zip(self.layers, kinds):
                if kind in ("seq", "last"):
                    y, state = m(x)
                    if kind == "last":
                        h = state[0] if isinstance(state, tuple) else state
                        x = torch.cat([h[-2], h[-1]], -1) if m.bidirectional else h[-1]
                    else:
                        x = y
                else:
                    x = m(x)
            return x

    return Chain().eval()


def _timeit(fn, repeats):
    fn()                                    # warm up (and first-call allocation)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def example_input(model, batch, steps, seed=0):
    rng = np.random.default_rng(seed)
    if model.takes_tokens:
        return rng.integers(0, model.layers[0].num_embeddings, size=(batch, steps)).astype(np.int64)
    return rng.standard_normal((batch, steps, model.input_size)).astype(np.float32)


def run(model, shapes, repeats, num_threads, peers=True):
    """-> (rows, notes): rows of (label, {framework: (seconds, max |diff| vs drnn)})."""
    import drnn
    threads = num_threads or drnn.cpu_info()["num_threads"]
    inputs = [(f"{b} x {t}", example_input(model, b, t)) for b, t in shapes]
    results = {label: {} for label, _ in inputs}
    notes = []
    ref = {}
    for label, x in inputs:
        ref[label] = model.predict(x, num_threads=threads)
        results[label]["drnn"] = (_timeit(lambda: model.predict(x, num_threads=threads), repeats), None)
    if not peers:
        return inputs, results, notes
    if not isinstance(model, drnn.DRNN):
        notes.append("torch, onnxruntime: skipped (only a drnn.DRNN stack is rebuilt in them)")
        return inputs, results, notes
    try:
        tm = to_torch(model)
    except Unavailable as e:
        notes.append(f"torch, onnxruntime: skipped ({e})")
        return inputs, results, notes
    import torch
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for label, x in inputs:
                tx = torch.from_numpy(x)
                y = tm(tx).numpy()
                diff = float(np.max(np.abs(y - ref[label])))
                results[label]["torch"] = (_timeit(lambda: tm(tx), repeats), diff)
    finally:
        torch.set_num_threads(prev)
    try:
        import onnxruntime as ort
    except ImportError:
        notes.append("onnxruntime: skipped (not installed)")
        return inputs, results, notes
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        x0 = torch.from_numpy(inputs[0][1])
        try:
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(tm, (x0,), path, dynamo=False, input_names=["x"],
                                  output_names=["y"],
                                  dynamic_axes={"x": {0: "batch", 1: "time"}, "y": {0: "batch"}})
        except Exception as e:      # exporter limits: report, do not fail the bench
            notes.append(f"onnxruntime: skipped (ONNX export failed: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})")
            return inputs, results, notes
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for label, x in inputs:
            y = sess.run(None, {"x": x})[0]
            diff = float(np.max(np.abs(y - ref[label])))
            results[label]["onnxruntime"] = (
                _timeit(lambda: sess.run(None, {"x": x}), repeats), diff)
    return inputs, results, notes
