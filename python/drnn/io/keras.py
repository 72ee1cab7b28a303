"""Keras loader: Keras 3 ``.keras`` archives and legacy HDF5 ``.h5`` files.

How the parts fit:

* ``_open_source`` looks at the file's magic bytes (never its extension) and
  returns the model config (JSON from the file, or ``architecture=``), the
  Keras version that wrote it and a ``_Weights`` reader for one of the two
  HDF5 layouts:

  - Keras 3 (``model.weights.h5`` inside a ``.keras`` zip, or a
    ``.weights.h5`` from ``save_weights``): ``layers/<name>/vars/<i>``, RNNs
    under ``layers/<name>/cell/vars/<i>``, Bidirectional under
    ``forward_layer/`` and ``backward_layer/``.  ``<name>`` is the class name
    in snake case numbered in container order; newer files also record the
    user's layer name in the ``vars`` group's ``name`` attribute (used first).
  - legacy (``model.save("x.h5")`` and tf.keras 2 ``save_weights("x.h5")``):
    one group per layer name listed in the ``layer_names`` attribute (maybe
    chunked ``layer_names0``, ``layer_names1``, ...), each with a
    ``weight_names`` attribute giving the order of its variables.

* ``_convert`` walks the (single-chain) layer list and turns each Keras layer
  into a spec for a drnn layer, converting weights to PyTorch layout: Keras
  kernel (in, G*u) -> weight_ih (G*u, in), gate blocks reordered (LSTM i f c o
  stays i f g o; GRU z r h -> r z n); LSTM/SimpleRNN bias -> bias_ih with a
  zero bias_hh; GRU reset_after=True bias (2, 3u) -> bias_ih, bias_hh and
  linear_before_reset=True; reset_after=False bias (3u) -> bias_ih, zero
  bias_hh and linear_before_reset=False.
* ``_postprocess`` folds Bidirectional merge_mode sum/ave into the next
  linear map (or appends an exact merging Dense), and fuses consecutive
  identical recurrent layers into one multi-layer drnn stack; merge_mode mul
  is the drnn layer's own ``merge_mode="mul"``.
* ``_build`` returns that DRNN, or -- when the model masks (a leading
  Masking layer, Embedding(mask_zero=True)) or ends in a Bidirectional with
  merge_mode=None -- a ``KerasModel`` wrapping it, which computes the mask
  from the input and runs each row's unmasked steps packed (see its
  docstring for Keras' rules at masked steps), or returns the pair of
  outputs.  The DRNN itself stays framework-neutral.

Nothing in a file is ever executed: a Lambda layer or any config holding
code ("function" fields) is refused.  Keras and TensorFlow are never imported.

Refused with UnsupportedError (the message says why):
  * a Masking layer anywhere but first, a layer that drops the mask
    (SpatialDropout*) between masked recurrent layers;
  * go_backwards=True with return_sequences=True outside Bidirectional
    (Keras returns that sequence in processing, i.e. reversed, order);
  * Bidirectional merge_mode None anywhere but as the last layer (Keras
    hands the next layer a pair of tensors);
  * return_state, stateful time_major, nested models, branching graphs,
    unknown layers and activations drnn cannot compute exactly.
"""
import io
import json
import os
import re
import zipfile
import zlib

import numpy as np

from ..errors import DrnnError, FormatError, ShapeError, UnsupportedError

__all__ = ["load_keras", "KerasModel"]

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_MAX_CONFIG_BYTES = 64 << 20

_IGNORED = {"InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
            "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
            "ActivityRegularization"}
_RECURRENT = {"SimpleRNN": ("RNN", 1, None), "LSTM": ("LSTM", 4, [0, 1, 2, 3]),
              "GRU": ("GRU", 3, [1, 0, 2])}   # drnn kind, gates, Keras->PyTorch block order
_KNOWN = _IGNORED | set(_RECURRENT) | {"Masking", "Embedding", "Bidirectional", "Dense"}
_DENSE_ACTS = {"linear": "identity", "relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid",
               "softmax": "softmax", "log_softmax": "log_softmax"}


def _import_h5py():
    try:
        import h5py
    except ImportError as exc:
        raise ImportError("reading Keras files needs h5py: pip install drnn[keras] "
                          f"(or pip install h5py) ({exc})") from exc
    return h5py


def load_keras(path, *, architecture=None, ignore_masking=False):
    """Load a Keras model file as a drnn.DRNN (or a KerasModel wrapping one).

    path: a Keras 3 ``.keras`` archive, a legacy ``.h5`` written by
    ``model.save``, or a weights-only HDF5 file (Keras 3 ``.weights.h5`` or
    tf.keras 2 ``save_weights(".h5")``) -- the format is told by content.
    architecture: a Keras model config (dict, or JSON string as from
    ``model.to_json()``); required for weights-only files, and overrides the
    config stored in a full file.
    ignore_masking: a model with masking (a Masking layer, Embedding
    mask_zero=True) loads as a KerasModel that reproduces Keras' masking
    exactly; True drops the masking instead and returns the plain DRNN
    (recorded in ``model.source["masking"]``): results then equal Keras' for
    inputs with no masked step, and for right-padded batches run with
    ``predict(lengths=...)`` the final states (return_sequences=False) too.

    Returns a DRNN -- or a KerasModel (masking, merge_mode=None) whose
    ``.model`` is one -- whose ``source`` says what was read, inferred and
    defaulted.
    Raises FormatError for broken files, UnsupportedError for models drnn
    cannot run exactly, ImportError when h5py is missing.
    """
    path = os.fspath(path)
    h5py = _import_h5py()
    try:
        src = _open_source(path, h5py, architecture)
        try:
            model = _build(path, src, ignore_masking)
        finally:
            src.close()
    except DrnnError as e:
        msg = str(e)
        if not msg.startswith(path):
            msg = f"{path}: {msg}"
        raise type(e)(msg) from None
    except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError,
            zipfile.BadZipFile, RuntimeError, zlib.error, NotImplementedError) as e:
        raise FormatError(f"{path}: not a readable Keras file ({type(e).__name__}: {e})") from None
    return model


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------

class _Source:
    def __init__(self, fmt, config, version, weights, closers, read):
        self.format, self.config, self.version = fmt, config, version
        self.weights, self._closers, self.read = weights, closers, read

    def close(self):
        for c in reversed(self._closers):
            try:
                c.close()
            except Exception:   # closing must never mask the real error
                pass


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _parse_json(text, what):
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"{what} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{what} is not a JSON object")
    return obj


