//! The forecast tool: a model's predictions become a field strategies can use.
//!
//! The model sits behind [`Forecaster`], so this crate (and the agents) know nothing of how it
//! is made; the `lim` binary supplies the foundation model. The tool decides what the model
//! may learn from: bars up to the middle of the training part. Every prediction at or before
//! that cutoff is dropped, whatever the model returned, so a strategy's training metrics over
//! the second half of the training part, and all of validation and test, are out of sample.

use std::sync::Arc;

use lim_backtest::session::Session;
use lim_market::{Part, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FailureKind, Tool, ToolOutcome, Universe};

/// What a model is asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastRequest {
    /// Datasets of the universe.
    pub datasets: Vec<String>,
    /// Instruments (columns), as in the data.
    pub symbols: Vec<String>,
    /// The dataset of each instrument.
    pub sources: Vec<String>,
    /// Bar times (rows).
    pub times: Vec<Timestamp>,
    /// The last bar the model may learn from (its data cutoff).
    pub cutoff: Timestamp,
    /// Seed for training.
    pub seed: u64,
}

/// A model that predicts a `times × symbols` panel (column-major, NaN where it has nothing),
/// learning only from data up to the request's cutoff.
pub trait Forecaster: Send + Sync + std::fmt::Debug {
    /// The model, for reports.
    fn describe(&self) -> String;

    /// The predictions.
    ///
    /// # Errors
    /// The model could not be trained or run; the message says why.
    fn forecast(&self, req: &ForecastRequest) -> Result<Vec<f64>, String>;
}

/// Arguments of `forecast`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForecastArgs {
    /// Name of the new field, e.g. `forecast`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Training seed.
    #[serde(default)]
    pub seed: u64,
}

fn default_name() -> String {
    "forecast".into()
}

/// What `forecast` added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastReport {
    /// The field's name.
    pub field: String,
    /// The model.
    pub model: String,
    /// The last bar it learned from.
    pub cutoff: Timestamp,
    /// Share of finite predictions in the training part after the cutoff, and in validation.
    pub coverage: Vec<(String, f64)>,
    /// Predictions the model returned at or before its cutoff, dropped.
    pub dropped_in_sample: usize,
}

/// Adds a model's predictions to the universe as a field.
#[derive(Debug, Clone)]
pub struct ForecastTool {
    /// The model.
    pub forecaster: Arc<dyn Forecaster>,
    /// The universe to extend.
    pub universe: Arc<Universe>,
}

fn forecast(
    f: &dyn Forecaster,
    session: &Session,
    args: &ForecastArgs,
) -> Result<(Session, ForecastReport), (FailureKind, String)> {
    let ok_name = args
        .name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase())
        && args
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok_name {
        return Err((
            FailureKind::InvalidArguments,
            format!(
                "'{}' is not a field name; use lower-case letters, digits and _",
                args.name
            ),
        ));
    }
    let train = session.splits().range(Part::Train);
    let cut = train.start + train.len() / 2;
    if cut == 0 {
        return Err((
            FailureKind::InvalidArguments,
            "the training part is too short to leave the model anything to learn from".into(),
        ));
    }
    let times = session.times();
    let mut datasets: Vec<String> = session.sources().to_vec();
    datasets.sort();
    datasets.dedup();
    let req = ForecastRequest {
        datasets,
        symbols: session.symbols().to_vec(),
        sources: session.sources().to_vec(),
        times: times.to_vec(),
        cutoff: times[cut - 1],
        seed: args.seed,
    };
    let mut values = f
        .forecast(&req)
        .map_err(|e| (FailureKind::Failed, format!("the model failed: {e}")))?;
    let (t, n) = (times.len(), session.symbols().len());
    if values.len() != t * n {
        return Err((
            FailureKind::Failed,
            format!(
                "the model returned {} values for {t} bars × {n} instruments",
                values.len()
            ),
        ));
    }
    let mut dropped = 0;
    for col in values.chunks_mut(t) {
        for v in &mut col[..cut] {
            if !v.is_nan() {
                dropped += 1;
                *v = f64::NAN;
            }
        }
    }
    let share = |r: std::ops::Range<usize>| {
        let cells = r.len() * n;
        let finite = values
            .chunks(t)
            .map(|c| c[r.clone()].iter().filter(|v| v.is_finite()).count())
            .sum::<usize>();
        if cells == 0 {
            0.0
        } else {
            finite as f64 / cells as f64
        }
    };
    let coverage = vec![
        ("train after cutoff".to_string(), share(cut..train.end)),
        (
            "validation".to_string(),
            share(session.splits().range(Part::Validation)),
        ),
    ];
    let s = session
        .with_field(&args.name, values)
        .map_err(|e| (FailureKind::InvalidArguments, e.to_string()))?;
    Ok((
        s,
        ForecastReport {
            field: args.name.clone(),
            model: f.describe(),
            cutoff: times[cut - 1],
            coverage,
            dropped_in_sample: dropped,
        },
    ))
}

impl Tool for ForecastTool {
    const NAME: &'static str = "forecast";
    type Args = ForecastArgs;
    type Output = ForecastReport;

    fn description(&self) -> String {
        format!(
            "Train {} on the first half of the training period and add its out-of-sample predictions as a field strategies can use.",
            self.forecaster.describe()
        )
    }

    async fn call(&self, args: ForecastArgs) -> ToolOutcome<ForecastReport> {
        let Some(session) = self.universe.current() else {
            return ToolOutcome::failed(
                FailureKind::InvalidArguments,
                "no universe yet: call choose_universe first",
            );
        };
        let (f, universe) = (self.forecaster.clone(), self.universe.clone());
        let work = tokio::task::spawn_blocking(move || {
            let (s, report) = forecast(f.as_ref(), &session, &args)?;
            universe.set(Arc::new(s));
            Ok::<_, (FailureKind, String)>(report)
        });
        match work.await {
            Ok(Ok(r)) => ToolOutcome::Done { result: r },
            Ok(Err((kind, m))) => ToolOutcome::failed(kind, m),
            Err(e) => ToolOutcome::failed(FailureKind::Failed, e.to_string()),
        }
    }
}
