"""Threads and batch composition never change the numbers.

Every recurrent sum in drnn runs one chain over k in ascending order, in the
fused step kernels and in the GEMM path alike, so a sequence's output is the
same bits whether it runs alone or in a batch (small batches take the fused
kernels, large ones the GEMM), and whatever the thread count (rows, hidden
units or directions split across threads).
"""
import numpy as np
import pytest

import drnn

CASES = [
    ("LSTM", dict()),
    ("LSTM", dict(proj_size=7, bidirectional=True)),
    ("GRU", dict()),
    ("GRU", dict(linear_before_reset=False, bidirectional=True)),
    ("RNN", dict(nonlinearity="relu")),
]


def _model(kind, kw, hidden=40, layers=2):
    cls = getattr(drnn, kind)
    return drnn.DRNN([cls(6, hidden, layers, seed=11, **kw), drnn.Dense(
        (2 if kw.get("bidirectional") else 1) * (kw.get("proj_size") or hidden), 3, seed=12)])


@pytest.mark.parametrize("kind,kw", CASES)
def test_batch_composition_is_bit_exact(kind, kw):
    m = _model(kind, kw)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 15, 6)).astype(np.float32)     # 24 rows: the GEMM path
    lengths = rng.integers(1, 16, size=24)
    batch = m.predict(x, lengths=lengths, num_threads=1)
    for i in (0, 5, 23):
        alone = m.predict(x[i:i + 1, :lengths[i]], num_threads=1)
        np.testing.assert_array_equal(batch[i:i + 1, :lengths[i]], alone)


@pytest.mark.parametrize("kind,kw", CASES)
@pytest.mark.parametrize("batch", [1, 3, 24])
def test_thread_count_is_bit_exact(kind, kw, batch):
    m = _model(kind, kw)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 12, 6)).astype(np.float32)
    lengths = rng.integers(1, 13, size=batch)
    y1, s1 = m.predict(x, lengths=lengths, return_state=True, num_threads=1)
    for n in (2, 3, 4):
        yn, sn = m.predict(x, lengths=lengths, return_state=True, num_threads=n)
        np.testing.assert_array_equal(yn, y1)
        for a, b in zip(np.atleast_1d(sn) if not isinstance(sn, tuple) else sn,
                        np.atleast_1d(s1) if not isinstance(s1, tuple) else s1):
            np.testing.assert_array_equal(a, b)


def test_units_split_is_bit_exact():
    # Recurrent weights over the split threshold at batch 1: hidden units are
    # split across threads (GRU without linear_before_reset: a barrier between
    # a step's two phases and after each step).
    m = drnn.DRNN([drnn.LSTM(8, 200, seed=3), drnn.GRU(200, 260, linear_before_reset=False, seed=4)])
    x = np.random.default_rng(2).standard_normal((1, 20, 8)).astype(np.float32)
    y1 = m.predict(x, num_threads=1)
    y2 = m.predict(x, num_threads=2)
    np.testing.assert_array_equal(y1, y2)


HANDOFF_CASES = [
    ("LSTM", 100, dict()),                                  # 4*100*100*4 B = 156 KiB
    ("LSTM", 100, dict(reverse=True, return_sequences=False)),
    ("GRU", 128, dict()),                                   # linear_before_reset: one phase
    ("RNN", 190, dict(nonlinearity="relu")),
    ("LSTM", 100, dict(num_layers=3)),
]


@pytest.mark.parametrize("kind,hidden,kw", HANDOFF_CASES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 97])
def test_units_split_handoff_is_bit_exact(kind, hidden, kw, batch, steps):
    # Over 128 KiB of recurrent weights with few rows: hidden units are split
    # across threads and each step's state is handed over through a ring of
    # three buffers (no barrier).  Every step count modulo 3 ends in a
    # different buffer; several threads must give the one-thread bits, final
    # states included, and an initial state is honoured.
    kw = dict(kw)
    layers = kw.pop("num_layers", 1)
    m = drnn.DRNN([getattr(drnn, kind)(5, hidden, layers, seed=7, **kw)])
    rng = np.random.default_rng(steps)
    x = rng.standard_normal((batch, steps, 5)).astype(np.float32)
    h0 = rng.standard_normal((layers, batch, hidden)).astype(np.float32)
    state = (h0, h0 * 0.5) if kind == "LSTM" else h0
    y1, s1 = m.predict(x, initial_state=state, return_state=True, num_threads=1)
    for n in (2, 3):
        yn, sn = m.predict(x, initial_state=state, return_state=True, num_threads=n)
        np.testing.assert_array_equal(yn, y1)
        for a, b in zip(sn if isinstance(sn, tuple) else [sn], s1 if isinstance(s1, tuple) else [s1]):
            np.testing.assert_array_equal(a, b)


