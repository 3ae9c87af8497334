//! Checks of an experiment plan before anything is spent on it: does it stay within the goal
//! (the market the goal names, a drawdown limit it states), are its constraints sane, and can
//! its universe trade in every part of the split?
//!
//! A model's plan that fails goes back to the model with the [`PlanError`]'s text (like a
//! strategy spec that does not parse); when no plan passes, the keyword plan stands and the
//! report says so.

use std::fmt;

use lim_agents::offline::{self, Plan};
use lim_backtest::spec::Portfolio;
use lim_market::{AssetClass, DatasetMeta, MarketData, Part};
use lim_tools::{ChooseUniverseArgs, load_session};

use crate::research::MIN_ACTIVE_BARS;

/// Why a plan cannot be run as it stands. Each names the plan's field and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The plan trades nothing.
    #[error("datasets: the plan names no dataset; choose from {}", .available.join(", "))]
    NoDatasets {
        /// What exists.
        available: Vec<String>,
    },
    /// A dataset that does not exist.
    #[error("datasets: '{dataset}' does not exist; choose from {}", .available.join(", "))]
    UnknownDataset {
        /// The name the plan gave.
        dataset: String,
        /// What exists.
        available: Vec<String>,
    },
    /// A dataset outside the market the goal names.
    #[error(
        "datasets: '{dataset}' is {market}, but the goal asks for {goal}; {}",
        if .fitting.is_empty() { "no dataset here fits the goal".to_string() } else { format!("trade only {}", .fitting.join(", ")) }
    )]
    ForeignMarket {
        /// The dataset.
        dataset: String,
        /// Its market, in words.
        market: String,
        /// The goal's market, in words.
        goal: String,
        /// Datasets that fit the goal.
        fitting: Vec<String>,
    },
    /// A drawdown limit that is not a fraction of capital.
    #[error(
        "max_drawdown: {value} ({:.0}%) is not a drawdown limit; give a fraction between 0 and 1 (0.15 for 15%), or null for none",
        .value * 100.0
    )]
    DrawdownOutOfRange {
        /// The plan's value.
        value: f64,
    },
    /// A drawdown limit the goal states, dropped or loosened.
    #[error(
        "max_drawdown: the goal limits drawdown to {:.0}%, but the plan has {}; use {goal}",
        .goal * 100.0,
        .plan.map_or("no limit".to_string(), |p| format!("{:.0}% ({p})", p * 100.0))
    )]
    DrawdownLooserThanGoal {
        /// The plan's value.
        plan: Option<f64>,
        /// The goal's.
        goal: f64,
    },
    /// Costs that cannot be right.
    #[error(
        "cost_bps: {bps} bps per unit of turnover is not plausible; use between 0 and 200 (10 is typical)"
    )]
    Costs {
        /// The plan's value.
        bps: f64,
    },
    /// A book the backtester refuses.
    #[error("portfolio: {0}")]
    Book(String),
    /// The universe has too few bars where it can trade in some parts of the split.
    #[error(
        "datasets: on the calendar of {} the universe can trade on too few bars: {} (at least half of each part, and {MIN_ACTIVE_BARS}, needed); trade datasets that share a calendar",
        .datasets.join(" + "),
        .short.iter().map(|s| format!("{} {} of {}", s.part, s.bars, s.of)).collect::<Vec<_>>().join(", ")
    )]
    Untradable {
        /// The datasets.
        datasets: Vec<String>,
        /// The parts short of tradable bars.
        short: Vec<Shortfall>,
    },
    /// The data could not be loaded.
    #[error("datasets: {0}")]
    Data(String),
}

/// A part of the split with too few bars where the universe can trade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// "training", "validation" or "sealed test".
    pub part: &'static str,
    /// Bars where an always-long book of the universe has a known return.
    pub bars: usize,
    /// Bars in the part.
    pub of: usize,
}

/// A market in the terms a goal uses: a region and an asset class, either unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Market {
    region: Option<&'static str>,
    class: Option<AssetClass>,
}

impl fmt::Display for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let region = match self.region {
            Some("cn") => "Chinese ",
            Some("us") => "US ",
            Some("in") => "Indian ",
            _ => "",
        };
        let class = match self.class {
            Some(AssetClass::Futures) => "futures",
            Some(AssetClass::Equity) => "equities",
            Some(AssetClass::Index) => "indices",
            Some(AssetClass::Crypto) => "crypto",
            Some(AssetClass::Fx) => "currencies",
            _ => "instruments",
        };
        write!(f, "{region}{class}")
    }
}

