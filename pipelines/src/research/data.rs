//! The universe (`choose_universe`) and the foundation model's field (`forecast`).

use super::*;

fn universe_args(config: &ResearchConfig, plan: &ExperimentPlan) -> Value {
    to_value(&config.universe_args(plan.strategy.datasets.clone())).unwrap_or(Value::Null)
}

pub(super) struct DataNode {
    pub(super) market: Arc<dyn MarketData>,
    pub(super) universe: Arc<Universe>,
    pub(super) config: ResearchConfig,
}

impl Node for DataNode {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let plan: ExperimentPlan = cx.input("plan")?;
            let market = JournaledMarket::new(self.market.clone(), cx.journal.clone(), &cx.exec);
            let registry = Registry::default().with(ChooseUniverse {
                market: Arc::new(market),
                universe: self.universe.clone(),
            });
            let tools = JournaledTools::new(registry, cx.journal.clone(), &cx.exec);
            let r = tools
                .call("choose_universe", &universe_args(&self.config, &plan))
                .await?;
            match r.get("status").and_then(Value::as_str) {
                Some("done") => {
                    let universe = r.get("result").cloned().unwrap_or(Value::Null);
                    let same: Vec<lim_market::SameSeries> = universe
                        .get("same_series")
                        .cloned()
                        .map(serde_json::from_value)
                        .transpose()?
                        .unwrap_or_default();
                    let mut outputs = vec![("universe", universe)];
                    if !same.is_empty() {
                        let note = same
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ");
                        outputs.push(("notes", notes_with(&cx, Some(note))?));
                    }
                    Ok(out(outputs))
                }
                _ => Err(NodeError::Tool {
                    tool: "choose_universe".into(),
                    message: crate::trace::field(&r, "/message"),
                }),
            }
        })
    }

    fn restore(&self, cx: Cx, _outputs: &Artifacts) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move {
            let plan: ExperimentPlan = cx.input("plan")?;
            let registry = Registry::default().with(ChooseUniverse {
                market: self.market.clone(),
                universe: self.universe.clone(),
            });
            let r = registry
                .call(
                    "choose_universe",
                    &universe_args(&self.config, &plan).to_string(),
                )
                .await;
            match r.get("status").and_then(Value::as_str) {
                Some("done") => Ok(()),
                _ => Err(NodeError::Tool {
                    tool: "choose_universe (reloading the universe)".into(),
                    message: crate::trace::field(&r, "/message"),
                }),
            }
        })
    }
}

/// The fields the plan's foundation step makes, named by target and horizon: the forward
/// 5-bar return rank, and the realised volatility of the next 5 bars (per bar).
pub const FORECAST_RET: &str = "forecast_ret_5";
/// See [`FORECAST_RET`].
pub const FORECAST_VOL: &str = "forecast_vol_5";

/// The run's foundation state: the latest artifact, or a fresh one with the budget.
pub(super) fn lab_state(cx: &Cx, config: &ResearchConfig) -> Result<LabState, NodeError> {
    Ok(cx
        .optional("foundation")?
        .unwrap_or_else(|| LabState::new(config.budgets.foundation_cpu_seconds)))
}

/// The fields the foundation model's predictions have become so far.
pub(super) fn lab_fields(cx: &Cx) -> Result<Vec<String>, NodeError> {
    Ok(cx
        .optional::<LabState>("foundation")?
        .map(|s| s.fields.into_iter().map(|f| f.name).collect())
        .unwrap_or_default())
}

/// Adds back to the universe the foundation fields a completed node's `outputs` list.
pub(super) fn restore_lab(
    model: Option<&Arc<dyn FoundationModel>>,
    universe: &Arc<Universe>,
    outputs: &Artifacts,
) -> Result<(), NodeError> {
    let Some(state) = outputs
        .get("foundation")
        .and_then(|v| serde_json::from_value::<LabState>(v.clone()).ok())
    else {
        return Ok(());
    };
    if state.fields.is_empty() {
        return Ok(());
    }
    let Some(model) = model else {
        return Err(NodeError::Missing(
            "the run used the foundation model, which this build does not include".into(),
        ));
    };
    Lab::new(model.clone(), universe.clone(), LabState::default())
        .restore_fields(&state)
        .map_err(|message| NodeError::Tool {
            tool: "predict (rebuilding the foundation fields)".into(),
            message,
        })
}

