"""drnn side by side with PyTorch and ONNX Runtime on the DESIGN.md workloads.

    python benchmarks/compare.py                     # every workload, full timing
    python benchmarks/compare.py --quick             # smoke test: few repetitions
    python benchmarks/compare.py --only latency-lstm256 --threads 2
    python benchmarks/compare.py --markdown out.md   # also write the report
    python benchmarks/compare.py --rss               # peak RSS per framework, throughput

How the parts fit:

  WORKLOADS     the one table of workloads (the "Performance" table of
                DESIGN.md, one row per cell type).  Every other function is
                driven by a Workload and nothing else.
  build_*       build the PyTorch module (fixed seed, eval), export it to ONNX
                (legacy TorchScript exporter, static shapes: each session only
                ever sees the benchmark's own shape) and convert it with
                drnn.from_torch.  Each prepare_* returns one zero-argument
                callable per framework -- exactly what is timed -- after
                checking that the three frameworks agree (max abs diff <= TOL).
  time_interleaved  the only timing helper: warm up, then round-robin the
                callables in blocks of back-to-back samples (rotating the
                order each round) with the GC off and report per-call
                samples; sub-millisecond calls are repeated within a sample
                so the timer's resolution does not matter, and an untimed
                pause before each block lets the previous framework's worker
                threads stop spinning (2 cores only).
  report        markdown tables: speed vs the best peer against the target,
                and the "distance from the floor" (GFLOP/s, weight GB/s).
  --rss         each framework runs the throughput workload once in its own
                subprocess (which imports only that framework) and reports
                resource.getrusage(RUSAGE_SELF).ru_maxrss.

torch, onnxruntime and drnn are imported inside the functions that use them,
never at module level: an --rss child must load exactly one framework.

Choices (see also benchmarks/RESULTS.md): input size = hidden size for every
workload (the table names none); throughput uses T = 100; variable lengths are
uniform in [10, 200] from a fixed seed, padded to the longest; FLOPs count the
input projections and recurrent products only (2*M*N*K each, valid steps
only), not the element-wise gate math.
"""
import argparse
import gc
import io
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from dataclasses import dataclass
from typing import Optional

import numpy as np

TOL = 1e-4                  # max abs difference allowed between any two frameworks
PEAK_GFLOPS = 226.0         # measured here: 2 cores x 113 GFLOP/s (Zen 4: one 512-bit FMA
                            # per cycle per core; 12 independent FMA chains, see RESULTS.md).
                            # DESIGN.md's 340 assumed two FMA pipes per core.
L2_GBS = 116.0              # measured here: one core reads L2 at 114-117 GB/s (32 bytes per
                            # cycle; benchmarks/bandwidth.c).  DESIGN.md assumed 160 GB/s
                            # (an H=256 LSTM step, 1 MiB of weights, in 6.5 us).
SEED = 1234
PEERS = ("torch", "ORT")
FRAMEWORKS = PEERS + ("drnn",)
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclass(frozen=True)
class Workload:
    name: str
    cell: str                   # "LSTM" | "GRU"
    hidden: int
    steps: int                  # time steps per call (1 for stream), max length for varlen
    batch: int = 1
    layers: int = 1
    bidirectional: bool = False
    mode: str = "sequence"      # "sequence" | "varlen" | "stream" | "run"
    target: float = 1.0         # required speed-up of drnn
    target_peer: str = "best"   # "best" of torch and ORT, or "torch" (packed, varlen)

    @property
    def input_size(self):
        return self.hidden

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    @property
    def shape(self):
        bi = "bi-" if self.bidirectional else ""
        lay = f"{self.layers}-layer " if self.layers > 1 else ""
        if self.mode == "stream":
            t = "1 step/call"
        elif self.mode == "varlen":
            t = f"T=10..{self.steps}"
        elif self.mode == "run":
            t = f"T={self.steps} via Stream.run"
        else:
            t = f"T={self.steps}"
        return f"{lay}{bi}{self.cell} {self.hidden}, B={self.batch}, {t}"

    @property
    def target_text(self):
        peer = "PyTorch packed" if self.target_peer == "torch" else "best peer"
        return "parity" if self.target == 1.0 else f"{self.target:g}x vs {peer}"


