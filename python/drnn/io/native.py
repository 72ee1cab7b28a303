"""drnn's own format: safetensors with the architecture as JSON in its metadata.

Tensors are named ``layers.{i}.{param}`` (PyTorch names inside a layer);
metadata holds ``format = "drnn"``, ``format_version`` and ``architecture``,
the JSON of DRNN.config().  Saving and loading round-trip bit for bit.
"""
import json

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


def load(path):
    from ..layers import Layer
    from ..model import DRNN
    tensors, meta = safetensors.read(path)
    if meta.get("format") != "drnn" or "architecture" not in meta:
        raise FormatError(f"{path}: a safetensors file without drnn's architecture metadata; "
                          "weights alone do not say which network they belong to")
    if meta.get("format_version") != FORMAT_VERSION:
        raise FormatError(f"{path}: drnn format version {meta.get('format_version')!r}, "
                          f"this drnn reads version {FORMAT_VERSION}")
    try:
        arch = json.loads(meta["architecture"])
        configs = arch["layers"]
        if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
            raise TypeError("layers must be a list of objects")
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"{path}: the architecture metadata is malformed ({e})") from None
    params = [{} for _ in configs]
    for key, arr in tensors.items():
        parts = key.split(".", 2)
        if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit() \
                or int(parts[1]) >= len(configs):
            raise FormatError(f"{path}: tensor {key!r} belongs to no layer of the architecture")
        params[int(parts[1])][parts[2]] = arr
    layers = []
    for i, (cfg, p) in enumerate(zip(configs, params)):
        try:
            layers.append(Layer.from_config(cfg, p))
        except DrnnError as e:
            raise type(e)(f"{path}: layer {i}: {e}") from None
        except (TypeError, ValueError, KeyError) as e:   # unknown or ill-typed config keys
            raise FormatError(f"{path}: layer {i}: bad configuration ({e})") from None
    try:
        return DRNN(layers)
    except DrnnError as e:
        raise type(e)(f"{path}: {e}") from None
