"""drnn.stream: stateful, step-at-a-time inference (``model.stream()``).

A Stream runs a model one frame (``step``) or one block of frames (``run``)
at a time and carries the recurrent state between calls, for audio effects,
sensor pipelines and online scoring.  How the parts fit:

* ``_core.StreamEngine`` (Cython) holds the state buffers (two per
  recurrent stack: a call reads one and writes the other), activation
  buffers and a workspace, all allocated once, and runs every layer back
  to back in one GIL-free region -- the same C kernels predict() uses, so a
  stream's outputs are predict()'s outputs bit for bit, however the
  sequence is split into steps and chunks.
* ``Stream`` (here) subclasses it: it builds the engine's stages from the
  model's layers, and supplies what is off the fast path -- input coercion
  and drnn's error classes, the ``state`` property in predict()'s layout,
  ``reset()``.  ``step`` is the engine's method itself: no Python frame runs
  on a well-formed float32 frame.

Semantics
---------
* ``step(x_t)``: x_t of shape (features,) gives (out,); (batch, features)
  gives (batch, out).  For a model that starts with an Embedding, x_t is one
  token id (an int, for batch_size 1) or an integer array of shape (batch,).
  ``out=`` (float32, C-contiguous, the output's shape) is written and
  returned instead of a new array.
* ``run(chunk)``: (time, features) -> (time, out), (batch, time, features)
  -> (batch, time, out) (token ids: (time,) / (batch, time)).  ``run(c)`` is
  exactly ``predict(c, initial_state=state, return_state=True)`` with the
  returned state kept.  ``out=`` as for step.  A long chunk runs in slices
  of time with the state carried (``_core.RUN_SLICE_BYTES`` of scratch
  each), so a stream's scratch stays bounded whatever the chunk's length.
* A recurrent layer with ``return_sequences=False`` (Keras) outputs only its
  last step.  In a stream that means: ``step`` returns the model's output as
  if the sequence ended at this frame (for a unidirectional layer that is
  this step's hidden state run through the layers behind it), and ``run``
  returns that output once, for the chunk's last frame: (out,) or
  (batch, out).  Either way, exactly what predict() gives for the sequence
  seen so far.
* ``state``: in predict()'s ``initial_state`` / ``return_state`` layout for
  a batched input -- per recurrent layer ``h`` (layers, batch, H_out) or the
  tuple ``(h, c)`` for an LSTM; a list of them when the model has several
  recurrent layers.  Reading returns copies; assigning copies in (with
  batch_size 1 the unbatched layout, without the batch axis, is accepted
  too); ``None`` resets.
* Bidirectional and ``reverse=True`` layers need the whole sequence and are
  refused with UnsupportedError.  NaN in a frame gives NaN outputs and a NaN
  state; ``reset()`` recovers.

Threads: a model can feed any number of streams on any threads (its packed
weights are read-only).  A Stream belongs to one thread at a time: a second
thread calling it while a call is running gets a StreamBusyError; the state
is never touched by two calls at once.

``model.stream(num_threads=1)``: each step() runs on the calling thread.
With ``num_threads=2`` (or more; None: drnn's default), a step whose
recurrent weights reach 128 KiB (an LSTM of about 91 units, a GRU of 105) is
split across cores by hidden units, each streaming its share from its own
cache (LSTM 128: 5.3 -> 3.6 us a step; 2-layer GRU 256: 36 -> 20 us) -- for
steps called back to back (the pool's workers spin ~100 us between jobs; a
step after a longer pause pays their wake-up).  Smaller steps stay on one
thread: they gain little split, and lose ~2 us a step whenever the machine
does not run both cores at once (csrc/sequence.c, UNIT_SPLIT_BYTES).
Results are identical.  run() takes num_threads per call, like predict().
"""
import numpy as np

from . import _core
from .errors import DrnnError, DtypeError, ShapeError, UnsupportedError
from .layers import _DENSE_ACTIVATIONS, _SOFTMAX_MODES, Dense, Embedding, Recurrent

__all__ = ["Stream", "StreamBusyError"]


class StreamBusyError(DrnnError, RuntimeError):
    """A Stream was called from a second thread while a call was running."""


def _stages(model):
    stages = []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Embedding):
            stages.append(("embed", layer.weight))
        elif isinstance(layer, Recurrent):
            if layer.bidirectional or layer.reverse:
                what = "bidirectional" if layer.bidirectional else "reverse=True"
                raise UnsupportedError(
                    f"stream: layer {i} ({layer.kind}) is {what}: it needs the whole sequence "
                    "before its first output, so it cannot run step by step; use predict()")
            stages.append(("rnn", layer._stack, not layer.return_sequences))
        elif isinstance(layer, Dense):
            stages.append(("dense", layer._kernel,
                           (_DENSE_ACTIVATIONS[layer.activation], 0.0, 0.0),
                           _SOFTMAX_MODES.get(layer.activation, 0)))
        else:
            raise UnsupportedError(f"stream: layer {i} is a {type(layer).__name__}, "
                                   "which streams do not support")
    return stages