WORKLOADS = [
    Workload("stream-lstm32", "LSTM", 32, 1, mode="stream", target=8),
    Workload("stream-gru64", "GRU", 64, 1, layers=2, mode="stream", target=8),
    Workload("audio-lstm64", "LSTM", 64, 4800, target=2),
    Workload("audio-run-lstm64", "LSTM", 64, 4800, mode="run", target=2),
    Workload("latency-lstm256", "LSTM", 256, 100, layers=2, target=3),
    Workload("latency-gru256", "GRU", 256, 100, layers=2, target=3),
    Workload("smallbatch-lstm128", "LSTM", 128, 200, batch=8, layers=2, target=2),
    Workload("throughput-bilstm512", "LSTM", 512, 100, batch=64, layers=2,
             bidirectional=True, target=1),
    Workload("throughput-bigru512", "GRU", 512, 100, batch=64, layers=2,
             bidirectional=True, target=1),
    Workload("varlen-bigru256", "GRU", 256, 200, batch=32, layers=2, bidirectional=True,
             mode="varlen", target=3, target_peer="torch"),
]
BY_NAME = {w.name: w for w in WORKLOADS}


# ---------------------------------------------------------------- inputs, work
def seed(w):
    """A seed fixed per workload (by name, so it survives reordering the table)."""
    return SEED + zlib.crc32(w.name.encode()) % 10_000


def make_inputs(w, steps=None):
    """(x (B, T, F) float32, lengths or None); T = steps or the workload's."""
    rng = np.random.default_rng(seed(w))
    lengths = None
    T = steps or w.steps
    if w.mode == "varlen":
        lengths = rng.integers(10, w.steps, size=w.batch, endpoint=True).astype(np.int64)
        T = int(lengths.max())
    x = rng.uniform(-1.0, 1.0, size=(w.batch, T, w.input_size)).astype(np.float32)
    if lengths is not None:
        x[np.arange(T)[None, :] >= lengths[:, None]] = 0.0   # right padding
    return x, lengths


def work(w, x, lengths):
    """(FLOPs per call, weight bytes streamed per call or None when batch > 1).

    Per layer and direction, every valid step costs 2*G*H*(F + H) FLOPs (input
    projection + recurrent product).  At batch 1 the recurrent weights
    (G*H*H floats per layer and direction) are read once per step and the
    input weights once per call (one GEMM over all steps; a GEMV per step in
    stream mode, where the call is one step).
    """
    G, H, D = GATES[w.cell], w.hidden, w.directions
    steps = int(lengths.sum()) if lengths is not None else x.shape[0] * x.shape[1]
    fins = [w.input_size] + [D * H] * (w.layers - 1)
    flops = sum(2.0 * steps * D * G * H * (f + H) for f in fins)
    if w.batch != 1:
        return flops, None
    rec = 4.0 * D * w.layers * G * H * H
    inp = 4.0 * D * sum(G * H * f for f in fins)
    return flops, x.shape[1] * rec + inp


# ---------------------------------------------------------------- frameworks
def build_torch(w):
    import torch
    torch.manual_seed(seed(w))
    cls = getattr(torch.nn, w.cell)
    return cls(w.input_size, w.hidden, num_layers=w.layers, bidirectional=w.bidirectional,
               batch_first=True).eval()


def _export_wrapper(module, with_state):
    """A module whose ONNX graph has flat inputs/outputs: x (+ state) -> y (+ state)."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = module

        def forward(self, x, *state):
            if not with_state:
                return self.rnn(x)[0]
            y, s = self.rnn(x, tuple(state) if len(state) > 1 else state[0])
            return (y, *s) if isinstance(s, tuple) else (y, s)

    return Wrapped().eval()


def state_names(w):
    return ["h", "c"] if w.cell == "LSTM" else ["h"]


def export_onnx(w, module, example_x, with_state=False):
    """ONNX bytes of the module for exactly the example's shapes (opset 17)."""
    import torch
    names = state_names(w) if with_state else []
    example = (example_x,) + tuple(torch.zeros(w.layers * w.directions, w.batch, w.hidden)
                                   for _ in names)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # legacy-exporter deprecation + batch-size notes
        torch.onnx.export(_export_wrapper(module, with_state), example, buf, dynamo=False,
                          opset_version=17, input_names=["x"] + names,
                          output_names=["y"] + [n + "_n" for n in names])
    return buf.getvalue()


