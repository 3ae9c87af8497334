//! The foundation model as tools an agent can choose: `pretrain` a backbone, `finetune` a head
//! on the universe, and `predict`, which adds the model's out-of-sample predictions as a field
//! strategies can use.
//!
//! The model sits behind [`FoundationModel`], so this crate (and the agents) know nothing of how
//! it is made; the `lim` binary supplies the foundation model. A model is named by its recipe
//! ([`Recipe`], e.g. `pre300s7.full300s7`), so a name is enough to rebuild it after a resume.
//! The tools decide what a model may learn from: bars up to the middle of the training part.
//! Every prediction at or before that cutoff is dropped, whatever the model returned, so a
//! strategy's metrics over the second half of the training part, and all of validation and
//! test, are out of sample. Training is paid from a budget of estimated CPU-seconds (steps
//! times the model's fixed per-step figure, so a replay decides the same); a model already
//! trained in the run costs nothing more.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use lim_backtest::session::Session;
use lim_market::{Part, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FailureKind, Tool, ToolOutcome, Universe};

/// What a model is trained on and predicts: the universe's grid and its data cutoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRequest {
    /// Datasets of the universe.
    pub datasets: Vec<String>,
    /// Instruments (columns), as in the data.
    pub symbols: Vec<String>,
    /// The dataset of each instrument.
    pub sources: Vec<String>,
    /// Bar times (rows).
    pub times: Vec<Timestamp>,
    /// The last bar the model may learn from.
    pub cutoff: Timestamp,
}

/// Pretraining: steps and seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PretrainStep {
    /// Optimiser steps.
    pub steps: usize,
    /// Seed.
    pub seed: u64,
}

/// How fine-tuning trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TuneMode {
    /// The head only, the backbone frozen.
    Probe,
    /// Head and backbone.
    Full,
    /// Head and backbone in two stages (LP-FT): the head alone first, then everything from
    /// there, each stage with the steps asked for. Needs a pretrained backbone.
    LpFt,
}

/// What a fine-tuned head predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum FinetuneTarget {
    /// The cross-sectional rank of the forward 5-bar return: a field to trade on.
    #[default]
    #[serde(rename = "return_rank_5")]
    ReturnRank5,
    /// The realised volatility of the next 5 bars (per bar, like `ts_std(returns, n)`): a
    /// field to size positions by.
    #[serde(rename = "volatility_5")]
    Volatility5,
    /// The realised volatility of the next 20 bars (per bar).
    #[serde(rename = "volatility_20")]
    Volatility20,
}

impl FinetuneTarget {
    /// The forward horizon in bars.
    pub fn horizon(self) -> usize {
        match self {
            FinetuneTarget::ReturnRank5 | FinetuneTarget::Volatility5 => 5,
            FinetuneTarget::Volatility20 => 20,
        }
    }

    /// Whether it predicts volatility.
    pub fn is_volatility(self) -> bool {
        !matches!(self, FinetuneTarget::ReturnRank5)
    }
}

/// Fine-tuning: mode, steps, seed and target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinetuneStep {
    /// What is trained.
    pub mode: TuneMode,
    /// Optimiser steps (at most; early stopping may end sooner).
    pub steps: usize,
    /// Seed of the head.
    pub seed: u64,
    /// What the head predicts.
    #[serde(default)]
    pub target: FinetuneTarget,
}

/// A model named by how it was made: `scratch` or `pre{steps}s{seed}` for the backbone,
/// followed by `.probe{steps}s{seed}`, `.full{steps}s{seed}` or `.lpft{steps}s{seed}` once
/// fine-tuned, and `v{bars}`
/// when the head predicts volatility (`pre300s1.full200s1v5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    /// The backbone's pretraining; `None` for an untrained (scratch) backbone.
    pub pretrain: Option<PretrainStep>,
    /// The fine-tuning, if any.
    pub finetune: Option<FinetuneStep>,
}

impl Recipe {
    /// The backbone alone.
    pub fn base(&self) -> Recipe {
        Recipe {
            pretrain: self.pretrain,
            finetune: None,
        }
    }

