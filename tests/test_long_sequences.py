"""Long sequences run in slices of time, with bounded scratch.

A recurrent layer's scratch holds the input projection of every step, several
times the output's own size.  When a forward-only model's scratch would pass
drnn._core.RUN_SLICE_BYTES, predict() (and Stream.run) go through the
sequence in slices, carrying the state from one to the next: the same bits as
one pass.  Here the budget is shrunk so that short sequences slice.
"""
import tracemalloc

import numpy as np
import pytest

import drnn


def _models():
    return {
        "lstm": drnn.DRNN([drnn.LSTM(5, 32, seed=1)]),
        "gru2-dense": drnn.DRNN([drnn.GRU(5, 24, 2, seed=2), drnn.Dense(24, 3, seed=3)]),
        "mixed-proj": drnn.DRNN([drnn.LSTM(5, 20, 2, proj_size=7, peepholes=True, seed=4),
                                 drnn.RNN(7, 9, nonlinearity="relu", seed=5),
                                 drnn.Dense(9, 4, activation="softmax", seed=6)]),
        "last-step": drnn.DRNN([drnn.GRU(5, 16, seed=7),
                                drnn.LSTM(16, 12, return_sequences=False, seed=8),
                                drnn.Dense(12, 3, seed=9)]),
        "tokens": drnn.DRNN([drnn.Embedding(30, 5, seed=10), drnn.GRU(5, 11, seed=11)]),
    }


MODELS = _models()


def _input(model, B, T, seed=0):
    rng = np.random.default_rng(seed)
    if model.takes_tokens:
        return rng.integers(0, 30, size=(B, T))
    return rng.standard_normal((B, T, 5)).astype(np.float32)


def _states_equal(a, b):
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _states_equal(u, v)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("budget", [1, 5000])
def test_sliced_predict_is_bit_exact(name, B, threads, budget, monkeypatch):
    model = MODELS[name]
    x = _input(model, B, 90, seed=B)
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 91, size=B) if B > 1 else None
    _, st = model.predict(x[:, :5], return_state=True)      # a non-zero initial state
    ref = model.predict(x, lengths=lengths, initial_state=st, return_state=True,
                        num_threads=threads)
    ref_one = model.predict(x[0], num_threads=threads)       # unbatched form
    assert model._slice_steps(B, 90) is None
    monkeypatch.setattr(drnn._core, "RUN_SLICE_BYTES", budget)
    step = model._slice_steps(B, 90)
    assert step is not None and step < 60                    # two slices or more
    assert budget > 1 or step == 1
    got = model.predict(x, lengths=lengths, initial_state=st, return_state=True,
                        num_threads=threads)
    np.testing.assert_array_equal(got[0], ref[0])
    _states_equal(got[1], ref[1])
    np.testing.assert_array_equal(model.predict(x[0], num_threads=threads), ref_one)


def test_list_input_with_lengths_is_sliced_exactly(monkeypatch):
    model = MODELS["gru2-dense"]
    rng = np.random.default_rng(2)
    seqs = [rng.standard_normal((n, 5)).astype(np.float32) for n in (70, 13, 41)]
    ref = model.predict(seqs)
    monkeypatch.setattr(drnn._core, "RUN_SLICE_BYTES", 4000)
    got = model.predict(seqs)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)


def test_bidirectional_is_never_sliced(monkeypatch):
    monkeypatch.setattr(drnn._core, "RUN_SLICE_BYTES", 1000)
    for layer in (drnn.GRU(5, 8, bidirectional=True, seed=1), drnn.LSTM(5, 8, reverse=True)):
        model = drnn.DRNN([layer])
        assert model._slice_steps(2, 500) is None
        x = _input(model, 2, 50)
        np.testing.assert_array_equal(model.predict(x), model.predict(x, num_threads=1))


def test_long_sequence_scratch_is_bounded(monkeypatch):
    # The peak of what numpy allocates during predict(): with slicing it is
    # the output plus one slice's scratch; without, the scratch of the whole
    # sequence (here ~4 MB of input projections against a 0.4 MB output).
    model = drnn.DRNN([drnn.LSTM(8, 64, seed=3), drnn.Dense(64, 16, seed=4)])
    x = _input(drnn.DRNN([drnn.LSTM(5, 4)]), 1, 4000)[0]
    x = np.ascontiguousarray(np.repeat(x, 2, axis=1)[:, :8])

    def peak(model, x):
        fresh = drnn.DRNN(list(model.layers))        # no workspace kept from earlier calls
        tracemalloc.start()
        try:
            y = fresh.predict(x, num_threads=1)
            return tracemalloc.get_traced_memory()[1], y
        finally:
            tracemalloc.stop()

    whole, ref = peak(model, x)
    monkeypatch.setattr(drnn._core, "RUN_SLICE_BYTES", 256 << 10)
    sliced, got = peak(model, x)
    np.testing.assert_array_equal(got, ref)
    assert whole > 4_000_000
    assert sliced < 1_500_000
