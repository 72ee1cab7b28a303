"""Streams (model.stream()): step()/run() with carried state.

The contract: for any split of a sequence into steps and chunks, a stream's
outputs and final state are predict()'s on the whole sequence -- bit for bit,
since a stream calls the same kernels with T = 1 (or the chunk's length) and
their sums do not depend on T or the batch.  CI runs this file under every
ISA (DRNN_ISA).  Also: shared models across threads, one stream from two
threads, bad input, NaN recovery, return_sequences=False semantics.
"""
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import drnn
from drnn.errors import DrnnError, DtypeError, ShapeError, UnsupportedError
from drnn.stream import Stream, StreamBusyError


def _models():
    """name -> (model, features or None for tokens)."""
    return {
        "lstm": (drnn.DRNN([drnn.LSTM(5, 32, seed=1)]), 5),
        "gru2": (drnn.DRNN([drnn.GRU(6, 64, 2, seed=2)]), 6),
        "rnn-relu": (drnn.DRNN([drnn.RNN(4, 17, 2, nonlinearity="relu", seed=3)]), 4),
        "lstm-proj-peep": (drnn.DRNN([drnn.LSTM(7, 33, 2, proj_size=9, peepholes=True,
                                               clip=3.0, seed=4),
                                     drnn.Dense(9, 4, activation="tanh", seed=5)]), 7),
        "gru-keras": (drnn.DRNN([drnn.GRU(3, 21, linear_before_reset=False,
                                          activations=[("hard_sigmoid", 0.2, 0.5), "tanh"],
                                          seed=6)]), 3),
        "mixed": (drnn.DRNN([drnn.Embedding(50, 12, seed=7), drnn.LSTM(12, 40, seed=8),
                             drnn.GRU(40, 24, 2, seed=9), drnn.RNN(24, 10, seed=10),
                             drnn.Dense(10, 8, activation="relu", seed=11),
                             drnn.Dense(8, 5, activation="softmax", seed=12)]), None),
        "log-softmax-head": (drnn.DRNN([drnn.GRU(4, 6, seed=14),
                                        drnn.Dense(6, 5, activation="log_softmax", seed=15)]), 4),
        "dense-only": (drnn.DRNN([drnn.Dense(6, 3, activation="sigmoid", seed=13)]), 6),
    }


MODELS = _models()
SEQ_MODELS = sorted(MODELS)


def _inputs(features, B, T, seed=0, vocab=50):
    rng = np.random.default_rng(seed)
    if features is None:
        return rng.integers(0, vocab, size=(B, T))
    return rng.standard_normal((B, T, features)).astype(np.float32)


def _random_split(T, rng):
    """Cut [0, T) into pieces: ('step', t) or ('run', t0, t1)."""
    pieces, t = [], 0
    while t < T:
        if rng.random() < 0.4:
            pieces.append(("step", t))
            t += 1
        else:
            n = int(rng.integers(1, 12))
            pieces.append(("run", t, min(T, t + n)))
            t = min(T, t + n)
    return pieces


def _stream_all(s, x, pieces, unbatched):
    outs = []
    for p in pieces:
        if p[0] == "step":
            frame = x[0, p[1]] if unbatched else x[:, p[1]]
            y = s.step(frame)
            outs.append(y[None] if unbatched else y[:, None])
        else:
            chunk = x[0, p[1]:p[2]] if unbatched else x[:, p[1]:p[2]]
            outs.append(s.run(chunk) if unbatched else s.run(chunk))
    axis = 0 if unbatched else 1
    return np.concatenate(outs, axis=axis)


def _assert_state_equal(a, b):
    if isinstance(b, (list, tuple)):
        assert isinstance(a, (list, tuple)) and len(a) == len(b)
        for u, v in zip(a, b):
            _assert_state_equal(u, v)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", SEQ_MODELS)
@pytest.mark.parametrize("B", [1, 3])
def test_any_split_equals_predict_bit_exact(name, B):
    model, F = MODELS[name]
    T = 37
    x = _inputs(F, B, T, seed=hash(name) % 1000)
    ref, ref_state = model.predict(x, return_state=True) if model._recurrent else \
        (model.predict(x), None)
    for trial in range(3):
        rng = np.random.default_rng(trial)
        s = model.stream(batch_size=B)
        unbatched = B == 1 and trial % 2 == 0
        got = _stream_all(s, x, _random_split(T, rng), unbatched)
        np.testing.assert_array_equal(got, ref[0] if unbatched else ref)
        if ref_state is not None:
            _assert_state_equal(s.state, ref_state)


