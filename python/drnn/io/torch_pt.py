"""PyTorch checkpoints (.pt / .pth, the torch.save zip format) without torch.

How the parts fit:

1. ``_open_archive``   checks the container: an empty file, the pre-1.6
   legacy format (a raw pickle that starts with torch's magic number), a
   TorchScript archive (``constants.pkl`` / ``code/``), a truncated or
   non-zip file and a zip without ``<top>/data.pkl`` are each refused with a
   FormatError that names the file and says what to do.
2. ``_Unpickler``      reads ``data.pkl`` with the pure-Python pickle machine
   and an allow-list: ``collections.OrderedDict``, torch's tensor and
   parameter rebuild functions (replaced by our own, which only record a
   view), and the storage types (mapped to numpy dtypes).  Every other
   global -- ``os.system``, ``builtins.eval``, a pickled nn.Module -- is
   refused *before* anything is called; BUILD is allowed only on dicts (the
   state_dict's ``_metadata``) and the copyreg extension opcodes are refused.
   Nothing from the file is ever executed.
3. ``_Storage`` / ``_Tensor``  persistent ids ``('storage', type, key,
   location, numel)`` become lazy storages: the entry ``<top>/data/<key>``
   must exist, be stored uncompressed (as torch.save writes it) and hold at
   least numel elements -- checked from the zip directory before anything is
   allocated.  A tensor is a bounds-checked (offset, size, stride) view of
   one, materialised with ``numpy.lib.stride_tricks.as_strided`` and copied,
   only when the architecture uses it (optimizer state is never copied).
4. ``_find_state_dict`` accepts a bare state_dict or a wrapper dict
   ({"state_dict" | "model_state_dict" | "model": ..., other entries}).
5. ``_infer_layers``   groups keys by module prefix in registration order
   and turns each module into a drnn layer (rules in ``load_pt``'s doc).

drnn never imports torch; this module does not either.
"""
import collections
import os
import pickle
import re
import zipfile

import numpy as np

from ..errors import DrnnError, FormatError, UnsupportedError

__all__ = ["load_pt"]

# torch's legacy (pre-1.6) files start with pickle.dumps(MAGIC_NUMBER, protocol=2).
_LEGACY_MAGIC = (0x1950a86a20f9469cfc6c).to_bytes(10, "little")
_MAX_PICKLE = 256 * 1024 * 1024
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_RESAVE = ("re-save it with torch >= 1.6 as a state_dict: "
           "torch.save(model.state_dict(), path)")

# torch storage type name -> (numpy dtype (little-endian), stored as bfloat16 bits)
_STORAGES = {
    "FloatStorage": ("<f4", False), "DoubleStorage": ("<f8", False),
    "HalfStorage": ("<f2", False), "BFloat16Storage": ("<u2", True),
    "LongStorage": ("<i8", False), "IntStorage": ("<i4", False),
    "ShortStorage": ("<i2", False), "CharStorage": ("i1", False),
    "ByteStorage": ("u1", False), "BoolStorage": ("?", False),
    "ComplexFloatStorage": ("<c8", False), "ComplexDoubleStorage": ("<c16", False),
    "UntypedStorage": ("u1", False),
}


class _StorageType:
    """What the pickle's `torch.FloatStorage` (etc.) global resolves to: a tag, not callable."""

    def __init__(self, name):
        self.name = name
        code, self.bf16 = _STORAGES[name]
        self.dtype = np.dtype(code)


class _TypeTag:
    """`torch.Tensor` / `torch.nn.Parameter` as a new_type argument: a tag, not callable."""

    def __init__(self, name):
        self.name = name


class _Storage:
    """A storage entry of the archive, validated against the zip directory, read lazily."""

    def __init__(self, reader, key, stype, numel):
        self.reader, self.key, self.stype, self.numel = reader, key, stype, numel
        self._array = None

    def array(self):
        if self._array is None:
            self._array = self.reader.read_storage(self)
        return self._array


