"""Fuzzing drnn's loaders with hostile files made from the real fixtures.

Every example takes a real file (tests/fixtures, or a drnn .safetensors /
.npz written here), applies one to three mutations -- byte-level ones
(truncation, bit flips, overwritten / inserted / deleted ranges, extreme
integers written over any offset) and structured ones that understand the
container (safetensors headers, .npy headers inside an .npz, pickle opcodes
and records of a torch.save zip, members of a .keras zip, datasets and
attributes of an HDF5 file, fields of an ONNX protobuf: huge or negative
declared sizes, wrong dtypes, offsets past the end, duplicated keys,
external-data paths such as /etc/passwd, dangerous pickle globals) -- and
loads the result.  The contract (``check_file``):

* ``drnn.load`` returns a model or raises a ``drnn.DrnnError``; any other
  exception type is a failure;
* a loaded model has consistent shapes: ``predict`` on a tiny input gives
  the declared output shape, or a DrnnError;
* no example runs longer than ``TIME_LIMIT`` seconds (a hang), or
  allocates gigabytes because a file declared a size (the address space is
  capped at the current size + ``MEMORY_HEADROOM`` while loading, so such an
  allocation raises MemoryError, which fails the test);
* nothing from the file is executed: mutated pickles reference os.system /
  builtins.exec with a command that would create a canary file, checked
  after every example.

The mutators draw their choices from a small ``Rand`` interface, backed by
hypothesis in this suite (bounded, derandomized: a few seconds) and by
``random.Random`` in ``scripts/fuzz.py`` for long campaigns
(``python scripts/fuzz.py --format pt --examples 100000``).
"""
import contextlib
import glob
import io
import json
import os
import pickle
import pickletools
import random
import resource
import shutil
import signal
import struct
import tempfile
import zipfile

import numpy as np
import pytest

import drnn
from drnn.errors import DrnnError

# mutated inputs make numpy / zipfile warn (casts of NaN, duplicate zip names): not findings
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
TIME_LIMIT = 10.0                 # seconds per example (loads take milliseconds)
MEMORY_HEADROOM = 2 << 30         # bytes of address space an example may add
CANARY = os.path.join(tempfile.gettempdir(), f"drnn_fuzz_canary_{os.getpid()}")
FORMATS = ("pt", "safetensors", "npz", "keras", "h5", "onnx")

INTERESTING = [0, 1, -1, 2, 3, 7, 255, 256, -129, 65535, 65536, 2**31 - 1, -2**31, 2**31,
               2**32 - 1, 2**32, 2**40, 2**53, 2**62, 2**63 - 1, -2**63, 2**63, 2**64 - 1,
               10**12, 10**18, 3 * 2**30]


# ---------------------------------------------------------------------------
# randomness: one interface, two back ends
# ---------------------------------------------------------------------------

class Rand:
    """What mutators may ask for.  Subclasses implement int(lo, hi) (inclusive)."""

    def int(self, lo, hi):
        raise NotImplementedError

    def choice(self, seq):
        seq = list(seq)
        return seq[self.int(0, len(seq) - 1)]

    def bool(self):
        return self.int(0, 1) == 1

    def bytes(self, n):
        return bytes(self.int(0, 255) for _ in range(n))

    def interesting(self):
        return self.int(-2**64, 2**64) if self.int(0, 9) == 0 else self.choice(INTERESTING)

    def text(self):
        return self.choice(["", "x", "lstm", "LSTM", "GRU", "weight", "layers.0.weight_ih_l0",
                            "../../etc/passwd", "/etc/passwd", "\u00e9\u4e2d", "a" * 300,
                            "os", "system", "eval", "__reduce__", "nan", "1e999", "-1",
                            "float32", "F32", "<f4", "|O", "torch", "FloatStorage"])


class PyRand(Rand):
    """random.Random back end (scripts/fuzz.py)."""

    def __init__(self, seed):
        self.r = random.Random(seed)

    def int(self, lo, hi):
        return self.r.randint(lo, hi)


class HypRand(Rand):
    """hypothesis back end: choices are drawn from st.data() so failures shrink."""

    def __init__(self, data):
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def int(self, lo, hi):
        return self.data.draw(self.st.integers(lo, hi))


# ---------------------------------------------------------------------------
# byte-level mutations (any format)
# ---------------------------------------------------------------------------

def mutate_bytes(b, r):
    b = bytearray(b)
    if not b:
        return bytes(r.bytes(r.int(0, 16)))
    op = r.int(0, 7)
    n = len(b)
    if op == 0:                                   # truncate
        return bytes(b[:r.int(0, n - 1)])
    if op == 1:                                   # flip bits
        for _ in range(r.int(1, 8)):
            i = r.int(0, n - 1)
            b[i] ^= 1 << r.int(0, 7)
    elif op == 2:                                 # overwrite a range
        i = r.int(0, n - 1)
        k = min(r.int(1, 64), n - i)
        fill = r.choice([b"\x00", b"\xff", None])
        b[i:i + k] = fill * k if fill else r.bytes(k)
    elif op == 3:                                 # insert
        i = r.int(0, n)
        b[i:i] = r.bytes(r.int(1, 32))
    elif op == 4:                                 # delete a range
        i = r.int(0, n - 1)
        del b[i:i + r.int(1, 64)]
    elif op == 5:                                 # an extreme integer anywhere
        width, fmt = r.choice([(1, "B"), (2, "<H"), (4, "<I"), (8, "<Q"), (4, ">I"), (8, ">Q")])
        i = r.int(0, max(0, n - width))
        v = r.interesting() % (1 << (8 * width))
        b[i:i + width] = struct.pack(fmt, v)[:n - i]
    elif op == 6:                                 # duplicate a range elsewhere
        i = r.int(0, n - 1)
        chunk = b[i:i + r.int(1, 256)]
        j = r.int(0, n)
        b[j:j] = chunk
    else:                                         # append garbage
        b += r.bytes(r.int(1, 64))
    return bytes(b)


# ---------------------------------------------------------------------------
# JSON (safetensors headers, architectures, Keras configs)
# ---------------------------------------------------------------------------

def _json_paths(obj, path=()):
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_paths(v, path + (i,))


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def _set(obj, path, value):
    if not path:
        return value
    _get(obj, path[:-1])[path[-1]] = value
    return obj