/// The foundation model's tools over `lab`.
pub(super) fn lab_tools(registry: Registry, lab: &Arc<Lab>) -> Registry {
    registry
        .with(Pretrain { lab: lab.clone() })
        .with(Finetune { lab: lab.clone() })
        .with(Predict { lab: lab.clone() })
}

/// Pretraining and fine-tuning steps of the forced foundation model.
const FORCED_STEPS: usize = 300;

pub(super) struct Foundation {
    pub(super) model: Option<Arc<dyn FoundationModel>>,
    pub(super) universe: Arc<Universe>,
    pub(super) config: ResearchConfig,
}

impl Node for Foundation {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let state = lab_state(&cx, &self.config)?;
            let Some(model) = self.model.clone() else {
                return Ok(out(vec![
                    ("foundation", to_value(&state)?),
                    (
                        "notes",
                        notes_with(
                            &cx,
                            Some("the plan asked for the foundation model, which this build does not include; strategies use price and volume fields only".into()),
                        )?,
                    ),
                ]));
            };
            let lab = Arc::new(Lab::new(model, self.universe.clone(), state));
            let tools = JournaledTools::new(
                lab_tools(Registry::default(), &lab),
                cx.journal.clone(),
                &cx.exec,
            );
            let seed = cx.seed % 1_000_000;
            let why = "the plan asked for the foundation model";
            // One backbone, then a head per field: pretrain → (finetune → predict) × 2, each
            // step's model named by the one before. A head that fails costs only its field.
            let mut failures = Vec::new();
            let backbone = tools
                .call("pretrain", &json!({"steps": FORCED_STEPS, "seed": seed}))
                .await?;
            if backbone.get("status").and_then(Value::as_str) != Some("done") {
                failures.push(format!(
                    "pretrain: {}",
                    crate::trace::field(&backbone, "/message")
                ));
            } else {
                let backbone = backbone.pointer("/result/model").cloned();
                for (target, name) in [
                    ("return_rank_5", FORECAST_RET),
                    ("volatility_5", FORECAST_VOL),
                ] {
                    let steps = [
                        (
                            "finetune",
                            json!({"model": backbone, "mode": "full", "steps": FORCED_STEPS,
                                   "seed": seed, "target": target}),
                        ),
                        ("predict", json!({"name": name, "why": why})),
                    ];
                    let mut model_name: Option<Value> = None;
                    for (tool, mut args) in steps {
                        if let (Some(m), Some(obj)) = (&model_name, args.as_object_mut()) {
                            obj.insert("model".into(), m.clone());
                        }
                        let r = tools.call(tool, &args).await?;
                        if r.get("status").and_then(Value::as_str) != Some("done") {
                            failures.push(format!(
                                "{name}: {tool}: {}",
                                crate::trace::field(&r, "/message")
                            ));
                            break;
                        }
                        model_name = r.pointer("/result/model").cloned();
                    }
                }
            }
            let state = lab.state();
            let mut outputs = vec![("foundation", to_value(&state)?)];
            if !failures.is_empty() {
                let why = failures.join("; ");
                let note = if state.fields.is_empty() {
                    format!(
                        "the foundation model gave no predictions ({why}); strategies use price and volume fields only"
                    )
                } else {
                    let made: Vec<&str> = state.fields.iter().map(|f| f.name.as_str()).collect();
                    format!("the foundation model gave only {} ({why})", made.join(", "))
                };
                outputs.push(("notes", notes_with(&cx, Some(note))?));
            }
            Ok(out(outputs))
        })
    }

    fn restore(&self, _cx: Cx, outputs: &Artifacts) -> BoxFuture<'_, Result<(), NodeError>> {
        let r = restore_lab(self.model.as_ref(), &self.universe, outputs);
        Box::pin(async move { r })
    }
}
