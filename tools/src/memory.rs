//! The research memory: what earlier runs found, per dataset, so the next run builds on the
//! last instead of starting blind. The run store keeps it; this crate only defines what a
//! finding is, the trait it is read through (which the trace layer wraps), and the tool.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use lim_market::{Frequency, Timestamp};

use crate::{DataEnd, FailureKind, Tool, ToolOutcome};

/// One strategy an earlier run tried, with what it showed and what its critic concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The datasets it traded, joined with `+`.
    pub datasets: String,
    /// Bar frequency.
    pub frequency: String,
    /// The run.
    pub run: String,
    /// The run's goal.
    pub goal: String,
    /// The signal.
    pub signal: String,
    /// Training Sharpe.
    #[serde(with = "lim_backtest::nonfinite")]
    pub train_sharpe: f64,
    /// Validation Sharpe.
    #[serde(with = "lim_backtest::nonfinite")]
    pub validation_sharpe: f64,
    /// The robust fitness its run ranked it by (a lower bound of its Sharpe ratio over the
    /// folds of training and validation, less penalties): the memory's order, since a
    /// validation Sharpe ratio alone can rest on a few bars. Absent in findings remembered
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitness: Option<f64>,
    /// Sharpe on the sealed test, if it was a finalist (read once, at that run's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_sharpe: Option<f64>,
    /// The critic's last diagnosis of that run.
    pub conclusion: String,
    /// The last bar of that run's data (the end of its test period), as its report shows it;
    /// absent in findings remembered before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_end: Option<String>,
    /// The last bar of that run's validation part (its training and validation Sharpe ratios
    /// come from bars up to it); absent in findings remembered before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_end: Option<String>,
}

impl Finding {
    /// Whether everything this finding measured had happened by `end`, so that a run whose
    /// data ends there may read it: the close of its last bar is at or before `end`. A finding
    /// that does not say where its data ended is visible only to a run on the whole history.
    pub fn visible(&self, end: DataEnd) -> bool {
        match end {
            DataEnd::Whole => true,
            DataEnd::AsOf(t) => self.closes(&self.data_end).is_some_and(|c| c <= (t.0).0),
            DataEnd::Cut => false,
        }
    }

    /// When the bar named by `last` (this finding's frequency) closed, in seconds.
    fn closes(&self, last: &Option<String>) -> Option<i64> {
        let last = Timestamp::parse(last.as_deref()?)?;
        let bar = Frequency::parse(&self.frequency).map_or(0, |f| f.seconds());
        Some(last.0.saturating_add(bar))
    }

    /// This finding as a run whose sealed test begins at `test_start` (`None`: not yet known)
    /// may see it: nothing measured on bars of that test. Its test Sharpe stays only when its
    /// whole test had closed before `test_start`; the finding is left out when its training
    /// and validation reach into that test, or when it cannot say where they end.
    pub fn sealed(mut self, test_start: Option<Timestamp>) -> Option<Finding> {
        let before = |closes: Option<i64>| match (closes, test_start) {
            (Some(c), Some(t)) => c <= t.0,
            _ => false,
        };
        if !before(self.closes(&self.data_end)) {
            self.test_sharpe = None;
        }
        // Without a known test start, training and validation are shown: the planner does
        // not yet know where its test will be, and the strategist's tools see it later.
        match test_start {
            Some(_) if !before(self.closes(&self.validation_end)) => None,
            _ => Some(self),
        }
    }
}

/// Where findings are read from.
pub trait Memory: Send + Sync + std::fmt::Debug {
    /// Findings for `datasets` (all when empty), best robust fitness first, at most `limit`.
    ///
    /// # Errors
    /// The memory cannot be read.
    fn findings(&self, datasets: &[String], limit: usize) -> Result<Vec<Finding>, String>;
}

/// A memory with nothing in it (a run without a store).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMemory;

impl Memory for NoMemory {
    fn findings(&self, _datasets: &[String], _limit: usize) -> Result<Vec<Finding>, String> {
        Ok(Vec::new())
    }
}

/// Arguments of `past_findings`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PastFindingsArgs {
    /// Datasets, as `list_datasets` names them; all when absent.
    #[serde(default)]
    pub datasets: Vec<String>,
    /// How many, best robust fitness first (at most 50).
    #[serde(default = "twenty")]
    pub limit: usize,
}

fn twenty() -> usize {
    20
}

