#!/usr/bin/env bash
# Side-by-side load benchmark: LIM against the pandas peer (read_csv + pivot) on one file.
# usage: bench/load.sh [FILE] [PYTHON]
#   FILE    default ../shared/data/us_equities_daily_adjusted.csv.gz
#   PYTHON  a Python with pandas (default: python3); the peer script is ../shared/bench/load_bench.py
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:-../shared/data/us_equities_daily_adjusted.csv.gz}
py=${2:-python3}
peer=../shared/bench/load_bench.py
cargo build --release --quiet --bin bench-load
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
lim() { ./target/release/bench-load "$@" "$file"; }
parse=$(lim --mode parse --reps 5)
first=$(lim --mode first --reps 3 --cache-dir "$cache")
cached=$(lim --mode cached --reps 5 --cache-dir "$cache")
pandas=$("$py" "$peer" "$file" --reps 3)
printf '%s\n' "$parse" "$first" "$cached" "pandas: $pandas"
"$py" - "$parse" "$first" "$cached" "$pandas" <<'PY'
import json, sys
parse, first, cached, pandas = (json.loads(a) for a in sys.argv[1:])
limit = 2 * parse["panel_bytes"] / 2**20 + 100
print(f"pandas read_csv+pivot        {pandas['seconds_min']:.3f} s (min of 3; median {pandas['seconds_median']:.3f} s)")
print(f"lim parse, no cache          {parse['seconds_min']:.3f} s  -> {pandas['seconds_min']/parse['seconds_min']:.1f}x faster than pandas")
print(f"lim first load + cache write {first['seconds_min']:.3f} s  -> {pandas['seconds_min']/first['seconds_min']:.1f}x faster than pandas (median {first['seconds_median']:.3f} s -> {pandas['seconds_median']/first['seconds_median']:.1f}x against pandas' median)")
print(f"lim cached reload            {cached['seconds_min']:.4f} s -> {parse['seconds_min']/cached['seconds_min']:.0f}x faster than parsing, {first['seconds_min']/cached['seconds_min']:.0f}x than the first load")
print(f"peak RSS: parse {parse['peak_rss_mb']:.0f} MB, first {first['peak_rss_mb']:.0f} MB, cached {cached['peak_rss_mb']:.0f} MB, pandas {pandas['peak_rss_mb']:.0f} MB; goal <= {limit:.0f} MB (2 x panels + 100 MB)")
PY
