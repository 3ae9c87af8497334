#!/usr/bin/env bash
# Side-by-side training-step benchmark: LIM's patch Transformer (burn, flex CPU backend) against
# the JAX peer (../shared/bench/patchtst_jax.py), reference config: d_model 64, 2 layers,
# 4 heads, 32 patches of 16, batch 64. Optionally times a prediction panel of a dataset.
# usage: bench/patchtst.sh [PYTHON] [DATA_DIR]
#   PYTHON    a Python with jax (default: python3); skipped with a note if jax is missing
#   DATA_DIR  if given, also time predictions for every symbol and bar of cn_futures_daily
#             there (e.g. ../shared/data), with peak RSS from /usr/bin/time -v
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
data=${2:-}
peer=../shared/bench/patchtst_jax.py
cargo build --release --quiet --bin bench-foundation
bin=${CARGO_TARGET_DIR:-target}/release/bench-foundation
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== lim (burn flex, release; each batch in 2 shards unless --shards says otherwise)"
"$bin" --steps 60
echo "== jax ($py)"
if "$py" -c "import jax" 2>/dev/null; then
    out=$(mktemp)
    /usr/bin/time -f "peak RSS of the peer: %M KiB" "$py" "$peer" --steps 60 --out "$out" >/dev/null
    "$py" - "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["runs"]:
    print(json.dumps({k: r[k] for k in ("objective", "step_ms_median", "step_ms_p10", "step_ms_p90", "cpu_ms_per_step_median")}))
PY
    rm -f "$out"
else
    echo "jax is not importable by $py: no side-by-side number (install it with: $py -m pip install jax)"
    rec=../shared/bench/results/patchtst_jax.json
    if [ -f "$rec" ]; then
        echo "recorded peer result ($rec, measured on another occasion, not side by side):"
        "$py" -c "import json;d=json.load(open('$rec'));[print(r['objective'], 'median', round(r['step_ms_median'],1), 'ms, cpu', round(r['cpu_ms_per_step_median'],1), 'ms, load', round(d['loadavg_1m_start'],1)) for r in d['runs']]"
    fi
fi
if [ -n "$data" ]; then
    echo "== predictions: cn_futures_daily in $data, reference config"
    /usr/bin/time -v "$bin" --predict "$data" 2> >(grep -E "Maximum resident|Elapsed" >&2)
fi
