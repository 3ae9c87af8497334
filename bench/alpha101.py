"""Alpha101 beside py-alpha-lib: the peer's side of bench/alpha101.sh.

  python bench/alpha101.py panel OUT [--n 500] [--t 2000] [--seed 20240601]
      writes OUT/a101.csv.gz (LIM's uniform format, with a `cap` column), OUT/groups.csv
      (sector, industry, subindustry) and OUT/panel.npz with the same numbers.
  python bench/alpha101.py peer OUT ALPHAS [--values DIR] [--json FILE]
      evaluates every alpha of ALPHAS (LIM's language) with py-alpha-lib's operators and books
      it with the numpy top-50 book of ../shared/bench; with --values, compares each alpha's
      values with LIM's (DIR/NAME.f64, written by bench-alphas --values).

The driver parses LIM's expression language itself (a small Pratt parser below) and maps each
operator to py-alpha-lib's kernel; see docs/strategy-language.md, "Alpha101", for the mapping,
the conventions aligned and those left to the comparison. Needs Python 3.12 (py-alpha-lib
0.3.1 does not import on 3.11), numpy, bottleneck and py-alpha-lib.
"""
import argparse, csv, gzip, json, math, os, re, sys, time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
shared = os.path.join(here, "..", "..", "shared", "bench")
sys.path.insert(0, shared)


# ---------------------------------------------------------------------------------------------
# The panel: the shared peers' seeded generator, plus market caps and a three-level industry
# classification.

def make(n, t, seed):
    from gen_data import make_panel
    p = make_panel(n, t, seed)
    rng = np.random.default_rng(seed + 1)
    shares = np.exp(rng.uniform(16, 21, size=n))  # constant share counts
    p["cap"] = p["close"] * shares[None, :]
    sector = rng.integers(0, 11, size=n)
    industry = sector * 4 + rng.integers(0, 4, size=n)
    sub = industry * 3 + rng.integers(0, 3, size=n)
    return p, {"sector": sector, "industry": industry, "subindustry": sub}


def write_panel(out, n, t, seed):
    os.makedirs(out, exist_ok=True)
    p, groups = make(n, t, seed)
    np.savez(os.path.join(out, "panel.npz"), **p, **{f"group_{k}": v for k, v in groups.items()})
    fields = ["open", "high", "low", "close", "volume", "cap"]
    start = np.datetime64("2000-01-03")
    days, d = [], start
    while len(days) < t:
        if d.astype("datetime64[D]").item().weekday() < 5:
            days.append(str(d))
        d += np.timedelta64(1, "D")
    with gzip.open(os.path.join(out, "a101.csv.gz"), "wt", compresslevel=1, newline="\n") as f:
        f.write("ts,symbol," + ",".join(fields) + "\n")
        cols = [p[k] for k in fields]
        for j in range(n):
            for i in range(t):
                if np.isnan(p["close"][i, j]):
                    continue
                f.write(f"{days[i]},S{j:04d}," + ",".join(repr(float(c[i, j])) for c in cols) + "\n")
    with open(os.path.join(out, "groups.csv"), "w") as f:
        f.write("symbol,sector,industry,subindustry\n")
        for j in range(n):
            f.write(f"S{j:04d},s{groups['sector'][j]},i{groups['industry'][j]},u{groups['subindustry'][j]}\n")
    print(f"wrote {out}/a101.csv.gz, groups.csv and panel.npz ({n} x {t})")


# ---------------------------------------------------------------------------------------------
# LIM's expression language, parsed here.

TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)|([A-Za-z_]\w*)|(\*\*|<=|>=|==|!=|&&|\|\||[-+*/^<>!(),]))")


def tokenize(src):
    src = src.split("#")[0]
    out, pos = [], 0
    while pos < len(src):
        if src[pos:].strip() == "":
            break
        m = TOKEN.match(src, pos)
        if not m:
            raise SyntaxError(f"cannot read {src[pos:]!r}")
        num, ident, op = m.groups()
        out.append(("num", float(num)) if num else ("id", ident) if ident else ("op", "^" if op == "**" else op))
        pos = m.end()
    return out


