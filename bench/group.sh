#!/usr/bin/env bash
# Data-parallel pretraining, side by side on this machine: one process cutting each step into
# two shards on two threads, against two processes (one shard each) exchanging gradients over
# loopback. Prints wall time, windows per second and peak RSS of each, and checks that both
# trained the same model (every step's loss, bit for bit).
#   bench/group.sh [DATA_DIR] [DATASET] [PRESET] [STEPS]
#   (default: the bundled sample, cn_futures_daily, base, 40 steps of 64 windows)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-}
dataset=${2:-cn_futures_daily}
preset=${3:-base}
steps=${4:-40}
cargo build --release --bin lim -q
lim="$PWD/target/release/lim"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
data_args=()
[ -n "$data" ] && data_args=(--data "$data")
common=(foundation pretrain "${data_args[@]}" --datasets "$dataset" --cutoff 2018-12-31
  --config "$preset" --steps "$steps" --batch 64 --checkpoint-every 100000 --shards 2 --json)
"$lim" data list "${data_args[@]}" >/dev/null   # warm the data cache
rate() { awk -v s="$steps" -v t="$1" 'BEGIN { printf "%.0f", s * 64 / t }'; }
/usr/bin/time -f "%e %M" -o "$dir/solo.time" "$lim" "${common[@]}" --name solo --models-dir "$dir/m1" >/dev/null 2>&1
"$lim" "${common[@]}" --name grp --models-dir "$dir/m2" --world 2 --rank 1 --rendezvous "$dir/rv" \
  >/dev/null 2>"$dir/r1.log" &
follower=$!
/usr/bin/time -f "%e %M" -o "$dir/r0.time" "$lim" "${common[@]}" --name grp --models-dir "$dir/m2" \
  --world 2 --rank 0 --rendezvous "$dir/rv" >/dev/null 2>"$dir/r0.log"
wait "$follower"
read -r t1 m1 <"$dir/solo.time"
read -r t2 m2 <"$dir/r0.time"
echo "preset $preset, $steps steps of 64 windows, $dataset"
echo "one process, 2 shards on 2 threads:  ${t1} s  $(rate "$t1") windows/s  peak RSS $((m1 / 1024)) MB"
echo "two processes, 1 shard each:         ${t2} s  $(rate "$t2") windows/s  peak RSS $((m2 / 1024)) MB per process"
losses() { python3 -c "import json,sys; d=sys.argv[1]; print(json.load(open(d+'/'+open(d+'/LATEST').read().strip()+'/meta.json'))['state']['losses'])" "$1"; }
if [ "$(losses "$dir/m1/solo")" = "$(losses "$dir/m2/grp")" ]; then
  echo "same model: every step's loss equal"
else
  echo "DIFFERENT MODELS" >&2
  exit 1
fi
