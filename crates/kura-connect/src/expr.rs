//! The expression and template language: minijinja (a Jinja2 dialect).
//!
//! An *expression* is what goes inside `{{ … }}`: `input.total * 1.2`,
//! `steps.lookup.status == 200`, `{'id': input.id, 'name': input.name | upper}`.
//! A *template* is text with `{{ … }}` holes: `https://api.example/{{ input.id }}`.
//! Both see two variables: `input` (the trigger's input) and `steps` (each
//! earlier step's output by id). The environment has no loader, so nothing
//! can include files; minijinja has no network or process access; every
//! evaluation runs with a fuel budget so a runaway loop ends with an error.

use minijinja::Environment;
use serde_json::Value;

/// The work one expression may do (minijinja's fuel units, roughly
/// instructions).
const FUEL: u64 = 100_000;

/// The shared, sandboxed environment.
#[derive(Debug)]
pub struct Expressions {
    env: Environment<'static>,
}

impl Default for Expressions {
    fn default() -> Self {
        Self::new()
    }
}

impl Expressions {
    /// A fresh environment with the fuel limit set.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        Self { env }
    }

    /// Checks that an expression parses.
    pub fn check_expression(&self, source: &str) -> Result<(), String> {
        self.env
            .compile_expression(source)
            .map(|_| ())
            .map_err(|e| describe(&e))
    }

    /// Checks that a template parses.
    pub fn check_template(&self, source: &str) -> Result<(), String> {
        self.env
            .template_from_str(source)
            .map(|_| ())
            .map_err(|e| describe(&e))
    }

    /// Evaluates an expression against a context, as JSON.
    pub fn eval(&self, source: &str, ctx: &Value) -> Result<Value, String> {
        let expr = self
            .env
            .compile_expression(source)
            .map_err(|e| describe(&e))?;
        let value = expr.eval(ctx).map_err(|e| describe(&e))?;
        if value.is_undefined() {
            return Ok(Value::Null);
        }
        serde_json::to_value(&value).map_err(|e| e.to_string())
    }

    /// Renders a template against a context.
    pub fn render(&self, source: &str, ctx: &Value) -> Result<String, String> {
        self.env.render_str(source, ctx).map_err(|e| describe(&e))
    }
}

fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expressions_compute_and_templates_render() {
        let x = Expressions::new();
        let ctx = json!({"input": {"a": 2, "name": "kura"}, "steps": {}});
        assert_eq!(x.eval("input.a * 21", &ctx).unwrap(), json!(42));
        assert_eq!(
            x.eval("{'n': input.name | upper}", &ctx).unwrap(),
            json!({"n": "KURA"})
        );
        assert_eq!(x.render("/x/{{ input.a }}", &ctx).unwrap(), "/x/2");
        assert!(x.check_expression("input.a +").is_err());
        assert!(x.check_template("{{ input.a").is_err());
    }

    #[test]
    fn runaway_work_runs_out_of_fuel() {
        let x = Expressions::new();
        let err = x
            .render(
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                &json!({}),
            )
            .unwrap_err();
        assert!(err.contains("fuel"), "{err}");
    }
}
