//! The strategy loop: generate, backtest, critique.

use super::*;

pub(super) struct Generate<L> {
    pub(super) services: Services<L>,
    pub(super) config: ResearchConfig,
    /// The universe, for the strategist's exploratory backtests (train and validation only).
    pub(super) universe: Arc<Universe>,
    /// The endpoint's tool-calling protocol.
    pub(super) protocol: Arc<ProtocolMemo>,
}

/// The trial of strategy `i` of a `backtest` tool result (`report`, whose strategy `i` is
/// `res`), proposed as `c`, not yet scored.
fn trial_of(report: &Value, i: usize, res: &Value, c: &Candidate) -> Trial {
    let metric = |part: &str| -> Option<Metrics> {
        res.get("metrics")?
            .as_array()?
            .iter()
            .find(|m| m.get(0).and_then(Value::as_str) == Some(part))
            .and_then(|m| serde_json::from_value(m.get(1)?.clone()).ok())
    };
    Trial {
        signal: c.signal.clone(),
        generation: c.generation,
        parents: c.parents.clone(),
        fitness: None,
        train: metric("train"),
        validation: metric("validation"),
        error: res.get("error").and_then(Value::as_str).map(String::from),
        rejected: None,
        always_long_correlation: report
            .pointer(&format!("/always_long/{i}/correlation"))
            .and_then(Value::as_f64),
        folds: res
            .get("selection_folds")
            .and_then(|f| serde_json::from_value(f.clone()).ok())
            .unwrap_or_default(),
        nodes: res
            .get("nodes")
            .and_then(Value::as_u64)
            .map_or(0, |n| n as usize),
        level_dependent: res
            .get("level_dependent")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        holding_changes_per_year: res.get("holding_changes_per_year").and_then(Value::as_f64),
        closest_baseline: report
            .pointer(&format!("/closest_baseline/{i}"))
            .and_then(|c| {
                Some((
                    c.get("baseline")?.as_str()?.to_string(),
                    c.get("correlation")?.as_f64()?,
                ))
            }),
    }
}

/// The run's judge for the strategist's own backtests: each strategy scored as the backtest
/// node scores a candidate, so the `leaderboard` tool ranks them as the run will.
#[derive(Debug)]
struct PlanScorer(ExperimentPlan);

impl lim_tools::Scorer for PlanScorer {
    fn score(&self, report: &lim_tools::BacktestReport) -> Vec<lim_tools::Verdict> {
        let Ok(v) = serde_json::to_value(report) else {
            return Vec::new();
        };
        report
            .strategies
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let c = Candidate {
                    signal: s.spec.signal.clone(),
                    generation: 0,
                    parents: Vec::new(),
                    fitness: None,
                };
                let mut t = trial_of(&v, i, &v["strategies"][i], &c);
                t.score(&self.0);
                lim_tools::Verdict {
                    fitness: t.fitness.filter(|f| f.is_finite()),
                    rejected: t.rejected.or(t.error),
                }
            })
            .collect()
    }
}

/// The run's trials as the agent-facing tools see them (those with metrics).
fn tool_trials(trials: &[Trial]) -> Vec<lim_tools::Trial> {
    trials
        .iter()
        .filter_map(|t| {
            Some(lim_tools::Trial {
                signal: t.signal.clone(),
                generation: t.generation,
                parents: t.parents.clone(),
                train: t.train?,
                validation: t.validation?,
                level_dependent: t.level_dependent,
                fitness: t.fitness.filter(|f| f.is_finite()),
                rejected: t.rejected.clone(),
            })
        })
        .collect()
}

/// An agent's ending without an answer, in words.
pub(super) fn describe<T>(o: &Outcome<T>, rejected: &[String]) -> String {
    let last = rejected.last().map(String::as_str).unwrap_or("none");
    match o {
        Outcome::Answer { .. } => "answered".into(),
        Outcome::StepLimit { .. } => {
            format!("no valid answer within its steps; last problem: {last}")
        }
        Outcome::TokenLimit { used } => format!("its token limit ({used} tokens)"),
        Outcome::DollarLimit { usd } => format!("the run's dollar budget (${usd:.4} in this loop)"),
        Outcome::TimeLimit { .. } => "the run's deadline".into(),
        Outcome::LlmFailed { message } => message.clone(),
    }
}

