"""ONNX loader: an .onnx file in, an OnnxModel that runs its graph out.

Design: ``load_onnx`` parses the file with the ``onnx`` package (the
optional extra drnn[onnx]), checks its structure, turns initialisers into
read-only numpy arrays, sorts the nodes topologically, refuses any operator
outside the supported set (naming it), folds every node whose inputs are all
constants (so weights computed in-graph become constants too), and builds a
drnn layer for each LSTM / GRU / RNN node whose W, R, B and P are constant.
``OnnxModel.run`` then executes the remaining nodes in order: the glue
operators (onnx_ops.OPS) with numpy, the recurrent ones through drnn's
kernels (onnx_ops.run_recurrent), building a layer on the fly only when a
node's weights are graph inputs (as in ONNX's own single-node test cases).
``predict(x)`` feeds the graph's first declared input and returns its first
output, in the graph's own layout, so results compare directly with ONNX
Runtime.  Nothing from the file is ever executed as code.
"""
import os

import numpy as np

from ..errors import DrnnError, FormatError, ShapeError, UnsupportedError
from . import onnx_ops as ops

__all__ = ["load_onnx", "OnnxModel", "SUPPORTED_OPS"]

SUPPORTED_OPS = tuple(sorted(set(ops.OPS) | set(ops.RECURRENT_OPS)))
_DEFAULT_DOMAINS = ("", "ai.onnx")
# what numpy / int() / float() raise on ill-formed values from a file
_BAD_VALUE = (ValueError, TypeError, IndexError, KeyError, AttributeError, ArithmeticError,
              RuntimeError)     # numpy: "only supports up to 32 dimensions"


def _import_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise UnsupportedError(
            "reading .onnx files needs the onnx package: pip install drnn[onnx] "
            f"(import failed: {e})") from None
    return onnx, numpy_helper


def _attr_value(onnx, numpy_helper, attr, where):
    """An AttributeProto as a Python / numpy value (graphs are refused)."""
    A = onnx.AttributeProto
    t = attr.type
    if t == A.FLOAT:
        return float(attr.f)
    if t == A.INT:
        return int(attr.i)
    if t == A.STRING:
        return attr.s.decode("utf-8", "replace")
    if t == A.FLOATS:
        return [float(v) for v in attr.floats]
    if t == A.INTS:
        return [int(v) for v in attr.ints]
    if t == A.STRINGS:
        return [s.decode("utf-8", "replace") for s in attr.strings]
    if t == A.TENSOR:
        return _to_array(numpy_helper, attr.t, where)
    if t in (A.GRAPH, A.GRAPHS):
        raise UnsupportedError(f"{where}: attribute {attr.name!r} holds a subgraph "
                               "(control flow is not supported)")
    raise UnsupportedError(f"{where}: attribute {attr.name!r} has unsupported type {t}")


def _to_array(numpy_helper, tensor, where):
    if tensor.data_location == 1:    # EXTERNAL outside the initializers: never read
        raise FormatError(f"{where}: tensor {tensor.name!r} refers to external data; only "
                          "initializers may, inside the model's folder")
    try:
        arr = numpy_helper.to_array(tensor)
    except Exception as e:   # malformed raw_data, bad dims, unknown dtype
        raise FormatError(f"{where}: tensor {tensor.name!r} cannot be read: {e}") from None
    arr = np.array(arr, copy=True)   # own the memory (to_array may alias the protobuf)
    arr.setflags(write=False)
    return arr


_SLOT_NAMES = {"MatMul": ("A", "B"), "Gemm": ("A", "B", "C"), "Gather": ("data", "indices")}


class _Node:
    __slots__ = ("op", "name", "inputs", "outputs", "attrs", "ctx", "layer", "where")


class _Info:
    """A non-recurrent graph node holding constant parameters, for describe()."""

    def __init__(self, op, name, params):
        self.kind = op
        self.name = name
        self._params = params

    @property
    def num_parameters(self):
        return int(sum(p.size for p in self._params.values()))

    def params(self):
        return dict(self._params)

    def __repr__(self):
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in self._params.items())
        return f"{self.kind}({shapes})" + (f"  # node {self.name!r}" if self.name else "")


