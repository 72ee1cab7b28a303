"""drnn.dask: batch inference over Dask collections (pip install drnn[dask]).

    import drnn, drnn.dask
    y = drnn.dask.predict(model, x)           # x: dask array (batch, time, features)
    ys = drnn.dask.predict(model, bag)        # bag of (time_i, features) arrays
    y.compute() / ys.compute()

How the parts fit:

* ``predict`` is lazy.  For a dask array it builds one task per block of
  the batch axis (``blockwise``), each running ``model.predict`` on its
  block; for a dask bag it builds one task per partition, which sorts the
  partition's sequences by length, runs them in padded batches of
  ``batch_size`` and puts the outputs back in the partition's order.
  Shapes, dtypes and feature sizes are checked when the graph is built, so a
  wrong input fails at once with drnn's own error; outputs are float32 and
  their shape is known without running anything.
* The model is one key of the graph that every task depends on, never a copy
  per task.  When a ``distributed.Client`` is active (or passed as
  ``client=``) the model is scattered to every worker once
  (``client.scatter(..., broadcast=True)``) and the graph refers to that
  future; the future is cached per model and client, so later calls reuse
  it.  Without a client the model is a single literal key of the graph
  (with the threaded or synchronous scheduler nothing is pickled at all);
  ``client=False`` asks for that even when a client is active, for a graph
  that will run on another scheduler.
* Threads: ``num_threads=None`` lets each task use its share of its worker's
  threads: ``max(1, worker threads // drnn tasks running in that worker
  now)``.  A distributed worker with ``threads_per_worker=1`` therefore runs
  drnn single-threaded, one with 4 threads running 4 blocks gives each one
  thread, and one with 4 threads and a single block gives it 4.  Under the
  local threaded scheduler the budget is the process's cores
  (``DRNN_NUM_THREADS`` caps it everywhere).  ``num_threads=N`` fixes it.
  Results do not depend on the thread count or on how the batch is split
  into blocks or batches: they equal ``model.predict`` bit for bit.

Models pickle as their architecture plus the raw float32 weights (see
``Layer.__reduce__``), so shipping one costs its weight bytes.
"""
import sys
import threading
import weakref
from contextlib import contextmanager

import numpy as np

from . import _core
from .errors import DrnnError, DtypeError, ShapeError, UnsupportedError
from .model import DRNN

try:
    import dask
    import dask.array as da
    import dask.bag as db
    from dask.base import is_dask_collection, tokenize
except ImportError as exc:       # pragma: no cover - exercised without dask only
    raise ImportError("drnn.dask needs dask: pip install 'drnn[dask]' "
                      f"(or pip install 'dask[array,bag]' distributed); {exc}") from exc

__all__ = ["predict", "predict_array", "predict_bag", "model_ref"]


# -- the model as one graph key ------------------------------------------------
_tokens = weakref.WeakKeyDictionary()      # model -> content token
_scattered = weakref.WeakKeyDictionary()   # model -> {client id: Future}
_cache_lock = threading.Lock()


def _model_token(model):
    """A content hash of the model (architecture + weight bytes), cached per model."""
    with _cache_lock:
        tok = _tokens.get(model)
    if tok is None:
        tok = tokenize(type(model).__qualname__, model.config(),
                       [sorted(layer.params().items()) for layer in model.layers])
        with _cache_lock:
            _tokens[model] = tok
    return tok


def _active_client(client):
    if client is False:
        return None
    if client is not None:
        return client
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client
    try:
        return default_client()
    except ValueError:
        return None


def model_ref(model, client=None):
    """The model as a single graph key every task can depend on.

    With a distributed client (given, or the active default one): a Future of
    the model scattered to every worker (broadcast), cached per model and
    client.  Otherwise, or with ``client=False``, a ``dask.delayed`` holding
    the model under one key (a graph any scheduler can run).
    """
    key = f"drnn-model-{_model_token(model)}"
    client = _active_client(client)
    if client is None:
        return dask.delayed(model, name=key, pure=True, traverse=False)
    with _cache_lock:
        fut = _scattered.get(model, {}).get(client.id)
    if fut is not None and fut.status == "finished" and client.status == "running":
        return fut
    fut = client.scatter({key: model}, broadcast=True, hash=False)[key]
    with _cache_lock:
        per_client = _scattered.setdefault(model, {})
        # Drop futures of clients that have closed.
        for cid in [c for c, f in per_client.items() if f.client.status != "running"]:
            del per_client[cid]
        per_client[client.id] = fut
    return fut


# -- threads per task ----------------------------------------------------------
_running = 0                     # drnn tasks running in this process right now
_running_lock = threading.Lock()


