"""Score many sequences with drnn on Dask, locally and on 1- and 2-worker clusters.

    pip install ".[dask]" && python examples/dask_predict.py [--n 20000] [--length 32]

The bundled character-level language model (Embedding -> 2-layer LSTM 256 ->
Linear, drnn/data/charlm.safetensors) scores text from the standard
library's pydoc_data topics: each sequence's bits per character, i.e. how
well the model predicts each next character.  Two forms of input:

* array: n windows of `length` characters -> a dask array (n, length) of
  token ids chunked along the batch axis -> drnn.dask.predict -> the score
  of each row computed in the same task (the logits never leave the worker);
* bag: n lines of 2..length+1 characters -> a dask bag of variable-length id
  sequences -> drnn.dask.predict (sorted into padded batches per partition)
  -> the score of each sequence.

For each it times plain model.predict in this process (2 threads and 1),
Dask's local threaded scheduler, and LocalClusters of 1 and 2 worker
processes with one thread each, checks every result equals the local one
exactly, and prints sequences (and characters) per second of wall time, and
the CPU seconds used (this process plus the workers): on a shared machine the
wall time depends on what else runs, the CPU time much less.
"""
import argparse
import json
import os
import time

import numpy as np

import drnn
import drnn.dask

DATA = os.path.join(os.path.dirname(drnn.__file__), "data")


def load_text_ids():
    with open(os.path.join(DATA, "charlm_vocab.json"), encoding="utf-8") as f:
        chars = json.load(f)["chars"]
    index = {c: i for i, c in enumerate(chars)}
    try:
        from pydoc_data.topics import topics
        text = "".join(topics[k] for k in sorted(topics))
    except ImportError:                     # some Python builds leave it out
        text = " ".join(chars) * 2000
    return text, index


def make_inputs(n, length, seed=0):
    text, index = load_text_ids()
    ids = np.array([index.get(c, index[" "]) for c in text], dtype=np.int64)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - length - 1, n)
    windows = np.stack([ids[s:s + length + 1] for s in starts])        # (n, length+1)
    lines = [ln for ln in text.split("\n") if len(ln) >= 2]
    picks = rng.integers(0, len(lines), n)
    seqs = []
    for p in picks:
        ln = lines[p][:length + 1]
        seqs.append(np.array([index.get(c, index[" "]) for c in ln], dtype=np.int64))
    return windows, seqs