    /// Training steps of this recipe's last stage (both stages of LP-FT).
    fn own_steps(&self) -> usize {
        match (self.pretrain, self.finetune) {
            (_, Some(f)) if f.mode == TuneMode::LpFt => 2 * f.steps,
            (_, Some(f)) => f.steps,
            (Some(p), None) => p.steps,
            (None, None) => 0,
        }
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pretrain {
            Some(p) => write!(f, "pre{}s{}", p.steps, p.seed)?,
            None => f.write_str("scratch")?,
        }
        if let Some(t) = self.finetune {
            let mode = match t.mode {
                TuneMode::Probe => "probe",
                TuneMode::Full => "full",
                TuneMode::LpFt => "lpft",
            };
            write!(f, ".{mode}{}s{}", t.steps, t.seed)?;
            if t.target.is_volatility() {
                write!(f, "v{}", t.target.horizon())?;
            }
        }
        Ok(())
    }
}

/// Steps and seed of `{steps}s{seed}`.
fn steps_seed(s: &str) -> Option<(usize, u64)> {
    let (steps, seed) = s.split_once('s')?;
    Some((steps.parse().ok()?, seed.parse().ok()?))
}

impl FromStr for Recipe {
    type Err = String;

    fn from_str(s: &str) -> Result<Recipe, String> {
        let bad = || {
            format!(
                "'{s}' is not a model name; names look like 'pre300s1' (pretrained), 'pre300s1.full200s1', 'pre300s1.lpft200s1' or 'scratch.probe200s1' (fine-tuned), 'pre300s1.full200s1v5' (fine-tuned on volatility)"
            )
        };
        let (base, tune) = match s.split_once('.') {
            Some((b, t)) => (b, Some(t)),
            None => (s, None),
        };
        let pretrain = if base == "scratch" {
            None
        } else {
            let (steps, seed) = base
                .strip_prefix("pre")
                .and_then(steps_seed)
                .ok_or_else(bad)?;
            Some(PretrainStep { steps, seed })
        };
        let finetune = match tune {
            None => None,
            Some(t) => {
                let (mode, rest) = if let Some(r) = t.strip_prefix("probe") {
                    (TuneMode::Probe, r)
                } else if let Some(r) = t.strip_prefix("full") {
                    (TuneMode::Full, r)
                } else if let Some(r) = t.strip_prefix("lpft") {
                    (TuneMode::LpFt, r)
                } else {
                    return Err(bad());
                };
                let (rest, target) = match rest.split_once('v') {
                    None => (rest, FinetuneTarget::ReturnRank5),
                    Some((r, "5")) => (r, FinetuneTarget::Volatility5),
                    Some((r, "20")) => (r, FinetuneTarget::Volatility20),
                    Some(_) => return Err(bad()),
                };
                let (steps, seed) = steps_seed(rest).ok_or_else(bad)?;
                Some(FinetuneStep {
                    mode,
                    steps,
                    seed,
                    target,
                })
            }
        };
        Ok(Recipe { pretrain, finetune })
    }
}

/// What pretraining did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pretrained {
    /// The datasets of the pretraining mixture.
    pub datasets: Vec<String>,
}

/// What fine-tuning did, measured on the last quarter of the bars before the cutoff (which it
/// did not train on; it stopped early there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finetuned {
    /// Mean per-bar rank IC of its predictions with the target there.
    pub holdout_rank_ic: f64,
    /// Mean per-bar IC.
    pub holdout_ic: f64,
    /// Bars measured.
    pub holdout_bars: usize,
    /// Steps run before it stopped.
    pub steps_run: usize,
}

/// A trainable model that predicts a `times × symbols` panel (column-major, NaN where it has
/// nothing), learning only from data up to the request's cutoff. Implementations keep what
/// they trained, and train what a recipe needs that they do not have (so predictions after a
/// resume need no earlier call).
pub trait FoundationModel: Send + Sync + fmt::Debug {
    /// The model, for reports.
    fn describe(&self) -> String;

    /// Estimated CPU-seconds of one training step: a fixed figure, so that budget decisions
    /// replay exactly.
    fn seconds_per_step(&self) -> f64;

    /// Pretrains the backbone of `recipe` (which has a pretraining stage).
    ///
    /// # Errors
    /// Too little data or a failed step; the message says why.
    fn pretrain(&self, req: &ModelRequest, recipe: &Recipe) -> Result<Pretrained, String>;

    /// Fine-tunes as `recipe` says (which has a fine-tuning stage).
    ///
    /// # Errors
    /// Too little data or a failed step.
    fn finetune(&self, req: &ModelRequest, recipe: &Recipe) -> Result<Finetuned, String>;