def mutate_json(obj, r):
    """A structural change somewhere in a JSON value (a deep copy is mutated)."""
    obj = json.loads(json.dumps(obj))
    paths = list(_json_paths(obj))
    path = r.choice(paths)
    cur = _get(obj, path)
    op = r.int(0, 7)
    if op == 0 and path:                          # delete the entry
        parent = _get(obj, path[:-1])
        del parent[path[-1]]
        return obj
    if op == 1 or isinstance(cur, (int, float)) and not isinstance(cur, bool) and op < 4:
        new = r.choice([r.interesting(), 0, -1, 1.5, float("nan"), float("inf"), 1e300,
                        -1e300, None, True, "7"])
    elif op == 2 or isinstance(cur, str) and op < 4:
        new = r.text()
    elif op == 3:
        new = r.choice([[], {}, [cur, cur], {"a": cur}, None, [1, -1], [2**40, 2**40]])
    elif op == 4 and isinstance(cur, list) and cur:
        new = cur + [cur[r.int(0, len(cur) - 1)]]
    elif op == 5 and isinstance(cur, dict) and cur:
        new = dict(cur)
        new[r.text()] = r.choice([None, 1, "x", [], {}])
    elif op == 6 and isinstance(cur, list):
        new = [[2**40] * 2, [-1], [0], [1.5], ["x"], [[1]]][r.int(0, 5)]
    else:
        new = r.interesting()
    return _set(obj, path, new)


def dumps_json(obj, r, duplicate=False):
    """JSON text; duplicate=True repeats one key of the top-level object."""
    text = json.dumps(obj, allow_nan=True)
    if duplicate and isinstance(obj, dict) and obj:
        k = r.choice(list(obj))
        extra = json.dumps({k: obj[k]})[1:-1]
        text = "{" + extra + ", " + text[1:] if len(obj) else text
    return text


# ---------------------------------------------------------------------------
# zip archives
# ---------------------------------------------------------------------------

def read_zip(b):
    with zipfile.ZipFile(io.BytesIO(b)) as z:
        if any(i.file_size > 16 << 20 for i in z.infolist()):
            raise ValueError("a bomb member: mutate bytes instead of inflating it")
        return [(i.filename, z.read(i), i.compress_type) for i in z.infolist()]


def write_zip(members):
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as z:
        for name, data, ctype in members:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = ctype
            with contextlib.suppress(Exception):
                import warnings
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    z.writestr(info, data)
    return bio.getvalue()


_BOMB = None


def zip_bomb_member():
    """A deflated member of 200 MB of zeros (compressed once, ~200 kB)."""
    global _BOMB
    if _BOMB is None:
        bio = io.BytesIO()
        with zipfile.ZipFile(bio, "w", zipfile.ZIP_DEFLATED) as z:
            with z.open("bomb", "w", force_zip64=True) as f:
                chunk = b"\0" * (1 << 20)
                for _ in range(200):
                    f.write(chunk)
        with zipfile.ZipFile(io.BytesIO(bio.getvalue())) as z:
            info = z.infolist()[0]
            _BOMB = (info, bio.getvalue())
    return _BOMB


def add_bomb(b, name):
    """Append a 200 MB-when-inflated deflate member called `name` to a zip's bytes."""
    _, bomb = zip_bomb_member()
    members = read_zip(b)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n, data, ctype in members:
            if n != name:
                z.writestr(zipfile.ZipInfo(n, (2020, 1, 1, 0, 0, 0)), data, compress_type=ctype)
        with zipfile.ZipFile(io.BytesIO(bomb)) as src:
            info = src.infolist()[0]
            raw = src.fp
            raw.seek(info.header_offset)
            # copy the compressed stream without inflating it
            hdr = raw.read(30)
            nlen, xlen = struct.unpack("<HH", hdr[26:30])
            raw.seek(info.header_offset + 30 + nlen + xlen)
            comp = raw.read(info.compress_size)
        zi = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
        zi.compress_type = zipfile.ZIP_DEFLATED
        zi.CRC, zi.compress_size, zi.file_size = info.CRC, info.compress_size, info.file_size
        zi.header_offset = z.fp.tell()
        z.fp.write(zi.FileHeader(zip64=True))
        z.fp.write(comp)
        z.filelist.append(zi)
        z.NameToInfo[name] = zi
        z.start_dir = z.fp.tell()
    return out.getvalue()


def mutate_zip_members(b, r, mutate_member):
    """Rewrite one member (by mutate_member), or the archive's member list."""
    try:
        members = read_zip(b)
    except Exception:
        return mutate_bytes(b, r)
    if not members:
        return b
    op = r.int(0, 9)
    i = r.int(0, len(members) - 1)
    name, data, ctype = members[i]
    if op <= 5:
        members[i] = (name, mutate_member(name, data, r), ctype)
    elif op == 6:                                  # drop a member
        del members[i]
    elif op == 7:                                  # duplicate a member (maybe changed)
        members.append((name, mutate_member(name, data, r) if r.bool() else data, ctype))
    elif op == 8:                                  # recompress
        members[i] = (name, data, zipfile.ZIP_DEFLATED if ctype == zipfile.ZIP_STORED
                      else zipfile.ZIP_STORED)
    else:
        return add_bomb(b, name)
    return write_zip(members)


# ---------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------