BINARY = {"||": 1, "or": 1, "&&": 2, "and": 2, "<": 3, "<=": 3, ">": 3, ">=": 3, "==": 3, "!=": 3,
          "+": 4, "-": 4, "*": 5, "/": 5}


class Parser:
    def __init__(self, src):
        self.toks, self.i = tokenize(src), 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self):
        t = self.peek()
        self.i += 1
        return t

    def expr(self, min_prec=0):
        left = self.unary()
        while True:
            kind, v = self.peek()
            prec = BINARY.get(v) if kind in ("op", "id") else None
            if prec is None or prec <= min_prec:
                return left
            self.take()
            left = ("bin", {"or": "||", "and": "&&"}.get(v, v), left, self.expr(prec))

    def unary(self):
        kind, v = self.peek()
        if kind == "op" and v in ("-", "!") or (kind == "id" and v == "not"):
            self.take()
            return ("neg" if v == "-" else "not", self.unary())
        return self.power()

    def power(self):
        base = self.primary()
        if self.peek() == ("op", "^"):
            self.take()
            return ("bin", "^", base, self.unary())
        return base

    def primary(self):
        kind, v = self.take()
        if kind == "num":
            return ("num", v)
        if kind == "op" and v == "(":
            e = self.expr()
            assert self.take() == ("op", ")")
            return e
        if kind == "id":
            if self.peek() == ("op", "("):
                self.take()
                args = []
                if self.peek() != ("op", ")"):
                    while True:
                        args.append(self.expr())
                        if self.peek() == ("op", ","):
                            self.take()
                            continue
                        break
                assert self.take() == ("op", ")"), f"')' expected after {v}"
                return ("call", v, args)
            return ("name", v)
        raise SyntaxError(f"unexpected {v!r}")


def parse(src):
    p = Parser(src)
    e = p.expr()
    assert p.i == len(p.toks), f"left over: {p.toks[p.i:]}"
    return e


# ---------------------------------------------------------------------------------------------
# Evaluation with py-alpha-lib. Arrays are flat, instrument by instrument (py-alpha-lib's
# layout with set_ctx(groups=N)); cross-sectional work reshapes to (N, T).