class _Tensor:
    """A tensor recorded by _rebuild_tensor_v2: storage + (offset, size, stride) in elements."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, size, stride

    @property
    def dtype_name(self):
        return "bfloat16" if self.storage.stype.bf16 else str(self.storage.stype.dtype)

    def numpy(self):
        """A fresh, native-byte-order array (bfloat16 widened to float32)."""
        count = 1
        for s in self.shape:
            count *= s
        st = self.storage
        dt = st.stype.dtype
        if count == 0:
            out = np.zeros(self.shape, dt.newbyteorder("="))
        else:
            if count > max(st.numel, 1):
                raise FormatError(f"{st.reader.path}: a tensor of shape {self.shape} views a storage "
                                  f"of {st.numel} elements (overlapping/broadcast view); not "
                                  "a state_dict parameter")
            buf = st.array()
            view = np.lib.stride_tricks.as_strided(
                buf[self.offset:], shape=self.shape,
                strides=tuple(s * dt.itemsize for s in self.stride), writeable=False)
            out = np.array(view, dtype=dt.newbyteorder("="), order="C", copy=True)
        if st.stype.bf16:
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _int(v):
    return type(v) is int


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Our stand-in for torch._utils._rebuild_tensor_v2: validates and records a view."""
    if not isinstance(storage, _Storage):
        raise FormatError("_rebuild_tensor_v2: the first argument is not a storage")
    where = f"{storage.reader.path}: tensor on storage {storage.key!r}"
    if not _int(storage_offset) or storage_offset < 0:
        raise FormatError(f"{where}: bad storage offset {storage_offset!r}")
    if (not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list))
            or len(size) != len(stride) or len(size) > 64
            or not all(_int(s) and s >= 0 for s in size)
            or not all(_int(s) and s >= 0 for s in stride)):
        raise FormatError(f"{where}: bad size {size!r} / stride {stride!r}")
    size, stride = tuple(size), tuple(stride)
    if all(size):
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel:
            raise FormatError(f"{where}: size {size}, stride {stride}, offset {storage_offset} "
                              f"reach element {last}, but the storage holds {storage.numel}")
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, _Tensor):
        raise FormatError("_rebuild_parameter: the data is not a tensor")
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if func is not _rebuild_tensor_v2 or not isinstance(new_type, _TypeTag) \
            or not isinstance(args, tuple):
        raise FormatError("_rebuild_from_type_v2: only plain tensors and parameters are allowed")
    return func(*args)


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TypeTag("torch.Tensor"),
    ("torch.nn.parameter", "Parameter"): _TypeTag("torch.nn.Parameter"),
}
for _name in _STORAGES:
    _ALLOWED[("torch", _name)] = _StorageType(_name)


