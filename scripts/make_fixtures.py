#!/usr/bin/env python
"""Write the golden fixtures tests/fixtures/*.npz from live PyTorch.

    python scripts/make_fixtures.py [--out tests/fixtures]

Each fixture is an .npz readable with np.load(..., allow_pickle=False):

  config            uint8 array holding UTF-8 JSON:
                      {"name", "description", "torch_version",
                       "layers": [{"type": "LSTM"|"GRU"|"RNN"|"Embedding"|"Dense",
                                   "args": [...], "kwargs": {...}}, ...]}
                    args/kwargs are the drnn constructor's (without weights).
  layer{i}/<name>   float32 weights of layer i: recurrent layers under
                    PyTorch state_dict names without module prefix
                    (weight_ih_l0, bias_hh_l1_reverse, weight_hr_l0, ...),
                    Embedding "weight", Dense "weight" (out, in) and "bias".
  x                 batch-first input (float32, or int64 token ids)
  lengths           int64 (B), only when the fixture uses variable lengths
  h0_{j}, c0_{j}    initial states of the j-th recurrent layer (PyTorch
                    layout (L*D, B, H_out) / (L*D, B, H)); absent = zeros
  y                 expected output from torch (positions past a
                    sequence's length are 0, drnn's contract)
  hn_{j}, cn_{j}    expected final states of the j-th recurrent layer

Seeds are fixed, so re-running reproduces the same files for a given torch
build.  Keep the total small (< 200 KB).
"""
import argparse
import json
import os

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(os.path.dirname(HERE), "tests", "fixtures")


def _np(t):
    return t.detach().cpu().numpy()


def _run_rnn(m, x, lengths, state):
    """Batch-first torch run with optional packing; returns y, h_n, c_n."""
    T = x.shape[1]
    with torch.no_grad():
        if lengths is not None:
            packed = pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=True,
                                          enforce_sorted=False)
            out, st = m(packed, state)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        else:
            out, st = m(x, state)
    if isinstance(m, nn.LSTM):
        return out, st[0], st[1]
    return out, st, None


def _layer_entry(mod):
    """drnn constructor description of a torch module."""
    if isinstance(mod, nn.Embedding):
        return {"type": "Embedding", "args": [mod.num_embeddings, mod.embedding_dim], "kwargs": {}}
    if isinstance(mod, nn.Linear):
        return {"type": "Dense", "args": [mod.in_features, mod.out_features],
                "kwargs": {"activation": "identity"}}
    kw = {"bidirectional": mod.bidirectional, "bias": mod.bias}
    if isinstance(mod, nn.RNN):
        kw["nonlinearity"] = mod.nonlinearity
        typ = "RNN"
    elif isinstance(mod, nn.LSTM):
        kw["proj_size"] = mod.proj_size
        typ = "LSTM"
    else:
        typ = "GRU"
    return {"type": typ, "args": [mod.input_size, mod.hidden_size, mod.num_layers], "kwargs": kw}


