#!/usr/bin/env bash
# Side-by-side alpha benchmark: LIM against the numpy+bottleneck peer on the peer's seeded
# 500 x 5000 panel, all 100 alphas of ../shared/bench/alphas.txt, plus a metric cross-check.
# usage: bench/alphas.sh [PYTHON]    (PYTHON needs numpy, pandas, bottleneck)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
work=${LIM_BENCH_DIR:-${TMPDIR:-/tmp}/lim-alpha-bench}
peer=../shared/bench
mkdir -p "$work"
[ -f "$work/bench_panel.csv.gz" ] || "$py" bench/alphas_panel.py "$work"
cargo build --release --quiet --bin bench-alphas
# The first run also writes the panel's cache; time the second.
./target/release/bench-alphas "$work/bench_panel.csv.gz" "$peer/alphas.txt" > /dev/null
one=$(RAYON_NUM_THREADS=1 ./target/release/bench-alphas "$work/bench_panel.csv.gz" "$peer/alphas.txt")
two=$(RAYON_NUM_THREADS=2 ./target/release/bench-alphas "$work/bench_panel.csv.gz" "$peer/alphas.txt" --out "$work/lim_metrics.csv")
(cd "$peer" && "$py" run_bench.py --variant numpy --data "$work/panel.npz" --out "$work/numpy" > /dev/null)
printf '%s\n%s\n' "$one" "$two"
"$py" - "$one" "$two" "$work" <<'PY'
import csv, json, sys
one, two, work = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
peer = json.load(open(f"{work}/numpy/timing_numpy.json"))
np_cpu = peer["total_cpu_s"] / peer["n_strategies"]
print(f"numpy+bottleneck  {np_cpu:.3f} CPU-s per strategy ({peer['total_s']:.1f} s wall, 1 thread)")
print(f"lim, 1 thread     {one['cpu_s_per_strategy']:.3f} CPU-s per strategy ({one['wall_s']:.1f} s wall) -> {np_cpu / one['cpu_s_per_strategy']:.1f}x less CPU than numpy")
print(f"lim, 2 threads    {two['cpu_s_per_strategy']:.3f} CPU-s per strategy ({two['wall_s']:.1f} s wall) -> {one['wall_s'] / two['wall_s']:.2f}x speed-up from the second thread")
print(f"lim peak RSS {two['peak_rss_mb']:.0f} MB for a {two['panel_bytes'] / 2**20:.0f} MB panel ({two['peak_rss_mb'] / (two['panel_bytes'] / 2**20):.1f}x)")
ref = {r["name"]: r for r in csv.DictReader(open(f"{work}/numpy/metrics_numpy.csv"))}
worst = 0.0
for r in csv.DictReader(open(f"{work}/lim_metrics.csv")):
    for k in ["ann_return", "sharpe", "max_dd", "turnover", "ic_mean", "ic_ir"]:
        a, b = float(r[k]), float(ref[r["name"]][k])
        worst = max(worst, abs(a - b) / max(abs(a), abs(b), 1e-300))
print(f"agreement with numpy over all 100 alphas x 6 metrics: worst relative difference {worst:.2e}")
PY