impl<L: LlmClient + 'static> Node for Generate<L> {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let plan: ExperimentPlan = cx.input("plan")?;
            let trials: Vec<Trial> = cx.optional("trials")?.unwrap_or_default();
            let critique: Option<Critique> = cx.optional("hypotheses")?;
            let generation = cx.visit as usize - 1;
            let cs = plan.cross_sectional();
            let history: Vec<Candidate> = trials
                .iter()
                .map(|t| Candidate {
                    signal: t.signal.clone(),
                    generation: t.generation,
                    parents: t.parents.clone(),
                    fitness: Some(t.fitness.unwrap_or(f64::NEG_INFINITY)),
                })
                .collect();
            let added = lab_fields(&cx)?;
            let mut evo = Evolution::resume(cx.seed, cs, history);
            for f in &added {
                evo.allow(f);
            }
            let session = self.universe.current();
            let tolerance = session.as_deref().and_then(super::gap_tolerance);
            evo.tolerate_gaps(tolerance);
            let mut note = None;
            let mut activity = None;
            let mut foundation = None;
            let proposals: Vec<(String, Vec<String>)> = if generation == 0 {
                let mut seeds = offline::seeds(plan.strategy.family, cs);
                for f in &added {
                    seeds.extend(if f == super::FORECAST_VOL {
                        // Low volatility ranks (the low-volatility anomaly); under a sign book a
                        // volatility is always positive: beta, not a signal, so no seed.
                        if cs {
                            vec![format!("rank(-{f})"), format!("rank(-ts_mean({f}, 5))")]
                        } else {
                            Vec::new()
                        }
                    } else if cs {
                        vec![format!("rank({f})"), format!("rank(ts_mean({f}, 5))")]
                    } else {
                        vec![
                            f.to_string(),
                            format!("ts_mean({f}, 5)"),
                            format!("ts_mean({f}, 20)"),
                        ]
                    });
                }
                seeds
                    .into_iter()
                    .map(|s| {
                        (
                            super::tolerant(session.as_deref(), &s, tolerance),
                            Vec::new(),
                        )
                    })
                    .collect()
            } else {
                match &self.config.strategist {
                    StrategistConfig::Offline => {
                        evo.propose(self.config.population, generation, cs)
                    }
                    StrategistConfig::Llm { model, .. } => {
                        let mut best: Vec<&Trial> = trials
                            .iter()
                            .filter(|t| t.fitness.is_some_and(f64::is_finite))
                            .collect();
                        best.sort_by(|a, b| {
                            b.fitness
                                .unwrap_or(f64::MIN)
                                .total_cmp(&a.fitness.unwrap_or(f64::MIN))
                        });
                        let tried: Vec<Tried> = best
                            .iter()
                            .take(8)
                            .filter_map(|t| {
                                Some(Tried {
                                    signal: t.signal.clone(),
                                    train_sharpe: t.train?.sharpe,
                                    validation_sharpe: t.validation?.sharpe,
                                })
                            })
                            .collect();
                        let text = critique
                            .as_ref()
                            .map(|c| format!("{} Next: {}", c.diagnosis, c.hypotheses.join("; ")));
                        let llm = JournaledLlm::new(
                            self.services.llm.clone(),
                            cx.journal.clone(),
                            &cx.exec,
                        );
                        // The strategist agent works on the run's real state: the trials
                        // so far (journaled artifacts) and the universe; what it backtests
                        // while it works is recorded in this log.
                        let known = tool_trials(&trials);
                        let before = known.len();
                        let log = Arc::new(ResearchLog::with_trials(known));
                        let mut registry = Registry::default()
                            .with(BacktestTool {
                                universe: self.universe.clone(),
                                log: log.clone(),
                                remote: self.services.remote_backtests.clone(),
                                scorer: Some(Arc::new(PlanScorer(plan.clone()))),
                            })
                            .with(Leaderboard { log: log.clone() })
                            .with(Lineage { log: log.clone() })
                            .with(past_findings(
                                &self.services,
                                &cx,
                                &self.config,
                                self.universe.current().as_deref(),
                            ));
                        // The foundation model, when the build has one and the budget is not
                        // spent: the strategist decides whether a forecast is worth training.
                        let state = lab_state(&cx, &self.config)?;
                        let remaining = state.budget_cpu_seconds - state.spent_cpu_seconds;
                        let lab = match &self.services.foundation {
                            Some(m) if remaining > 0.0 => {
                                Some(Arc::new(Lab::new(m.clone(), self.universe.clone(), state)))
                            }
                            _ => None,
                        };
                        if let Some(lab) = &lab {
                            registry = lab_tools(registry, lab);
                        }
                        let lab_fields_now = {
                            let lab = lab.clone();
                            move || {
                                lab.as_ref()
                                    .map(|l| l.state().fields.into_iter().map(|f| f.name).collect())
                                    .unwrap_or_default()
                            }
                        };
                        let tools = JournaledTools::new(registry, cx.journal.clone(), &cx.exec);
                        let fields = plan.fields(&added);
                        let run = strategist::propose_agent(
                            &llm,
                            &tools,
                            &self.protocol,
                            ProposeInput {
                                model,
                                plan: &plan.strategy,
                                fields: &fields,
                                leaderboard: &tried,
                                critique: text.as_deref(),
                                count: self.config.population,
                                foundation: lab.as_ref().map(|_| FoundationOffer {
                                    remaining_cpu_seconds: remaining,
                                    fields: &lab_fields_now,
                                }),
                                calendar_gaps: tolerance
                                    .and(session.as_deref())
                                    .map(|s| s.calendar_gaps() * 100.0),
                            },
                            agent_limits(
                                &self.config,
                                &cx,
                                &Arc::new(JournaledClock::new(
                                    self.services.clock.clone(),
                                    cx.journal.clone(),
                                    &cx.exec,
                                )),
                                6,
                                2_000,
                            )?,
                        )
                        .await?;
                        // Every strategy the agent saw backtested is a candidate, and so a
                        // trial of the run: the deflated statistics count it.
                        let explored: Vec<String> = log
                            .trials()
                            .into_iter()
                            .skip(before)
                            .map(|t| t.signal)
                            .collect();
                        activity = Some(agents_with(&cx, &run)?);
                        if let Some(lab) = &lab {
                            let state = lab.state();
                            for f in &state.fields {
                                evo.allow(&f.name);
                            }
                            foundation = Some(to_value(&state)?);
                        }
                        let mut proposals: Vec<(String, Vec<String>)> = Vec::new();
                        match run.outcome {
                            Outcome::Answer { value } => proposals.extend(
                                value.strategies.into_iter().map(|s| (s.signal, Vec::new())),
                            ),
                            other => {
                                note = Some(format!(
                                    "the LLM proposed no valid strategy: {}",
                                    describe(&other, &run.rejected_replies)
                                ));
                            }
                        }
                        if !explored.is_empty() {
                            let n = explored.len();
                            proposals.extend(explored.into_iter().map(|s| (s, Vec::new())));
                            let why = format!(
                                "the strategist backtested {n} {} while it worked; {} as a trial",
                                if n == 1 { "strategy" } else { "strategies" },
                                if n == 1 { "it counts" } else { "each counts" }
                            );
                            note = Some(match note {
                                Some(n) => format!("{n}; {why}"),
                                None => why,
                            });
                        }
                        proposals
                    }
                }
            };
            let added = evo.add(proposals, generation);
            let candidates: Vec<Candidate> =
                added.iter().map(|&i| evo.history[i].clone()).collect();
            let mut outputs = vec![
                ("candidates", to_value(&candidates)?),
                ("notes", notes_with(&cx, note)?),
            ];
            outputs.extend(activity.map(|a| ("agents", a)));
            outputs.extend(foundation.map(|f| ("foundation", f)));
            Ok(out(outputs))
        })
    }

    fn restore(&self, _cx: Cx, outputs: &Artifacts) -> BoxFuture<'_, Result<(), NodeError>> {
        let r = restore_lab(self.services.foundation.as_ref(), &self.universe, outputs);
        Box::pin(async move { r })
    }
}

