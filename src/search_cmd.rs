//! `lim search "GOAL"`: a strategy search by the offline strategist, ending with the sealed
//! test of the finalists and multiple-testing statistics over every strategy tried.

use std::io::IsTerminal;
use std::process::ExitCode;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use lim_agents::client::{Budget, Budgeted, Recording, RetryPolicy, Retrying, Spent, Timed};
use lim_agents::offline::{self, Candidate, DISCLAIMER, Evolution, Plan};
use lim_agents::openai::{OpenAi, OpenAiConfig};
use lim_agents::strategist::{self, Tried};
use lim_backtest::frame;
use lim_backtest::metrics::Metrics;
use lim_backtest::session::{MultipleTesting, Session, StrategyResult};
use lim_market::{AsOf, MarketData, PanelQuery, Part, SplitSpec};
use lim_pipelines::research::{Finalist, fitness, test_finalists};
use serde::Serialize;

use crate::DataArgs;
use crate::table::{Table, pct};

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The research goal, e.g. "find a robust trend strategy for Chinese commodity futures, max drawdown 15%".
    goal: String,
    /// Generations of the search.
    #[arg(long, default_value_t = 6)]
    generations: usize,
    /// New strategies per generation.
    #[arg(long, default_value_t = 12)]
    population: usize,
    /// Seed of the search: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Finalists evaluated once on the sealed test period.
    #[arg(long, default_value_t = 3)]
    finalists: usize,
    /// Who proposes strategies: the offline strategist, or an OpenAI-compatible model.
    #[arg(long, value_enum, default_value = "offline")]
    llm: LlmKind,
    /// Model name, with --llm openai.
    #[arg(long, default_value = "gpt-4o-mini")]
    model: String,
    /// Base URL of the OpenAI-compatible API (OpenAI, vLLM, Ollama, llama.cpp), with /v1.
    #[arg(long, default_value = "https://api.openai.com/v1")]
    base_url: String,
    /// Environment variable holding the API key (unset means no key, e.g. a local server).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    api_key_env: String,
    /// Most tokens the LLM may use over the search.
    #[arg(long)]
    max_tokens: Option<u64>,
    /// Write every LLM exchange, secrets scrubbed, to this JSON-lines file.
    #[arg(long)]
    trace: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LlmKind {
    /// The deterministic evolutionary search (not an LLM).
    Offline,
    /// An OpenAI-compatible chat model.
    Openai,
}

#[derive(Serialize)]
struct Entry {
    rank: usize,
    signal: String,
    generation: usize,
    parents: Vec<String>,
    fitness: f64,
    train: Metrics,
    validation: Metrics,
}

#[derive(Serialize)]
struct SearchReport {
    strategist: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_spent: Option<Spent>,
    plan: Plan,
    trials: usize,
    leaderboard: Vec<Entry>,
    finalists: Vec<Finalist>,
    multiple_testing: Option<MultipleTesting>,
}

