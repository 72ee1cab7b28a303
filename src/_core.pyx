# cython: language_level=3, boundscheck=False, wraparound=False, embedsignature=True
"""drnn._core -- the Cython layer between drnn's Python objects and its C kernels.

It validates every array the kernels will touch (dtype, shape, contiguity),
packs weights once per model, allocates outputs (and a workspace per model
and thread, reused across calls), releases the GIL around each C call and
turns C error codes into Python exceptions.  It knows nothing of files or
frameworks: the Python layer hands it arrays in PyTorch's layout.

Every check here is a last line of defence: the Python layer gives users the
friendlier message first, but nothing that reaches C can make it read or
write out of bounds.
"""
import os
import threading

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from cdrnn cimport *

cnp.import_array()

CELL_KINDS = {"rnn": DRNN_CELL_RNN, "lstm": DRNN_CELL_LSTM, "gru": DRNN_CELL_GRU}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}

# name -> (kind, default alpha, default beta)
ACTIVATIONS = {
    "sigmoid": (DRNN_ACT_SIGMOID, 0.0, 0.0),
    "tanh": (DRNN_ACT_TANH, 0.0, 0.0),
    "relu": (DRNN_ACT_RELU, 0.0, 0.0),
    "linear": (DRNN_ACT_LINEAR, 0.0, 0.0),
    "hard_sigmoid": (DRNN_ACT_HARD_SIGMOID, 0.2, 0.5),
    "affine": (DRNN_ACT_AFFINE, 1.0, 0.0),
    "leaky_relu": (DRNN_ACT_LEAKY_RELU, 0.01, 0.0),
    "thresholded_relu": (DRNN_ACT_THRESHOLDED_RELU, 1.0, 0.0),
    "scaled_tanh": (DRNN_ACT_SCALED_TANH, 1.0, 1.0),
    "elu": (DRNN_ACT_ELU, 1.0, 0.0),
    "softsign": (DRNN_ACT_SOFTSIGN, 0.0, 0.0),
    "softplus": (DRNN_ACT_SOFTPLUS, 0.0, 0.0),
}


class KernelError(RuntimeError):
    """A C kernel refused its arguments: a bug in drnn's checks, never the user's."""


cdef inline int _check(int rc) except -1:
    if rc != DRNN_OK:
        raise KernelError("drnn kernel error %d: %s" % (rc, drnn_strerror(rc).decode()))
    return 0


def _select_isa_from_environment():
    """Honour DRNN_ISA once, at import; an ISA this CPU or build lacks is an error.

    Packed weights depend on the ISA, so it is chosen here and never changes.
    """
    name = os.environ.get("DRNN_ISA", "").strip().lower() or "auto"
    if drnn_select_isa(name.encode()) != DRNN_OK:
        raise ImportError("DRNN_ISA=%r: no such instruction set in this build for this CPU; "
                          "available here: auto, %s (CPU features: %s)"
                          % (name, drnn_isa_list().decode().replace(" ", ", "),
                             drnn_cpu_features().decode()))


_select_isa_from_environment()


def isa_name():
    """The instruction set the kernels use."""
    return drnn_isa_name().decode()


def cpu_features():
    """What the CPU and OS support, as a list of names."""
    return drnn_cpu_features().decode().split()


def available_isas():
    """The instruction sets this build can run on this CPU."""
    return drnn_isa_list().decode().split()


def cpu_count():
    """CPUs this process may use (its affinity mask)."""
    return drnn_cpu_count()