def build_fixture(name, description, modules, x, lengths=None, with_init=False, seed=0):
    """Run torch modules in sequence (batch-first) and pack everything."""
    rng = np.random.default_rng(seed)
    arrays = {}
    layers = []
    h = torch.as_tensor(x)
    j = 0
    B = x.shape[0]
    for i, mod in enumerate(modules):
        mod.eval()
        layers.append(_layer_entry(mod))
        for k, v in mod.state_dict().items():
            arrays[f"layer{i}/{k}"] = _np(v).astype(np.float32)
        if isinstance(mod, (nn.RNN, nn.LSTM, nn.GRU)):
            D = 2 if mod.bidirectional else 1
            Ho = mod.proj_size if isinstance(mod, nn.LSTM) and mod.proj_size else mod.hidden_size
            state = None
            if with_init:
                h0 = rng.uniform(-1, 1, (mod.num_layers * D, B, Ho)).astype(np.float32)
                arrays[f"h0_{j}"] = h0
                state = torch.from_numpy(h0)
                if isinstance(mod, nn.LSTM):
                    c0 = rng.uniform(-1, 1, (mod.num_layers * D, B, mod.hidden_size)).astype(np.float32)
                    arrays[f"c0_{j}"] = c0
                    state = (state, torch.from_numpy(c0))
            h, hn, cn = _run_rnn(mod, h, lengths, state)
            arrays[f"hn_{j}"] = _np(hn)
            if cn is not None:
                arrays[f"cn_{j}"] = _np(cn)
            j += 1
        else:
            with torch.no_grad():
                h = mod(h)
    y = _np(h).copy()
    if lengths is not None:
        for b, n in enumerate(lengths):
            y[b, n:] = 0.0
        arrays["lengths"] = np.asarray(lengths, dtype=np.int64)
    arrays["x"] = x
    arrays["y"] = y.astype(np.float32)
    config = {"name": name, "description": description, "torch_version": torch.__version__,
              "layers": layers}
    arrays["config"] = np.frombuffer(json.dumps(config, sort_keys=True).encode("utf-8"),
                                     dtype=np.uint8)
    return arrays


def fixtures():
    out = {}

    torch.manual_seed(1)
    x = np.random.default_rng(1).standard_normal((3, 7, 6)).astype(np.float32)
    out["lstm_proj_bidirectional"] = build_fixture(
        "lstm_proj_bidirectional", "nn.LSTM(6, 10, proj_size=4, bidirectional) with lengths "
        "and initial states",
        [nn.LSTM(6, 10, proj_size=4, bidirectional=True, batch_first=True)],
        x, lengths=[7, 2, 5], with_init=True, seed=1)

    torch.manual_seed(2)
    x = np.random.default_rng(2).standard_normal((2, 6, 5)).astype(np.float32)
    out["gru_2layer"] = build_fixture(
        "gru_2layer", "nn.GRU(5, 9, num_layers=2) with initial state, no lengths",
        [nn.GRU(5, 9, num_layers=2, batch_first=True)], x, with_init=True, seed=2)

    torch.manual_seed(3)
    x = np.random.default_rng(3).standard_normal((2, 5, 4)).astype(np.float32)
    out["rnn_relu_bidirectional"] = build_fixture(
        "rnn_relu_bidirectional", "nn.RNN(4, 8, nonlinearity=relu, bidirectional, bias=False) "
        "with lengths",
        [nn.RNN(4, 8, nonlinearity="relu", bidirectional=True, bias=False, batch_first=True)],
        x, lengths=[5, 1], seed=3)

    torch.manual_seed(4)
    x = np.random.default_rng(4).standard_normal((4, 8, 5)).astype(np.float32)
    out["stack_lengths"] = build_fixture(
        "stack_lengths", "nn.LSTM(5, 7, num_layers=2, bidirectional) -> nn.GRU(14, 6) with "
        "lengths (incl. 1) and initial states of both",
        [nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True),
         nn.GRU(14, 6, batch_first=True)],
        x, lengths=[8, 3, 1, 6], with_init=True, seed=4)

    torch.manual_seed(5)
    ids = np.random.default_rng(5).integers(0, 40, (3, 9)).astype(np.int64)
    out["embedding_lstm_linear"] = build_fixture(
        "embedding_lstm_linear", "nn.Embedding(40, 8) -> nn.LSTM(8, 12) -> nn.Linear(12, 5), "
        "token ids with lengths",
        [nn.Embedding(40, 8), nn.LSTM(8, 12, batch_first=True), nn.Linear(12, 5)],
        ids, lengths=[9, 4, 1], seed=5)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    total = 0
    for name, arrays in fixtures().items():
        path = os.path.join(args.out, name + ".npz")
        np.savez_compressed(path, **arrays)
        size = os.path.getsize(path)
        total += size
        print(f"{path}: {size} bytes, {len(arrays)} arrays")
    print(f"total {total} bytes")
    if total >= 200 * 1024:
        raise SystemExit("fixtures exceed 200 KB")


if __name__ == "__main__":
    main()
