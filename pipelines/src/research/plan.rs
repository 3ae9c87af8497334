//! The first nodes: the run's start (its clock) and the plan (the keyword planner, or the
//! planning agent, checked by [`crate::plan_check`]).

use super::*;

pub(super) struct Start<L>(pub(super) Services<L>);

impl<L: LlmClient + 'static> Node for Start<L> {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let clock = JournaledClock::new(self.0.clock.clone(), cx.journal.clone(), &cx.exec);
            let started = clock.now_ms()?;
            Ok(out(vec![
                ("goal", cx.input::<Value>("goal")?),
                ("started_ms", Value::from(started)),
            ]))
        })
    }
}

pub(super) struct PlanNode<L> {
    pub(super) services: Services<L>,
    pub(super) config: ResearchConfig,
    /// The endpoint's tool-calling protocol, found by the first agent and kept for the run.
    pub(super) protocol: Arc<ProtocolMemo>,
}

impl<L: LlmClient + 'static> Node for PlanNode<L> {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let goal: String = cx.input("goal")?;
            let metas = self.services.market.datasets()?;
            let available: Vec<String> = metas.iter().map(|d| d.name.clone()).collect();
            let mut keyword = offline::plan(&goal, &available);
            plan_check::size_book(&mut keyword, &metas);
            let market = Arc::new(JournaledMarket::new(
                self.services.market.clone(),
                cx.journal.clone(),
                &cx.exec,
            ));
            let c = &self.config;
            let check = |p: &Plan| {
                plan_check::check(
                    p,
                    &goal,
                    &metas,
                    market.as_ref(),
                    &c.universe_args(Vec::new()),
                )
            };
            // The planning agent: it may look at the data before it commits; what it gave, or
            // why nothing it gave passed.
            let mut asked = None;
            let mut model_wants_forecast = false;
            let mut activity = None;
            if let StrategistConfig::Llm { model, .. } = &self.config.strategist {
                let llm =
                    JournaledLlm::new(self.services.llm.clone(), cx.journal.clone(), &cx.exec);
                let data: Arc<dyn MarketData> = market.clone();
                // The agent sees the data only up to where the run's data ends.
                let end = lim_tools::DataEnd::of(c.as_of.as_deref(), c.earlier);
                let registry = Registry::default()
                    .with(ListDatasets {
                        market: data.clone(),
                        end,
                    })
                    .with(DescribeDataset { market: data, end })
                    .with(past_findings(&self.services, &cx, c, None));
                let tools = JournaledTools::new(registry, cx.journal.clone(), &cx.exec);
                let run = strategist::plan_agent(
                    &llm,
                    &tools,
                    &self.protocol,
                    model,
                    &goal,
                    &keyword,
                    &available,
                    |p| check(p).map_err(|e| e.to_string()),
                )
                .await?;
                let protocol = match run.protocol {
                    Protocol::Json => "the JSON protocol (the server ignores tools)",
                    _ => "native function calling",
                };
                let looked = if run.calls.is_empty() {
                    format!("without looking at the data, over {protocol}")
                } else {
                    format!(
                        "after {} tool calls over {protocol} ({})",
                        run.calls.len(),
                        run.calls
                            .iter()
                            .map(|c| c.tool.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                activity = Some(agents_with(&cx, &run)?);
                asked = Some(match run.outcome {
                    Outcome::Answer { value } => Ok((value, looked, run.steps)),
                    Outcome::StepLimit { last_problem } => Err(format!(
                        "{} replies without a valid plan; last problem: {}",
                        run.steps,
                        last_problem.unwrap_or_else(|| "none".into())
                    )),
                    Outcome::TokenLimit { used } => Err(format!("token limit ({used} tokens)")),
                    Outcome::DollarLimit { usd } => Err(format!("dollar limit (${usd:.4})")),
                    Outcome::TimeLimit { .. } => Err("the run's deadline".into()),
                    Outcome::LlmFailed { message } => Err(message),
                });
            }
            let (plan, review, note) = match asked {
                Some(Ok((choice, looked, steps))) => {
                    model_wants_forecast = choice.foundation_model;
                    (
                        choice.plan,
                        format!(
                            "the model's plan passed every check (goal, limits, data), {looked}, in {steps} replies; {} the foundation model; why: {}",
                            if choice.foundation_model {
                                "it chose to train"
                            } else {
                                "it chose not to train"
                            },
                            choice.why
                        ),
                        None,
                    )
                }
                refused => {
                    let mut review = match &refused {
                        Some(Err(e)) => format!(
                            "the model gave no plan that passed the checks ({e}); the keyword plan stands"
                        ),
                        _ => "the keyword plan".to_string(),
                    };
                    let clean = match check(&keyword) {
                        Ok(()) => {
                            review.push_str(", which passed every check (goal, limits, data)");
                            refused.is_none()
                        }
                        Err(e) => {
                            review.push_str(&format!(", which does not pass every check: {e}"));
                            false
                        }
                    };
                    for default in offline::assumed(&goal) {
                        review.push_str("; ");
                        review.push_str(default);
                    }
                    let note = (!clean).then(|| review.clone());
                    (keyword, review, note)
                }
            };
            let chosen: Vec<_> = metas
                .iter()
                .filter(|m| plan.datasets.contains(&m.name))
                .collect();
            let frequency = chosen
                .first()
                .map(|m| m.frequency.to_string())
                .unwrap_or_default();
            let instruments = chosen.iter().map(|m| m.symbols.len()).sum();
            let mut constraints = vec![format!(
                "costs of {} bps per unit of turnover in every backtest",
                plan.cost_bps
            )];
            if let Some(dd) = plan.max_drawdown {
                constraints.push(format!(
                    "validation drawdown at most {:.0}% (penalised beyond)",
                    dd * 100.0
                ));
            }
            constraints.push("signals see bar t and trade at t+1 (no look-ahead)".into());
            // `--foundation` or the goal forces the model; otherwise the planning agent decides.
            let foundation_model = self.config.foundation
                || goal.to_lowercase().contains("foundation model")
                || model_wants_forecast;
            let horizon = match plan.portfolio {
                Portfolio::SignThreshold { .. } => {
                    "next-bar return; sign of the signal, volatility-targeted, rebalanced every 5 bars"
                }
                _ => "next-bar return; cross-sectional ranks, rebalanced every bar",
            };
            let ep = ExperimentPlan {
                frequency,
                instruments,
                horizon: horizon.into(),
                splits: format!(
                    "train {:.0}%, validation {:.0}%, sealed test {:.0}% of bars, embargo {} bars{}{}",
                    c.train * 100.0,
                    c.valid * 100.0,
                    (1.0 - c.train - c.valid) * 100.0,
                    c.embargo,
                    c.as_of
                        .as_ref()
                        .map(|t| format!(", of the data as of {t}"))
                        .unwrap_or_default(),
                    match c.earlier {
                        0 => String::new(),
                        1 => ", of the data before the whole history's sealed test".into(),
                        n => format!(
                            ", of the data before the whole history's sealed test, {n} periods back"
                        ),
                    }
                ),
                objective: objective(c.baseline_penalty),
                constraints,
                budgets: c.budgets.clone(),
                foundation_model,
                strategy: plan,
                review,
                baseline_penalty: c.baseline_penalty,
            };
            let mut outputs = vec![("plan", to_value(&ep)?), ("notes", notes_with(&cx, note)?)];
            outputs.extend(activity.map(|a| ("agents", a)));
            Ok(out(outputs))
        })
    }
}
