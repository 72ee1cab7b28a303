"""Loaders: files in, drnn models out.  They know nothing of the C kernels.

drnn.load(path) recognises the file by its content first (magic bytes, the
members of a zip), its extension second, and hands it to one reader:

    drnn .safetensors / .npz (architecture inside)   io/native.py
    .safetensors / .npz of weights + architecture=   io/native.py
    PyTorch torch.save zip (.pt, .pth)               io/torch_pt.py
    Keras 3 .keras, legacy .h5                       io/keras.py    (h5py)
    ONNX .onnx                                       io/onnx.py     (onnx)

Every reader raises drnn.FormatError naming the file and what is wrong with
it, or UnsupportedError naming what drnn cannot run; nothing a file contains
is ever executed.
"""
import os
import zipfile

from ..errors import FormatError, UnsupportedError

__all__ = ["load", "detect_format"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_EXTENSIONS = {".safetensors": "safetensors", ".npz": "npz", ".pt": "pytorch",
               ".pth": "pytorch", ".bin": "pytorch", ".keras": "keras", ".h5": "keras",
               ".hdf5": "keras", ".onnx": "onnx"}


def detect_format(path):
    """The reader for a file: safetensors, npz, pytorch, keras or onnx."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file")
    if os.path.isdir(path):
        raise FormatError(f"{path}: is a directory, expected a model file")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise FormatError(f"{path}: the file is empty")
    ext = os.path.splitext(path)[1].lower()
    if head.startswith(_HDF5_MAGIC):
        return "keras"
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:
            raise FormatError(f"{path}: a damaged zip archive ({e})") from None
        if any(n.endswith("data.pkl") or n.endswith("constants.pkl") for n in names):
            return "pytorch"
        if "config.json" in names or "model.weights.h5" in names:
            return "keras"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        return _EXTENSIONS.get(ext) or _unknown(path, "a zip archive of no known layout")
    if len(head) >= 9 and head[8:9] == b"{" and ext != ".onnx":
        return "safetensors"
    if head[:1] == b"\x80":          # a raw pickle: PyTorch's legacy format
        return "pytorch"
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    return _unknown(path, "no known magic bytes or extension")


def _unknown(path, why):
    raise UnsupportedError(f"{path}: unrecognised file ({why}); drnn reads .safetensors, .npz, "
                           ".pt/.pth, .keras/.h5 and .onnx")


def load(path, *, architecture=None, timeout=None, **options):
    """Load a model file and return a drnn model: a DRNN, an OnnxModel for
    .onnx (the graph run around drnn's kernels; ``to_drnn()`` converts pure
    stacks), or a KerasModel for a Keras model that masks (a DRNN applying
    Keras' mask semantics).

    architecture: for a plain .safetensors / .npz of weights (or a Keras
    save_weights .h5), the network's architecture -- drnn's
    ``model.config()`` dict (or its JSON) for the first two, a Keras model
    config for the last.  Other keyword options go to the format's reader:
    for PyTorch state_dicts ``nonlinearity`` ("tanh"), ``return_sequences``
    (True) and ``dense_activations`` (None: identity) say what a state_dict
    cannot; for Keras files ``ignore_masking`` (False) loads a model with
    Masking / mask_zero as the plain stack, without the mask (exact only for
    right-padded input run with ``lengths=``).

    timeout: None (default) parses in this process.  A number of seconds
    parses in a child process and raises FormatError if it takes longer --
    for services loading untrusted files, since a library under a reader
    (the HDF5 C library for .h5 / .keras) can loop forever on a damaged
    file and no Python code can interrupt it.  Costs a process start (about
    a second).
    """
    path = os.fspath(path)
    if timeout is not None:
        timeout = float(timeout)
        if not timeout > 0:
            raise ValueError(f"timeout: expected a number of seconds > 0 or None, got {timeout}")
        from ._isolate import load_isolated
        return load_isolated(path, architecture, options, timeout)
    fmt = detect_format(path)
    if fmt in ("safetensors", "npz"):
        from .native import load as load_native
        _no_options(path, fmt, options)
        return load_native(path, architecture=architecture)
    if fmt == "pytorch":
        from .torch_pt import load_pt
        if architecture is not None:
            raise UnsupportedError(f"{path}: architecture= is not used for PyTorch files; the "
                                   "architecture is inferred from the state_dict")
        return load_pt(path, **options)
    if fmt == "keras":
        from .keras import load_keras
        return load_keras(path, architecture=architecture, **options)
    from .onnx import load_onnx
    _no_options(path, fmt, options)
    if architecture is not None:
        raise UnsupportedError(f"{path}: architecture= is not used for ONNX files")
    return load_onnx(path)


def _no_options(path, fmt, options):
    if options:
        raise UnsupportedError(f"{path}: options {sorted(options)} do not apply to {fmt} files")
