//! The run's summary and its Markdown report, rebuilt from the artifacts.

use super::*;

/// A leaderboard row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// 1-based rank.
    pub rank: usize,
    /// The signal.
    pub signal: String,
    /// Its generation: 0 for the plan's seeds, g for the g-th the strategist proposed. Tables
    /// show the iteration that tried it, `generation + 1`, as progress and the lineage count.
    pub generation: usize,
    /// Its parents.
    pub parents: Vec<String>,
    /// Robust fitness.
    #[serde(with = "lim_backtest::nonfinite")]
    pub fitness: f64,
    /// Training metrics.
    pub train: Metrics,
    /// Validation metrics.
    pub validation: Metrics,
    /// Its closest baseline and their correlation over training and validation (see
    /// [`baseline_penalty`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closest_baseline: Option<(String, f64)>,
}

/// A strategy that ran but could not be scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    /// The signal.
    pub signal: String,
    /// Why it has no fitness.
    pub reason: String,
}

/// How the report names a part.
fn part_name(p: Part) -> &'static str {
    match p {
        Part::Train => "train",
        Part::Validation => "validation",
        Part::Test => "sealed test",
    }
}

/// The run's summary and its Markdown report, computed from its artifacts by today's code, so
/// a run journaled by older code (or one whose report step failed) reports by current rules.
///
/// # Errors
/// An artifact the report needs is missing or malformed.
pub fn summarize(
    artifacts: &Artifacts,
    config: &ResearchConfig,
    spent: Spent,
) -> Result<(Summary, String), NodeError> {
    let summary = Summary::from_artifacts(artifacts, config, spent)?;
    let report = summary.markdown();
    Ok((summary, report))
}

/// A run's artifacts as its journal leaves them: each name's latest value over the completed
/// node executions, in journal order (what the engine's state holds at the end of a run).
pub fn artifacts_of(records: &[crate::journal::Record]) -> Artifacts {
    let mut out = Artifacts::new();
    for r in records
        .iter()
        .filter(|r| r.kind == crate::journal::Kind::Node)
    {
        if let Some(Value::Object(o)) = r.body.get("outputs") {
            out.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    out
}

/// What a run found: the report's content as data (`--json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The plan.
    pub plan: ExperimentPlan,
    /// Who proposed strategies.
    pub strategist: String,
    /// Strategies tried.
    pub trials: usize,
    /// The ten best by robust fitness (scored strategies only).
    pub leaderboard: Vec<Entry>,
    /// Strategies that ran but had no evidence to score, with the reason.
    #[serde(default)]
    pub rejected: Vec<Rejected>,
    /// The finalists' validation and sealed test metrics.
    pub finalists: Vec<Finalist>,
    /// The baselines on the same bars (the first is what finalists are compared with).
    #[serde(default)]
    pub baselines: Vec<Baseline>,
    /// The finalists held together, equal risk, on validation and the sealed test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined: Option<Combined>,
    /// Deflated Sharpe ratio and PBO over every trial.
    pub multiple_testing: Option<MultipleTesting>,
    /// The critiques, iteration by iteration.
    pub lineage: Vec<Critique>,
    /// The leader's ancestry: the leader, its first parent, that one's first parent, ….
    pub ancestry: Vec<String>,
    /// The leaderboard's family tree: each leaderboard strategy and each of its ancestors by
    /// first parent, with that parent (`None` for a seed), in the order first met.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub family: Vec<(String, Option<String>)>,
    /// What the foundation model trained and which fields it added, when it was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foundation: Option<LabState>,
    /// Why the loop stopped.
    pub stop_reason: String,
    /// LLM spend.
    pub spent: Spent,
    /// What nodes noted on the way.
    pub notes: Vec<String>,
    /// What the agents did: replies, tool calls, replies that could not be used and why.
    #[serde(default)]
    pub agents: Vec<AgentActivity>,
    /// Each part's first and last bar, from the final evaluator's curves (none before the
    /// run reached it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub periods: Vec<Period>,
    /// Each finalist's (by its signal) and the combination's ([`COMBINED`]) test Sharpe ratio
    /// against always long's (equal weight), tested on the test's bars (from the final
    /// evaluator's curves; none before the run reached it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versus_always_long: Vec<SharpeTest>,
}

/// A difference beyond this many standard errors is unlikely to be chance (5 %, two-sided).
pub const SIGNIFICANT_Z: f64 = 1.96;

/// The tests of `books` (name and annualised test Sharpe) against `baseline`'s, from the test
/// part of `curves`.
fn test_against(curves: &Curves, baseline: &Baseline, books: &[(&str, f64)]) -> Vec<SharpeTest> {
    let Some(&(_, a, b)) = curves.parts.iter().find(|p| p.0 == Part::Test) else {
        return Vec::new();
    };
    let test = |name: &str| -> Option<Vec<f64>> {
        let c = curves.series.iter().find(|c| c.name == name)?;
        Some(
            c.net
                .get(a..b)?
                .iter()
                .map(|v| v.unwrap_or(f64::NAN))
                .collect(),
        )
    };
    let Some(base) = test(&baseline.name) else {
        return Vec::new();
    };
    books
        .iter()
        .filter_map(|&(name, sharpe)| {
            let d = lim_backtest::stats::sharpe_difference(&test(name)?, &base)?;
            Some(SharpeTest {
                strategy: name.to_string(),
                part: Part::Test,
                sharpe_difference: sharpe - baseline.test.sharpe,
                z: d.z,
            })
        })
        .collect()
}

/// The bars of one part of the split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Period {
    /// The part.
    pub part: Part,
    /// Its first bar.
    pub first: String,
    /// Its last bar.
    pub last: String,
}