class OnnxModel:
    """An ONNX graph whose LSTM/GRU/RNN nodes run on drnn's kernels.

    predict(x) feeds the graph's first declared input (in the graph's own
    layout and dtype) and returns its first output; run(feeds) takes a dict
    of all inputs and returns every graph output by name.
    """

    def __init__(self, path, graph_inputs, graph_outputs, consts, nodes, opset, source,
                 input_meta):
        self.path = path
        self.input_names = list(graph_inputs)
        self.output_names = list(graph_outputs)
        self._consts = consts
        self._nodes = nodes
        self.opset = opset
        self.source = source
        self._input_meta = input_meta     # name -> (numpy dtype or None, shape list)
        self._num_parameters = 0
        self.layers = []
        for n in nodes:
            if n.layer is not None:
                n.layer.onnx_node = n.name
                self.layers.append(n.layer)
            elif n.op in ("MatMul", "Gemm", "Gather", "Add"):
                params = {}
                slot_names = _SLOT_NAMES.get(n.op, ())
                for i, name in enumerate(n.inputs):
                    v = consts.get(name) if name else None
                    if v is not None and v.dtype.kind == "f" and v.ndim >= 1:
                        params[slot_names[i] if i < len(slot_names) else f"input{i}"] = v
                if params and n.op != "Add":
                    self.layers.append(_Info(n.op, n.name, params))

    # -- description -------------------------------------------------------
    @property
    def num_parameters(self):
        return self._num_parameters

    @property
    def recurrent_layers(self):
        return [l for l in self.layers if not isinstance(l, _Info)]

    def describe(self):
        lines = [f"{self.path}: ONNX model (opset {self.opset}), "
                 f"{self.num_parameters:,} parameters, {len(self._nodes)} nodes to run"]
        for name in self.input_names:
            dt, shape = self._input_meta.get(name, (None, None))
            lines.append(f"input {name!r}: {np.dtype(dt).name if dt else '?'} {shape}")
        for i, l in enumerate(self.layers):
            lines.append(f"  [{i}] {l!r}  ({l.num_parameters:,} parameters)")
        lines.append("output " + ", ".join(repr(o) for o in self.output_names))
        counts = {}
        for n in self._nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        lines.append("ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
        try:
            stack = self.to_drnn()
            lines.append("drnn convert: yes, as " + " -> ".join(
                repr(l) for l in stack.layers))
        except UnsupportedError as e:
            lines.append("drnn convert: no -- " + str(e).split(": not a plain recurrent stack "
                                                         "drnn's format can hold: ")[-1])
        for key in ("read", "inferred", "defaulted"):
            for item in self.source.get(key, []):
                lines.append(f"{key}: {item}")
        return "\n".join(lines)

    def __repr__(self):
        return (f"OnnxModel({os.path.basename(self.path)!r}, inputs={self.input_names}, "
                f"outputs={self.output_names}, layers={len(self.layers)})")

    # -- running -----------------------------------------------------------
    def _feed(self, name, value):
        dt = self._input_meta.get(name, (None, None))[0]
        arr = np.asarray(value)
        if dt is not None and arr.dtype != dt:
            if arr.dtype.kind in "fc" and np.dtype(dt).kind in "iub":
                raise ShapeError(f"{self.path}: input {name!r} takes {np.dtype(dt).name} "
                                 f"(token ids), got {arr.dtype}")
            arr = arr.astype(dt)
        return arr

    def run(self, feeds, num_threads=None, outputs=None):
        """Run the graph.  feeds: {input name: array}.  Returns {output name: array}."""
        env = dict(self._consts)
        for name in self.input_names:
            if name in feeds:
                env[name] = self._feed(name, feeds[name])
            elif name not in env:
                raise ShapeError(f"{self.path}: graph input {name!r} is not given "
                                 f"(inputs: {self.input_names})")
        unknown = set(feeds) - set(self.input_names)
        if unknown:
            raise ShapeError(f"{self.path}: unknown inputs {sorted(unknown)}; the graph takes "
                             f"{self.input_names}")
        for n in self._nodes:
            args = [env[i] if i else None for i in n.inputs]
            try:
                if n.op in ops.RECURRENT_OPS:
                    layer = n.layer
                    if layer is None:
                        get = (lambda k: args[ops.SLOT[k]] if len(args) > ops.SLOT[k] else None)
                        layer = ops.recurrent_layer(n.op, n.attrs, get("W"), get("R"), get("B"),
                                                    get("P"), n.where,
                                                    {"inferred": [], "defaulted": []})
                    res = ops.run_recurrent(layer, n.op, n.attrs, args, len(n.outputs),
                                            n.where, num_threads)
                else:
                    res = ops.OPS[n.op](n.ctx, args)
            except DrnnError:
                raise
            except _BAD_VALUE as e:
                raise ShapeError(f"{n.where}: {e}") from None
            for name, val in zip(n.outputs, res):
                if name:
                    env[name] = val
        wanted = self.output_names if outputs is None else list(outputs)
        return {name: env[name] for name in wanted}

    def to_drnn(self):
        """The equivalent drnn.DRNN, for a graph that is a plain recurrent stack
        (as torch.onnx.export writes nn.Embedding/LSTM/GRU/RNN/Linear stacks):
        recognised from the graph, then checked against the graph on random
        probes.  The DRNN takes batch-first input whatever the graph's layout
        (its ``source`` says).  Raises UnsupportedError naming the node that
        breaks the pattern otherwise."""
        return convert_to_drnn(self)

    def predict(self, x, num_threads=None):
        """Feed x to the graph's first input; return its first output (graph layout)."""
        if not self.input_names:
            raise ShapeError(f"{self.path}: the graph has no inputs")
        first = self.input_names[0]
        missing = [n for n in self.input_names[1:] if n not in self._consts]
        if missing:
            raise ShapeError(f"{self.path}: the graph also needs inputs {missing}; "
                             "use run({name: array, ...})")
        return self.run({first: x}, num_threads=num_threads,
                        outputs=[self.output_names[0]])[self.output_names[0]]


def _parse(path):
    onnx, numpy_helper = _import_onnx()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FormatError(f"{path}: cannot read: {e}") from None
    if not data:
        raise FormatError(f"{path}: empty file, expected an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:
        raise FormatError(f"{path}: not a valid ONNX file (protobuf parse failed: "
                          f"{type(e).__name__}: {e}); is it truncated?") from None
    g = model.graph
    if model.ir_version <= 0 or not model.HasField("graph") or not g.output:
        raise FormatError(f"{path}: not an ONNX model (no ir_version, graph or graph outputs)")
    for t in g.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            _load_external(onnx, path, t)
    return onnx, numpy_helper, model


# bytes per element of the ONNX types an external initializer may hold
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


def _load_external(onnx, path, t):
    """Read an initializer's external data into raw_data, confined to the model's folder.

    The location must be a relative path that resolves (symlinks followed) to a
    regular file inside the .onnx file's directory; offset and length must lie
    inside that file and match the tensor's declared size -- all checked before
    anything is read.  Anything else (absolute paths, '..', /etc/passwd) is refused."""
    where = f"{path}: initializer {t.name!r}"
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    base = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    full = os.path.realpath(os.path.join(base, loc)) if loc and "\0" not in loc else ""
    if (not full or os.path.isabs(loc)
            or os.path.commonpath([base, full]) != base or full == base):
        raise FormatError(f"{where}: external data location {loc!r} is not a file inside the "
                          f"model's folder {base!r}; refused")
    if not os.path.isfile(full):
        raise FormatError(f"{where}: external data file {loc!r} does not exist (or is not a "
                          "regular file)")
    itemsize = _ITEMSIZE.get(t.data_type)
    if itemsize is None:
        raise UnsupportedError(f"{where}: external data of ONNX type {t.data_type} is not "
                               "supported")
    count = 1
    for d in t.dims:
        if d < 0:
            raise FormatError(f"{where}: negative dimension in {list(t.dims)}")
        count *= d
    need = count * itemsize
    try:
        offset = int(info.get("offset", 0))
        length = int(info.get("length", need))
    except ValueError:
        raise FormatError(f"{where}: external data offset/length are not integers") from None
    size = os.path.getsize(full)
    if offset < 0 or length != need or offset + length > size:
        raise FormatError(f"{where}: external data [{offset}, {offset}+{length}) of {loc!r} "
                          f"({size} bytes) does not hold the declared {list(t.dims)} "
                          f"({need} bytes)")
    with open(full, "rb") as f:
        f.seek(offset)
        data = f.read(need)
    if len(data) != need:
        raise FormatError(f"{where}: external data file {loc!r} is truncated")
    t.raw_data = data
    t.data_location = onnx.TensorProto.DEFAULT
    del t.external_data[:]


def load_onnx(path):
    """Load an .onnx file; returns an OnnxModel (needs pip install drnn[onnx])."""
    path = os.fspath(path)
    onnx, numpy_helper, model = _parse(path)
    g = model.graph
    opset = None
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            opset = int(imp.version)
    source = {"format": "onnx", "file": path, "read": [], "inferred": [], "defaulted": []}
    if opset is None:
        opset = 1 if not model.opset_import else 21
        source["defaulted"].append(f"default-domain opset {opset} (none declared)")
    source["read"].append(f"ir_version {model.ir_version}, opset {opset}, producer "
                          f"{model.producer_name or '?'} {model.producer_version}".rstrip())

    consts = {}
    for t in g.initializer:
        if not t.name:
            raise FormatError(f"{path}: an initializer has no name")
        consts[t.name] = _to_array(numpy_helper, t, f"{path}: initializer")
    if len(g.initializer):
        source["read"].append(f"{len(g.initializer)} initializers "
                              f"({sum(v.size for v in consts.values()):,} values)")

    input_meta = {}
    inputs = []
    for vi in g.input:
        if vi.name in consts:
            continue           # old IR: initializers listed as inputs (overridable defaults)
        tt = vi.type.tensor_type
        dt = ops.ONNX_DTYPES.get(tt.elem_type) if vi.type.HasField("tensor_type") else None
        shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
                 for d in tt.shape.dim] if tt.HasField("shape") else None
        inputs.append(vi.name)
        input_meta[vi.name] = (dt, shape)
    outputs = [o.name for o in g.output]

    # -- nodes: check ops, parse attributes --------------------------------
    nodes = []
    unsupported = []
    for k, nd in enumerate(g.node):
        where = f"{path}: node {nd.name or k!r} ({nd.op_type})"
        if nd.domain not in _DEFAULT_DOMAINS:
            unsupported.append(f"{nd.domain}.{nd.op_type}")
            continue
        if nd.op_type not in ops.OPS and nd.op_type not in ops.RECURRENT_OPS:
            unsupported.append(nd.op_type)
            continue
        n = _Node()
        n.op, n.name, n.where = nd.op_type, nd.name, where
        n.inputs, n.outputs = list(nd.input), list(nd.output)
        n.attrs = {a.name: _attr_value(onnx, numpy_helper, a, where) for a in nd.attribute}
        attrs = dict(n.attrs)
        attrs["_n_outputs"] = len(n.outputs)
        n.ctx = ops.Ctx(attrs, opset, where)
        n.layer = None
        nodes.append(n)
    if unsupported:
        names = sorted(set(map(str, unsupported)))    # protobuf gives bytes for bad UTF-8
        raise UnsupportedError(
            f"{path}: unsupported ONNX operator{'s' if len(names) > 1 else ''} "
            f"{', '.join(names)}; drnn runs LSTM, GRU, RNN and the glue ops "
            f"{', '.join(sorted(ops.OPS))}")

    nodes = _toposort(path, nodes, set(consts) | set(inputs), outputs)
    param_names = set(consts) | {n.outputs[0] for n in nodes if n.op == "Constant" and n.outputs}

    # -- fold constants; build recurrent layers ----------------------------
    run_nodes = []
    notes = {"inferred": source["inferred"], "defaulted": source["defaulted"]}
    fold_limit = max(1 << 24, 4 * os.path.getsize(path))      # elements
    for n in nodes:
        if n.op in ops.RECURRENT_OPS:
            args = {k: (consts.get(n.inputs[i]) if len(n.inputs) > i and n.inputs[i] else None)
                    for k, i in ops.SLOT.items()}
            given = {k: len(n.inputs) > i and bool(n.inputs[i]) for k, i in ops.SLOT.items()}
            if all(args[k] is not None or not given[k] for k in ("W", "R", "B", "P")):
                try:
                    n.layer = ops.recurrent_layer(n.op, n.attrs, args["W"], args["R"], args["B"],
                                                  args["P"], n.where, notes)
                except DrnnError:
                    raise
                except _BAD_VALUE as e:      # ill-typed attributes (hidden_size="x", ...)
                    raise FormatError(f"{n.where}: bad attribute or weight "
                                      f"({type(e).__name__}: {e})") from None
                source["read"].append(
                    f"node {n.name!r}: {n.op} {n.attrs.get('direction', 'forward')}, "
                    f"hidden_size {n.layer.hidden_size}, input {n.layer.input_size}, "
                    f"layout {n.attrs.get('layout', 0)}"
                    + (", sequence_lens" if given["sequence_lens"] else "")
                    + (f", clip {n.attrs['clip']}" if "clip" in n.attrs else ""))
            run_nodes.append(n)
            continue
        if all((not i) or i in consts for i in n.inputs):
            try:
                with ops.size_limit(fold_limit):     # constants: sized by the file
                    res = ops.OPS[n.op](n.ctx, [consts[i] if i else None for i in n.inputs])
            except DrnnError as e:
                raise type(e)(f"{e}") from None
            except _BAD_VALUE as e:
                raise FormatError(f"{n.where}: cannot evaluate constant node: {e}") from None
            for name, v in zip(n.outputs, res):
                if name:
                    v = np.array(v, copy=True)
                    v.setflags(write=False)
                    consts[name] = v
            continue
        run_nodes.append(n)

    for key in ("inferred", "defaulted"):     # notes name the node; the file is in source["file"]
        source[key][:] = [s[len(path) + 2:] if s.startswith(path + ": ") else s
                          for s in source[key]]
    for name in outputs:
        if name not in consts and name not in inputs and not any(
                name in n.outputs for n in run_nodes):
            raise FormatError(f"{path}: graph output {name!r} is produced by no node")
    model = OnnxModel(path, inputs, outputs, consts, run_nodes, opset, source, input_meta)
    model._num_parameters = _count_parameters(nodes, param_names, consts)
    return model


def _count_parameters(nodes, param_names, consts):
    """Float initialisers and Constant values of the file (not folded intermediates)
    that some node uses as a weight: not initial states or lengths of recurrent
    nodes, and not the zeros exporters Expand into initial states."""
    not_weight = {"Expand", "Shape", "Size", "ConstantOfShape"}
    counted = set()
    for n in nodes:
        for i, name in enumerate(n.inputs):
            if name not in param_names or name in counted:
                continue
            if n.op in not_weight or (n.op in ops.RECURRENT_OPS and i in (0, 4, 5, 6)):
                continue
            v = consts.get(name)
            if v is not None and v.dtype.kind == "f":
                counted.add(name)
    return int(sum(consts[name].size for name in counted))


def _toposort(path, nodes, available, outputs):
    """Kahn's algorithm over tensor names; undefined inputs or cycles are FormatErrors."""
    producers = {}
    for n in nodes:
        for o in n.outputs:
            if o:
                if o in producers or o in available:
                    raise FormatError(f"{n.where}: output {o!r} is defined twice")
                producers[o] = n
    for n in nodes:
        for i in n.inputs:
            if i and i not in available and i not in producers:
                raise FormatError(f"{n.where}: input {i!r} is not a graph input, initializer "
                                  "or node output")
    order, done, ready = [], set(available), []
    pending = {id(n): sum(1 for i in set(n.inputs) if i and i not in available) for n in nodes}
    users = {}
    for n in nodes:
        for i in set(n.inputs):
            if i and i not in available:
                users.setdefault(i, []).append(n)
    ready = [n for n in nodes if pending[id(n)] == 0]
    while ready:
        n = ready.pop(0)
        order.append(n)
        for o in n.outputs:
            if o and o not in done:
                done.add(o)
                for u in users.get(o, []):
                    pending[id(u)] -= 1
                    if pending[id(u)] == 0:
                        ready.append(u)
    if len(order) != len(nodes):
        raise FormatError(f"{path}: the graph has a cycle")
    missing = [o for o in outputs if o not in done]
    if missing:
        raise FormatError(f"{path}: graph outputs {missing} are produced by no node")
    return order


# ---------------------------------------------------------------------------
# ONNX graph -> DRNN (for `drnn convert`)
# ---------------------------------------------------------------------------
#
# A graph converts when it is a pure stack: the first output is reached from
# the first input through a single chain of (Gather embedding)? -> recurrent
# nodes and dense heads, joined only by layout glue.  _trace walks that chain
# backwards from the output, classifying each node; every other input of a
# node on the chain must be a constant or computed from shapes only (the
# exporters' zero initial states, dynamic Reshape targets).  _assemble turns
# the chain into drnn layers, and _verify runs the candidate DRNN and the
# graph itself on two random probes, trying the graph's possible input
# layouts (batch- or time-major) and output layouts, and keeps the candidate
# only if they agree to 1e-5: the pattern says what the graph probably is,
# the probe run proves it.

_GLUE = ("Identity", "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten",
         "Dropout")
_HEAD_ACTS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Softmax": "softmax",
              "LogSoftmax": "log_softmax"}
