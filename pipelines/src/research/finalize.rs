//! The sealed test of the finalists, multiple testing over every trial, and the report node.

use super::*;

/// The final evaluator: the only node holding the universe, and so the sealed test period.
pub(super) struct Finalize {
    pub(super) universe: Arc<Universe>,
    pub(super) config: ResearchConfig,
    /// Where the re-run of every trial goes when backtests run elsewhere (a Slurm array job).
    pub(super) remote: Option<Arc<dyn lim_tools::RemoteBacktests>>,
}

impl Node for Finalize {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let plan: ExperimentPlan = cx.input("plan")?;
            let mut trials: Vec<Trial> = cx.input("trials")?;
            trials.iter_mut().for_each(|t| t.score(&plan));
            let session = self.universe.current().ok_or_else(|| {
                NodeError::Missing("no universe: the data node did not run".into())
            })?;
            let finalists = self.config.finalists;
            let remote = self.remote.clone().zip(self.universe.recipe());
            let work = tokio::task::spawn_blocking(move || {
                let ranked = leaderboard(&trials);
                let spec = |s: &str| (s.to_string(), offline::spec_for(&plan.strategy, s));
                let pool: Vec<(String, StrategySpec)> = ranked
                    .iter()
                    .filter(|&&i| trials[i].fitness.is_some_and(f64::is_finite))
                    .map(|&i| spec(&trials[i].signal))
                    .collect();
                let chosen = diverse(&session, pool, finalists);
                // Baselines tolerate a union calendar's holes as the search's windows did.
                let tolerance = super::gap_tolerance(&session);
                let bases: Vec<(String, StrategySpec)> = baselines(&plan, session.bars_per_day())
                    .into_iter()
                    .map(|(name, mut spec)| {
                        spec.signal = super::tolerant(Some(&session), &spec.signal, tolerance);
                        (name, spec)
                    })
                    .collect();
                let (finalists, baselines, combined, curves) =
                    test_finalists(&session, &chosen, &bases);
                // Multiple testing over every trial of the run.
                let all: Vec<(String, StrategySpec)> = trials
                    .iter()
                    .filter(|t| t.error.is_none())
                    .map(|t| spec(&t.signal))
                    .collect();
                // The largest batch of the run: on the cluster when the search's backtests ran
                // there (the same books bit for bit), here when it cannot be done there (the
                // deadline has passed, Ctrl-C).
                let parts = [Part::Train, Part::Validation];
                let books = remote
                    .and_then(|(r, recipe)| r.run(&recipe, &all, &parts).ok())
                    .unwrap_or_else(|| session.run(&all, &parts, false));
                let mt: Option<MultipleTesting> = session.multiple_testing(&books);
                (ranked, finalists, baselines, combined, mt, curves)
            });
            let (ranked, finalists, baselines, combined, mt, curves) =
                work.await.map_err(|e| NodeError::Task(e.to_string()))?;
            Ok(out(vec![
                ("ranking", to_value(&ranked)?),
                ("finalists", to_value(&finalists)?),
                ("baselines", to_value(&baselines)?),
                ("combined", to_value(&combined)?),
                (
                    "test_results",
                    to_value(
                        &finalists
                            .iter()
                            .map(|f| (f.signal.clone(), f.test))
                            .collect::<Vec<_>>(),
                    )?,
                ),
                ("deflated", to_value(&mt)?),
                ("curves", to_value(&curves)?),
            ]))
        })
    }
}

/// How many leaders per finalist [`diverse`] looks at.
const DIVERSITY_POOL: usize = 4;

/// Most correlation of a finalist's training and validation returns with an earlier
/// finalist's: above it, the two are one bet, and the later one gives way to the next leader.
pub const MAX_FINALIST_CORRELATION: f64 = 0.7;

/// Correlation of training and validation returns above which two strategies are one book
/// (`rank(rank(x))` and `rank(x)`, a sum and a mean over the same window under a sign book).
pub const SAME_BOOK_CORRELATION: f64 = 0.999;