class _Unpickler(pickle._Unpickler):
    """The pure-Python unpickler with an allow-list; see the module docstring."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, reader):
        super().__init__(file, encoding="utf-8")
        self.reader = reader

    def find_class(self, module, name):
        obj = _ALLOWED.get((module, name))
        if obj is None:
            hint = ""
            if (module, name) == ("torch.storage", "_load_from_bytes"):
                hint = " (a storage pickled with the legacy serializer)"
            elif module.startswith("torch.nn") or module == "__main__":
                hint = (" (a whole pickled model; drnn reads state_dicts only: " + _RESAVE + ")")
            raise FormatError(f"{self.reader.path}: data.pkl references the global "
                              f"{module}.{name}{hint}; drnn only admits state_dict tensors and "
                              "plain containers, and runs nothing from the file")
        return obj

    def persistent_load(self, pid):
        return self.reader.storage(pid)

    def _refuse_ext(self):
        raise FormatError(f"{self.reader.path}: data.pkl uses the copyreg extension registry "
                          "(EXT opcodes); refused")

    def _load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) not in (dict, collections.OrderedDict) or not isinstance(state, dict):
            raise FormatError(f"{self.reader.path}: data.pkl sets the state of a "
                              f"{type(inst).__name__}; only a state_dict's _metadata is allowed")
        # The state_dict's _metadata (module versions): not needed, dropped.

    dispatch[pickle.BUILD[0]] = _load_build
    for _op in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = lambda self: self._refuse_ext()


class _Archive:
    """The torch.save zip: its records and storages."""

    def __init__(self, path, zf, top):
        self.path, self.zf, self.top = path, zf, top
        self.byteorder = "little"
        self.storages = {}
        self.size = os.path.getsize(path)

    def record(self, name, limit):
        info = self._info(self.top + name, name)
        if info.file_size > limit:
            raise FormatError(f"{self.path}: record {name!r} declares {info.file_size} bytes, "
                              f"more than the {limit} allowed")
        return self._read(info, name)

    def _info(self, full, name):
        try:
            info = self.zf.getinfo(full)
        except KeyError:
            raise FormatError(f"{self.path}: the archive has no record {name!r} "
                              f"(expected {full!r})") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise FormatError(f"{self.path}: record {name!r} is compressed; torch.save writes "
                              "records uncompressed (the archive was repacked): " + _RESAVE)
        if info.file_size > self.size:
            raise FormatError(f"{self.path}: record {name!r} declares {info.file_size} bytes, "
                              f"more than the whole file ({self.size}); truncated or corrupt")
        return info

    def _read(self, info, name):
        try:
            return self.zf.read(info)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
            raise FormatError(f"{self.path}: record {name!r} cannot be read ({e}); "
                              "the file is truncated or corrupt") from None

    def storage(self, pid):
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
                or not _int(pid[4]) or pid[4] < 0):
            raise FormatError(f"{self.path}: data.pkl has an unexpected persistent id {pid!r}; "
                              "expected ('storage', <StorageType>, key, location, numel)")
        _, stype, key, _location, numel = pid
        old = self.storages.get(key)
        if old is not None:
            if old.stype is not stype or old.numel != numel:
                raise FormatError(f"{self.path}: storage {key!r} is declared twice with "
                                  "different types or sizes")
            return old
        name = f"data/{key}"
        info = self._info(self.top + name, name)
        need = numel * stype.dtype.itemsize
        if info.file_size < need:
            raise FormatError(f"{self.path}: storage {name!r} holds {info.file_size} bytes, "
                              f"shorter than the declared {numel} x {stype.name} "
                              f"({need} bytes); the file is truncated or corrupt")
        st = _Storage(self, key, stype, numel)
        self.storages[key] = st
        return st

    def read_storage(self, st):
        name = f"data/{st.key}"
        raw = self._read(self._info(self.top + name, name), name)
        dt = st.stype.dtype
        if self.byteorder == "big" and dt.itemsize > 1:
            dt = dt.newbyteorder(">")
        need = st.numel * dt.itemsize
        if len(raw) < need:
            raise FormatError(f"{self.path}: storage {name!r} holds {len(raw)} bytes, "
                              f"shorter than the declared {need}")
        return np.frombuffer(raw, dtype=dt, count=st.numel)


def _open_archive(path):
    """-> (_Archive, list of 'read' notes); refuses everything that is not a torch.save zip."""
    size = os.path.getsize(path)
    if size == 0:
        raise FormatError(f"{path}: the file is empty (0 bytes); expected a PyTorch checkpoint "
                          "written by torch.save")
    with open(path, "rb") as f:
        head = f.read(32)
    if _LEGACY_MAGIC in head[:16] and head[:1] == b"\x80":
        raise FormatError(f"{path}: a PyTorch checkpoint in the legacy (pre-1.6) format, a raw "
                          "pickle that drnn does not read; " + _RESAVE
                          + " (the default zip format)")
    if not head.startswith(b"PK"):
        what = "a bare pickle, not torch.save's zip format" if head[:1] == b"\x80" else \
            f"starts with {head[:8]!r}"
        raise FormatError(f"{path}: not a PyTorch checkpoint ({what}); expected the zip archive "
                          "torch.save writes (magic bytes 'PK')")
    try:
        zf = zipfile.ZipFile(path)
        names = zf.namelist()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
        raise FormatError(f"{path}: a truncated or corrupt zip archive ({e}); expected a "
                          "complete torch.save checkpoint") from None
    if any(n.endswith("/constants.pkl") or n == "constants.pkl" or "/code/" in n
           or n.startswith("code/") for n in names):
        zf.close()
        raise FormatError(f"{path}: a TorchScript archive (torch.jit.save); drnn reads "
                          "state_dicts, not compiled programs: load it in torch and "
                          "save the weights with torch.save(module.state_dict(), path)")
    tops = [n[:-len("data.pkl")] for n in names
            if n.endswith("data.pkl") and n.count("/") <= 1 and n.rsplit("/", 1)[-1] == "data.pkl"]
    if not tops:
        zf.close()
        raise FormatError(f"{path}: a zip archive without data.pkl; not a torch.save checkpoint")
    if len(set(tops)) > 1:
        zf.close()
        raise FormatError(f"{path}: the archive holds several data.pkl records {sorted(tops)}; "
                          "expected one top folder")
    arc = _Archive(path, zf, tops[0])
    read = [f"torch.save zip archive, record folder {tops[0] or '(none)'!r}"]
    if arc.top + "byteorder" in names:
        try:
            order = arc.record("byteorder", 16).decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise FormatError(f"{path}: byteorder record says {order!r}; expected little "
                                  "or big")
        except FormatError:
            zf.close()
            raise
        arc.byteorder = order
    read[0] += f", byteorder {arc.byteorder}"
    return arc, read


def _unpickle(arc):
    import io
    raw = arc.record("data.pkl", _MAX_PICKLE)
    try:
        return _Unpickler(io.BytesIO(raw), arc).load()
    except FormatError:
        raise
    except RecursionError:
        raise FormatError(f"{arc.path}: data.pkl nests too deeply") from None
    except Exception as e:          # nothing ran: only allow-listed callables exist
        raise FormatError(f"{arc.path}: data.pkl is corrupt or not a state_dict pickle "
                          f"({type(e).__name__}: {e})") from None


def _is_state_dict(obj):
    return (isinstance(obj, dict) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, _Tensor) for k, v in obj.items()))


def _find_state_dict(path, obj, read):
    if _is_state_dict(obj):
        read.append("a bare state_dict")
        return obj
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if _is_state_dict(inner):
                others = [repr(k) for k in obj if k != key]
                read.append(f"state_dict under the checkpoint key {key!r}"
                            + (f"; ignored entries: {', '.join(others)}" if others else ""))
                return inner
            if isinstance(inner, dict) and inner:
                bad = [k for k, v in inner.items() if not isinstance(v, _Tensor)]
                raise FormatError(f"{path}: checkpoint entry {key!r} is not a state_dict: "
                                  f"entries {bad[:5]!r} are not tensors")
        if not obj:
            raise FormatError(f"{path}: the checkpoint is an empty dict; no weights")
        tensors = [k for k, v in obj.items() if isinstance(v, _Tensor)]
        if tensors:
            others = [k for k in obj if not isinstance(obj[k], _Tensor)]
            raise FormatError(f"{path}: the checkpoint mixes tensors with other entries "
                              f"{others[:5]!r}; expected a state_dict or a wrapper with one of "
                              f"the keys {', '.join(_WRAPPER_KEYS)}")
        raise FormatError(f"{path}: no state_dict found; top-level keys are "
                          f"{[k for k in list(obj)[:10]]!r}, expected tensors or one of the "
                          f"keys {', '.join(_WRAPPER_KEYS)}")
    raise FormatError(f"{path}: the checkpoint holds a {type(obj).__name__}, not a state_dict "
                      f"(a dict of tensors) or a wrapper dict; " + _RESAVE)


# ---------------------------------------------------------------------------
# architecture inference
# ---------------------------------------------------------------------------

_REC_RE = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")
_EMB_RE = re.compile(r"(^|[._])(emb|embed|embeds|embedding|embeddings|"
                     r"word_embeddings?|tok_emb|token_embedding|encoder_emb|wte)$")
_LIN_RE = re.compile(r"(linear|fc|proj|dense)[^.]*$")
_CELLS = {4: "LSTM", 3: "GRU", 1: "RNN"}


def _group(path, sd):
    """Keys -> [(module prefix, {param: _Tensor})] in registration order, contiguous."""
    groups, seen = [], set()
    for key, t in sd.items():
        prefix, _, param = key.rpartition(".")
        if groups and groups[-1][0] == prefix:
            groups[-1][1][param] = t
            continue
        if prefix in seen:
            raise FormatError(f"{path}: the keys of module {prefix or '(top level)'!r} are not "
                              f"contiguous ({key!r} reappears after other modules); not a "
                              "state_dict in registration order")
        seen.add(prefix)
        groups.append((prefix, {param: t}))
    return groups


def _describe(prefix, param, t):
    name = f"{prefix}.{param}" if prefix else param
    return f"{name} {tuple(t.shape)} {t.dtype_name}"


def _kind(path, prefix, params):
    """'recurrent' | 'linear' | 'weight' (a lone 2-D weight: Linear or Embedding)."""
    mod = prefix or "(top level)"
    if all(_REC_RE.match(p) for p in params):
        return "recurrent"
    if "weight" in params and set(params) <= {"weight", "bias"}:
        w = params["weight"]
        if len(w.shape) != 2:
            raise FormatError(f"{path}: module {mod!r}: weight has shape {w.shape}; drnn reads "
                              "2-D weights (Linear (out, in), Embedding (num, dim)) only")
        if "bias" in params:
            b = params["bias"]
            if b.shape != (w.shape[0],):
                raise FormatError(f"{path}: module {mod!r}: bias has shape {b.shape}, expected "
                                  f"({w.shape[0]},) for a Linear weight {w.shape}")
            return "linear"
        return "weight"
    names = sorted(p for p in params if not _REC_RE.match(p)) if any(
        _REC_RE.match(p) for p in params) else sorted(params)
    raise FormatError(f"{path}: unknown keys in module {mod!r}: "
                      f"{', '.join(f'{prefix}.{p}' if prefix else p for p in names)}; "
                      "drnn reads RNN/LSTM/GRU (weight_ih_l0, weight_hh_l0, bias_ih_l0, "
                      "bias_hh_l0, weight_hr_l0, _reverse), Linear (weight, bias) and "
                      "Embedding (weight) modules")


def _input_features(kind, params):
    if kind == "recurrent":
        w = params.get("weight_ih_l0")
        return w.shape[1] if w is not None and len(w.shape) == 2 else None
    return params["weight"].shape[1]


def _recurrent(path, prefix, params, nonlinearity, return_sequences, notes):
    from ..layers import GRU, LSTM, RNN
    mod = prefix or "(top level)"
    full = (lambda p: f"{prefix}.{p}" if prefix else p)
    layers_seen, reverse = set(), False
    for p in params:
        m = _REC_RE.match(p)
        layers_seen.add(int(m.group(2)))
        reverse |= bool(m.group(3))
    L = max(layers_seen) + 1
    if layers_seen != set(range(L)):
        raise FormatError(f"{path}: module {mod!r}: layer indices {sorted(layers_seen)} are not "
                          f"0..{L - 1}")
    for k in ("weight_ih_l0", "weight_hh_l0"):
        if k not in params:
            raise FormatError(f"{path}: module {mod!r}: missing {full(k)}; shapes inconsistent "
                              "with a PyTorch RNN/LSTM/GRU")
        if len(params[k].shape) != 2:
            raise FormatError(f"{path}: {full(k)} has shape {params[k].shape}; expected 2-D")
    wih, whh = params["weight_ih_l0"].shape, params["weight_hh_l0"].shape
    whr = params.get("weight_hr_l0")
    if whr is not None:
        if len(whr.shape) != 2:
            raise FormatError(f"{path}: {full('weight_hr_l0')} has shape {whr.shape}; expected "
                              "2-D (proj_size, hidden_size)")
        P, H = whr.shape
        if whh[0] != 4 * H or whh[1] != P:
            raise FormatError(f"{path}: module {mod!r}: weight_hr_l0 {whr.shape} (a projection, "
                              f"LSTM only) needs weight_hh_l0 of shape ({4 * H}, {P}), got {whh}; "
                              "shapes inconsistent with a PyTorch LSTM")
        G = 4
    else:
        P, H = 0, whh[1]
        if H < 1 or whh[0] % H or whh[0] // H not in _CELLS:
            raise FormatError(f"{path}: {full('weight_hh_l0')} has shape {whh}: the rows are not "
                              f"1, 3 or 4 times the hidden size {H} (RNN, GRU, LSTM); shapes "
                              "inconsistent with a PyTorch RNN/LSTM/GRU")
        G = whh[0] // H
    kind = _CELLS[G]
    bias = "bias_ih_l0" in params or "bias_hh_l0" in params
    D = 2 if reverse else 1
    desc = (f"{mod}: {kind} (weight_hh_l0 {whh}: {G} gate block{'s' if G > 1 else ''} of "
            f"hidden_size {H}{f', weight_hr_l0 -> proj_size {P}' if P else ''}), "
            f"input_size {wih[1]}, {L} layer{'s' if L > 1 else ''} (_l0.._l{L - 1}), "
            f"{'bidirectional (_reverse keys)' if D == 2 else 'unidirectional'}, "
            f"{'with' if bias else 'without'} biases")
    notes["inferred"].append(desc)
    weights = {p: t.numpy() for p, t in params.items()}
    kw = dict(bidirectional=D == 2, bias=bias, return_sequences=return_sequences,
              weights=weights)
    try:
        if kind == "LSTM":
            layer = LSTM(wih[1], H, L, proj_size=P, **kw)
        elif kind == "GRU":
            layer = GRU(wih[1], H, L, **kw)
        else:
            layer = RNN(wih[1], H, L, nonlinearity=nonlinearity, **kw)
    except DrnnError as e:
        raise FormatError(f"{path}: module {mod!r}: {e}; shapes inconsistent with a PyTorch "
                          f"{kind}") from None
    return layer


def _is_rnn(params):
    """Does a recurrent module's weight_hh_l0 say RNN (square, no projection)?"""
    w = params.get("weight_hh_l0")
    return (w is not None and len(w.shape) == 2 and w.shape[0] == w.shape[1]
            and "weight_hr_l0" not in params)


