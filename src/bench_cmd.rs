//! `lim bench research`: the research benchmark (see `lim_pipelines::bench`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use lim_backtest::nonfinite::show;
use lim_market::MarketData;
use lim_pipelines::bench::{self, GoalResult};
use lim_pipelines::journal::SystemClock;
use lim_pipelines::research::NoLlm;
use lim_pipelines::store::Store;

/// The process's own CPU time, shared with the benchmark binaries.
#[path = "bin/common/mod.rs"]
#[allow(dead_code)]
mod proc_self;

use crate::DataArgs;
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Goals × seeds with the offline strategist: finalists and their combination against
    /// always-long on the sealed test, DSR, PBO, validation→test rank correlation.
    Research(ResearchBenchArgs),
}

#[derive(Debug, Args)]
pub struct ResearchBenchArgs {
    /// Seeds, comma-separated.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Run only the first N goals of the suite.
    #[arg(long)]
    goals: Option<usize>,
    /// Run store for the benchmark's runs (finished runs are read back, unfinished ones resumed).
    #[arg(long, value_name = "DIR", default_value = "lim-bench")]
    store: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// The strategist: offline (default) or any OpenAI-compatible endpoint (--llm openai
    /// --base-url … --model …); runs of each strategist are separate runs in the store.
    #[command(flatten)]
    llm: crate::research_cmd::LlmArgs,
    /// Also re-run each sign-threshold book's finalists on the test sized by a volatility
    /// forecast of the foundation model (pretrained and fine-tuned per run through the agents'
    /// tools) instead of trailing volatility, and compare.
    #[arg(long)]
    vol_sizing: bool,
    /// Steps of the volatility model's pretraining and of its fine-tuning, each.
    #[arg(long, default_value_t = 300, requires = "vol_sizing")]
    vol_model_steps: usize,
    /// Bars the volatility model forecasts: 5 or 20.
    #[arg(long, default_value = "5", requires = "vol_sizing", value_parser = ["5", "20"])]
    vol_horizon: String,
    /// Fine-tune the volatility model in two stages (LP-FT: the head alone first, then
    /// everything), each with --vol-model-steps.
    #[arg(long, requires = "vol_sizing")]
    vol_model_lp_ft: bool,
    /// Run every goal with the foundation model as the plan's first step (`lim research
    /// --foundation`: the fields forecast_ret_5 and forecast_vol_5, from models trained per
    /// run on bars before the middle of the training part); these are other runs in the store,
    /// so the benchmark with and without compares them
    #[arg(long)]
    foundation: bool,
    /// Run every goal with this research setting (`lim research --baseline-penalty`); these
    /// are other runs in the store.
    #[arg(long, default_value_t = 0.0, value_parser = crate::research_cmd::parse_penalty)]
    baseline_penalty: f64,
    /// Which stretch of history every goal studies (`lim research --as-of`, `--earlier`):
    /// `--earlier 1` runs the suite on periods before its usual sealed tests, a yardstick no
    /// change judged on the usual one has seen. These are other runs in the store.
    #[command(flatten)]
    period: crate::research_cmd::PeriodArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    let BenchCommand::Research(args) = cmd;
    let market: Arc<dyn MarketData> = Arc::new(args.data.catalog()?);
    let store = Arc::new(Store::open(&args.store)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let goals = &bench::GOALS[..args
        .goals
        .unwrap_or(bench::GOALS.len())
        .min(bench::GOALS.len())];
    let total = goals.len() * args.seeds.len();
    let vol_model = args.vol_sizing.then(|| bench::VolModel {
        model: Arc::new(crate::forecaster::FoundationForecaster::new(market.clone())),
        steps: args.vol_model_steps,
        target: if args.vol_horizon == "20" {
            lim_tools::FinetuneTarget::Volatility20
        } else {
            lim_tools::FinetuneTarget::Volatility5
        },
        mode: if args.vol_model_lp_ft {
            lim_tools::TuneMode::LpFt
        } else {
            lim_tools::TuneMode::Full
        },
    });
    let foundation: Option<Arc<dyn lim_tools::FoundationModel>> = args.foundation.then(|| {
        Arc::new(crate::forecaster::FoundationForecaster::new(market.clone()))
            as Arc<dyn lim_tools::FoundationModel>
    });
    let variant = bench::Variant {
        baseline_penalty: args.baseline_penalty,
        vol_model,
        foundation,
        as_of: args.period.as_of.clone(),
        earlier: args.period.earlier,
    };
    let mut results: Vec<GoalResult> = Vec::new();
    for goal in goals {
        for &seed in &args.seeds {
            eprintln!("[{}/{total}] {goal} (seed {seed})", results.len() + 1);
            let cpu = proc_self::cpu_seconds();
            let strategist = crate::research_cmd::strategist(&args.llm);
            let run = (*goal, seed);
            let (m, st, clock) = (market.clone(), store.clone(), Arc::new(SystemClock));
            let mut r = match &strategist {
                lim_pipelines::research::StrategistConfig::Offline => {
                    runtime.block_on(bench::run_goal(
                        m,
                        st,
                        clock,
                        run,
                        &strategist,
                        Arc::new(NoLlm),
                        variant.clone(),
                    ))?
                }
                lim_pipelines::research::StrategistConfig::Llm { base_url, .. } => {
                    let client =
                        crate::research_cmd::openai_client(base_url, &args.llm.api_key_env, seed)?;
                    runtime.block_on(bench::run_goal(
                        m,
                        st,
                        clock,
                        run,
                        &strategist,
                        Arc::new(client),
                        variant.clone(),
                    ))?
                }
            };
            if r.seconds > 0.0 {
                r.cpu_seconds = proc_self::cpu_seconds() - cpu;
            }
            results.push(r);
        }
    }
    let totals = bench::totals(&results);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "runs": results,
                "totals": totals,
                "goal_criteria": totals.goal_criteria(),
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Goals by number, each with its data, so that the table fits a terminal.
    // Each goal's text, datasets and sealed test period.
    type Goal<'a> = (&'a str, Vec<String>, Option<&'a (String, String)>);
    let mut goals: Vec<Goal<'_>> = Vec::new();
    for r in &results {
        match goals.iter_mut().find(|g| g.0 == r.goal) {
            Some(g) => {
                for d in &r.datasets {
                    if !g.1.contains(d) {
                        g.1.push(d.clone());
                    }
                }
            }
            None => goals.push((&r.goal, r.datasets.clone(), r.test_period.as_ref())),
        }
    }
    for (k, (goal, data, test)) in goals.iter().enumerate() {
        let test = test.map_or(String::new(), |(a, b)| format!("; test {a} to {b}"));
        println!(
            "goal {}: {goal}\n        ({}{test})",
            k + 1,
            data.join(", ")
        );
    }
    println!(
        "test Sharpe of the finalists, their combination (comb) and always long (long); z: the\n\
         combination's Sharpe over always long's, over its standard error (beyond ±1.96 unlikely\n\
         to be chance); beat: finalists beating always long; rho, rho.f: validation→ and\n\
         fitness→test rank correlation over the leaderboard; tried: strategies tried beating\n\
         always long, of those scored, and their median test Sharpe (med)\n"
    );
    let mut t = Table::new(&[
        "goal",
        "seed",
        "finalists",
        "comb",
        "long",
        "z",
        "beat",
        "DSR",
        "PBO",
        "rho",
        "rho.f",
        "tried",
        "med",
        "trials",
    ]);
    for r in &results {
        t.row(vec![
            (goals.iter().position(|g| g.0 == r.goal).unwrap_or(0) + 1).to_string(),
            r.seed.to_string(),
            r.finalists_test_sharpe
                .iter()
                .map(|s| show(*s, 2, "-"))
                .collect::<Vec<_>>()
                .join(" "),
            show(r.combined_test_sharpe, 2, "-"),
            show(r.always_long_test_sharpe, 2, "-"),
            r.combined_z_vs_always_long
                .map_or("-".to_string(), |z| show(z, 1, "-")),
            format!(
                "{}/{}",
                r.finalists_beating_always_long,
                r.finalists_test_sharpe.len()
            ),
            show(r.dsr, 2, "-"),
            show(r.pbo, 2, "-"),
            show(r.validation_test_rank_correlation, 2, "-"),
            show(r.fitness_test_rank_correlation, 2, "-"),
            r.tried.as_ref().map_or("-".to_string(), |t| {
                format!("{}/{}", t.beating_always_long, t.scored)
            }),
            r.tried
                .as_ref()
                .map_or("-".to_string(), |t| show(t.median_test_sharpe, 2, "-")),
            r.trials.to_string(),
        ]);
    }
    print!("{}", t.render());
    if let Some(n) = totals.foundation_finalists_reading {
        let reading: Vec<String> = results
            .iter()
            .filter_map(|r| r.foundation.as_ref())
            .map(|f| format!("{}/{}", f.leaderboard_reading, f.leaderboard))
            .collect();
        println!(
            "foundation fields: {n} of {} finalists read one; leaderboard strategies reading one, per run: {}",
            totals.finalists,
            reading.join(" ")
        );
    }
    let sized: Vec<&GoalResult> = results.iter().filter(|r| r.vol_sizing.is_some()).collect();
    if !sized.is_empty() {
        let mut v = Table::new(&["goal", "seed", "vol model", "IC", "trailing", "forecast"]);
        for r in sized {
            let Some(z) = &r.vol_sizing else { continue };
            let list = |x: &[f64]| {
                x.iter()
                    .map(|s| show(*s, 2, "-"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            v.row(vec![
                r.goal.chars().take(34).collect(),
                r.seed.to_string(),
                z.model.clone(),
                show(z.holdout_rank_ic, 2, "-"),
                list(&z.trailing_test_sharpe),
                list(&z.forecast_test_sharpe),
            ]);
        }
        println!(
            "\nfinalists' test Sharpe sized by trailing volatility and by the model's forecast:"
        );
        print!("{}", v.render());
        if let (Some(better), Some(n), Some((a, b))) = (
            totals.vol_sizing_finalists_better,
            totals.vol_sizing_finalists,
            totals.vol_sizing_mean_test_sharpe,
        ) {
            let pair = |p: Option<(f64, f64)>, d: usize| {
                p.map_or("-".to_string(), |(a, b)| {
                    format!("{} trailing, {} forecast", show(a, d, "-"), show(b, d, "-"))
                })
            };
            println!(
                "sized by the forecast, {better} of {n} finalists do better; mean test Sharpe {} trailing, {} forecast; before costs {}; turnover {}\n",
                show(a, 2, "-"),
                show(b, 2, "-"),
                pair(totals.vol_sizing_mean_gross_test_sharpe, 2),
                pair(totals.vol_sizing_mean_test_turnover, 3)
            );
        }
    }
    print!("{}", totals_text(&totals));
    Ok(ExitCode::SUCCESS)
}

/// The benchmark's totals, a line each: test Sharpe, against always long, the combination,
/// rank correlations, cost.
fn totals_text(t: &bench::Totals) -> String {
    let mut out = format!(
        "mean test Sharpe: finalists {}, combined {}, always long {}, every strategy tried {} (median)\n",
        show(t.mean_finalist_test_sharpe, 2, "-"),
        show(t.mean_combined_test_sharpe, 2, "-"),
        show(t.mean_always_long_test_sharpe, 2, "-"),
        show(t.mean_tried_median_test_sharpe, 2, "-"),
    );
    out += &format!(
        "beat always long: {} of {} finalists (most of a goal's in {} of {} goals); {} of {} strategies tried (most in {} goals)\n",
        t.finalists_beating_always_long,
        t.finalists,
        t.goals_where_most_finalists_beat_always_long,
        t.goals,
        t.tried_beating_always_long,
        t.tried,
        t.goals_where_most_tried_beat_always_long,
    );
    if t.finalists_tested_against_always_long > 0 {
        out += &format!(
            "beyond chance (|z| ≥ {}) against always long: finalists {} above, {} below of {};\n\
             the combination {} above, {} below of {} runs\n",
            lim_pipelines::research::SIGNIFICANT_Z,
            t.finalists_above_always_long_beyond_chance,
            t.finalists_below_always_long_beyond_chance,
            t.finalists_tested_against_always_long,
            t.runs_combined_above_always_long_beyond_chance,
            t.runs_combined_below_always_long_beyond_chance,
            t.runs_combined_tested_against_always_long,
        );
    }
    out += &format!(
        "the combination is at least its median finalist in {} of {} runs\n",
        t.runs_combined_at_least_median_finalist, t.runs_with_combination
    );
    out += &format!(
        "validation→test rank correlation: leaderboard {} (t {}; fitness→test {}), every strategy tried {} (t {})\n",
        show(t.mean_validation_test_rank_correlation, 2, "-"),
        show(t.validation_test_rank_correlation_t, 1, "-"),
        show(t.mean_fitness_test_rank_correlation, 2, "-"),
        show(t.mean_tried_validation_test_rank_correlation, 2, "-"),
        show(t.tried_validation_test_rank_correlation_t, 1, "-"),
    );
    out += &format!(
        "mean DSR {}; {:.0} s wall, {:.0} s CPU; {} LLM tokens, ${:.4}\n",
        show(t.mean_dsr, 2, "-"),
        t.seconds,
        t.cpu_seconds,
        t.llm_tokens,
        t.llm_usd
    );
    for (k, c) in t.goal_criteria().iter().enumerate() {
        out += &format!(
            "{} ({}) {}: {}, {}\n",
            if k == 0 {
                "research goal"
            } else {
                "             "
            },
            k + 1,
            c.criterion,
            if c.holds { "holds" } else { "does not hold" },
            c.measured
        );
    }
    out
}
