#!/usr/bin/env python
"""Long fuzzing campaigns against drnn's loaders (the suite runs a few hundred examples).

    python scripts/fuzz.py --format pt --examples 100000
    python scripts/fuzz.py --format onnx --examples 20000 --seed 7 --out fuzz-out
    python scripts/fuzz.py --format keras --replay 1234      # rebuild example 1234 and check it
    python scripts/fuzz.py --check some_file.h5              # one file under the contract

Formats: pt, safetensors, npz, keras, h5, onnx (or "all").  Example i of a
campaign is fully determined by (--seed, i), so any failure can be rebuilt
with --replay.  The mutators and the contract are those of tests/test_fuzz.py:
drnn.load returns a consistent model (a tiny predict works or raises a
DrnnError) or raises a DrnnError; never another exception, a crash, a hang
(10 s per example), an allocation sized by the file (the address space is
capped while loading), or code from the file executed.

The campaign runs in a worker process watched by this one: a Python-level
failure is saved (input + traceback) under --out/failures and the campaign
goes on; a crash (a signal) or a hang (no progress for --stall seconds) saves
the example being run, and a new worker resumes after it.  Exit status: 0 when
no example failed, 1 otherwise.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
os.environ.setdefault("KERAS_BACKEND", "torch")

EXT = {"pt": ".pt", "safetensors": ".safetensors", "npz": ".npz", "keras": ".keras",
       "h5": ".h5", "onnx": ".onnx"}


def _rand(seed, i):
    import test_fuzz
    return test_fuzz.PyRand(f"{seed}:{i}")


def _save(out, fmt, i, data, text):
    os.makedirs(os.path.join(out, "failures"), exist_ok=True)
    base = os.path.join(out, "failures", f"{fmt}-{i}")
    with open(base + EXT[fmt], "wb") as f:
        f.write(data)
    with open(base + ".txt", "w") as f:
        f.write(text)
    return base + EXT[fmt]


def worker(args):
    """Run examples [start, stop); report progress lines on stdout."""
    import test_fuzz
    folder = tempfile.mkdtemp(prefix=f"drnn-fuzz-{args.format}-")
    camp = test_fuzz.Campaign(args.format, folder)
    counts = {"loaded": 0, "refused": 0, "failed": 0}
    progress = os.path.join(args.out, f".progress-{args.format}")
    t0 = time.time()
    for i in range(args.start, args.stop):
        with open(progress, "w") as f:       # the supervisor saves this one after a crash
            f.write(str(i))
        r = _rand(args.seed, i)
        data = b""
        try:
            data = camp.make(r)
            with open(camp.path, "wb") as f:
                f.write(data)
            outcome = test_fuzz.check_file(camp.path)
            counts[outcome] += 1
        except BaseException as e:          # noqa: B902 -- everything else is a finding
            if isinstance(e, KeyboardInterrupt):
                raise
            counts["failed"] += 1
            saved = _save(args.out, args.format, i, data, traceback.format_exc())
            print(f"FAIL {i} {type(e).__name__}: {str(e)[:200]} -> {saved}", flush=True)
        if (i + 1 - args.start) % args.report == 0 or i + 1 == args.stop:
            rate = (i + 1 - args.start) / max(time.time() - t0, 1e-9)
            print(f"PROGRESS {i + 1} loaded={counts['loaded']} refused={counts['refused']} "
                  f"failed={counts['failed']} ({rate:.0f}/s)", flush=True)
    print(f"DONE {counts['failed']}", flush=True)


def supervise(fmt, args):
    os.makedirs(args.out, exist_ok=True)
    progress = os.path.join(args.out, f".progress-{fmt}")
    start, stop = args.start, args.start + args.examples
    failures = 0
    t0 = time.time()
    while start < stop:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--format", fmt,
               "--seed", str(args.seed), "--start", str(start), "--stop", str(stop),
               "--out", args.out, "--report", str(args.report)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
        last = time.time()
        done = False
        os.set_blocking(proc.stdout.fileno(), False)
        while True:
            line = proc.stdout.readline()
            if line:
                last = time.time()
                line = line.rstrip()
                if line.startswith("DONE"):
                    failures += int(line.split()[1])
                    done = True
                elif line.startswith("FAIL") or line.startswith("PROGRESS"):
                    print(f"[{fmt} {time.time() - t0:7.1f}s] {line}", flush=True)
                continue
            if proc.poll() is not None:
                break
            if time.time() - last > args.stall:
                proc.kill()
                proc.wait()
                print(f"[{fmt}] worker stalled for {args.stall} s", flush=True)
                break
            time.sleep(0.05)
        if done and proc.returncode == 0:
            break
        # crashed or hung: save the example it was running, resume after it
        try:
            i = int(open(progress).read())
        except (OSError, ValueError):
            i = start
        import test_fuzz
        camp = test_fuzz.Campaign(fmt, tempfile.mkdtemp(prefix="drnn-fuzz-replay-"))
        data = camp.make(_rand(args.seed, i))
        why = "hang" if proc.returncode in (None, -9) else f"exit status {proc.returncode}"
        saved = _save(args.out, fmt, i, data, f"worker died ({why}) on example {i}\n")
        print(f"[{fmt}] CRASH on example {i} ({why}) -> {saved}", flush=True)
        failures += 1
        start = i + 1
    print(f"[{fmt}] {args.examples} examples in {time.time() - t0:.0f} s, {failures} failures",
          flush=True)
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", default="all", choices=sorted(EXT) + ["all"])
    ap.add_argument("--examples", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first example index")
    ap.add_argument("--out", default="fuzz-out", help="where failures are saved")
    ap.add_argument("--report", type=int, default=1000, help="progress every N examples")
    ap.add_argument("--stall", type=float, default=60.0, help="seconds without progress = hang")
    ap.add_argument("--replay", type=int, help="rebuild example N of --format/--seed, check it")
    ap.add_argument("--check", help="check one file under the contract")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--stop", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.check:
        import test_fuzz
        print(test_fuzz.check_file(args.check))
        return 0
    if args.replay is not None:
        import test_fuzz
        fmt = args.format
        camp = test_fuzz.Campaign(fmt, tempfile.mkdtemp(prefix="drnn-fuzz-replay-"))
        data = camp.make(_rand(args.seed, args.replay))
        with open(camp.path, "wb") as f:
            f.write(data)
        print(f"example {args.replay} written to {camp.path}")
        print(test_fuzz.check_file(camp.path))
        return 0
    if args.worker:
        worker(args)
        return 0
    fmts = sorted(EXT) if args.format == "all" else [args.format]
    failures = sum(supervise(f, args) for f in fmts)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
