//! The `app` step: find, get, create, edit or delete records of a hosted
//! app of the flow's team, as a service account of that app. The apps
//! service applies the account's privilege set exactly as the Data API
//! does; writes carry the step's idempotency key, stored with the change,
//! so a resumed run that repeats the step gets the first result back.

use kura_apps::{AppsError, RecordOp, Target};
use kura_store::connect::RunRecord;
use kura_types::{AppId, TeamId};
use serde_json::{Map, Value, json};

use crate::document::{Action, AppOp, FlowDocument, Trigger};
use crate::engine::{Produced, StepFailure};
use crate::expr::Expressions;
use crate::service::Connect;
use crate::validate::{DocumentError, err};

/// The default and largest number of records a `find` returns.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 10_000;

/// Checks an `app` step's own fields (the target is checked against the
/// apps service by [`check_targets`]). `at` turns a field into its path.
pub(crate) fn check(
    action: &Action,
    at: &dyn Fn(&str) -> String,
    x: &Expressions,
    errors: &mut Vec<DocumentError>,
) {
    let Action::App {
        app,
        layout,
        account,
        op,
        record_id,
        fields,
        query,
        sort,
        limit,
    } = action
    else {
        return;
    };
    if app.parse::<AppId>().is_err() {
        errors.push(err(at("app"), "not an app id"));
    }
    if layout.trim().is_empty() {
        errors.push(err(at("layout"), "a layout name is needed"));
    }
    if account.trim().is_empty() {
        errors.push(err(at("account"), "a service account name is needed"));
    }
    let expr = |errors: &mut Vec<DocumentError>, path: String, source: &str| {
        if let Err(e) = x.check_expression(source) {
            errors.push(err(path, format!("the expression does not parse: {e}")));
        }
    };
    let needs_record = matches!(op, AppOp::Get | AppOp::Edit | AppOp::Delete);
    match (needs_record, record_id) {
        (true, Some(r)) => expr(errors, at("record_id"), r),
        (true, None) => errors.push(err(
            at("record_id"),
            format!("`{}` needs a record_id", op_name(*op)),
        )),
        (false, Some(_)) => errors.push(err(
            at("record_id"),
            format!("`{}` takes no record_id", op_name(*op)),
        )),
        (false, None) => {}
    }
    let takes_fields = matches!(op, AppOp::Create | AppOp::Edit);
    if takes_fields {
        if fields.is_empty() && *op == AppOp::Edit {
            errors.push(err(at("fields"), "`edit` needs fields to change"));
        }
        for (name, source) in fields {
            expr(errors, at(&format!("fields.{name}")), source);
        }
    } else if !fields.is_empty() {
        errors.push(err(
            at("fields"),
            format!("`{}` takes no fields", op_name(*op)),
        ));
    }
    if *op == AppOp::Find {
        if let Some(q) = query {
            expr(errors, at("query"), q);
        }
        if matches!(limit, Some(l) if *l == 0 || *l > MAX_LIMIT) {
            errors.push(err(at("limit"), format!("from 1 to {MAX_LIMIT} records")));
        }
    } else {
        for (name, given) in [
            ("query", query.is_some()),
            ("sort", !sort.is_empty()),
            ("limit", limit.is_some()),
        ] {
            if given {
                errors.push(err(at(name), "only `find` takes this"));
            }
        }
    }
}

fn op_name(op: AppOp) -> &'static str {
    match op {
        AppOp::Find => "find",
        AppOp::Get => "get",
        AppOp::Create => "create",
        AppOp::Edit => "edit",
        AppOp::Delete => "delete",
    }
}

