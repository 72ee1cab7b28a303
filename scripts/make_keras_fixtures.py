#!/usr/bin/env python
"""Write the Keras golden fixtures tests/fixtures/keras/ from live Keras 3.

    KERAS_BACKEND=torch python scripts/make_keras_fixtures.py [--out tests/fixtures/keras]

For each fixture NAME it writes the model file itself (NAME.keras or NAME.h5,
exactly as Keras saved it) and NAME.npz (np.load(..., allow_pickle=False)):

  x          the input (float32, or int32 token ids)
  y          Keras' output, model.predict(x)
  keras      uint8 array holding the UTF-8 Keras version string

Seeds are fixed.  Needs: pip install keras h5py (and torch for the backend).
Keep the total small (< 150 KB).
"""
import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402


def fixtures():
    import keras
    from keras import layers as L

    def seq(*layers):
        return keras.Sequential(list(layers))

    rng = np.random.default_rng(1234)
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    tok = rng.integers(1, 16, (2, 6)).astype(np.int32)
    out = []
    keras.utils.set_random_seed(11)
    out.append(("lstm_hardsig_dense", ".keras", x, seq(
        keras.Input((6, 3)),
        L.LSTM(5, return_sequences=True, recurrent_activation="hard_sigmoid"),
        L.LSTM(4),
        L.Dense(2, activation="softmax"))))
    keras.utils.set_random_seed(12)
    out.append(("bigru_reset_before", ".h5", x, seq(
        keras.Input((6, 3)),
        L.Bidirectional(L.GRU(4, return_sequences=True, reset_after=False)),
        L.Dropout(0.3),
        L.Dense(3, activation="tanh"))))
    keras.utils.set_random_seed(13)
    inp = keras.Input((6,), dtype="int32")
    h = L.Embedding(16, 4)(inp)
    h = L.GRU(5, return_sequences=True, use_bias=False)(h)
    h = L.Bidirectional(L.SimpleRNN(3), merge_mode="ave")(h)
    out.append(("functional_embedding_gru_rnn", ".keras", tok,
                keras.Model(inp, L.Dense(2)(h))))
    return out


def main():
    import keras
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..",
                                                  "tests", "fixtures", "keras"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, ext, x, model in fixtures():
        path = os.path.join(args.out, name + ext)
        model.save(path)
        y = np.asarray(model.predict(x, verbose=0), dtype=np.float32)
        np.savez(os.path.join(args.out, name + ".npz"), x=x, y=y,
                 keras=np.frombuffer(keras.__version__.encode(), np.uint8))
        print(f"wrote {path} ({os.path.getsize(path)} bytes), y {y.shape}")


if __name__ == "__main__":
    main()
