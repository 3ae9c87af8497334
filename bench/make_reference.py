"""Reference fixture for LIM's backtester agreement test.

Generates a small seeded panel with the peer's generator (../shared/bench/gen_data.py),
rounds it to 6 significant digits (like the real data), writes it in LIM's uniform CSV
format, and runs the peer's numpy+bottleneck reference backtest (../shared/bench) on every
alpha of alphas.txt, writing the metrics as JSON.

usage: python bench/make_reference.py [--n 100] [--t 400] [--seed 7] [--out DIR]
"""
import argparse, gzip, json, os, sys

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
peer = os.path.join(here, "..", "..", "shared", "bench")
sys.path.insert(0, peer)
import backtest as bt  # noqa: E402
import dsl  # noqa: E402
from gen_data import make_panel  # noqa: E402


_peer_stats = bt._stats


def _stats_from_capital(net, turnover):
    """The peer's statistics, except that the drawdown's running peak starts at the starting
    capital (1.0), as empyrical, quantstats and pyfolio do and LIM does: the peer starts it at
    the first bar's equity, which misses a loss on the first bar."""
    ann, sharpe, _, to = _peer_stats(net, turnover)
    eq = np.cumprod(1.0 + net)
    peak = np.maximum.accumulate(np.concatenate([[1.0], eq]))[1:]
    return ann, sharpe, (eq / peak - 1.0).min(), to


bt._stats = _stats_from_capital


def round6(a):
    with np.errstate(all="ignore"):
        mag = np.floor(np.log10(np.abs(a)))
        f = 10.0 ** (5 - mag)
        return np.where(np.isfinite(a), np.round(a * f) / f, np.nan)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--t", type=int, default=400)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=os.path.join(here, "..", "backtest", "tests", "fixtures"))
    ap.add_argument("--name", default="reference_panel")
    a = ap.parse_args()
    panel = {k: round6(v) for k, v in make_panel(a.n, a.t, a.seed).items()}
    fields = ["open", "high", "low", "close", "volume"]
    days = np.datetime64("2000-01-03") + np.arange(a.t * 2)
    days = [d for d in days if d.astype("datetime64[D]").item().weekday() < 5][: a.t]
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"{a.name}.csv.gz")
    with gzip.open(path, "wt", newline="\n") as f:
        f.write("ts,symbol," + ",".join(fields) + "\n")
        for j in range(a.n):
            for i in range(a.t):
                if np.isnan(panel["close"][i, j]):
                    continue
                vals = ",".join(repr(float(panel[k][i, j])) for k in fields)
                f.write(f"{days[i]},S{j:04d},{vals}\n")
    # Values are written with repr(), which round-trips exactly, so the reference below runs
    # on exactly what the file holds.
    be = dsl.NumpyBackend(panel)
    fwd = bt.fwd_returns_numpy(be.f["close"])
    out = []
    for name, expr in dsl.load_alphas(os.path.join(peer, "alphas.txt")):
        sig = dsl.Evaluator(be).eval(expr)
        res = bt.backtest_numpy(sig, fwd)
        out.append(dict(name=name, expr=expr, **{k: float(v) for k, v in res.items()}))
    with open(os.path.join(a.out, f"{a.name}.expected.json"), "w") as f:
        json.dump(dict(generator=dict(n=a.n, t=a.t, seed=a.seed, rounded="6 significant digits"),
                       conventions="numpy+bottleneck reference of ../shared/bench/backtest.py: top-50 equal weight, one-bar lag, 10 bps; max drawdown from the starting capital",
                       alphas=out), f, indent=1)
    print(f"wrote {path} and {a.name}.expected.json: {len(out)} alphas")


if __name__ == "__main__":
    main()