_SHAPE_OPS = ("Shape", "Size")
_CONVERT_TOL = 1e-5


class _NotAStack(UnsupportedError):
    pass


def _refuse(node, why):
    label = repr(node.name) if node.name else f"producing {node.outputs[0]!r}"
    raise _NotAStack(f"node {label} ({node.op}) {why}")


def _trace(model):
    """Nodes from the first output back to the first input: [(node, main slot, output idx)]."""
    if len(model.input_names) != 1:
        raise _NotAStack(f"the graph has {len(model.input_names)} inputs "
                         f"({model.input_names}); a drnn stack takes one")
    producer = {}
    for n in model._nodes:
        for k, o in enumerate(n.outputs):
            if o:
                producer[o] = (n, k)
    consts = model._consts
    start = model.input_names[0]
    free_memo = {}

    def data_free(name):
        """True when the tensor does not depend on the input's values (only on its shape)."""
        if not name or name in consts:
            return True
        if name == start:
            return False
        if name in free_memo:
            return free_memo[name]
        free_memo[name] = False
        n, _ = producer[name]
        ok = n.op in _SHAPE_OPS or all(data_free(i) for i in n.inputs)
        free_memo[name] = ok
        return ok

    chain = []
    cur = model.output_names[0]
    if cur in consts:
        raise _NotAStack("the first output is a constant")
    while cur != start:
        if cur not in producer:
            raise _NotAStack(f"tensor {cur!r} is not computed from the input")
        n, k = producer[cur]
        picked = _pick_final_state(n, producer, consts)
        if picked is not None:
            # h_n[i] of a stack exported as Concat(Y_h of every layer) -> Gather(i):
            # the final state of one (unidirectional) layer; the other layers' are unused.
            chain.append((n, 0, 0))
            cur = picked
            continue
        if n.op in ops.RECURRENT_OPS:
            slot = 0
        elif n.op == "Gather" and n.inputs[0] in consts:
            slot = 1
        elif n.op in ("Add", "Mul") and n.inputs[0] in consts:
            slot = 1
        else:
            slot = 0
        if n.op not in ops.RECURRENT_OPS and k != 0:
            _refuse(n, f"is followed through its output {k}; drnn follows output 0")
        for i, name in enumerate(n.inputs):
            if i != slot and name and not data_free(name):
                _refuse(n, f"takes a second computed input {name!r} (input {i}); a drnn stack "
                           "is a single chain")
        chain.append((n, slot, k))
        cur = n.inputs[slot] if slot < len(n.inputs) else ""
        if not cur:
            _refuse(n, "has no data input")
    chain.reverse()
    return chain