@pytest.mark.parametrize("name", ["lstm", "mixed", "lstm-proj-peep"])
def test_state_roundtrip_and_initial_state(name):
    model, F = MODELS[name]
    x = _inputs(F, 2, 20, seed=1)
    _, s0 = model.predict(x[:, :8], return_state=True)
    ref, ref_state = model.predict(x[:, 8:], initial_state=s0, return_state=True)
    s = model.stream(batch_size=2)
    s.state = s0
    np.testing.assert_array_equal(s.run(x[:, 8:]), ref)
    _assert_state_equal(s.state, ref_state)
    # reading returns copies: mutating them does not touch the stream
    st = s.state
    (st[0] if isinstance(st, tuple) else st[0][0] if isinstance(st, list) else st)[...] = 7.0
    _assert_state_equal(s.state, ref_state)
    s.state = None
    fresh = model.stream(batch_size=2)
    np.testing.assert_array_equal(s.run(x), fresh.run(x))


def test_unbatched_state_accepted_for_batch_one():
    model, F = MODELS["lstm"]
    x = _inputs(F, 1, 10)[0]
    _, (h, c) = model.predict(x[:4], return_state=True)        # unbatched: (L, H)
    s = model.stream()
    s.state = (h, c)
    np.testing.assert_array_equal(s.run(x[4:]), model.predict(x[4:], initial_state=(h, c)))
    assert s.state[0].shape == (1, 1, 32)                        # always batched when read


def test_return_sequences_false_semantics():
    model = drnn.DRNN([drnn.GRU(4, 16, seed=1), drnn.LSTM(16, 12, return_sequences=False, seed=2),
                       drnn.Dense(12, 3, activation="softmax", seed=3)])
    x = _inputs(4, 2, 15, seed=2)
    s = model.stream(batch_size=2)
    for t in range(9):                       # step: output as if the sequence ended here
        np.testing.assert_array_equal(s.step(x[:, t]), model.predict(x[:, :t + 1]))
    y = s.run(x[:, 9:])                      # run: one output, for the chunk's last step
    assert y.shape == (2, 3)
    np.testing.assert_array_equal(y, model.predict(x))
    s1 = model.stream()
    assert s1.run(x[0]).shape == (3,)
    with pytest.raises(ShapeError, match="empty chunk"):
        s1.run(x[0, :0])


def test_empty_chunk_of_sequence_model_is_empty():
    model, F = MODELS["lstm"]
    s = model.stream()
    before = s.state
    y = s.run(np.zeros((0, F), np.float32))
    assert y.shape == (0, 32)
    _assert_state_equal(s.state, before)


@pytest.mark.parametrize("layer", [drnn.LSTM(3, 5, bidirectional=True),
                                   drnn.GRU(3, 5, reverse=True)])
def test_bidirectional_and_reverse_are_refused(layer):
    model = drnn.DRNN([layer])
    with pytest.raises(UnsupportedError, match="whole sequence"):
        model.stream()


def test_out_argument():
    model, F = MODELS["lstm-proj-peep"]
    x = _inputs(F, 2, 5)
    ref = model.predict(x)
    s = model.stream(batch_size=2)
    out = np.empty((2, 4), np.float32)
    for t in range(5):
        r = s.step(x[:, t], out=out)
        assert r is out
        np.testing.assert_array_equal(out, ref[:, t])
    s1 = model.stream()
    o1 = np.empty(4, np.float32)
    assert s1.step(x[0, 0], out=o1) is o1
    for bad, err in [(np.empty(5, np.float32), ShapeError), (np.empty(4, np.float64), DtypeError),
                     (np.empty((1, 4), np.float32), ShapeError), ([0.0] * 4, DtypeError),
                     (np.empty(8, np.float32)[::2], ShapeError)]:
        with pytest.raises(err):
            s1.step(x[0, 1], out=bad)
    with pytest.raises(DtypeError, match=">f4"):
        s1.step(x[0, 1], out=np.empty(4, ">f4"))
    frame = np.zeros(8, np.float32)
    frame[:7] = x[0, 1]
    with pytest.raises(ShapeError, match="overlap"):
        s1.step(frame[:7], out=frame[4:])
    ro = np.empty(4, np.float32)
    ro.setflags(write=False)
    with pytest.raises(ShapeError, match="writeable"):
        s1.step(x[0, 1], out=ro)


