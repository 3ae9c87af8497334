"""Writes the peer's seeded 500 x 5000 benchmark panel (../shared/bench/gen_data.py) in two
forms: the peer's .npz and LIM's uniform CSV (full precision, so both see the same numbers).

usage: python bench/alphas_panel.py OUTDIR [--n 500] [--t 5000] [--seed 20240601]
"""
import argparse, gzip, os, sys

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "shared", "bench"))
from gen_data import make_panel  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--n", type=int, default=500)
ap.add_argument("--t", type=int, default=5000)
ap.add_argument("--seed", type=int, default=20240601)
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
p = make_panel(a.n, a.t, a.seed)
np.savez(os.path.join(a.out, "panel.npz"), **p)
fields = ["open", "high", "low", "close", "volume"]
start = np.datetime64("2000-01-03")
days, d = [], start
while len(days) < a.t:
    if d.astype("datetime64[D]").item().weekday() < 5:
        days.append(str(d))
    d += 1
with gzip.open(os.path.join(a.out, "bench_panel.csv.gz"), "wt", compresslevel=1, newline="\n") as f:
    f.write("ts,symbol," + ",".join(fields) + "\n")
    cols = [p[k] for k in fields]
    for j in range(a.n):
        for i in range(a.t):
            if np.isnan(p["close"][i, j]):
                continue
            f.write(f"{days[i]},S{j:04d}," + ",".join(repr(float(c[i, j])) for c in cols) + "\n")
print(f"wrote {a.out}/panel.npz and {a.out}/bench_panel.csv.gz")