def _pick_final_state(n, producer, consts):
    """Gather(Concat(Y_h, Y_h, ...), i) on axis 0 -> the Y_h tensor it selects, else None."""
    if n.op != "Gather" or int(n.attrs.get("axis", 0)) != 0 or n.inputs[0] not in producer:
        return None
    cn = producer[n.inputs[0]][0]
    idx = consts.get(n.inputs[1]) if len(n.inputs) > 1 else None
    if cn.op != "Concat" or int(cn.attrs.get("axis", 0)) != 0 or idx is None or idx.ndim != 0:
        return None
    parts = []
    for name in cn.inputs:
        p = producer.get(name)
        if p is None or p[0].op not in ops.RECURRENT_OPS or p[1] != 1 or p[0].layer is None:
            return None
        parts.extend((name, p[0], d) for d in range(p[0].layer.num_directions))
    if not -len(parts) <= int(idx) < len(parts):
        return None
    name, rn, d = parts[int(idx)]
    if rn.layer.num_directions != 1:
        _refuse(n, f"selects direction {d} of the bidirectional {rn.op} {rn.name!r}'s final "
                   "state; drnn's last-step output holds both directions")
    return name


def _const(model, node, i, what):
    name = node.inputs[i] if i < len(node.inputs) else ""
    v = model._consts.get(name) if name else None
    if v is None:
        _refuse(node, f"has a computed {what} ({name!r}); drnn needs a constant")
    return v