    /// Predictions of the fine-tuned model `recipe`.
    ///
    /// # Errors
    /// The model could not be trained or run.
    fn predict(&self, req: &ModelRequest, recipe: &Recipe) -> Result<Vec<f64>, String>;
}

/// A field a model's predictions became.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldRecord {
    /// The field's name.
    pub name: String,
    /// The model (its recipe).
    pub model: String,
    /// Why it was added, in the words of whoever asked.
    pub why: String,
    /// The last bar the model learned from.
    pub cutoff: Timestamp,
    /// Share of finite predictions in the training part after the cutoff, and in validation.
    pub coverage: Vec<(String, f64)>,
    /// Predictions the model returned at or before its cutoff, dropped.
    pub dropped_in_sample: usize,
}

/// A model trained in the run, with its cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainedRecord {
    /// The model (its recipe).
    pub model: String,
    /// Estimated CPU-seconds it cost.
    pub cpu_seconds: f64,
    /// Fine-tuning's holdout figures, for fine-tuned models.
    #[serde(default)]
    pub finetuned: Option<Finetuned>,
}

/// The foundation model's part of a run's state: its budget, what was trained and which fields
/// were added. Nodes carry it from one to the next as an artifact.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LabState {
    /// Budget of estimated CPU-seconds for training.
    #[serde(with = "lim_backtest::nonfinite")]
    pub budget_cpu_seconds: f64,
    /// Spent so far.
    pub spent_cpu_seconds: f64,
    /// Models trained, in order.
    pub trained: Vec<TrainedRecord>,
    /// Fields added, in order.
    pub fields: Vec<FieldRecord>,
}

impl LabState {
    /// A fresh state with `budget` CPU-seconds.
    pub fn new(budget: f64) -> LabState {
        LabState {
            budget_cpu_seconds: budget,
            ..LabState::default()
        }
    }

    fn remaining(&self) -> f64 {
        (self.budget_cpu_seconds - self.spent_cpu_seconds).max(0.0)
    }

    fn trained(&self, model: &str) -> bool {
        self.trained.iter().any(|t| t.model == model)
    }
}

/// The foundation model, the universe it adds fields to, and the run's [`LabState`], shared by
/// the three tools.
#[derive(Debug)]
pub struct Lab {
    model: Arc<dyn FoundationModel>,
    universe: Arc<Universe>,
    state: Mutex<LabState>,
}

type Failure = (FailureKind, String);

impl Lab {
    /// A lab over `universe` continuing from `state`.
    pub fn new(model: Arc<dyn FoundationModel>, universe: Arc<Universe>, state: LabState) -> Lab {
        Lab {
            model,
            universe,
            state: Mutex::new(state),
        }
    }

    /// The state now.
    pub fn state(&self) -> LabState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The model's description.
    pub fn describe(&self) -> String {
        self.model.describe()
    }

    fn session(&self) -> Result<Arc<Session>, Failure> {
        self.universe.current().ok_or((
            FailureKind::InvalidArguments,
            "no universe yet: call choose_universe first".into(),
        ))
    }

    /// Charges training `recipe`'s last stage, unless it was trained already; refuses what the
    /// budget cannot pay.
    fn charge(&self, recipe: &Recipe, finetuned: Option<Finetuned>) -> Result<f64, Failure> {
        let mut s = self.state.lock().map_err(|_| {
            (
                FailureKind::Failed,
                "the lab's state is poisoned".to_string(),
            )
        })?;
        let name = recipe.to_string();
        if s.trained(&name) {
            return Ok(0.0);
        }
        let cost = recipe.own_steps() as f64 * self.model.seconds_per_step();
        s.spent_cpu_seconds += cost;
        s.trained.push(TrainedRecord {
            model: name,
            cpu_seconds: cost,
            finetuned,
        });
        Ok(cost)
    }

    /// Refuses `recipe` when its last stage costs more than what is left.
    fn afford(&self, recipe: &Recipe) -> Result<(), Failure> {
        let s = self.state();
        if s.trained(&recipe.to_string()) {
            return Ok(());
        }
        let cost = recipe.own_steps() as f64 * self.model.seconds_per_step();
        if cost > s.remaining() + 1e-9 {
            let per = self.model.seconds_per_step();
            return Err((
                FailureKind::OverBudget,
                format!(
                    "{} steps cost about {cost:.1} CPU-seconds, and {:.1} of the run's {:.1} are left: ask for at most {} steps, or do without the model",
                    recipe.own_steps(),
                    s.remaining(),
                    s.budget_cpu_seconds,
                    if per > 0.0 {
                        (s.remaining() / per).floor() as usize
                    } else {
                        0
                    }
                ),
            ));
        }
        Ok(())
    }