const REGIONS: &[(&str, &[&str])] = &[
    (
        "cn",
        &[
            "china", "chinese", "shfe", "dce", "czce", "cffex", "a-share",
        ],
    ),
    (
        "us",
        &["us ", "u.s.", "american", "s&p", "nasdaq", "nyse", "cme"],
    ),
    ("in", &["india", "indian", "nse", "bse", "nifty"]),
];

const CLASSES: &[(AssetClass, &[&str])] = &[
    (AssetClass::Futures, &["futures", "commodit"]),
    (AssetClass::Index, &["indices", "index ", "indexes"]),
    (AssetClass::Equity, &["stock", "equit", "shares"]),
    (AssetClass::Crypto, &["crypto", "bitcoin", "btc"]),
    (AssetClass::Fx, &["fx ", "forex", "currenc"]),
];

/// The market a goal names, as far as its words say.
fn goal_market(goal: &str) -> Market {
    let g = format!(" {} ", goal.to_lowercase());
    let find = |words: &[&str]| words.iter().any(|w| g.contains(w));
    Market {
        region: REGIONS.iter().find(|(_, w)| find(w)).map(|(r, _)| *r),
        class: CLASSES.iter().find(|(_, w)| find(w)).map(|(c, _)| *c),
    }
}

/// A dataset's market: the region from its exchanges or its name's prefix (`cn_`, `us_`,
/// `in_`), the class most of its symbols have.
fn dataset_market(d: &DatasetMeta) -> Market {
    let by_exchange = d
        .symbols
        .iter()
        .find_map(|s| match s.instrument.exchange.as_deref()? {
            "SHFE" | "INE" | "DCE" | "CZCE" | "GFEX" | "CFFEX" | "SSE" | "SZSE" => Some("cn"),
            "NSE" | "BSE" => Some("in"),
            _ => None,
        });
    let by_name = REGIONS
        .iter()
        .map(|(r, _)| *r)
        .find(|r| d.name.starts_with(&format!("{r}_")));
    let mut counts: Vec<(AssetClass, usize)> = Vec::new();
    for s in &d.symbols {
        match counts
            .iter_mut()
            .find(|(c, _)| *c == s.instrument.asset_class)
        {
            Some((_, n)) => *n += 1,
            None => counts.push((s.instrument.asset_class, 1)),
        }
    }
    let class = counts
        .iter()
        .max_by_key(|(_, n)| *n)
        .map(|(c, _)| *c)
        .filter(|c| *c != AssetClass::Unknown);
    Market {
        region: by_exchange.or(by_name),
        class,
    }
}

fn fits(goal: Market, d: Market) -> bool {
    goal.region.is_none_or(|r| d.region == Some(r)) && goal.class.is_none_or(|c| d.class == Some(c))
}

/// Checks `plan` against its goal and the datasets there are, without reading any data.
///
/// # Errors
/// The first problem found.
pub fn check_goal(plan: &Plan, goal: &str, datasets: &[DatasetMeta]) -> Result<(), PlanError> {
    let available: Vec<String> = datasets.iter().map(|d| d.name.clone()).collect();
    if plan.datasets.is_empty() {
        return Err(PlanError::NoDatasets { available });
    }
    let wanted = goal_market(goal);
    let fitting: Vec<String> = datasets
        .iter()
        .filter(|d| fits(wanted, dataset_market(d)))
        .map(|d| d.name.clone())
        .collect();
    for name in &plan.datasets {
        let Some(d) = datasets.iter().find(|d| &d.name == name) else {
            return Err(PlanError::UnknownDataset {
                dataset: name.clone(),
                available,
            });
        };
        let market = dataset_market(d);
        // Only refuse a foreign market when some dataset here fits the goal: a goal that
        // names a market this data lacks leaves the choice to the plan.
        if !fits(wanted, market) && !fitting.is_empty() {
            return Err(PlanError::ForeignMarket {
                dataset: name.clone(),
                market: market.to_string(),
                goal: wanted.to_string(),
                fitting,
            });
        }
    }
    if let Some(dd) = plan.max_drawdown
        && !(dd > 0.0 && dd <= 1.0)
    {
        return Err(PlanError::DrawdownOutOfRange { value: dd });
    }
    if let Some(goal_dd) = offline::goal_drawdown(goal)
        && plan.max_drawdown.is_none_or(|p| p > goal_dd + 1e-9)
    {
        return Err(PlanError::DrawdownLooserThanGoal {
            plan: plan.max_drawdown,
            goal: goal_dd,
        });
    }
    if !(0.0..=200.0).contains(&plan.cost_bps) {
        return Err(PlanError::Costs { bps: plan.cost_bps });
    }
    offline::spec_for(plan, "returns")
        .validate()
        .map_err(PlanError::Book)?;
    // A top-k book that holds half the universe or more is close to always-long: no selection.
    if let Portfolio::TopK { k } = plan.portfolio {
        let n: usize = datasets
            .iter()
            .filter(|d| plan.datasets.contains(&d.name))
            .map(|d| d.symbols.len())
            .sum();
        if n > 0 && n < 3 {
            return Err(PlanError::Book(format!(
                "k: a top-k book of {n} instrument{} always holds half of the universe or more, close to always long; use a sign_threshold book, which trades each instrument on its own signal",
                if n == 1 { "" } else { "s" }
            )));
        }
        if n > 0 && 2 * k >= n {
            return Err(PlanError::Book(format!(
                "k: {k} of {n} instruments holds half of the universe or more, close to always long; use at most {}",
                (n / 5).max(1)
            )));
        }
    }
    Ok(())
}