def _assemble(model, chain):
    """The chain's nodes -> drnn layers (plus notes)."""
    from ..layers import Dense, Embedding
    items = []          # ["emb", layer] | ["rnn", layer, node] | ["dense", W, b, act, node]
    select_node = None
    for n, slot, k in chain:
        op = n.op
        last = items[-1] if items else None
        if op in ops.RECURRENT_OPS:
            if n.layer is None:
                _refuse(n, "has W/R/B computed in the graph")
            if k == 2:
                _refuse(n, "is followed through Y_c (the LSTM cell state), which no drnn "
                           "layer outputs")
            if select_node is not None or any(it[0] == "rnn" and not it[1].return_sequences
                                              for it in items):
                _refuse(n, "follows a layer that keeps only the last step")
            if int(n.attrs.get("layout", 0)) not in (0, 1):
                _refuse(n, "has an unknown layout")
            items.append(["rnn", n.layer, n, k == 1])
        elif op == "Gather" and slot == 1:
            table = _const(model, n, 0, "embedding table")
            if items or table.ndim != 2 or table.dtype.kind != "f" or \
                    int(n.attrs.get("axis", 0)) != 0:
                _refuse(n, "is not an embedding lookup on the graph's input "
                           "(a constant 2-D float table, axis 0)")
            items.append(["emb", Embedding(table.shape[0], table.shape[1],
                                           weights={"weight": table})])
        elif op == "Gather" and items and items[-1][0] == "rnn" and items[-1][3] \
                and not items[-1][1].bidirectional and _scalar(model, n, 1) in (0, -1) \
                and int(n.attrs.get("axis", 0)) == 0:
            continue            # Y_h[0] of a unidirectional layer: its final state
        elif op == "Gather" and _pick_final_state(n, _producers(model), model._consts):
            continue            # see _trace
        elif op == "Gather" or op == "Slice":
            rec = [it for it in items if it[0] == "rnn"]
            if op == "Gather":
                idx = _const(model, n, 1, "index")
                ok = idx.ndim == 0 and int(idx) == -1
            else:
                starts = _const(model, n, 1, "starts") if model.opset >= 10 else \
                    np.asarray(n.attrs.get("starts", []))
                ends = _const(model, n, 2, "ends") if model.opset >= 10 else \
                    np.asarray(n.attrs.get("ends", []))
                steps = model._consts.get(n.inputs[4]) if len(n.inputs) > 4 and n.inputs[4] \
                    else None
                ok = (np.asarray(starts).reshape(-1).tolist() == [-1]
                      and np.asarray(ends).reshape(-1)[0] >= 2 ** 30
                      and (steps is None or np.asarray(steps).reshape(-1).tolist() == [1]))
            if not ok or not rec or select_node is not None:
                _refuse(n, "selects from the sequence in a way drnn cannot express (drnn "
                           "reads a selection of the last time step after the recurrent "
                           "layers)")
            layer = rec[-1][1]
            if layer.bidirectional or layer.reverse:
                _refuse(n, "takes the last time step of a bidirectional or reverse layer's "
                           "output, which is not its final state; drnn's last-step output is "
                           "the final state of each direction")
            if rec[-1][3]:
                _refuse(n, "selects from a final state")
            select_node = n
        elif op in _GLUE:
            continue
        elif op == "MatMul":
            w = _const(model, n, 1, "weight")
            if w.ndim != 2 or w.dtype.kind != "f":
                _refuse(n, f"multiplies by a {w.ndim}-D {w.dtype} constant; drnn reads a "
                           "2-D float weight")
            items.append(["dense", np.ascontiguousarray(w.T), None, "identity", n])
        elif op == "Gemm":
            w = _const(model, n, 1, "weight")
            if n.attrs.get("transA", 0) or w.ndim != 2:
                _refuse(n, "is not x @ W (transA set or W not 2-D)")
            w = w if n.attrs.get("transB", 0) else w.T
            alpha, beta = float(n.attrs.get("alpha", 1.0)), float(n.attrs.get("beta", 1.0))
            if alpha != 1.0:
                w = w * np.float32(alpha)
            b = None
            if len(n.inputs) > 2 and n.inputs[2]:
                b = _const(model, n, 2, "bias")
                if b.size != w.shape[0]:
                    _refuse(n, f"has a bias of shape {b.shape}; drnn needs one per output")
                b = b.reshape(-1) * np.float32(beta) if beta != 1.0 else b.reshape(-1)
            items.append(["dense", np.ascontiguousarray(w), b, "identity", n])
        elif op == "Add":
            b = _const(model, n, 1 - slot, "addend")
            if not last or last[0] != "dense" or last[2] is not None or last[3] != "identity" \
                    or b.size != last[1].shape[0] or b.shape[-1:] != (last[1].shape[0],):
                _refuse(n, "adds something other than the bias of the preceding MatMul")
            last[2] = b.reshape(-1)
        elif op in _HEAD_ACTS:
            if not last or last[0] != "dense" or last[3] != "identity":
                _refuse(n, "applies an activation that does not follow a dense layer")
            if op in ("Softmax", "LogSoftmax"):
                axis = int(n.attrs.get("axis", -1 if model.opset >= 13 else 1))
                if axis not in (-1, 1, 2):
                    _refuse(n, f"takes softmax over axis {axis}; drnn's is over features")
            last[3] = _HEAD_ACTS[op]
        else:
            _refuse(n, f"is not part of a recurrent stack's pattern (drnn converts Gather "
                       f"embeddings, LSTM/GRU/RNN, MatMul/Gemm(+Add) heads with "
                       f"{'/'.join(_HEAD_ACTS)}, and the layout glue {', '.join(_GLUE)})")
    if not any(it[0] == "rnn" for it in items):
        raise _NotAStack("the graph has no LSTM, GRU or RNN node on its path")
    if select_node is not None or any(it[0] == "rnn" and it[3] for it in items):
        # the last step only: the last recurrent layer returns its final state
        for it in reversed(items):
            if it[0] == "rnn":
                it.append(False)
                break
    layers = []
    for it in items:
        if it[0] == "emb":
            layers.append(it[1])
        elif it[0] == "rnn":
            rs = not (len(it) > 4 and it[4] is False)
            layers.append(_with_return_sequences(it[1], rs))
        else:
            w, b, act, n = it[1], it[2], it[3], it[4]
            try:
                layers.append(Dense(w.shape[1], w.shape[0], activation=act,
                                    weights={"weight": w, **({"bias": b} if b is not None
                                                             else {})}))
            except (ShapeError, UnsupportedError) as e:
                _refuse(n, f"cannot be a drnn Dense layer: {e}")
    return _fuse(layers)