    fn trained_before(&self, recipe: &Recipe, what: &str) -> Result<(), Failure> {
        if self.state().trained(&recipe.to_string()) {
            Ok(())
        } else {
            Err((
                FailureKind::NotFound,
                format!("'{recipe}' was not {what} in this run; {what} it first"),
            ))
        }
    }

    /// Trains `recipe`'s last stage with `run` if the budget can pay, and charges it.
    fn train<T>(
        &self,
        recipe: &Recipe,
        what: &str,
        run: impl FnOnce(&dyn FoundationModel, &ModelRequest, &Recipe) -> Result<T, String>,
        finetuned: impl FnOnce(&T) -> Option<Finetuned>,
    ) -> Result<TrainReport<T>, Failure> {
        self.afford(recipe)?;
        let (req, _) = request(self.session()?.as_ref())?;
        let details = run(self.model.as_ref(), &req, recipe)
            .map_err(|e| (FailureKind::Failed, format!("{what} failed: {e}")))?;
        let cost = self.charge(recipe, finetuned(&details))?;
        Ok(TrainReport {
            model: recipe.to_string(),
            details,
            cpu_seconds: cost,
            remaining_cpu_seconds: self.state().remaining(),
        })
    }

    /// Adds the predictions of `recipe` as field `name`, dropping any at or before the cutoff.
    fn add_field(&self, name: &str, recipe: &Recipe, why: &str) -> Result<FieldRecord, Failure> {
        let session = self.session()?;
        let (req, cut) = request(&session)?;
        let mut values = self
            .model
            .predict(&req, recipe)
            .map_err(|e| (FailureKind::Failed, format!("the model failed: {e}")))?;
        let (t, n) = (req.times.len(), req.symbols.len());
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
        let train = session.splits().range(Part::Train);
        let coverage = vec![
            ("train after cutoff".to_string(), share(cut..train.end)),
            (
                "validation".to_string(),
                share(session.splits().range(Part::Validation)),
            ),
        ];
        let s = session
            .with_field(name, values)
            .map_err(|e| (FailureKind::InvalidArguments, e.to_string()))?;
        self.universe.set(Arc::new(s));
        Ok(FieldRecord {
            name: name.to_string(),
            model: recipe.to_string(),
            why: why.to_string(),
            cutoff: req.cutoff,
            coverage,
            dropped_in_sample: dropped,
        })
    }

    /// Adds back to the universe the fields of `state` it lacks (after a resume reloaded it).
    ///
    /// # Errors
    /// A field's model could not be rebuilt.
    pub fn restore_fields(&self, state: &LabState) -> Result<(), String> {
        for f in &state.fields {
            let have = self
                .universe
                .current()
                .is_some_and(|s| s.field_names().contains(&f.name));
            if !have {
                let recipe: Recipe = f.model.parse()?;
                self.add_field(&f.name, &recipe, &f.why)
                    .map_err(|(_, m)| format!("cannot rebuild the field '{}': {m}", f.name))?;
            }
        }
        Ok(())
    }
}

/// The request for `session`: its grid and a cutoff in the middle of the training part; also
/// the index of the first bar after the cutoff.
fn request(session: &Session) -> Result<(ModelRequest, usize), Failure> {
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
    Ok((
        ModelRequest {
            datasets,
            symbols: session.symbols().to_vec(),
            sources: session.sources().to_vec(),
            times: times.to_vec(),
            cutoff: times[cut - 1],
        },
        cut,
    ))
}

fn outcome<T>(r: Result<T, Failure>) -> ToolOutcome<T> {
    match r {
        Ok(result) => ToolOutcome::Done { result },
        Err((kind, message)) => ToolOutcome::Failed { kind, message },
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> ToolOutcome<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => outcome(r),
        Err(e) => ToolOutcome::failed(FailureKind::Failed, e.to_string()),
    }
}

