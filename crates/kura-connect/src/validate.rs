//! Parsing and checking flow documents on save. Every problem names its
//! place in the document as a JSON path (`steps[2].set.total`).

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr as _;

use serde_json::Value;

use crate::document::{Action, FlowDocument, HttpBody, OnError, STEP_KINDS, Trigger};
use crate::expr::Expressions;

/// The largest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// The most steps a flow may have.
pub const MAX_STEPS: usize = 200;
/// The longest delay, in seconds.
pub const MAX_DELAY_SECS: u64 = 30 * 24 * 3600;

/// One problem in a document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DocumentError {
    /// Where, as a JSON path (`$` is the whole document).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for DocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

pub(crate) fn err(path: impl Into<String>, message: impl Into<String>) -> DocumentError {
    DocumentError {
        path: path.into(),
        message: message.into(),
    }
}

/// A document's text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Parses a document's text into a JSON value.
pub fn parse_text(text: &str, format: Format) -> Result<Value, Vec<DocumentError>> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(vec![err(
            "$",
            format!("the document is larger than {MAX_DOCUMENT_BYTES} bytes"),
        )]);
    }
    match format {
        Format::Json => serde_json::from_str(text),
        Format::Yaml => serde_yaml_ng::from_str(text).map_err(|e| {
            serde_json::Error::io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            ))
        }),
    }
    .map_err(|e| vec![err("$", format!("not valid {format:?}: {e}"))])
}

/// A document as YAML text (for export).
pub fn to_yaml(doc: &FlowDocument) -> Result<String, String> {
    serde_yaml_ng::to_string(doc).map_err(|e| e.to_string())
}