def _open_source(path, h5py, architecture):
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file")
    if os.path.isdir(path):
        raise FormatError(f"{path}: is a directory, expected a .keras or .h5 file")
    size = os.path.getsize(path)
    if size == 0:
        raise FormatError(f"{path}: the file is empty")
    with open(path, "rb") as fh:
        head = fh.read(8)
    arch = None
    if architecture is not None:
        if isinstance(architecture, (str, bytes)):
            arch = _parse_json(architecture, "architecture=")
        elif isinstance(architecture, dict):
            arch = architecture
        else:
            raise UnsupportedError("architecture= must be a Keras model config dict or JSON "
                                   f"string, got {type(architecture).__name__}")
    read = []
    if head[:4] == _ZIP_MAGIC:
        try:
            zf = zipfile.ZipFile(path)
            names = set(zf.namelist())
        except (zipfile.BadZipFile, OSError, NotImplementedError) as e:
            raise FormatError(f"{path}: a damaged or truncated zip archive ({e})") from None
        closers = [zf]
        try:
            version = None
            if "metadata.json" in names:
                meta = _parse_json(_read_member(zf, "metadata.json", path), "metadata.json")
                version = meta.get("keras_version")
            config = arch
            if config is None:
                if "config.json" not in names:
                    raise FormatError(f"{path}: a zip archive without config.json; not a .keras "
                                      f"file (members: {sorted(names)[:8]})")
                config = _parse_json(_read_member(zf, "config.json", path), "config.json")
                read.append("config.json")
            if "model.weights.h5" not in names:
                raise FormatError(f"{path}: the .keras archive has no model.weights.h5")
            from ._zipcheck import check_zip
            check_zip(zf, path)         # zip bombs, duplicates, members past the end
            try:
                data = zf.read("model.weights.h5")
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise FormatError(f"{path}: model.weights.h5 is damaged ({e})") from None
            bio = io.BytesIO(data)
            if data[:8] != _HDF5_MAGIC:
                raise FormatError(f"{path}: model.weights.h5 is not an HDF5 file")
            try:
                h5 = h5py.File(bio, "r")
            except OSError as e:
                raise FormatError(f"{path}: model.weights.h5 is damaged or truncated ({e})") from None
            closers.append(h5)
            weights = _weights_for(h5, path)
            read.append("model.weights.h5")
            return _Source("keras3", config, version, weights, closers, read)
        except BaseException:
            for c in reversed(closers):
                c.close()
            raise
    if head == _HDF5_MAGIC or h5py.is_hdf5(path):
        try:
            h5 = h5py.File(path, "r")
        except OSError as e:
            raise FormatError(f"{path}: a damaged or truncated HDF5 file ({e})") from None
        try:
            version = h5.attrs.get("keras_version")
            version = None if version is None else _text(version)
            config = arch
            if "model_config" in h5.attrs and config is None:
                config = _parse_json(_text(h5.attrs["model_config"]), "the model_config attribute")
                if "config" not in config and "class_name" not in config:
                    raise FormatError("model_config holds no model")
                read.append("model_config attribute")
            wroot = h5["model_weights"] if "model_weights" in h5 else h5
            if version is None and "keras_version" in wroot.attrs:
                version = _text(wroot.attrs["keras_version"])
            weights = _weights_for(wroot, path)
            fmt = "keras3" if isinstance(weights, _Keras3Weights) else "keras-h5"
            if config is None:
                raise FormatError(f"{path}: an HDF5 weights file without a model config; pass "
                                  "the architecture (a Keras model config: dict or "
                                  "model.to_json() string) as architecture=")
            read.append("weights (" + ("Keras 3 layout" if fmt == "keras3" else "legacy layout") + ")")
            return _Source(fmt, config, version, weights, [h5], read)
        except BaseException:
            h5.close()
            raise
    raise FormatError(f"{path}: not a Keras file: expected a zip (.keras) or HDF5 (.h5) file, "
                      f"got leading bytes {head!r}")


def _read_member(zf, name, path):
    info = zf.getinfo(name)
    if info.file_size > _MAX_CONFIG_BYTES:
        raise FormatError(f"{path}: {name} is {info.file_size} bytes, too large for a config")
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise FormatError(f"{path}: {name} is damaged ({e})") from None


def _weights_for(group, path):
    if "layers" in group and hasattr(group["layers"], "keys") and "layer_names" not in group.attrs:
        return _Keras3Weights(group["layers"], path)
    if any(k == "layer_names" or re.fullmatch(r"layer_names\d+", k) for k in group.attrs):
        return _LegacyWeights(group, path)
    raise FormatError(f"{path}: no Keras weights found (neither a 'layers' group nor a "
                      "'layer_names' attribute)")


def _snake(name):
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class _Keras3Weights:
    """layers/<name>/[cell/]vars/<i>; names as Keras 3 saving_lib assigns them."""

    def __init__(self, layers, path):
        self.layers, self.path = layers, path
        self.by_name = {}
        for key in layers.keys():
            g = layers[key]
            vars_ = g.get("vars") if hasattr(g, "get") else None
            if vars_ is not None and "name" in vars_.attrs:
                self.by_name.setdefault(_text(vars_.attrs["name"]), key)
        self.used = {}

    def assign(self, class_name):
        """Keras' container-order name for the next layer of this class."""
        base = _snake(class_name)
        if base in self.used:
            self.used[base] += 1
            return f"{base}_{self.used[base]}"
        self.used[base] = 0
        return base

    def _group(self, name, auto):
        key = self.by_name.get(name, auto)
        if key not in self.layers:
            raise FormatError(f"layer {name!r}: no weights group layers/{key} in the weights file")
        return self.layers[key], f"layers/{key}"

    @staticmethod
    def _vars(group, where):
        if "vars" not in group:
            raise FormatError(f"{where}: no 'vars' group")
        v = group["vars"]
        keys = sorted((k for k in v.keys()), key=lambda k: int(k) if k.isdigit() else -1)
        if any(not k.isdigit() for k in keys):
            raise FormatError(f"{where}/vars: unexpected entries {keys}")
        return [(f"{where}/vars/{k}", v[k]) for k in keys]

    def layer(self, name, auto, names):
        g, where = self._group(name, auto)
        return self._named(self._vars(g, where), names, where)

    def recurrent(self, name, auto, names, sub=None):
        g, where = self._group(name, auto)
        if sub is not None:
            if sub not in g:
                raise FormatError(f"{where}: no {sub} group")
            g, where = g[sub], f"{where}/{sub}"
        if "cell" not in g:
            raise FormatError(f"{where}: no 'cell' group")
        return self._named(self._vars(g["cell"], where + "/cell"), names, where)

    @staticmethod
    def _named(items, names, where):
        if len(items) != len(names):
            raise FormatError(f"{where}: expected {len(names)} variables ({', '.join(names)}), "
                              f"found {len(items)}")
        return {n: it for n, it in zip(names, items)}


