"""Check the numpy reference itself against PyTorch, in float64.

The reference (tests/reference.py) is the yardstick for every other test,
so it must agree with the framework whose semantics it copies: outputs,
final states, packed variable lengths, both directions, stacks, proj_size.
"""
import itertools

import numpy as np
import pytest

import helpers
import reference

torch = helpers.import_torch()

# torch's own notice that oneDNN has no LSTM projections; not ours to report
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")

KINDS = ["RNN_tanh", "RNN_relu", "LSTM", "LSTM_proj", "GRU"]

# (batch, T, input_size, hidden, lengths or None, with initial state)
SCENARIOS = [
    (1, 6, 5, 17, None, False),
    (4, 7, 3, 8, [7, 1, 4, 2], True),
    (3, 5, 5, 17, [5, 5, 5], True),
    (3, 6, 1, 3, [4, 4, 4], False),
    (5, 9, 7, 12, [1, 9, 3, 9, 5], True),
    (2, 1, 4, 6, [1, 1], True),
]


def _cases():
    cases = []
    for i, (kind, bidir, layers, bias) in enumerate(
            itertools.product(KINDS, [False, True], [1, 2, 3], [True, False])):
        cases.append((kind, bidir, layers, bias, SCENARIOS[i % len(SCENARIOS)]))
    return cases


def _split(kind):
    if kind.startswith("RNN"):
        return "RNN", kind.split("_")[1], 0
    if kind == "LSTM_proj":
        return "LSTM", "tanh", 1
    return kind, "tanh", 0


def _ids(case):
    kind, bidir, layers, bias, sc = case
    return f"{kind}-{'bi' if bidir else 'uni'}-L{layers}-{'bias' if bias else 'nobias'}-B{sc[0]}T{sc[1]}"


@pytest.mark.parametrize("case", _cases(), ids=_ids)
def test_reference_matches_torch_float64(case):
    kind, bidir, layers, bias, (B, T, F, H, lengths, with_init) = case
    cell, nonlin, proj = _split(kind)
    if proj:
        H = max(H, 3)
        proj = max(1, H // 3)
    m = helpers.make_torch_rnn(cell, F, H, layers, bidirectional=bidir, bias=bias,
                               proj_size=proj, nonlinearity=nonlin,
                               dtype=torch.float64, seed=len(_ids(case)))
    D = 2 if bidir else 1
    Ho = proj or H
    rng = np.random.default_rng(7)
    x = rng.standard_normal((B, T, F))
    h0 = c0 = None
    if with_init:
        h0 = rng.uniform(-1, 1, (layers * D, B, Ho))
        c0 = rng.uniform(-1, 1, (layers * D, B, H))
    y_t, hn_t, cn_t = helpers.run_torch_rnn(m, x, lengths, h0, c0 if cell == "LSTM" else None)
    w = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    cls = getattr(reference, cell)
    ref = cls(F, H, layers, bidirectional=bidir, bias=bias, proj_size=proj,
              nonlinearity=nonlin, weights=w)
    y, hn, cn = ref.forward(x, lengths=lengths, h0=h0, c0=c0)
    helpers.assert_close(y, y_t, 1e-10, "y")
    helpers.assert_close(hn, hn_t, 1e-10, "h_n")
    if cell == "LSTM":
        helpers.assert_close(cn, cn_t, 1e-10, "c_n")


def test_reference_dense_embedding_match_torch():
    torch.manual_seed(3)
    emb = torch.nn.Embedding(11, 6).double()
    lin = torch.nn.Linear(6, 4).double()
    ids = np.array([[0, 3, 10], [5, 5, 1]])
    with torch.no_grad():
        e_t = emb(torch.as_tensor(ids)).numpy()
        y_t = lin(torch.as_tensor(e_t)).numpy()
        s_t = torch.softmax(lin(torch.as_tensor(e_t)), -1).numpy()
    e = reference.Embedding(11, 6, weight=emb.weight.detach().numpy()).forward(ids)
    d = reference.Dense(6, 4, weight=lin.weight.detach().numpy(), bias=lin.bias.detach().numpy())
    ds = reference.Dense(6, 4, activation="softmax", weight=lin.weight.detach().numpy(),
                         bias=lin.bias.detach().numpy())
    helpers.assert_close(e, e_t, 1e-12)
    helpers.assert_close(d.forward(e), y_t, 1e-12)
    helpers.assert_close(ds.forward(e), s_t, 1e-12)