def mutate_safetensors(b, r):
    if len(b) < 8 or r.int(0, 3) == 0:
        return mutate_bytes(b, r)
    (n,) = struct.unpack("<Q", b[:8])
    try:
        header = json.loads(b[8:8 + n])
    except ValueError:
        return mutate_bytes(b, r)
    data = b[8 + n:]
    names = [k for k in header if k != "__metadata__"]
    op = r.int(0, 8)
    dup = False
    if op == 0 and names:                          # a tensor's shape
        k = r.choice(names)
        header[k]["shape"] = r.choice([[-1, 3], [2**40, 2**40], [], [0], [1.5], "x", [2**63],
                                       [r.interesting()], header[k]["shape"][::-1],
                                       header[k]["shape"] + [1], [2**32, 2**32, 0]])
    elif op == 1 and names:                        # dtype
        k = r.choice(names)
        header[k]["dtype"] = r.choice(["F64", "F16", "BF16", "I64", "I8", "U8", "BOOL", "F8",
                                       "X", 3, None, "F32"])
    elif op == 2 and names:                        # data_offsets
        k = r.choice(names)
        s, e = header[k]["data_offsets"]
        header[k]["data_offsets"] = r.choice([[0, 2**62], [-1, e], [e, s], [s, len(data) + 8],
                                              "a", [1, 2, 3], [s, r.interesting()],
                                              [r.interesting(), e], [0, 0]])
    elif op == 3:                                  # duplicate key
        dup = True
    elif op == 4 and "__metadata__" in header:     # the architecture JSON
        meta = header["__metadata__"]
        if isinstance(meta, dict) and "architecture" in meta and r.int(0, 3):
            try:
                meta["architecture"] = json.dumps(mutate_json(json.loads(meta["architecture"]),
                                                              r))
            except ValueError:
                pass
        else:
            header["__metadata__"] = mutate_json(meta, r)
    elif op == 5 and names:                        # remove a tensor entry (data stays)
        del header[r.choice(names)]
    elif op == 6:                                  # header length lies
        raw = json.dumps(header).encode()
        n2 = r.choice([0, len(raw) - 1, len(raw) + 1, 2**63, 2**64 - 1, r.interesting() % 2**64])
        return struct.pack("<Q", n2 % 2**64) + raw + data
    elif op == 7:
        header = mutate_json(header, r)
    else:                                          # data truncated
        data = data[:r.int(0, max(0, len(data) - 1))]
    raw = dumps_json(header, r, duplicate=dup).encode()
    return struct.pack("<Q", len(raw)) + raw + data


# ---------------------------------------------------------------------------
# .npz: .npy headers inside a zip
# ---------------------------------------------------------------------------