/// The keyword plan's top-k sized to its universe: a fifth of the instruments, between 1 and 10.
/// A universe of one or two instruments leaves a top-k book no choice (one name of one is
/// always long), so it gets the per-instrument sign book ([`offline::sign_book`]) instead.
pub fn size_book(plan: &mut Plan, datasets: &[DatasetMeta]) {
    let n: usize = datasets
        .iter()
        .filter(|d| plan.datasets.contains(&d.name))
        .map(|d| d.symbols.len())
        .sum();
    if let Portfolio::TopK { k } = &mut plan.portfolio {
        if (1..3).contains(&n) {
            plan.portfolio = offline::sign_book();
        } else {
            *k = (n / 5).clamp(1, 10);
        }
    }
}

/// Checks that the plan's universe can trade in every part of the split: an always-long book
/// of it (the plan's construction, any threshold set to zero) must have a known return on at
/// least half the bars of training, validation and the sealed test (and on at least
/// [`MIN_ACTIVE_BARS`]). A single market's data passes with 90 % or more; datasets on
/// different calendars fail, as a book's return is unknown on a bar where one of its
/// instruments has none (the three calendars of `cn_futures_daily`, `us_equities_daily_adjusted`
/// and `us_futures_daily` leave 12 % of validation bars).
/// Only those counts leave this function; nothing of the test period's returns does.
///
/// # Errors
/// The first part with too few tradable bars, or data that cannot be loaded.
pub fn check_tradable(
    plan: &Plan,
    market: &dyn MarketData,
    split: &ChooseUniverseArgs,
) -> Result<(), PlanError> {
    let args = ChooseUniverseArgs {
        datasets: plan.datasets.clone(),
        ..split.clone()
    };
    let session = load_session(market, &args, None).map_err(|(_, m)| PlanError::Data(m))?;
    let mut probe = plan.clone();
    if let Portfolio::SignThreshold { threshold, .. } = &mut probe.portfolio {
        *threshold = 0.0;
    }
    let spec = offline::spec_for(&probe, lim_tools::ALWAYS_LONG);
    let parts = [Part::Train, Part::Validation, Part::Test];
    let result = session.run(&[("always long".to_string(), spec)], &parts, false);
    let metrics = result
        .first()
        .map(|r| r.metrics.clone())
        .unwrap_or_default();
    let short: Vec<Shortfall> = metrics
        .iter()
        .map(|(part, m)| Shortfall {
            part: match part {
                Part::Train => "training",
                Part::Validation => "validation",
                Part::Test => "sealed test",
            },
            bars: m.bars,
            of: m.bars + m.inactive_bars,
        })
        .filter(|s| s.bars < MIN_ACTIVE_BARS.max(s.of.div_ceil(2)))
        .collect();
    if !short.is_empty() {
        return Err(PlanError::Untradable {
            datasets: plan.datasets.clone(),
            short,
        });
    }
    Ok(())
}

/// Both checks: the goal first (cheap), then the data.
///
/// # Errors
/// The first problem found.
pub fn check(
    plan: &Plan,
    goal: &str,
    datasets: &[DatasetMeta],
    market: &dyn MarketData,
    split: &ChooseUniverseArgs,
) -> Result<(), PlanError> {
    check_goal(plan, goal, datasets)?;
    check_tradable(plan, market, split)
}