impl Period {
    /// The parts of `curves`, in order; bars shown as dates for daily data, with their time
    /// otherwise (`frequency`, as the plan gives it; a time only where it is not midnight when
    /// unknown).
    fn of(curves: &Curves, frequency: &str) -> Vec<Period> {
        let show = |t: lim_market::Timestamp| {
            lim_market::Frequency::parse(frequency).map_or(t.to_string(), |f| t.display(f))
        };
        curves
            .parts
            .iter()
            .filter(|(_, a, b)| a < b && *b <= curves.times.len())
            .map(|&(part, a, b)| Period {
                part,
                first: show(curves.times[a]),
                last: show(curves.times[b - 1]),
            })
            .collect()
    }
}

impl Summary {
    /// The test of `name` (a finalist's signal, or [`COMBINED`]) against always long.
    pub fn versus(&self, name: &str) -> Option<&SharpeTest> {
        self.versus_always_long.iter().find(|t| t.strategy == name)
    }

    /// `+0.12 (0.4)`: the test Sharpe of `name` over always long's, and its z; `-` untested.
    pub fn versus_cell(&self, name: &str) -> String {
        self.versus(name).map_or("-".into(), |t| {
            format!("{:+.2} ({:.1})", t.sharpe_difference, t.z)
        })
    }

    /// `3 of 5 finalists beat the test Sharpe of always long, equal weight (0.50).`, when
    /// that baseline has a test Sharpe.
    pub fn finalists_versus_always_long(&self) -> Option<String> {
        let base = self
            .baselines
            .first()
            .filter(|b| b.test.sharpe.is_finite())?;
        let beat = self
            .finalists
            .iter()
            .filter(|f| f.test.sharpe > base.test.sharpe)
            .count();
        Some(format!(
            "{beat} of {} finalists beat the test Sharpe of {} ({:.2}).",
            self.finalists.len(),
            base.name,
            base.test.sharpe
        ))
    }

