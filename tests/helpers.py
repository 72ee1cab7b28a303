"""Shared helpers for drnn's tests (no drnn import here)."""
import os

import numpy as np
import pytest

TOL = 1e-5


def import_torch():
    """Import torch; skip the calling module if it is missing, except under
    CI=true, where a missing torch is an error (the module fails)."""
    try:
        import torch
    except ImportError as exc:
        if os.environ.get("CI", "").strip().lower() == "true":
            raise ImportError(
                "torch is required when CI=true but could not be imported: "
                f"{exc}") from exc
        pytest.skip(f"torch is not installed ({exc})", allow_module_level=True)
    return torch


def max_err(actual, expected):
    """Max of |a - e| / max(1, |e|) (absolute error for |e| <= 1)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - e) / np.maximum(1.0, np.abs(e))))


def assert_close(actual, expected, tol=TOL, what="output"):
    a = np.asarray(actual)
    e = np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}"
    a64 = a.astype(np.float64)
    e64 = e.astype(np.float64)
    nan_a, nan_e = np.isnan(a64), np.isnan(e64)
    assert np.array_equal(nan_a, nan_e), (
        f"{what}: NaN pattern differs ({int(nan_a.sum())} NaN vs {int(nan_e.sum())} expected)")
    ok = ~nan_e
    if not ok.any():
        return
    err = np.abs(a64[ok] - e64[ok]) / np.maximum(1.0, np.abs(e64[ok]))
    worst = float(err.max())
    if not worst <= tol:
        idx = np.argwhere(ok)[int(np.argmax(err))]
        raise AssertionError(
            f"{what}: max error {worst:.3g} > {tol:g} at index {tuple(idx)}: "
            f"got {a64[tuple(idx)]!r}, expected {e64[tuple(idx)]!r}")


def assert_state_close(actual, expected, tol=TOL, what="state"):
    """Compare states: arrays, tuples (h, c) and lists of those."""
    if isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)), (
            f"{what}: expected a {type(expected).__name__} of {len(expected)}, "
            f"got {type(actual).__name__}")
        assert len(actual) == len(expected), (
            f"{what}: {len(actual)} entries, expected {len(expected)}")
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_state_close(a, e, tol, f"{what}[{i}]")
    else:
        assert_close(actual, expected, tol, what)


def zero_past_lengths(y, lengths):
    y = np.array(y)
    for b, n in enumerate(lengths):
        y[b, int(n):] = 0
    return y


# --------------------------------------------------------------------------
# torch helpers (torch is imported lazily, by the caller's import_torch())
# --------------------------------------------------------------------------

def torch_state_dict(module, prefix=""):
    """A module's parameters as float32 numpy arrays, prefix stripped."""
    out = {}
    for k, v in module.state_dict().items():
        if k.startswith(prefix):
            out[k[len(prefix):]] = v.detach().cpu().to(dtype=v.dtype).numpy().astype(np.float32)
    return out


def run_torch_rnn(module, x, lengths=None, h0=None, c0=None):
    """Run a torch RNN/LSTM/GRU on batch-first numpy x.

    lengths -> pack_padded_sequence (enforce_sorted=False); the output is
    padded back with zeros to x's T.  Returns numpy y, h_n, c_n (c_n None
    unless LSTM).  Uses the module's dtype and batch_first setting.
    """
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    dtype = next(module.parameters()).dtype
    xt = torch.as_tensor(np.asarray(x), dtype=dtype)
    B, T = xt.shape[0], xt.shape[1]
    if not module.batch_first:
        xt = xt.transpose(0, 1)
    state = None
    if h0 is not None:
        h0t = torch.as_tensor(np.asarray(h0), dtype=dtype)
        if isinstance(module, torch.nn.LSTM):
            state = (h0t, torch.as_tensor(np.asarray(c0), dtype=dtype))
        else:
            state = h0t
    with torch.no_grad():
        if lengths is not None:
            packed = pack_padded_sequence(
                xt, torch.as_tensor(np.asarray(lengths), dtype=torch.int64),
                batch_first=module.batch_first, enforce_sorted=False)
            out, st = module(packed, state)
            out, _ = pad_packed_sequence(out, batch_first=module.batch_first,
                                         total_length=T)
        else:
            out, st = module(xt, state)
    if not module.batch_first:
        out = out.transpose(0, 1)
    if isinstance(module, torch.nn.LSTM):
        h_n, c_n = st
        return out.numpy(), h_n.numpy(), c_n.numpy()
    return out.numpy(), st.numpy(), None


def make_torch_rnn(kind, input_size, hidden_size, num_layers=1, *,
                   bidirectional=False, bias=True, proj_size=0,
                   nonlinearity="tanh", batch_first=True, dtype=None, seed=0,
                   dropout=0.0):
    import torch
    torch.manual_seed(seed)
    kw = dict(num_layers=num_layers, bias=bias, batch_first=batch_first,
              bidirectional=bidirectional, dropout=dropout)
    if kind == "RNN":
        m = torch.nn.RNN(input_size, hidden_size, nonlinearity=nonlinearity, **kw)
    elif kind == "LSTM":
        m = torch.nn.LSTM(input_size, hidden_size, proj_size=proj_size, **kw)
    else:
        m = torch.nn.GRU(input_size, hidden_size, **kw)
    if dtype is not None:
        m = m.to(dtype)
    return m.eval()