def bits_per_char(logits, targets):
    """Mean -log2 p(target) over the time axis: logits (..., T, V), targets (..., T)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return -picked.mean(axis=-1) / np.log(2)


def score_block(inputs, targets, model, num_threads=None):
    return bits_per_char(model.predict(inputs, num_threads=num_threads), targets)


# -- the local baseline: plain model.predict in this process ----------------------------
def local_array(model, windows, chunk, num_threads):
    return np.concatenate([score_block(windows[i:i + chunk, :-1], windows[i:i + chunk, 1:],
                                       model, num_threads)
                           for i in range(0, len(windows), chunk)])


def local_bag(model, seqs, chunk, num_threads, batch_size=64):
    # Sorted by length and run in padded batches, as drnn.dask does per partition.
    order = np.argsort([len(s) for s in seqs], kind="stable")
    scores = np.empty(len(seqs))
    for j in range(0, len(order), batch_size):
        idx = order[j:j + batch_size]
        ys = model.predict([seqs[k][:-1] for k in idx], num_threads=num_threads)
        for k, y in zip(idx, ys):
            scores[k] = bits_per_char(y, seqs[k][1:])
    return scores


# -- the same on Dask ----------------------------------------------------------------------
def dask_array_scores(model, windows, chunk, client=None):
    import dask.array as da
    x = da.from_array(windows, chunks=(chunk, -1))
    logits = drnn.dask.predict(model, x[:, :-1], client=client)
    return da.blockwise(bits_per_char, "b", logits, "btv", x[:, 1:], "bt",
                        concatenate=True, dtype=np.float64)


def dask_bag_scores(model, seqs, chunk, client=None):
    import dask.bag as db
    bag = db.from_sequence(seqs, partition_size=chunk)
    logits = drnn.dask.predict(model, bag.map(lambda s: s[:-1]), client=client)
    return db.map(lambda y, s: bits_per_char(y, s[1:]), logits, bag)


def timed(fn, client=None):
    """-> (result, wall seconds, CPU seconds of this process and the workers)."""
    workers_cpu = (lambda: sum(client.run(time.process_time).values())) if client else (lambda: 0.0)
    c, w, t = time.process_time(), workers_cpu(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t
    return out, wall, time.process_time() - c + workers_cpu() - w


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="sequences per form (default 20000)")
    ap.add_argument("--length", type=int, default=32, help="characters per window (default 32)")
    ap.add_argument("--chunk", type=int, default=500, help="sequences per dask block/partition")
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2],
                    help="LocalCluster sizes to time (default: 1 2)")
    ap.add_argument("--forms", nargs="*", default=["array", "bag"], choices=["array", "bag"])
    args = ap.parse_args(argv)

    import dask
    from distributed import Client, LocalCluster

    model = drnn.load(os.path.join(DATA, "charlm.safetensors"))
    windows, seqs = make_inputs(args.n, args.length)
    chars = {"array": args.n * args.length, "bag": sum(len(s) - 1 for s in seqs)}
    print(f"model: {model.num_parameters:,} parameters, kernels {drnn.cpu_info()['isa']}, "
          f"{drnn.cpu_info()['cpus']} CPUs; {args.n:,} sequences per form "
          f"(array: {args.length} chars each; bag: lines of 1-{args.length} chars, "
          f"{chars['bag'] / args.n:.1f} on average)")
    local = {"array": local_array, "bag": local_bag}
    on_dask = {"array": dask_array_scores, "bag": dask_bag_scores}
    data = {"array": windows, "bag": seqs}
    rows = []

    def report(form, how, seconds, cpu, same):
        rate = args.n / seconds
        rows.append((form, how, seconds, rate, cpu))
        print(f"{form:5s}  {how:36s} {seconds:7.2f} s {rate:7,.0f} seq/s "
              f"{chars[form] / seconds:8,.0f} chars/s  CPU {cpu:6.2f} s "
              f"({args.n / cpu:5,.0f} seq/CPU-s)"
              + ("" if same is None else f"  identical: {same}"), flush=True)

    reference = {}
    for form in args.forms:
        model.predict(windows[:8, :-1])                                    # warm up
        for nt in (2, 1):
            scores, sec, cpu = timed(lambda: local[form](model, data[form], args.chunk, nt))
            same = None if form not in reference else bool(np.array_equal(scores, reference[form]))
            reference.setdefault(form, scores)
            report(form, f"local model.predict, {nt} thread{'s' * (nt > 1)}", sec, cpu, same)
        scores, sec, cpu = timed(lambda: np.asarray(
            on_dask[form](model, data[form], args.chunk).compute(scheduler="threads")))
        report(form, f"dask threaded scheduler ({os.cpu_count()} threads)", sec, cpu,
               bool(np.array_equal(scores, reference[form])))

    for nw in args.workers:
        with dask.config.set({"distributed.scheduler.active-memory-manager.start": False}), \
                LocalCluster(n_workers=nw, threads_per_worker=1, processes=True,
                             dashboard_address=None, host="127.0.0.1") as cluster, \
                Client(cluster) as client:
            for form in args.forms:
                # Warm up: start the workers' imports and send the model (scatter).
                on_dask[form](model, data[form][:2 * nw], 1, client).compute()
                coll = on_dask[form](model, data[form], args.chunk, client)
                scores, sec, cpu = timed(lambda: np.asarray(coll.compute()), client)
                report(form, f"LocalCluster {nw} worker{'s' * (nw > 1)} x 1 thread", sec, cpu,
                       bool(np.array_equal(scores, reference[form])))
    return rows


if __name__ == "__main__":
    main()