def _npy_header(shape, descr, fortran=False):
    h = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode("latin1")
    h += b" " * (-(len(h) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h


def mutate_npy(name, data, r):
    if r.int(0, 3) == 0 or not data.startswith(b"\x93NUMPY"):
        return mutate_bytes(data, r)
    try:
        f = io.BytesIO(data)
        np.lib.format.read_magic(f)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        body = data[f.tell():]
    except Exception:
        return mutate_bytes(data, r)
    descr = np.lib.format.dtype_to_descr(dtype)
    op = r.int(0, 4)
    if op == 0:
        shape = r.choice([(2**40, 2**40), (-1,), (), (0,), (r.interesting() % 2**62,),
                          shape[::-1], shape + (1,), (2**62, 4)])
    elif op == 1:
        descr = r.choice(["<f8", ">f4", "|O", "<U3", "|V4", "<c8", "|b1", "<i8", "<f2", "|u1",
                          [("a", "<f4")], "<m8"])
    elif op == 2:
        fortran = not fortran
    elif op == 3:
        body = body[:r.int(0, max(0, len(body) - 1))]
    else:
        body = body + body
    try:
        return _npy_header(shape, descr, fortran) + body
    except Exception:
        return data


def mutate_npz(b, r):
    if r.int(0, 4) == 0:
        return mutate_bytes(b, r)

    def member(name, data, r):
        if name.startswith("__architecture__") and r.bool():
            try:
                arch = json.loads(np.load(io.BytesIO(data)).tobytes())
                text = json.dumps(mutate_json(arch, r)).encode()
                bio = io.BytesIO()
                np.save(bio, np.frombuffer(text, np.uint8))
                return bio.getvalue()
            except Exception:
                pass
        return mutate_npy(name, data, r)

    return mutate_zip_members(b, r, member)


# ---------------------------------------------------------------------------
# PyTorch: pickle opcodes and records of the torch.save zip
# ---------------------------------------------------------------------------

def _enc_int(v):
    if 0 <= v < 256:
        return pickle.BININT1 + bytes([v])
    if -2**31 <= v < 2**31:
        return pickle.BININT + struct.pack("<i", v)
    enc = pickle.encode_long(v)
    return pickle.LONG1 + bytes([len(enc)]) + enc


def _enc_str(s):
    raw = s.encode("utf-8", "surrogatepass")
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


_GLOBALS = [("os", "system"), ("posix", "system"), ("builtins", "exec"), ("builtins", "eval"),
            ("subprocess", "Popen"), ("torch", "DoubleStorage"), ("torch", "BFloat16Storage"),
            ("torch", "ComplexFloatStorage"), ("torch", "BoolStorage"),
            ("torch", "HalfStorage"), ("torch", "UntypedStorage"), ("torch", "FloatStorage"),
            ("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
            ("torch._utils", "_rebuild_parameter"), ("torch.nn.modules.rnn", "LSTM"),
            ("torch.storage", "_load_from_bytes"), ("copyreg", "_reconstructor"),
            ("builtins", "getattr"), ("__main__", "Net")]


def mutate_pickle(data, r):
    """Rewrite one opcode of a protocol-2 pickle (torch.save writes no frames)."""
    try:
        ops = list(pickletools.genops(data))
    except Exception:
        return mutate_bytes(data, r)
    cmd = f"touch {CANARY}"
    k = r.int(0, len(ops) - 1)
    op, arg, pos = ops[k]
    end = ops[k + 1][2] if k + 1 < len(ops) else len(data)
    choice = r.int(0, 6)
    if isinstance(arg, int) and not isinstance(arg, bool) and choice <= 2:
        new = _enc_int(r.interesting())
    elif isinstance(arg, str) and op.name in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
                                              "UNICODE", "SHORT_BINSTRING", "BINSTRING") \
            and choice <= 2:
        new = _enc_str(r.choice([r.text(), cmd, arg + arg, arg[:-1]]))
    elif op.name in ("GLOBAL", "STACK_GLOBAL") or choice == 3:
        mod, name = r.choice(_GLOBALS)
        new = pickle.GLOBAL + f"{mod}\n{name}\n".encode()
        if choice == 3:                          # a REDUCE of os.system(cmd) spliced in
            new = data[pos:end] + new + _enc_str(cmd) + pickle.TUPLE1 + pickle.REDUCE + pickle.POP
    elif choice == 4:                            # drop the opcode
        new = b""
    elif choice == 5:                            # repeat it
        new = data[pos:end] * 2
    else:
        new = bytes([r.int(0, 255)])
    return data[:pos] + new + data[end:]


def mutate_pt(b, r):
    if r.int(0, 5) == 0:
        return mutate_bytes(b, r)

    def member(name, data, r):
        if name.endswith("data.pkl"):
            return mutate_pickle(data, r) if r.int(0, 4) else mutate_bytes(data, r)
        if name.endswith("byteorder"):
            return r.choice([b"big", b"middle", b"", b"little\n", r.bytes(4)])
        if "/data/" in name and r.bool():
            return data[:r.int(0, max(0, len(data) - 1))]
        return mutate_bytes(data, r)

    out = mutate_zip_members(b, r, member)
    if r.int(0, 9) == 0:                         # make it look like TorchScript / add records
        try:
            members = read_zip(out)
        except Exception:
            members = []
        if members:
            top = members[0][0].split("/")[0]
            members.append((f"{top}/{r.choice(['constants.pkl', 'code/x.py', 'data.pkl'])}",
                            b"\x80\x02}q\x00.", zipfile.ZIP_STORED))
            out = write_zip(members)
    return out


# ---------------------------------------------------------------------------
# HDF5 (Keras .h5 and the model.weights.h5 inside .keras)
# ---------------------------------------------------------------------------

def mutate_h5(b, r):
    if r.int(0, 3) == 0:
        return mutate_bytes(b, r)
    import h5py
    bio = io.BytesIO(b)
    try:
        with h5py.File(bio, "r+") as f:
            items = []
            f.visititems(lambda n, o: items.append((n, o)))
            datasets = [n for n, o in items if isinstance(o, h5py.Dataset)]
            groups = [""] + [n for n, o in items if isinstance(o, h5py.Group)]
            op = r.int(0, 5)
            if op <= 2 and datasets:
                name = r.choice(datasets)
                old = f[name]
                shape, dtype = old.shape, old.dtype
                kind = r.int(0, 5)
                del f[name]
                if kind == 0:                        # huge declared shape, nothing written
                    f.create_dataset(name, shape=r.choice([(2**20, 2**20), (2**31,),
                                                           (2**16, 2**16, 2**8)]),
                                     dtype="f4", chunks=True)
                elif kind == 1:                      # a gzip bomb: huge, filled with zeros
                    n = r.choice([2**24, 2**27])
                    ds = f.create_dataset(name, shape=(n,), dtype="f4", chunks=(2**20,),
                                          compression="gzip", compression_opts=9)
                    ds[:2**20] = 0.0
                elif kind == 2:                      # wrong dtype
                    dt = r.choice(["f2", "f8", "i4", "u1", "S8", "c8", "?"])
                    f.create_dataset(name, data=np.zeros(shape, dtype=dt))
                elif kind == 3:                      # wrong shape
                    f.create_dataset(name, data=np.ones(tuple(reversed(shape)) + (1,), "f4"))
                elif kind == 4:                      # NaN / inf weights
                    f.create_dataset(name, data=np.full(shape, r.choice([np.nan, np.inf,
                                                                         1e38]), dtype))
                else:                                # a group where a dataset was
                    f.create_group(name)
            elif op == 3:                            # an attribute
                g = f[r.choice(groups)] if groups else f
                keys = list(g.attrs)
                if keys and r.bool():
                    key = r.choice(keys)
                    val = g.attrs[key]
                    if key == "model_config" and r.bool():
                        try:
                            cfg = json.loads(val if isinstance(val, (str, bytes)) else str(val))
                            g.attrs[key] = json.dumps(mutate_json(cfg, r))
                        except ValueError:
                            del g.attrs[key]
                    else:
                        g.attrs[key] = r.choice([np.array([b"x", b"y"]), b"", np.zeros(3),
                                                 np.array([r.text().encode()]), 7])
                elif keys:
                    del g.attrs[r.choice(keys)]
            elif op == 4 and len(items) > 1:         # delete an object
                name = r.choice([n for n, _ in items])
                if name in f:
                    del f[name]
            else:                                    # rename a group / dataset
                if items:
                    name = r.choice([n for n, _ in items])
                    if name in f:
                        f.move(name, name + "_x")
    except Exception:
        return mutate_bytes(b, r)
    return bio.getvalue()


def mutate_keras(b, r):
    if r.int(0, 5) == 0:
        return mutate_bytes(b, r)

    def member(name, data, r):
        if name.endswith(".json") and r.int(0, 4):
            try:
                return dumps_json(mutate_json(json.loads(data), r), r,
                                  duplicate=r.int(0, 5) == 0).encode()
            except ValueError:
                pass
        if name.endswith(".h5"):
            return mutate_h5(data, r)
        return mutate_bytes(data, r)

    return mutate_zip_members(b, r, member)


# ---------------------------------------------------------------------------
# ONNX protobuf
# ---------------------------------------------------------------------------

def mutate_onnx(b, r, folder):
    if r.int(0, 4) == 0:
        return mutate_bytes(b, r)
    import onnx
    from onnx import helper as oh
    m = onnx.ModelProto()
    try:
        m.ParseFromString(b)
    except Exception:
        return mutate_bytes(b, r)
    g = m.graph
    op = r.int(0, 9)
    inits = list(g.initializer)
    if op == 0 and inits:                               # declared dims
        t = r.choice(inits)
        dims = list(t.dims)
        new = r.choice([[2**40, 2**40], [-1] + dims[1:], [], [0], dims + [2**31],
                        [r.interesting() % 2**63], dims[::-1]])
        del t.dims[:]
        t.dims.extend(new)
    elif op == 1 and inits:                             # data type
        t = r.choice(inits)
        t.data_type = r.choice([0, 2, 3, 6, 7, 8, 9, 10, 11, 14, 16, 17, 999])
    elif op == 2 and inits:                             # raw data truncated / grown
        t = r.choice(inits)
        if t.raw_data:
            t.raw_data = t.raw_data[:r.int(0, len(t.raw_data) - 1)] if r.bool() \
                else t.raw_data * 2
        else:
            del t.float_data[r.int(0, max(0, len(t.float_data) - 1)):]
    elif op == 3 and inits:                             # external data
        t = r.choice(inits)
        nbytes = len(t.raw_data) or 4 * len(t.float_data)
        with open(os.path.join(folder, "weights.bin"), "wb") as f:
            f.write(t.raw_data or np.asarray(t.float_data, np.float32).tobytes())
        loc = r.choice(["/etc/passwd", "../../../../etc/passwd", "weights.bin", "missing.bin",
                        "./weights.bin", "", folder, "link.bin", "\0x"])
        if loc == "link.bin":
            with contextlib.suppress(OSError):
                os.symlink("/etc/passwd", os.path.join(folder, "link.bin"))
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        entries = {"location": loc, "offset": str(r.choice([0, 0, 1, -4, 2**40, "x"])),
                   "length": str(r.choice([nbytes, nbytes, 0, nbytes + 4, 2**40, -1]))}
        for k, v in entries.items():
            if r.int(0, 4) or k == "location":
                e = t.external_data.add()
                e.key, e.value = k, v
    elif op <= 5 and g.node:                            # a node's attribute
        n = r.choice(list(g.node))
        if n.attribute and r.int(0, 3):
            a = r.choice(list(n.attribute))
            if a.type == onnx.AttributeProto.INT:
                a.i = r.interesting() % 2**63 * r.choice([1, -1])
            elif a.type == onnx.AttributeProto.FLOAT:
                a.f = r.choice([float("nan"), float("inf"), -1.0, 0.0, 1e30])
            elif a.type == onnx.AttributeProto.STRING:
                a.s = r.text().encode()
            elif a.type == onnx.AttributeProto.STRINGS and a.strings:
                a.strings[r.int(0, len(a.strings) - 1)] = r.text().encode()
            elif a.type == onnx.AttributeProto.INTS:
                a.ints.append(r.interesting() % 2**63)
            elif a.type == onnx.AttributeProto.TENSOR:
                a.t.dims.append(2**40)
        else:
            name = r.choice(["hidden_size", "direction", "layout", "activations", "clip",
                             "axis", "perm", "to", "value", "linear_before_reset", "body"])
            val = r.choice([r.interesting() % 2**62, "sideways", ["relu"] * 7, 1e30, [1, 0, 2],
                            ["x"], -3])
            with contextlib.suppress(Exception):
                if name == "body":
                    n.attribute.append(oh.make_attribute("body", oh.make_graph([], "g", [], [])))
                else:
                    n.attribute.append(oh.make_attribute(name, val))
    elif op == 6 and g.node:                            # op type
        n = r.choice(list(g.node))
        n.op_type = r.choice(["LSTM", "GRU", "RNN", "Gemm", "MatMul", "Transpose", "Expand",
                              "Tile", "ConstantOfShape", "Range", "Loop", "Softmax", "Gather",
                              "Reshape", "Concat", "Slice", "Squeeze", "Unsqueeze", "Where",
                              "Add", "Mul", "Cast", "Shape", "Split", "Identity"])
    elif op == 7 and g.node:                            # wiring
        n = r.choice(list(g.node))
        names = [i for nd in g.node for i in nd.input] + [o for nd in g.node for o in nd.output]
        which = r.int(0, 3)
        if which == 0 and n.input:
            n.input[r.int(0, len(n.input) - 1)] = r.choice(names + ["", "nope"])
        elif which == 1 and n.output:
            n.output[r.int(0, len(n.output) - 1)] = r.choice(names + ["", "nope"])
        elif which == 2:
            n.input.append(r.choice(names + [""]))
        else:
            g.node.remove(n)
    elif op == 8:                                       # opset / graph io
        if m.opset_import and r.bool():
            m.opset_import[0].version = r.choice([1, 7, 9, 13, 99, 2**40])
        elif g.output and r.bool():
            g.output.remove(g.output[0])
        elif g.input:
            vi = r.choice(list(g.input))
            vi.type.tensor_type.elem_type = r.choice([0, 7, 10, 11, 99])
    else:
        return mutate_bytes(m.SerializeToString(), r)
    try:
        return m.SerializeToString()
    except Exception:
        return b


# ---------------------------------------------------------------------------
# seeds: the real files
# ---------------------------------------------------------------------------

def _drnn_model():
    return drnn.DRNN([drnn.Embedding(7, 3, seed=0), drnn.LSTM(3, 4, seed=1),
                      drnn.GRU(4, 3, num_layers=2, seed=2), drnn.Dense(3, 2, seed=3)])


def _drnn_model_float():
    return drnn.DRNN([drnn.GRU(2, 3, bidirectional=True, seed=4),
                      drnn.RNN(6, 2, return_sequences=False, seed=5),
                      drnn.Dense(2, 2, activation="softmax", seed=6)])


def seed_files(fmt, folder):
    """{name: bytes} of the real files a format's fuzzing starts from."""
    out = {}
    if fmt == "pt":
        for p in sorted(glob.glob(os.path.join(FIXTURES, "torch", "*.pt"))):
            out[os.path.basename(p)] = open(p, "rb").read()
    elif fmt in ("keras", "h5"):
        for p in sorted(glob.glob(os.path.join(FIXTURES, "keras", "*." + fmt))):
            out[os.path.basename(p)] = open(p, "rb").read()
    elif fmt == "onnx":
        for p in sorted(glob.glob(os.path.join(FIXTURES, "onnx", "*.onnx"))):
            out[os.path.basename(p)] = open(p, "rb").read()
    else:
        for i, model in enumerate((_drnn_model(), _drnn_model_float())):
            p = os.path.join(folder, f"seed{i}.safetensors")
            model.save(p)
            if fmt == "safetensors":
                out[f"model{i}.safetensors"] = open(p, "rb").read()
            else:
                tensors, meta = drnn.io.safetensors.read(p)
                arrays = dict(tensors)
                arrays["__format__"] = np.frombuffer(meta["format"].encode(), np.uint8)
                arrays["__format_version__"] = np.frombuffer(meta["format_version"].encode(),
                                                             np.uint8)
                arrays["__architecture__"] = np.frombuffer(meta["architecture"].encode(),
                                                           np.uint8)
                bio = io.BytesIO()
                (np.savez_compressed if i else np.savez)(bio, **arrays)
                out[f"model{i}.npz"] = bio.getvalue()
            os.remove(p)
    if not out:
        raise FileNotFoundError(f"no seed files for {fmt}")
    return out


def mutate(fmt, data, r, folder):
    """One to three mutations of the format's kind (byte-level ones included)."""
    fn = {"pt": mutate_pt, "safetensors": mutate_safetensors, "npz": mutate_npz,
          "keras": mutate_keras, "h5": mutate_h5,
          "onnx": lambda b, r: mutate_onnx(b, r, folder)}[fmt]
    for _ in range(r.int(1, 3)):
        try:
            data = fn(data, r)
        except Exception:        # an earlier round left a shape this mutator cannot parse
            data = mutate_bytes(data, r)
    return data


# ---------------------------------------------------------------------------
# the contract
# ---------------------------------------------------------------------------

class Hang(BaseException):
    """Raised by the per-example timer (a BaseException: no loader may swallow it)."""


@contextlib.contextmanager
def time_limit(seconds):
    def handler(signum, frame):
        raise Hang(f"example took longer than {seconds} s")
    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _vm_size():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def memory_limit(headroom=MEMORY_HEADROOM):
    """Cap the address space at its current size + headroom: an allocation sized by
    a hostile file then raises MemoryError instead of succeeding lazily."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_size() + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _tiny_input(model):
    """(x, expected output shape or None) for a drnn model or an OnnxModel."""
    if isinstance(model, drnn.DRNN):
        if model.takes_tokens:
            x = np.zeros((1, 3), np.int64)
        else:
            x = np.random.default_rng(0).standard_normal((1, 3, model.input_size)).astype(
                np.float32)
        shape = (1, 3, model.output_size) if model.returns_sequences else (1, model.output_size)
        return x, shape
    name = model.input_names[0] if model.input_names else None
    dt, shape = model._input_meta.get(name, (None, None)) if name else (None, None)
    if shape is None:
        return None, None
    dims = [d if isinstance(d, int) else 2 for d in shape]
    if any(d < 0 or d > 64 for d in dims) or int(np.prod(dims)) > 100_000:
        return None, None
    return np.zeros(dims, dt or np.float32), None


def check_model(model):
    """A loaded model is consistent: a tiny predict gives the declared shape or a DrnnError."""
    if isinstance(model, drnn.DRNN):
        for layer in model.layers:
            for name, arr in layer.params().items():
                assert isinstance(arr, np.ndarray), (layer, name)
        for a, b in zip(model.layers, model.layers[1:]):
            assert b.input_size == a.output_size
    x, shape = _tiny_input(model)
    if x is None:
        return
    try:
        y = model.predict(x)
    except DrnnError:
        return
    if shape is not None:
        assert y.shape == shape and y.dtype == np.float32, (y.shape, shape, y.dtype)


def check_file(path):
    """Load a (hostile) file under the contract; returns 'loaded' or 'refused'."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(CANARY)
    try:
        with time_limit(TIME_LIMIT), memory_limit():
            try:
                model = drnn.load(path)
            except DrnnError:
                return "refused"
            check_model(model)
            return "loaded"
    finally:
        assert not os.path.exists(CANARY), f"{path}: code from the file was executed"


class Campaign:
    """Seeds of one format in a scratch folder; run(r) mutates one and checks it."""

    def __init__(self, fmt, folder):
        self.fmt, self.folder = fmt, folder
        self.seeds = seed_files(fmt, folder)
        self.names = sorted(self.seeds)
        ext = {"pt": ".pt", "safetensors": ".safetensors", "npz": ".npz", "keras": ".keras",
               "h5": ".h5", "onnx": ".onnx"}[fmt]
        self.path = os.path.join(folder, "example" + ext)

    def make(self, r):
        name = r.choice(self.names)
        return mutate(self.fmt, self.seeds[name], r, self.folder)

    def run(self, r):
        data = self.make(r)
        with open(self.path, "wb") as f:
            f.write(data)
        try:
            return check_file(self.path), data
        finally:
            for extra in ("weights.bin", "link.bin"):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.folder, extra))