def test_input_forms_and_dtypes():
    model, F = MODELS["lstm"]
    x = _inputs(F, 1, 3)[0]
    ref = model.predict(x)
    for form in (lambda a: a.astype(np.float64), lambda a: a.tolist(),
                 lambda a: a.astype(">f4"),
                 lambda a: np.asfortranarray(np.stack([a, a], 1))[:, 0]):
        s = model.stream()
        got = np.stack([s.step(form(x[t])) for t in range(3)])
        np.testing.assert_array_equal(got, ref)
    s = model.stream()
    np.testing.assert_array_equal(s.run(x.astype(np.float64)), ref)


def test_token_forms():
    model, _ = MODELS["mixed"]
    ids = _inputs(None, 2, 6, seed=3)
    ref = model.predict(ids)
    s = model.stream()
    got = [s.step(int(ids[0, 0])), s.step(np.int32(ids[0, 1])),
           s.step(np.array(ids[0, 2], ">i8"))]
    got += list(s.run(ids[0, 3:].astype(np.uint8)))
    np.testing.assert_array_equal(np.stack(got), ref[0])
    s2 = model.stream(batch_size=2)
    np.testing.assert_array_equal(s2.step(ids[:, 0]), ref[:, 0])
    np.testing.assert_array_equal(s2.run(ids[:, 1:]), ref[:, 1:])


def test_bad_input_raises_clear_errors():
    model, F = MODELS["lstm"]
    s = model.stream()
    with pytest.raises(ShapeError, match=r"\(5,\)"):
        s.step(np.zeros(4, np.float32))
    with pytest.raises(ShapeError):
        s.step(np.zeros((2, 5), np.float32))            # batch_size is 1
    with pytest.raises(ShapeError):
        s.step(np.zeros((1, 1, 5), np.float32))
    with pytest.raises(DtypeError):
        s.step(np.array(["a"] * 5))
    with pytest.raises(DtypeError):
        s.step(np.zeros(5, bool))
    with pytest.raises(ShapeError, match="features"):
        s.run(np.zeros((3, 4), np.float32))
    with pytest.raises(ShapeError):
        s.run(np.zeros(5, np.float32))
    with pytest.raises(ShapeError, match="h_0"):
        s.state = (np.zeros((2, 1, 32)), np.zeros((1, 1, 32)))
    with pytest.raises(ShapeError):
        s.state = np.zeros((1, 1, 32))                    # an LSTM needs (h, c)
    with pytest.raises(DtypeError):
        s.state = (np.zeros((1, 1, 32), complex), np.zeros((1, 1, 32)))
    s3 = model.stream(batch_size=3)
    with pytest.raises(ShapeError):
        s3.step(np.zeros(5, np.float32))                  # unbatched needs batch_size 1
    with pytest.raises(ShapeError):
        s3.state = (np.zeros((1, 32)), np.zeros((1, 32)))
    with pytest.raises(ShapeError):
        model.stream(batch_size=0)
    tok, _ = MODELS["mixed"]
    st = tok.stream()
    with pytest.raises(ShapeError, match="token id 50"):
        st.step(50)
    with pytest.raises(ShapeError, match="token id -1"):
        st.run(np.array([1, 2, -1]))
    with pytest.raises(DtypeError, match="token"):
        st.step(np.array(1.5))
    with pytest.raises(ShapeError, match="token id"):
        st.step(2 ** 70)
    with pytest.raises(DtypeError):
        st.step(True)
    # every error is a DrnnError, and none of them moved the state
    assert issubclass(StreamBusyError, DrnnError)
    np.testing.assert_array_equal(st.run(np.array([1, 2, 3])), tok.predict(np.array([1, 2, 3])))
    _assert_state_equal(s.state, (np.zeros((1, 1, 32)), np.zeros((1, 1, 32))))


def test_nan_frame_gives_nan_then_reset_recovers():
    model, F = MODELS["lstm-proj-peep"]
    x = _inputs(F, 1, 6)[0]
    s = model.stream()
    s.step(x[0])
    bad = x[1].copy()
    bad[2] = np.nan
    assert np.isnan(s.step(bad)).all()
    assert np.isnan(s.step(x[2])).all()                    # the state carries the NaN
    s.reset()
    np.testing.assert_array_equal(s.run(x), model.predict(x))


