#!/usr/bin/env bash
# Per-operator benchmark: each expression of bench/ops.txt evaluated alone on the peer's seeded
# 500 x 5000 panel, LIM (one thread) beside the numpy+bottleneck peer, in milliseconds (best of
# five for LIM, of three for numpy; wall time, one thread each).
# usage: bench/ops.sh [PYTHON]    (PYTHON needs numpy, pandas, bottleneck)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
work=${LIM_BENCH_DIR:-${TMPDIR:-/tmp}/lim-alpha-bench}
peer=$(cd ../shared/bench && pwd)
ops=$(pwd)/bench/ops.txt
mkdir -p "$work"
[ -f "$work/bench_panel.csv.gz" ] || "$py" bench/alphas_panel.py "$work"
cargo build --release --quiet --bin bench-alphas
lim=$(RAYON_NUM_THREADS=1 ./target/release/bench-alphas "$work/bench_panel.csv.gz" "$ops" --each)
numpy=$(cd "$peer" && "$py" - "$work/panel.npz" "$ops" <<'PY'
import sys, time
import numpy as np
import dsl
be = dsl.NumpyBackend(dict(np.load(sys.argv[1])))
for name, expr in dsl.load_alphas(sys.argv[2]):
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        dsl.Evaluator(be).eval(expr)
        best = min(best, time.perf_counter() - t)
    print(name, f"{best * 1e3:.2f}")
PY
)
"$py" - "$lim" "$numpy" "$ops" <<'PY'
import sys
lim = dict(l.split() for l in sys.argv[1].splitlines())
peer = dict(l.split() for l in sys.argv[2].splitlines())
exprs = [l.split("|", 1) for l in open(sys.argv[3]) if "|" in l and not l.startswith("#")]
print(f"{'operator':<14}{'LIM ms':>9}{'numpy ms':>10}{'numpy/LIM':>11}  expression")
for name, expr in exprs:
    name = name.strip()
    a, b = float(lim[name]), float(peer[name])
    print(f"{name:<14}{a:>9.1f}{b:>10.1f}{b / a:>10.1f}x  {expr.strip()}")
PY
