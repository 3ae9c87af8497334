//! The offline strategist: a deterministic, seeded stand-in for an LLM. It turns a goal into a
//! plan by simple keyword parsing with defaults, and proposes strategies by evolutionary search
//! over the strategy language (mutation and crossover of expression trees, seeded with classic
//! alpha families), guided by validation metrics. It is not an LLM and says so; it is also the
//! baseline an LLM strategist must beat.

use std::collections::BTreeSet;

use lim_backtest::expr::{BinOp, Expr, parse};
use lim_backtest::spec::{Portfolio, StrategySpec};
use serde::{Deserialize, Serialize};

use crate::client::SplitMix;

/// What every output of the offline strategist says about itself.
pub const DISCLAIMER: &str = "offline strategist (deterministic evolutionary search, not an LLM)";

/// An experiment plan: what to trade, how, and under which constraints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The goal as the researcher wrote it.
    pub goal: String,
    /// Datasets to trade.
    pub datasets: Vec<String>,
    /// The strategy family searched first.
    pub family: Family,
    /// Portfolio construction.
    pub portfolio: Portfolio,
    /// Largest acceptable drawdown on validation, if the goal set one (a fraction).
    pub max_drawdown: Option<f64>,
    /// Cost per unit turnover, in basis points.
    pub cost_bps: f64,
    /// Who made the plan.
    pub author: String,
}

/// Families of classic signals used to seed the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Trend following and time-series momentum.
    Trend,
    /// Short-term reversal.
    Reversal,
    /// A mix of classic families.
    Mixed,
}

/// Turns a goal into a plan with keyword rules and defaults.
pub fn plan(goal: &str, available: &[String]) -> Plan {
    let g = goal.to_lowercase();
    let has = |w: &[&str]| w.iter().any(|k| g.contains(k));
    let futures = has(&["futures", "commodit"]);
    let china = has(&["china", "chinese", "shfe", "dce", "czce"]);
    let wanted = if futures && (china || !has(&["us ", "u.s.", "american"])) {
        "cn_futures_daily"
    } else if futures {
        "us_futures_daily"
    } else {
        "us_equities_daily_adjusted"
    };
    // Markets named by a word that a dataset's name carries: crypto, indices, currencies.
    let named = [
        (&["crypto", "bitcoin"][..], "crypto"),
        (&["indices", "index", "indexes"][..], "indices"),
        (&["fx", "forex", "currenc"][..], "fx"),
    ]
    .iter()
    .filter(|(words, _)| has(words))
    .find_map(|(_, part)| {
        let mut hits: Vec<&String> = available.iter().filter(|d| d.contains(part)).collect();
        // Daily bars first, then the name.
        hits.sort_by_key(|d| (!d.contains("daily"), (*d).clone()));
        hits.first().map(|d| (*d).clone())
    });
    let dataset = if let Some(d) = named {
        d
    } else if available.iter().any(|d| d == wanted) {
        wanted.to_string()
    } else {
        available
            .first()
            .cloned()
            .unwrap_or_else(|| wanted.to_string())
    };
    let family = if has(&["trend", "momentum"]) {
        Family::Trend
    } else if has(&["reversal", "mean reversion", "mean-reversion"]) {
        Family::Reversal
    } else {
        Family::Mixed
    };
    let portfolio = if dataset.contains("futures") {
        sign_book()
    } else {
        Portfolio::TopK { k: 10 }
    };
    Plan {
        goal: goal.to_string(),
        datasets: vec![dataset],
        family,
        portfolio,
        max_drawdown: goal_drawdown(goal),
        cost_bps: 10.0,
        author: DISCLAIMER.to_string(),
    }
}

/// What the keyword rules of [`plan`] took as a default because `goal` does not say it: the
/// market (no futures, crypto, index or currency word: US equities, or the first dataset) and
/// the strategy family (no trend, momentum or reversal word: a mix). Shown with the plan, so
/// that a goal the rules did not understand is not silently studied on another market.
pub fn assumed(goal: &str) -> Vec<&'static str> {
    let g = goal.to_lowercase();
    let has = |w: &[&str]| w.iter().any(|k| g.contains(k));
    let mut out = Vec::new();
    let markets: &[&str] = &[
        "futures", "commodit", "crypto", "bitcoin", "indices", "index", "indexes", "fx", "forex",
        "currenc", "equit", "stock", "share",
    ];
    if !has(markets) {
        out.push("the goal names no market the keyword rules know (futures, stocks, crypto, indices, currencies), so it trades the default market (name one in the goal to choose)");
    }
    if !has(&[
        "trend",
        "momentum",
        "reversal",
        "mean reversion",
        "mean-reversion",
    ]) {
        out.push("the goal names no strategy family (trend, momentum, reversal), so the search starts from a mix of families");
    }
    out
}