    /// How many finalists beat always long, and fell short of it, by more than chance; and
    /// the combination's z. Empty without the tests.
    pub fn beyond_chance(&self) -> String {
        let finalists: Vec<&SharpeTest> = self
            .versus_always_long
            .iter()
            .filter(|t| t.strategy != COMBINED)
            .collect();
        if finalists.is_empty() {
            return String::new();
        }
        let above = finalists.iter().filter(|t| t.z >= SIGNIFICANT_Z).count();
        let below = finalists.iter().filter(|t| t.z <= -SIGNIFICANT_Z).count();
        format!(
            " Beyond chance (|z| ≥ {SIGNIFICANT_Z}): {above} above it, {below} below{}.",
            self.versus(COMBINED)
                .map(|t| format!(
                    "; the combination {:+.2}, z {:.1}",
                    t.sharpe_difference, t.z
                ))
                .unwrap_or_default()
        )
    }

    /// The sealed test's first and last bar, once the run has read it.
    pub fn test_period(&self) -> Option<&Period> {
        self.periods.iter().find(|p| p.part == Part::Test)
    }

    /// The summary of a run from its artifacts (see [`summarize`]).
    ///
    /// # Errors
    /// An artifact the report needs is missing or malformed.
    pub fn from_artifacts(
        a: &Artifacts,
        config: &ResearchConfig,
        spent: Spent,
    ) -> Result<Summary, NodeError> {
        let get = |k: &str| a.get(k).cloned().unwrap_or(Value::Null);
        let de = |k: &str| -> Result<Value, NodeError> { Ok(get(k)) };
        let plan: ExperimentPlan = serde_json::from_value(de("plan")?)?;
        let mut trials: Vec<Trial> = serde_json::from_value(de("trials")?)?;
        trials.iter_mut().for_each(|t| t.score(&plan));
        let rejected = trials
            .iter()
            .filter_map(|t| {
                Some(Rejected {
                    signal: t.signal.clone(),
                    reason: t.rejected.clone()?,
                })
            })
            .collect();
        let lineage: Vec<Critique> = serde_json::from_value(get("lineage")).unwrap_or_default();
        let leaderboard = leaderboard(&trials)
            .into_iter()
            .filter_map(|i| {
                let t = &trials[i];
                Some((t, t.fitness?, t.train?, t.validation?))
            })
            .take(10)
            .enumerate()
            .map(|(k, (t, fitness, train, validation))| Entry {
                rank: k + 1,
                signal: t.signal.clone(),
                generation: t.generation,
                parents: t.parents.clone(),
                fitness,
                train,
                validation,
                closest_baseline: t.closest_baseline.clone(),
            })
            .collect();
        let mut ancestry: Vec<String> = Vec::new();
        if let Some(&lead) = self::leaderboard(&trials)
            .first()
            .filter(|&&i| trials[i].fitness.is_some())
        {
            let mut cur = Some(trials[lead].signal.clone());
            while let Some(sig) = cur.take() {
                if ancestry.contains(&sig) || ancestry.len() > 20 {
                    break;
                }
                cur = trials
                    .iter()
                    .find(|t| t.signal == sig)
                    .and_then(|t| t.parents.first().cloned());
                ancestry.push(sig);
            }
        }
        let mut family: Vec<(String, Option<String>)> = Vec::new();
        for e in &leaderboard {
            let e: &Entry = e;
            let mut cur = Some(e.signal.clone());
            while let Some(sig) = cur.take() {
                if family.iter().any(|(s, _)| *s == sig) || family.len() > 200 {
                    break;
                }
                let parent = trials
                    .iter()
                    .find(|t| t.signal == sig)
                    .and_then(|t| t.parents.first().cloned());
                family.push((sig, parent.clone()));
                cur = parent;
            }
        }
        let stop_reason = lineage
            .last()
            .and_then(|c| c.stop.clone())
            .unwrap_or_else(|| "the workflow's loop bound".into());
        let finalists: Vec<Finalist> = serde_json::from_value(get("finalists"))?;
        let baselines: Vec<Baseline> = serde_json::from_value(get("baselines")).unwrap_or_default();
        let combined: Option<Combined> =
            serde_json::from_value(get("combined")).unwrap_or_default();
        let curves = serde_json::from_value::<Curves>(get("curves")).ok();
        let versus_always_long = match (&curves, baselines.first()) {
            (Some(c), Some(base)) => {
                let books: Vec<(&str, f64)> = finalists
                    .iter()
                    .map(|f| (f.signal.as_str(), f.test.sharpe))
                    .chain(combined.as_ref().map(|c| (COMBINED, c.test.sharpe)))
                    .collect();
                test_against(c, base, &books)
            }
            _ => Vec::new(),
        };
        Ok(Summary {
            strategist: match &config.strategist {
                StrategistConfig::Offline => offline::DISCLAIMER.to_string(),
                StrategistConfig::Llm { model, base_url } => {
                    format!("LLM strategist: model {model} at {base_url}")
                }
            },
            trials: trials.len(),
            leaderboard,
            rejected,
            finalists,
            baselines,
            combined,
            multiple_testing: serde_json::from_value(get("deflated"))?,
            lineage,
            ancestry,
            family,
            foundation: a
                .get("foundation")
                .and_then(|f| serde_json::from_value::<LabState>(f.clone()).ok())
                .filter(|f| !f.trained.is_empty() || !f.fields.is_empty()),
            stop_reason,
            spent,
            notes: serde_json::from_value(get("notes")).unwrap_or_default(),
            agents: serde_json::from_value(get("agents")).unwrap_or_default(),
            periods: curves
                .as_ref()
                .map(|c| Period::of(c, &plan.frequency))
                .unwrap_or_default(),
            versus_always_long,
            plan,
        })
    }

