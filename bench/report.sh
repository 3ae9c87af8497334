#!/usr/bin/env bash
# Tearsheet benchmark: an offline research run on the bundled sample with about 280 trials, then
# `lim show RUN --html` (rebuild the summary from the run's artifacts and render report.html)
# five times: wall time and peak RSS of each, and the page's size. Targets: under 1 s, 2 MB.
# usage: bench/report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin lim
store=$(mktemp -d)
trap 'rm -rf "$store"' EXIT
goal="find a robust trend strategy for Chinese commodity futures, max drawdown 15%"
run=$(./target/release/lim research "$goal" --population 40 --max-iterations 8 --store "$store" \
  --json 2>/dev/null | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["run"], d["summary"]["trials"])')
set -- $run
echo "run $1: $2 trials"
for _ in 1 2 3 4 5; do
  /usr/bin/time -f "lim show --html: %e s wall, %M KB peak RSS" \
    ./target/release/lim show "$1" --store "$store" --html > /dev/null
done
echo "report.html: $(stat -c %s "$store/$1/report.html") bytes"