# ---------------------------------------------------------------------------
# the suite: a bounded, deterministic number of examples per format
# ---------------------------------------------------------------------------

SUITE_EXAMPLES = {"pt": 100, "safetensors": 150, "npz": 100, "keras": 60, "h5": 60, "onnx": 150}


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory):
    return {}


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzz_loader(fmt, campaigns, tmp_path_factory):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings, strategies as st
    if fmt in ("keras", "h5"):
        pytest.importorskip("h5py")
    if fmt == "onnx":
        pytest.importorskip("onnx")
    camp = campaigns.get(fmt)
    if camp is None:
        camp = campaigns[fmt] = Campaign(fmt, str(tmp_path_factory.mktemp(f"fuzz_{fmt}")))
    seen = {"loaded": 0, "refused": 0}

    @settings(max_examples=SUITE_EXAMPLES[fmt], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate,
                                                                hypothesis.Phase.shrink])
    @given(st.data())
    def run(data):
        outcome, _ = camp.run(HypRand(data))
        seen[outcome] += 1

    run()
    assert seen["refused"] > 0, seen


@pytest.mark.parametrize("fmt", FORMATS)
def test_unmutated_seeds_load(fmt, tmp_path):
    """The seeds themselves load and predict (so mutations start from valid files)."""
    if fmt in ("keras", "h5"):
        pytest.importorskip("h5py")
    if fmt == "onnx":
        pytest.importorskip("onnx")
    camp = Campaign(fmt, str(tmp_path))
    for name in camp.names:
        with open(camp.path, "wb") as f:
            f.write(camp.seeds[name])
        assert check_file(camp.path) == "loaded", name


