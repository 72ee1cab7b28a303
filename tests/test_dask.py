"""drnn.dask: lazy predict over dask arrays and bags, on a 2-process LocalCluster
and on dask's local schedulers, against local model.predict bit for bit.

Also: models pickle as their weight bytes plus the architecture and come
back working; the model reaches each worker once (counted by a DRNN subclass
whose unpickling bumps a per-process counter) and is one key of the graph.
dask missing: the module is skipped, except under CI=true, where it fails.
"""
import os
import pickle

import numpy as np
import pytest

if os.environ.get("CI", "").strip().lower() == "true":
    import dask                                      # noqa: F401  (must be installed in CI)
    import distributed                               # noqa: F401
else:
    pytest.importorskip("dask")
    pytest.importorskip("distributed")
import dask                                          # noqa: E402
import dask.array as da                              # noqa: E402
import dask.bag as db                                # noqa: E402
from dask.core import get_dependencies               # noqa: E402

import drnn                                          # noqa: E402
import drnn.dask as ddask                            # noqa: E402

N = 3000     # sequences per kind
T = 30


# -- models ----------------------------------------------------------------------
UNPICKLED = 0            # CountingDRNN unpicklings in this process
THREADS_SEEN = set()     # num_threads values CountingDRNN.predict got in this process


def _rebuild_counting(layers, state):
    global UNPICKLED
    UNPICKLED += 1
    m = CountingDRNN(layers)
    m.__dict__.update(state)
    return m


class CountingDRNN(drnn.DRNN):
    """A DRNN that counts its unpicklings and records its thread counts."""

    def __reduce__(self):
        _, args, state = super().__reduce__()
        return (_rebuild_counting, (args[0], state or {}))

    def predict(self, x, lengths=None, num_threads=None, **kw):
        THREADS_SEEN.add(num_threads)
        return super().predict(x, lengths=lengths, num_threads=num_threads, **kw)


def _worker_counts():
    return UNPICKLED, sorted(THREADS_SEEN, key=str)


def _features_layers():
    return [drnn.LSTM(5, 24, num_layers=2, bidirectional=True, seed=1),
            drnn.GRU(48, 16, seed=2), drnn.Dense(16, 3, activation="tanh", seed=3)]


@pytest.fixture(scope="module")
def model():
    return CountingDRNN(_features_layers())


@pytest.fixture(scope="module")
def token_model():
    return drnn.DRNN([drnn.Embedding(40, 8, seed=4), drnn.GRU(8, 20, seed=5),
                      drnn.Dense(20, 6, activation="softmax", seed=6)])


@pytest.fixture(scope="module")
def last_step_model():
    return drnn.DRNN([drnn.LSTM(5, 16, return_sequences=False, seed=7), drnn.Dense(16, 2, seed=8)])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, T, 5)).astype(np.float32)
    lengths = rng.integers(1, T + 1, N)
    seqs = [x[i, :lengths[i]] for i in range(N)]
    ids = rng.integers(0, 40, (N, T))
    id_seqs = [ids[i, :lengths[i]] for i in range(N)]
    return x, lengths, seqs, ids, id_seqs


@pytest.fixture(scope="module")
def client():
    import distributed
    # The active memory manager drops "superfluous" replicas of idle keys every
    # 2 s, the broadcast model's among them (then re-fetched from a peer worker
    # by the next computation); off here, so that counting unpickles is exact.
    with dask.config.set({"distributed.scheduler.active-memory-manager.start": False}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, scheduler_port=0,
                                  host="127.0.0.1") as cluster, \
            distributed.Client(cluster, set_as_default=False) as c:
        yield c


def _same_list(got, want):
    return len(got) == len(want) and all(
        g.dtype == np.float32 and np.array_equal(g, w) for g, w in zip(got, want))


