#!/usr/bin/env python
"""Write the PyTorch checkpoint fixtures tests/fixtures/torch/*.pt from live torch.

    python scripts/make_torch_fixtures.py [--out tests/fixtures/torch]

Each NAME.pt is a real torch.save file (zip format); its sibling NAME.npz
(np.load(..., allow_pickle=False)) holds:

  options   uint8 array of UTF-8 JSON: the keyword options of
            drnn.io.torch_pt.load_pt needed for this file, plus "layers",
            the drnn layer kinds the loader must infer, and "torch_version"
  x         batch-first input (float32, or int64 token ids)
  y         the torch module's output for x (float32)

Seeds are fixed; the total stays well under 100 KB.  tests/test_load_torch.py
checks these files without torch installed.
"""
import argparse
import json
import os

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(os.path.dirname(HERE), "tests", "fixtures", "torch")


class EmbLSTMHead(nn.Module):
    """Embedding -> LSTM (proj_size) -> Linear -> ReLU -> Linear on the last step."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(12, 6)
        self.lstm = nn.LSTM(6, 8, batch_first=True, proj_size=4)
        self.fc1 = nn.Linear(4, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, ids):
        out, _ = self.lstm(self.embedding(ids))
        return self.fc2(torch.relu(self.fc1(out[:, -1])))


class GRUHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 6, batch_first=True)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return torch.sigmoid(self.head(self.gru(x)[0]))


def _run(m, x):
    with torch.no_grad():
        out = m(x)
    return (out[0] if isinstance(out, tuple) else out).float().numpy()


def build(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    fixtures = []

    # 1. a bare state_dict: 2-layer bidirectional LSTM
    torch.manual_seed(101)
    m = nn.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True).eval()
    x = torch.randn(2, 6, 4)
    fixtures.append(("lstm_2layer_bidirectional", m.state_dict(), {}, ["LSTM"], x, _run(m, x)))

    # 2. a training checkpoint wrapper around a custom GRU + Linear module
    torch.manual_seed(102)
    m = GRUHead().eval()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    x = torch.randn(2, 5, 3)
    m.train()
    m(x).sum().backward()
    opt.step()
    m.eval()
    ckpt = {"epoch": 7, "model_state_dict": m.state_dict(),
            "optimizer_state_dict": opt.state_dict(), "loss": 0.25, "note": "fixture"}
    fixtures.append(("gru_head_checkpoint", ckpt, {"dense_activations": ["sigmoid"]},
                     ["GRU", "Dense"], x, _run(m, x)))

    # 3. RNN relu (not stored in the state_dict: the nonlinearity option)
    torch.manual_seed(103)
    m = nn.RNN(3, 7, nonlinearity="relu", bias=False, batch_first=True).eval()
    x = torch.randn(3, 4, 3)
    fixtures.append(("rnn_relu_nobias", m.state_dict(), {"nonlinearity": "relu"},
                     ["RNN"], x, _run(m, x)))

    # 4. Embedding + LSTM(proj) + two Linear, last step, under "state_dict"
    torch.manual_seed(104)
    m = EmbLSTMHead().eval()
    x = torch.randint(0, 12, (2, 5))
    fixtures.append(("embedding_lstm_proj_head", {"state_dict": m.state_dict(), "arch": "x"},
                     {"dense_activations": ["relu", "identity"], "return_sequences": False},
                     ["Embedding", "LSTM", "Dense", "Dense"], x, _run(m, x)))

    # 5. a bfloat16 GRU (expected output from the same weights in float32)
    torch.manual_seed(105)
    m = nn.GRU(3, 4, batch_first=True).to(torch.bfloat16).eval()
    x = torch.randn(2, 4, 3)
    ref = nn.GRU(3, 4, batch_first=True)
    ref.load_state_dict({k: v.float() for k, v in m.state_dict().items()})
    fixtures.append(("gru_bfloat16", {"model": m.state_dict()}, {}, ["GRU"], x,
                     _run(ref.eval(), x)))

    for name, obj, options, kinds, x, y in fixtures:
        pt = os.path.join(out_dir, name + ".pt")
        torch.save(obj, pt)
        meta = dict(options, layers=kinds, torch_version=torch.__version__)
        np.savez(os.path.join(out_dir, name + ".npz"),
                 options=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                 x=x.numpy(), y=y.astype(np.float32))
        print(f"wrote {pt} ({os.path.getsize(pt)} bytes)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    build(ap.parse_args().out)