/// The per-instrument book of the keyword plans: long a positive signal and short a negative
/// one, each position sized to 10 % annualised volatility from 60 bars, over the count (the
/// futures trend case, and any universe too small to rank).
pub fn sign_book() -> Portfolio {
    Portfolio::SignThreshold {
        threshold: 0.0,
        target_vol: 0.10,
        vol_window: 60,
        vol_forecast: None,
    }
}

/// The drawdown limit a goal states, as a fraction ("max drawdown 15%" → 0.15).
pub fn goal_drawdown(goal: &str) -> Option<f64> {
    percent_after(&goal.to_lowercase(), "drawdown")
}

/// The first percentage after a keyword, e.g. "max drawdown 15%" → 0.15.
fn percent_after(text: &str, keyword: &str) -> Option<f64> {
    let rest = &text[text.find(keyword)? + keyword.len()..];
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    let num: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v: f64 = num.parse().ok()?;
    rest[start + num.len()..]
        .trim_start()
        .starts_with('%')
        .then_some(v / 100.0)
}

/// Seeds of a family: classic, scale-free signals (safe on back-adjusted futures too).
pub fn seeds(family: Family, cross_sectional: bool) -> Vec<String> {
    let trend = [
        "ts_sum(returns, 120)",
        "ts_sum(returns, 250) - ts_sum(returns, 20)",
        "ts_mean(returns, 60) / ts_std(returns, 60)",
        "ts_sum(returns, 60)",
        "decay_linear(returns, 40)",
    ];
    let reversal = [
        "-ts_sum(returns, 5)",
        "-ts_zscore(close, 20)",
        "-(close / ts_mean(close, 10) - 1)",
        "-ts_delta(close, 3) / ts_std(close, 20)",
    ];
    let other = [
        "-ts_std(returns, 60)",
        "ts_corr(close, volume, 20)",
        "-ts_corr(rank(volume), rank(close), 10)",
        "decay_linear(returns, 10)",
    ];
    let mut out: Vec<&str> = match family {
        Family::Trend => trend.iter().chain(other.iter().take(1)).copied().collect(),
        Family::Reversal => reversal
            .iter()
            .chain(other.iter().take(1))
            .copied()
            .collect(),
        Family::Mixed => trend
            .iter()
            .take(3)
            .chain(reversal.iter().take(2))
            .chain(other.iter())
            .copied()
            .collect(),
    };
    if !cross_sectional {
        // Per-instrument books need no cross-sectional rank; ts-only seeds keep them causal
        // per instrument and scale-free.
        out.retain(|s| !s.contains("rank("));
        return out.into_iter().map(str::to_string).collect();
    }
    out.into_iter().map(|s| format!("rank({s})")).collect()
}

const FIELDS: &[&str] = &["open", "high", "low", "close", "volume", "vwap", "returns"];
const WINDOWS: &[f64] = &[3.0, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 250.0];

/// A scored strategy of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The signal.
    pub signal: String,
    /// The generation that proposed it.
    pub generation: usize,
    /// Its parents' signals (lineage).
    pub parents: Vec<String>,
    /// Fitness on validation (higher is better); `None` until scored.
    pub fitness: Option<f64>,
}

/// A deterministic evolutionary search over expressions.
#[derive(Debug)]
pub struct Evolution {
    rng: SplitMix,
    seen: BTreeSet<String>,
    /// Fields mutation may introduce.
    fields: Vec<String>,
    /// Fields signals may use.
    known: Vec<String>,
    /// Every candidate proposed, in order: all of them count as trials.
    pub history: Vec<Candidate>,
    /// The minimum count, as a share of each window, that proposals carry (see
    /// [`Evolution::tolerate_gaps`]).
    min_count: Option<f64>,
}