def test_model_shared_by_streams_on_a_thread_pool():
    model, _ = MODELS["mixed"]
    n = 12
    seqs = [_inputs(None, 1, 60, seed=100 + i)[0] for i in range(n)]
    alone = [model.stream().run(q) for q in seqs]

    def work(i):
        s = model.stream()
        out = []
        for t in range(0, 60, 5):                          # steps and chunks interleaved
            out.append(s.step(int(seqs[i][t]))[None])
            out.append(s.run(seqs[i][t + 1:t + 5]))
        return np.concatenate(out)

    with ThreadPoolExecutor(max_workers=4) as ex:
        for rep in range(3):
            for i, got in enumerate(ex.map(work, range(n))):
                np.testing.assert_array_equal(got, alone[i])


def test_one_stream_from_two_threads_raises_never_corrupts():
    model = drnn.DRNN([drnn.LSTM(16, 256, 2, seed=1)])
    x = _inputs(16, 1, 3000, seed=5)[0]
    ref, ref_state = model.predict(x[None], return_state=True)
    ref = ref[0]
    s = model.stream()
    started, result = threading.Event(), {}

    def long_run():
        started.set()
        result["y"] = s.run(x, num_threads=1)

    for attempt in range(5):
        s.reset()
        th = threading.Thread(target=long_run)
        th.start()
        started.wait()
        time.sleep(0.003)
        errors = []
        for call in (lambda: s.step(x[0]), lambda: s.run(x[:3]), s.reset,
                     lambda: s.state, lambda: setattr(s, "state", None)):
            try:
                call()
            except StreamBusyError as e:
                errors.append(e)
        was_running = th.is_alive()
        th.join()
        if was_running and len(errors) == 5:
            break
    else:
        pytest.skip("could not catch the long run() in flight (machine too loaded)")
    assert "another thread" in str(errors[0])
    np.testing.assert_array_equal(result["y"], ref)
    _assert_state_equal(s.state, ref_state)


def test_stream_is_not_picklable_but_model_is():
    model, F = MODELS["lstm"]
    s = model.stream()
    with pytest.raises(TypeError, match="pickle the model"):
        pickle.dumps(s)
    again = pickle.loads(pickle.dumps(model))
    x = _inputs(F, 1, 4)[0]
    np.testing.assert_array_equal(again.stream().run(x), s.run(x))
    assert isinstance(s, Stream) and "LSTM" in repr(s)


@pytest.mark.parametrize("layers,B", [
    # recurrent weights of 128 KiB and more: a step is split across threads by units
    ([drnn.LSTM(6, 128, seed=21), drnn.Dense(128, 3, seed=22)], 1),
    ([drnn.LSTM(6, 96, 3, seed=28)], 3),                               # 144 KiB, a stack
    ([drnn.GRU(6, 112, 2, seed=27)], 1),                               # 147 KiB
    ([drnn.Embedding(30, 16, seed=23), drnn.GRU(16, 160, 2, seed=24)], 2),
    ([drnn.GRU(6, 160, seed=25, linear_before_reset=False)], 1),        # two-phase GRU
    ([drnn.LSTM(6, 128, proj_size=40, peepholes=True, seed=26)], 1),   # projection
    # smaller: stays on one thread
    ([drnn.LSTM(6, 32, 2, seed=29)], 1),
    ([drnn.GRU(6, 64, 2, seed=30)], 1),                                # 48 KiB
])
def test_step_threads_give_the_same_bits(layers, B):
    model = drnn.DRNN(layers)
    rng = np.random.default_rng(5)
    T = 12
    x = rng.integers(0, 30, (B, T)) if model.takes_tokens else \
        rng.standard_normal((B, T, 6)).astype(np.float32)
    want = model.predict(x, num_threads=1)
    for nt in (2, None):
        s = model.stream(batch_size=B, num_threads=nt)
        assert s.step_threads >= 1
        got = np.stack([s.step(x[:, t]) for t in range(T)], axis=1)
        np.testing.assert_array_equal(got, want)
        # and run() / step() interleaved keep carrying the same state
        s.reset()
        first = s.run(x[:, :5])
        rest = np.stack([s.step(x[:, t]) for t in range(5, T)], axis=1)
        np.testing.assert_array_equal(np.concatenate([first, rest], axis=1), want)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_stream_num_threads_validated(bad):
    model = drnn.DRNN([drnn.GRU(3, 4, seed=0)])
    with pytest.raises(ValueError, match="num_threads"):
        model.stream(num_threads=bad)