/// Parses and checks a document given as JSON. `credential_exists` answers
/// whether the team has a credential of that name.
pub fn parse_document(
    value: Value,
    credential_exists: &dyn Fn(&str) -> bool,
) -> Result<FlowDocument, Vec<DocumentError>> {
    // Step kinds first, so an unknown kind is reported at its own path
    // rather than as a failure of the whole step.
    let mut errors = Vec::new();
    if let Some(steps) = value.get("steps").and_then(Value::as_array) {
        for (i, step) in steps.iter().enumerate() {
            match step.get("kind").and_then(Value::as_str) {
                Some(k) if STEP_KINDS.contains(&k) => {}
                Some(k) => errors.push(err(
                    format!("steps[{i}].kind"),
                    format!(
                        "unknown step kind `{k}`; the kinds are {}",
                        STEP_KINDS.join(", ")
                    ),
                )),
                None => errors.push(err(format!("steps[{i}].kind"), "a step needs a kind")),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let doc: FlowDocument = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." || path.is_empty() {
            "$".to_owned()
        } else {
            path
        };
        vec![err(path, e.into_inner().to_string())]
    })?;
    let errors = check(&doc, credential_exists);
    if errors.is_empty() {
        Ok(doc)
    } else {
        Err(errors)
    }
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && id.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Checks a parsed document; an empty list means it may be saved.
pub fn check(doc: &FlowDocument, credential_exists: &dyn Fn(&str) -> bool) -> Vec<DocumentError> {
    let mut errors = Vec::new();
    let x = Expressions::new();
    if doc.name.trim().is_empty() || doc.name.chars().count() > 200 {
        errors.push(err("name", "the name must have 1 to 200 characters"));
    }
    if let Trigger::Schedule { cron, timezone } = &doc.trigger {
        if let Err(e) = crate::schedule::parse_cron(cron) {
            errors.push(err("trigger.cron", e));
        }
        if chrono_tz::Tz::from_str(timezone).is_err() {
            errors.push(err(
                "trigger.timezone",
                format!("`{timezone}` is not an IANA time zone"),
            ));
        }
    }
    if let Trigger::AppEvent {
        app,
        layout,
        account,
        events,
    } = &doc.trigger
    {
        if app.parse::<kura_types::AppId>().is_err() {
            errors.push(err("trigger.app", "not an app id"));
        }
        if layout.trim().is_empty() {
            errors.push(err("trigger.layout", "a layout name is needed"));
        }
        if account.trim().is_empty() {
            errors.push(err("trigger.account", "a service account name is needed"));
        }
        if events.is_empty() {
            errors.push(err("trigger.events", "name at least one kind of change"));
        }
    }
    if doc.steps.is_empty() || doc.steps.len() > MAX_STEPS {
        errors.push(err("steps", format!("a flow needs 1 to {MAX_STEPS} steps")));
    }
    let mut seen = BTreeMap::new();
    for (i, s) in doc.steps.iter().enumerate() {
        if !valid_id(&s.id) {
            errors.push(err(
                format!("steps[{i}].id"),
                "a step id is [a-z][a-z0-9_]*, at most 64 characters",
            ));
        } else if let Some(first) = seen.insert(s.id.as_str(), i) {
            errors.push(err(
                format!("steps[{i}].id"),
                format!("`{}` is already the id of steps[{first}]", s.id),
            ));
        }
    }
    let known: BTreeSet<&str> = doc.steps.iter().map(|s| s.id.as_str()).collect();
    let reference = |errors: &mut Vec<DocumentError>, path: String, target: &str| {
        if !known.contains(target) {
            errors.push(err(path, format!("there is no step `{target}`")));
        }
    };
    let expr = |errors: &mut Vec<DocumentError>, path: String, source: &str| {
        if let Err(e) = x.check_expression(source) {
            errors.push(err(path, format!("the expression does not parse: {e}")));
        }
    };
    let template = |errors: &mut Vec<DocumentError>, path: String, source: &str| {
        if let Err(e) = x.check_template(source) {
            errors.push(err(path, format!("the template does not parse: {e}")));
        }
    };
    for (i, s) in doc.steps.iter().enumerate() {
        let at = |field: &str| format!("steps[{i}].{field}");
        if let Some(next) = &s.next {
            reference(&mut errors, at("next"), next);
        }
        if let OnError::Goto(target) = &s.on_error {
            reference(&mut errors, at("on_error.goto"), target);
        }
        if let Some(r) = &s.retry
            && !(1..=10).contains(&r.max_attempts)
        {
            errors.push(err(at("retry.max_attempts"), "from 1 to 10 attempts"));
        }
        match &s.action {
            Action::Transform { set } => {
                for (name, source) in set {
                    expr(&mut errors, at(&format!("set.{name}")), source);
                }
            }
            Action::Condition {
                branches,
                otherwise,
            } => {
                for (b, branch) in branches.iter().enumerate() {
                    expr(
                        &mut errors,
                        at(&format!("branches[{b}].when")),
                        &branch.when,
                    );
                    reference(
                        &mut errors,
                        at(&format!("branches[{b}].goto")),
                        &branch.goto,
                    );
                }
                if let Some(o) = otherwise {
                    reference(&mut errors, at("otherwise"), o);
                }
            }
            Action::Respond { status, body } => {
                if !(100..=599).contains(status) {
                    errors.push(err(at("status"), "an HTTP status is 100 to 599"));
                }
                expr(&mut errors, at("body"), body);
            }
            Action::StoreGet { key } => template(&mut errors, at("key"), key),
            Action::StoreSet { key, value } => {
                template(&mut errors, at("key"), key);
                expr(&mut errors, at("value"), value);
            }
            Action::Http {
                method,
                url,
                headers,
                body,
                credential,
                timeout_ms,
            } => {
                if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(&method.as_str()) {
                    errors.push(err(
                        at("method"),
                        format!("`{method}` is not GET, POST, PUT, PATCH, DELETE or HEAD"),
                    ));
                }
                template(&mut errors, at("url"), url);
                for (name, value) in headers {
                    if http_header_name_ok(name) {
                        template(&mut errors, at(&format!("headers.{name}")), value);
                    } else {
                        errors.push(err(
                            at(&format!("headers.{name}")),
                            "not a valid header name",
                        ));
                    }
                }
                match body {
                    Some(HttpBody::Json { value }) => expr(&mut errors, at("body.value"), value),
                    Some(HttpBody::Form { fields }) => {
                        for (name, v) in fields {
                            template(&mut errors, at(&format!("body.fields.{name}")), v);
                        }
                    }
                    Some(HttpBody::Raw { content, .. }) => {
                        template(&mut errors, at("body.content"), content);
                    }
                    None => {}
                }
                if let Some(c) = credential
                    && !credential_exists(c)
                {
                    errors.push(err(
                        at("credential"),
                        format!("the team has no credential `{c}`"),
                    ));
                }
                if matches!(timeout_ms, Some(t) if *t == 0 || *t > 60_000) {
                    errors.push(err(at("timeout_ms"), "from 1 to 60000 milliseconds"));
                }
            }
            Action::Delay { seconds, until } => match (seconds, until) {
                (Some(s), None) if *s > MAX_DELAY_SECS => {
                    errors.push(err(at("seconds"), "at most 30 days"));
                }
                (Some(_), None) => {}
                (None, Some(u)) => expr(&mut errors, at("until"), u),
                _ => errors.push(err(
                    at("seconds"),
                    "a delay needs `seconds` or `until`, one of them",
                )),
            },
            Action::CallFlow { flow, input } => {
                if flow.parse::<kura_types::FlowId>().is_err() {
                    errors.push(err(at("flow"), "not a flow id"));
                }
                if let Some(i) = input {
                    expr(&mut errors, at("input"), i);
                }
            }
            Action::Fail { message } => template(&mut errors, at("message"), message),
            Action::Email(spec) => {
                for (field, message) in spec.check(&x, credential_exists) {
                    errors.push(err(at(&field), message));
                }
            }
            Action::Approval(spec) => {
                for (field, message) in spec.check(&x, credential_exists) {
                    errors.push(err(at(&field), message));
                }
                for (field, target) in spec.paths() {
                    reference(&mut errors, at(field), target);
                }
                if s.next.is_some() {
                    errors.push(err(
                        at("next"),
                        "an approval goes on at on_approve, on_reject or on_timeout, not next",
                    ));
                }
            }
            Action::App { .. } => crate::steps::apps::check(&s.action, &at, &x, &mut errors),
            Action::Loop { each, .. } => {
                crate::steps::looping::check(&s.action, &at, &x, &mut errors);
                errors.extend(check_body(each, &at("each"), credential_exists));
            }
        }
    }
    if errors.is_empty()
        && let Some(e) = find_cycle(doc)
    {
        errors.push(e);
    }
    errors
}

/// Checks a loop's `each` as the only step of a flow of its own, with the
/// paths moved under the loop (`steps[2].each.url`).
fn check_body(
    each: &Action,
    prefix: &str,
    credential_exists: &dyn Fn(&str) -> bool,
) -> Vec<DocumentError> {
    if matches!(each, Action::Loop { .. }) {
        return Vec::new();
    }
    let alone = FlowDocument {
        name: "each".into(),
        description: None,
        trigger: Trigger::Manual {},
        steps: vec![crate::document::Step {
            id: "each".into(),
            action: each.clone(),
            next: None,
            retry: None,
            on_error: OnError::Fail,
        }],
    };
    check(&alone, credential_exists)
        .into_iter()
        .map(|e| DocumentError {
            path: e.path.replacen("steps[0]", prefix, 1),
            message: e.message,
        })
        .collect()
}

fn http_header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The steps a step may go to, with the path of the field that says so.
fn edges(doc: &FlowDocument, i: usize) -> Vec<(usize, String)> {
    let s = &doc.steps[i];
    let mut out = Vec::new();
    let mut push = |target: Option<&str>, path: String| {
        if let Some(j) = target.and_then(|t| doc.index_of(t)) {
            out.push((j, path));
        }
    };
    let implicit = match (&s.next, &s.action) {
        (Some(n), _) => {
            push(Some(n), format!("steps[{i}].next"));
            false
        }
        (None, Action::Respond { .. } | Action::Fail { .. }) => {
            matches!(s.action, Action::Respond { .. })
        }
        // An approval always goes to one of its three paths.
        (None, Action::Approval(_)) => false,
        _ => true,
    };
    if let Action::Condition {
        branches,
        otherwise,
    } = &s.action
    {
        for (b, branch) in branches.iter().enumerate() {
            push(Some(&branch.goto), format!("steps[{i}].branches[{b}].goto"));
        }
        if let Some(o) = otherwise {
            push(Some(o), format!("steps[{i}].otherwise"));
        }
    }
    if let Action::Approval(a) = &s.action {
        for (field, target) in a.paths() {
            push(Some(target), format!("steps[{i}].{field}"));
        }
    }
    if implicit {
        push(doc.following(i), format!("steps[{i}]"));
    }
    if let OnError::Goto(t) = &s.on_error {
        push(Some(t), format!("steps[{i}].on_error.goto"));
    }
    out
}

/// Finds a cycle (loops are a step kind, not a graph shape) and names the
/// field that closes it.
fn find_cycle(doc: &FlowDocument) -> Option<DocumentError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let n = doc.steps.len();
    let mut marks = vec![Mark::New; n];
    for start in 0..n {
        if marks[start] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, Vec<(usize, String)>)> = vec![(start, edges(doc, start))];
        marks[start] = Mark::Open;
        while let Some((node, pending)) = stack.last_mut() {
            let node = *node;
            match pending.pop() {
                Some((j, path)) => match marks[j] {
                    Mark::Open => {
                        return Some(err(
                            path,
                            format!(
                                "this goes back to step `{}` and makes a cycle",
                                doc.steps[j].id
                            ),
                        ));
                    }
                    Mark::New => {
                        marks[j] = Mark::Open;
                        stack.push((j, edges(doc, j)));
                    }
                    Mark::Done => {}
                },
                None => {
                    marks[node] = Mark::Done;
                    stack.pop();
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(v: Value) -> Vec<DocumentError> {
        parse_document(v, &|c| c == "known").unwrap_err()
    }

    fn doc(steps: Value) -> Value {
        json!({"name": "f", "trigger": {"kind": "manual"}, "steps": steps})
    }

    #[test]
    fn a_good_document_parses_from_json_and_yaml() {
        let yaml = "name: f\ntrigger: {kind: webhook}\nsteps:\n  - id: t\n    kind: transform\n    set: {total: 'input.a + 1'}\n  - id: r\n    kind: respond\n    body: 'steps.t'\n";
        let v = parse_text(yaml, Format::Yaml).unwrap();
        let d = parse_document(v, &|_| false).unwrap();
        assert_eq!(d.steps.len(), 2);
        assert_eq!(d.steps[1].action.kind(), "respond");
    }

    #[test]
    fn problems_name_their_paths() {
        let e = errors(doc(json!([{"id": "a", "kind": "teleport"}])));
        assert_eq!(e[0].path, "steps[0].kind");
        let e = errors(doc(
            json!([{"id": "a", "kind": "transform", "set": {"x": "1 +"}}]),
        ));
        assert_eq!(e[0].path, "steps[0].set.x");
        let e = errors(doc(
            json!([{"id": "a", "kind": "delay", "seconds": 1, "next": "zz"}]),
        ));
        assert_eq!(e[0].path, "steps[0].next");
        let e = errors(doc(json!([{"id": "a", "kind": "http", "method": "GET",
            "url": "https://x", "credential": "nope"}])));
        assert_eq!(e[0].path, "steps[0].credential");
        let e = errors(doc(
            json!([{"id": "a", "kind": "transform", "set": {}, "bogus": 1}]),
        ));
        assert!(e[0].path.starts_with("steps[0]"), "{e:?}");
        let e = errors(
            json!({"name": "f", "trigger": {"kind": "schedule", "cron": "99 * * * *",
            "timezone": "Mars/Base"}, "steps": [{"id": "a", "kind": "delay", "seconds": 1}]}),
        );
        assert_eq!(e[0].path, "trigger.cron");
        assert_eq!(e[1].path, "trigger.timezone");
    }

    #[test]
    fn the_readme_example_is_a_valid_flow() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```yaml\nname: orders").unwrap() + "```yaml\n".len();
        let end = start + readme[start..].find("```").unwrap();
        let v = parse_text(&readme[start..end], Format::Yaml).unwrap();
        let d = parse_document(v, &|c| c == "crm").unwrap();
        assert_eq!(d.steps.len(), 4);
    }

    #[test]
    fn cycles_are_refused() {
        let e = errors(doc(json!([
            {"id": "a", "kind": "delay", "seconds": 1},
            {"id": "b", "kind": "condition", "branches": [{"when": "true", "goto": "a"}]},
        ])));
        assert_eq!(e[0].path, "steps[1].branches[0].goto");
        assert!(e[0].message.contains("cycle"));
        // Forward jumps are fine.
        parse_document(
            doc(json!([
                {"id": "a", "kind": "condition", "branches": [{"when": "input.x", "goto": "c"}]},
                {"id": "b", "kind": "delay", "seconds": 1},
                {"id": "c", "kind": "delay", "seconds": 1},
            ])),
            &|_| false,
        )
        .unwrap();
    }
}