/// Up to `n` finalists from `pool`, the scored leaderboard (best first). First, down the top
/// `n` × [`DIVERSITY_POOL`], each in turn unless its returns over the training and validation
/// parts (never the test) correlate above [`MAX_FINALIST_CORRELATION`] with one already
/// chosen; when too few are that different, the best of the whole leaderboard that is not the
/// same book as one chosen ([`SAME_BOOK_CORRELATION`]); copies only when nothing else is left.
pub fn diverse(
    session: &lim_backtest::session::Session,
    pool: Vec<(String, StrategySpec)>,
    n: usize,
) -> Vec<(String, StrategySpec)> {
    if pool.len() <= 1 || n == 0 {
        return pool.into_iter().take(n).collect();
    }
    let seen =
        session.splits().range(Part::Train).start..session.splits().range(Part::Validation).end;
    let parts = [Part::Train, Part::Validation];
    let head = (n * DIVERSITY_POOL).min(pool.len());
    // Returns over training and validation of the top first; of the rest only if needed.
    let nets_of = |specs: &[(String, StrategySpec)]| -> Vec<Option<Vec<f64>>> {
        session
            .run(specs, &parts, false)
            .into_iter()
            .map(|r| r.book.map(|b| b.net[seen.clone()].to_vec()))
            .collect()
    };
    let mut nets = nets_of(&pool[..head]);
    let apart = |nets: &[Option<Vec<f64>>], i: usize, chosen: &[usize], limit: f64| {
        chosen.iter().all(|&j| match (&nets[i], &nets[j]) {
            (Some(a), Some(b)) => {
                let r = lim_backtest::metrics::pearson(&lim_backtest::metrics::finite_pairs(a, b));
                r.is_nan() || r <= limit
            }
            _ => true,
        })
    };
    let mut chosen: Vec<usize> = Vec::new();
    for (whole, limit) in [
        (false, MAX_FINALIST_CORRELATION),
        (true, SAME_BOOK_CORRELATION),
        (true, f64::INFINITY),
    ] {
        if whole && chosen.len() < n && nets.len() < pool.len() {
            nets.extend(nets_of(&pool[head..]));
        }
        for i in 0..if whole { pool.len() } else { head } {
            if chosen.len() == n {
                break;
            }
            if !chosen.contains(&i) && apart(&nets, i, &chosen, limit) {
                chosen.push(i);
            }
        }
    }
    chosen.sort_unstable();
    chosen.into_iter().map(|i| pool[i].clone()).collect()
}