# -- pickling ----------------------------------------------------------------------
@pytest.mark.parametrize("which", ["model", "token_model", "last_step_model"])
def test_pickle_is_weight_bytes_and_round_trips(which, request, data):
    m = request.getfixturevalue(which)
    weight_bytes = 4 * m.num_parameters
    blob = pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL)
    assert weight_bytes <= len(blob) < weight_bytes + 4096
    buffers = []
    head = pickle.dumps(m, protocol=5, buffer_callback=buffers.append)
    assert sum(memoryview(b).nbytes for b in buffers) == weight_bytes     # out of band, no copy
    assert len(head) < 4096
    m2 = pickle.loads(blob)
    assert type(m2) is type(m) and m2.config() == m.config()
    x, lengths, _, ids, _ = data
    inp = ids[:50] if m.takes_tokens else x[:50]
    assert np.array_equal(m2.predict(inp, lengths=lengths[:50]), m.predict(inp, lengths=lengths[:50]))


def test_pickle_keeps_source():
    path = os.path.join(os.path.dirname(drnn.__file__), "data", "charlm.safetensors")
    m = drnn.load(path)
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.source == m.source and m2.source["format"] == "drnn"


# -- building the graph ---------------------------------------------------------------
def test_lazy_shapes_without_running(model, token_model, last_step_model, data):
    x, lengths, _, ids, _ = data
    y = ddask.predict(model, da.from_array(x, chunks=(500, -1, -1)))
    assert y.shape == (N, T, 3) and y.dtype == np.float32 and y.chunks[0] == (500,) * 6
    y = ddask.predict(token_model, da.from_array(ids, chunks=(700, -1)), lengths=lengths)
    assert y.shape == (N, T, 6) and y.dtype == np.float32
    y = ddask.predict(last_step_model, da.from_array(x, chunks=(1000, -1, -1)))
    assert y.shape == (N, 2) and y.chunks == ((1000,) * 3, (2,))


def test_model_is_one_graph_key_without_client(model, data):
    x, lengths, _, _, _ = data
    y = ddask.predict(model, da.from_array(x, chunks=(300, -1, -1)), lengths=lengths)
    graph = dict(y.__dask_graph__())
    model_keys = [k for k in graph if str(k).startswith("drnn-model-")]
    assert len(model_keys) == 1
    tasks = [k for k in graph if isinstance(k, tuple) and k[0] == y.name]
    assert len(tasks) == 10
    assert all(model_keys[0] in get_dependencies(graph, k) for k in tasks)
    # The same model gives the same key (content hash), another model another key.
    y2 = ddask.predict(model, da.from_array(x[:10], chunks=(5, -1, -1)))
    assert model_keys[0] in dict(y2.__dask_graph__())


# -- local schedulers (no distributed client) ----------------------------------------
@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_array_local_scheduler(model, data, scheduler):
    x, lengths, _, _, _ = data
    dx = da.from_array(x, chunks=(400, -1, -1))
    got = ddask.predict(model, dx, lengths=lengths).compute(scheduler=scheduler)
    assert got.dtype == np.float32
    assert np.array_equal(got, model.predict(x, lengths=lengths))
    got = ddask.predict(model, dx).compute(scheduler=scheduler)
    assert np.array_equal(got, model.predict(x))


def test_bag_local_scheduler(model, token_model, last_step_model, data):
    _, _, seqs, _, id_seqs = data
    got = ddask.predict(model, db.from_sequence(seqs, npartitions=5),
                        batch_size=37).compute(scheduler="threads")
    assert _same_list(got, model.predict(seqs))
    got = ddask.predict(token_model, db.from_sequence(id_seqs, npartitions=3)).compute(
        scheduler="sync")
    assert _same_list(got, token_model.predict(id_seqs))
    got = ddask.predict(last_step_model, db.from_sequence(seqs[:500], npartitions=4)).compute(
        scheduler="sync")
    want = last_step_model.predict(seqs[:500])
    assert got[0].shape == (2,) and _same_list(got, want)