impl Evolution {
    /// A search seeded by `seed`. A cross-sectional book may mix any fields (ranks make them
    /// comparable); a per-instrument book only uses returns, so its signals stay scale-free
    /// (price levels of back-adjusted futures would depend on later rolls).
    pub fn new(seed: u64, cross_sectional: bool) -> Evolution {
        let fields = if cross_sectional {
            FIELDS.to_vec()
        } else {
            vec!["returns"]
        };
        Evolution {
            rng: SplitMix::new(seed),
            seen: BTreeSet::new(),
            fields: fields.into_iter().map(String::from).collect(),
            known: FIELDS.iter().map(|f| f.to_string()).collect(),
            history: Vec::new(),
            min_count: None,
        }
    }

    /// A search that continues from `history` (scored candidates of earlier generations) with
    /// a fresh generator seeded by `seed`: how a durable run rebuilds it from its artifacts.
    pub fn resume(seed: u64, cross_sectional: bool, history: Vec<Candidate>) -> Evolution {
        let mut e = Evolution::new(seed, cross_sectional);
        e.seen = history.iter().map(|c| c.signal.clone()).collect();
        e.history = history;
        e
    }

    /// Makes every proposal's window operators need only `share` of their window to be numbers
    /// (`None`: all of it, the default): for universes whose union calendar leaves holes, where
    /// strict windows would be blank wherever one market was closed. The search itself works
    /// on the strict forms, so the same seed explores the same expressions either way.
    pub fn tolerate_gaps(&mut self, share: Option<f64>) {
        self.min_count = share;
    }

    /// Lets signals use one more field (e.g. a model's predictions), and mutation introduce it.
    pub fn allow(&mut self, field: &str) {
        for v in [&mut self.known, &mut self.fields] {
            if !v.iter().any(|f| f == field) {
                v.push(field.to_string());
            }
        }
    }

    fn known(&self) -> Vec<&str> {
        self.known.iter().map(String::as_str).collect()
    }

    fn pick(&mut self, n: usize) -> usize {
        ((self.rng.next_f64() * n as f64) as usize).min(n.saturating_sub(1))
    }

    /// Registers new signals (the seeds or a generation's offspring), skipping duplicates.
    /// Returns the indices of the candidates added.
    pub fn add(
        &mut self,
        signals: impl IntoIterator<Item = (String, Vec<String>)>,
        generation: usize,
    ) -> Vec<usize> {
        let mut added = Vec::new();
        for (signal, parents) in signals {
            let Ok(e) = parse(&signal, &self.known()) else {
                continue;
            };
            // `rank(rank(x))` is `rank(x)` tried again.
            let canonical = e.without_repeated_ranks().to_string();
            if self.seen.insert(canonical.clone()) {
                added.push(self.history.len());
                self.history.push(Candidate {
                    signal: canonical,
                    generation,
                    parents,
                    fitness: None,
                });
            }
        }
        added
    }

    /// Proposes up to `n` new signals from the scored history: tournament selection among the
    /// best, then mutation or crossover.
    pub fn propose(
        &mut self,
        n: usize,
        generation: usize,
        wrap_rank: bool,
    ) -> Vec<(String, Vec<String>)> {
        let mut scored: Vec<&Candidate> = self
            .history
            .iter()
            .filter(|c| c.fitness.is_some_and(f64::is_finite))
            .collect();
        scored.sort_by(|a, b| {
            b.fitness
                .unwrap_or(f64::MIN)
                .total_cmp(&a.fitness.unwrap_or(f64::MIN))
                .then(a.signal.cmp(&b.signal))
        });
        let elite: Vec<String> = scored.iter().take(8).map(|c| c.signal.clone()).collect();
        if elite.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut tries = 0;
        while out.len() < n && tries < n * 20 {
            tries += 1;
            let a = elite[self.pick(elite.len())].clone();
            let (child, parents) = if self.rng.next_f64() < 0.3 && elite.len() > 1 {
                let b = elite[self.pick(elite.len())].clone();
                (
                    self.crossover(&self.strict(&a), &self.strict(&b)),
                    vec![a, b],
                )
            } else {
                (self.mutate(&self.strict(&a)), vec![a])
            };
            let Some(mut child) = child else { continue };
            if wrap_rank && !child.starts_with("rank(") && !child.starts_with("-rank(") {
                child = format!("rank({child})");
            }
            if let Ok(e) = parse(&child, &self.known())
                && e.size() <= 40
                && let e = e.with_min_count(self.min_count).without_repeated_ranks()
                && !self.seen.contains(&e.to_string())
                && !out
                    .iter()
                    .any(|(s, _): &(String, Vec<String>)| *s == e.to_string())
            {
                out.push((e.to_string(), parents));
            }
        }
        let _ = generation;
        out
    }

