#!/usr/bin/env python
"""Soak test (outside CI): a fixed number of calls, results and RSS must stay flat.

    python scripts/soak.py                       # 100,000 calls, RSS printed every 10,000
    python scripts/soak.py --calls 1000000 --every 50000 --max-growth-mb 8

Cycles through predict() (batched, list input, lengths, return_state,
num_threads 1 and 2), stream.step / stream.run / reset / state, model
save + load (safetensors), pickling, and the errors raised for bad input --
each call's result compared with the first one computed for that case.  RSS
is sampled every --every calls after a warm-up; the run fails (exit status 1)
when a result changes or RSS grows more than --max-growth-mb between the
first sample after warm-up and the last.
"""
import argparse
import os
import pickle
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
import drnn  # noqa: E402


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def build_cases(tmp):
    rng = np.random.default_rng(0)
    m1 = drnn.DRNN([drnn.LSTM(5, 32, num_layers=2, bidirectional=True, seed=0),
                    drnn.Dense(64, 4, activation="softmax", seed=1)])
    m2 = drnn.DRNN([drnn.Embedding(30, 8, seed=2), drnn.GRU(8, 24, seed=3),
                    drnn.RNN(24, 16, seed=4), drnn.Dense(16, 3, seed=5)])
    m3 = drnn.DRNN([drnn.LSTM(1, 16, seed=6), drnn.Dense(16, 1, seed=7)])
    x1 = rng.standard_normal((3, 20, 5)).astype(np.float32)
    ids = rng.integers(0, 30, (2, 15))
    audio = rng.standard_normal((64, 1)).astype(np.float32)
    path = os.path.join(tmp, "soak.safetensors")
    s3 = m3.stream()
    sb = m2.stream(batch_size=2)
    out = np.empty(1, np.float32)

    def stream_steps():
        s3.reset()
        for t in range(16):
            s3.step(audio[t], out=out)
        return out.copy()

    def stream_run():
        s3.reset()
        y = s3.run(audio)
        st = s3.state
        s3.state = st
        return y, st

    def batched_stream():
        sb.reset()
        return np.stack([sb.step(ids[:, t]) for t in range(15)], axis=1)

    def save_load():
        m1.save(path)
        return drnn.load(path).predict(x1[:1])

    def bad_input():
        try:
            m1.predict(x1[..., :4])
        except drnn.ShapeError as e:
            return str(e)
        raise AssertionError("no error")

    return [
        ("predict", lambda: m1.predict(x1)),
        ("predict lengths", lambda: m1.predict(x1, lengths=[20, 7, 1])),
        ("predict state", lambda: m1.predict(x1, return_state=True, num_threads=1)),
        ("predict list", lambda: m2.predict([ids[0], ids[1, :4]])),
        ("predict tokens 2 threads", lambda: m2.predict(ids, num_threads=2)),
        ("predict empty", lambda: m2.predict(np.zeros((2, 0), np.int64))),
        ("stream steps", stream_steps),
        ("stream run + state", stream_run),
        ("batched stream", batched_stream),
        ("save + load", save_load),
        ("pickle", lambda: pickle.loads(pickle.dumps(m3)).predict(audio)),
        ("bad input", bad_input),
    ]


def same(a, b):
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(u, v) for u, v in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and np.array_equal(a, b)
    return a == b


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--every", type=int, default=10_000, help="print RSS every N calls")
    ap.add_argument("--warmup", type=int, default=2_000, help="calls before the RSS baseline")
    ap.add_argument("--max-growth-mb", type=float, default=8.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = build_cases(tmp)
        first = [fn() for _, fn in cases]
        t0 = time.time()
        base = None
        samples = []
        for i in range(args.calls):
            k = i % len(cases)
            name, fn = cases[k]
            if not same(fn(), first[k]):
                print(f"call {i}: result of {name!r} changed", flush=True)
                return 1
            if i + 1 == args.warmup:
                base = rss_mb()
            if (i + 1) % args.every == 0:
                r = rss_mb()
                samples.append(r)
                print(f"{i + 1:>10,} calls  {time.time() - t0:7.1f} s  RSS {r:8.1f} MB"
                      + (f"  ({r - base:+.1f} MB since call {args.warmup:,})"
                         if base is not None else ""), flush=True)
        end = rss_mb()
        base = base if base is not None else (samples[0] if samples else end)
        growth = end - base
        print(f"done: {args.calls:,} calls in {time.time() - t0:.1f} s, results identical, "
              f"RSS {base:.1f} -> {end:.1f} MB ({growth:+.1f} MB)")
        if growth > args.max_growth_mb:
            print(f"FAIL: RSS grew {growth:.1f} MB > {args.max_growth_mb} MB", flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