def _scalar(model, n, i):
    v = model._consts.get(n.inputs[i]) if len(n.inputs) > i and n.inputs[i] else None
    return int(v) if v is not None and v.ndim == 0 and v.dtype.kind in "iu" else None


def _producers(model):
    return {o: (n, k) for n in model._nodes for k, o in enumerate(n.outputs) if o}


def _with_return_sequences(layer, rs):
    cfg = layer.config()
    cfg["return_sequences"] = rs
    from ..layers import Layer
    return Layer.from_config(cfg, layer.params())


def _fuse(layers):
    """Consecutive recurrent layers of one configuration -> one multi-layer stack."""
    from ..layers import Layer, Recurrent
    out = []
    for layer in layers:
        prev = out[-1] if out else None
        if isinstance(layer, Recurrent) and isinstance(prev, Recurrent) \
                and prev.kind == layer.kind and prev.return_sequences and not prev.reverse \
                and not layer.reverse:
            pc, lc = prev.config(), layer.config()
            same = all(pc.get(key) == lc.get(key) for key in lc
                       if key not in ("input_size", "num_layers", "return_sequences"))
            if same and lc["num_layers"] == 1:
                L = pc["num_layers"]
                params = dict(prev.params())
                for key, v in layer.params().items():
                    params[key.replace("_l0", f"_l{L}")] = v
                pc["num_layers"] = L + 1
                pc["return_sequences"] = lc["return_sequences"]
                out[-1] = Layer.from_config(pc, params)
                continue
        out.append(layer)
    return out


