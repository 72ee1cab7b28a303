"""drnn against live PyTorch: nn.RNN / LSTM / GRU, packed variable lengths,
initial and final states, and drnn.from_torch on containers and custom
modules with Embedding and Linear.

torch missing: the module is skipped, except with CI=true, where it fails.
"""
import itertools

import numpy as np
import pytest

import drnn
import helpers
from helpers import assert_close, assert_state_close

torch = helpers.import_torch()

# torch's own notice that oneDNN has no LSTM projections; not ours to report
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")
nn = torch.nn

KINDS = ["RNN_tanh", "RNN_relu", "LSTM", "LSTM_proj", "GRU"]

# batch, T, input, hidden, lengths, initial state
SCENARIOS = [
    (1, 7, 5, 17, None, False),
    (4, 9, 5, 17, [9, 1, 5, 3], True),
    (3, 6, 3, 8, [6, 6, 6], True),
    (3, 6, 1, 4, [4, 4, 4], False),
    (5, 8, 7, 12, [1, 8, 2, 8, 6], True),
    (2, 1, 4, 9, [1, 1], True),
    (1, 5, 6, 10, [3], True),
]


def _split(kind):
    if kind.startswith("RNN"):
        return "RNN", kind.split("_")[1], 0
    if kind == "LSTM_proj":
        return "LSTM", "tanh", 1
    return kind, "tanh", 0


def _grid():
    out = []
    for i, (kind, bidir, L, bias) in enumerate(
            itertools.product(KINDS, [False, True], [1, 2, 3], [True, False])):
        sc = SCENARIOS[i % len(SCENARIOS)]
        out.append(pytest.param(kind, bidir, L, bias, sc,
                                id=f"{kind}-{'bi' if bidir else 'uni'}-L{L}-"
                                   f"{'bias' if bias else 'nobias'}-s{i % len(SCENARIOS)}"))
    return out


