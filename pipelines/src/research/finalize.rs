//! The sealed test of the finalists, multiple testing over every trial, and the report node.

use super::*;

/// The final evaluator: the only node holding the universe, and so the sealed test period.
pub(super) struct Finalize {
    pub(super) universe: Arc<Universe>,
    pub(super) config: ResearchConfig,
}

impl Node for Finalize {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let plan: ExperimentPlan = cx.input("plan")?;
            let mut trials: Vec<Trial> = cx.input("trials")?;
            trials.iter_mut().for_each(|t| t.score(&plan.strategy));
            let session = self.universe.current().ok_or_else(|| {
                NodeError::Missing("no universe: the data node did not run".into())
            })?;
            let finalists = self.config.finalists;
            let work = tokio::task::spawn_blocking(move || {
                let ranked = leaderboard(&trials);
                let spec = |s: &str| (s.to_string(), offline::spec_for(&plan.strategy, s));
                let pool: Vec<(String, StrategySpec)> = ranked
                    .iter()
                    .filter(|&&i| trials[i].fitness.is_some_and(f64::is_finite))
                    .take(finalists * DIVERSITY_POOL)
                    .map(|&i| spec(&trials[i].signal))
                    .collect();
                let chosen = diverse(&session, pool, finalists);
                let (finalists, baselines, combined) =
                    test_finalists(&session, &chosen, &baselines(&plan));
                // Multiple testing over every trial of the run.
                let all: Vec<(String, StrategySpec)> = trials
                    .iter()
                    .filter(|t| t.error.is_none())
                    .map(|t| spec(&t.signal))
                    .collect();
                let books = session.run(&all, &[Part::Train, Part::Validation], false);
                let mt: Option<MultipleTesting> = session.multiple_testing(&books);
                (ranked, finalists, baselines, combined, mt)
            });
            let (ranked, finalists, baselines, combined, mt) =
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
            ]))
        })
    }
}

/// How many leaders per finalist [`diverse`] looks at.
const DIVERSITY_POOL: usize = 4;

/// Most correlation of a finalist's training and validation returns with an earlier
/// finalist's: above it, the two are one bet, and the later one gives way to the next leader.
pub const MAX_FINALIST_CORRELATION: f64 = 0.7;

/// Up to `n` finalists from `pool` (best first): each in turn unless its returns over the
/// training and validation parts (never the test) correlate above
/// [`MAX_FINALIST_CORRELATION`] with one already chosen; when too few are that different, the
/// best of the rest fill the places.
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
    let results = session.run(&pool, &[Part::Train, Part::Validation], false);
    let nets: Vec<Option<&[f64]>> = results
        .iter()
        .map(|r| r.book.as_ref().map(|b| &b.net[seen.clone()]))
        .collect();
    let mut chosen: Vec<usize> = Vec::new();
    for (i, net) in nets.iter().enumerate() {
        if chosen.len() == n {
            break;
        }
        let apart = chosen.iter().all(|&j| match (net, nets[j]) {
            (Some(a), Some(b)) => {
                let r = lim_backtest::metrics::pearson(&lim_backtest::metrics::finite_pairs(a, b));
                r.is_nan() || r <= MAX_FINALIST_CORRELATION
            }
            _ => true,
        });
        if apart {
            chosen.push(i);
        }
    }
    for i in 0..pool.len() {
        if chosen.len() == n {
            break;
        }
        if !chosen.contains(&i) {
            chosen.push(i);
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
) -> (Vec<Finalist>, Vec<Baseline>, Option<Combined>) {
    let all: Vec<(String, StrategySpec)> = finalists.iter().chain(baselines).cloned().collect();
    let results = session.run(&all, &[Part::Validation, Part::Test], false);
    let (f, b) = results.split_at(finalists.len().min(results.len()));
    let test = session.splits().range(Part::Test);
    let net = |r: &lim_backtest::session::StrategyResult| -> Vec<f64> {
        r.book
            .as_ref()
            .map(|b| b.net[test.clone()].to_vec())
            .unwrap_or_default()
    };
    let reference = b.first().map(|r| (net(r), r.metrics.clone()));
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
    (finalists, baselines, combined)
}

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