# ---------------------------------------------------------------------------
# targeted hostile files: the bombs and escapes the fuzzer should never miss
# ---------------------------------------------------------------------------

def _expect_refused(path):
    with time_limit(TIME_LIMIT), memory_limit():
        with pytest.raises(DrnnError):
            drnn.load(path)


def test_npz_huge_declared_shape(tmp_path):
    bio = io.BytesIO()
    np.savez(bio, x=np.zeros(4, np.float32))
    members = [(n, _npy_header((2**20, 2**20), "<f4") + b"\0" * 16 if n == "x.npy" else d, c)
               for n, d, c in read_zip(bio.getvalue())]
    p = tmp_path / "huge.npz"
    p.write_bytes(write_zip(members))
    _expect_refused(str(p))


def test_zip_bombs_refused(tmp_path):
    _, bomb = zip_bomb_member()
    camp = Campaign("npz", str(tmp_path))
    seed = camp.seeds["model0.npz"]
    p = tmp_path / "bomb.npz"
    p.write_bytes(add_bomb(seed, "layers.1.weight_ih_l0.npy"))
    _expect_refused(str(p))
    pytest.importorskip("h5py")
    keras_seed = open(os.path.join(FIXTURES, "keras", "lstm_hardsig_dense.keras"), "rb").read()
    p = tmp_path / "bomb.keras"
    p.write_bytes(add_bomb(keras_seed, "model.weights.h5"))
    _expect_refused(str(p))
    pt_seed = open(os.path.join(FIXTURES, "torch", "rnn_relu_nobias.pt"), "rb").read()
    name = [n for n, _, _ in read_zip(pt_seed) if n.endswith("data.pkl")][0]
    p = tmp_path / "bomb.pt"
    p.write_bytes(add_bomb(pt_seed, name))
    _expect_refused(str(p))