class Peer:
    """`aligned=False` is the library as it is (what is timed); `aligned=True` adds LIM's
    conventions where the two differ by convention (what is compared): a window operator is
    NaN until its window holds d numbers, ts_rank averages ties, and ts_corr is NaN where a
    window's variance is below 1e-14 of its squared mean (py-alpha-lib returns rounding noise
    there) and is kept in [-1, 1]."""

    def __init__(self, alpha, fields, groups, n, t, aligned=False):
        self.a, self.fields, self.groups, self.n, self.t = alpha, fields, groups, n, t
        self.aligned = aligned
        alpha.set_ctx(groups=n)

    def full(self, x, d):
        """Where the last d bars of x (same instrument) are all numbers."""
        bad = np.isnan(x).reshape(self.n, self.t).astype(np.int32)
        c = np.cumsum(bad, axis=1)
        lagged = np.zeros_like(c)
        lagged[:, d:] = c[:, :-d]
        ok = (c - lagged) == 0
        ok[:, : d - 1] = False
        return ok.ravel()

    def window(self, out, d, *xs):
        if self.aligned:
            for x in xs:
                if isinstance(x, np.ndarray):
                    out = np.where(self.full(x, d), out, np.nan)
        return out

    def cs(self, x):
        return x.reshape(self.n, self.t)

    def nanify(self, out, *xs):
        for x in xs:
            if isinstance(x, np.ndarray):
                out[np.isnan(x)] = np.nan
        return out

    def arr(self, x):
        return x if isinstance(x, np.ndarray) else np.full(self.n * self.t, float(x))

    def eval(self, e, memo):
        key = repr(e)
        if key in memo:
            return memo[key]
        v = self._eval(e, memo)
        memo[key] = v
        return v

    def _eval(self, e, memo):
        a = self.a
        tag = e[0]
        if tag == "num":
            return e[1]
        if tag == "name":
            if e[1] in self.fields:
                return self.fields[e[1]]
            return ("group", e[1])
        if tag == "neg":
            return -self.eval(e[1], memo)
        if tag == "not":
            x = self.eval(e[1], memo)
            return self.nanify(np.where(x == 0, 1.0, 0.0), x)
        if tag == "bin":
            op, x, y = e[1], self.eval(e[2], memo), self.eval(e[3], memo)
            with np.errstate(all="ignore"):
                if op == "+": return x + y
                if op == "-": return x - y
                if op == "*": return x * y
                if op == "/": return x / y
                if op == "^": return np.power(x, y)
                # Comparisons and logic give 1 or 0, NaN when an operand is NaN (LIM's rule;
                # numpy's own comparisons call NaN false).
                f = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
                     "==": np.equal, "!=": np.not_equal,
                     "&&": lambda p, q: (p != 0) & (q != 0), "||": lambda p, q: (p != 0) | (q != 0)}[op]
                return self.nanify(f(x, y).astype(np.float64) * np.ones(self.n * self.t), x, y)
        assert tag == "call"
        name, args = e[1], [self.eval(x, memo) for x in e[2]]
        d = lambda k: int(args[k])
        with np.errstate(all="ignore"):
            if name == "abs": return np.abs(args[0])
            if name == "sign": return np.sign(args[0])
            if name == "log": return np.log(args[0])
            if name == "sqrt": return np.sqrt(args[0])
            if name == "exp": return np.exp(args[0])
            if name == "min": return np.minimum(args[0], args[1])
            if name == "max": return np.maximum(args[0], args[1])
            if name == "where":
                c = self.arr(args[0])
                return self.nanify(np.where(c != 0, args[1], args[2]) * np.ones(self.n * self.t), c)
            x = args[0]
            if name in ("delay", "ts_delta"):
                lag = self.window(a.REF(x, d(1)), d(1) + 1, x)
                return lag if name == "delay" else x - lag
            one = {"ts_sum": a.SUM, "ts_mean": a.MA, "ts_std": a.STDDEV, "ts_var": a.VAR,
                   "ts_min": a.LLV, "ts_max": a.HHV, "decay_linear": a.LWMA,
                   "ts_product": a.PRODUCT, "ts_zscore": a.ZSCORE}.get(name)
            if one:
                return self.window(one(x, d(1)), d(1), x)
            # 0 = the oldest bar of the window, as in LIM; HHVBARS counts bars since the high.
            if name == "ts_argmax": return self.window((d(1) - 1) - a.HHVBARS(x, d(1)), d(1), x)
            if name == "ts_argmin": return self.window((d(1) - 1) - a.LLVBARS(x, d(1)), d(1), x)
            if name == "ts_rank":
                w = d(1)
                if not self.aligned:
                    return a.RANK(x, w) / w
                # py-alpha-lib ranks with ties at their lowest rank; LIM averages ties: the
                # average of the lowest and the highest rank, over the window.
                return self.window((a.RANK(x, w) + (w + 1) - a.RANK(-x, w)) / (2.0 * w), w, x)
            if name == "ts_cov": return self.window(a.COV(x, args[1], d(2)), d(2), x, args[1])
            if name == "ts_corr":
                y, w = args[1], d(2)
                r = a.CORR2(x, y, w)
                if not self.aligned:
                    return r
                for z in (x, y):
                    m = a.MA(z, w)
                    var = a.VAR(z, w) * (w - 1) / w
                    r = np.where(var <= 1e-14 * (m * m + 1e-300), np.nan, r)
                return self.window(np.clip(r, -1.0, 1.0), w, x, y)
            if name == "rank": return a.CC_RANK(args[0])
            if name == "zscore": return a.CC_ZSCORE(args[0])
            if name == "scale":
                # Not in py-alpha-lib: x / sum(|x|) per bar, in numpy.
                x = self.cs(args[0])
                return (x / np.nansum(np.abs(x), axis=0, keepdims=True)).ravel()
            if name == "group_rank":
                return a.GROUP_RANK(self.groups[args[1][1]], args[0])
            if name == "group_demean":
                # py-alpha-lib's NEUTRALIZE is not a group demean ([1, 2] in one group gives
                # [0.33, 0.67]), so the paper's IndNeutralize is done in numpy.
                x, g = self.cs(args[0]), self.groups[args[1][1]].reshape(self.n, self.t)[:, 0]
                out = np.empty_like(x)
                for k in np.unique(g):
                    rows = g == k
                    out[rows] = x[rows] - np.nanmean(x[rows], axis=0, keepdims=True)
                return out.ravel()
        raise NameError(f"no mapping for {name}")