def test_run_out_argument():
    model, F = MODELS["lstm-proj-peep"]
    x = _inputs(F, 2, 9, seed=4)
    ref = model.predict(x)
    s = model.stream(batch_size=2)
    out = np.empty((2, 9, 4), np.float32)
    assert s.run(x, out=out) is out
    np.testing.assert_array_equal(out, ref)
    s1 = model.stream()
    o1 = np.empty((4, 4), np.float32)
    assert s1.run(x[0, :4], out=o1) is o1
    np.testing.assert_array_equal(o1, ref[0, :4])
    for bad, err in [(np.empty((6, 4), np.float32), ShapeError),
                     (np.empty((5, 4), np.float64), DtypeError),
                     (np.empty((1, 5, 4), np.float32), ShapeError), ([[0.0] * 4] * 5, DtypeError),
                     (np.empty((5, 8), np.float32)[:, ::2], ShapeError)]:
        with pytest.raises(err, match="run out="):
            s1.run(x[0, 4:], out=bad)
    ro = np.empty((5, 4), np.float32)
    ro.setflags(write=False)
    with pytest.raises(ShapeError, match="writeable"):
        s1.run(x[0, 4:], out=ro)
    buf = np.zeros(60, np.float32)
    buf[:35] = x[0, 4:].ravel()
    with pytest.raises(ShapeError, match="overlap"):
        s1.run(buf[:35].reshape(5, 7), out=buf[20:40].reshape(5, 4))
    # The refusals left the state alone: the rest of the sequence still matches.
    np.testing.assert_array_equal(s1.run(x[0, 4:]), ref[0, 4:])
    last = drnn.DRNN([drnn.GRU(3, 8, return_sequences=False, seed=1)])
    o2 = np.empty(8, np.float32)
    assert last.stream().run(x[0, :, :3], out=o2) is o2
    np.testing.assert_array_equal(o2, last.predict(x[0, :, :3]))


@pytest.mark.parametrize("name", SEQ_MODELS + ["last-step"])
@pytest.mark.parametrize("B", [1, 3])
def test_long_run_is_sliced_bit_exact(name, B, monkeypatch):
    # run() cuts a chunk into slices of time to bound its scratch; here the
    # slices are a few steps long.  Same bits and state as predict().
    if name == "last-step":
        model = drnn.DRNN([drnn.GRU(4, 16, seed=1),
                           drnn.LSTM(16, 12, return_sequences=False, seed=2),
                           drnn.Dense(12, 3, activation="softmax", seed=3)])
        F = 4
    else:
        model, F = MODELS[name]
    x = _inputs(F, B, 50, seed=7)
    ref, ref_state = model.predict(x, return_state=True) if model._recurrent else \
        (model.predict(x), None)
    monkeypatch.setattr(drnn._core, "RUN_SLICE_BYTES", 20000)
    s = model.stream(batch_size=B)
    head = s.run(x[:, :3])                          # one slice
    got = s.run(x[:, 3:])                           # several
    if model._returns_sequences:
        got = np.concatenate([head, got], axis=1)
    np.testing.assert_array_equal(got, ref)
    if ref_state is not None:
        _assert_state_equal(s.state, ref_state)
    if B == 1:
        s.reset()
        out = np.empty(ref[0].shape, np.float32)
        assert s.run(x[0], out=out) is out
        np.testing.assert_array_equal(out, ref[0])


def test_long_run_scratch_is_bounded(monkeypatch):
    model = drnn.DRNN([drnn.LSTM(16, 64, 2, seed=3), drnn.Dense(64, 2, seed=4)])
    x = _inputs(16, 1, 6000, seed=1)[0]
    s = model.stream()
    s.run(x)
    whole = s.ws_bytes + 4 * s.buf_floats
    monkeypatch.setattr(drnn._core, "RUN_SLICE_BYTES", 1 << 20)
    s2 = model.stream()
    np.testing.assert_array_equal(s2.run(x), model.predict(x))
    sliced = s2.ws_bytes + 4 * s2.buf_floats
    assert whole > 6 << 20           # the projections of 6000 steps, unsliced
    assert sliced <= 1 << 20         # one slice's
