//! Prompts: templates under `prompts/`, rendered with minijinja. The templates are compiled
//! into the binary, so a prompt cannot drift from the code that fills it; their rendered forms
//! are snapshot-tested, so a change to a prompt is always a reviewed change.

use minijinja::Environment;
use serde::Serialize;

/// Every template, by name.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "strategist_system",
        include_str!("../../prompts/strategist_system.j2"),
    ),
    ("propose", include_str!("../../prompts/propose.j2")),
    ("critique", include_str!("../../prompts/critique.j2")),
    (
        "critique_system",
        include_str!("../../prompts/critique_system.j2"),
    ),
    ("plan_system", include_str!("../../prompts/plan_system.j2")),
    ("plan_task", include_str!("../../prompts/plan_task.j2")),
];

/// Renders a template with a context.
///
/// # Errors
/// An unknown template or a context that does not fill it.
pub fn render(name: &str, ctx: &impl Serialize) -> Result<String, minijinja::Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_filter(
        "format",
        |fmt: String, v: f64| -> Result<String, minijinja::Error> {
            // Only the "%.Nf" forms the templates use.
            let digits = fmt
                .strip_prefix("%.")
                .and_then(|r| r.strip_suffix('f'))
                .and_then(|d| d.parse::<usize>().ok());
            match digits {
                Some(d) => Ok(format!("{v:.d$}")),
                None => Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("unsupported format '{fmt}', use %.Nf"),
                )),
            }
        },
    );
    for (n, src) in TEMPLATES {
        env.add_template(n, src)?;
    }
    env.get_template(name)?.render(ctx)
}