def _torch_case(kind, bidir, L, bias, sc, seed):
    B, T, F, H, lengths, with_init = sc
    cell, nonlin, proj = _split(kind)
    if proj:
        proj = max(1, H // 3)
    m = helpers.make_torch_rnn(cell, F, H, L, bidirectional=bidir, bias=bias,
                               proj_size=proj, nonlinearity=nonlin, seed=seed)
    D = 2 if bidir else 1
    Ho = proj or H
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    h0 = c0 = None
    if with_init:
        h0 = rng.uniform(-1, 1, (L * D, B, Ho)).astype(np.float32)
        c0 = rng.uniform(-1, 1, (L * D, B, H)).astype(np.float32)
    return m, cell, nonlin, proj, x, h0, c0


def _drnn_state(cell, h0, c0):
    if h0 is None:
        return None
    return (h0, c0) if cell == "LSTM" else h0


@pytest.mark.parametrize("kind,bidir,L,bias,sc", _grid())
def test_layer_from_weights_matches_torch(kind, bidir, L, bias, sc):
    m, cell, nonlin, proj, x, h0, c0 = _torch_case(kind, bidir, L, bias, sc, seed=L * 10 + sc[0])
    lengths = sc[4]
    y_t, hn_t, cn_t = helpers.run_torch_rnn(m, x, lengths, h0, c0 if cell == "LSTM" else None)
    w = helpers.torch_state_dict(m)
    kw = dict(bidirectional=bidir, bias=bias, weights=w)
    if cell == "RNN":
        layer = drnn.RNN(x.shape[2], m.hidden_size, L, nonlinearity=nonlin, **kw)
    elif cell == "LSTM":
        layer = drnn.LSTM(x.shape[2], m.hidden_size, L, proj_size=proj, **kw)
    else:
        layer = drnn.GRU(x.shape[2], m.hidden_size, L, **kw)
    y, st = drnn.DRNN([layer]).predict(
        x, lengths=None if lengths is None else np.asarray(lengths),
        initial_state=_drnn_state(cell, h0, c0), return_state=True)
    assert_close(y, y_t, what="y")
    assert_state_close(st, (hn_t, cn_t) if cell == "LSTM" else hn_t)


@pytest.mark.parametrize("kind,bidir,L,bias,sc", _grid()[::3])
def test_from_torch_module_matches_torch(kind, bidir, L, bias, sc):
    m, cell, nonlin, proj, x, h0, c0 = _torch_case(kind, bidir, L, bias, sc, seed=L * 7 + sc[0])
    lengths = sc[4]
    y_t, hn_t, cn_t = helpers.run_torch_rnn(m, x, lengths, h0, c0 if cell == "LSTM" else None)
    model = drnn.from_torch(m)
    y, st = model.predict(x, lengths=lengths, initial_state=_drnn_state(cell, h0, c0),
                          return_state=True)
    assert_close(y, y_t, what="y")
    assert_state_close(st, (hn_t, cn_t) if cell == "LSTM" else hn_t)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_from_torch_batch_first_false(cell):
    """drnn's predict is batch-first whatever the torch module's batch_first."""
    m = helpers.make_torch_rnn(cell, 5, 11, 2, bidirectional=True, batch_first=False, seed=3)
    x = np.random.default_rng(3).standard_normal((3, 6, 5)).astype(np.float32)
    lengths = [6, 2, 4]
    y_t, hn_t, cn_t = helpers.run_torch_rnn(m, x, lengths)   # transposes for torch
    y, st = drnn.from_torch(m).predict(x, lengths=lengths, return_state=True)
    assert_close(y, y_t)
    assert_state_close(st, (hn_t, cn_t) if cell == "LSTM" else hn_t)


def test_from_torch_ignores_dropout():
    m = helpers.make_torch_rnn("LSTM", 4, 9, 3, dropout=0.5, seed=4)
    x = np.random.default_rng(4).standard_normal((2, 5, 4)).astype(np.float32)
    y_t, _, _ = helpers.run_torch_rnn(m, x)
    assert_close(drnn.from_torch(m).predict(x), y_t)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_unbatched_matches_torch(cell):
    m = helpers.make_torch_rnn(cell, 3, 6, 2, bidirectional=True, seed=5)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 3)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (4, 6)).astype(np.float32)
    c0 = rng.uniform(-1, 1, (4, 6)).astype(np.float32)
    with torch.no_grad():
        if cell == "LSTM":
            out, (hn, cn) = m(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
            st_t = (hn.numpy(), cn.numpy())
            s0 = (h0, c0)
        else:
            out, hn = m(torch.from_numpy(x), torch.from_numpy(h0))
            st_t = hn.numpy()
            s0 = h0
    y, st = drnn.from_torch(m).predict(x, initial_state=s0, return_state=True)
    assert_close(y, out.numpy())
    assert_state_close(st, st_t)


def test_list_input_matches_torch_per_sequence():
    m = helpers.make_torch_rnn("GRU", 4, 8, 2, bidirectional=True, seed=6)
    rng = np.random.default_rng(6)
    seqs = [rng.standard_normal((n, 4)).astype(np.float32) for n in (3, 1, 8, 5)]
    ys = drnn.from_torch(m).predict(seqs)
    assert len(ys) == len(seqs)
    for s, y in zip(seqs, ys):
        with torch.no_grad():
            out, _ = m(torch.from_numpy(s))
        assert_close(y, out.numpy())


# ---------------------------------------------------------------------------
# from_torch on containers / custom modules
# ---------------------------------------------------------------------------

class Tagger(nn.Module):
    """Embedding -> bi-LSTM -> GRU -> Linear, children in registration order."""

    def __init__(self, V=31, E=8, H=12, H2=6, O=5, batch_first=True):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H, num_layers=2, bidirectional=True, batch_first=batch_first)
        self.gru = nn.GRU(2 * H, H2, batch_first=batch_first)
        self.fc = nn.Linear(H2, O)

    def forward(self, ids):  # batch-first ids
        e = self.emb(ids)
        if not self.lstm.batch_first:
            e = e.transpose(0, 1)
        h, _ = self.lstm(e)
        h, _ = self.gru(h)
        if not self.gru.batch_first:
            h = h.transpose(0, 1)
        return self.fc(h)