class _LegacyWeights:
    """model_weights/<layer name> with a weight_names attribute (legacy HDF5)."""

    def __init__(self, root, path):
        self.root, self.path = root, path
        self.layer_names = [_text(n) for n in _chunked_attr(root, "layer_names")]

    def assign(self, class_name):
        return None

    def _items(self, name):
        if name not in self.layer_names or name not in self.root:
            raise FormatError(f"layer {name!r}: no weights group for it in the file "
                              f"(layer_names: {self.layer_names[:10]})")
        g = self.root[name]
        wnames = [_text(n) for n in _chunked_attr(g, "weight_names")]
        items = []
        for wn in wnames:
            if wn not in g:
                raise FormatError(f"layer {name!r}: weight {wn!r} listed in weight_names is missing")
            items.append((f"{name}/{wn}", g[wn]))
        return items

    @staticmethod
    def _base(key):
        return key.rsplit("/", 1)[-1].split(":")[0]

    def _named(self, items, names, where):
        got = {}
        for key, ds in items:
            got.setdefault(self._base(key), (key, ds))
        if len(items) != len(names) or set(got) != set(names):
            raise FormatError(f"{where}: expected variables {names}, found "
                              f"{[self._base(k) for k, _ in items]}")
        return got

    def layer(self, name, auto, names):
        return self._named(self._items(name), names, f"layer {name!r}")

    def recurrent(self, name, auto, names, sub=None):
        items = self._items(name)
        if sub is not None:
            half = len(items) // 2
            if len(items) != 2 * len(names):
                raise FormatError(f"layer {name!r}: expected {2 * len(names)} variables for a "
                                  f"Bidirectional layer, found {len(items)}")
            items = items[:half] if sub == "forward_layer" else items[half:]
            tag = "forward" if sub == "forward_layer" else "backward"
            other = "backward" if tag == "forward" else "forward"
            if any(f"/{other}_" in k for k, _ in items):
                raise FormatError(f"layer {name!r}: {tag} weights are not where weight_names "
                                  "order puts them")
        return self._named(items, names, f"layer {name!r}" + (f" {sub}" if sub else ""))


def _chunked_attr(group, name):
    if name in group.attrs:
        vals = group.attrs[name]
    else:
        vals, i = [], 0
        while f"{name}{i}" in group.attrs:
            vals.extend(list(group.attrs[f"{name}{i}"]))
            i += 1
        if i == 0:
            raise FormatError(f"HDF5 group {group.name}: no {name} attribute")
    vals = np.asarray(vals)
    if vals.size == 0:
        return []
    return list(vals.reshape(-1))


def _check_stored(ds, key, what):
    """A dataset's declared size must be stored in the file (HDF5 reads lazily: unwritten
    chunks read as fill values, and gzip chunks inflate), checked before reading it."""
    nbytes = int(np.prod(ds.shape, dtype=object)) * ds.dtype.itemsize
    if nbytes <= 1 << 16:
        return
    stored = ds.id.get_storage_size()
    ratio = 100 if ds.id.get_create_plist().get_nfilters() else 1
    if nbytes > ratio * stored:
        raise FormatError(f"{what}: weight {key} declares {tuple(ds.shape)} {ds.dtype} "
                          f"({nbytes:,} bytes) but the file stores {stored:,} bytes for it")