def test_units_split_handoff_initial_state_any_bits():
    # The handoff marks unwritten state with one signalling-NaN pattern; an
    # initial state holding exactly those bits (or any NaN) must neither hang
    # nor be mistaken for a missing state.
    m = drnn.DRNN([drnn.LSTM(4, 100, seed=1)])
    x = np.random.default_rng(0).standard_normal((1, 6, 4)).astype(np.float32)
    h0 = np.zeros((1, 1, 100), np.float32)
    h0.view(np.uint32)[0, 0, :50] = 0x7fbadd1e
    h0[0, 0, 60] = np.nan
    # (NaN positions must agree; a NaN's sign and payload follow operand
    # order, which differs between the kernels' block groupings.)
    y1 = m.predict(x, initial_state=(h0, h0), num_threads=1)
    y2 = m.predict(x, initial_state=(h0, h0), num_threads=2)
    assert np.isnan(y1).all() and np.isnan(y2).all()
    x[0, 2, 1] = np.nan                       # NaN input mid-sequence, zero state
    y1 = m.predict(x, num_threads=1)
    y2 = m.predict(x, num_threads=2)
    assert not np.isnan(y1[0, :2]).any() and np.isnan(y1[0, 2:]).all()
    np.testing.assert_array_equal(y1, y2)


def test_num_threads_validated(monkeypatch):
    m = _model("GRU", {})
    x = np.zeros((1, 2, 6), np.float32)
    with pytest.raises(ValueError, match="num_threads"):
        m.predict(x, num_threads=0)
    monkeypatch.setenv("DRNN_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="DRNN_NUM_THREADS"):
        m.predict(x)
    monkeypatch.setenv("DRNN_NUM_THREADS", "1")
    np.testing.assert_array_equal(m.predict(x), m.predict(x, num_threads=2))


def test_cpu_info_reports_choice():
    info = drnn.cpu_info()
    assert info["isa"] in info["available"]
    assert info["num_threads"] >= 1 and info["cpus"] >= 1


@pytest.mark.parametrize("kind,kw", CASES[:1] + CASES[2:3] + [("GRU", dict(linear_before_reset=False, reverse=True))])
@pytest.mark.parametrize("batch", [1, 3])
def test_pipelined_projection_is_bit_exact(kind, kw, batch):
    # One direction, few rows, small weights, long sequences: one thread runs
    # the time loop while the others project the inputs ahead, chunk by
    # chunk; a chunk no helper has claimed yet the time loop projects itself
    # (three helpers on two cores race for chunks and get descheduled).
    m = _model(kind, kw, hidden=24)
    x = np.random.default_rng(3).standard_normal((batch, 301, 6)).astype(np.float32)
    y1, s1 = m.predict(x, return_state=True, num_threads=1)
    for n in (2, 4):
        y2, s2 = m.predict(x, return_state=True, num_threads=n)
        np.testing.assert_array_equal(y1, y2)
        for a, b in zip(s1 if isinstance(s1, tuple) else [s1],
                        s2 if isinstance(s2, tuple) else [s2]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threads", [2, 4])
def test_pipelined_time_loop_waits_for_its_chunks(threads):
    # A wide input makes each chunk's projection slower than its time steps,
    # so the time loop catches up with the helpers: it projects chunks no
    # helper has claimed and waits for those in progress.  The workspace is
    # left holding another sequence's projections, so a chunk read before it
    # is ready shows up in the output.
    m = drnn.DRNN([drnn.LSTM(600, 16, seed=5)])
    rng = np.random.default_rng(9)
    x, other = rng.standard_normal((2, 1, 1000, 600)).astype(np.float32)
    ref = m.predict(x, num_threads=1)
    for _ in range(3):
        m.predict(other, num_threads=threads)
        np.testing.assert_array_equal(m.predict(x, num_threads=threads), ref)
