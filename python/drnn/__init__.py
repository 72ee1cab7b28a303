"""drnn -- fast CPU inference for pretrained recurrent networks.

    import drnn
    model = drnn.DRNN([drnn.Embedding(...), drnn.LSTM(...), drnn.Dense(...)])
    y = model.predict(x)
    model.save("model.safetensors"); model = drnn.load("model.safetensors")
    model = drnn.from_torch(torch_module)
    s = model.stream(); y_t = s.step(x_t)     # real-time, state carried

Layers live in drnn.layers, the model in drnn.model, loaders in drnn.io;
the C kernels behind them in the extension module drnn._core.
"""
from . import _core
from ._torch import from_torch
from .errors import DrnnError, DtypeError, FormatError, ShapeError, UnsupportedError
from .io import load
from .layers import GRU, LSTM, RNN, Dense, Embedding, Layer
from .model import DRNN
from .stream import Stream, StreamBusyError

__version__ = "0.1.0"

__all__ = ["DRNN", "Embedding", "RNN", "LSTM", "GRU", "Dense", "Layer", "Stream", "load",
           "from_torch", "cpu_info", "DrnnError", "ShapeError", "DtypeError", "FormatError",
           "UnsupportedError", "StreamBusyError", "__version__"]


def cpu_info():
    """Which instruction set the kernels use (chosen at import; DRNN_ISA forces
    one), the ones this CPU could run, its features, and the default thread count."""
    return {"isa": _core.isa_name(), "available": _core.available_isas(),
            "features": _core.cpu_features(), "cpus": _core.cpu_count(),
            "num_threads": _core.default_threads()}