def ort_session(onnx_model, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(onnx_model, so, providers=["CPUExecutionProvider"])


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


@dataclass
class Prepared:
    calls: dict                 # framework -> zero-arg callable, or None (pending)
    diffs: dict                 # "a vs b" -> max abs diff
    flops: float
    bytes: Optional[float]      # weight bytes streamed per call (batch 1)
    notes: list


def prepare_batch(w, threads):
    """Sequence and variable-length workloads: one predict-style call per sample."""
    import torch
    import drnn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    module = build_torch(w)
    x, lengths = make_inputs(w)
    xt = torch.from_numpy(x)
    sess = ort_session(export_onnx(w, module, xt), threads)
    model = drnn.from_torch(module)
    feed = {"x": x}
    notes = []

    if lengths is None:
        def run_torch():
            return module(xt)[0]

        def run_drnn():
            return model.predict(x, num_threads=threads)
    else:
        lens_t = torch.from_numpy(lengths)
        total = x.shape[1]

        def run_torch():
            packed = pack_padded_sequence(xt, lens_t, batch_first=True, enforce_sorted=False)
            return pad_packed_sequence(module(packed)[0], batch_first=True,
                                       total_length=total)[0]

        def run_drnn():
            return model.predict(x, lengths=lengths, num_threads=threads)
        notes.append("ORT runs the padded batch (no sequence_lens in the torch export): "
                     "its timing covers B*T steps and its agreement is checked on the "
                     "full-length rows only")

    def run_ort():
        return sess.run(["y"], feed)[0]

    y_torch, y_ort, y_drnn = run_torch().numpy(), run_ort(), run_drnn()
    rows = slice(None) if lengths is None else lengths == x.shape[1]
    diffs = {"torch vs drnn": max_diff(y_torch, y_drnn),
             "torch vs ORT" + ("" if lengths is None else " (full-length rows)"):
                 max_diff(y_torch[rows], y_ort[rows]),
             "ORT vs drnn" + ("" if lengths is None else " (full-length rows)"):
                 max_diff(y_ort[rows], y_drnn[rows])}
    return Prepared({"torch": run_torch, "ORT": run_ort, "drnn": run_drnn}, diffs,
                    *work(w, x, lengths), notes)


def prepare_stream(w, threads, check_steps=50):
    """One time step per Python call, state carried by the caller (torch, ORT) or
    by a drnn Stream.  Agreement: check_steps steps through each stepper, against
    torch over the whole sequence."""
    import torch
    import drnn

    module = build_torch(w)
    x, _ = make_inputs(w, steps=check_steps)
    sess = ort_session(export_onnx(w, module, torch.from_numpy(x[:, :1]), with_state=True),
                       threads)
    model = drnn.from_torch(module)
    names = state_names(w)
    shape = (w.layers * w.directions, w.batch, w.hidden)

    class TorchStep:
        def __init__(self):
            z = [torch.zeros(shape) for _ in names]
            self.state = tuple(z) if len(z) > 1 else z[0]

        def __call__(self, x_t):                # x_t (1, 1, F) tensor
            y, self.state = module(x_t, self.state)
            return y

    class OrtStep:
        def __init__(self):
            self.feed = {n: np.zeros(shape, np.float32) for n in names}
            self.outputs = ["y"] + [n + "_n" for n in names]

        def __call__(self, x_t):                # x_t (1, 1, F) ndarray
            self.feed["x"] = x_t
            y, *state = sess.run(self.outputs, self.feed)
            self.feed.update(zip(names, state))
            return y

    y_ref = module(torch.from_numpy(x))[0].numpy()[0]
    ts, os_ = TorchStep(), OrtStep()
    y_torch = np.concatenate([ts(torch.from_numpy(x[:, t:t + 1])).numpy()[0]
                              for t in range(check_steps)])
    y_ort = np.concatenate([os_(x[:, t:t + 1])[0] for t in range(check_steps)])
    diffs = {"torch steps vs torch sequence": max_diff(y_torch, y_ref),
             "torch vs ORT steps": max_diff(y_torch, y_ort)}
    notes = []
    calls = {}
    if hasattr(model, "stream"):
        # The same thread budget as the peers: stream(num_threads=threads)
        # splits a step across cores once its weights pay for it (>= 128 KiB).
        ds = model.stream(batch_size=1, num_threads=threads)
        y_drnn = np.concatenate([np.reshape(ds.step(x[0, t]), (1, -1))
                                 for t in range(check_steps)])
        diffs["torch vs drnn stream"] = max_diff(y_torch, y_drnn)
        x1 = x[0, 0].copy()                     # one (F,) float32 frame
        step = ds.step
        calls["drnn"] = lambda: step(x1)        # allocates its output, like the peers
        notes.append(f"drnn: Stream.step(frame) on stream(num_threads={threads}), a new "
                     "output array per call (step(frame, out=buf) avoids even that)")
    else:
        diffs["torch vs drnn predict (no stream yet)"] = max_diff(y_torch, model.predict(x)[0])
        calls["drnn"] = None
        notes.append("drnn: pending (streaming API not built yet)")

    xt1, xo1 = torch.from_numpy(x[:, :1].copy()), x[:, :1].copy()
    calls["torch"] = lambda: ts(xt1)
    calls["ORT"] = lambda: os_(xo1)
    return Prepared(calls, diffs, *work(w, x[:, :1], None), notes)


def prepare_run(w, threads):
    """An audio block through a drnn Stream: run(block) with the state carried
    (so a block costs what the stream pays in real use), against torch and ORT
    running the same block as one sequence."""
    import torch
    import drnn

    module = build_torch(w)
    x, _ = make_inputs(w)
    xt = torch.from_numpy(x)
    sess = ort_session(export_onnx(w, module, xt), threads)
    model = drnn.from_torch(module)
    ds = model.stream(batch_size=w.batch)
    block = x[0] if w.batch == 1 else x

    def run_torch():
        return module(xt)[0]

    def run_ort():
        return sess.run(["y"], {"x": x})[0]

    def run_drnn():
        return ds.run(block)

    y_torch, y_ort = run_torch().numpy(), run_ort()
    ds.reset()
    y_drnn = np.reshape(run_drnn(), y_torch.shape)
    diffs = {"torch vs drnn stream.run": max_diff(y_torch, y_drnn),
             "torch vs ORT": max_diff(y_torch, y_ort),
             "drnn stream.run vs predict": max_diff(y_drnn, model.predict(x))}
    notes = ["drnn: Stream.run over the block, state carried from the previous call"]
    return Prepared({"torch": run_torch, "ORT": run_ort, "drnn": run_drnn}, diffs,
                    *work(w, x, None), notes)


def prepare(w, threads):
    if w.mode == "stream":
        return prepare_stream(w, threads)
    if w.mode == "run":
        return prepare_run(w, threads)
    return prepare_batch(w, threads)


# ---------------------------------------------------------------- timing
@dataclass
class Timing:
    budget: float = 20.0        # seconds of timed rounds per workload (roughly)
    min_reps: int = 5
    max_reps: int = 300
    warmup: float = 0.3         # seconds of warm-up per callable (at least 2 calls)
    min_sample: float = 2e-3    # a sample repeats a fast call until it lasts this long
    settle: float = 0.1         # untimed pause before each block: the previous framework's
                                # idle OpenMP / ORT / drnn worker threads stop spin-waiting
    block: int = 10             # samples of one framework back to back, then the next


def time_interleaved(calls: dict, cfg: Timing) -> dict:
    """Per-call times in seconds, {name: [samples]}, sampled round-robin in blocks.

    Each framework gets a block of cfg.block back-to-back samples (after a
    pause and one untimed call), then the next framework: every framework
    is measured in its own steady state, not while another one's idle
    worker threads still spin on both cores, and slow drift of the machine
    still reaches all of them alike.
    """
    per_call, inner = {}, {}
    for name, fn in calls.items():
        n, t0, best = 0, time.perf_counter(), math.inf
        while n < 2 or time.perf_counter() - t0 < cfg.warmup:
            s = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - s)
            n += 1
        per_call[name] = best
        inner[name] = max(1, math.ceil(cfg.min_sample / max(best, 1e-9)))
    round_cost = sum(per_call[n] * inner[n] for n in calls)
    reps = int(min(cfg.max_reps, max(cfg.min_reps, cfg.budget / round_cost)))
    rounds = max(1, math.ceil(reps / cfg.block))
    names = list(calls)
    samples = {n: [] for n in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                fn, m = calls[name], inner[name]
                time.sleep(cfg.settle)
                fn()
                for _ in range(min(cfg.block, reps - r * cfg.block)):
                    t0 = time.perf_counter()
                    for _ in range(m):
                        fn()
                    samples[name].append((time.perf_counter() - t0) / m)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


# ---------------------------------------------------------------- reporting
def fmt_time(s):
    if s is None:
        return "pending"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def loadavg():
    """1-minute load average: other processes on a 2-core box skew every timing."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return float("nan")


def machine_info():
    import drnn
    import onnxruntime
    import torch
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "load average at start": loadavg(),
            "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "drnn": drnn.__version__,
            "drnn.cpu_info()": drnn.cpu_info()}


@dataclass
class Result:
    w: Workload
    medians: dict               # framework -> seconds or None
    prepared: Prepared

    def ratio(self, peer):
        """drnn speed-up over peer ("best" = the faster of torch and ORT)."""
        d = self.medians.get("drnn")
        if d is None:
            return None
        p = min(self.medians[n] for n in PEERS) if peer == "best" else self.medians[peer]
        return p / d

    @property
    def agrees(self):
        return all(v <= TOL for v in self.prepared.diffs.values())


def speed_table(results):
    head = ["workload", "shape", "torch", "ORT", "drnn", "drnn speed-up vs best peer",
            "target", "met?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        best = r.ratio("best")
        goal = r.ratio(r.w.target_peer)
        if goal is None:
            met = "pending"
        else:
            met = ("yes" if goal >= r.w.target else "no") + \
                  (f" ({goal:.2f}x vs torch)" if r.w.target_peer != "best" else "")
        if not r.agrees:
            met += " — OUTPUTS DISAGREE"
        cells = [r.w.name, r.w.shape] + [fmt_time(r.medians.get(n)) for n in FRAMEWORKS] + \
                ["pending (streaming API not built yet)" if best is None else f"{best:.2f}x",
                 r.w.target_text, met]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def floor_table(results):
    head = ["workload", "GFLOP/call", "torch GFLOP/s", "ORT GFLOP/s", "drnn GFLOP/s",
            f"drnn % of {PEAK_GFLOPS:g} peak", "drnn weight GB/s", "drnn us/step",
            f"floor us/step ({L2_GBS:g} GB/s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        p = r.prepared
        rate = {n: (p.flops / r.medians[n] / 1e9 if r.medians.get(n) else None)
                for n in FRAMEWORKS}
        d = r.medians.get("drnn")
        gbs = f"{p.bytes / d / 1e9:.1f}" if (d and p.bytes) else "–"
        per_step = f"{d / r.w.steps * 1e6:.2f}" if (d and p.bytes) else "–"
        floor = f"{p.bytes / r.w.steps / L2_GBS / 1e3:.2f}" if p.bytes else "–"
        cells = [r.w.name, f"{p.flops / 1e9:.4g}"] + \
                [f"{rate[n]:.2f}" if rate[n] else "–" for n in FRAMEWORKS] + \
                [f"{100 * rate['drnn'] / PEAK_GFLOPS:.1f}%" if rate["drnn"] else "–",
                 gbs, per_step, floor]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- peak RSS
RSS_WORKLOAD = "throughput-bilstm512"


def maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # KiB on Linux


def rss_child(role, name, folder, threads):
    """Run in a fresh process.  role "prepare": build the workload with torch and write
    x.npy, model.onnx and model.safetensors to folder.  role = a framework: import only
    it, load the model, run once, print JSON of ru_maxrss (MiB) at each stage."""
    w = BY_NAME[name]
    if role == "prepare":
        import torch
        import drnn
        module = build_torch(w)
        x, _ = make_inputs(w)
        np.save(os.path.join(folder, "x.npy"), x)
        with open(os.path.join(folder, "model.onnx"), "wb") as f:
            f.write(export_onnx(w, module, torch.from_numpy(x)))
        drnn.from_torch(module).save(os.path.join(folder, "model.safetensors"))
        return
    x = np.load(os.path.join(folder, "x.npy"))
    base = maxrss_mib()
    if role == "torch":
        import torch
        torch.set_num_threads(threads)
        module = build_torch(w)
        loaded = maxrss_mib()
        with torch.inference_mode():
            module(torch.from_numpy(x))
    elif role == "ORT":
        sess = ort_session(os.path.join(folder, "model.onnx"), threads)
        loaded = maxrss_mib()
        sess.run(["y"], {"x": x})
    else:
        import drnn
        model = drnn.load(os.path.join(folder, "model.safetensors"))
        loaded = maxrss_mib()
        model.predict(x)
    print(json.dumps({"framework": role, "python+numpy+input MiB": base,
                      "after import+load MiB": loaded, "peak MiB": maxrss_mib()}))


def measure_rss(name, threads):
    """Peak RSS of one subprocess per framework running workload `name` once.

    ru_maxrss survives fork+exec (a child starts with its parent's peak), so this
    process never imports torch: a "prepare" child writes the model files."""
    w = BY_NAME[name]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for role in ("prepare",) + FRAMEWORKS:
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--rss-child",
                                  role, name, folder, "--threads", str(threads)],
                                 check=True, capture_output=True, text=True).stdout
            if role != "prepare":
                rows.append(json.loads(out.strip().splitlines()[-1]))
    head = list(rows[0])
    lines = [f"Peak RSS (ru_maxrss), {name} ({w.shape}), one call, one process per "
             f"framework (this launcher: {maxrss_mib():.0f} MiB):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r[head[0]]] + [f"{r[h]:.0f}" for h in head[1:]]) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    ap.add_argument("--only", action="append", metavar="NAME",
                    help=f"run only this workload (repeatable): {', '.join(BY_NAME)}")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch.set_num_threads and ORT intra-op threads (default 2)")
    ap.add_argument("--markdown", metavar="PATH", help="also write the report here")
    ap.add_argument("--rss", action="store_true",
                    help=f"measure peak RSS per framework on {RSS_WORKLOAD} (or --only) and exit")
    ap.add_argument("--rss-child", nargs=3, metavar=("ROLE", "NAME", "DIR"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    # drnn has no thread control yet; DESIGN.md names this variable for it.
    os.environ.setdefault("DRNN_NUM_THREADS", str(args.threads))

    if args.rss_child:
        rss_child(*args.rss_child, threads=args.threads)
        return 0
    unknown = [n for n in args.only or [] if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown workload {unknown}; choose from {', '.join(BY_NAME)}")
    selected = [BY_NAME[n] for n in args.only] if args.only else WORKLOADS
    if args.rss:
        for name in (args.only or [RSS_WORKLOAD]):
            print(measure_rss(name, args.threads))
        return 0

    import torch
    torch.set_num_threads(args.threads)
    cfg = Timing(budget=1.5, min_reps=2, max_reps=20, warmup=0.05) if args.quick else Timing()
    info = machine_info()
    command = "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:])
    header = [f"- {k}: {v}" for k, v in info.items()] + \
             [f"- threads: {args.threads} (torch.set_num_threads, ORT intra_op_num_threads; "
              "drnn num_threads)", f"- command: `{command}`"]
    print("\n".join(header), flush=True)
    if info["load average at start"] > 0.5:
        print(f"WARNING: load average {info['load average at start']} -- other processes "
              "are running; timings will be noisy", flush=True)

    results = []
    with torch.inference_mode():
        for w in selected:
            print(f"\n== {w.name}: {w.shape}", flush=True)
            p = prepare(w, args.threads)
            for k, v in p.diffs.items():
                print(f"   max abs diff {k}: {v:.2e}" + ("" if v <= TOL else f"  > {TOL:g} !"))
            for note in p.notes:
                print(f"   note: {note}")
            live = {n: f for n, f in p.calls.items() if f is not None}
            samples = time_interleaved(live, cfg)
            medians = {n: (statistics.median(samples[n]) if n in samples else None)
                       for n in FRAMEWORKS}
            for n, s in samples.items():
                q1, _, q3 = (statistics.quantiles(s, n=4, method="inclusive")
                             if len(s) > 1 else (s[0],) * 3)
                print(f"   {n:5s} median {fmt_time(medians[n]):>9s}  "
                      f"IQR {fmt_time(q1)} .. {fmt_time(q3)}  ({len(s)} samples)", flush=True)
            results.append(Result(w, medians, p))

    header.append(f"- load average at end: {loadavg()}")
    report = "\n".join(header) + "\n\n" + speed_table(results) + "\n\n" + \
        "Distance from the floor:\n\n" + floor_table(results) + "\n"
    print("\n" + speed_table(results) + "\n\n" + floor_table(results))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report)
    if not all(r.agrees for r in results):
        print(f"\nFAILED: some outputs disagree by more than {TOL:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