def _array(item, shape, what):
    key, ds = item
    if not hasattr(ds, "shape") or not hasattr(ds, "dtype"):
        raise FormatError(f"{what}: {key} is not a dataset")
    if tuple(ds.shape) != tuple(shape):
        raise FormatError(f"{what}: weight {key} has shape {tuple(ds.shape)}, expected "
                          f"{tuple(shape)}")
    if ds.dtype.kind not in "fiu":
        raise FormatError(f"{what}: weight {key} has dtype {ds.dtype}, expected floats")
    _check_stored(ds, key, what)
    arr = np.asarray(ds[()], dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise FormatError(f"{what}: weight {key} contains NaN or infinity")
    return arr


# ---------------------------------------------------------------------------
# config -> drnn layers
# ---------------------------------------------------------------------------

def _refuse_code(obj, where="config"):
    """Refuse anything that would need code run: Lambda, function fields."""
    if isinstance(obj, dict):
        if obj.get("class_name") in ("Lambda", "TFOpLambda", "SlicingOpLambda"):
            name = (obj.get("config") or {}).get("name") if isinstance(obj.get("config"), dict) else None
            raise UnsupportedError(f"layer {name!r} is a {obj['class_name']} layer: its config "
                                   "holds Python code, which drnn never runs")
        for k, v in obj.items():
            if k in ("function", "function_type", "output_shape_type", "__lambda__") \
                    or (k == "class_name" and v == "__lambda__"):
                raise UnsupportedError(f"{where}: holds code (a {k!r} field), which drnn "
                                       "never runs")
            _refuse_code(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _refuse_code(v, f"{where}[{i}]")


def _version_major(version):
    if version is None:
        return None
    m = re.match(r"\s*(\d+)(?:\.(\d+))?", str(version))
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def _layer_chain(config):
    """The model's layer configs in execution order (a single chain)."""
    if "class_name" in config and "config" in config and not isinstance(config.get("layers"), list):
        cls, cfg = config["class_name"], config["config"]
    else:
        cls, cfg = "Functional" if "input_layers" in config else "Sequential", config
    if cls == "Sequential":
        layers = cfg if isinstance(cfg, list) else cfg.get("layers")
        if not isinstance(layers, list):
            raise FormatError("a Sequential config without a layers list")
        return cls, layers
    if cls not in ("Functional", "Model"):
        raise UnsupportedError(f"the model is a {cls!r}; drnn reads Sequential and Functional "
                               "models")
    layers = cfg.get("layers")
    if not isinstance(layers, list):
        raise FormatError("a Functional config without a layers list")
    by_name = {}
    for lc in layers:
        name = lc.get("name") or (lc.get("config") or {}).get("name")
        by_name[name] = lc
    ins, outs = cfg.get("input_layers"), cfg.get("output_layers")

    def refs(x):
        # [name, node, tensor] or [[name, node, tensor], ...]
        if isinstance(x, list) and x and isinstance(x[0], str):
            return [x[0]]
        if isinstance(x, list):
            return [r for e in x for r in refs(e)]
        return []
    in_names, out_names = refs(ins), refs(outs)
    if len(in_names) != 1 or len(out_names) != 1:
        raise UnsupportedError(f"the model has {len(in_names)} inputs and {len(out_names)} "
                               "outputs; drnn reads single-input single-output chains")

    def parents(lc):
        nodes = lc.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise UnsupportedError(f"layer {lc.get('name')!r} is called {len(nodes)} times "
                                   "(shared layer); drnn reads simple chains")
        found = []

        def walk(o):
            if isinstance(o, dict):
                if o.get("class_name") == "__keras_tensor__":
                    found.append(o["config"]["keras_history"][0])
                    return
                for v in o.values():
                    walk(v)
            elif isinstance(o, list):
                if len(o) >= 3 and isinstance(o[0], str) and isinstance(o[1], int):
                    found.append(o[0])          # tf.keras 2: [name, node, tensor, kwargs]
                    return
                for v in o:
                    walk(v)
        for node in nodes:
            if isinstance(node, dict):
                walk(node.get("args", []))
            else:
                walk(node)
        return found
    chain, name = [], out_names[0]
    seen = set()
    while True:
        if name not in by_name or name in seen:
            raise FormatError(f"the graph references an unknown or cyclic layer {name!r}")
        seen.add(name)
        lc = by_name[name]
        chain.append(lc)
        if name == in_names[0]:
            break
        ps = parents(lc)
        if len(ps) != 1:
            raise UnsupportedError(f"layer {name!r} takes {len(ps)} inputs; drnn reads "
                                   "simple chains of layers")
        name = ps[0]
    chain.reverse()
    if len(chain) != len(layers):
        extra = [n for n in by_name if n not in seen]
        raise UnsupportedError(f"layers {extra} are not on the input->output chain; drnn reads "
                               "simple chains of layers")
    return cls, chain


class _Ctx:
    def __init__(self, path, version, layout):
        self.path, self.layout = path, layout
        self.version = version
        self.vmaj = _version_major(version)
        self.read, self.inferred, self.defaulted = [], [], []
        self._hs_noted = False

    def hard_sigmoid(self, where):
        if not self._hs_noted and self.vmaj is not None:
            self._hs_noted = True
            self.read.append("hard_sigmoid definition: " + (
                "Keras 3, clip(x/6 + 0.5, 0, 1)" if self.vmaj[0] >= 3 else
                "tf.keras 2, clip(0.2x + 0.5, 0, 1)") + f" (keras_version {self.version})")
        if self.vmaj is None and self.layout == "keras3":
            if not self._hs_noted:
                self.inferred.append("hard_sigmoid definition: Keras 3 (x/6 + 0.5) from the "
                                     "Keras 3 weights layout (no keras_version recorded)")
                self._hs_noted = True
            return ("hard_sigmoid", 1.0 / 6.0, 0.5)
        if self.vmaj is None:
            if not self._hs_noted:
                self.defaulted.append("hard_sigmoid definition: Keras 3 (x/6 + 0.5) because the "
                                      "file records no keras_version")
                self._hs_noted = True
            return ("hard_sigmoid", 1.0 / 6.0, 0.5)
        if self.vmaj[0] >= 3:
            return ("hard_sigmoid", 1.0 / 6.0, 0.5)
        return ("hard_sigmoid", 0.2, 0.5)

    def activation(self, spec, where):
        name = _act_name(spec, where)
        if name in ("sigmoid", "tanh", "relu", "linear", "softsign", "softplus"):
            return (name,)
        if name == "hard_sigmoid":
            return self.hard_sigmoid(where)
        if name == "elu":
            return ("elu", 1.0)
        if name == "leaky_relu" and (self.vmaj is None or self.vmaj[0] >= 3):
            return ("leaky_relu", 0.2)
        raise UnsupportedError(f"{where}: activation {name!r} is not supported (drnn computes "
                               "sigmoid, hard_sigmoid, tanh, relu, linear, softsign, softplus, "
                               "elu, leaky_relu)")


def _act_name(spec, where):
    if spec is None:
        return "linear"
    if isinstance(spec, str):
        return spec.lower()
    if isinstance(spec, dict) and isinstance(spec.get("config"), str) \
            and spec.get("class_name") in ("function", None) or \
            isinstance(spec, dict) and isinstance(spec.get("config"), str) \
            and str(spec.get("module", "")).startswith("keras.activations"):
        return spec["config"].lower()
    raise UnsupportedError(f"{where}: activation {spec!r} is not a built-in Keras activation")


def _cfg(lc):
    c = lc.get("config")
    if not isinstance(c, dict):
        raise FormatError(f"layer config {lc.get('class_name')!r} has no config object")
    return c


def _convert_recurrent(cls, c, items, in_size, ctx, where, direction):
    """Keras RNN variables -> (drnn kwargs part, PyTorch weights for one direction)."""
    kind, G, order = _RECURRENT[cls]
    u = int(c["units"])
    if u < 1:
        raise FormatError(f"{where}: units must be >= 1, got {u}")
    use_bias = bool(c.get("use_bias", True))
    k = _array(items["kernel"], (in_size, G * u), where)
    r = _array(items["recurrent_kernel"], (u, G * u), where)

    def reorder(m):        # (rows, G*u) in Keras order -> (G*u, rows) PyTorch order
        if order is None:
            return np.ascontiguousarray(m.T)
        return np.ascontiguousarray(m.reshape(m.shape[0], G, u)[:, order, :]
                                    .reshape(m.shape[0], G * u).T)

    def reorder_b(b):
        return b if order is None else b.reshape(G, u)[order].reshape(G * u)
    sfx = "_l0" + ("_reverse" if direction else "")
    w = {"weight_ih" + sfx: reorder(k), "weight_hh" + sfx: reorder(r)}
    extra = {}
    if kind == "GRU":
        ra = c.get("reset_after")
        bshape = tuple(items["bias"][1].shape) if use_bias and "bias" in items else None
        if ra is None:
            ra = bshape == (2, 3 * u) if bshape is not None else True
            if direction == 0:
                (ctx.inferred if bshape else ctx.defaulted).append(
                    f"{where}: reset_after={ra} " + ("from the bias shape" if bshape else
                                                     "(Keras' default; no bias to tell)"))
        extra["linear_before_reset"] = bool(ra)
    if use_bias:
        if kind == "GRU" and extra["linear_before_reset"]:
            b = _array(items["bias"], (2, G * u), where)
            w["bias_ih" + sfx] = reorder_b(b[0])
            w["bias_hh" + sfx] = reorder_b(b[1])
        else:
            b = _array(items["bias"], (G * u,), where)
            w["bias_ih" + sfx] = reorder_b(b)
            w["bias_hh" + sfx] = np.zeros(G * u, np.float32)
    if kind == "RNN":
        acts = [ctx.activation(c.get("activation", "tanh"), where)]
    else:
        ra_spec = c.get("recurrent_activation")
        if ra_spec is None:
            old = ctx.vmaj is not None and ctx.vmaj < (2, 3)
            ra_spec = "hard_sigmoid" if old else "sigmoid"
            if direction == 0:
                ctx.defaulted.append(f"{where}: recurrent_activation={ra_spec} (absent from the "
                                     f"config; Keras {ctx.version or '?'} default)")
        rec = ctx.activation(ra_spec, where)
        act = ctx.activation(c.get("activation", "tanh"), where)
        acts = [rec, act, act] if kind == "LSTM" else [rec, act]
    return u, use_bias, acts, extra, w


def _check_rnn_options(c, where):
    for opt in ("return_state", "stateful", "time_major", "unroll_states"):
        if c.get(opt) and opt != "stateful":
            raise UnsupportedError(f"{where}: {opt}=True is not supported")
    if c.get("stateful"):
        pass   # inference from a zero state; the stream API carries state instead


def _build(path, src, ignore_masking):
    from ..layers import Dense, Embedding, GRU, LSTM, RNN
    from ..model import DRNN
    config = src.config
    _refuse_code(config)
    ctx = _Ctx(path, src.version, src.format)
    cls_name, chain = _layer_chain(config)
    ctx.read.append(f"{cls_name} model of {len(chain)} layers" +
                    (f", keras_version {src.version}" if src.version else ""))
    W = src.weights
    specs = []        # dicts: kind, kwargs, weights, name
    masking = []
    size = None       # features flowing into the next layer (None: unknown yet)
    seq = True
    mask_on = False   # does a Keras mask reach the current layer?
    mask_cut = None   # the mask-destroying layer after a masked recurrent layer
    split = None      # Bidirectional merge_mode=None: the layer whose output is a pair
    for i, lc in enumerate(chain):
        if not isinstance(lc, dict) or not isinstance(lc.get("class_name"), str):
            raise FormatError(f"layer {i}: malformed layer config")
        cls = lc["class_name"]
        c = _cfg(lc)
        name = c.get("name", f"{cls}_{i}")
        where = f"layer {name!r} ({cls})"
        if cls in ("Sequential", "Functional", "Model"):
            raise UnsupportedError(f"{where}: nested models are not supported")
        if cls not in _KNOWN:
            raise UnsupportedError(f"{where}: layer type {cls!r} is not supported (drnn reads "
                                   f"{', '.join(sorted(_KNOWN))})")
        auto = W.assign(cls)
        if split is not None and cls not in _IGNORED:
            raise UnsupportedError(f"layer {split!r}: Bidirectional merge_mode=None returns two "
                                   f"tensors, which {where} cannot take; drnn reads it only as "
                                   "the model's last layer")
        if cls in _IGNORED:
            if cls.startswith("SpatialDropout") and mask_on:
                # Keras: these layers do not support masking and drop the mask.
                mask_on = False
                if any(sp.get("masked") for sp in specs):
                    mask_cut = where
                ctx.read.append(f"{where}: drops the Keras mask (it does not support masking)")
            if cls == "InputLayer":
                shp = c.get("batch_shape") or c.get("batch_input_shape")
                if isinstance(shp, list) and shp and isinstance(shp[-1], int) and len(shp) == 3:
                    size = shp[-1]
                    ctx.read.append(f"input: {shp[-1]} features per step")
            else:
                ctx.read.append(f"{where}: ignored at inference")
            continue
        if cls == "Masking":
            mv = c.get("mask_value", 0.0)
            if specs or masking:
                raise UnsupportedError(f"{where}: drnn reads a Masking layer only as the model's "
                                       "first layer (it computes the mask from the input)")
            if isinstance(mv, bool) or not isinstance(mv, (int, float)):
                raise UnsupportedError(f"{where}: mask_value {mv!r} is not a number")
            masking.append({"layer": name, "type": "Masking", "mask_value": float(mv)})
            mask_on = True
            continue
        if cls == "Embedding":
            if specs:
                raise UnsupportedError(f"{where}: an Embedding must be the first layer")
            n, d = int(c["input_dim"]), int(c["output_dim"])
            items = W.layer(name, auto, ["embeddings"])
            emb = _array(items["embeddings"], (n, d), where)
            if masking:
                raise UnsupportedError(f"{where}: an Embedding after a Masking layer is not "
                                       "supported")
            if c.get("mask_zero"):
                masking.append({"layer": name, "type": "Embedding mask_zero"})
                mask_on = True
            specs.append({"kind": "Embedding", "name": name,
                          "kwargs": {"num_embeddings": n, "embedding_dim": d},
                          "weights": {"weight": emb}})
            ctx.read.append(f"{where}: {n} tokens -> {d}")
            size = d
            continue
        if cls == "Dense":
            units = int(c["units"])
            act = _act_name(c.get("activation", "linear"), where)
            if act not in _DENSE_ACTS:
                raise UnsupportedError(f"{where}: Dense activation {act!r} is not supported "
                                       f"(drnn: {', '.join(_DENSE_ACTS)})")
            use_bias = bool(c.get("use_bias", True))
            names = ["kernel", "bias"] if use_bias else ["kernel"]
            items = W.layer(name, auto, names)
            kshape = tuple(items["kernel"][1].shape)
            if len(kshape) != 2 or kshape[1] != units:
                raise FormatError(f"{where}: kernel {items['kernel'][0]} has shape {kshape}, "
                                  f"expected (in, {units})")
            if size is not None and kshape[0] != size:
                raise FormatError(f"{where}: kernel {items['kernel'][0]} has shape {kshape}, "
                                  f"expected ({size}, {units}) -- the previous layer gives {size}")
            k = _array(items["kernel"], kshape, where)
            w = {"weight": np.ascontiguousarray(k.T)}
            if use_bias:
                w["bias"] = _array(items["bias"], (units,), where)
            specs.append({"kind": "Dense", "name": name, "weights": w,
                          "kwargs": {"in_features": kshape[0], "out_features": units,
                                     "activation": _DENSE_ACTS[act]}})
            ctx.read.append(f"{where}: {kshape[0]} -> {units}, activation {act}, use_bias {use_bias}")
            size = units
            continue
        # recurrent
        if not seq:
            raise UnsupportedError(f"{where}: follows a layer returning only the last step")
        bidir = cls == "Bidirectional"
        if bidir:
            inner = lc["config"].get("layer")
            if not isinstance(inner, dict) or inner.get("class_name") not in _RECURRENT:
                raise UnsupportedError(f"{where}: wraps "
                                       f"{(inner or {}).get('class_name')!r}; drnn supports "
                                       "SimpleRNN, LSTM and GRU")
            rcls, fc = inner["class_name"], _cfg(inner)
            back = c.get("backward_layer")
            if back is not None:
                if not isinstance(back, dict) or back.get("class_name") != rcls:
                    raise UnsupportedError(f"{where}: the backward layer is a "
                                           f"{(back or {}).get('class_name')!r}, the forward a "
                                           f"{rcls!r}; drnn needs one cell type")
                bc = _cfg(back)
            else:
                bc = dict(fc, go_backwards=not fc.get("go_backwards", False))
            if fc.get("go_backwards") or not bc.get("go_backwards", True):
                raise UnsupportedError(f"{where}: a forward layer with go_backwards=True inside "
                                       "Bidirectional is not supported")
            merge = c.get("merge_mode", "concat")
            if merge not in ("concat", "sum", "ave", "mul", None):
                raise UnsupportedError(f"{where}: Bidirectional merge_mode {merge!r} is not "
                                       "supported (drnn supports concat, sum, ave, mul and None)")
            if merge is None:
                split = name
            confs = [(fc, "forward_layer"), (bc, "backward_layer")]
        else:
            rcls, fc, merge = cls, c, None
            confs = [(fc, None)]
        kind, G, _ = _RECURRENT[rcls]
        for cc, _sub in confs:
            _check_rnn_options(cc, where)
        if mask_cut is not None:
            raise UnsupportedError(f"{mask_cut} drops the Keras mask between masked recurrent "
                                   f"layers and {where}; drnn does not run that")
        rs = bool(fc.get("return_sequences", False))
        if bidir and bool(confs[1][0].get("return_sequences", rs)) != rs:
            raise UnsupportedError(f"{where}: forward and backward return_sequences differ")
        go_back = (not bidir) and bool(fc.get("go_backwards", False))
        if go_back and rs:
            raise UnsupportedError(
                f"{where}: go_backwards=True with return_sequences=True is not supported: Keras "
                "returns that sequence in processing (time-reversed) order, which no drnn layer "
                "produces; return_sequences=False, or a Bidirectional wrapper, loads")
        weights, acts, units_seen, bias_seen, extra_seen = {}, [], set(), set(), []
        for d, (cc, sub) in enumerate(confs):
            use_bias = bool(cc.get("use_bias", True))
            names = ["kernel", "recurrent_kernel"] + (["bias"] if use_bias else [])
            items = W.recurrent(name, auto, names, sub)
            kshape = tuple(items["kernel"][1].shape)
            if len(kshape) != 2:
                raise FormatError(f"{where}: kernel {items['kernel'][0]} has shape {kshape}")
            if size is None:
                size = kshape[0]
                ctx.inferred.append(f"input: {size} features per step (from {where}'s kernel)")
            elif kshape[0] != size:
                raise FormatError(f"{where}: kernel {items['kernel'][0]} has shape {kshape}, "
                                  f"expected ({size}, {G}*units) -- the previous layer gives {size}")
            u, ub, a, extra, w = _convert_recurrent(rcls, cc, items, size, ctx,
                                                    where + (f" {sub}" if sub else ""), d)
            units_seen.add(u)
            bias_seen.add(ub)
            extra_seen.append(extra)
            acts.extend(a)
            weights.update(w)
        if len(units_seen) != 1 or len(bias_seen) != 1 or extra_seen.count(extra_seen[0]) != len(extra_seen):
            raise UnsupportedError(f"{where}: the forward and backward layers differ in units, "
                                   "use_bias or reset_after; drnn needs them equal")
        u, ub = units_seen.pop(), bias_seen.pop()
        if bidir and acts[:len(acts) // 2] == acts[len(acts) // 2:]:
            acts = acts[:len(acts) // 2]
        kwargs = dict(input_size=size, hidden_size=u, bidirectional=bidir, bias=ub,
                      reverse=go_back, return_sequences=rs, activations=[list(a) for a in acts],
                      **extra_seen[0])
        if merge == "mul":
            kwargs["merge_mode"] = "mul"
        # Keras' output at a masked step: zeros when zero_output_for_mask (which
        # Bidirectional forces to return_sequences), else the previous output.
        zero_out = rs if bidir else bool(fc.get("zero_output_for_mask", False))
        specs.append({"kind": kind, "name": name, "kwargs": kwargs, "weights": weights,
                      "merge": merge if merge in ("sum", "ave") else None,
                      "masked": mask_on, "zero_output": zero_out})
        desc = (f"{where}: {rcls} units={u}, use_bias={ub}, return_sequences={rs}"
                + (f", go_backwards=True" if go_back else "")
                + (f", merge_mode={merge}" if bidir else "")
                + f", activations={[a[0] for a in acts]}")
        if "linear_before_reset" in extra_seen[0]:
            desc += f", reset_after={extra_seen[0]['linear_before_reset']}"
        ctx.read.append(desc)
        size = (2 if bidir and merge in ("concat", None) else 1) * u
        seq = rs
        if not rs:
            mask_on = False          # Keras: no mask after the last step is taken
    if not specs:
        raise UnsupportedError("the model has no layer drnn can run")
    if not any(s["kind"] in ("RNN", "LSTM", "GRU") for s in specs):
        ctx.inferred.append("the model has no recurrent layer")
    specs = _postprocess(specs, ctx)
    layers = []
    for s in specs:
        cls = {"Embedding": Embedding, "Dense": Dense, "RNN": RNN, "LSTM": LSTM, "GRU": GRU}[s["kind"]]
        try:
            layers.append(cls(**s["kwargs"], weights=s["weights"]))
        except ShapeError as e:
            raise FormatError(f"layer {s['name']!r}: {e}") from None
    try:
        model = DRNN(layers)
    except ShapeError as e:
        raise FormatError(str(e)) from None
    source = {"format": src.format, "file": path, "keras_version": src.version,
              "read": src.read + ctx.read, "inferred": ctx.inferred,
              "defaulted": ctx.defaulted}
    model.source = source
    if masking:
        source["masking"] = masking
        if ignore_masking:
            source["defaulted"].append("masking ignored (ignore_masking=True): "
                                       + ", ".join(m["layer"] for m in masking))
            masking = []
    masked = [i for i, s in enumerate(specs) if s["kind"] in ("RNN", "LSTM", "GRU")
              and s.get("masked") and masking]
    zero_input = any(m["type"] == "Masking" for m in masking)
    if not split and not masked and not zero_input:
        return model
    mask = None
    if masking:
        m = masking[0]
        mask = ("value", m["mask_value"]) if m["type"] == "Masking" else ("zero", None)
        source["read"].append(
            f"masking: {m['type']} ({m['layer']!r})"
            + (f", mask_value {m['mask_value']}" if m["type"] == "Masking" else "")
            + (f"; masked steps skipped by {len(masked)} recurrent layer(s)" if masked
               else "; no recurrent layer sees the mask"))
    last = fill = None
    if masked:
        last = masked[-1]
        sp, layer = specs[last], layers[last]
        if layer.return_sequences:
            fill = "zero" if sp["zero_output"] or layer.bidirectional else "previous"
        else:
            fill = "zero_if_last_masked" if sp["zero_output"] else "state"
        source["read"].append(
            f"masked steps of {sp['name']!r} output " + {
                "zero": "zeros (zero_output_for_mask)",
                "previous": "the previous step's output (Keras' default)",
                "zero_if_last_masked": "zeros when the last step is masked "
                                       "(zero_output_for_mask)",
                "state": "the state after the last unmasked step"}[fill])
    if split:
        source["read"].append(f"layer {split!r}: merge_mode None, predict() returns the pair "
                              "(forward, backward)")
    return KerasModel(model, mask=mask, zero_input=zero_input, last_masked=last, fill=fill,
                      split=bool(split))


def _postprocess(specs, ctx):
    """Fold Bidirectional sum/ave merges, then fuse identical recurrent layers into stacks."""
    out = []
    for i, s in enumerate(specs):
        out.append(s)
        if not s.get("merge"):
            continue
        u = s["kwargs"]["hidden_size"]
        scale = 0.5 if s["merge"] == "ave" else 1.0
        nxt = specs[i + 1] if i + 1 < len(specs) else None
        if nxt is not None and nxt["kind"] == "Dense":
            w = nxt["weights"]["weight"]
            nxt["weights"]["weight"] = np.ascontiguousarray(np.hstack([w, w]) * np.float32(scale))
            nxt["kwargs"]["in_features"] = 2 * u
            ctx.inferred.append(f"layer {s['name']!r}: merge_mode {s['merge']} folded into the "
                                f"input weights of {nxt['name']!r}")
        elif nxt is not None and nxt["kind"] in ("RNN", "LSTM", "GRU"):
            for key in [k for k in nxt["weights"] if k.startswith("weight_ih")]:
                w = nxt["weights"][key]
                nxt["weights"][key] = np.ascontiguousarray(np.hstack([w, w]) * np.float32(scale))
            nxt["kwargs"]["input_size"] = 2 * u
            ctx.inferred.append(f"layer {s['name']!r}: merge_mode {s['merge']} folded into the "
                                f"input weights of {nxt['name']!r}")
        else:
            eye = np.eye(u, dtype=np.float32) * np.float32(scale)
            out.append({"kind": "Dense", "name": s["name"] + "/merge",
                        "kwargs": {"in_features": 2 * u, "out_features": u,
                                   "activation": "identity"},
                        "weights": {"weight": np.hstack([eye, eye])}})
            ctx.inferred.append(f"layer {s['name']!r}: merge_mode {s['merge']} expressed as an "
                                "exact Dense [I, I]" + (" / 2" if scale != 1.0 else ""))
    fused = []
    for s in out:
        prev = fused[-1] if fused else None
        if prev is not None and s["kind"] == prev["kind"] and s["kind"] in ("RNN", "LSTM", "GRU"):
            pk, sk = prev["kwargs"], s["kwargs"]
            same = all(pk.get(k) == sk[k] for k in sk
                       if k not in ("input_size", "return_sequences", "merge_mode"))
            if same and pk["return_sequences"] and not pk["reverse"] and not prev.get("merge") \
                    and "merge_mode" not in pk and prev.get("masked") == s.get("masked"):
                n = pk.get("num_layers", 1)
                for key, val in s["weights"].items():
                    prev["weights"][key.replace("_l0", f"_l{n}")] = val
                pk["num_layers"] = n + 1
                pk["return_sequences"] = sk["return_sequences"]
                if "merge_mode" in sk:
                    pk["merge_mode"] = sk["merge_mode"]
                prev["name"] = prev["name"] + "+" + s["name"]
                prev["merge"] = s.get("merge")
                prev["zero_output"] = s.get("zero_output")
                continue
        fused.append(s)
    return fused


# ---------------------------------------------------------------------------
# Keras-only behaviour on top of a DRNN: masking, merge_mode=None
# ---------------------------------------------------------------------------

class KerasModel:
    """A Keras model whose behaviour goes beyond a plain drnn stack.

    ``model`` is the DRNN that does the computing (framework-neutral); this
    wrapper adds what only Keras does:

    * masking (a leading Masking layer, or Embedding(mask_zero=True)): each
      row's unmasked steps are gathered into a left-packed sequence and run
      through the stack up to its last recurrent layer with ``lengths=`` --
      exact, because Keras leaves the state unchanged at a masked step, in
      both directions -- and the outputs are scattered back to their time
      positions.  A masked step's output follows Keras: zeros under
      ``zero_output_for_mask`` (always for Bidirectional with
      return_sequences), else the previous step's output (zeros before the
      first unmasked step); the Dense layers after the last recurrent layer
      see those values.  With return_sequences=False the output is the state
      after the last unmasked step (zeros for a fully masked row).  Masking
      also zeroes the masked input steps, as Keras' layer does.
    * Bidirectional merge_mode=None as the last layer: predict() returns the
      pair (forward, backward) -- each what predict would return for it --
      as Keras returns a list of two outputs.

    ``predict`` takes DRNN.predict's arguments; ``lengths=`` marks the steps
    past each length as masked too (their outputs are zero, as in
    DRNN.predict).  The mask is computed from the input, so it cannot be
    saved in drnn's own format: ``save`` and ``stream`` refuse.
    """

    def __init__(self, model, *, mask=None, zero_input=False, last_masked=None, fill=None,
                 split=False):
        self.model = model
        self.mask = mask                 # None, ("value", mask_value) or ("zero", None)
        self.zero_input = bool(zero_input)
        self.last_masked = last_masked   # index of the last recurrent layer that sees the mask
        self.fill = fill                 # what that layer outputs at a masked step
        self.split = bool(split)

    # -- description (the DRNN's) -------------------------------------------
    source = property(lambda self: self.model.source)
    layers = property(lambda self: self.model.layers)
    takes_tokens = property(lambda self: self.model.takes_tokens)
    input_size = property(lambda self: self.model.input_size)
    returns_sequences = property(lambda self: self.model.returns_sequences)
    num_parameters = property(lambda self: self.model.num_parameters)

    @property
    def output_size(self):
        """Features per output (each of the pair's, with merge_mode=None)."""
        size = self.model.output_size
        return size // 2 if self.split else size

    def config(self):
        return self.model.config()

    def __repr__(self):
        extra = []
        if self.mask is not None:
            extra.append("mask_zero" if self.mask[0] == "zero" else f"mask_value={self.mask[1]!r}")
        if self.split:
            extra.append("outputs=(forward, backward)")
        inner = repr(self.model).replace("\n", "\n  ")
        return f"KerasModel({inner}, {', '.join(extra)})"

    def _why(self):
        return ("Keras masking (computed from the input)" if self.mask is not None
                else "merge_mode=None's pair of outputs")

    def to_drnn(self):
        """There is no DRNN that computes this model: raises UnsupportedError saying why."""
        raise UnsupportedError(
            f"drnn's format cannot hold {self._why()}; load the Keras file with drnn.load "
            "instead" + (", or convert the stack without masking (ignore_masking=True, "
                         "drnn convert --ignore-masking; exact for inputs without masked "
                         "steps)" if self.mask is not None else
                         ", or save .model (the two directions concatenated)"))

    def save(self, path):
        self.to_drnn()

    def stream(self, batch_size=1):
        if self.mask is not None:
            raise UnsupportedError("stream(): a model with Keras masking runs whole sequences "
                                   "only (use predict)")
        return self.model.stream(batch_size)

    # -- running -------------------------------------------------------------
    def _mask(self, batch, lens):
        B, T = batch.shape[:2]
        if self.mask is None:
            mask = np.ones((B, T), bool)
        elif self.mask[0] == "zero":
            mask = batch != 0
        else:
            mask = np.any(batch != np.float32(self.mask[1]), axis=-1)
        if lens is not None:
            mask &= np.arange(T)[None, :] < lens[:, None]
        return mask

    def predict(self, x, lengths=None, initial_state=None, return_state=False, num_threads=None):
        """Run the model as Keras does (see the class docstring)."""
        m = self.model
        batch, lens, form, list_lens = m._prepare(x, lengths)
        B = batch.shape[0]
        states = m._prepare_state(initial_state, B, form == "single")
        if self.mask is not None:
            mask = self._mask(batch, lens)
            if self.zero_input:
                batch = np.where(mask[..., None], batch, np.float32(0))
        if self.last_masked is None:
            value, final = self._plain(batch, lens, states, num_threads)
        else:
            value, final = self._masked(batch, mask, states, num_threads)
            if lens is not None and value.ndim == 3:
                value[np.arange(value.shape[1])[None, :] >= lens[:, None]] = 0.0
        outs = [value[..., :value.shape[-1] // 2], value[..., value.shape[-1] // 2:]] \
            if self.split else [value]
        res = []
        for v in outs:
            if form == "single":
                res.append(v[0])
            elif form == "list":
                res.append([v[i, :n] if v.ndim == 3 else v[i] for i, n in enumerate(list_lens)])
            else:
                res.append(v)
        out = tuple(res) if self.split else res[0]
        if not return_state:
            return out
        user = []
        for st in final:
            if form == "single":
                st = [s[:, 0, :] for s in st]
            user.append(st[0] if len(st) == 1 else tuple(st))
        return out, (user[0] if len(user) == 1 else user)

    @staticmethod
    def _user_state(states):
        """Per-layer [h, (c)] lists -> DRNN.predict's initial_state argument."""
        if all(s is None for s in states):
            return None
        entries = [s[0] if len(s) == 1 else tuple(s) for s in states]
        return entries[0] if len(entries) == 1 else entries

    @staticmethod
    def _state_list(user, n):
        """DRNN.predict's returned state -> per-layer [h, (c)] lists."""
        entries = [user] if n == 1 else list(user)
        return [list(e) if isinstance(e, tuple) else [e] for e in entries]

    def _plain(self, batch, lens, states, num_threads):
        n_rec = sum(1 for l in self.model.layers if hasattr(l, "state_shapes"))
        y, st = self.model.predict(batch, lengths=lens, initial_state=self._user_state(states),
                                   return_state=True, num_threads=num_threads) \
            if n_rec else (self.model.predict(batch, lengths=lens, num_threads=num_threads), [])
        return y, (self._state_list(st, n_rec) if n_rec else [])

    def _masked(self, batch, mask, states, num_threads):
        from ..model import DRNN
        layers = self.model.layers
        head = DRNN(layers[:self.last_masked + 1])
        tail = DRNN(layers[self.last_masked + 1:]) if self.last_masked + 1 < len(layers) else None
        last = layers[self.last_masked]
        B, T = mask.shape
        n = mask.sum(axis=1)
        rows = np.flatnonzero(n > 0)
        rec = [l for l in layers if hasattr(l, "state_shapes")]
        # final states: fully masked rows keep their initial state
        final = []
        for layer, st in zip(rec, states):
            shapes = layer.state_shapes
            final.append([np.array(st[j], np.float32, copy=True) if st is not None
                          else np.zeros((LD, B, W), np.float32)
                          for j, (LD, W) in enumerate(shapes)])
        H = last.output_size
        if tail is None:
            zero_out = np.zeros(self.model.output_size, np.float32)
        else:
            zero_out = np.asarray(tail.predict(np.zeros((1, H), np.float32),
                                               num_threads=num_threads))[0]
        seq = last.return_sequences
        out = np.empty((B, T, zero_out.size) if seq else (B, zero_out.size), np.float32)
        out[...] = zero_out
        if rows.size:
            Tp = int(n.max())
            order = np.argsort(~mask[rows], axis=1, kind="stable")[:, :Tp]
            packed = np.take_along_axis(batch[rows], order if batch.ndim == 2 else order[..., None],
                                        axis=1)
            nr = n[rows].astype(np.int32)
            init = self._user_state([None if s is None else [a[:, rows] for a in s]
                                     for s in states])
            y, st = head.predict(packed, lengths=None if nr.min() == Tp else nr,
                                 initial_state=init, return_state=True, num_threads=num_threads)
            for dst, src in zip(final, self._state_list(st, len(rec))):
                for d, s_ in zip(dst, src):
                    d[:, rows] = s_
            if tail is not None:
                y = np.asarray(tail.predict(y, num_threads=num_threads))
            if seq:
                mr = mask[rows]
                k = np.cumsum(mr, axis=1) - 1                      # packed index of the step,
                got = np.take_along_axis(y, np.maximum(k, 0)[..., None], axis=1)   # or the last before
                keep = mr if self.fill == "zero" else (k >= 0)
                out[rows] = np.where(keep[..., None], got, zero_out)
            else:
                keep = np.ones(rows.size, bool)
                if self.fill == "zero_if_last_masked":
                    keep = mask[rows, 0 if last.reverse else T - 1]
                out[rows] = np.where(keep[:, None], y, zero_out)
        return out, final