/// Arguments of `pretrain`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PretrainArgs {
    /// Optimiser steps, 1 to 100000.
    pub steps: usize,
    /// Seed.
    #[serde(default)]
    pub seed: u64,
}

/// What a training tool returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport<T> {
    /// The model's name, for `finetune` and `predict`.
    pub model: String,
    /// What training did.
    pub details: T,
    /// Estimated CPU-seconds charged (0 when it was trained already).
    pub cpu_seconds: f64,
    /// Estimated CPU-seconds left in the run's budget.
    pub remaining_cpu_seconds: f64,
}

fn check_steps(steps: usize) -> Result<(), Failure> {
    if (1..=100_000).contains(&steps) {
        Ok(())
    } else {
        Err((
            FailureKind::InvalidArguments,
            format!("steps must be between 1 and 100000, not {steps}"),
        ))
    }
}

/// `pretrain`: a backbone learns the markets' bars up to the cutoff.
#[derive(Debug, Clone)]
pub struct Pretrain {
    /// The lab.
    pub lab: Arc<Lab>,
}

impl Tool for Pretrain {
    const NAME: &'static str = "pretrain";
    const EXCLUSIVE: bool = true;
    type Args = PretrainArgs;
    type Output = TrainReport<Pretrained>;

    fn description(&self) -> String {
        format!(
            "Pretrain {} on every dataset of the universe's bar frequency, with bars up to the middle of the training period. About {:.3} CPU-seconds per step, paid from the run's budget. Returns the model's name for finetune.",
            self.lab.describe(),
            self.lab.model.seconds_per_step()
        )
    }

    async fn call(&self, args: PretrainArgs) -> ToolOutcome<TrainReport<Pretrained>> {
        let lab = self.lab.clone();
        blocking(move || {
            check_steps(args.steps)?;
            let recipe = Recipe {
                pretrain: Some(PretrainStep {
                    steps: args.steps,
                    seed: args.seed,
                }),
                finetune: None,
            };
            lab.train(
                &recipe,
                "pretraining",
                |m, req, r| m.pretrain(req, r),
                |_| None,
            )
        })
        .await
    }
}

/// Arguments of `finetune`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FinetuneArgs {
    /// The backbone: a name `pretrain` returned, or "scratch" for an untrained one.
    pub model: String,
    /// `probe` trains the head only; `full` trains the backbone too; `lp_ft` does the probe
    /// first and then the full fine-tuning from it (each with `steps`, so it costs twice), which
    /// kept pretrained features better in LIM's volatility tests. `lp_ft` needs a pretrained
    /// backbone.
    pub mode: TuneMode,
    /// Optimiser steps at most (it stops early when its holdout stops improving), 1 to 100000.
    pub steps: usize,
    /// Seed of the head.
    #[serde(default)]
    pub seed: u64,
    /// What the head learns: `return_rank_5` (default; a field to trade on), or
    /// `volatility_5` / `volatility_20` (the next bars' realised volatility per bar, a field to
    /// size a sign_threshold book by: its `vol_forecast`).
    #[serde(default)]
    pub target: FinetuneTarget,
}

/// `finetune`: a head learns the universe's forward 5-bar return ranks, or its next bars'
/// volatility.
#[derive(Debug, Clone)]
pub struct Finetune {
    /// The lab.
    pub lab: Arc<Lab>,
}

impl Tool for Finetune {
    const NAME: &'static str = "finetune";
    const EXCLUSIVE: bool = true;
    type Args = FinetuneArgs;
    type Output = TrainReport<Finetuned>;

    fn description(&self) -> String {
        format!(
            "Fine-tune a backbone (from pretrain, or \"scratch\") on bars before the middle of the training period to predict the universe's forward 5-bar return ranks (target return_rank_5), or its realised volatility over the next 5 or 20 bars (volatility_5, volatility_20: a field to size a sign_threshold book by, as its vol_forecast); reports the rank IC on the last quarter of those bars, which it did not train on. About {:.3} CPU-seconds per step. Returns the model's name for predict.",
            self.lab.model.seconds_per_step()
        )
    }

