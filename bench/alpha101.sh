#!/usr/bin/env bash
# Alpha101 beside py-alpha-lib: the 101 alphas of Kakushadze (2015) in LIM's language
# (bench/alpha101.txt) on a seeded 500 x 2000 panel with market caps and a three-level industry
# classification; LIM evaluates them as one batch with its top-50 book, one thread and two;
# py-alpha-lib evaluates the same expressions (bench/alpha101.py parses LIM's language and calls
# its kernels) and books them with the numpy top-50 book of ../shared/bench. Prints the
# speed ratios and the agreement of the values.
# usage: bench/alpha101.sh [PYTHON]   (PYTHON: 3.12 with numpy, bottleneck and py-alpha-lib 0.3.1:
#   python3.12 -m venv venv && venv/bin/pip install numpy bottleneck py-alpha-lib==0.3.1)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3.12}
work=${LIM_BENCH_DIR:-${TMPDIR:-/tmp}/lim-alpha101-bench}
mkdir -p "$work"
[ -f "$work/a101.csv.gz" ] || "$py" bench/alpha101.py panel "$work" --n 500 --t 2000
cargo build --release --quiet --bin bench-alphas
lim() { ./target/release/bench-alphas "$work/a101.csv.gz" bench/alpha101.txt "$@"; }
# The first run also writes the panel's cache and LIM's values for the comparison.
lim --values "$work/lim" > /dev/null
one=$(RAYON_NUM_THREADS=1 lim --out "$work/lim_metrics.csv")
two=$(RAYON_NUM_THREADS=2 lim)
split=$(RAYON_NUM_THREADS=1 LIM_BENCH_SPLIT=1 lim 2>&1 >/dev/null | grep "per strategy")
RAYON_NUM_THREADS=1 "$py" -W ignore bench/alpha101.py peer "$work" bench/alpha101.txt --json "$work/peer1.json" > /dev/null
RAYON_NUM_THREADS=2 "$py" -W ignore bench/alpha101.py peer "$work" bench/alpha101.txt --json "$work/peer2.json" \
  --values "$work/lim" > /dev/null
"$py" - "$one" "$two" "$split" "$work" <<'PY'
import csv, json, sys
one, two, split, work = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
p1, p2 = (json.load(open(f"{work}/peer{k}.json")) for k in (1, 2))
n = one["strategies"]
print(f"101 alphas on {one['N']} instruments x {one['T']} bars, values plus a top-50 book with costs and ICs")
print(f"py-alpha-lib + numpy book, 1 thread   {p1['cpu_s_per_alpha']:.4f} CPU-s per alpha, {p1['wall_s']:.2f} s wall")
print(f"py-alpha-lib + numpy book, 2 threads  {p2['cpu_s_per_alpha']:.4f} CPU-s per alpha, {p2['wall_s']:.2f} s wall")
print(f"LIM, 1 thread                         {one['cpu_s_per_strategy']:.4f} CPU-s per alpha, {one['wall_s']:.2f} s wall"
      f" -> {p1['wall_s'] / one['wall_s']:.1f}x faster than py-alpha-lib on one thread (wall)")
print(f"LIM, 2 threads                        {two['cpu_s_per_strategy']:.4f} CPU-s per alpha, {two['wall_s']:.2f} s wall"
      f" -> {p2['wall_s'] / two['wall_s']:.1f}x faster than py-alpha-lib on two threads (wall)")
print(f"LIM, each alpha alone (nothing shared), 1 thread: {split.split(': ', 1)[1]}; py-alpha-lib's values"
      f" {p1['values_cpu_s_per_alpha']:.3f} CPU-s, the numpy book {p1['book_cpu_s_per_alpha']:.3f} CPU-s")
ag = p2["agreement"]
good = [a for a in ag if a["agree"] >= 0.999]
print(f"values agree (>= 99.9% of the cells LIM defines, within 1e-6 relative): {len(good)} of {len(ag)}")
for a in ag:
    if a["agree"] < 0.999:
        print(f"  {a['name']}: {100 * a['agree']:.1f}% of cells agree (largest difference {a['worst']:.3g})")
lim = {r["name"]: r for r in csv.DictReader(open(f"{work}/lim_metrics.csv"))}
peer = {r["name"]: r for r in csv.DictReader(open(f"{work}/peer_metrics.csv"))}
same = 0
for a in good:
    l, p = lim[a["name"]], peer[a["name"]]
    if all(abs(float(l[k]) - float(p[f"aligned_{k}"])) <= 1e-6 * max(1.0, abs(float(l[k])))
           for k in ["ann_return", "sharpe", "max_dd", "turnover", "ic_mean", "ic_ir"]):
        same += 1
print(f"of those, the top-50 books' six metrics agree within 1e-6 for {same}"
      " (LIM's book beside the numpy book of py-alpha-lib's values)")
open(f"{work}/differ.txt", "w").write(" ".join(a["name"] for a in ag if a["agree"] < 0.999))
PY
# Where the two part: every sub-expression of the alphas that differ, evaluated by both; the
# innermost one that differs while its inputs agree.
differ=$(cat "$work/differ.txt")
if [ -n "$differ" ]; then
  echo "where they part (the innermost sub-expression that differs; its inputs agree):"
  # shellcheck disable=SC2086
  "$py" bench/alpha101.py nodes bench/alpha101.txt "$work/nodes.txt" $differ
  ./target/release/bench-alphas "$work/a101.csv.gz" "$work/nodes.txt" --values "$work/nodes" > /dev/null
  # shellcheck disable=SC2086
  "$py" -W ignore bench/alpha101.py explain "$work" bench/alpha101.txt "$work/nodes.txt" "$work/nodes" $differ
  rm -rf "$work/nodes"
fi