def load_peer(alpha, z, aligned):
    T, N = z["close"].shape
    flat = lambda m: np.ascontiguousarray(m.T).ravel()
    close = z["close"]
    prev = np.vstack([np.full((1, N), np.nan), close[:-1]])
    # LIM's returns: close over the instrument's previous bar (its first bar has none).
    returns = close / prev - 1.0
    fields = {k: flat(z[k]) for k in ["open", "high", "low", "close", "volume", "cap"]}
    fields["vwap"] = (fields["high"] + fields["low"] + fields["close"]) / 3.0
    fields["returns"] = flat(returns)
    groups = {k: np.repeat(z[f"group_{k}"].astype(np.float64), T) for k in ["sector", "industry", "subindustry"]}
    return Peer(alpha, fields, groups, N, T, aligned=aligned)


def peer(out, alphas_path, values_dir, json_path):
    import alpha
    from backtest import backtest_numpy, fwd_returns_numpy

    z = np.load(os.path.join(out, "panel.npz"))
    T, N = z["close"].shape
    close = z["close"]
    fwd = fwd_returns_numpy(close)
    p = load_peer(alpha, z, aligned=False)
    aligned = load_peer(alpha, z, aligned=True)
    items = []
    for line in open(alphas_path):
        line = line.strip()
        if line and not line.startswith("#"):
            name, expr = (s.strip() for s in line.split("|", 1))
            items.append((name, expr))
    rows, cpu_total, wall_total, values_cpu = [], 0.0, 0.0, 0.0
    agree = []
    for name, expr in items:
        tree = parse(expr)
        c0, w0 = time.process_time(), time.perf_counter()
        v = np.asarray(p.eval(tree, {}), dtype=np.float64) * np.ones(N * T)
        values_cpu += time.process_time() - c0
        sig = v.reshape(N, T).T
        m = backtest_numpy(sig, fwd)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        cpu_total += cpu
        wall_total += wall
        rows.append(dict(name=name, cpu_s=cpu, **m))
        if values_dir:
            lim = np.fromfile(os.path.join(values_dir, f"{name}.f64"), dtype="<f8")
            va = np.asarray(aligned.eval(tree, {}), dtype=np.float64) * np.ones(N * T)
            agree.append(compare(name, lim, va))
            # The book of the aligned values, to set beside LIM's book of its own.
            rows[-1].update({f"aligned_{k}": v for k, v in backtest_numpy(va.reshape(N, T).T, fwd).items()})
    result = {"tool": "py-alpha-lib", "alphas": len(items), "T": T, "N": N,
              "wall_s": wall_total, "cpu_s": cpu_total, "cpu_s_per_alpha": cpu_total / len(items),
              "values_cpu_s_per_alpha": values_cpu / len(items),
              "book_cpu_s_per_alpha": (cpu_total - values_cpu) / len(items)}
    if agree:
        result["agreement"] = agree
    if json_path:
        json.dump(result, open(json_path, "w"), indent=1)
    with open(os.path.join(out, "peer_metrics.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    print(json.dumps({k: v for k, v in result.items() if k != "agreement"}))


def show(e):
    """An expression tree printed back in LIM's language, fully parenthesised."""
    tag = e[0]
    if tag == "num":
        return repr(e[1])
    if tag == "name":
        return e[1]
    if tag == "neg":
        return f"-({show(e[1])})"
    if tag == "not":
        return f"!({show(e[1])})"
    if tag == "bin":
        return f"({show(e[2])} {e[1]} {show(e[3])})"
    return f"{e[1]}({', '.join(show(a) for a in e[2])})"


def nodes(e, out):
    """The sub-expressions of e that compute something, children first."""
    if e[0] in ("num", "name"):
        return
    for child in (e[1:] if e[0] != "call" else e[2]):
        if isinstance(child, tuple):
            nodes(child, out)
    if show(e) not in out:
        out.append(show(e))


def write_nodes(alphas_path, names, out_path):
    """Every sub-expression of the named alphas, as an alphas file (n0001 | expr, ...)."""
    items = dict(tuple(s.strip() for s in l.split("|", 1)) for l in open(alphas_path)
                 if l.strip() and not l.startswith("#"))
    seen = []
    for name in names:
        nodes(parse(items[name]), seen)
    with open(out_path, "w") as f:
        for i, e in enumerate(seen):
            f.write(f"n{i:04d} | {e}\n")


def explain(out, alphas_path, nodes_path, values_dir, names):
    """For each alpha that disagrees, the innermost sub-expression that does while its inputs
    agree: where the two engines part."""
    import alpha
    z = np.load(os.path.join(out, "panel.npz"))
    T, N = z["close"].shape
    p = load_peer(alpha, z, aligned=True)
    node_names = {}
    for l in open(nodes_path):
        k, e = (s.strip() for s in l.split("|", 1))
        node_names[e] = k
    verdict = {}
    def ok(e):
        key = show(e)
        if e[0] in ("num", "name") or key not in node_names:
            return True, None
        if key not in verdict:
            lim = np.fromfile(os.path.join(values_dir, f"{node_names[key]}.f64"), dtype="<f8")
            va = np.asarray(p.eval(e, {}), dtype=np.float64) * np.ones(N * T)
            verdict[key] = compare(key, lim, va)
        return verdict[key]["agree"] >= 0.999, verdict[key]
    def first(e):
        children = [c for c in (e[1:] if e[0] != "call" else e[2]) if isinstance(c, tuple)]
        for c in children:
            found = first(c)
            if found:
                return found
        good, v = ok(e)
        return None if good else (show(e), v)
    items = [tuple(s.strip() for s in l.split("|", 1)) for l in open(alphas_path)
             if l.strip() and not l.startswith("#")]
    for name, expr in items:
        if name not in names:
            continue
        found = first(parse(expr))
        if found:
            text, v = found
            text = text if len(text) <= 110 else text[:107] + "..."
            print(f"  {name}: first differs at {text}: {100 * v['agree']:.1f}% of its cells agree")


def compare(name, lim, peer_values, rtol=1e-6):
    """Cells where LIM has a value: the share where py-alpha-lib has one and it agrees."""
    l_ok, p_ok = np.isfinite(lim), np.isfinite(peer_values)
    both = l_ok & p_ok
    a, b = lim[both], peer_values[both]
    close = np.abs(a - b) <= rtol * np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    return {
        "name": name,
        "lim_defined": float(l_ok.mean()),
        "peer_defined": float(p_ok.mean()),
        "lim_defined_peer_missing": int((l_ok & ~p_ok).sum()),
        "agree": float(close.mean()) if close.size else float("nan"),
        "worst": float(np.max(np.abs(a - b) / np.maximum(1.0, np.maximum(np.abs(a), np.abs(b))))) if close.size else float("nan"),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    pa = sub.add_parser("panel")
    pa.add_argument("out")
    pa.add_argument("--n", type=int, default=500)
    pa.add_argument("--t", type=int, default=2000)
    pa.add_argument("--seed", type=int, default=20240601)
    pp = sub.add_parser("peer")
    pp.add_argument("out")
    pp.add_argument("alphas")
    pp.add_argument("--values")
    pp.add_argument("--json")
    pn = sub.add_parser("nodes")
    pn.add_argument("alphas")
    pn.add_argument("out")
    pn.add_argument("names", nargs="+")
    px = sub.add_parser("explain")
    px.add_argument("out")
    px.add_argument("alphas")
    px.add_argument("nodes")
    px.add_argument("values")
    px.add_argument("names", nargs="+")
    a = ap.parse_args()
    if a.cmd == "panel":
        write_panel(a.out, a.n, a.t, a.seed)
    elif a.cmd == "peer":
        peer(a.out, a.alphas, a.values, a.json)
    elif a.cmd == "nodes":
        write_nodes(a.alphas, a.names, a.out)
    else:
        explain(a.out, a.alphas, a.nodes, a.values, a.names)