    /// The report, in Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let p = &self.plan;
        let _ = writeln!(s, "# LIM research report\n");
        let _ = writeln!(s, "**Goal:** {}\n", p.strategy.goal);
        let _ = writeln!(s, "**Strategist:** {}\n", self.strategist);
        let _ = writeln!(s, "## Plan\n");
        let _ = writeln!(
            s,
            "- datasets: {} ({} instruments, {} bars)",
            p.strategy.datasets.join(", "),
            p.instruments,
            p.frequency
        );
        let _ = writeln!(
            s,
            "- family: {:?}; book: {}",
            p.strategy.family,
            serde_json::to_string(&p.strategy.portfolio).unwrap_or_default()
        );
        let _ = writeln!(s, "- horizon: {}", p.horizon);
        if !p.review.is_empty() {
            let _ = writeln!(s, "- checked: {}", p.review);
        }
        let _ = writeln!(s, "- splits: {}", p.splits);
        if !self.periods.is_empty() {
            let parts: Vec<String> = self
                .periods
                .iter()
                .map(|p| format!("{} {} to {}", part_name(p.part), p.first, p.last))
                .collect();
            let _ = writeln!(s, "- periods: {}", parts.join("; "));
        }
        let _ = writeln!(s, "- objective: {}", p.objective);
        for c in &p.constraints {
            let _ = writeln!(s, "- constraint: {c}");
        }
        let _ = writeln!(
            s,
            "- budget: {}; converged after {} iterations in a row without a better strategy",
            p.budgets.describe(),
            p.budgets.patience.saturating_sub(1)
        );
        let _ = writeln!(
            s,
            "\n## Stopped\n\n{} after {} strategies.\n",
            self.stop_reason, self.trials
        );
        if let Some(f) = &self.foundation {
            let _ = writeln!(
                s,
                "## Foundation model\n\nTraining spent about {:.1} of the run's {:.1} CPU-seconds (estimated from steps).\n",
                f.spent_cpu_seconds, f.budget_cpu_seconds
            );
            let _ = writeln!(
                s,
                "| model | CPU-seconds | holdout rank IC | holdout IC | holdout bars | steps run |\n|---|---|---|---|---|---|"
            );
            for t in &f.trained {
                let ft = t.finetuned.as_ref();
                let _ = writeln!(
                    s,
                    "| `{}` | {:.1} | {} | {} | {} | {} |",
                    t.model,
                    t.cpu_seconds,
                    ft.map(|x| format!("{:.4}", x.holdout_rank_ic))
                        .unwrap_or("–".into()),
                    ft.map(|x| format!("{:.4}", x.holdout_ic))
                        .unwrap_or("–".into()),
                    ft.map(|x| x.holdout_bars.to_string()).unwrap_or("–".into()),
                    ft.map(|x| x.steps_run.to_string()).unwrap_or("–".into()),
                );
            }
            let _ = writeln!(s);
            for field in &f.fields {
                let coverage: Vec<String> = field
                    .coverage
                    .iter()
                    .map(|(part, c)| format!("{part} {:.0}%", c * 100.0))
                    .collect();
                let _ = writeln!(
                    s,
                    "- Field `{}`: the out-of-sample predictions of `{}`, which learned from data up to {} (coverage: {}; {} predictions at or before the cutoff dropped). Why: {}",
                    field.name,
                    field.model,
                    field.cutoff,
                    coverage.join(", "),
                    field.dropped_in_sample,
                    field.why
                );
            }
            if f.fields.is_empty() {
                let _ = writeln!(s, "- No model's predictions became a field.");
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "## Leaderboard (train and validation only)\n");
        let _ = writeln!(
            s,
            "| # | iter | fitness | train Sharpe | valid Sharpe | valid return | valid max DD | valid turnover | signal |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for e in &self.leaderboard {
            let v = &e.validation;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | `{}` |",
                e.rank,
                e.generation + 1,
                show(e.fitness, 2, "none"),
                cell(&e.train, e.train.sharpe, 2, 1.0, ""),
                cell(v, v.sharpe, 2, 1.0, ""),
                cell(v, v.ann_return, 1, 100.0, "%"),
                cell(v, v.max_dd, 1, 100.0, "%"),
                cell(v, v.turnover, 3, 1.0, ""),
                e.signal
            );
        }
        if self.leaderboard.is_empty() {
            let _ = writeln!(
                s,
                "| – | – | – | – | – | – | – | – | no strategy had enough active bars in both parts to be scored |"
            );
        }
        let per_unit = self.plan.baseline_penalty;
        let found_again: Vec<(&Entry, &str, f64)> = self
            .leaderboard
            .iter()
            .filter_map(|e| {
                let (name, c) = e.closest_baseline.as_ref()?;
                (c.abs() > MAX_BASELINE_CORRELATION).then_some((e, name.as_str(), *c))
            })
            .collect();
        if !found_again.is_empty() {
            let _ = writeln!(
                s,
                "\nBaselines found again (correlation beyond {MAX_BASELINE_CORRELATION} over training and validation: nothing the baselines do not already hold){}:\n",
                if per_unit > 0.0 {
                    format!("; the fitness pays {per_unit} per unit of correlation beyond it")
                } else {
                    String::new()
                }
            );
            for (e, name, c) in found_again {
                let paid = baseline_penalty(per_unit, e.closest_baseline.as_ref());
                let _ = writeln!(
                    s,
                    "- #{} `{}` is {name}{} (correlation {c:.2}){}",
                    e.rank,
                    e.signal,
                    if c < 0.0 { " reversed" } else { "" },
                    if paid > 0.0 {
                        format!(": fitness −{paid:.2}")
                    } else {
                        String::new()
                    }
                );
            }
        }
        if !self.rejected.is_empty() {
            let _ = writeln!(
                s,
                "\n{} strategies ran but had no evidence to score; they rank below every scored one:\n",
                self.rejected.len()
            );
            for r in self.rejected.iter().take(10) {
                let _ = writeln!(s, "- `{}`: {}", r.signal, r.reason);
            }
            if self.rejected.len() > 10 {
                let _ = writeln!(s, "- … and {} more", self.rejected.len() - 10);
            }
        }
        let _ = writeln!(
            s,
            "\n## Sealed test period{} (evaluated once, on the finalists)\n",
            self.test_period()
                .map(|p| format!(", {} to {}", p.first, p.last))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "Finalists are taken down the leaderboard, skipping a strategy whose training and validation returns correlate above {} with a finalist already taken (the two are one bet).\n",
            super::finalize::MAX_FINALIST_CORRELATION
        );
        let _ = writeln!(
            s,
            "| valid Sharpe | test Sharpe | Sharpe over always long (z) | test return | excess over always long | IR | corr | beta | test max DD | test rank IC | signal |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        for f in &self.finalists {
            let (v, t) = (&f.validation, &f.test);
            let vs = f.vs_always_long;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | `{}` |",
                cell(v, v.sharpe, 2, 1.0, ""),
                cell(t, t.sharpe, 2, 1.0, ""),
                self.versus_cell(&f.signal),
                cell(t, t.ann_return, 1, 100.0, "%"),
                vs.map_or("-".into(), |x| cell(t, x.excess_return, 1, 100.0, "%")),
                vs.map_or("-".into(), |x| show(x.information_ratio, 2, "-")),
                vs.map_or("-".into(), |x| show(x.co_move.correlation, 2, "-")),
                vs.map_or("-".into(), |x| show(x.co_move.beta, 2, "-")),
                cell(t, t.max_dd, 1, 100.0, "%"),
                cell(t, t.rank_ic, 4, 1.0, ""),
                f.signal
            );
        }
        if let Some(c) = &self.combined {
            let (v, t) = (&c.validation, &c.test);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | - | - | - | - | {} | - | the finalists combined, equal risk ({}) |",
                cell(v, v.sharpe, 2, 1.0, ""),
                cell(t, t.sharpe, 2, 1.0, ""),
                self.versus_cell(COMBINED),
                cell(t, t.ann_return, 1, 100.0, "%"),
                cell(t, t.max_dd, 1, 100.0, "%"),
                c.weights
                    .iter()
                    .map(|w| format!("{:.0}%", w * 100.0))
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
        }
        if !self.finalists.is_empty() {
            let _ = writeln!(
                s,
                "\nThe finalists' signals against the next bar's returns (Qlib's columns; IR per bar, not annualised):\n"
            );
            let _ = writeln!(
                s,
                "| valid IC | valid rank IC | test IC | test ICIR | test rank IC | test rank ICIR | signal |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|---|");
            for f in &self.finalists {
                let (v, t) = (&f.validation, &f.test);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | `{}` |",
                    cell(v, v.ic, 4, 1.0, ""),
                    cell(v, v.rank_ic, 4, 1.0, ""),
                    cell(t, t.ic, 4, 1.0, ""),
                    cell(t, t.icir, 3, 1.0, ""),
                    cell(t, t.rank_ic, 4, 1.0, ""),
                    cell(t, t.rank_icir, 3, 1.0, ""),
                    f.signal
                );
            }
        }
        if !self.baselines.is_empty() {
            let _ = writeln!(
                s,
                "\nBaselines on the same bars, with the same costs and lag (not selected, so reading their test costs nothing):\n"
            );
            let _ = writeln!(
                s,
                "| baseline | valid Sharpe | test Sharpe | test return | test max DD | signal |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|");
            for b in &self.baselines {
                let (v, t) = (&b.validation, &b.test);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | `{}` |",
                    b.name,
                    cell(v, v.sharpe, 2, 1.0, ""),
                    cell(t, t.sharpe, 2, 1.0, ""),
                    cell(t, t.ann_return, 1, 100.0, "%"),
                    cell(t, t.max_dd, 1, 100.0, "%"),
                    b.signal
                );
            }
            if let Some(line) = self.finalists_versus_always_long() {
                let _ = writeln!(s, "\n{line}{}", self.beyond_chance());
                if !self.versus_always_long.is_empty() {
                    let _ = writeln!(
                        s,
                        "\nz is the difference of the per-bar Sharpe ratios over its standard error (Jobson and Korkie's test with Memmel's correction, on the test's bars where both traded; it assumes independent, normal returns, so fat tails make it too confident)."
                    );
                }
            }
        }
        for f in &self.finalists {
            if let Some(said) = f.rediscovered() {
                let _ = writeln!(s, "\n`{}` {said}", f.signal);
            }
        }
        for f in &self.finalists {
            if let Some(r) = self.rejected.iter().find(|r| r.signal == f.signal) {
                let _ = writeln!(
                    s,
                    "\n`{}` was made a finalist by the rules this run was recorded with; today's rank it last ({}).",
                    f.signal, r.reason
                );
            }
        }
        let _ = writeln!(s, "\n## Multiple testing over all {} trials\n", self.trials);
        match &self.multiple_testing {
            Some(m) => {
                let _ = writeln!(
                    s,
                    "- best validation Sharpe {}; deflated Sharpe ratio {} (probability that its true Sharpe is above zero, given {} trials)",
                    show(m.best_validation_sharpe, 2, "undefined"),
                    show(m.deflated.dsr, 3, "undefined"),
                    m.trials
                );
                let _ = writeln!(
                    s,
                    "- the best of {} tries at zero true skill would show a Sharpe of about {}",
                    m.trials,
                    show(m.luck_sharpe(), 2, "undefined")
                );
                match m.pbo {
                    Some(pbo) => {
                        let _ =
                            writeln!(s, "- probability of backtest overfitting (CSCV): {pbo:.2}");
                    }
                    None => {
                        let _ = writeln!(
                            s,
                            "- probability of backtest overfitting: not computed (too few trials or bars)"
                        );
                    }
                }
                if m.deflated.dsr.is_nan() || m.deflated.dsr < 0.95 {
                    let _ = writeln!(
                        s,
                        "- **the best validation result is not significant after deflation: treat it as luck until shown otherwise**"
                    );
                }
            }
            None => {
                let _ = writeln!(s, "- fewer than two strategies ran; no statistics");
            }
        }
        let _ = writeln!(s, "\n## Hypothesis lineage\n");
        if !self.ancestry.is_empty() {
            let _ = writeln!(s, "The leader descends from (newest first):\n");
            for (k, a) in self.ancestry.iter().enumerate() {
                let _ = writeln!(s, "{}`{a}`", "  ".repeat(k) + "- ");
            }
            s.push('\n');
        }
        for c in &self.lineage {
            let _ = writeln!(s, "{}. {}", c.iteration, c.diagnosis);
            for h in &c.hypotheses {
                let _ = writeln!(s, "   - next: {h}");
            }
        }
        let _ = writeln!(
            s,
            "\n## Cost\n\n{} LLM calls, {} tokens, ${:.4}.\n",
            self.spent.calls, self.spent.tokens, self.spent.usd
        );
        if !self.agents.is_empty() {
            let _ = writeln!(s, "## Agents\n");
            let _ = writeln!(
                s,
                "| node | protocol | replies | tool calls | failed calls | unusable replies | answered | tokens |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
            for a in &self.agents {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    a.exec,
                    match a.protocol {
                        Protocol::Json => "JSON",
                        _ => "native",
                    },
                    a.replies,
                    if a.tool_calls.is_empty() {
                        "none".to_string()
                    } else {
                        a.tool_calls.join(", ")
                    },
                    a.failed_tool_calls,
                    a.rejected_replies.len(),
                    if a.answered { "yes" } else { "no" },
                    a.tokens
                );
            }
            let rejected: Vec<&String> = self
                .agents
                .iter()
                .flat_map(|a| &a.rejected_replies)
                .collect();
            if !rejected.is_empty() {
                let _ = writeln!(
                    s,
                    "\n{} of {} replies could not be used:\n",
                    rejected.len(),
                    self.agents.iter().map(|a| a.replies).sum::<u32>()
                );
                for r in rejected.iter().take(12) {
                    let _ = writeln!(s, "- {}", r.replace('\n', " "));
                }
                if rejected.len() > 12 {
                    let _ = writeln!(s, "- … and {} more", rejected.len() - 12);
                }
            }
            s.push('\n');
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "## Notes\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
            s.push('\n');
        }
        let _ = writeln!(s, "## Caveats\n");
        let _ = writeln!(
            s,
            "- Costs of {} bps per unit turnover are in every number above; slippage beyond that is not modelled.",
            p.strategy.cost_bps
        );
        let _ = writeln!(
            s,
            "- Futures series are stitched across rolls (back-adjusted returns); equities data may carry survivorship bias (see docs/data.md)."
        );
        let _ = writeln!(
            s,
            "- The test period was read once, by the final evaluator, after the search had ended; no feedback the strategist saw came from it."
        );
        s
    }
}

