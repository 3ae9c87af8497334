//! Tools over the state of a research run: the universe being studied, and what has been tried
//! (leaderboard and lineage).

use std::sync::{Arc, Mutex, RwLock};

use lim_backtest::frame;
use lim_backtest::metrics::Metrics;
use lim_backtest::session::{Session, SplitInfo};
use lim_market::{AsOf, Frequency, MarketData, PanelQuery, Part, SameSeries, SplitSpec, Splits};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FailureKind, Tool, ToolOutcome};

/// The session strategies are backtested in; `choose_universe` replaces it.
#[derive(Debug, Default)]
pub struct Universe {
    session: RwLock<Option<Arc<Session>>>,
    /// How the current session was loaded, while it is exactly that (no field added): what a
    /// worker in another process needs to load the same session.
    recipe: RwLock<Option<ChooseUniverseArgs>>,
}

impl Universe {
    /// A universe holding `session`.
    pub fn new(session: Option<Arc<Session>>) -> Universe {
        Universe {
            session: RwLock::new(session),
            recipe: RwLock::new(None),
        }
    }

    /// How the current session can be loaded again elsewhere: `None` when unknown, or when it
    /// holds fields added in this process (a model's predictions).
    pub fn recipe(&self) -> Option<ChooseUniverseArgs> {
        self.recipe.read().ok().and_then(|r| r.clone())
    }

    /// The current session, if one was chosen.
    pub fn current(&self) -> Option<Arc<Session>> {
        self.session.read().ok().and_then(|s| s.clone())
    }

    /// Sets the session (one with fields of this process: no recipe).
    pub(crate) fn set(&self, s: Arc<Session>) {
        self.set_loaded(s, None);
    }

    /// Sets the session and how it was loaded.
    pub(crate) fn set_loaded(&self, s: Arc<Session>, recipe: Option<ChooseUniverseArgs>) {
        if let Ok(mut slot) = self.session.write() {
            *slot = Some(s);
        }
        if let Ok(mut slot) = self.recipe.write() {
            *slot = recipe;
        }
    }
}

/// Arguments of `choose_universe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChooseUniverseArgs {
    /// Datasets to trade, as `list_datasets` names them.
    pub datasets: Vec<String>,
    /// Symbols to keep; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols: Option<Vec<String>>,
    /// Bar frequency, e.g. "1d" or "1h"; the datasets' own when absent. Only coarser bars can be made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<String>,
    /// Share of bars for training, in (0, 1).
    #[serde(default = "train")]
    pub train: f64,
    /// Share of bars for validation; the sealed test gets the rest.
    #[serde(default = "valid")]
    pub valid: f64,
    /// Bars dropped between parts, so labels cannot straddle them.
    #[serde(default = "embargo")]
    pub embargo: usize,
    /// The data ends here, as if the study were made then: `YYYY-MM-DD` (the end of that day)
    /// or `YYYY-MM-DDTHH:MM:SSZ`; nothing later is loaded. All stored data when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// Studies an earlier period: the data is cut where the sealed test of the history would
    /// begin, this many times over (each cut splitting what the one before left), so the
    /// sealed test is a period that studies of the later data never tested on. 0 (the
    /// default) uses the history as it is.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub earlier: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn train() -> f64 {
    0.6
}
fn valid() -> f64 {
    0.2
}
fn embargo() -> usize {
    5
}

/// What `choose_universe` returns.
#[derive(Debug, Clone, Serialize)]
pub struct UniverseReport {
    /// Instruments in the universe.
    pub instruments: usize,
    /// Training and validation parts (the test part is sealed and not described).
    pub splits: Vec<SplitInfo>,
    /// Instruments left out as another's series (the same index from two sources, say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub same_series: Vec<SameSeries>,
    /// When the data was cut (`as_of` or `earlier`): its last bar, the last of the sealed
    /// test. Absent when the whole history is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_ends: Option<String>,
}

/// Chooses the datasets, symbols, frequency and split that backtests use.
#[derive(Debug, Clone)]
pub struct ChooseUniverse {
    /// Where data comes from.
    pub market: Arc<dyn MarketData>,
    /// The universe to set.
    pub universe: Arc<Universe>,
}

impl Tool for ChooseUniverse {
    const NAME: &'static str = "choose_universe";
    type Args = ChooseUniverseArgs;
    type Output = UniverseReport;

    fn description(&self) -> String {
        "Choose what to study: datasets, optional symbols, bar frequency and the train/validation split \
         (the rest is the sealed test period). Later backtests use this universe."
            .into()
    }

