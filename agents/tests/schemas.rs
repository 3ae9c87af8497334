//! The strict JSON schemas the LLM is asked to fill, against committed snapshots: they are
//! part of the prompt, so they change only on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use lim_agents::offline::Plan;
use lim_agents::strategist::{Critique, Proposals};
use lim_agents::structured::strict_schema;

fn check(name: &str, schema: serde_json::Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/snapshots/{name}.schema.json"));
    let got = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    if std::env::var_os("LIM_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "the strict schema '{name}' changed; review and update {}:\n---\n{got}---",
        path.display()
    );
}

#[test]
fn proposals() {
    check("proposals", strict_schema::<Proposals>());
}

#[test]
fn plan() {
    check("plan", strict_schema::<Plan>());
}

#[test]
fn critique() {
    check("critique", strict_schema::<Critique>());
}