def default_threads():
    """DRNN_NUM_THREADS if set (>= 1), else the CPUs this process may use."""
    value = os.environ.get("DRNN_NUM_THREADS", "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError("DRNN_NUM_THREADS=%r: expected a whole number >= 1" % value)
        return n
    return max(1, drnn_cpu_count())


cdef int _threads(object num_threads) except -1:
    if num_threads is None:
        return default_threads()
    n = int(num_threads)
    if n < 1:
        raise ValueError("num_threads must be >= 1, got %r" % (num_threads,))
    return n


cdef class _Workspaces:
    """One growing scratch buffer per thread, reused across calls."""
    cdef object local

    def __cinit__(self):
        self.local = threading.local()

    cdef object get(self, size_t nbytes):
        buf = getattr(self.local, "buf", None)
        if buf is None or buf.nbytes < nbytes:
            buf = np.empty(nbytes, dtype=np.uint8)
            self.local.buf = buf
        return buf


cdef drnn_act _make_act(object spec) except *:
    """spec = (name, alpha, beta) with a name from ACTIVATIONS."""
    cdef drnn_act a
    name, alpha, beta = spec
    if name not in ACTIVATIONS:
        raise ValueError("unknown activation %r; expected one of %s" % (name, ", ".join(ACTIVATIONS)))
    a.kind = ACTIVATIONS[name][0]
    a.alpha = alpha
    a.beta = beta
    return a


cdef const float *_fptr(object arr, tuple shape, str what) except? NULL:
    """Pointer to a float32 C-contiguous array of exactly this shape."""
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or not arr.flags.c_contiguous:
        raise TypeError("%s must be a C-contiguous float32 array" % what)
    if arr.shape != shape:
        raise ValueError("%s: expected shape %s, got %s" % (what, shape, arr.shape))
    return <const float *>cnp.PyArray_DATA(arr)


cdef class RecurrentStack:
    """A validated recurrent stack: its C description plus weight pointers.

    weights is a list of num_layers*num_directions dicts with keys w_ih,
    w_hh and optionally b_ih, b_hh, w_hr, peep (float32, C-contiguous, in
    PyTorch's layout).  The arrays are kept alive by this object.
    """
    cdef drnn_rnn_desc desc
    cdef drnn_cell_weights *w
    cdef list _keep
    cdef object _packed
    cdef _Workspaces _ws
    cdef readonly int gates, output_size, hidden_out, num_states

    def __cinit__(self):
        self.w = NULL

    def __init__(self, str cell, int input_size, int hidden_size, int num_layers=1,
                 int num_directions=1, int proj_size=0, bint reverse=False,
                 bint linear_before_reset=True, bint input_forget=False, float clip=0.0,
                 activations=None, weights=None):
        if cell not in CELL_KINDS:
            raise ValueError("cell must be one of rnn, lstm, gru; got %r" % (cell,))
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError("input_size, hidden_size and num_layers must be >= 1")
        if num_directions not in (1, 2):
            raise ValueError("num_directions must be 1 or 2, got %d" % num_directions)
        if proj_size < 0 or (proj_size > 0 and cell != "lstm"):
            raise ValueError("proj_size is for LSTM only and must be >= 0")
        if not (clip >= 0.0):
            raise ValueError("clip must be >= 0 (0 = no clip), got %r" % clip)
        memset(&self.desc, 0, sizeof(self.desc))
        self.desc.cell = CELL_KINDS[cell]
        self.desc.input_size = input_size
        self.desc.hidden_size = hidden_size
        self.desc.proj_size = proj_size
        self.desc.num_layers = num_layers
        self.desc.num_directions = num_directions
        self.desc.reverse = reverse
        self.desc.linear_before_reset = linear_before_reset
        self.desc.input_forget = input_forget
        self.desc.clip = clip
        if activations is None or len(activations) != num_directions:
            raise ValueError("activations: expected one list per direction")
        cdef int d, a
        for d in range(num_directions):
            if len(activations[d]) != 3:
                raise ValueError("activations: expected 3 (name, alpha, beta) per direction")
            for a in range(3):
                self.desc.act[d][a] = _make_act(activations[d][a])

        self.gates = GATES[cell]
        self.hidden_out = proj_size if proj_size > 0 else hidden_size
        self.output_size = num_directions * self.hidden_out
        self.num_states = 2 if cell == "lstm" else 1

        cdef int n = num_layers * num_directions
        if weights is None or len(weights) != n:
            raise ValueError("weights: expected %d layer-direction entries" % n)
        self.w = <drnn_cell_weights *>malloc(n * sizeof(drnn_cell_weights))
        if self.w == NULL:
            raise MemoryError()
        memset(self.w, 0, n * sizeof(drnn_cell_weights))
        self._keep = []
        cdef int i, in_l
        cdef int G = self.gates * hidden_size
        for i in range(n):
            wd = weights[i]
            where = "layer %d direction %d" % (i // num_directions, i % num_directions)
            in_l = input_size if i < num_directions else self.output_size
            self.w[i].w_ih = _fptr(wd.get("w_ih"), (G, in_l), where + " w_ih")
            self.w[i].w_hh = _fptr(wd.get("w_hh"), (G, self.hidden_out), where + " w_hh")
            if wd.get("b_ih") is not None:
                self.w[i].b_ih = _fptr(wd["b_ih"], (G,), where + " b_ih")
            if wd.get("b_hh") is not None:
                self.w[i].b_hh = _fptr(wd["b_hh"], (G,), where + " b_hh")
            if proj_size > 0:
                self.w[i].w_hr = _fptr(wd.get("w_hr"), (proj_size, hidden_size), where + " w_hr")
            elif wd.get("w_hr") is not None:
                raise ValueError(where + ": w_hr given but proj_size is 0")
            if wd.get("peep") is not None:
                if cell != "lstm":
                    raise ValueError(where + ": peepholes are for LSTM only")
                self.w[i].peep = _fptr(wd["peep"], (3 * hidden_size,), where + " peep")
            self._keep.append(dict(wd))

        cdef int err = 0
        cdef size_t nbytes = drnn_rnn_packed_size(&self.desc, &err)
        _check(err)
        self._packed = np.empty(nbytes, dtype=np.uint8)
        cdef void *pp = cnp.PyArray_DATA(self._packed)
        cdef int rc
        with nogil:
            rc = drnn_rnn_pack(&self.desc, self.w, pp, nbytes)
        _check(rc)
        self._ws = _Workspaces()

    def workspace_bytes(self, int64_t batch, int64_t steps, int num_threads=1):
        """Scratch one forward() over (batch, steps) needs (csrc/sequence.c)."""
        cdef int err = 0
        cdef size_t n = drnn_rnn_workspace_size(&self.desc, batch, steps, num_threads, &err)
        _check(err)
        return n

    @property
    def packed_bytes(self):
        return self._packed.nbytes

    def __dealloc__(self):
        free(self.w)

    def forward(self, x, lengths=None, h0=None, c0=None, bint want_state=True, num_threads=None):
        """Run the stack.

        x: (B, T, input_size) float32 C-contiguous; lengths: (B,) int32 in
        [0, T] or None; h0: (L*D, B, H_out), c0: (L*D, B, H) or None.
        Returns (y (B, T, D*H_out), h_n or None, c_n or None).
        """
        cdef drnn_rnn_desc *d = &self.desc
        if not isinstance(x, np.ndarray) or x.ndim != 3:
            raise ValueError("x: expected a 3-D (batch, time, features) array")
        cdef int64_t B = x.shape[0], T = x.shape[1]
        cdef const float *xp = _fptr(x, (B, T, d.input_size), "x")
        cdef int64_t LD = d.num_layers * d.num_directions
        cdef const int32_t *lp = NULL
        cdef const float *h0p = NULL
        cdef const float *c0p = NULL
        if lengths is not None:
            if (not isinstance(lengths, np.ndarray) or lengths.dtype != np.int32
                    or not lengths.flags.c_contiguous or lengths.shape != (B,)):
                raise ValueError("lengths: expected a C-contiguous int32 array of shape (%d,)" % B)
            if B and (lengths.min() < 0 or lengths.max() > T):
                raise ValueError("lengths must lie in [0, %d]" % T)
            lp = <const int32_t *>cnp.PyArray_DATA(lengths)
        if h0 is not None:
            h0p = _fptr(h0, (LD, B, self.hidden_out), "h0")
        if c0 is not None:
            if d.cell != DRNN_CELL_LSTM:
                raise ValueError("c0 is for LSTM only")
            c0p = _fptr(c0, (LD, B, d.hidden_size), "c0")

        y = np.empty((B, T, self.output_size), dtype=np.float32)
        hn = cn = None
        cdef float *hnp = NULL
        cdef float *cnp_ = NULL
        if want_state:
            hn = np.empty((LD, B, self.hidden_out), dtype=np.float32)
            hnp = <float *>cnp.PyArray_DATA(hn)
            if d.cell == DRNN_CELL_LSTM:
                cn = np.empty((LD, B, d.hidden_size), dtype=np.float32)
                cnp_ = <float *>cnp.PyArray_DATA(cn)

        cdef int nthreads = _threads(num_threads)
        cdef int err = 0
        cdef size_t ws_bytes = drnn_rnn_workspace_size(d, B, T, nthreads, &err)
        _check(err)
        workspace = self._ws.get(ws_bytes)
        cdef void *wsp = cnp.PyArray_DATA(workspace)
        cdef const void *pp = cnp.PyArray_DATA(self._packed)
        cdef float *yp = <float *>cnp.PyArray_DATA(y)
        cdef int64_t out = self.output_size, fin = d.input_size
        cdef int rc
        with nogil:
            rc = drnn_rnn_forward(d, pp, B, T, xp, T * fin, fin, lp, h0p, c0p,
                                  yp, T * out, out, hnp, cnp_, nthreads, wsp, ws_bytes)
        _check(rc)
        return y, hn, cn


cdef class DenseKernel:
    """A dense layer's packed weights: y = act(x . w^T + b), then softmax (1)
    or log-softmax (2) if asked."""
    cdef object _packed
    cdef readonly int64_t in_features, out_features

    def __init__(self, w, b=None):
        if not isinstance(w, np.ndarray) or w.ndim != 2:
            raise ValueError("w: expected a 2-D (out, in) array")
        self.out_features, self.in_features = w.shape[0], w.shape[1]
        if self.out_features < 1:
            raise ValueError("w: expected at least one output row")
        cdef const float *wp = _fptr(w, (self.out_features, self.in_features), "w")
        cdef const float *bp = NULL
        if b is not None:
            bp = _fptr(b, (self.out_features,), "b")
        cdef size_t nbytes = drnn_dense_packed_size(self.in_features, self.out_features)
        self._packed = np.empty(nbytes, dtype=np.uint8)
        cdef void *pp = cnp.PyArray_DATA(self._packed)
        cdef int rc
        with nogil:
            rc = drnn_dense_pack(self.in_features, self.out_features, wp, bp, pp, nbytes)
        _check(rc)

    def forward(self, x, activation, int softmax=0, num_threads=None):
        """x (rows, in) float32 C-contiguous -> (rows, out) float32."""
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise ValueError("x: expected a 2-D (rows, features) array")
        cdef int64_t rows = x.shape[0], nin = self.in_features, nout = self.out_features
        cdef const float *xp = _fptr(x, (rows, nin), "x")
        cdef drnn_act act = _make_act(activation)
        cdef int nthreads = _threads(num_threads)
        y = np.empty((rows, nout), dtype=np.float32)
        cdef float *yp = <float *>cnp.PyArray_DATA(y)
        cdef const void *pp = cnp.PyArray_DATA(self._packed)
        cdef int rc
        cdef int sm = softmax
        with nogil:
            rc = drnn_dense_forward(rows, nin, nout, xp, nin, pp, act, sm, yp, nout, nthreads)
        _check(rc)
        return y


def activation(x, spec):
    """Apply an activation (name, alpha, beta) to a float32 array in place; returns it."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or not x.flags.c_contiguous:
        raise TypeError("x must be a C-contiguous float32 array")
    if not x.flags.writeable:
        raise ValueError("x must be writeable")
    cdef drnn_act act = _make_act(spec)
    cdef float *xp = <float *>cnp.PyArray_DATA(x)
    cdef int64_t n = x.size
    cdef int rc
    with nogil:
        rc = drnn_activation(act, xp, n)
    _check(rc)
    return x


# ---------------------------------------------------------------------------
# Streams: a whole model (Embedding?, recurrent stacks, Dense heads) stepped
# through time with its state carried between calls.
#
# StreamEngine owns everything a step touches -- two state buffers per
# recurrent stack (a step reads one and writes the other; the parity flips
# when every stage succeeded, so a failed call leaves the state as it was),
# two ping-pong activation buffers and one workspace -- allocated once and
# grown only when run() gets a longer chunk.  step() validates its frame,
# then runs every stage back to back in one nogil region with one thread.
# run() cuts a long chunk into slices of time (RUN_SLICE_BYTES of scratch
# each) run one after the other with the state carried, so its scratch
# stays bounded however long the chunk.
# Stages call the same C entry points as predict() (drnn_rnn_forward with
# T = 1 and the carried state as h0/c0, drnn_dense_forward), whose sums do
# not depend on T or the batch, so streamed outputs are predict()'s bits.
#
# A Python subclass (drnn.stream.Stream) supplies the friendly parts: input
# coercion with drnn's error classes (_coerce_step, _coerce_chunk, _bad_out,
# _bad_token, _busy), state in predict()'s layout, repr.  The engine calls
# them only off the fast path.  Concurrent use of one engine from two
# threads is detected with a flag tested and set under the GIL: the second
# caller gets an error, the state is never touched by two calls at once.
# ---------------------------------------------------------------------------

from libc.string cimport memcpy

# Scratch (workspace and activation buffers) one run() slice may use: the
# workspace holds every step's input projection, B*T*G*H floats per layer.
# Big enough that slicing costs nothing measurable (an LSTM 64 at batch 1
# gets ~20k steps a slice); small enough to keep a long chunk's scratch
# below its own output.
RUN_SLICE_BYTES = 32 << 20

cdef enum:
    _ST_EMBED = 0
    _ST_RNN = 1
    _ST_DENSE = 2

cdef struct _stage:
    int kind
    int64_t in_w, out_w
    const drnn_rnn_desc *desc      # RNN
    const void *packed             # RNN, DENSE
    int last_only                  # RNN: return_sequences=False
    float *h[2]
    float *c[2]
    drnn_act act                   # DENSE
    int softmax
    const float *table             # EMBED
    int64_t n_emb


cdef class StreamEngine:
    """The C side of a Stream; see drnn.stream.Stream for the user API.

    stages: list of ("embed", weight (N, dim)), ("rnn", RecurrentStack,
    last_only) and ("dense", DenseKernel, (name, alpha, beta), softmax), in
    model order; batch_size >= 1; scratch_per_row_step: the workspace and
    layer-output bytes one more step of one sequence adds
    (DRNN._scratch_per_row_step; 0 without recurrent stages), which sizes
    run()'s slices.
    """
    cdef _stage *st
    cdef int n
    cdef readonly int64_t batch_size, input_size, output_size
    cdef readonly bint takes_tokens, drops_time
    cdef int parity, busy
    cdef readonly int step_threads
    cdef list _keep, _states
    cdef object _ws, _bufs
    cdef void *wsp
    cdef readonly size_t ws_bytes
    cdef float *bufp[2]
    cdef readonly int64_t buf_floats
    cdef int64_t max_w
    cdef double row_step

    def __cinit__(self, *args, **kwargs):
        self.st = NULL
        self.n = 0

    def __dealloc__(self):
        free(self.st)

    def __init__(self, stages, int64_t batch_size, double scratch_per_row_step=0.0):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1, got %d" % batch_size)
        if self.st != NULL:
            raise RuntimeError("StreamEngine initialised twice")
        cdef int n = len(stages)
        if n < 1:
            raise ValueError("a stream needs at least one stage")
        self.st = <_stage *>malloc(n * sizeof(_stage))
        if self.st == NULL:
            raise MemoryError()
        memset(self.st, 0, n * sizeof(_stage))
        self.n = n
        self.batch_size = batch_size
        self._keep = []
        self._states = []
        self.parity = 0
        self.busy = 0
        self.step_threads = 1
        self.row_step = scratch_per_row_step
        cdef int i, p
        cdef _stage *s
        cdef RecurrentStack rs
        cdef DenseKernel dk
        cdef int64_t B = batch_size, LD, width = -1
        cdef int err = 0
        cdef size_t wsb
        self.ws_bytes = 0
        self.max_w = 1
        self.drops_time = False
        for i in range(n):
            s = &self.st[i]
            item = stages[i]
            kind = item[0]
            if kind == "embed":
                if i != 0:
                    raise ValueError("an embedding must be the first stage")
                table = item[1]
                if not isinstance(table, np.ndarray) or table.ndim != 2:
                    raise ValueError("embedding table: expected a 2-D array")
                s.kind = _ST_EMBED
                s.table = _fptr(table, (table.shape[0], table.shape[1]), "embedding table")
                s.n_emb = table.shape[0]
                s.in_w = 1
                s.out_w = table.shape[1]
                self._keep.append(table)
            elif kind == "rnn":
                rs = item[1]
                if rs.desc.num_directions != 1 or rs.desc.reverse:
                    raise ValueError("a stream needs forward-only recurrent stacks")
                s.kind = _ST_RNN
                s.desc = &rs.desc
                s.packed = cnp.PyArray_DATA(rs._packed)
                s.last_only = bool(item[2])
                s.in_w = rs.desc.input_size
                s.out_w = rs.output_size
                LD = rs.desc.num_layers
                bufs = []
                for p in range(2):
                    h = np.zeros((LD, B, rs.hidden_out), dtype=np.float32)
                    s.h[p] = <float *>cnp.PyArray_DATA(h)
                    c = None
                    if rs.desc.cell == DRNN_CELL_LSTM:
                        c = np.zeros((LD, B, rs.desc.hidden_size), dtype=np.float32)
                        s.c[p] = <float *>cnp.PyArray_DATA(c)
                    bufs.append((h, c))
                self._states.append(bufs)
                self._keep.append(rs)
                wsb = drnn_rnn_workspace_size(s.desc, B, 1, 1, &err)
                _check(err)
                if wsb > self.ws_bytes:
                    self.ws_bytes = wsb
                if s.last_only:
                    self.drops_time = True
            elif kind == "dense":
                dk = item[1]
                s.kind = _ST_DENSE
                s.packed = cnp.PyArray_DATA(dk._packed)
                s.in_w = dk.in_features
                s.out_w = dk.out_features
                s.act = _make_act(item[2])
                s.softmax = int(item[3])
                self._keep.append(dk)
            else:
                raise ValueError("unknown stage kind %r" % (kind,))
            if i > 0 and s.in_w != width:
                raise ValueError("stage %d expects %d features, stage %d gives %d"
                                 % (i, s.in_w, i - 1, width))
            width = s.out_w
            if s.out_w > self.max_w:
                self.max_w = s.out_w
        self.takes_tokens = self.st[0].kind == _ST_EMBED
        self.input_size = 0 if self.takes_tokens else self.st[0].in_w
        self.output_size = width
        self._ws = np.empty(max(self.ws_bytes, <size_t>64), dtype=np.uint8)
        self.wsp = cnp.PyArray_DATA(self._ws)
        self.buf_floats = 0
        self._bufs = [None, None]
        self._grow(1)

    cdef int _grow(self, int64_t T) except -1:
        """Activation buffers for B*T rows of the widest stage."""
        cdef int64_t need = self.batch_size * T * self.max_w
        if need <= self.buf_floats:
            return 0
        for p in range(2):
            self._bufs[p] = np.empty(need, dtype=np.float32)
            self.bufp[p] = <float *>cnp.PyArray_DATA(self._bufs[p])
        self.buf_floats = need
        return 0

    cdef int _grow_ws(self, int64_t T, int nthreads) except -1:
        cdef int i, err = 0
        cdef size_t need = 0, b
        for i in range(self.n):
            if self.st[i].kind == _ST_RNN:
                b = drnn_rnn_workspace_size(self.st[i].desc, self.batch_size, T, nthreads, &err)
                _check(err)
                if b > need:
                    need = b
        if need > self.ws_bytes:
            self._ws = np.empty(need, dtype=np.uint8)
            self.wsp = cnp.PyArray_DATA(self._ws)
            self.ws_bytes = need
        return 0

    cdef int _forward(self, const float *x, const int64_t *ids, int64_t T, float *y,
                      int nthreads) noexcept nogil:
        """Every stage over (B, T) inputs; y gets (B, T, out) or (B, out) when a
        stage drops time.  The state parity flips only if every stage succeeded."""
        cdef int64_t B = self.batch_size, Teff = T, r, rows, stride
        cdef const float *cur = x
        cdef int64_t cur_sb = T * self.input_size, cur_st = self.input_size
        cdef int i, rc = DRNN_OK, p = self.parity, q = 1 - self.parity
        cdef _stage *s
        cdef float *dst
        cdef bint last, squeeze
        for i in range(self.n):
            s = &self.st[i]
            last = i == self.n - 1
            squeeze = s.kind == _ST_RNN and s.last_only and Teff > 1
            dst = y if (last and not squeeze) else self.bufp[i % 2]
            if s.kind == _ST_EMBED:
                for r in range(B * Teff):
                    memcpy(dst + r * s.out_w, s.table + ids[r] * s.out_w,
                           <size_t>s.out_w * sizeof(float))
            elif s.kind == _ST_RNN:
                rc = drnn_rnn_forward(s.desc, s.packed, B, Teff, cur, cur_sb, cur_st, NULL,
                                      s.h[p], s.c[p], dst, Teff * s.out_w, s.out_w,
                                      s.h[q], s.c[q], nthreads, self.wsp, self.ws_bytes)
                if rc != DRNN_OK:
                    return rc
                if squeeze:
                    # return_sequences=False: only the last step goes on.
                    cur = dst + (Teff - 1) * s.out_w
                    cur_sb = Teff * s.out_w
                    cur_st = s.out_w
                    Teff = 1
                    if last:
                        for r in range(B):
                            memcpy(y + r * s.out_w, cur + r * cur_sb,
                                   <size_t>s.out_w * sizeof(float))
                    continue
            else:
                if Teff == 1:
                    rows, stride = B, cur_sb
                else:
                    rows, stride = B * Teff, cur_st
                rc = drnn_dense_forward(rows, s.in_w, s.out_w, cur, stride, s.packed, s.act,
                                        s.softmax, dst, s.out_w, nthreads)
                if rc != DRNN_OK:
                    return rc
            cur = dst
            cur_sb = Teff * s.out_w
            cur_st = s.out_w
        self.parity = q
        return DRNN_OK

    cdef int _check_ids(self, const int64_t *ids, int64_t count) except -1:
        cdef int64_t r, n_emb = self.st[0].n_emb
        for r in range(count):
            if ids[r] < 0 or ids[r] >= n_emb:
                self._bad_token(ids[r])
                raise ValueError("token id %d is outside [0, %d)" % (ids[r], n_emb))
        return 0

    def step(self, x, out=None):
        """One time step: x is (features,) / (batch, features), or token id(s)."""
        if self.busy:
            self._busy()
            raise RuntimeError("this stream is in use by another thread")
        cdef int64_t B = self.batch_size, F = self.input_size, tok
        cdef bint unbatched
        cdef cnp.ndarray arr
        cdef const float *xp = NULL
        cdef const int64_t *ip = NULL
        cdef cnp.npy_intp *dims
        cdef int nd
        if self.takes_tokens:
            if self.st == NULL:
                raise RuntimeError("StreamEngine used before __init__")
            if type(x) is int and B == 1:
                if not 0 <= x < self.st[0].n_emb:
                    self._bad_token(x)
                    raise ValueError("token id out of range")
                tok = x
                ip = &tok
                unbatched = True
            else:
                if not (cnp.PyArray_Check(x) and cnp.PyArray_TYPE(x) == cnp.NPY_INT64
                        and cnp.PyArray_IS_C_CONTIGUOUS(x) and cnp.PyArray_ISNOTSWAPPED(x)
                        and ((cnp.PyArray_NDIM(x) == 0 and B == 1)
                             or (cnp.PyArray_NDIM(x) == 1 and cnp.PyArray_DIMS(x)[0] == B))):
                    x, unbatched = self._coerce_step(x)
                else:
                    unbatched = cnp.PyArray_NDIM(x) == 0
                arr = x
                ip = <const int64_t *>cnp.PyArray_DATA(arr)
            self._check_ids(ip, B)
        else:
            if self.st == NULL:
                raise RuntimeError("StreamEngine used before __init__")
            if not (cnp.PyArray_Check(x) and cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
                    and cnp.PyArray_IS_C_CONTIGUOUS(x) and cnp.PyArray_ISNOTSWAPPED(x)
                    and ((cnp.PyArray_NDIM(x) == 1 and B == 1 and cnp.PyArray_DIMS(x)[0] == F)
                         or (cnp.PyArray_NDIM(x) == 2 and cnp.PyArray_DIMS(x)[0] == B
                             and cnp.PyArray_DIMS(x)[1] == F))):
                x, unbatched = self._coerce_step(x)
            else:
                unbatched = cnp.PyArray_NDIM(x) == 1
            arr = x
            xp = <const float *>cnp.PyArray_DATA(arr)
        cdef cnp.npy_intp odims[2]
        if unbatched:
            nd = 1
            odims[0] = self.output_size
        else:
            nd = 2
            odims[0] = B
            odims[1] = self.output_size
        if out is None:
            out = cnp.PyArray_EMPTY(nd, odims, cnp.NPY_FLOAT32, 0)
        elif not (cnp.PyArray_Check(out) and cnp.PyArray_TYPE(out) == cnp.NPY_FLOAT32
                  and cnp.PyArray_IS_C_CONTIGUOUS(out) and cnp.PyArray_ISWRITEABLE(out)
                  and cnp.PyArray_ISNOTSWAPPED(out)
                  and cnp.PyArray_NDIM(out) == nd and cnp.PyArray_DIMS(out)[0] == odims[0]
                  and (nd == 1 or cnp.PyArray_DIMS(out)[1] == odims[1])):
            self._bad_out(out, (int(odims[0]),) if nd == 1 else (int(odims[0]), int(odims[1])),
                          "step")
            raise ValueError("out: expected a writeable C-contiguous float32 array")
        cdef float *yp = <float *>cnp.PyArray_DATA(<cnp.ndarray>out)
        cdef const char *xa = <const char *>xp if xp != NULL else <const char *>ip
        cdef const char *xb = xa + (B * F * sizeof(float) if xp != NULL else B * sizeof(int64_t))
        cdef const char *ya = <const char *>yp
        cdef const char *yb = ya + B * self.output_size * sizeof(float)
        if ya < xb and xa < yb:
            self._bad_out(out, None, "step")
            raise ValueError("out: must not overlap the input frame")
        if self.busy:            # _coerce_step may have let another thread in
            self._busy()
            raise RuntimeError("this stream is in use by another thread")
        cdef int rc
        self.busy = 1
        with nogil:
            rc = self._forward(xp, ip, 1, yp, self.step_threads)
        self.busy = 0
        _check(rc)
        return out

    cdef int64_t _slice_steps(self):
        """Steps per run() slice: RUN_SLICE_BYTES over the scratch one step adds
        (the model's figure plus the second activation buffer)."""
        cdef double per_step = self.batch_size * (self.row_step + self.max_w * sizeof(float))
        return max(1, <int64_t>(RUN_SLICE_BYTES / per_step))

    def run(self, chunk, num_threads=None, out=None):
        """Many steps: chunk (time, features) / (batch, time, features), or token
        ids (time,) / (batch, time); state carried in and out.  out: a float32
        array of the output's shape to write instead of allocating one."""
        if self.busy:
            self._busy()
            raise RuntimeError("this stream is in use by another thread")
        cdef int64_t B = self.batch_size, T
        if self.st == NULL:
            raise RuntimeError("StreamEngine used before __init__")
        x, unbatched = self._coerce_chunk(chunk)
        cdef cnp.ndarray arr = x
        T = cnp.PyArray_DIMS(arr)[1]
        if self.takes_tokens:
            self._check_ids(<const int64_t *>cnp.PyArray_DATA(arr), B * T)
        cdef int nthreads = _threads(num_threads) if T > 1 else 1
        if self.drops_time:
            shape = (B, self.output_size)
        else:
            shape = (B, T, self.output_size)
        if out is None:
            y = np.empty(shape, dtype=np.float32)
            result = y[0] if unbatched else y
        else:
            result = self._run_out(out, shape[1:] if unbatched else shape, arr)
            y = result[None] if unbatched else result
        if T == 0:
            return result
        cdef int64_t step = self._slice_steps(), t0, t1, n
        cdef int rc = DRNN_OK
        cdef const float *xp
        cdef const int64_t *ip
        cdef float *yp
        cdef cnp.ndarray xs, ys
        cdef bint staged
        if self.busy:
            self._busy()
            raise RuntimeError("this stream is in use by another thread")
        self.busy = 1
        try:
            # Slices of time, the state carried from one to the next: the same
            # bits as one call (streams are exact for any split).  A model that
            # drops time has only Dense layers behind that layer: each slice
            # writes y, the last slice's output stays.
            t0 = 0
            while t0 < T and rc == DRNN_OK:
                t1 = min(T, t0 + step)
                n = t1 - t0
                xs = arr if n == T else np.ascontiguousarray(arr[:, t0:t1])
                staged = not self.drops_time and n < T and B > 1
                if staged:                      # y's slice is not contiguous
                    ys = np.empty((B, n, self.output_size), dtype=np.float32)
                elif self.drops_time or n == T:
                    ys = y
                else:
                    ys = y[:, t0:t1]            # batch 1: contiguous, written in place
                xp = NULL
                ip = NULL
                if self.takes_tokens:
                    ip = <const int64_t *>cnp.PyArray_DATA(xs)
                else:
                    xp = <const float *>cnp.PyArray_DATA(xs)
                yp = <float *>cnp.PyArray_DATA(ys)
                self._grow(n)
                self._grow_ws(n, nthreads)
                with nogil:
                    rc = self._forward(xp, ip, n, yp, nthreads)
                if rc == DRNN_OK and staged:
                    y[:, t0:t1] = ys
                t0 = t1
        finally:
            self.busy = 0
        _check(rc)
        return result

    cdef object _run_out(self, out, tuple shape, cnp.ndarray x):
        """Validate run()'s out= (shape as the caller sees it) and return it."""
        if not (cnp.PyArray_Check(out) and cnp.PyArray_TYPE(out) == cnp.NPY_FLOAT32
                and cnp.PyArray_IS_C_CONTIGUOUS(out) and cnp.PyArray_ISWRITEABLE(out)
                and cnp.PyArray_ISNOTSWAPPED(out) and out.shape == shape):
            self._bad_out(out, shape, "run")
            raise ValueError("out: expected a writeable C-contiguous float32 array")
        if np.may_share_memory(out, x):
            self._bad_out(out, None, "run")
            raise ValueError("out: must not overlap the input chunk")
        return out

    def _set_step_threads(self, int n):
        """Threads for step(): a step whose recurrent weights reach
        UNIT_SPLIT_BYTES (csrc/sequence.c) is split across them by hidden
        units (results are the same)."""
        if n < 1:
            raise ValueError("step threads must be >= 1, got %d" % n)
        if self.busy:
            self._busy()
            raise RuntimeError("this stream is in use by another thread")
        self._grow_ws(1, n)
        self.step_threads = n

    def _enter(self):
        """Mark the engine busy (for Python-side state access); pair with _leave."""
        if self.busy:
            self._busy()
            raise RuntimeError("this stream is in use by another thread")
        self.busy = 1

    def _leave(self):
        self.busy = 0

    def _state_buffers(self):
        """Per recurrent stage, the current (h, c or None) arrays (L, B, .): live views."""
        return [bufs[self.parity] for bufs in self._states]

    def _zero_state(self):
        for bufs in self._states:
            for h, c in bufs:
                h.fill(0.0)
                if c is not None:
                    c.fill(0.0)

    # Overridden by drnn.stream.Stream with drnn's error classes.
    def _busy(self):
        raise RuntimeError("this stream is in use by another thread")

    def _bad_out(self, out, shape, what):
        raise ValueError("%s out: expected a writeable C-contiguous float32 array of shape %s"
                         % (what, shape))

    def _bad_token(self, tok):
        raise ValueError("token id %d is outside [0, %d)" % (tok, self.st[0].n_emb))

    def _coerce_step(self, x):
        raise TypeError("step: expected a C-contiguous float32 array")

    def _coerce_chunk(self, x):
        raise TypeError("run: expected a C-contiguous float32 array")