def _h5_copy(tmp_path):
    """A writable copy of a Keras .h5 fixture, to plant a bomb in."""
    p = tmp_path / "bomb.h5"
    shutil.copy(os.path.join(FIXTURES, "keras", "bigru_reset_before.h5"), p)
    return p


def _h5_bomb_dataset(f, name, kind, shape, chunks):
    """Replace dataset `name` of the open file f by one declaring `shape` but
    storing almost nothing: "unallocated" chunks, or ("gzip") one compressed
    chunk of zeros."""
    del f[name]
    if kind == "unallocated":
        f.create_dataset(name, shape=shape, dtype="f4", chunks=chunks)
    else:
        ds = f.create_dataset(name, shape=shape, dtype="f4", chunks=chunks,
                              compression="gzip", compression_opts=9)
        ds[:chunks[0]] = 0.0


@pytest.mark.parametrize("kind", ["unallocated", "gzip"])
def test_h5_declared_size_bombs(tmp_path, kind):
    h5py = pytest.importorskip("h5py")
    p = _h5_copy(tmp_path)
    with h5py.File(p, "r+") as f:
        items = []
        f.visititems(lambda n, o: items.append(n) if isinstance(o, h5py.Dataset) else None)
        if kind == "unallocated":
            _h5_bomb_dataset(f, items[0], kind, (2**20, 2**20), True)
        else:
            _h5_bomb_dataset(f, items[0], kind, (2**28,), (2**20,))
    _expect_refused(str(p))


@pytest.mark.parametrize("location", ["/etc/passwd", "../../../../../../etc/passwd",
                                      "link.bin", "missing.bin", "w\0.bin", "", "."])
def test_onnx_external_data_confined(tmp_path, location):
    onnx = pytest.importorskip("onnx")
    src = os.path.join(FIXTURES, "onnx", "torch_lstm_bi_2layer_linear.onnx")
    m = onnx.load(src)
    t = max(m.graph.initializer, key=lambda t: len(t.raw_data))
    if location == "link.bin":
        os.symlink("/etc/passwd", tmp_path / "link.bin")
    n = len(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(n))):
        e = t.external_data.add()
        e.key, e.value = k, v
    p = tmp_path / "ext.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(DrnnError, match="external"):
        drnn.load(str(p))