/// Reads the research memory.
#[derive(Debug, Clone)]
pub struct PastFindings {
    /// The memory (journaled in a run).
    pub memory: Arc<dyn Memory>,
    /// Where the run's data ends: findings measured on data after it are left out, so that a
    /// run as of an earlier time learns nothing of what came later ([`Finding::visible`]).
    pub end: DataEnd,
    /// Where the run's sealed test begins, once its universe is chosen: nothing measured on
    /// it is shown ([`Finding::sealed`]); before, no test Sharpe is.
    pub test_start: Option<Timestamp>,
}

/// How many findings are read before those after the run's end are left out.
const READ_BEFORE_CUT: usize = 1000;

impl Tool for PastFindings {
    const NAME: &'static str = "past_findings";
    type Args = PastFindingsArgs;
    type Output = Vec<Finding>;

    fn description(&self) -> String {
        "What earlier research runs found on these datasets: strategies tried, their training, validation \
         and (for finalists) test Sharpe ratios, and what each run's critic concluded. Build on them; \
         do not repeat what failed."
            .into()
    }

    async fn call(&self, args: PastFindingsArgs) -> ToolOutcome<Vec<Finding>> {
        let limit = args.limit.clamp(1, 50);
        // Only a cut or a known test start can leave findings out; otherwise read what is shown.
        let read = if self.end == DataEnd::Whole && self.test_start.is_none() {
            limit
        } else {
            READ_BEFORE_CUT
        };
        match self.memory.findings(&args.datasets, read) {
            Ok(f) => ToolOutcome::Done {
                result: f
                    .into_iter()
                    .filter(|f| f.visible(self.end))
                    .filter_map(|f| f.sealed(self.test_start))
                    .take(limit)
                    .collect(),
            },
            Err(e) => ToolOutcome::failed(FailureKind::Failed, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use lim_market::AsOf;

    use super::*;

    fn finding(frequency: &str, data_end: Option<&str>) -> Finding {
        Finding {
            datasets: "d".into(),
            frequency: frequency.into(),
            run: "r".into(),
            goal: "g".into(),
            signal: "returns".into(),
            train_sharpe: 1.0,
            validation_sharpe: 1.0,
            fitness: None,
            test_sharpe: Some(1.0),
            conclusion: String::new(),
            data_end: data_end.map(str::to_string),
            validation_end: Some("2018-12-31".into()),
        }
    }

    /// A finding is visible once its last bar has closed; one of no known end only to a run on
    /// the whole history.
    #[test]
    fn a_finding_is_visible_once_its_last_bar_has_closed() {
        let as_of = |t: &str| DataEnd::AsOf(AsOf::parse(t).unwrap_or(AsOf::LATEST));
        let daily = finding("1d", Some("2019-12-31"));
        assert!(daily.visible(as_of("2019-12-31")));
        assert!(!daily.visible(as_of("2019-12-30")));
        assert!(daily.visible(DataEnd::Whole));
        assert!(!daily.visible(DataEnd::Cut));
        // An hourly bar opening at 15:00 closes at 16:00.
        let hourly = finding("1h", Some("2019-12-31T15:00:00Z"));
        assert!(!hourly.visible(as_of("2019-12-31T15:30:00Z")));
        assert!(hourly.visible(as_of("2019-12-31T16:00:00Z")));
        let unknown = finding("1d", None);
        assert!(unknown.visible(DataEnd::Whole));
        assert!(!unknown.visible(as_of("2099-12-31")));
    }

    /// A run whose sealed test begins on 2020-01-02 sees nothing measured on it: a finding
    /// whose test ran into it loses its test Sharpe, one whose validation did is left out, and
    /// before the test start is known no test Sharpe is shown.
    #[test]
    fn nothing_measured_on_a_runs_sealed_test_is_shown() {
        let ending = |validation_end: &str, data_end: &str| Finding {
            validation_end: Some(validation_end.into()),
            ..finding("1d", Some(data_end))
        };
        let start = Timestamp::parse("2020-01-02");
        let earlier = ending("2018-06-29", "2019-12-31").sealed(start);
        assert_eq!(earlier.and_then(|f| f.test_sharpe), Some(1.0));
        let overlapping = ending("2019-06-28", "2021-12-31").sealed(start);
        assert_eq!(overlapping.map(|f| f.test_sharpe), Some(None));
        assert_eq!(ending("2020-06-30", "2021-12-31").sealed(start), None);
        let planning = ending("2018-06-29", "2019-12-31").sealed(None);
        assert_eq!(planning.map(|f| f.test_sharpe), Some(None));
        let mut unknown = ending("2018-06-29", "2019-12-31");
        unknown.validation_end = None;
        assert_eq!(unknown.sealed(start), None);
    }
}
