"""Read and write the safetensors format with plain numpy (no safetensors package).

Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON
{name: {"dtype", "shape", "data_offsets": [start, end]}, "__metadata__": {str: str}},
then the data; offsets are relative to the start of the data.  Every
declared size is checked against the file's real size before anything is
allocated, and tensors must tile the data exactly: no overlap, no holes.
"""
import json
import os
import struct

import numpy as np

from ..errors import FormatError

__all__ = ["read", "write"]

DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U8": np.dtype("u1"), "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"), "U64": np.dtype("<u8"), "BOOL": np.dtype("?"),
}
_NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


def _reject_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {k!r}")
        seen[k] = v
    return seen


def read(path):
    """-> (dict name -> read-only ndarray (native byte order), metadata dict)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise FormatError(f"{path}: truncated: {size} bytes, a safetensors file starts "
                              "with an 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > MAX_HEADER:
            raise FormatError(f"{path}: header length {n} exceeds the file size ({size} bytes); "
                              "the file is truncated or not safetensors")
        raw = f.read(n)
        data = f.read()
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{path}: the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: the header must be a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise FormatError(f"{path}: __metadata__ must map strings to strings")
    spans = []
    tensors = {}
    for name, info in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(info, dict):
            raise FormatError(f"{where}: expected an object with dtype, shape, data_offsets")
        dt = DTYPES.get(info.get("dtype"))
        if dt is None:
            raise FormatError(f"{where}: unsupported dtype {info.get('dtype')!r}; expected one of "
                              f"{', '.join(DTYPES)}")
        shape, offs = info.get("shape"), info.get("data_offsets")
        if (not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape)):
            raise FormatError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(type(o) is int for o in offs)
                or not 0 <= offs[0] <= offs[1] <= len(data)):
            raise FormatError(f"{where}: data_offsets {offs!r} lie outside the {len(data)} bytes "
                              "of data")
        count = 1
        for d in shape:
            count *= d
        if count * dt.itemsize != offs[1] - offs[0]:
            raise FormatError(f"{where}: shape {shape} of {info['dtype']} needs "
                              f"{count * dt.itemsize} bytes, data_offsets give {offs[1] - offs[0]}")
        spans.append((offs[0], offs[1], name))
        arr = np.frombuffer(data, dtype=dt, count=count, offset=offs[0]).reshape(shape)
        tensors[name] = arr.astype(dt.newbyteorder("="), copy=False)
    spans.sort()
    pos = 0
    for start, end, name in spans:
        if start != pos:
            raise FormatError(f"{path}: tensor {name!r} starts at {start}, expected {pos}: "
                              "tensors overlap or leave holes")
        pos = end
    if pos != len(data):
        raise FormatError(f"{path}: {len(data) - pos} bytes of data belong to no tensor")
    return tensors, meta


def write(path, tensors, metadata=None):
    """Write name -> array (any numeric dtype in DTYPES) as safetensors, C order, little-endian."""
    header = {}
    blobs = []
    pos = 0
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        dt = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        key = _NAMES.get(dt)
        if key is None:
            raise FormatError(f"cannot store tensor {name!r} of dtype {arr.dtype} in safetensors")
        blob = np.ascontiguousarray(arr, dtype=dt).tobytes()
        header[name] = {"dtype": key, "shape": list(arr.shape),
                        "data_offsets": [pos, pos + len(blob)]}
        blobs.append(blob)
        pos += len(blob)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