    async fn call(&self, args: FinetuneArgs) -> ToolOutcome<TrainReport<Finetuned>> {
        let lab = self.lab.clone();
        blocking(move || {
            check_steps(args.steps)?;
            let base: Recipe = args
                .model
                .parse()
                .map_err(|e| (FailureKind::InvalidArguments, e))?;
            if base.finetune.is_some() {
                return Err((
                    FailureKind::InvalidArguments,
                    format!(
                        "'{}' is fine-tuned already; fine-tune its backbone '{}'",
                        args.model,
                        base.base()
                    ),
                ));
            }
            if base.pretrain.is_some() {
                lab.trained_before(&base, "pretrained")?;
            } else if args.mode == TuneMode::LpFt {
                return Err((
                    FailureKind::InvalidArguments,
                    "lp_ft keeps a pretrained backbone's features, and \"scratch\" has none: use mode full, or pretrain first".into(),
                ));
            }
            let recipe = Recipe {
                finetune: Some(FinetuneStep {
                    mode: args.mode,
                    steps: args.steps,
                    seed: args.seed,
                    target: args.target,
                }),
                ..base
            };
            lab.train(
                &recipe,
                "fine-tuning",
                |m, req, r| m.finetune(req, r),
                |d: &Finetuned| Some(d.clone()),
            )
        })
        .await
    }
}

/// Arguments of `predict`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictArgs {
    /// A fine-tuned model's name, as `finetune` returned it.
    pub model: String,
    /// Name of the new field, e.g. `forecast`: lower-case letters, digits and _.
    #[serde(default = "default_name")]
    pub name: String,
    /// Why the field is worth adding (the report quotes it).
    pub why: String,
}

fn default_name() -> String {
    "forecast".into()
}

/// `predict`: a fine-tuned model's predictions become a field.
#[derive(Debug, Clone)]
pub struct Predict {
    /// The lab.
    pub lab: Arc<Lab>,
}

impl Tool for Predict {
    const NAME: &'static str = "predict";
    const EXCLUSIVE: bool = true;
    type Args = PredictArgs;
    type Output = FieldRecord;

    fn description(&self) -> String {
        "Add a fine-tuned model's predictions as a field strategies can use (e.g. rank(forecast)); predictions at or before the model's cutoff are dropped, so the field is out of sample. Costs no budget."
            .into()
    }

    async fn call(&self, args: PredictArgs) -> ToolOutcome<FieldRecord> {
        let lab = self.lab.clone();
        blocking(move || {
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
            let recipe: Recipe = args
                .model
                .parse()
                .map_err(|e| (FailureKind::InvalidArguments, e))?;
            if recipe.finetune.is_none() {
                return Err((
                    FailureKind::InvalidArguments,
                    format!(
                        "'{}' has no head to predict with: fine-tune it first",
                        args.model
                    ),
                ));
            }
            lab.trained_before(&recipe, "fine-tuned")?;
            let field = lab.add_field(&args.name, &recipe, &args.why)?;
            if let Ok(mut s) = lab.state.lock() {
                s.fields.push(field.clone());
            }
            Ok(field)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_print_and_parse_back() {
        for s in [
            "pre300s1",
            "pre300s1.full200s2",
            "scratch.probe50s0",
            "scratch",
            "pre300s1.full200s2v5",
            "scratch.probe50s0v20",
            "pre300s1.lpft200s2",
            "pre300s1.lpft200s2v5",
        ] {
            let r: Recipe = s.parse().unwrap();
            assert_eq!(r.to_string(), s);
        }
        // LP-FT runs both of its stages with the steps asked for, and is charged for both.
        let lp: Recipe = "pre300s1.lpft200s2".parse().unwrap();
        assert_eq!(lp.finetune.map(|f| f.mode), Some(TuneMode::LpFt));
        assert_eq!(lp.own_steps(), 400);
        assert_eq!(
            "pre300s1.full200s2".parse::<Recipe>().unwrap().own_steps(),
            200
        );
        assert_eq!(
            serde_json::to_value(TuneMode::LpFt).unwrap(),
            serde_json::json!("lp_ft")
        );
        let v: Recipe = "pre300s1.full200s2v20".parse().unwrap();
        assert_eq!(
            v.finetune.map(|f| f.target),
            Some(FinetuneTarget::Volatility20)
        );
        for bad in [
            "pre300",
            "pre.full",
            "prex1s2",
            "pre1s1.half2s1",
            "pre1s1.full2s1v7",
            "pre1s1.full2s1v",
            "",
        ] {
            let e = bad.parse::<Recipe>().unwrap_err();
            assert!(e.contains("is not a model name"), "{bad}: {e}");
        }
    }
}
