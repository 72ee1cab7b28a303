"""drnn.from_torch: convert a live torch.nn module into a drnn model.

torch is imported here only, and only when the caller hands us a torch
module (so it is already installed and loaded).  The module tree is walked
in registration order -- the order of its state_dict -- and each supported
leaf becomes a drnn layer:

    nn.RNN / nn.LSTM / nn.GRU     -> RNN / LSTM / GRU (every option torch has)
    nn.Embedding                  -> Embedding
    nn.Linear                     -> Dense
    nn.ReLU / Tanh / Sigmoid / Softmax(dim=-1) after a Linear -> its activation
    nn.Dropout*, nn.Identity      -> nothing (inference)

Sequential, ModuleList and plain container modules are walked through.  What
a module's forward() does beyond chaining its children cannot be seen, so
drnn assumes the chain; return_sequences=False makes the recurrent layers
return only the last step (a head applied to output[:, -1] or h_n[-1] for a
unidirectional model).  drnn always takes batch-first input, whatever the
module's batch_first.
"""
from .errors import UnsupportedError

__all__ = ["from_torch"]


def _params(module):
    return {k: v.detach().cpu().float().numpy() for k, v in module.named_parameters()}


def from_torch(module, *, return_sequences=True):
    """Build a drnn.DRNN with the same weights as a torch.nn module."""
    import torch.nn as nn   # the caller passed a torch module: torch is here
    from .layers import Dense, Embedding, GRU, LSTM, RNN
    from .model import DRNN

    if not isinstance(module, nn.Module):
        raise UnsupportedError(f"from_torch: expected a torch.nn.Module, got {type(module).__name__}")
    layers = []
    activations = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Softmax: "softmax",
                   nn.LogSoftmax: "log_softmax"}

    def visit(m, path):
        name = path or type(m).__name__
        if isinstance(m, (nn.RNN, nn.LSTM, nn.GRU)):
            if m.dropout and m.training:
                pass   # dropout between layers is training-time only
            kw = dict(bidirectional=m.bidirectional, bias=m.bias,
                      return_sequences=return_sequences, weights=_params(m))
            if isinstance(m, nn.LSTM):
                cls = LSTM
                kw["proj_size"] = m.proj_size
            elif isinstance(m, nn.GRU):
                cls = GRU
            else:
                cls = RNN
                kw["nonlinearity"] = m.nonlinearity
            layers.append(cls(m.input_size, m.hidden_size, m.num_layers, **kw))
        elif isinstance(m, nn.Embedding):
            if m.max_norm is not None:
                raise UnsupportedError(f"from_torch: {name}: Embedding with max_norm renormalises "
                                       "its weights at lookup; not supported")
            layers.append(Embedding(m.num_embeddings, m.embedding_dim,
                                    weight=m.weight.detach().cpu().float().numpy()))
        elif isinstance(m, nn.Linear):
            p = _params(m)
            layers.append(Dense(m.in_features, m.out_features, weight=p["weight"],
                                bias=p.get("bias", False)))
        elif type(m) in activations:
            act = activations[type(m)]
            if act in ("softmax", "log_softmax") and m.dim not in (-1, None):
                raise UnsupportedError(f"from_torch: {name}: {type(m).__name__}(dim={m.dim}); drnn "
                                       "applies it over the last axis only (dim=-1)")
            last = layers[-1] if layers else None
            if not isinstance(last, Dense) or last.activation != "identity":
                raise UnsupportedError(f"from_torch: {name}: {type(m).__name__} must follow an "
                                       "nn.Linear (it becomes that Dense layer's activation)")
            layers[-1] = Dense(last.in_features, last.out_features, activation=act,
                               weights=last.params())
        elif isinstance(m, (nn.Dropout, nn.Dropout1d, nn.AlphaDropout, nn.Identity)):
            pass
        else:
            children = list(m.named_children())
            if not children:
                raise UnsupportedError(f"from_torch: {name}: {type(m).__name__} is not supported; "
                                       "expected RNN, LSTM, GRU, Embedding, Linear, an activation "
                                       "after a Linear, Dropout, or containers of them")
            if any(True for _ in m.named_parameters(recurse=False)):
                raise UnsupportedError(f"from_torch: {name}: {type(m).__name__} has parameters of "
                                       "its own beside its children; not supported")
            for child_name, child in children:
                visit(child, f"{path}.{child_name}" if path else child_name)

    visit(module, "")
    if not layers:
        raise UnsupportedError("from_torch: the module contains no supported layer")
    return DRNN(layers)