pub fn run(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let catalog = args.data.catalog()?;
    let metas = catalog.datasets()?;
    let available: Vec<String> = metas.iter().map(|d| d.name.clone()).collect();
    let mut plan = offline::plan(&args.goal, &available);
    let tty = std::io::stderr().is_terminal() && !args.json;
    let strategist_name = match args.llm {
        LlmKind::Offline => DISCLAIMER.to_string(),
        LlmKind::Openai => format!("LLM strategist: model {} at {}", args.model, args.base_url),
    };
    // Only the CLI reads keys, and only from the named environment variable.
    let llm = match args.llm {
        LlmKind::Offline => None,
        LlmKind::Openai => {
            let api_key = std::env::var(&args.api_key_env)
                .ok()
                .filter(|k| !k.is_empty());
            let provider = OpenAi::new(OpenAiConfig {
                base_url: args.base_url.clone(),
                api_key,
            })?;
            let budget = Budget {
                max_tokens: args.max_tokens,
                ..Budget::default()
            };
            Some(Recording::new(Budgeted::new(
                Retrying::new(
                    Timed::new(provider, Duration::from_secs(120)),
                    RetryPolicy::default(),
                    args.seed,
                ),
                budget,
                Spent::default(),
            )))
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut stopped = None;
    let mut critique: Option<String> = None;
    let mut notes: Vec<String> = Vec::new();
    if let Some(client) = &llm {
        // The LLM may refine the keyword plan; if it cannot give a valid one, the keyword plan stands.
        match runtime.block_on(strategist::plan(
            client,
            &args.model,
            &args.goal,
            &plan,
            &available,
            2,
            |p| {
                lim_pipelines::plan_check::check_goal(p, &args.goal, &metas)
                    .map_err(|e| e.to_string())
            },
        )) {
            Ok(p) => plan = p,
            Err(e) => notes.push(format!(
                "the LLM gave no valid plan ({e}); the keyword plan was used"
            )),
        }
    }
    if !args.json {
        println!("{strategist_name}");
        println!(
            "plan: trade {} with {:?} signals; book {:?}; costs {} bps{}",
            plan.datasets.join(", "),
            plan.family,
            plan.portfolio,
            plan.cost_bps,
            plan.max_drawdown
                .map(|d| format!("; max validation drawdown {}", pct(d)))
                .unwrap_or_default()
        );
    }
    let mut set = catalog
        .panels(&PanelQuery::new(AsOf::LATEST, plan.datasets.clone()).fields(frame::FIELDS))?;
    let session = Session::new(&mut set, SplitSpec::default())?;
    let cross_sectional = !matches!(
        plan.portfolio,
        lim_backtest::spec::Portfolio::SignThreshold { .. }
    );
    let mut evo = Evolution::new(args.seed, cross_sectional);
    let mut results: Vec<StrategyResult> = Vec::new();
    let mut added = evo.add(
        offline::seeds(plan.family, cross_sectional)
            .into_iter()
            .map(|s| (s, Vec::new())),
        0,
    );
    for generation in 0..=args.generations {
        let specs: Vec<(String, lim_backtest::spec::StrategySpec)> = added
            .iter()
            .map(|&i| {
                (
                    evo.history[i].signal.clone(),
                    offline::spec_for(&plan, &evo.history[i].signal),
                )
            })
            .collect();
        let batch = session.run(&specs, &[Part::Train, Part::Validation], false);
        for (&i, r) in added.iter().zip(&batch) {
            evo.history[i].fitness = match r.metrics.as_slice() {
                [(_, t), (_, v)] => Some(fitness(&plan, t, v).unwrap_or(f64::NEG_INFINITY)),
                _ => Some(f64::NEG_INFINITY),
            };
        }
        results.extend(batch);
        if tty {
            let best = evo
                .history
                .iter()
                .filter_map(|c| c.fitness)
                .fold(f64::NEG_INFINITY, f64::max);
            eprint!(
                "\rgeneration {generation}/{}: {} strategies tried, best robust Sharpe {best:.2}   ",
                args.generations,
                evo.history.len()
            );
        }
        if generation == args.generations {
            break;
        }
        if let Some(client) = &llm {
            let round: Vec<serde_json::Value> = added
                .iter()
                .filter_map(|&i| {
                    let c = &evo.history[i];
                    let r = results.iter().find(|r| r.name == c.signal)?;
                    match r.metrics.as_slice() {
                        [(_, t), (_, v)] => Some(serde_json::json!({"signal": c.signal, "train_sharpe": t.sharpe, "train_dd": t.max_dd,
                            "validation_sharpe": v.sharpe, "validation_dd": v.max_dd, "turnover": v.turnover, "rank_ic": v.rank_ic})),
                        _ => None,
                    }
                })
                .collect();
            let ctx = serde_json::json!({"results": round, "trials": results.len(), "dsr": session.multiple_testing(&results).map_or(f64::NAN, |m| m.deflated.dsr)});
            critique = match runtime.block_on(strategist::critique(client, &args.model, &ctx, 2)) {
                Ok(c) => Some(format!("{} Next: {}", c.diagnosis, c.hypotheses.join("; "))),
                // A missing critique does not stop the search; the proposals go on without it.
                Err(_) => None,
            };
        }
        let proposals = match &llm {
            None => evo.propose(args.population, generation + 1, cross_sectional),
            Some(client) => {
                let mut best: Vec<&Candidate> = evo
                    .history
                    .iter()
                    .filter(|c| c.fitness.is_some_and(f64::is_finite))
                    .collect();
                best.sort_by(|a, b| {
                    b.fitness
                        .unwrap_or(f64::MIN)
                        .total_cmp(&a.fitness.unwrap_or(f64::MIN))
                });
                let tried: Vec<Tried> = best
                    .iter()
                    .take(8)
                    .filter_map(|c| {
                        let r = results.iter().find(|r| r.name == c.signal)?;
                        match r.metrics.as_slice() {
                            [(_, t), (_, v)] => Some(Tried {
                                signal: c.signal.clone(),
                                train_sharpe: t.sharpe,
                                validation_sharpe: v.sharpe,
                            }),
                            _ => None,
                        }
                    })
                    .collect();
                let fields: Vec<&str> = if cross_sectional {
                    vec!["open", "high", "low", "close", "volume", "vwap", "returns"]
                } else {
                    vec!["returns"]
                };
                match runtime.block_on(strategist::propose(
                    client,
                    &args.model,
                    &plan,
                    &fields,
                    &tried,
                    critique.as_deref(),
                    args.population,
                    2,
                )) {
                    // The LLM proposes signals; the plan's book, costs and limits apply to all.
                    Ok(specs) => specs.into_iter().map(|s| (s.signal, Vec::new())).collect(),
                    Err(e) => {
                        stopped = Some(format!(
                            "the LLM stopped the search at generation {}: {e}",
                            generation + 1
                        ));
                        break;
                    }
                }
            }
        };
        added = evo.add(proposals, generation + 1);
    }
    if tty {
        eprintln!();
    }
    let mut order: Vec<usize> = (0..evo.history.len()).collect();
    let fit = |c: &Candidate| c.fitness.unwrap_or(f64::NEG_INFINITY);
    order.sort_by(|&a, &b| {
        fit(&evo.history[b])
            .total_cmp(&fit(&evo.history[a]))
            .then(a.cmp(&b))
    });
    let leaderboard: Vec<Entry> = order
        .iter()
        .take(10)
        .enumerate()
        .filter_map(|(rank, &i)| {
            let c = &evo.history[i];
            let r = results.iter().find(|r| r.name == c.signal)?;
            match r.metrics.as_slice() {
                [(_, t), (_, v)] => Some(Entry {
                    rank: rank + 1,
                    signal: c.signal.clone(),
                    generation: c.generation,
                    parents: c.parents.clone(),
                    fitness: fit(c),
                    train: *t,
                    validation: *v,
                }),
                _ => None,
            }
        })
        .collect();
    // The sealed test: once, on the finalists only.
    let finalist_specs: Vec<(String, lim_backtest::spec::StrategySpec)> = leaderboard
        .iter()
        .take(args.finalists)
        .map(|e| (e.signal.clone(), offline::spec_for(&plan, &e.signal)))
        .collect();
    let finalists: Vec<Finalist> = test_finalists(&session, &finalist_specs);
    let llm_spent = llm.as_ref().map(|c| c.inner_ref().spent());
    if let (Some(path), Some(client)) = (&args.trace, &llm) {
        std::fs::write(path, client.jsonl())
            .with_context(|| format!("cannot write the trace '{}'", path.display()))?;
    }
    let report = SearchReport {
        strategist: strategist_name,
        stopped,
        notes,
        llm_spent,
        trials: results.len(),
        multiple_testing: session.multiple_testing(&results),
        plan,
        leaderboard,
        finalists,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} strategies tried; leaderboard by robust Sharpe (the worse of train and validation):",
        report.trials
    );
    let mut t = Table::new(&[
        "#",
        "gen",
        "train.sharpe",
        "valid.sharpe",
        "valid.dd",
        "signal",
    ]);
    for e in &report.leaderboard {
        let sig: String = if e.signal.chars().count() > 60 {
            format!("{}…", e.signal.chars().take(59).collect::<String>())
        } else {
            e.signal.clone()
        };
        t.row(vec![
            e.rank.to_string(),
            e.generation.to_string(),
            format!("{:.2}", e.train.sharpe),
            format!("{:.2}", e.validation.sharpe),
            pct(e.validation.max_dd),
            sig,
        ]);
    }
    print!("{}", t.render());
    println!(
        "sealed test period, evaluated once on the {} finalists:",
        report.finalists.len()
    );
    let mut t = Table::new(&[
        "signal",
        "valid.sharpe",
        "test.sharpe",
        "test.return",
        "test.dd",
    ]);
    for f in &report.finalists {
        let sig: String = if f.signal.chars().count() > 60 {
            format!("{}…", f.signal.chars().take(59).collect::<String>())
        } else {
            f.signal.clone()
        };
        t.row(vec![
            sig,
            format!("{:.2}", f.validation.sharpe),
            format!("{:.2}", f.test.sharpe),
            pct(f.test.ann_return),
            pct(f.test.max_dd),
        ]);
    }
    print!("{}", t.render());
    if let Some(m) = &report.multiple_testing {
        println!(
            "over all {} trials: best validation Sharpe {:.2}, deflated Sharpe ratio {:.3} (the best of {} tries at zero true skill would show {:.2}){}",
            m.trials,
            m.best_validation_sharpe,
            m.deflated.dsr,
            m.trials,
            m.deflated.expected_max * 252f64.sqrt(),
            m.pbo
                .map(|p| format!("; probability of backtest overfitting {p:.2}"))
                .unwrap_or_default()
        );
    }
    println!(
        "note: {DISCLAIMER}; the survivorship and roll caveats of the data apply (docs/data.md)"
    );
    Ok(ExitCode::SUCCESS)
}