pub(super) struct Backtest {
    pub(super) universe: Arc<Universe>,
    pub(super) remote: Option<Arc<dyn lim_tools::RemoteBacktests>>,
}

impl Node for Backtest {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let plan: ExperimentPlan = cx.input("plan")?;
            let candidates: Vec<Candidate> = cx.input("candidates")?;
            let mut trials: Vec<Trial> = cx.optional("trials")?.unwrap_or_default();
            let mut note = None;
            if !candidates.is_empty() {
                let registry = Registry::default().with(BacktestTool {
                    universe: self.universe.clone(),
                    log: Arc::new(ResearchLog::default()),
                    remote: self.remote.clone(),
                    scorer: None,
                });
                let tools = JournaledTools::new(registry, cx.journal.clone(), &cx.exec);
                let specs: Vec<StrategySpec> = candidates
                    .iter()
                    .map(|c| offline::spec_for(&plan.strategy, &c.signal))
                    .collect();
                let r = tools
                    .call("backtest", &json!({ "strategies": specs }))
                    .await?;
                let results = r.pointer("/result/strategies").and_then(Value::as_array);
                match results {
                    Some(results) => {
                        for (i, (c, res)) in candidates.iter().zip(results).enumerate() {
                            let mut trial = trial_of(&r["result"], i, res, c);
                            trial.score(&plan);
                            trials.push(trial);
                        }
                    }
                    None => {
                        let why = crate::trace::field(&r, "/message");
                        note = Some(format!("the backtest tool refused the round: {why}"));
                        trials.extend(candidates.iter().map(|c| Trial {
                            signal: c.signal.clone(),
                            generation: c.generation,
                            parents: c.parents.clone(),
                            fitness: None,
                            train: None,
                            validation: None,
                            error: Some(why.clone()),
                            rejected: None,
                            always_long_correlation: None,
                            folds: Vec::new(),
                            nodes: 0,
                            level_dependent: false,
                            closest_baseline: None,
                            holding_changes_per_year: None,
                        }));
                    }
                }
            }
            Ok(out(vec![
                ("trials", to_value(&trials)?),
                ("notes", notes_with(&cx, note)?),
            ]))
        })
    }
}

