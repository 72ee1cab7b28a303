#!/usr/bin/env bash
# A short valgrind memcheck run over drnn's C kernels and Cython layer.
#     bash scripts/valgrind.sh             # from the repository root; ~2-4 minutes
#
# Builds drnn normally (no sanitizers) in a scratch clone, then runs a small
# workload -- every cell type, bidirectional stacks, lengths, projections,
# peepholes, Embedding/Dense, streams, save/load, 1 and 2 threads, and a few
# bad inputs -- under memcheck with Python's suppressions and PYTHONMALLOC=malloc,
# once per instruction set valgrind can emulate (portable and avx2: valgrind
# has no AVX-512).  Prints the invalid reads/writes, uses of uninitialised
# values and the "definitely lost" blocks whose stacks go through drnn; exits
# non-zero if there are any.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone -q "$src" "$work/drnn"
# test the working tree, not only what is committed
(cd "$src" && git diff HEAD) | (cd "$work/drnn" && git apply --allow-empty 2>/dev/null || true)
cd "$work/drnn"
"$py" setup.py -q build_ext --inplace >/dev/null 2>&1
supp=""
for f in /usr/lib/valgrind/python3.supp /usr/lib/x86_64-linux-gnu/valgrind/python3.supp; do
    [ -f "$f" ] && supp="--suppressions=$f"
done
cat > "$work/workload.py" <<'PY'
import pickle, os, tempfile
import numpy as np
import drnn
rng = np.random.default_rng(0)
models = [
    drnn.DRNN([drnn.LSTM(3, 8, num_layers=2, bidirectional=True, seed=0), drnn.Dense(16, 2, seed=1)]),
    drnn.DRNN([drnn.Embedding(11, 4, seed=2), drnn.GRU(4, 6, seed=3),
               drnn.RNN(6, 5, nonlinearity="relu", seed=4), drnn.Dense(5, 3, activation="softmax", seed=5)]),
    drnn.DRNN([drnn.LSTM(3, 6, proj_size=2, bidirectional=True, seed=6)]),
    drnn.DRNN([drnn.LSTM(3, 5, peepholes=True, input_forget=True, clip=3.0, seed=7)]),
    drnn.DRNN([drnn.GRU(3, 4, linear_before_reset=False, reverse=True, seed=8)]),
    drnn.DRNN([drnn.GRU(3, 4, return_sequences=False, seed=9), drnn.Dense(4, 1, seed=10)]),
    drnn.DRNN([drnn.LSTM(3, 300, seed=11)]),       # hidden units split across threads
]
for m in models:
    if m.takes_tokens:
        x = rng.integers(0, 11, (3, 9))
    else:
        x = rng.standard_normal((3, 9, 3)).astype(np.float32)
    for nt in (1, 2):
        y = m.predict(x, num_threads=nt)
        m.predict(x, lengths=[9, 4, 1], num_threads=nt)
        m.predict(x, return_state=True, num_threads=nt)
    m.predict(list(x[:, :5]))
    m.predict(x[:, :0] if m.returns_sequences else x[:, :1])
    m.predict(x[:0])
    try:
        s = m.stream(batch_size=3)
    except drnn.DrnnError:
        continue
    for t in range(9):
        s.step(x[:, t])
    s.run(x)
    s.state = s.state
    s.reset()
    pickle.loads(pickle.dumps(m)).predict(x)
    with tempfile.TemporaryDirectory() as d:
        m.save(os.path.join(d, "m.safetensors"))
        drnn.load(os.path.join(d, "m.safetensors")).predict(x)
for bad in (np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 3), bool)):
    try:
        models[0].predict(bad)
    except drnn.DrnnError:
        pass
print("workload done")
PY
status=0
for isa in portable avx2; do
    log="${TMPDIR:-/tmp}/drnn-valgrind-$isa.log"     # kept for reading
    echo "== valgrind memcheck, DRNN_ISA=$isa"
    DRNN_ISA=$isa PYTHONMALLOC=malloc PYTHONPATH=python valgrind --tool=memcheck \
        --leak-check=full --show-leak-kinds=definite --track-origins=no --num-callers=30 \
        $supp --log-file="$log" "$py" "$work/workload.py"
    "$py" - "$log" <<'PY' || status=1
import re, sys
log = sys.argv[1]
text = open(log).read()
recs = re.split(r"\n==\d+== \n", text)
ours = re.compile(r"_core\.c|_core\.pyx|_core\.cpython|/csrc/|\b(sequence|gemm|lstm|gru|rnn|pool|pack|dense|act|cpu)\.c:")
kinds = {"invalid": re.compile(r"Invalid (read|write|free)|Mismatched free"),
         "uninitialised": re.compile(r"uninitialised"),
         "definitely lost": re.compile(r"definitely lost in")}
bad = []
counts = {k: [0, 0] for k in kinds}     # [all, in drnn]
for r in recs:
    for k, pat in kinds.items():
        if pat.search(r):
            counts[k][0] += 1
            if ours.search(r):
                counts[k][1] += 1
                bad.append(r)
for line in text.splitlines():
    if "definitely lost:" in line or "ERROR SUMMARY" in line:
        print("  " + re.sub(r"^==\d+== *", "", line))
for k, (n_all, n_ours) in counts.items():
    print(f"  {k}: {n_ours} record(s) through drnn's code ({n_all} in the whole process, "
          "the rest inside CPython / numpy)")
bad.sort(key=lambda r: 0 if kinds["invalid"].search(r) else 1 if "lost" in r else 2)
print(f"  full log: {log}")
for r in bad[:10]:
    print(r[:3000])
sys.exit(1 if bad else 0)
PY
done
exit $status