def test_token_and_last_step_arrays(token_model, last_step_model, data):
    x, lengths, _, ids, _ = data
    got = ddask.predict(token_model, da.from_array(ids, chunks=(999, -1)),
                        lengths=da.from_array(lengths, chunks=1500)).compute(scheduler="sync")
    assert np.array_equal(got, token_model.predict(ids, lengths=lengths))
    got = ddask.predict(last_step_model, da.from_array(x, chunks=(777, -1, -1)),
                        lengths=lengths).compute(scheduler="threads")
    assert np.array_equal(got, last_step_model.predict(x, lengths=lengths))


def test_thread_share(monkeypatch):
    monkeypatch.setattr(ddask, "_thread_budget", lambda: 4)
    with ddask._threads_for_task(None) as a:
        with ddask._threads_for_task(None) as b:
            with ddask._threads_for_task(None) as c:
                assert (a, b, c) == (4, 2, 1)
    with ddask._threads_for_task(3) as n:
        assert n == 3
    with ddask._threads_for_task(None) as n:
        assert n == 4                          # the counter went back to zero


# -- errors ------------------------------------------------------------------------------
def test_errors(model, token_model, data):
    x, lengths, seqs, ids, _ = data
    dx = da.from_array(x, chunks=(500, 10, -1))
    with pytest.raises(drnn.ShapeError, match="chunked along the time"):
        ddask.predict(model, dx)
    got = ddask.predict(model, dx[:100], rechunk=True).compute(scheduler="sync")
    assert np.array_equal(got, model.predict(x[:100]))
    with pytest.raises(drnn.ShapeError, match="expected 5 features on the last axis, got 4"):
        ddask.predict(model, da.from_array(x[:, :, :4], chunks=(500, -1, -1)))
    with pytest.raises(drnn.ShapeError, match=r"shape \(batch, time, 5\)"):
        ddask.predict(model, da.from_array(x[0], chunks=(10, -1)))
    with pytest.raises(drnn.DtypeError, match="token ids"):
        ddask.predict(token_model, da.from_array(x[:, :, 0], chunks=(500, -1)))
    with pytest.raises(drnn.ShapeError, match="lengths: expected shape"):
        ddask.predict(model, da.from_array(x, chunks=(500, -1, -1)), lengths=lengths[:-1])
    with pytest.raises(drnn.ShapeError, match=r"lengths: each must be in \[1, 30\]"):
        ddask.predict(model, da.from_array(x, chunks=(500, -1, -1)), lengths=lengths + 1)
    with pytest.raises(drnn.UnsupportedError, match="dask array or bag"):
        ddask.predict(model, x)
    with pytest.raises(drnn.UnsupportedError, match="drnn.DRNN"):
        ddask.predict(object(), da.from_array(x, chunks=(500, -1, -1)))
    # Found only when a task runs: drnn's error surfaces from compute().
    bad = da.from_array(lengths + 1, chunks=500)
    with pytest.raises(drnn.ShapeError, match="lengths"):
        ddask.predict(model, da.from_array(x, chunks=(500, -1, -1)), lengths=bad).compute(
            scheduler="sync")
    # An empty sequence gives an empty output, as model.predict does.
    items = seqs[:9] + [x[0, :0]] + seqs[9:20]
    ys = ddask.predict(model, db.from_sequence(items, npartitions=2)).compute(scheduler="sync")
    assert ys[9].shape == (0, model.output_size)
    for y, want in zip(ys, model.predict(items)):
        np.testing.assert_array_equal(y, want)
    bag = db.from_sequence(seqs[:5] + [x[0, :4, :3]], npartitions=1)
    with pytest.raises(drnn.ShapeError, match="bag item 5 of its partition: expected 5 features"):
        ddask.predict(model, bag).compute(scheduler="sync")