pub(super) struct CritiqueNode<L> {
    pub(super) services: Services<L>,
    pub(super) config: ResearchConfig,
    /// The universe, for the critic's diagnostics (train and validation only).
    pub(super) universe: Arc<Universe>,
    /// The endpoint's tool-calling protocol.
    pub(super) protocol: Arc<ProtocolMemo>,
}

fn best(trials: &[Trial]) -> Option<(usize, f64)> {
    trials
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.fitness.filter(|f| f.is_finite()).map(|f| (i, f)))
        .fold(None, |acc: Option<(usize, f64)>, (i, f)| match acc {
            Some((_, g)) if g >= f => acc,
            _ => Some((i, f)),
        })
}

impl<L: LlmClient + 'static> Node for CritiqueNode<L> {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let trials: Vec<Trial> = cx.input("trials")?;
            let candidates: Vec<Candidate> = cx.input("candidates")?;
            let mut activity = None;
            let started: i64 = cx.input("started_ms")?;
            // One journaled clock for the node: the agent's deadline checks, then the stop rule.
            let clock = Arc::new(JournaledClock::new(
                self.services.clock.clone(),
                cx.journal.clone(),
                &cx.exec,
            ));
            let mut lineage: Vec<Critique> = cx.optional("lineage")?.unwrap_or_default();
            let iteration = cx.visit;
            let generation = iteration as usize - 1;
            let round: Vec<&Trial> = trials
                .iter()
                .filter(|t| t.generation == generation)
                .collect();
            let (best_i, best_f) = best(&trials).unwrap_or((0, f64::NEG_INFINITY));
            let best_signal = trials
                .get(best_i)
                .map(|t| t.signal.clone())
                .unwrap_or_default();
            let gaps: Vec<f64> = round
                .iter()
                .filter_map(|t| Some(t.train?.sharpe - t.validation?.sharpe))
                .filter(|g| g.is_finite())
                .collect();
            let gap = if gaps.is_empty() {
                f64::NAN
            } else {
                gaps.iter().sum::<f64>() / gaps.len() as f64
            };
            let round_best = best(&round.iter().map(|t| (*t).clone()).collect::<Vec<_>>());
            let mut diagnosis = format!(
                "iteration {iteration}: {} new strategies, {} failed to run, {} without evidence; best robust Sharpe so far {}; mean train−validation Sharpe gap this round {}",
                round.len(),
                round.iter().filter(|t| t.error.is_some()).count(),
                round.iter().filter(|t| t.rejected.is_some()).count(),
                show(best_f, 2, "none yet"),
                show(gap, 2, "unknown (no strategy traded in both parts)"),
            );
            if gap > 0.5 {
                diagnosis.push_str(" (large: in-sample fit that does not carry over)");
            }
            let mut hypotheses = vec![
                format!("vary the lookbacks and smoothing of the leader, {best_signal}"),
                "combine the leader with a signal of another family to diversify".into(),
            ];
            if let StrategistConfig::Llm { model, .. } = &self.config.strategist {
                let results: Vec<Value> = round
                    .iter()
                    .filter(|t| t.fitness.is_some())
                    .filter_map(|t| {
                        let (tr, v) = (t.train?, t.validation?);
                        Some(json!({"signal": t.signal, "train_sharpe": tr.sharpe, "train_dd": tr.max_dd,
                            "validation_sharpe": v.sharpe, "validation_dd": v.max_dd, "turnover": v.turnover, "rank_ic": v.rank_ic}))
                    })
                    .collect();
                // Without a universe no strategy has run, and the statistic is undefined anyway.
                let periods = self.universe.current().map_or(252.0, |s| s.periods());
                let dsr = approximate_dsr(&trials, periods);
                let ctx = json!({"results": results, "trials": trials.len(), "best": best_signal,
                    "dsr": dsr.is_finite().then_some(dsr)});
                let llm =
                    JournaledLlm::new(self.services.llm.clone(), cx.journal.clone(), &cx.exec);
                let log = Arc::new(ResearchLog::with_trials(tool_trials(&trials)));
                let registry = Registry::default()
                    .with(Diagnose {
                        universe: self.universe.clone(),
                        log: log.clone(),
                    })
                    .with(Leaderboard { log: log.clone() })
                    .with(Lineage { log })
                    .with(past_findings(
                        &self.services,
                        &cx,
                        &self.config,
                        self.universe.current().as_deref(),
                    ));
                let tools = JournaledTools::new(registry, cx.journal.clone(), &cx.exec);
                let run = strategist::critique_agent(
                    &llm,
                    &tools,
                    &self.protocol,
                    model,
                    &ctx,
                    agent_limits(&self.config, &cx, &clock, 5, 800)?,
                )
                .await?;
                activity = Some(agents_with(&cx, &run)?);
                match run.outcome {
                    Outcome::Answer { value } => {
                        diagnosis = format!("{} ({diagnosis})", value.diagnosis);
                        hypotheses = value.hypotheses;
                    }
                    other => diagnosis.push_str(&format!(
                        "; the LLM critique failed: {}",
                        describe(&other, &run.rejected_replies)
                    )),
                }
            }
            let budget = self.config.llm_budget();
            let spent = cx.spent(&budget);
            let b = &self.config.budgets;
            let now = clock.now_ms()?;
            let improved_recently = round_best.is_some_and(|(_, f)| f >= best_f)
                || lineage
                    .iter()
                    .rev()
                    .take(b.patience.saturating_sub(1) as usize)
                    .any(|c| c.best_fitness < best_f);
            // Budgets first: an agent cut short by one proposes nothing, and the budget is why.
            let stop = if iteration >= b.max_iterations {
                Some(format!(
                    "iteration budget reached ({} iterations)",
                    b.max_iterations
                ))
            } else if b.max_tokens.is_some_and(|m| spent.tokens >= m) {
                Some(format!("token budget spent ({} tokens)", spent.tokens))
            } else if b.max_usd.is_some_and(|m| spent.usd >= m) {
                Some(format!("dollar budget spent (${:.4})", spent.usd))
            } else if b
                .deadline_minutes
                .is_some_and(|m| (now - started) as f64 >= m * 60_000.0)
            {
                Some("deadline reached".to_string())
            } else if candidates.is_empty() && iteration > 1 {
                Some("the strategist proposed nothing new".to_string())
            } else if iteration > b.patience && !improved_recently {
                // The iteration that found the best is one of the `patience` counted.
                Some(format!(
                    "converged: no better strategy in the last {} iterations",
                    b.patience.saturating_sub(1)
                ))
            } else {
                None
            };
            let c = Critique {
                iteration,
                diagnosis,
                hypotheses,
                stop,
                best_fitness: best_f,
                best_signal,
                trials: trials.len(),
                spent,
            };
            lineage.push(c.clone());
            let mut outputs = vec![
                ("hypotheses", to_value(&c)?),
                ("lineage", to_value(&lineage)?),
            ];
            outputs.extend(activity.map(|a| ("agents", a)));
            Ok(out(outputs))
        })
    }
}
