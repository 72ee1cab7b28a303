"""Loaders: files in, drnn models out.  They know nothing of the C kernels.

drnn.load(path) picks the reader by content (magic bytes) and extension:
today drnn's own format (a .safetensors file whose metadata holds the
architecture).  Other frameworks' formats raise a clear UnsupportedError.
"""
import os

from ..errors import FormatError, UnsupportedError

__all__ = ["load"]


def load(path):
    """Load a model file and return a drnn.DRNN."""
    from .native import load as load_native
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file")
    if os.path.isdir(path):
        raise FormatError(f"{path}: is a directory, expected a model file")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        return load_native(path)
    for ext in (".pt", ".pth", ".keras", ".h5", ".hdf5", ".onnx", ".npz"):
        if lower.endswith(ext):
            raise UnsupportedError(f"{path}: loading {ext} files is not supported yet; "
                                   "drnn.load reads drnn's own .safetensors format")
    raise UnsupportedError(f"{path}: unrecognised file type; expected a .safetensors file "
                           "written by drnn")