def test_onnx_external_data_inside_folder_loads(tmp_path):
    onnx = pytest.importorskip("onnx")
    src = os.path.join(FIXTURES, "onnx", "torch_lstm_bi_2layer_linear.onnx")
    ref = drnn.load(src)
    m = onnx.load(src)
    t = max(m.graph.initializer, key=lambda t: len(t.raw_data))
    (tmp_path / "w.bin").write_bytes(b"\0" * 8 + t.raw_data)
    n = len(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", "w.bin"), ("offset", "8"), ("length", str(n))):
        e = t.external_data.add()
        e.key, e.value = k, v
    p = tmp_path / "ext.onnx"
    p.write_bytes(m.SerializeToString())
    x = np.random.default_rng(0).standard_normal((2, 3, 5)).astype(np.float32)
    np.testing.assert_array_equal(drnn.load(str(p)).predict(x), ref.predict(x))


def test_pickle_code_never_runs(tmp_path):
    """A data.pkl that calls os.system is refused before anything is called."""
    src = open(os.path.join(FIXTURES, "torch", "rnn_relu_nobias.pt"), "rb").read()
    members = read_zip(src)
    payload = (b"\x80\x02" + pickle.GLOBAL + b"os\nsystem\n" + _enc_str(f"touch {CANARY}")
               + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP)
    members = [(n, payload if n.endswith("data.pkl") else d, c) for n, d, c in members]
    p = tmp_path / "evil.pt"
    p.write_bytes(write_zip(members))
    assert check_file(str(p)) == "refused"


@pytest.mark.parametrize("kind", ["unallocated", "gzip"])
def test_h5_bomb_with_consistent_config(tmp_path, kind):
    """A weight whose huge shape agrees with the config, stored in a few bytes."""
    h5py = pytest.importorskip("h5py")
    p = _h5_copy(tmp_path)
    F = 2**26
    with h5py.File(p, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        cfg["config"]["layers"][0]["config"]["batch_shape"] = [None, 6, F]
        f.attrs["model_config"] = json.dumps(cfg)
        for d in ("forward_gru", "backward_gru"):
            name = f"model_weights/bidirectional/sequential_1/bidirectional/{d}/gru_cell/kernel"
            _h5_bomb_dataset(f, name, kind, (F, 12), (2**16, 12))
    _expect_refused(str(p))


def test_known_hdf5_hang_on_corrupt_global_heap():
    """Upstream limitation, kept as a reproducer: the HDF5 C library (2.0.0, bundled with
    h5py 3.16) loops forever reading a variable-length string attribute whose global
    heap collection is zeroed (found by scripts/fuzz.py --format h5).  Nothing in
    Python can interrupt it; services loading untrusted .h5 / .keras files should do
    so in a subprocess with a timeout (or convert them to .safetensors in one)."""
    pytest.importorskip("h5py")
    import subprocess
    import sys
    path = os.path.join(FIXTURES, "hostile", "h5_global_heap_hang.h5")
    code = ("import drnn, sys\ntry:\n    drnn.load(sys.argv[1])\nexcept drnn.DrnnError:\n"
            "    print('refused')\n")
    try:
        out = subprocess.run([sys.executable, "-c", code, path], capture_output=True,
                             text=True, timeout=3)
    except subprocess.TimeoutExpired:
        pytest.xfail("HDF5 hangs on this file (upstream); see the docstring")
    assert out.returncode == 0 and "refused" in out.stdout, out.stderr[-2000:]


def test_load_with_timeout_stops_the_hdf5_hang():
    """drnn.load(path, timeout=) parses in a child process and stops it: the
    upstream hang above becomes a FormatError, in about the timeout."""
    pytest.importorskip("h5py")
    import time
    path = os.path.join(FIXTURES, "hostile", "h5_global_heap_hang.h5")
    t0 = time.monotonic()
    try:
        drnn.load(path, timeout=2)
    except drnn.FormatError as e:
        # either the child was stopped, or (a fixed HDF5) it refused the file
        assert path in str(e)
    assert time.monotonic() - t0 < 30


def test_load_with_timeout_same_model_and_same_errors(tmp_path):
    good = os.path.join(FIXTURES, "torch", "rnn_relu_nobias.pt")
    x = np.random.default_rng(0).standard_normal((2, 5, drnn.load(good).input_size))
    np.testing.assert_array_equal(drnn.load(good, timeout=60).predict(x), drnn.load(good).predict(x))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(drnn.FormatError) as inproc:
        drnn.load(bad)
    with pytest.raises(drnn.FormatError) as isolated:
        drnn.load(bad, timeout=60)
    assert str(isolated.value) == str(inproc.value)
    with pytest.raises(drnn.UnsupportedError, match="options"):
        drnn.load(bad, timeout=60, nonlinearity="relu")
    with pytest.raises(ValueError, match="timeout"):
        drnn.load(good, timeout=0)


@pytest.mark.parametrize("src", ["torch/rnn_relu_nobias.pt", "keras/lstm_hardsig_dense.keras",
                                 "embedding_lstm_linear.npz"])
def test_zip_needing_a_newer_zip_version(tmp_path, src):
    """zipfile raises NotImplementedError ("zip file version 12.8") for these: a FormatError."""
    if src.endswith(".keras"):
        pytest.importorskip("h5py")
    b = bytearray(open(os.path.join(FIXTURES, src), "rb").read())
    i = b.find(b"PK\x01\x02")
    b[i + 6] = 128                      # version needed to extract: 12.8
    p = tmp_path / os.path.basename(src)
    p.write_bytes(bytes(b))
    assert check_file(str(p)) == "refused"


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Tile", "Range"])
def test_onnx_constant_folding_bombs(tmp_path, op):
    """A constant computed at load time from a few bytes of the file, declaring GBs."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper as oh, numpy_helper as nh
    big = np.array([65536, 32768], np.int64)            # 2**31 elements
    inits = [nh.from_array(big, "shape"), nh.from_array(np.zeros((1, 1), np.float32), "one"),
             nh.from_array(np.array([1, 1], np.int64), "reps1"),
             nh.from_array(np.array(0.0, np.float32), "start"),
             nh.from_array(np.array(2.0**31, np.float32), "limit"),
             nh.from_array(np.array(1.0, np.float32), "delta")]
    node = {"ConstantOfShape": oh.make_node("ConstantOfShape", ["shape"], ["c"]),
            "Expand": oh.make_node("Expand", ["one", "shape"], ["c"]),
            "Tile": oh.make_node("Tile", ["one", "shape"], ["c"]),
            "Range": oh.make_node("Range", ["start", "limit", "delta"], ["c"])}[op]
    add = oh.make_node("Add", ["x", "c"], ["y"])
    g = oh.make_graph([node, add], "bomb", [oh.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      [1])],
                      [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])
    p = tmp_path / "bomb.onnx"
    p.write_bytes(m.SerializeToString())
    _expect_refused(str(p))


def test_npz_negative_dimension(tmp_path):
    bio = io.BytesIO()
    np.savez(bio, x=np.zeros(4, np.float32))
    members = [(n, _npy_header((-1,), "<f4") + b"\0" * 16 if n == "x.npy" else d, c)
               for n, d, c in read_zip(bio.getvalue())]
    p = tmp_path / "neg.npz"
    p.write_bytes(write_zip(members))
    _expect_refused(str(p))


def test_onnx_op_type_not_utf8(tmp_path):
    """protobuf hands back bytes for strings that are not UTF-8."""
    pytest.importorskip("onnx")
    b = open(os.path.join(FIXTURES, "onnx", "helper_lstm_all_options.onnx"), "rb").read()
    assert b"\x04LSTM" in b
    p = tmp_path / "bad.onnx"
    p.write_bytes(b.replace(b"\x04LSTM", b"\x04\xffSTM", 1))
    _expect_refused(str(p))


def _pb_field(num, payload):
    """A length-delimited protobuf field."""
    def varint(v):
        out = bytearray()
        while True:
            b, v = v & 0x7F, v >> 7
            out.append(b | (0x80 if v else 0))
            if not v:
                return bytes(out)
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def test_onnx_deeply_nested_protobuf(tmp_path):
    """Graph -> node -> attribute -> graph ... 1000 levels deep: refused, no RecursionError."""
    pytest.importorskip("onnx")
    g = b""
    for _ in range(1000):
        g = _pb_field(1, _pb_field(5, _pb_field(6, g)))   # GraphProto.node.attribute.g
    model = b"\x08\x07" + _pb_field(7, g)                  # ir_version 7, ModelProto.graph
    p = tmp_path / "deep.onnx"
    p.write_bytes(model)
    _expect_refused(str(p))


def test_onnx_expand_to_45_dimensions(tmp_path):
    """numpy raises RuntimeError ("up to 32 dimensions") for this: a drnn error instead."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper as oh, numpy_helper as nh
    inits = [nh.from_array(np.ones(45, np.int64), "shape"),
             nh.from_array(np.zeros((1, 1), np.float32), "one")]
    g = oh.make_graph([oh.make_node("Expand", ["one", "shape"], ["c"]),
                       oh.make_node("Add", ["x", "c"], ["y"])], "deep",
                      [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                      [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    p = tmp_path / "deep.onnx"
    p.write_bytes(oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString())
    _expect_refused(str(p))