/// Every place a document names an app target, with its path prefix.
fn targets(doc: &FlowDocument) -> Vec<(String, &str, &str, &str)> {
    let mut out = Vec::new();
    if let Trigger::AppEvent {
        app,
        layout,
        account,
        ..
    } = &doc.trigger
    {
        out.push((
            "trigger".to_owned(),
            app.as_str(),
            layout.as_str(),
            account.as_str(),
        ));
    }
    for (i, s) in doc.steps.iter().enumerate() {
        let (prefix, action) = match &s.action {
            Action::Loop { each, .. } => (format!("steps[{i}].each"), each.as_ref()),
            a => (format!("steps[{i}]"), a),
        };
        if let Action::App {
            app,
            layout,
            account,
            ..
        } = action
        {
            out.push((prefix, app.as_str(), layout.as_str(), account.as_str()));
        }
    }
    out
}

/// Checks every app target of a document against the team's apps: the
/// app is the team's, the layout exists and the account is an active
/// service account. Problems carry the path of the field at fault.
pub(crate) async fn check_targets(
    apps: &kura_apps::Apps,
    team: TeamId,
    doc: &FlowDocument,
) -> Result<Vec<DocumentError>, crate::ConnectError> {
    let mut errors = Vec::new();
    for (prefix, app, layout, account) in targets(doc) {
        let Ok(app) = app.parse::<AppId>() else {
            continue;
        };
        let target = Target {
            team,
            app,
            layout,
            account,
        };
        match apps.automation_access(target).await {
            Ok(_) => {}
            Err(AppsError::Invalid { field, message }) => {
                errors.push(err(format!("{prefix}.{field}"), message));
            }
            Err(AppsError::Store(e)) => return Err(e.into()),
            Err(other) => errors.push(err(format!("{prefix}.app"), other.to_string())),
        }
    }
    Ok(errors)
}

fn record_id(v: &Value) -> Result<i64, StepFailure> {
    let id = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    id.filter(|n| *n > 0)
        .ok_or_else(|| StepFailure::fatal(format!("`record_id` gave {v}, not a record id")))
}

