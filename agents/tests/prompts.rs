//! The rendered form of every prompt, against a committed snapshot: a prompt changes only on
//! purpose. To accept a change, review the diff and copy the new rendering over the snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use lim_agents::prompt::render;
use serde_json::json;

fn check(name: &str, rendered: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../prompts/snapshots/{name}.txt"));
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        rendered == want,
        "prompt '{name}' renders differently from {}:\n---\n{rendered}\n---",
        path.display()
    );
}

#[test]
fn strategist_system() {
    check(
        "strategist_system",
        &render(
            "strategist_system",
            &json!({"fields": ["open", "close", "returns"], "cost_bps": 10, "tools": false, "foundation_cpu_seconds": null, "calendar_gaps": null}),
        )
        .unwrap(),
    );
    check(
        "strategist_system_tools",
        &render(
            "strategist_system",
            &json!({"fields": ["open", "close", "returns"], "cost_bps": 10, "tools": true, "foundation_cpu_seconds": null, "calendar_gaps": 3.1}),
        )
        .unwrap(),
    );
    check(
        "strategist_system_foundation",
        &render(
            "strategist_system",
            &json!({"fields": ["open", "close", "returns"], "cost_bps": 10, "tools": true, "foundation_cpu_seconds": 60, "calendar_gaps": null}),
        )
        .unwrap(),
    );
}

#[test]
fn propose_with_and_without_history() {
    let plan = json!({"goal": "find a robust trend strategy for Chinese commodity futures, max drawdown 15%", "datasets": ["cn_futures_daily"], "max_drawdown": 0.15});
    let first = render(
        "propose",
        &json!({"plan": plan, "leaderboard": [], "critique": null, "count": 4}),
    )
    .unwrap();
    check("propose_first", &first);
    let later = render(
        "propose",
        &json!({"plan": plan, "count": 4, "critique": "Short windows overtrade; costs eat them.",
                "leaderboard": [{"validation_sharpe": 0.57, "train_sharpe": 0.66, "signal": "decay_linear(returns, 40)"},
                                {"validation_sharpe": 0.41, "train_sharpe": 0.52, "signal": "ts_sum(returns, 120)"}]}),
    )
    .unwrap();
    check("propose_later", &later);
}

#[test]
fn critique() {
    let r = render(
        "critique",
        &json!({"trials": 24, "dsr": 0.151, "results": [
            {"signal": "ts_sum(returns, 120)", "train_sharpe": 0.52, "train_dd": -0.089, "validation_sharpe": 0.41, "validation_dd": -0.089, "turnover": 0.05, "rank_ic": 0.0113}]}),
    )
    .unwrap();
    check("critique", &r);
    check(
        "critique_system",
        &render("critique_system", &json!({})).unwrap(),
    );
    // Before two strategies have run there is no deflated Sharpe ratio.
    let early = render(
        "critique",
        &json!({"trials": 1, "dsr": null, "results": []}),
    )
    .unwrap();
    assert!(early.contains("the deflated Sharpe ratio of the best is not computable yet."));
}

#[test]
fn a_missing_value_is_an_error_not_a_blank() {
    assert!(
        render(
            "strategist_system",
            &json!({"fields": ["close"], "tools": false})
        )
        .is_err()
    );
}

#[test]
fn planning_agent() {
    check("plan_system", &render("plan_system", &json!({})).unwrap());
    check(
        "plan_task",
        &render(
            "plan_task",
            &json!({"goal": "find a robust trend strategy for Chinese commodity futures, max drawdown 15%",
                "datasets": ["cn_futures_daily", "us_equities_daily_adjusted"],
                "suggestion": "{\n  \"datasets\": [\"cn_futures_daily\"]\n}"}),
        )
        .unwrap(),
    );
}