    /// `signal` without minimum counts.
    fn strict(&self, signal: &str) -> String {
        parse(signal, &self.known())
            .map(|e| e.with_min_count(None).to_string())
            .unwrap_or_else(|_| signal.to_string())
    }

    fn mutate(&mut self, signal: &str) -> Option<String> {
        let mut e = parse(signal, &self.known()).ok()?;
        let count = e.size();
        let target = self.pick(count);
        let choice = self.pick(5);
        let mut k = 0;
        let mut rng = self.rng.clone();
        let fields: Vec<&str> = self.fields.iter().map(String::as_str).collect();
        mutate_at(&mut e, target, &mut k, choice, &mut rng, &fields);
        self.rng = rng;
        Some(e.to_string())
    }

    fn crossover(&mut self, a: &str, b: &str) -> Option<String> {
        let mut ea = parse(a, &self.known()).ok()?;
        let eb = parse(b, &self.known()).ok()?;
        let donors: Vec<Expr> = subtrees(&eb)
            .into_iter()
            .filter(|d| d.fields().iter().all(|f| self.fields.contains(f)))
            .collect();
        let donor = donors.get(self.pick(donors.len()))?.clone();
        let target = self.pick(ea.size());
        let mut k = 0;
        replace_at(&mut ea, target, &mut k, &donor);
        Some(ea.to_string())
    }
}

/// Every panel-valued subtree (not numbers or window literals).
fn subtrees(e: &Expr) -> Vec<Expr> {
    let mut out = Vec::new();
    fn walk(e: &Expr, out: &mut Vec<Expr>) {
        match e {
            Expr::Num(_) | Expr::Group(_) => {}
            Expr::Field(_) => out.push(e.clone()),
            Expr::Neg(x) | Expr::Not(x) => {
                out.push(e.clone());
                walk(x, out);
            }
            Expr::Bin(_, a, b) => {
                out.push(e.clone());
                walk(a, out);
                walk(b, out);
            }
            Expr::Call(_, args) => {
                out.push(e.clone());
                args.iter().for_each(|a| walk(a, out));
            }
        }
    }
    walk(e, &mut out);
    out
}