def _layer_plan(path, groups):
    """Classify each module: 'recurrent' | 'linear' | 'embedding', with the reason for lone weights."""
    kinds = [_kind(path, prefix, params) for prefix, params in groups]
    plan = []
    for i, ((prefix, params), kind) in enumerate(zip(groups, kinds)):
        mod = prefix or "(top level)"
        if kind != "weight":
            plan.append((kind, None))
            continue
        V, E = params["weight"].shape
        named = bool(_EMB_RE.search(prefix.lower())) if prefix else False
        nxt = _input_features(kinds[i + 1], groups[i + 1][1]) if i + 1 < len(groups) else None
        if i > 0:
            if named:
                raise FormatError(f"{path}: module {mod!r} looks like an Embedding but is not the "
                                  "first module; drnn supports an Embedding only in front")
            plan.append(("linear", f"{mod}: Linear({E} -> {V}) without bias (a lone 2-D "
                                   "weight after the first module)"))
        elif named:
            if nxt is not None and nxt != E:
                raise FormatError(f"{path}: module {mod!r} is named like an Embedding, weight "
                                  f"({V}, {E}), but the next module takes {nxt} features")
            plan.append(("embedding", f"{mod}: Embedding({V}, {E}) (a lone 2-D weight, first, "
                                      "named like an embedding)"))
        elif nxt is None:
            plan.append(("linear", f"{mod}: Linear({E} -> {V}) without bias (a lone 2-D weight, "
                                   "the only module, not named like an embedding)"))
        elif nxt == E and nxt != V:
            plan.append(("embedding", f"{mod}: Embedding({V}, {E}) (a lone 2-D weight, first, "
                                      f"whose columns ({E}) match the next module's input)"))
        elif nxt == V and nxt != E:
            plan.append(("linear", f"{mod}: Linear({E} -> {V}) without bias (a lone 2-D weight, "
                                   f"first, whose rows ({V}) match the next module's input)"))
        elif nxt == V == E:
            if prefix and _LIN_RE.search(prefix.lower().rpartition(".")[2]):
                plan.append(("linear", f"{mod}: Linear({E} -> {V}) without bias (a lone square "
                                       "2-D weight, first, named like a Linear)"))
                continue
            raise FormatError(f"{path}: module {mod!r} has a square weight ({V}, {E}) and no "
                              "bias: it could be an Embedding or a bias-free Linear; rename the "
                              "module to 'embedding' (key 'embedding.weight') if it is an "
                              "Embedding, or to 'linear' / 'fc' / 'proj' if it is a Linear, "
                              "and re-save")
        else:
            plan.append(("linear", None))   # the chain check reports the mismatch
    return plan