    async fn call(&self, args: ChooseUniverseArgs) -> ToolOutcome<UniverseReport> {
        let frequency = match args.frequency.as_deref().map(Frequency::parse) {
            Some(None) => {
                return ToolOutcome::failed(
                    FailureKind::InvalidArguments,
                    format!(
                        "'{}' is not a frequency; use e.g. 1d, 1h, 5min",
                        args.frequency.unwrap_or_default()
                    ),
                );
            }
            Some(Some(f)) => Some(f),
            None => None,
        };
        let (market, universe) = (self.market.clone(), self.universe.clone());
        let work = tokio::task::spawn_blocking(
            move || -> Result<UniverseReport, (FailureKind, String)> {
                let (session, same_series) = load_universe(market.as_ref(), &args, frequency)?;
                let data_ends = (args.as_of.is_some() || args.earlier > 0)
                    .then(|| {
                        session
                            .times()
                            .last()
                            .map(|t| t.display(session.frequency()))
                    })
                    .flatten();
                let report = UniverseReport {
                    instruments: session.instruments(),
                    splits: session.split_info(&[Part::Train, Part::Validation]),
                    same_series,
                    data_ends,
                };
                universe.set_loaded(Arc::new(session), Some(args));
                Ok(report)
            },
        );
        match work.await {
            Ok(Ok(r)) => ToolOutcome::Done { result: r },
            Ok(Err((kind, m))) => ToolOutcome::failed(kind, m),
            Err(e) => ToolOutcome::failed(FailureKind::Failed, e.to_string()),
        }
    }
}

/// Loads the panels `args` name and splits them: the session `choose_universe` sets (the
/// research workflow's plan check loads one the same way to see whether a plan can trade).
/// An instrument that is another's series over training and validation is left out (see
/// [`load_universe`]).
///
/// # Errors
/// Unknown datasets or symbols, or a split that does not fit the data, as the tool reports them.
pub fn load_session(
    market: &dyn MarketData,
    args: &ChooseUniverseArgs,
    frequency: Option<Frequency>,
) -> Result<Session, (FailureKind, String)> {
    load_universe(market, args, frequency).map(|(s, _)| s)
}

/// [`load_session`], with the instruments left out as another's series
/// ([`lim_market::same_series`], judged on training and validation bars only, so the sealed
/// test plays no part; the split is the one of the universe as asked, time axis and all).
///
/// # Errors
/// As [`load_session`].
pub fn load_universe(
    market: &dyn MarketData,
    args: &ChooseUniverseArgs,
    frequency: Option<Frequency>,
) -> Result<(Session, Vec<SameSeries>), (FailureKind, String)> {
    let query = |as_of: AsOf| {
        let mut q = PanelQuery::new(as_of, args.datasets.clone())
            .fields(frame::FIELDS)
            .extra_fields(true);
        if let Some(s) = &args.symbols {
            q = q.symbols(s.clone());
        }
        if let Some(f) = frequency {
            q = q.frequency(f);
        }
        market.panels(&q).map_err(|e| {
            let kind = match e {
                lim_market::MarketError::UnknownDataset { .. }
                | lim_market::MarketError::UnknownSymbol { .. } => FailureKind::NotFound,
                _ => FailureKind::InvalidArguments,
            };
            (kind, e.to_string())
        })
    };
    let split = SplitSpec::Fractions {
        train: args.train,
        valid: args.valid,
        embargo: args.embargo,
    };
    let invalid = |e: String| (FailureKind::InvalidArguments, e);
    let as_of = match &args.as_of {
        None => AsOf::LATEST,
        Some(text) => AsOf::parse(text).ok_or_else(|| {
            invalid(format!(
                "as_of '{text}' is not a time; use YYYY-MM-DD (the end of that day) or YYYY-MM-DDTHH:MM:SSZ"
            ))
        })?,
    };
    let mut set = query(as_of)?;
    if set.times.is_empty()
        && let Some(text) = &args.as_of
    {
        // Say when the data begins, rather than that a split of nothing is empty.
        let begins: Vec<String> = market
            .datasets()
            .unwrap_or_default()
            .iter()
            .filter(|d| args.datasets.contains(&d.name))
            .map(|d| format!("{} begins {}", d.name, d.first.display(d.frequency)))
            .collect();
        return Err(invalid(format!(
            "no bars by as_of {text} ({}); give a later as_of",
            if begins.is_empty() {
                format!("in {}", args.datasets.join(", "))
            } else {
                begins.join(", ")
            }
        )));
    }
    // Each step back ends the data just before the sealed test of what is loaded: a bar that
    // opens at the test's first bar has not closed by then, nor has any later one.
    for step in 1..=args.earlier {
        let parts = Splits::new(&set.times, split).map_err(|e| {
            invalid(format!(
                "cannot study {step} period(s) earlier: the data as of {} does not split ({e}); ask for fewer with `earlier`",
                set.as_of
            ))
        })?;
        let test_start = set.times[parts.test.start];
        set = query(AsOf(test_start))?;
    }
    let same = match Splits::new(&set.times, split) {
        Ok(parts) => lim_market::same_series(&set, 0..parts.valid.end),
        Err(e) => return Err(invalid(e.to_string())),
    };
    let left_out: Vec<&str> = same.iter().map(|s| s.symbol.as_str()).collect();
    set.without_symbols(&left_out);
    let session = Session::new(&mut set, split).map_err(|e| invalid(e.to_string()))?;
    Ok((session, same))
}