fn replace_at(e: &mut Expr, target: usize, k: &mut usize, donor: &Expr) -> bool {
    if *k == target && !matches!(e, Expr::Num(_) | Expr::Group(_)) {
        *e = donor.clone();
        return true;
    }
    *k += 1;
    match e {
        Expr::Neg(x) | Expr::Not(x) => replace_at(x, target, k, donor),
        Expr::Bin(_, a, b) => replace_at(a, target, k, donor) || replace_at(b, target, k, donor),
        Expr::Call(name, args) => {
            let windows = lim_backtest::expr::func(name)
                .map(|f| f.args)
                .unwrap_or(&[]);
            for (a, kind) in args.iter_mut().zip(windows) {
                if *kind == lim_backtest::expr::Arg::Expr && replace_at(a, target, k, donor) {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

fn mutate_at(
    e: &mut Expr,
    target: usize,
    k: &mut usize,
    choice: usize,
    rng: &mut SplitMix,
    fields: &[&str],
) -> bool {
    let here = *k == target;
    *k += 1;
    if here {
        let pick = |rng: &mut SplitMix, n: usize| ((rng.next_f64() * n as f64) as usize).min(n - 1);
        match (choice, &mut *e) {
            // A different window for a time-series call.
            (0 | 1, Expr::Call(_, args)) => {
                if let Some(Expr::Num(d)) =
                    args.iter_mut().rev().find(|a| matches!(a, Expr::Num(_)))
                {
                    *d = WINDOWS[pick(rng, WINDOWS.len())];
                    return true;
                }
            }
            // Another field.
            (_, Expr::Field(f)) => {
                *f = fields[pick(rng, fields.len())].to_string();
                return true;
            }
            // Smooth, normalise or flip a subtree.
            (2, _) => {
                let d = WINDOWS[pick(rng, 5)];
                *e = Expr::Call("ts_mean".into(), vec![e.clone(), Expr::Num(d)]);
                return true;
            }
            (3, _) => {
                *e = Expr::Call(
                    "ts_zscore".into(),
                    vec![e.clone(), Expr::Num(WINDOWS[2 + pick(rng, 5)])],
                );
                return true;
            }
            (4, Expr::Bin(op, _, _)) => {
                *op = match *op {
                    BinOp::Add => BinOp::Sub,
                    BinOp::Sub => BinOp::Add,
                    BinOp::Mul => BinOp::Div,
                    other => other,
                };
                return true;
            }
            _ => {
                // Flip the sign; a double negation cancels instead of nesting.
                let flipped = match &*e {
                    Expr::Neg(x) => (**x).clone(),
                    other => Expr::Neg(Box::new(other.clone())),
                };
                *e = flipped;
                return true;
            }
        }
    }
    match e {
        Expr::Neg(x) | Expr::Not(x) => mutate_at(x, target, k, choice, rng, fields),
        Expr::Bin(_, a, b) => {
            mutate_at(a, target, k, choice, rng, fields)
                || mutate_at(b, target, k, choice, rng, fields)
        }
        Expr::Call(_, args) => args
            .iter_mut()
            .any(|a| mutate_at(a, target, k, choice, rng, fields)),
        _ => false,
    }
}

/// The spec the plan gives a signal.
pub fn spec_for(plan: &Plan, signal: &str) -> StrategySpec {
    let mut s = StrategySpec::new(signal);
    s.portfolio = plan.portfolio.clone();
    s.costs.bps = plan.cost_bps;
    if matches!(plan.portfolio, Portfolio::SignThreshold { .. }) {
        s.rebalance_every = 5;
        s.limits.max_gross = Some(3.0);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_goal_without_a_market_or_a_family_says_what_was_assumed() {
        assert!(assumed("find a robust trend strategy for Chinese commodity futures").is_empty());
        assert!(assumed("momentum in US stocks").is_empty());
        let said = assumed("make me rich");
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].contains("names no market") && said[1].contains("no strategy family"));
        assert_eq!(assumed("crypto please").len(), 1);
    }

    #[test]
    fn goals_become_plans() {
        let avail: Vec<String> = [
            "cn_futures_daily",
            "us_equities_daily_adjusted",
            "us_futures_daily",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = plan(
            "find a robust trend strategy for Chinese commodity futures, max drawdown 15%",
            &avail,
        );
        assert_eq!(p.datasets, ["cn_futures_daily"]);
        assert_eq!(p.family, Family::Trend);
        assert_eq!(p.max_drawdown, Some(0.15));
        assert!(matches!(p.portfolio, Portfolio::SignThreshold { .. }));
        let p = plan("short-term reversal in US stocks", &avail);
        assert_eq!(
            (p.datasets[0].as_str(), p.family, p.max_drawdown),
            ("us_equities_daily_adjusted", Family::Reversal, None)
        );
        assert!(p.author.contains("not an LLM"));
    }

    #[test]
    fn the_search_is_deterministic_and_proposes_only_valid_new_signals() {
        let run = |seed| {
            let mut ev = Evolution::new(seed, true);
            let seeds: Vec<(String, Vec<String>)> = seeds(Family::Mixed, true)
                .into_iter()
                .map(|s| (s, vec![]))
                .collect();
            ev.add(seeds, 0);
            for (i, c) in ev.history.iter_mut().enumerate() {
                c.fitness = Some(i as f64);
            }
            ev.propose(12, 1, true)
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        assert!(a.len() >= 10);
        for (s, parents) in &a {
            assert!(parse(s, FIELDS).is_ok() && !parents.is_empty(), "{s}");
        }
    }

    #[test]
    fn a_rank_of_ranks_is_the_rank_tried_already() {
        let mut ev = Evolution::new(1, true);
        let one = |s: &str| vec![(s.to_string(), Vec::new())];
        assert_eq!(ev.add(one("rank(ts_sum(returns, 5))"), 0), [0]);
        assert!(ev.add(one("rank(rank(ts_sum(returns, 5)))"), 1).is_empty());
        // A new idea under two ranks is kept, once, as its single rank.
        assert_eq!(ev.add(one("rank(rank(ts_std(returns, 20)))"), 1), [1]);
        assert_eq!(ev.history[1].signal, "rank(ts_std(returns, 20))");
        for c in ev.history.iter_mut() {
            c.fitness = Some(1.0);
        }
        for (s, _) in ev.propose(30, 2, true) {
            assert!(!s.contains("rank(rank("), "{s}");
        }
    }
}
