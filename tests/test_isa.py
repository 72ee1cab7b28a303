"""Kernel selection (DESIGN.md): cpu_info(), DRNN_ISA override, thread cap.

Each ISA's kernels must give the reference's numbers; the override must fail
loudly for an unknown name.  Runs drnn in subprocesses so the environment
variable is read at import.
"""
import json
import os
import subprocess
import sys

import numpy as np

import drnn
import reference
from helpers import assert_close

HERE = os.path.dirname(os.path.abspath(__file__))

_SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, {here!r})
import drnn, reference
w = reference.random_weights("LSTM", 7, 33, 2, bidirectional=True, rng=3)
g = reference.random_weights("GRU", 66, 19, 1, rng=4)
m = drnn.DRNN([drnn.LSTM(7, 33, 2, bidirectional=True, weights=w), drnn.GRU(66, 19, weights=g)])
x = np.random.default_rng(5).standard_normal((3, 9, 7)).astype(np.float32)
y = m.predict(x, lengths=[9, 1, 6])
print(json.dumps({{"isa": drnn.cpu_info()["isa"], "y": y.tolist()}}))
"""


def _models():
    w = reference.random_weights("LSTM", 7, 33, 2, bidirectional=True, rng=3)
    g = reference.random_weights("GRU", 66, 19, 1, rng=4)
    ref = reference.Model([reference.LSTM(7, 33, 2, bidirectional=True, weights=w),
                           reference.GRU(66, 19, weights=g)])
    x = np.random.default_rng(5).standard_normal((3, 9, 7)).astype(np.float32)
    return ref.predict(x, lengths=[9, 1, 6])


def _run(env_extra):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", _SCRIPT.format(here=HERE)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_cpu_info():
    info = drnn.cpu_info()
    assert isinstance(info, dict)
    assert isinstance(info.get("isa"), str) and info["isa"], info


def test_forced_portable_isa_matches_reference():
    r = _run({"DRNN_ISA": "portable"})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["isa"] == "portable", f"DRNN_ISA=portable was not honoured: isa={out['isa']!r}"
    assert_close(np.array(out["y"], np.float32), _models(), what="portable kernels")


def test_default_isa_matches_reference():
    env = {k: v for k, v in os.environ.items() if k != "DRNN_ISA"}
    r = subprocess.run([sys.executable, "-c", _SCRIPT.format(here=HERE)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert_close(np.array(out["y"], np.float32), _models(), what=f"{out['isa']} kernels")


def test_unknown_isa_fails_loudly():
    r = _run({"DRNN_ISA": "no_such_isa_xyz"})
    assert r.returncode != 0, (
        "DRNN_ISA=no_such_isa_xyz should fail loudly, but drnn ran with isa "
        + r.stdout.strip()[:80])
    assert "no_such_isa_xyz" in r.stderr, r.stderr[-2000:]


def test_single_thread_matches_reference():
    r = _run({"DRNN_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert_close(np.array(out["y"], np.float32), _models(), what="DRNN_NUM_THREADS=1")
