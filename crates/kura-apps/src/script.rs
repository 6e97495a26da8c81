//! App scripts: a small, safe list of steps run with the caller's
//! privileges inside the request's transaction. Steps can move to a layout,
//! create a record, set a field of the current record, find records, and
//! exit with a result. Values are templates: `{{param}}` (the script
//! parameter), `{{record_id}}`, `{{found_count}}` and `{{field:NAME}}` (a
//! field of the current record). There is no file, network or process
//! access, no loop, and so no way for a script to run unbounded.

use std::collections::{BTreeMap, HashMap};

use kura_store::app_data::{AppWrite, Cell, Filter};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::data::{self, Caller};
use crate::error::{AppsError, FmError};
use crate::schema::{Layout, Schema, ScriptDef};
use crate::value::{DateFormat, to_json};

/// One script step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Makes a layout current.
    GoToLayout(String),
    /// Creates a record on the current layout: field → value template.
    NewRecord(BTreeMap<String, String>),
    /// Sets a field of the current record.
    SetField {
        /// The field (on the current layout).
        field: String,
        /// The value template.
        value: String,
    },
    /// Finds records on the current layout: field → criterion template.
    /// The first match becomes the current record.
    Find(BTreeMap<String, String>),
    /// Stops, returning the template's value as `scriptResult`.
    ExitScript(String),
}

/// Checks a script's steps against the schema's layouts.
pub(crate) fn check(
    path: &str,
    script: &ScriptDef,
    layouts: &HashMap<String, usize>,
) -> Result<(), AppsError> {
    if script.steps.len() > 100 {
        return Err(AppsError::invalid(path, "a script has at most 100 steps"));
    }
    for (i, step) in script.steps.iter().enumerate() {
        if let Step::GoToLayout(name) = step
            && !layouts.contains_key(&name.to_lowercase())
        {
            return Err(AppsError::invalid(
                format!("{path}.steps[{i}]"),
                format!("there is no layout `{name}`"),
            ));
        }
    }
    Ok(())
}

/// What a script returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `scriptResult`, when the script exited with one.
    pub result: Option<String>,
    /// `scriptError`: 0, or the FileMaker code of the step that failed.
    pub error: i32,
}

struct State<'s> {
    layout: Option<&'s Layout>,
    record: Option<i64>,
    found: u64,
}

/// Runs a script.
pub fn run(
    w: &AppWrite<'_>,
    schema: &Schema,
    start: Option<&Layout>,
    caller: &Caller<'_>,
    script: &ScriptDef,
    param: &str,
    now: OffsetDateTime,
) -> Outcome {
    let mut state = State {
        layout: start,
        record: None,
        found: 0,
    };
    for step in &script.steps {
        match step_once(w, schema, caller, &mut state, step, param, now) {
            Ok(Some(result)) => {
                return Outcome {
                    result: Some(result),
                    error: 0,
                };
            }
            Ok(None) => {}
            Err(e) => {
                return Outcome {
                    result: None,
                    error: e.code,
                };
            }
        }
    }
    Outcome {
        result: None,
        error: 0,
    }
}