/// A metric of a part for the report: "no trades" when the part had no active bar, otherwise
/// `v × scale` with `places` decimals and `unit` (or `n/a`, `∞`).
fn cell(m: &Metrics, v: f64, places: usize, scale: f64, unit: &str) -> String {
    if m.bars == 0 {
        "no trades".into()
    } else if v.is_finite() {
        format!("{:.places$}{unit}", v * scale)
    } else {
        show(v, places, "n/a")
    }
}

/// What a finished run adds to the research memory: its leaderboard (scored strategies, with
/// the finalists' test Sharpe) and its critic's last diagnosis.
pub fn findings_of(run: &str, s: &Summary) -> Vec<lim_tools::Finding> {
    let conclusion = s
        .lineage
        .last()
        .map(|c| c.diagnosis.clone())
        .unwrap_or_default();
    s.leaderboard
        .iter()
        .map(|e| lim_tools::Finding {
            datasets: s.plan.strategy.datasets.join("+"),
            frequency: s.plan.frequency.clone(),
            run: run.to_string(),
            goal: s.plan.strategy.goal.clone(),
            signal: e.signal.clone(),
            train_sharpe: e.train.sharpe,
            validation_sharpe: e.validation.sharpe,
            fitness: Some(e.fitness).filter(|f| f.is_finite()),
            test_sharpe: s
                .finalists
                .iter()
                .find(|f| f.signal == e.signal)
                .map(|f| f.test.sharpe)
                .filter(|v| v.is_finite()),
            conclusion: conclusion.clone(),
            data_end: s.periods.last().map(|p| p.last.clone()),
            validation_end: s
                .periods
                .iter()
                .find(|p| p.part == Part::Validation)
                .map(|p| p.last.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part of hourly data that begins at midnight is dated with its time, as every other
    /// hourly bar is; daily data is dated by day.
    #[test]
    fn periods_show_bars_as_the_data_frequency_does() {
        let midnight = lim_market::Timestamp::from_ymd(2024, 1, 1);
        let curves = Curves {
            times: (0..4)
                .map(|h| lim_market::Timestamp(midnight.0 + 3600 * h))
                .collect(),
            parts: vec![(Part::Train, 0, 2), (Part::Test, 2, 4)],
            series: Vec::new(),
            ic_decay: Vec::new(),
        };
        let hourly = Period::of(&curves, "1h");
        assert_eq!(hourly[0].first, "2024-01-01T00:00:00Z");
        assert_eq!(hourly[1].last, "2024-01-01T03:00:00Z");
        let daily = Period::of(&curves, "1d");
        assert_eq!(
            (daily[0].first.as_str(), daily[1].first.as_str()),
            ("2024-01-01", "2024-01-01")
        );
    }
}