# -- a 2-process LocalCluster ----------------------------------------------------------
def test_distributed_array_and_bag(client, model, token_model, data):
    x, lengths, seqs, ids, id_seqs = data
    unpickled_here = UNPICKLED
    with client.as_current():
        y = ddask.predict(model, da.from_array(x, chunks=(250, -1, -1)), lengths=lengths)
        yb = ddask.predict(model, db.from_sequence(seqs, npartitions=8), batch_size=50)
        yt = ddask.predict(token_model, db.from_sequence(id_seqs, npartitions=4))
        yf = ddask.predict(model, da.from_array(x[:1000], chunks=(250, -1, -1)))
        # Arrays and bags in separate compute() calls: dask 2026.8.0's
        # dask.compute(array, bag, bag, array) returns the results grouped by
        # collection type, not in argument order.
        got, got_f = dask.compute(y, yf)
        got_b, got_t = dask.compute(yb, yt)
    assert np.array_equal(got, model.predict(x, lengths=lengths))
    assert np.array_equal(got_f, model.predict(x[:1000]))
    assert _same_list(got_b, model.predict(seqs))
    assert _same_list(got_t, token_model.predict(id_seqs))
    # Both workers did work, each unpickled the model once (one broadcast scatter,
    # reused by every task and call), and each task ran drnn on 1 thread: the
    # workers have one thread each.
    counts = client.run(_worker_counts)
    assert len(counts) == 2
    assert all(n == 1 and threads == [1] for n, threads in counts.values()), counts
    assert UNPICKLED == unpickled_here        # the client never unpickles it


def test_distributed_graph_refers_to_scattered_model(client, model, data):
    x = data[0]
    with client.as_current():
        y = ddask.predict(model, da.from_array(x[:1000], chunks=(250, -1, -1)))
    graph = dict(y.__dask_graph__())
    tasks = [k for k in graph if isinstance(k, tuple) and k[0] == y.name]
    deps = set.union(*(set(graph[k].dependencies) for k in tasks))
    model_keys = [k for k in deps if str(k).startswith("drnn-model-")]
    assert len(model_keys) == 1
    assert model_keys[0] not in graph         # not in the graph: it is on the workers
    ref = ddask.model_ref(model, client)      # the cached future of the scatter
    assert ref.key == model_keys[0]
    assert set(client.who_has([ref])[ref.key]) == set(client.scheduler_info()["workers"])


def test_distributed_error_surfaces(client, model, data):
    x, lengths, seqs, _, _ = data
    with client.as_current():
        bad = da.from_array(lengths + 1, chunks=500)
        y = ddask.predict(model, da.from_array(x, chunks=(500, -1, -1)), lengths=bad)
        with pytest.raises(drnn.ShapeError, match=r"lengths: each must be in \[1, 30\]"):
            y.compute()
        bag = db.from_sequence(seqs[:3] + [x[0, :4, :3]], npartitions=1)
        with pytest.raises(drnn.ShapeError, match="bag item 3 of its partition: expected 5"):
            ddask.predict(model, bag).compute()


def test_client_false_embeds_model_for_another_scheduler(client, model, data):
    x = data[0][:200]
    with client.as_current():
        y = ddask.predict(model, da.from_array(x, chunks=(50, -1, -1)), client=False)
    graph = dict(y.__dask_graph__())
    assert len([k for k in graph if str(k).startswith("drnn-model-")]) == 1
    assert np.array_equal(y.compute(scheduler="sync"), model.predict(x))


# -- ONNX graph models: they pickle, but drnn.dask runs DRNNs only ---------------------
def test_onnx_model_pickles_and_is_refused():
    pytest.importorskip("onnx")
    path = os.path.join(os.path.dirname(__file__), "fixtures", "onnx",
                        "torch_lstm_bi_2layer_linear.onnx")
    m = drnn.load(path)
    x = np.random.default_rng(1).standard_normal((4, 9, m.layers[0].input_size)).astype(np.float32)
    m2 = pickle.loads(pickle.dumps(m, protocol=5))
    assert np.array_equal(m2.predict(x), m.predict(x))
    with pytest.raises(drnn.UnsupportedError, match="OnnxModel"):
        ddask.predict(m, da.from_array(x, chunks=(2, -1, -1)))