fn step_once<'s>(
    w: &AppWrite<'_>,
    schema: &'s Schema,
    caller: &Caller<'_>,
    state: &mut State<'s>,
    step: &Step,
    param: &str,
    now: OffsetDateTime,
) -> Result<Option<String>, FmError> {
    match step {
        Step::GoToLayout(name) => {
            state.layout = Some(schema.layout(name).ok_or_else(|| FmError::code(105))?);
            state.record = None;
            state.found = 0;
        }
        Step::NewRecord(values) => {
            let layout = state.layout.ok_or_else(|| FmError::code(105))?;
            let mut fields = Map::new();
            for (k, v) in values {
                fields.insert(
                    k.clone(),
                    Value::String(expand(w, schema, state, caller, v, param)?),
                );
            }
            let (rid, _) = data::create(
                w,
                schema,
                layout,
                caller,
                &fields,
                &Map::new(),
                DateFormat::Iso,
                now,
            )?;
            state.record = Some(rid);
            state.found = 1;
        }
        Step::SetField { field, value } => {
            let layout = state.layout.ok_or_else(|| FmError::code(105))?;
            let rid = state.record.ok_or_else(|| FmError::code(101))?;
            let mut fields = Map::new();
            fields.insert(
                field.clone(),
                Value::String(expand(w, schema, state, caller, value, param)?),
            );
            data::edit(
                w,
                schema,
                layout,
                caller,
                rid,
                None,
                &fields,
                &Map::new(),
                DateFormat::Iso,
                now,
            )?;
        }
        Step::Find(criteria) => {
            let layout = state.layout.ok_or_else(|| FmError::code(105))?;
            let mut request = Map::new();
            for (k, v) in criteria {
                request.insert(
                    k.clone(),
                    Value::String(expand(w, schema, state, caller, v, param)?),
                );
            }
            let query = Value::Array(vec![Value::Object(request)]);
            let filter = crate::find::query_filter(
                schema,
                layout,
                caller.privileges,
                &query,
                DateFormat::Iso,
                now,
            )?;
            let table = &schema.tables[layout.table];
            let filter = Filter::And(vec![
                filter,
                caller.privileges.view_filter(table.id, caller.account),
            ]);
            let r = w.read();
            state.found = r
                .count_matching(table.id, &filter)
                .map_err(|e| FmError::internal(&e))?;
            state.record = r
                .select(table.id, &filter, &[], 0, 1, &[])
                .map_err(|e| FmError::internal(&e))?
                .first()
                .map(|row| row.rid);
            if state.found == 0 {
                return Err(FmError::code(401));
            }
        }
        Step::ExitScript(template) => {
            return Ok(Some(expand(w, schema, state, caller, template, param)?));
        }
    }
    Ok(None)
}

fn expand(
    w: &AppWrite<'_>,
    schema: &Schema,
    state: &State<'_>,
    caller: &Caller<'_>,
    template: &str,
    param: &str,
) -> Result<String, FmError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| FmError::with(960, "unclosed `{{` in a script value"))?;
        let name = after[..end].trim();
        match name {
            "param" => out.push_str(param),
            "record_id" => out.push_str(&state.record.map(|r| r.to_string()).unwrap_or_default()),
            "found_count" => out.push_str(&state.found.to_string()),
            _ => {
                let field = name
                    .strip_prefix("field:")
                    .ok_or_else(|| {
                        FmError::with(960, format!("unknown template `{{{{{name}}}}}`"))
                    })?
                    .trim();
                out.push_str(&field_text(w, schema, state, caller, field)?);
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn field_text(
    w: &AppWrite<'_>,
    schema: &Schema,
    state: &State<'_>,
    caller: &Caller<'_>,
    name: &str,
) -> Result<String, FmError> {
    let layout = state.layout.ok_or_else(|| FmError::code(105))?;
    let table = &schema.tables[layout.table];
    let idx = table
        .field(name)
        .filter(|i| layout.fields.contains(i))
        .ok_or_else(|| FmError::with(102, format!("Field is missing (`{name}`)")))?;
    let field = &table.fields[idx];
    if caller.privileges.field_access(table.id, field.id) == crate::schema::FieldAccess::None {
        return Err(FmError::with(102, format!("Field is missing (`{name}`)")));
    }
    let cell = if field.def.global {
        caller.globals.get(&field.id).cloned().unwrap_or(Cell::Null)
    } else {
        let rid = state.record.ok_or_else(|| FmError::code(101))?;
        w.read()
            .get(table.id, rid, &[field.id])
            .map_err(|e| FmError::internal(&e))?
            .and_then(|row| row.cells.into_iter().next())
            .unwrap_or(Cell::Null)
    };
    Ok(match to_json(field.def.kind, &cell, DateFormat::Iso) {
        Value::String(s) => s,
        other => other.to_string(),
    })
}