def _probe_inputs(model, drnn_model, seed):
    """Two random inputs for the graph's first input, in its declared dtype and shape."""
    name = model.input_names[0]
    dt, shape = model._input_meta.get(name, (None, None))
    rng = np.random.default_rng(seed)
    probes = []
    for dims in ((3, 5), (2, 7)):
        want = list(shape) if shape else []
        rank = 2 if drnn_model.takes_tokens else 3
        if len(want) != rank:
            want = [None] * rank
        free = iter(dims)
        shp = []
        for i, d in enumerate(want):
            if isinstance(d, int) and d > 0:
                shp.append(d)
            elif i == rank - 1 and not drnn_model.takes_tokens:
                shp.append(drnn_model.input_size)
            else:
                shp.append(next(free, 4))
        if drnn_model.takes_tokens:
            x = rng.integers(0, drnn_model.layers[0].num_embeddings, shp)
            x = x.astype(dt if dt is not None and np.dtype(dt).kind in "iu" else np.int64)
        else:
            x = rng.standard_normal(shp).astype(dt if dt is not None else np.float32)
        probes.append(x)
    return probes


def _out_views(o, B, T, seq):
    """Ways a graph output may hold drnn's batch-first output: (name, array)."""
    views = [("as is", o)]
    if seq:
        if o.ndim == 3:
            views.append(("time-major", o.transpose(1, 0, 2)))
        if o.ndim == 4 and o.shape[0] == T and o.shape[2] == B:      # Y [T, D, N, H]
            views.append(("ONNX Y [T, D, N, H]", o.transpose(2, 0, 1, 3).reshape(B, T, -1)))
        if o.ndim == 4 and o.shape[:2] == (B, T):                     # Y layout 1
            views.append(("ONNX Y layout 1", o.reshape(B, T, -1)))
    else:
        if o.ndim == 3 and o.shape[1] == B:                           # Y_h [D, N, H]
            views.append(("ONNX Y_h [D, N, H]", o.transpose(1, 0, 2).reshape(B, -1)))
        if o.ndim == 3 and o.shape[0] == B:
            views.append(("[N, D, H]", o.reshape(B, -1)))
    return views