impl Connect {
    /// Runs an `app` step.
    pub(crate) async fn run_app_step(
        &self,
        run: &RunRecord,
        action: &Action,
        scope: &Value,
        idempotency_key: Option<&str>,
        recorded: &mut Value,
    ) -> Result<Produced, StepFailure> {
        let Action::App {
            app,
            layout,
            account,
            op,
            record_id: rid_source,
            fields,
            query,
            sort,
            limit,
        } = action
        else {
            return Err(StepFailure::fatal("not an app step"));
        };
        let x = &self.inner.expr;
        let eval = |source: &str| x.eval(source, scope).map_err(StepFailure::fatal);
        let app_id: AppId = app
            .parse()
            .map_err(|_| StepFailure::fatal(format!("`{app}` is not an app id")))?;
        let rid = match rid_source {
            Some(source) => Some(record_id(&eval(source)?)?),
            None => None,
        };
        let mut values = Map::new();
        for (name, source) in fields {
            values.insert(name.clone(), eval(source)?);
        }
        let op = match (op, rid) {
            (AppOp::Find, _) => {
                let query = match query {
                    Some(source) => eval(source)?,
                    None => Value::Array(Vec::new()),
                };
                if !query.is_array() {
                    return Err(StepFailure::fatal(format!(
                        "`query` gave {query}, not a list of find requests"
                    )));
                }
                RecordOp::Find {
                    query,
                    sort: sort
                        .iter()
                        .map(|s| (s.field.clone(), s.descending))
                        .collect(),
                    offset: 1,
                    limit: limit.unwrap_or(DEFAULT_LIMIT),
                }
            }
            (AppOp::Create, _) => RecordOp::Create {
                fields: values.clone(),
            },
            (AppOp::Get, Some(rid)) => RecordOp::Get { rid },
            (AppOp::Edit, Some(rid)) => RecordOp::Edit {
                rid,
                fields: values.clone(),
            },
            (AppOp::Delete, Some(rid)) => RecordOp::Delete { rid },
            (_, None) => return Err(StepFailure::fatal("the step needs a record_id")),
        };
        *recorded = json!({
            "app": app,
            "layout": layout,
            "account": account,
            "op": op_name(match op {
                RecordOp::Find { .. } => AppOp::Find,
                RecordOp::Get { .. } => AppOp::Get,
                RecordOp::Create { .. } => AppOp::Create,
                RecordOp::Edit { .. } => AppOp::Edit,
                RecordOp::Delete { .. } => AppOp::Delete,
            }),
            "record_id": rid,
            "fields": values,
        });
        let target = Target {
            team: run.team,
            app: app_id,
            layout,
            account,
        };
        match self.inner.apps.automate(target, op, idempotency_key).await {
            Ok(v) => Ok(Produced::value(v)),
            Err(e) => Err(StepFailure {
                retryable: e.retryable(),
                message: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::validate::parse_document;

    const APP: &str = "01a216b3-486f-7059-ac7c-f538ccf8cec2";

    /// The path of the first problem of a one-step flow, or `None`.
    fn check(step: Value) -> Option<String> {
        let mut step = step;
        step["id"] = json!("a");
        let doc = json!({"name": "f", "trigger": {"kind": "manual"}, "steps": [step]});
        parse_document(doc, &|_| false)
            .err()
            .map(|e| e[0].path.clone())
    }

    fn app(op: &str, extra: Value) -> Value {
        let mut s =
            json!({"kind": "app", "app": APP, "layout": "orders", "account": "svc", "op": op});
        for (k, v) in extra.as_object().into_iter().flatten() {
            s[k] = v.clone();
        }
        s
    }

    #[test]
    fn each_operation_takes_exactly_its_fields() {
        assert_eq!(check(app("find", json!({"query": "[{'a': 1}]"}))), None);
        assert_eq!(check(app("get", json!({"record_id": "input.id"}))), None);
        assert_eq!(check(app("create", json!({"fields": {"a": "1"}}))), None);
        for (step, path) in [
            (app("find", json!({"app": "not-an-id"})), "steps[0].app"),
            (app("get", json!({})), "steps[0].record_id"),
            (
                app("create", json!({"record_id": "1"})),
                "steps[0].record_id",
            ),
            (app("edit", json!({"record_id": "1"})), "steps[0].fields"),
            (
                app("delete", json!({"record_id": "1", "fields": {"a": "1"}})),
                "steps[0].fields",
            ),
            (
                app("get", json!({"record_id": "1", "limit": 5})),
                "steps[0].limit",
            ),
            (app("find", json!({"limit": 0})), "steps[0].limit"),
            (app("find", json!({"query": "[{"})), "steps[0].query"),
            (
                app("create", json!({"fields": {"a": "1 +"}})),
                "steps[0].fields.a",
            ),
            (app("find", json!({"account": " "})), "steps[0].account"),
        ] {
            assert_eq!(check(step.clone()).as_deref(), Some(path), "{step}");
        }
    }

    #[test]
    fn a_loop_checks_its_body_at_the_body_path() {
        let body = |each: Value| json!({"kind": "loop", "over": "input.items", "each": each});
        assert_eq!(check(body(app("get", json!({"record_id": "item"})))), None);
        assert_eq!(
            check(body(app("get", json!({})))).as_deref(),
            Some("steps[0].each.record_id")
        );
        assert_eq!(
            check(body(json!({"kind": "loop", "over": "x",
                "each": {"kind": "transform", "set": {}}})))
            .as_deref(),
            Some("steps[0].each.kind")
        );
    }

    #[test]
    fn the_app_event_trigger_names_its_target() {
        let doc = json!({"name": "f",
            "trigger": {"kind": "app_event", "app": "x", "layout": "", "account": "svc"},
            "steps": [{"id": "a", "kind": "transform", "set": {}}]});
        let paths: Vec<String> = parse_document(doc, &|_| false)
            .unwrap_err()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, ["trigger.app", "trigger.layout"]);
    }
}
