#!/usr/bin/env bash
# Build drnn with AddressSanitizer + UndefinedBehaviorSanitizer in a scratch
# clone and run the whole test suite under every ISA this CPU has (or under
# those listed in SANITIZE_ISAS, e.g. SANITIZE_ISAS=avx512 as CI runs it).
#     bash scripts/sanitize.sh            # from the repository root
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone -q "$src" "$work/drnn"
cd "$work/drnn"
DRNN_SANITIZE=1 python setup.py -q build_ext --inplace
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
isas=${SANITIZE_ISAS:-$(PYTHONPATH=python python -c "import drnn; print(' '.join(drnn.cpu_info()['available']))")}
for isa in $isas; do
    echo "== ASan+UBSan, DRNN_ISA=$isa"
    DRNN_ISA="$isa" PYTHONPATH=python python -m pytest -q -p no:cacheprovider tests
done