/// The sealed test: the finalists' metrics on validation and, once, on the test part, beside
/// the `baselines` (the first is the one each finalist is compared with) on the same bars.
pub fn test_finalists(
    session: &lim_backtest::session::Session,
    finalists: &[(String, StrategySpec)],
    baselines: &[(String, StrategySpec)],
) -> (Vec<Finalist>, Vec<Baseline>, Option<Combined>, Curves) {
    let all: Vec<(String, StrategySpec)> = finalists.iter().chain(baselines).cloned().collect();
    let results = session.run(&all, &[Part::Validation, Part::Test], false);
    let (f, b) = results.split_at(finalists.len().min(results.len()));
    let splits = session.splits();
    let whole = splits.range(Part::Train).start..splits.range(Part::Test).end;
    let mut curves = Curves {
        times: session.times()[whole.clone()].to_vec(),
        parts: [Part::Train, Part::Validation, Part::Test]
            .iter()
            .map(|&p| {
                let r = splits.range(p);
                (p, r.start - whole.start, r.end - whole.start)
            })
            .collect(),
        series: Vec::new(),
        ic_decay: finalists
            .iter()
            .filter_map(|(name, spec)| {
                let pairs = session
                    .ic_decay(&spec.signal, Part::Test, &IC_DECAY_HORIZONS)
                    .ok()?;
                Some(IcDecay::new(name, &pairs))
            })
            .collect(),
    };
    let curve = |name: &str, kind: CurveKind, book: &lim_backtest::topk::Book| Curve {
        name: name.to_string(),
        kind,
        net: book.net[whole.clone()]
            .iter()
            .map(|v| v.is_finite().then_some(*v))
            .collect(),
        rank_ic: match kind {
            CurveKind::Finalist => book.ic[whole.clone()]
                .iter()
                .map(|v| v.is_finite().then_some(*v))
                .collect(),
            _ => Vec::new(),
        },
    };
    for r in f {
        if let Some(book) = &r.book {
            curves
                .series
                .push(curve(&r.name, CurveKind::Finalist, book));
        }
    }
    for r in b {
        if let Some(book) = &r.book {
            curves
                .series
                .push(curve(&r.name, CurveKind::Baseline, book));
        }
    }
    let test = session.splits().range(Part::Test);
    let net = |r: &lim_backtest::session::StrategyResult| -> Vec<f64> {
        r.book
            .as_ref()
            .map(|b| b.net[test.clone()].to_vec())
            .unwrap_or_default()
    };
    let reference = b.first().map(|r| (net(r), r.metrics.clone()));
    // Returns over training and validation (what the search saw), to compare with baselines.
    let seen = splits.range(Part::Train).start..splits.range(Part::Validation).end;
    let seen_net = |r: &lim_backtest::session::StrategyResult| -> Option<Vec<f64>> {
        r.book.as_ref().map(|b| b.net[seen.clone()].to_vec())
    };
    let base_seen: Vec<(&str, &str, Vec<f64>)> = b
        .iter()
        .filter_map(|base| {
            Some((
                base.name.as_str(),
                base.spec.signal.as_str(),
                seen_net(base)?,
            ))
        })
        .collect();
    let base_seen: Vec<(&str, &str, &[f64])> = base_seen
        .iter()
        .map(|(n, s, r)| (*n, *s, r.as_slice()))
        .collect();
    let closest = |r: &lim_backtest::session::StrategyResult| -> Option<(String, f64)> {
        let top_k = matches!(r.spec.portfolio, lim_backtest::spec::Portfolio::TopK { .. });
        lim_backtest::baseline::closest(&seen_net(r)?, top_k, &base_seen)
    };
    // The finalists held together with equal risk: weights inverse to their validation
    // volatility (known before the test), measured once on validation and test.
    let members: Vec<(
        &lim_backtest::session::StrategyResult,
        &lim_backtest::topk::Book,
    )> = f
        .iter()
        .filter_map(|r| Some((r, r.book.as_ref()?)))
        .filter(|(r, _)| r.metrics.first().is_some_and(|(_, v)| v.ann_vol > 0.0))
        .collect();
    let combined = (members.len() >= 2).then(|| {
        let weights: Vec<f64> = members
            .iter()
            .map(|(r, _)| 1.0 / r.metrics[0].1.ann_vol)
            .collect();
        let total: f64 = weights.iter().sum();
        let books: Vec<&lim_backtest::topk::Book> = members.iter().map(|(_, b)| *b).collect();
        let book = lim_backtest::portfolio::combine(&books, &weights);
        curves
            .series
            .push(curve(COMBINED, CurveKind::Combined, &book));
        let of = |p: Part| Metrics::of(&book, session.splits().range(p), session.periods());
        Combined {
            members: members.iter().map(|(r, _)| r.name.clone()).collect(),
            weights: weights.iter().map(|w| w / total).collect(),
            validation: of(Part::Validation),
            test: of(Part::Test),
        }
    });
    let finalists = f
        .iter()
        .filter_map(|r| match r.metrics.as_slice() {
            [(_, v), (_, t)] => Some(Finalist {
                signal: r.name.clone(),
                validation: *v,
                test: *t,
                vs_always_long: reference.as_ref().and_then(|(base, m)| {
                    let base_test = m.get(1)?.1;
                    Some(VersusBaseline {
                        excess_return: t.ann_return - base_test.ann_return,
                        co_move: lim_backtest::metrics::co_move(&net(r), base),
                        information_ratio: lim_backtest::metrics::information_ratio(
                            &net(r),
                            base,
                            session.periods(),
                        ),
                    })
                }),
                closest_baseline: closest(r),
            }),
            _ => None,
        })
        .collect();
    let baselines = b
        .iter()
        .zip(baselines)
        .filter_map(|(r, (_, spec))| match r.metrics.as_slice() {
            [(_, v), (_, t)] => Some(Baseline {
                name: r.name.clone(),
                signal: spec.signal.clone(),
                validation: *v,
                test: *t,
            }),
            _ => None,
        })
        .collect();
    (finalists, baselines, combined, curves)
}

