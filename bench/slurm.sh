#!/usr/bin/env bash
# The Slurm path against the local one, side by side: `lim backtest` of 200 strategies here and
# as an 8-task array job on a single-node cluster on 127.0.0.1 (started and stopped by this
# script, tests/slurm/cluster.sh), with 2 worker slots (1 CPU per task) and 1 (2 CPUs per task).
# Prints wall times, the per-strategy overhead, the time to the first task running, and checks
# the reports are identical.
#   bench/slurm.sh [DATA_DIR] [DATASET]   (default: the bundled sample, us_equities_daily_adjusted)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-}
dataset=${2:-us_equities_daily_adjusted}
cargo build --release --bin lim -q
lim="$PWD/target/release/lim"
dir=$(mktemp -d)
trap 'tests/slurm/cluster.sh stop "$dir/cluster" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
tests/slurm/cluster.sh install
conf=$(tests/slurm/cluster.sh start "$dir/cluster")
export SLURM_CONF="${conf#SLURM_CONF=}"
for op in ts_mean ts_sum ts_std ts_zscore; do
  for f in close volume returns high low; do
    for w in 3 5 10 15 20 30 40 60 120 250; do
      echo "${op}_${f}_$w | rank($op($f, $w))"
    done
  done
done >"$dir/batch.txt"
data_args=()
[ -n "$data" ] && data_args=(--data "$data")
common=(backtest --batch "$dir/batch.txt" --dataset "$dataset" --json "${data_args[@]}")
"$lim" "${common[@]}" >/dev/null 2>&1   # warm the data cache
now() { date +%s.%N; }
t0=$(now); "$lim" "${common[@]}" >"$dir/local.json"; t1=$(now)
local_s=$(echo "$t1 - $t0" | bc -l)
run_slurm() { # $1: cpus per task
  printf 'cpus_per_task = %s\npoll_ms = 100\n' "$1" >"$dir/slurm$1.toml"
  local start first end
  start=$(now)
  "$lim" "${common[@]}" --executor slurm --shards 8 --work-dir "$dir/work$1" \
    --slurm-config "$dir/slurm$1.toml" >"$dir/slurm$1.json" 2> >(while read -r l; do echo "$(now) $l"; done >"$dir/progress$1.txt")
  end=$(now)
  sleep 0.2
  first=$(awk '$0 ~ /[1-9][0-9]* running|[1-9][0-9]*\/8 shards done/ {print $1; exit}' "$dir/progress$1.txt")
  cmp -s "$dir/local.json" "$dir/slurm$1.json" && same=identical || same=DIFFERENT
  printf '%-26s %7.2f s   first task running after %5.2f s   overhead per strategy %6.1f ms   report %s\n' \
    "slurm, $((2 / $1)) worker slot(s)" "$(echo "$end - $start" | bc -l)" "$(echo "$first - $start" | bc -l)" \
    "$(echo "($end - $start - $local_s) * 1000 / 200" | bc -l)" "$same"
}
printf '%-26s %7.2f s\n' "local (2 threads)" "$local_s"
run_slurm 1
run_slurm 2