def _verify(model, drnn_model):
    """-> (input layout, output layout) under which drnn_model reproduces the graph."""
    probes = _probe_inputs(model, drnn_model, 0)
    feature_axes = 0 if drnn_model.takes_tokens else 1
    found = None
    worst = None
    for in_name, perm in (("batch-major", None), ("time-major", (1, 0))):
        ok_all, out_name = True, None
        for x in probes:
            xin = x if perm is None else np.ascontiguousarray(
                x.transpose(perm + tuple(range(2, 2 + feature_axes))))
            try:
                y = drnn_model.predict(xin)
                ref = model.predict(x)
            except (DrnnError, ValueError, TypeError, IndexError) as e:
                raise _NotAStack(f"running the candidate on a probe failed: {e}") from None
            B, T = xin.shape[0], xin.shape[1]
            match = None
            for name, v in _out_views(np.asarray(ref), B, T, drnn_model.returns_sequences):
                if v.shape == y.shape:
                    err = float(np.max(np.abs(v.astype(np.float32) - y))) if y.size else 0.0
                    tol = _CONVERT_TOL * max(1.0, float(np.max(np.abs(v))) if v.size else 1.0)
                    if worst is None or err < worst:
                        worst = err
                    if err <= tol and (out_name is None or out_name == name):
                        match = name
                        break
            if match is None:
                ok_all = False
                break
            out_name = match
        if ok_all:
            found = (in_name, out_name)
            break
    if found is None:
        raise _NotAStack("the candidate stack does not reproduce the graph on a random probe "
                         + (f"(closest max abs difference {worst:.3g})" if worst is not None
                            else "(no output layout matches)"))
    return found


def convert_to_drnn(model):
    """A DRNN computing the OnnxModel's first output, or UnsupportedError saying why not."""
    from ..model import DRNN
    try:
        chain = _trace(model)
        layers = _assemble(model, chain)
        try:
            drnn_model = DRNN(layers)
        except (ShapeError, UnsupportedError) as e:
            raise _NotAStack(f"the recognised layers do not chain: {e}") from None
        in_layout, out_layout = _verify(model, drnn_model)
    except _NotAStack as e:
        raise UnsupportedError(f"{model.path}: not a plain recurrent stack drnn's format can "
                               f"hold: {e}") from None
    notes = [f"converted from the ONNX graph: {len(chain)} nodes on the input->output path, "
             f"verified on random probes (max abs difference <= {_CONVERT_TOL})"]
    if in_layout != "batch-major":
        notes.append(f"the graph's input is {in_layout}; the drnn model takes batch-first input")
    if out_layout != "as is":
        notes.append(f"the graph's output is {out_layout}; the drnn model's is batch-first")
    if len(model.output_names) > 1:
        notes.append(f"only the first output {model.output_names[0]!r} is kept (the graph "
                     f"also returns {model.output_names[1:]})")
    src = model.source
    drnn_model.source = {"format": "onnx", "file": model.path,
                         "read": list(src.get("read", [])) + notes,
                         "inferred": list(src.get("inferred", [])),
                         "defaulted": list(src.get("defaulted", [])), "converted": notes}
    return drnn_model
