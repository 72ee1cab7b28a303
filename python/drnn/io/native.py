"""drnn's own format: safetensors with the architecture as JSON in its metadata;
and plain .safetensors / .npz weight files read together with an architecture.

Tensors are named ``layers.{i}.{param}`` (PyTorch names inside a layer);
metadata holds ``format = "drnn"``, ``format_version`` and ``architecture``,
the JSON of DRNN.config().  Saving and loading round-trip bit for bit.
"""
import json
import zipfile
import zlib

import numpy as np

from ..errors import DrnnError, FormatError
from . import safetensors

FORMAT_VERSION = "1"


def save(model, path):
    tensors = {}
    for i, layer in enumerate(model.layers):
        for name, arr in layer.params().items():
            tensors[f"layers.{i}.{name}"] = arr
    meta = {"format": "drnn", "format_version": FORMAT_VERSION,
            "architecture": json.dumps(model.config())}
    safetensors.write(path, tensors, meta)


def _read_npz(path):
    """An .npz as {name: array} with pickles refused, plus drnn metadata if present.

    Each member's .npy header is parsed and its declared shape and dtype checked
    against the member's real size before the array is allocated."""
    import io

    from ._zipcheck import check_zip
    arrays = {}
    try:
        with zipfile.ZipFile(path) as z:
            check_zip(z, path)
            for info in z.infolist():
                name = info.filename
                if not name.endswith(".npy"):
                    raise FormatError(f"{path}: member {name!r} is not a .npy array")
                raw = z.read(info)
                arrays[name[:-4]] = _read_npy(path, name, io.BytesIO(raw), len(raw))
    except (OSError, zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, zlib.error, ValueError,
            NotImplementedError) as e:      # zipfile: "zip file version 12.8"
        raise FormatError(f"{path}: not a readable .npz ({e})") from None
    meta = {}
    for key in ("__format__", "__format_version__", "__architecture__"):
        if key in arrays:
            raw = arrays.pop(key)
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise FormatError(f"{path}: {key} must be UTF-8 bytes (a 1-D uint8 array)")
            try:
                meta[key.strip("_")] = raw.tobytes().decode("utf-8", errors="strict")
            except UnicodeDecodeError as e:
                raise FormatError(f"{path}: {key} is not UTF-8 ({e})") from None
    return arrays, meta


def _read_npy(path, name, f, size):
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except Exception as e:       # numpy parses the header dict with tokenize/ast: anything
        raise FormatError(f"{path}: member {name!r} has a damaged .npy header "
                          f"({type(e).__name__}: {e})") from None
    if dtype.hasobject:
        raise FormatError(f"{path}: member {name!r} holds Python objects (a pickle); drnn never "
                          "loads pickled data from an .npz")
    if dtype.kind not in "biuf" or dtype.itemsize == 0:
        raise FormatError(f"{path}: member {name!r} has dtype {dtype}; expected numbers")
    if not all(type(d) is int and d >= 0 for d in shape):
        raise FormatError(f"{path}: member {name!r} declares shape {shape}: negative or "
                          "non-integer dimensions")
    count = 1
    for d in shape:
        count *= d
    need = count * dtype.itemsize
    have = size - f.tell()
    if need > have:
        raise FormatError(f"{path}: member {name!r} declares shape {shape} of {dtype} "
                          f"({need:,} bytes) but holds {have:,}; truncated or corrupt")
    arr = np.frombuffer(f.getbuffer(), dtype=dtype, count=count, offset=f.tell())
    arr = arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True) if dtype.byteorder not in "=|" \
        else arr.copy()


def _parse_architecture(path, architecture):
    """drnn's architecture: a {"layers": [...]} dict, its JSON, or a list of layer configs."""
    if isinstance(architecture, (bytes, str)):
        try:
            architecture = json.loads(architecture)
        except ValueError as e:
            raise FormatError(f"{path}: the architecture is not valid JSON ({e})") from None
    if isinstance(architecture, list):
        architecture = {"layers": architecture}
    if not isinstance(architecture, dict) or not isinstance(architecture.get("layers"), list) \
            or not all(isinstance(c, dict) for c in architecture["layers"]):
        raise FormatError(f"{path}: expected an architecture {{'layers': [layer configs]}} as "
                          "DRNN.config() writes it")
    return architecture["layers"]


def load(path, architecture=None):
    """drnn's own file (.safetensors with metadata), or a plain .safetensors /
    .npz of weights named ``layers.{i}.{param}`` with ``architecture`` given."""
    from ..layers import Layer
    from ..model import DRNN
    if str(path).lower().endswith(".npz"):
        tensors, meta = _read_npz(path)
        fmt = "npz"
    else:
        tensors, meta = safetensors.read(path)
        fmt = "safetensors"
    source = {"format": fmt, "file": str(path), "read": [f"{len(tensors)} tensors"],
              "inferred": [], "defaulted": []}
    if architecture is not None:
        configs = _parse_architecture(path, architecture)
        source["read"].append("architecture given by the caller")
    elif meta.get("format") == "drnn" and "architecture" in meta:
        if meta.get("format_version") != FORMAT_VERSION:
            raise FormatError(f"{path}: drnn format version {meta.get('format_version')!r}, "
                              f"this drnn reads version {FORMAT_VERSION}")
        configs = _parse_architecture(path, meta["architecture"])
        source["format"] = "drnn"
        source["read"].append("architecture from the file's metadata")
    else:
        raise FormatError(f"{path}: weights without drnn's architecture metadata; pass "
                          "architecture= (a DRNN.config() dict) to say which network they "
                          "belong to")
    params = [{} for _ in configs]
    for key, arr in tensors.items():
        parts = key.split(".", 2)
        if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit() \
                or int(parts[1]) >= len(configs):
            raise FormatError(f"{path}: tensor {key!r} belongs to no layer of the architecture "
                              f"(expected names layers.<0..{len(configs) - 1}>.<param>)")
        params[int(parts[1])][parts[2]] = arr
    layers = []
    for i, (cfg, p) in enumerate(zip(configs, params)):
        # Sizes come from the tensors, never from the configuration alone: a layer
        # without its tensors would be drawn at random at the configuration's size,
        # and num_layers drives loops before any shape is checked.
        kind = cfg.get("type")
        if not p or (kind == "Embedding" and "weight" not in p):
            raise FormatError(f"{path}: layer {i} ({kind}) has no weights in the file")
        n = cfg.get("num_layers", 1)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(p):
            raise FormatError(f"{path}: layer {i}: num_layers {n!r} does not match its "
                              f"{len(p)} tensors")
        try:
            layers.append(Layer.from_config(cfg, p))
        except DrnnError as e:
            raise type(e)(f"{path}: layer {i}: {e}") from None
        except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as e:
            # unknown or ill-typed config keys
            raise FormatError(f"{path}: layer {i}: bad configuration ({e})") from None
    try:
        model = DRNN(layers)
    except DrnnError as e:
        raise type(e)(f"{path}: {e}") from None
    model.source = source
    return model