def _thread_budget():
    """Threads drnn may use in this process: the distributed worker's thread
    count when running on one, else the CPUs (both capped by DRNN_NUM_THREADS)."""
    cap = _core.default_threads()
    if "distributed" in sys.modules:
        from distributed import get_worker
        try:
            worker = get_worker()
        except ValueError:
            worker = None
        if worker is not None:
            n = getattr(getattr(worker, "state", None), "nthreads", None) or \
                getattr(worker, "nthreads", None) or 1
            return max(1, min(int(n), cap))
    return cap


@contextmanager
def _threads_for_task(num_threads):
    global _running
    if num_threads is not None:
        yield num_threads
        return
    with _running_lock:
        _running += 1
        active = _running
    try:
        yield max(1, _thread_budget() // active)
    finally:
        with _running_lock:
            _running -= 1


# -- checks shared by both forms ----------------------------------------------
def _check_model(model):
    if not isinstance(model, DRNN):
        raise UnsupportedError(
            f"drnn.dask.predict: expected a drnn.DRNN model, got {type(model).__name__}"
            + ("; an ONNX graph model (OnnxModel) has no known output shape -- "
               "use dask.array.map_blocks(model.predict, ...) with explicit chunks"
               if type(model).__name__ == "OnnxModel" else ""))


def _check_threads(num_threads):
    if num_threads is None:
        return None
    n = int(num_threads)
    if n < 1:
        raise ValueError(f"num_threads must be >= 1 or None, got {num_threads!r}")
    return n


# -- dask arrays -------------------------------------------------------------------
def _predict_block(x, lengths, model, num_threads):
    B = x.shape[0]
    if B == 0:
        shape = (0, x.shape[1], model.output_size) if model.returns_sequences \
            else (0, model.output_size)
        return np.empty(shape, np.float32)
    with _threads_for_task(num_threads) as n:
        return model.predict(x, lengths=lengths, num_threads=n)


def predict_array(model, x, lengths=None, *, num_threads=None, client=None, rechunk=False):
    """Lazy ``model.predict`` over a dask array chunked along the batch axis.

    x: dask array (batch, time, features) -- (batch, time) token ids for a model
    that starts with an Embedding -- with the time and feature axes in one
    chunk each (``rechunk=True`` merges them instead of raising).  lengths: the valid
    steps of each right-padded sequence (numpy or dask, one per batch row);
    a dask array is rechunked to x's batch chunks.  Returns a float32 dask
    array (batch, time, out), or (batch, out) for a model that returns only
    the last step, chunked like x's batch axis.
    """
    _check_model(model)
    num_threads = _check_threads(num_threads)
    if not isinstance(x, da.Array):
        raise UnsupportedError(
            f"drnn.dask.predict: expected a dask array or bag, got {type(x).__name__}"
            + (" (wrap a numpy array: dask.array.from_array(x, chunks=(rows, -1, -1)))"
               if isinstance(x, np.ndarray) else ""))
    rank = 2 if model.takes_tokens else 3
    if x.ndim != rank:
        want = "(batch, time) token ids" if model.takes_tokens else \
            f"(batch, time, {model.input_size})"
        raise ShapeError(f"drnn.dask.predict: x: expected a dask array of shape {want}, got "
                         f"shape {x.shape}" + (" (a single sequence: add a batch axis, "
                                               "x[None])" if x.ndim == rank - 1 else ""))
    # drnn's own checks, now rather than in the tasks: dtype, features, time.
    model._check_dtype(np.empty(0, x.dtype), "x")
    if not model.takes_tokens and x.shape[-1] != model.input_size:
        raise ShapeError(f"x: expected {model.input_size} features on the last axis, got "
                         f"{x.shape[-1]} (shape {x.shape})")
    if x.shape[1] == 0 and not model.returns_sequences:
        raise ShapeError(f"x: this model returns the last step only, so it needs at least one "
                         f"time step; got shape {x.shape}")
    if any(n > 1 for n in x.numblocks[1:]):
        if not rechunk:
            raise ShapeError(
                f"drnn.dask.predict: x is chunked along the time/feature axes (chunks "
                f"{x.chunks[1:]}); each block must hold whole sequences. Chunk only the "
                "batch axis: x.rechunk({1: -1" + (", 2: -1" if rank == 3 else "")
                + "}), or pass rechunk=True")
        x = x.rechunk({i: -1 for i in range(1, rank)})
    ref = model_ref(model, client)
    seq_ind = "bt" if rank == 2 else "btf"
    out_ind = "bto" if model.returns_sequences else "bo"
    args = [x, seq_ind]
    align = True
    if lengths is None:
        args += [None, None]
    else:
        B = x.shape[0]
        if is_dask_collection(lengths):
            if not isinstance(lengths, da.Array) or lengths.ndim != 1:
                raise ShapeError(f"drnn.dask.predict: lengths: expected a 1-D array, one per "
                                 f"sequence, got {lengths!r}")
            known = not any(np.isnan(c) for c in x.chunks[0] + lengths.chunks[0])
            if known:
                if lengths.shape[0] != B:
                    raise ShapeError(f"drnn.dask.predict: lengths: expected shape ({B},), one "
                                     f"per sequence, got {lengths.shape}")
                lengths = lengths.rechunk((x.chunks[0],))
            elif lengths.numblocks[0] != x.numblocks[0]:
                raise ShapeError("drnn.dask.predict: x has unknown batch chunk sizes and "
                                 f"lengths has {lengths.numblocks[0]} blocks, not "
                                 f"{x.numblocks[0]}: give lengths in x's blocks")
            else:
                align = False
        else:
            lens = np.asarray(lengths)
            if lens.dtype.kind not in "iu":
                raise DtypeError(f"lengths: expected integers, got dtype {lens.dtype}")
            if lens.shape != (B,):
                raise ShapeError(f"lengths: expected shape ({B},), one per sequence, got {lens.shape}")
            T = x.shape[1]
            if B and (lens.min() < 1 or lens.max() > T):
                raise ShapeError(f"lengths: each must be in [1, {T}] (the time axis), got "
                                 f"min {lens.min()} max {lens.max()}")
            if any(np.isnan(c) for c in x.chunks[0]):
                raise ShapeError("drnn.dask.predict: x has unknown batch chunk sizes; give "
                                 "lengths as a dask array in x's blocks")
            lengths = da.from_array(lens, chunks=(x.chunks[0],))
        args += [lengths, "b"]
    args += [ref, None]
    return da.blockwise(
        _predict_block, out_ind, *args,
        num_threads=num_threads,
        new_axes={"o": model.output_size},
        concatenate=True, align_arrays=align,
        dtype=np.float32, meta=np.empty((0,) * len(out_ind), np.float32),
        name=f"drnn-predict-{tokenize(x, lengths, getattr(ref, 'key', None), num_threads)}")


# -- dask bags of variable-length sequences -----------------------------------------------
def _predict_partition(seqs, model, batch_size, num_threads):
    seqs = list(seqs)
    if not seqs:
        return []
    arrays = []
    for i, s in enumerate(seqs):
        a = np.asarray(s)
        if a.ndim == 0:
            raise ShapeError(f"drnn.dask.predict: bag item {i} of its partition is a scalar "
                             f"({a!r}), expected a sequence")
        arrays.append(a)
    lens = np.array([a.shape[0] for a in arrays])
    order = np.argsort(lens, kind="stable")
    out = [None] * len(arrays)
    with _threads_for_task(num_threads) as n:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = [arrays[i] for i in idx]
            try:
                ys = model.predict(batch, num_threads=n)
            except DrnnError as e:
                # Name the item by its place in the partition, not in the sorted batch.
                for i in idx:
                    try:
                        model._prepare([arrays[i]], None)
                    except DrnnError as item_err:
                        msg = str(item_err)
                        if msg.startswith("sequence 0: "):
                            msg = msg[len("sequence 0: "):]
                        raise type(item_err)(f"drnn.dask.predict: bag item {i} of its "
                                             f"partition: {msg}") from None
                raise e
            for i, y in zip(idx, ys):
                out[i] = y
    return out


def predict_bag(model, bag, *, batch_size=64, num_threads=None, client=None):
    """Lazy ``model.predict`` over a dask bag of variable-length sequences.

    Each item is one sequence: a (time_i, features) array, or a 1-D array of
    token ids for a model that starts with an Embedding.  Within each
    partition the sequences are sorted by length and run in padded batches of
    up to ``batch_size`` (similar lengths together: little padding).  Returns
    a bag, in the input's order, of float32 outputs (time_i, out) -- or (out,)
    for a model that returns only the last step.
    """
    _check_model(model)
    num_threads = _check_threads(num_threads)
    if not isinstance(bag, db.Bag):
        raise UnsupportedError(f"drnn.dask.predict_bag: expected a dask bag, got {type(bag).__name__}")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ShapeError(f"drnn.dask.predict_bag: batch_size must be >= 1, got {batch_size}")
    ref = model_ref(model, client)
    return bag.map_partitions(_predict_partition, ref, batch_size, num_threads,
                              token="drnn-predict-bag")


def predict(model, x, lengths=None, *, batch_size=64, num_threads=None, client=None,
            rechunk=False):
    """Lazy batch inference on Dask: a dask array (see ``predict_array``) or a
    dask bag of variable-length sequences (see ``predict_bag``).  Returns the
    same kind of collection, in the same order, computing nothing yet."""
    if isinstance(x, db.Bag):
        if lengths is not None:
            raise ShapeError("drnn.dask.predict: a bag of sequences carries its own lengths; "
                             "do not pass lengths=")
        return predict_bag(model, x, batch_size=batch_size, num_threads=num_threads,
                           client=client)
    return predict_array(model, x, lengths, num_threads=num_threads, client=client,
                         rechunk=rechunk)
