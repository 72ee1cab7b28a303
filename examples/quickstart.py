"""drnn in one page: build a deep RNN, run it, save it, load it back.

    pip install . && python examples/quickstart.py
"""
import os
import tempfile

import numpy as np

import drnn

# Token ids -> 2-layer bidirectional LSTM -> GRU -> softmax head.
model = drnn.DRNN([
    drnn.Embedding(100, 32, seed=0),
    drnn.LSTM(32, 64, num_layers=2, bidirectional=True, seed=1),
    drnn.GRU(128, 48, seed=2),
    drnn.Dense(48, 10, activation="softmax", seed=3),
])
print(model)
print(f"{model.num_parameters:,} parameters; kernels: {drnn.cpu_info()['isa']}")

rng = np.random.default_rng(0)
ids = rng.integers(0, 100, size=(4, 25))                    # (batch, time)
lengths = np.array([25, 17, 9, 1])
probs, state = model.predict(ids, lengths=lengths, return_state=True)
print("output", probs.shape, "rows sum to", probs[0, :3].sum(axis=-1))
(h_lstm, c_lstm), h_gru = state
print("LSTM h_n", h_lstm.shape, "c_n", c_lstm.shape, "GRU h_n", h_gru.shape)

# Variable-length sequences as a list; each comes back at its own length.
outs = model.predict([ids[0, :5], ids[1, :12]])
print("list input ->", [o.shape for o in outs])

with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "model.safetensors")
    model.save(path)
    again = drnn.load(path)
    same = np.array_equal(again.predict(ids, lengths=lengths), probs)
    print(f"saved {os.path.getsize(path):,} bytes; reloaded model gives identical output: {same}")