/// One strategy tried in this run.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    /// Its signal.
    pub signal: String,
    /// The generation or round that proposed it.
    pub generation: usize,
    /// The signals it was derived from.
    pub parents: Vec<String>,
    /// Training metrics.
    pub train: Metrics,
    /// Validation metrics.
    pub validation: Metrics,
    /// Its positions depend on adjusted price levels: it looks ahead, and the `leaderboard`
    /// leaves it out (it still counts as tried).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub level_dependent: bool,
    /// The robust fitness the run ranks it by (none when the run gave it no verdict: a
    /// backtest tool without a [`crate::Scorer`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fitness: Option<f64>,
    /// Why the run gave it no fitness (too few active bars, beta rather than a signal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

/// Everything tried in a run, in order.
#[derive(Debug, Default)]
pub struct ResearchLog {
    trials: Mutex<Vec<Trial>>,
}

impl ResearchLog {
    /// A log holding `trials` (a run's state so far, from its journaled artifacts).
    pub fn with_trials(trials: Vec<Trial>) -> ResearchLog {
        ResearchLog {
            trials: Mutex::new(trials),
        }
    }

    /// Appends a trial.
    pub fn record(&self, t: Trial) {
        if let Ok(mut v) = self.trials.lock() {
            v.push(t);
        }
    }

    /// All trials so far.
    pub fn trials(&self) -> Vec<Trial> {
        self.trials.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Arguments of `leaderboard`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaderboardArgs {
    /// How many of the best to show, at most 50.
    #[serde(default = "ten")]
    pub top: usize,
}

fn ten() -> usize {
    10
}

/// The best strategies tried so far, in the run's own order: by its robust fitness, then any
/// not scored by validation Sharpe, then those it rejected.
#[derive(Debug, Clone)]
pub struct Leaderboard {
    /// The run's log.
    pub log: Arc<ResearchLog>,
}

impl Tool for Leaderboard {
    const NAME: &'static str = "leaderboard";
    type Args = LeaderboardArgs;
    type Output = Vec<Trial>;

    fn description(&self) -> String {
        "The best strategies tried so far in this run, including those you backtested, in the run's own order: by robust fitness (a lower bound of the Sharpe ratio over folds of training and validation, less penalties), then strategies the run rejected (with why); with training and validation metrics (strategies that look ahead by reading adjusted price levels are left out).".into()
    }

    async fn call(&self, args: LeaderboardArgs) -> ToolOutcome<Vec<Trial>> {
        let mut t = self.log.trials();
        // A book that reads adjusted price levels looks ahead: not a leader.
        t.retain(|t| !t.level_dependent);
        // Scored first by fitness, then unscored ones by validation Sharpe, then the rejected;
        // a strategy without a validation Sharpe (no trades) has no evidence: last of its kind.
        let key = |t: &Trial| {
            let finite = |v: f64| if v.is_finite() { v } else { f64::NEG_INFINITY };
            match (t.fitness, &t.rejected) {
                (Some(f), _) => (0, finite(f)),
                (None, None) => (1, finite(t.validation.sharpe)),
                (None, Some(_)) => (2, finite(t.validation.sharpe)),
            }
        };
        t.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0)
                .then(kb.1.total_cmp(&ka.1))
                .then(a.signal.cmp(&b.signal))
        });
        t.truncate(args.top.clamp(1, 50));
        ToolOutcome::Done { result: t }
    }
}

/// Arguments of `lineage`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineageArgs {
    /// The signal whose ancestry to show, as the leaderboard prints it.
    pub signal: String,
}

/// How a strategy came about: its ancestors, nearest first.
#[derive(Debug, Clone)]
pub struct Lineage {
    /// The run's log.
    pub log: Arc<ResearchLog>,
}

impl Tool for Lineage {
    const NAME: &'static str = "lineage";
    type Args = LineageArgs;
    type Output = Vec<Trial>;

    fn description(&self) -> String {
        "The ancestry of a strategy tried in this run: the strategy, its parents, their parents, and so on.".into()
    }

    async fn call(&self, args: LineageArgs) -> ToolOutcome<Vec<Trial>> {
        let trials = self.log.trials();
        let find = |s: &str| trials.iter().find(|t| t.signal == s).cloned();
        let Some(first) = find(&args.signal) else {
            return ToolOutcome::failed(
                FailureKind::NotFound,
                format!(
                    "'{}' has not been tried in this run; see the leaderboard",
                    args.signal
                ),
            );
        };
        let mut out = vec![first];
        let mut i = 0;
        while i < out.len() && out.len() < 100 {
            for p in out[i].parents.clone() {
                if !out.iter().any(|t| t.signal == p)
                    && let Some(t) = find(&p)
                {
                    out.push(t);
                }
            }
            i += 1;
        }
        ToolOutcome::Done { result: out }
    }
}