def load_pt(path, *, nonlinearity="tanh", return_sequences=True, dense_activations=None):
    """Load a PyTorch checkpoint (torch.save zip, torch >= 1.6) into a drnn.DRNN, without torch.

    The file holds a state_dict -- bare, or in a wrapper dict under
    ``"state_dict"``, ``"model_state_dict"`` or ``"model"`` (other entries of
    the wrapper, e.g. epoch or optimizer state, are ignored; they must
    still consist of plain Python values and tensors).  Only allow-listed
    pickle globals are admitted (OrderedDict, tensor/parameter rebuilds,
    storage types); anything else, the legacy pre-1.6 format, TorchScript
    archives and broken files raise FormatError naming the file.

    Inference (keys grouped by module prefix, in state_dict = registration order;
    the modules are assumed to be chained in that order):

    * RNN/LSTM/GRU: keys ``weight_ih_l{k}``, ``weight_hh_l{k}``,
      ``bias_ih_l{k}``, ``bias_hh_l{k}``, ``weight_hr_l{k}`` (+ ``_reverse``).
      weight_hh_l0 is (G*H, H_out): without weight_hr, H = its columns and
      G = rows / H -> 4 LSTM, 3 GRU, 1 RNN (so a GRU(H), (3H, H), is never
      confused with an RNN(3H), (3H, 3H)).  weight_hr_l0 (P, H) -> LSTM with
      proj_size P (G must be 4).  Layers = highest k + 1; any ``_reverse`` key
      -> bidirectional; biases present -> bias=True.  input_size =
      weight_ih_l0's columns.
    * Linear: ``weight`` (out, in) with ``bias`` (out,) -> Dense.
    * A lone 2-D ``weight`` (V, E) is an Embedding only when it is the
      first module and either its module name ends in emb / embed /
      embedding(s) / word_embedding(s) / tok_emb / token_embedding / wte, or
      the next module takes E input features while V does not match; if the
      next module takes V features it is a bias-free Linear (E -> V); a
      square weight matching both is a Linear if its module name contains
      linear / fc / proj / dense, else refused as ambiguous.  A lone first
      weight with nothing after it is a Linear unless named like an
      embedding.  Anywhere else a lone weight is a bias-free Linear.
    * Any other key (LayerNorm, Conv, custom parameters, buffers) -> FormatError.

    What a state_dict does not store comes from the options:

    * nonlinearity: "tanh" (default) or "relu" for every nn.RNN stack, or a
      list with one entry per RNN stack.  (LSTM and GRU have fixed activations.)
    * return_sequences: True (default) returns the last recurrent stack's
      full sequence (batch, time, D*H_out); False returns its last step only,
      i.e. the last layer's final hidden state of each direction [fwd, bwd]
      (h_n, each sequence's own last step), as a head on ``out[:, -1]``
      (unidirectional) or ``h_n`` would see it.  Earlier stacks always return
      sequences.
    * dense_activations: None (default: every Dense is linear / identity) or
      a list with one name per Dense layer, in order: identity, relu, tanh,
      sigmoid or softmax (over the last axis).

    Input is batch-first (batch, time, features), whatever the module's
    batch_first; token ids (batch, time) when an Embedding is first.
    Returns a DRNN whose ``source`` records what was read from the file,
    inferred from it, and defaulted.
    """
    from ..layers import Dense, Embedding
    from ..model import DRNN

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file")
    if os.path.isdir(path):
        raise FormatError(f"{path}: is a directory, expected a PyTorch checkpoint file")
    arc, read = _open_archive(path)
    try:
        obj = _unpickle(arc)
        sd = _find_state_dict(path, obj, read)
        notes = {"read": read, "inferred": [], "defaulted": []}
        read.append(f"{len(sd)} tensors: " + "; ".join(
            _describe(*k.rpartition(".")[::2], t) for k, t in sd.items()))
        groups = _group(path, sd)
        plan = _layer_plan(path, groups)

        n_rnn = sum(1 for (kind, _), (_, p) in zip(plan, groups)
                    if kind == "recurrent" and _is_rnn(p))
        if isinstance(nonlinearity, str):
            nonlins = [nonlinearity] * n_rnn
        else:
            nonlins = list(nonlinearity)
            if len(nonlins) != n_rnn:
                raise UnsupportedError(f"{path}: nonlinearity lists {len(nonlins)} entries, the "
                                       f"checkpoint has {n_rnn} RNN stack(s)")
        for nl in nonlins:
            if nl not in ("tanh", "relu"):
                raise UnsupportedError(f"{path}: nonlinearity must be 'tanh' or 'relu', got {nl!r}")
        n_dense = sum(1 for kind, _ in plan if kind == "linear")
        if dense_activations is None:
            acts = ["identity"] * n_dense
        else:
            if isinstance(dense_activations, str):
                raise UnsupportedError(f"{path}: dense_activations is a list with one name per "
                                       f"Dense layer ({n_dense} here), got a string")
            acts = list(dense_activations)
            if len(acts) != n_dense:
                raise UnsupportedError(f"{path}: dense_activations lists {len(acts)} names, the "
                                       f"checkpoint has {n_dense} Linear layer(s)")
        rec_idx = [i for i, (kind, _) in enumerate(plan) if kind == "recurrent"]
        if not return_sequences and not rec_idx:
            raise UnsupportedError(f"{path}: return_sequences=False needs a recurrent layer; "
                                   "the checkpoint has none")

        layers, names = [], []
        rnn_i = dense_i = 0
        for i, ((prefix, params), (kind, why)) in enumerate(zip(groups, plan)):
            mod = prefix or "(top level)"
            names.append(mod)
            if why:
                notes["inferred"].append(why)
            try:
                if kind == "recurrent":
                    is_rnn = _is_rnn(params)
                    nl = nonlins[rnn_i] if is_rnn else "tanh"
                    rs = return_sequences or i != rec_idx[-1]
                    layer = _recurrent(path, prefix, params, nl, rs, notes)
                    if is_rnn:
                        rnn_i += 1
                        (notes["defaulted"] if nonlinearity == "tanh" else notes["read"]).append(
                            f"{mod}: nonlinearity {nl!r} (" + (
                                "not stored in a state_dict; pass nonlinearity='relu' if the "
                                "model used it)" if nonlinearity == "tanh" else
                                "from the caller's nonlinearity option)"))
                elif kind == "embedding":
                    layer = Embedding(*params["weight"].shape, weight=params["weight"].numpy())
                else:
                    w = params["weight"]
                    b = params.get("bias")
                    act = acts[dense_i]
                    dense_i += 1
                    layer = Dense(w.shape[1], w.shape[0], activation=act, weight=w.numpy(),
                                  bias=b.numpy() if b is not None else False)
                    if why is None:
                        notes["inferred"].append(f"{mod}: Linear({w.shape[1]} -> {w.shape[0]}) "
                                                 f"{'with' if b is not None else 'without'} bias")
                    if dense_activations is None:
                        notes["defaulted"].append(f"{mod}: no activation after this Linear "
                                                  "(pass dense_activations= to set one)")
                    else:
                        notes["read"].append(f"{mod}: activation {layer.activation!r} (from the "
                                             "caller's dense_activations option)")
            except FormatError:
                raise
            except DrnnError as e:
                if isinstance(e, UnsupportedError) and kind == "linear":
                    raise UnsupportedError(f"{path}: module {mod!r}: {e}") from None
                raise FormatError(f"{path}: module {mod!r}: {e}") from None
            layers.append(layer)

        if rec_idx:
            last = names[rec_idx[-1]]
            (notes["defaulted"] if return_sequences else notes["read"]).append(
                f"{last}: " + ("returns the full sequence (return_sequences=True, the default)"
                               if return_sequences else
                               "returns the last step only (the caller's return_sequences=False)"))
        notes["defaulted"].append("modules chained in state_dict (registration) order; "
                                  "a custom forward() is not visible in a state_dict")
        notes["defaulted"].append("input is batch-first (batch, time, features), whatever "
                                  "the module's batch_first")
        try:
            model = DRNN(layers)
        except DrnnError as e:
            order = ", ".join(f"{i}={n}" for i, n in enumerate(names))
            raise FormatError(f"{path}: the modules do not chain in registration order "
                              f"({order}): {e}") from None
    finally:
        arc.zf.close()
    model.source = {"format": "pytorch", "file": path, "read": notes["read"],
                    "inferred": notes["inferred"], "defaulted": notes["defaulted"]}
    return model
