#!/usr/bin/env bash
# Side-by-side load benchmark: LIM against the pandas peer (read_csv + pivot) on one file, and
# LIM's first load of the same data converted to Parquet (`lim data convert`).
# usage: bench/load.sh [FILE] [PYTHON]
#   FILE    default ../shared/data/us_equities_daily_adjusted.csv.gz
#   PYTHON  a Python with pandas (default: python3); the peer script is ../shared/bench/load_bench.py
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:-../shared/data/us_equities_daily_adjusted.csv.gz}
py=${2:-python3}
peer=../shared/bench/load_bench.py
cargo build --release --quiet --bin bench-load --bin lim
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
name=$(basename "$file"); name=${name%.gz}; name=${name%.csv}
./target/release/lim data convert "$file" -o "$cache/$name.parquet" >/dev/null
lim() { ./target/release/bench-load "$@" "$file"; }
parse=$(lim --mode parse --reps 5)
first=$(lim --mode first --reps 3 --cache-dir "$cache")
cached=$(lim --mode cached --reps 5 --cache-dir "$cache")
pq_first=$(./target/release/bench-load --mode first --reps 3 --cache-dir "$cache/pq" "$cache/$name.parquet")
pandas=$("$py" "$peer" "$file" --reps 3)
printf '%s\n' "$parse" "$first" "$cached" "$pq_first" "pandas: $pandas"
"$py" - "$parse" "$first" "$cached" "$pandas" "$pq_first" <<'PY'
import json, sys
parse, first, cached, pandas, pq = (json.loads(a) for a in sys.argv[1:])
limit = 2 * parse["panel_bytes"] / 2**20 + 100
print(f"pandas read_csv+pivot        {pandas['seconds_min']:.3f} s (min of 3; median {pandas['seconds_median']:.3f} s)")
print(f"lim parse, no cache          {parse['seconds_min']:.3f} s  -> {pandas['seconds_min']/parse['seconds_min']:.1f}x faster than pandas")
print(f"lim first load + cache write {first['seconds_min']:.3f} s  -> {pandas['seconds_min']/first['seconds_min']:.1f}x faster than pandas (median {first['seconds_median']:.3f} s -> {pandas['seconds_median']/first['seconds_median']:.1f}x against pandas' median)")
print(f"lim cached reload            {cached['seconds_min']:.4f} s -> {parse['seconds_min']/cached['seconds_min']:.0f}x faster than parsing, {first['seconds_min']/cached['seconds_min']:.0f}x than the first load")
print(f"lim first load from Parquet  {pq['seconds_min']:.3f} s  -> {first['seconds_min']/pq['seconds_min']:.2f}x the CSV first load (median {pq['seconds_median']:.3f} s -> {first['seconds_median']/pq['seconds_median']:.2f}x); peak RSS {pq['peak_rss_mb']:.0f} MB")
print(f"peak RSS: parse {parse['peak_rss_mb']:.0f} MB, first {first['peak_rss_mb']:.0f} MB, cached {cached['peak_rss_mb']:.0f} MB, pandas {pandas['peak_rss_mb']:.0f} MB; goal <= {limit:.0f} MB (2 x panels + 100 MB)")
PY
