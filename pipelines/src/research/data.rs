//! The universe (`choose_universe`) and the foundation model's field (`forecast`).

use super::*;

fn universe_args(config: &ResearchConfig, plan: &ExperimentPlan) -> Value {
    json!({
        "datasets": plan.strategy.datasets,
        "train": config.train,
        "valid": config.valid,
        "embargo": config.embargo,
    })
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
                Some("done") => Ok(out(vec![(
                    "universe",
                    r.get("result").cloned().unwrap_or(Value::Null),
                )])),
                _ => Err(fail(format!(
                    "choose_universe failed: {}",
                    crate::trace::field(&r, "/message")
                ))),
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
                _ => Err(fail(format!(
                    "cannot reload the universe: {}",
                    crate::trace::field(&r, "/message")
                ))),
            }
        })
    }
}

/// The name of the foundation model's field.
pub const FORECAST: &str = "forecast";

pub(super) struct Foundation {
    pub(super) forecaster: Option<Arc<dyn Forecaster>>,
    pub(super) universe: Arc<Universe>,
}

impl Foundation {
    fn registry(&self) -> Option<Registry> {
        self.forecaster.clone().map(|forecaster| {
            Registry::default().with(ForecastTool {
                forecaster,
                universe: self.universe.clone(),
            })
        })
    }
}

impl Node for Foundation {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let Some(registry) = self.registry() else {
                return Ok(out(vec![
                    ("predictions", Value::Null),
                    (
                        "notes",
                        notes_with(
                            &cx,
                            Some("the plan asked for the foundation model, which this build does not include; strategies use price and volume fields only".into()),
                        )?,
                    ),
                ]));
            };
            let tools = JournaledTools::new(registry, cx.journal.clone(), &cx.exec);
            let r = tools
                .call(
                    "forecast",
                    &json!({"name": FORECAST, "seed": cx.seed % 1_000_000}),
                )
                .await?;
            match r.get("status").and_then(Value::as_str) {
                Some("done") => Ok(out(vec![(
                    "predictions",
                    r.get("result").cloned().unwrap_or(Value::Null),
                )])),
                _ => Ok(out(vec![
                    ("predictions", Value::Null),
                    (
                        "notes",
                        notes_with(
                            &cx,
                            Some(format!(
                                "the foundation model gave no predictions ({}); strategies use price and volume fields only",
                                crate::trace::field(&r, "/message")
                            )),
                        )?,
                    ),
                ])),
            }
        })
    }

    fn restore(&self, cx: Cx, outputs: &Artifacts) -> BoxFuture<'_, Result<(), NodeError>> {
        let done = outputs.get("predictions").is_some_and(|p| !p.is_null());
        Box::pin(async move {
            let (Some(registry), true) = (self.registry(), done) else {
                return Ok(());
            };
            let r = registry
                .call(
                    "forecast",
                    &json!({"name": FORECAST, "seed": cx.seed % 1_000_000}).to_string(),
                )
                .await;
            match r.get("status").and_then(Value::as_str) {
                Some("done") => Ok(()),
                _ => Err(fail(format!(
                    "cannot rebuild the foundation model's field: {}",
                    crate::trace::field(&r, "/message")
                ))),
            }
        })
    }
}