/// The name of the finalists' combination among the curves.
pub const COMBINED: &str = "the finalists combined";

/// What a curve is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurveKind {
    /// A finalist.
    Finalist,
    /// The finalists' equal-risk combination.
    Combined,
    /// A baseline.
    Baseline,
}

/// One book's net return per bar over training, validation and test (`None` where it did not
/// trade), and, for finalists, its rank IC per bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// The strategy or baseline.
    pub name: String,
    /// What it is.
    pub kind: CurveKind,
    /// Net return per bar (kept to a millionth: a chart's precision, a fifth of the size).
    #[serde(with = "millionths")]
    pub net: Vec<Option<f64>>,
    /// Rank IC per bar (finalists only), to a millionth.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "millionths")]
    pub rank_ic: Vec<Option<f64>>,
}

/// Values written as whole millionths (`0.0123456789` as `12346`), read back as floats.
mod millionths {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[Option<f64>], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|x| x.map(|x| (x * 1e6).round() as i64))
            .collect::<Vec<Option<i64>>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Option<f64>>, D::Error> {
        Ok(Vec::<Option<i64>>::deserialize(d)?
            .into_iter()
            .map(|x| x.map(|x| x as f64 / 1e6))
            .collect())
    }
}

/// The finalists', their combination's and the baselines' returns bar by bar, for the
/// tearsheet: written when the sealed test is read, never seen by the search.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Curves {
    /// Bar times, from the first training bar to the last test bar.
    pub times: Vec<lim_market::Timestamp>,
    /// Each part's bars, as index ranges into `times`.
    pub parts: Vec<(Part, usize, usize)>,
    /// The curves.
    pub series: Vec<Curve>,
    /// Each strategy's mean rank IC against the return over the next h bars, by horizon h
    /// (finalists: on the sealed test; a backtest: over the parts shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ic_decay: Vec<IcDecay>,
}

/// One strategy's IC decay: mean rank IC by forward horizon in bars (`None`: undefined).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IcDecay {
    /// The strategy.
    pub name: String,
    /// (horizon in bars, mean rank IC).
    pub by_horizon: Vec<(usize, Option<f64>)>,
}

impl IcDecay {
    /// From a backtest's `(horizon, mean rank IC)` pairs.
    pub fn new(name: &str, pairs: &[(usize, f64)]) -> IcDecay {
        IcDecay {
            name: name.to_string(),
            by_horizon: pairs
                .iter()
                .map(|&(h, v)| (h, v.is_finite().then_some(v)))
                .collect(),
        }
    }
}

/// Horizons of the IC decay, in bars.
pub const IC_DECAY_HORIZONS: [usize; 5] = [1, 2, 5, 10, 20];

pub(super) struct Report {
    pub(super) config: ResearchConfig,
}

impl Node for Report {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let summary = Summary::from_artifacts(
                &cx.artifacts,
                &self.config,
                cx.spent(&self.config.llm_budget()),
            )?;
            Ok(out(vec![
                ("report", Value::String(summary.markdown())),
                ("summary", to_value(&summary)?),
            ]))
        })
    }
}

pub(super) struct Nothing;

impl Node for Nothing {
    fn run(&self, _cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async { Ok(Artifacts::new()) })
    }
}