class Stream(_core.StreamEngine):
    """Stateful inference, one frame or one block at a time.  Make one with
    ``model.stream(batch_size=1)``; see the module docstring for shapes."""

    def __init__(self, model, batch_size=1, num_threads=1):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ShapeError(f"stream: batch_size must be an integer >= 1, got {batch_size!r}")
        if num_threads is None:
            num_threads = _core.default_threads()
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) \
                or num_threads < 1:
            raise ValueError(f"stream: num_threads must be an integer >= 1 or None, got "
                             f"{num_threads!r}")
        _core.StreamEngine.__init__(self, _stages(model), int(batch_size),
                                    model._slice_row_step or 0.0)
        self._set_step_threads(int(num_threads))
        self.model = model
        self._rec = [model.layers[i] for i in model._recurrent]

    def __repr__(self):
        return (f"<drnn.Stream batch_size={self.batch_size} "
                f"{' -> '.join(l.kind for l in self.model.layers)}>")

    def __reduce__(self):
        raise TypeError("a Stream holds live state and cannot be pickled; pickle the model "
                        "and its stream's .state instead")

    # -- state -----------------------------------------------------------
    def reset(self):
        """Zero the state: the next step starts a new sequence."""
        self._enter()
        try:
            self._zero_state()
        finally:
            self._leave()

    @property
    def state(self):
        """The carried state in predict()'s layout (copies); None without recurrent layers."""
        if not self._rec:
            return None
        self._enter()
        try:
            entries = []
            for h, c in self._state_buffers():
                entries.append(h.copy() if c is None else (h.copy(), c.copy()))
        finally:
            self._leave()
        return entries[0] if len(entries) == 1 else entries

    @state.setter
    def state(self, value):
        if value is None:
            self.reset()
            return
        if not self._rec:
            raise ShapeError("stream state: this model has no recurrent layer")
        try:
            arrays = self.model._prepare_state(value, self.batch_size, False)
        except ShapeError:
            if self.batch_size != 1:
                raise
            try:    # batch_size 1 also takes predict()'s unbatched layout
                arrays = self.model._prepare_state(value, 1, True)
            except DrnnError:
                arrays = None
            if arrays is None:
                raise
        self._enter()
        try:
            for (h, c), parts in zip(self._state_buffers(), arrays):
                h[...] = parts[0]
                if c is not None:
                    c[...] = parts[1]
        finally:
            self._leave()

    # -- off the fast path: coercion and errors ---------------------------
    def _busy(self):
        raise StreamBusyError("stream: this Stream is being used by another thread right now; "
                              "a Stream belongs to one thread (make one stream per thread)")

    def _bad_out(self, out, shape, what):
        if shape is None:
            frame = "frame" if what == "step" else "chunk"
            raise ShapeError(f"{what} out=: the output buffer must not overlap the input {frame}")
        if not isinstance(out, np.ndarray):
            raise DtypeError(f"{what} out=: expected a numpy float32 array of shape {shape}, "
                             f"got {type(out).__name__}")
        if out.dtype != np.float32:
            raise DtypeError(f"{what} out=: expected dtype float32, got {out.dtype}")
        if out.shape != shape:
            raise ShapeError(f"{what} out=: expected shape {shape}, got {out.shape}")
        raise ShapeError(f"{what} out=: expected a writeable, C-contiguous, native-byte-order "
                         f"float32 array of shape {shape}")

    def _bad_token(self, tok):
        n = self.model.layers[0].num_embeddings
        raise ShapeError(f"stream: token id {int(tok)} is outside [0, {n}) "
                         f"(Embedding of {n} rows)")

    def _coerce_step(self, x):
        """-> (contiguous (B, F) float32 or (B,) int64 array, unbatched)."""
        B = self.batch_size
        arr = self.model._check_dtype(np.asarray(x), "step")
        if self.takes_tokens:
            if arr.ndim == 0 and B == 1:
                return np.ascontiguousarray(arr.reshape(()), dtype=np.int64), True
            if arr.shape != (B,):
                raise ShapeError(f"step: expected {'one token id or ' if B == 1 else ''}"
                                 f"a ({B},) array of token ids (batch_size {B}), "
                                 f"got shape {arr.shape}")
            return np.ascontiguousarray(arr, dtype=np.int64), False
        F = self.input_size
        if arr.ndim == 1 and B == 1 and arr.shape[0] == F:
            return np.ascontiguousarray(arr, dtype=np.float32), True
        if arr.ndim == 2 and arr.shape == (B, F):
            return np.ascontiguousarray(arr, dtype=np.float32), False
        want = (f"({F},) or " if B == 1 else "") + f"({B}, {F})"
        raise ShapeError(f"step: expected one frame of shape {want} (batch_size {B}, "
                         f"{F} features), got shape {arr.shape}")

    def _coerce_chunk(self, x):
        """-> (contiguous (B, T, F) float32 or (B, T) int64 array, unbatched)."""
        B = self.batch_size
        arr = self.model._check_dtype(np.asarray(x), "run")
        rank = 1 if self.takes_tokens else 2     # of one unbatched chunk
        F = self.input_size
        if arr.ndim == rank and B == 1:
            arr, unbatched = arr[None], True
        elif arr.ndim == rank + 1 and arr.shape[0] == B:
            unbatched = False
        else:
            if self.takes_tokens:
                want = ("(time,) or " if B == 1 else "") + f"({B}, time) token ids"
            else:
                want = (f"(time, {F}) or " if B == 1 else "") + f"({B}, time, {F})"
            raise ShapeError(f"run: expected a chunk of shape {want} (batch_size {B}), "
                             f"got shape {arr.shape}")
        if not self.takes_tokens and arr.shape[2] != F:
            raise ShapeError(f"run: expected {F} features on the last axis, got {arr.shape[2]} "
                             f"(shape {np.shape(x)})")
        if arr.shape[1] == 0 and self.drops_time:
            raise ShapeError("run: an empty chunk has no last step to output (this model "
                             "returns only the last step)")
        dtype = np.int64 if self.takes_tokens else np.float32
        return np.ascontiguousarray(arr, dtype=dtype), unbatched