class LogProbs(nn.Module):
    """GRU -> Linear -> LogSoftmax: a classifier's usual last step."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(5, 7, batch_first=True)
        self.fc = nn.Linear(7, 4)
        self.logp = nn.LogSoftmax(dim=-1)

    def forward(self, x):
        return self.logp(self.fc(self.gru(x)[0]))


def test_from_torch_log_softmax_head():
    torch.manual_seed(3)
    m = LogProbs().eval()
    x = np.random.default_rng(3).standard_normal((2, 6, 5)).astype(np.float32) * 4
    with torch.no_grad():
        y_t = m(torch.from_numpy(x)).numpy()
    model = drnn.from_torch(m)
    assert model.layers[-1].activation == "log_softmax"
    assert_close(model.predict(x), y_t)
    m.logp.dim = 1
    with pytest.raises(drnn.UnsupportedError, match="LogSoftmax"):
        drnn.from_torch(m)


@pytest.mark.parametrize("batch_first", [True, False])
def test_from_torch_custom_module(batch_first):
    torch.manual_seed(7)
    m = Tagger(batch_first=batch_first).eval()
    ids = np.random.default_rng(7).integers(0, 31, (3, 9))
    with torch.no_grad():
        y_t = m(torch.from_numpy(ids)).numpy()
    model = drnn.from_torch(m)
    assert_close(model.predict(ids), y_t)
    # one sequence, 1-D ids
    assert_close(model.predict(ids[1]), y_t[1], what="1-D ids")


def test_from_torch_custom_module_with_lengths():
    torch.manual_seed(8)
    m = Tagger().eval()
    rng = np.random.default_rng(8)
    lengths = [9, 1, 4, 6]
    ids = rng.integers(0, 31, (4, 9))
    model = drnn.from_torch(m)
    y = model.predict(ids, lengths=lengths)
    for b, n in enumerate(lengths):
        with torch.no_grad():
            y_t = m(torch.from_numpy(ids[b:b + 1, :n])).numpy()[0]
        assert_close(y[b, :n], y_t, what=f"sequence {b}")
        assert np.all(y[b, n:] == 0), f"sequence {b}: output past length {n} is not 0"


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_from_torch_sequential_embedding_rnn_linear(cell):
    torch.manual_seed(9)
    rnn = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}[cell](7, 10, batch_first=True)
    seq = nn.Sequential(nn.Embedding(20, 7), rnn, nn.Linear(10, 3)).eval()
    ids = np.random.default_rng(9).integers(0, 20, (2, 6))
    with torch.no_grad():
        e = seq[0](torch.from_numpy(ids))
        h, _ = seq[1](e)
        y_t = seq[2](h).numpy()
    assert_close(drnn.from_torch(seq).predict(ids), y_t)


def test_from_torch_sequential_float_input_two_rnns_linear_nobias():
    torch.manual_seed(10)
    seq = nn.Sequential(nn.GRU(5, 9, batch_first=True, bidirectional=True),
                        nn.LSTM(18, 6, proj_size=4, batch_first=True),
                        nn.Linear(4, 2, bias=False)).eval()
    x = np.random.default_rng(10).standard_normal((3, 7, 5)).astype(np.float32)
    with torch.no_grad():
        h, _ = seq[0](torch.from_numpy(x))
        h, _ = seq[1](h)
        y_t = seq[2](h).numpy()
    assert_close(drnn.from_torch(seq).predict(x), y_t)


def test_from_torch_single_linear_and_embedding():
    torch.manual_seed(11)
    lin = nn.Linear(6, 4).eval()
    x = np.random.default_rng(11).standard_normal((2, 3, 6)).astype(np.float32)
    with torch.no_grad():
        y_t = lin(torch.from_numpy(x)).numpy()
    assert_close(drnn.from_torch(lin).predict(x), y_t)
    emb = nn.Embedding(9, 4).eval()
    ids = np.array([[0, 8, 3]])
    with torch.no_grad():
        e_t = emb(torch.from_numpy(ids)).numpy()
    assert_close(drnn.from_torch(emb).predict(ids), e_t)


def test_from_torch_state_list_for_several_rnns():
    torch.manual_seed(12)
    seq = nn.Sequential(nn.LSTM(4, 5, 2, batch_first=True), nn.GRU(5, 3, batch_first=True)).eval()
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 6, 4)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (2, 2, 5)).astype(np.float32)
    c0 = rng.uniform(-1, 1, (2, 2, 5)).astype(np.float32)
    g0 = rng.uniform(-1, 1, (1, 2, 3)).astype(np.float32)
    with torch.no_grad():
        h, (hn, cn) = seq[0](torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
        y_t, gn = seq[1](h, torch.from_numpy(g0))
    y, st = drnn.from_torch(seq).predict(x, initial_state=[(h0, c0), g0], return_state=True)
    assert_close(y, y_t.numpy())
    assert_state_close(st, [(hn.numpy(), cn.numpy()), gn.numpy()])
