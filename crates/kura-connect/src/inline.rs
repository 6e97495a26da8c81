//! Runs that execute whole in the request.
//!
//! A flow whose steps all only compute — `transform`, `condition`,
//! `respond`, `fail` — touches nothing outside its run and never pauses.
//! A webhook run of such a flow executes in memory in the request task and
//! is recorded, finished, with every step record, in one write transaction
//! before the webhook is answered (see [`ConnectStore::insert_finished_run`]).
//!
//! Why that is as durable as step-by-step recording: nothing the run does
//! is visible outside it until that commit. A crash before the commit
//! leaves no trace and the webhook unanswered — the same as the request
//! never having arrived, which its sender must already handle; a crash
//! after it finds the run finished with its steps, as the durable engine
//! would have left it. Running the steps again cannot do anything twice,
//! so no step needs an idempotency key or a "started" record. Steps with
//! side effects or waits (`http`, `email`, `app`, `store_set`, `call_flow`,
//! `approval`, `delay`, `loop`, …) keep the engine's per-step durability.
//!
//! [`ConnectStore::insert_finished_run`]: kura_store::connect::ConnectStore::insert_finished_run

use kura_store::connect::{FinishedRun, FlowRecord, RunRecord, RunStatus, StepRecord};
use serde_json::{Value, json};

use crate::ConnectError;
use crate::compiled::CompiledFlow;
use crate::document::{Action, FlowDocument, OnError, Step};
use crate::engine::{Produced, StepFailure, truthy};
use crate::expr::Expressions;
use crate::service::{Connect, InlineRun};

/// Runs one computing step against `scope`; `recorded` gets what the step
/// record shows as its input. The durable engine runs these steps through
/// here too, so both paths compute and record them alike.
pub(crate) fn compute_step(
    x: &Expressions,
    step: &Step,
    scope: &Value,
    recorded: &mut Value,
) -> Result<Produced, StepFailure> {
    let eval = |source: &str| x.eval(source, scope).map_err(StepFailure::fatal);
    let done = Produced::value;
    match &step.action {
        Action::Transform { set } => {
            let mut out = serde_json::Map::new();
            for (name, source) in set {
                out.insert(name.clone(), eval(source)?);
            }
            *recorded = json!({"fields": set.keys().collect::<Vec<_>>()});
            Ok(done(Value::Object(out)))
        }
        Action::Condition {
            branches,
            otherwise,
        } => {
            for b in branches {
                if truthy(&eval(&b.when)?) {
                    return Ok(Produced {
                        goto: Some(b.goto.clone()),
                        ..done(json!({"branch": b.goto}))
                    });
                }
            }
            Ok(Produced {
                goto: otherwise.clone(),
                ..done(json!({"branch": otherwise}))
            })
        }
        Action::Respond { status, body } => {
            let value = eval(body)?;
            Ok(Produced {
                response: Some(json!({"status": status, "body": value})),
                ..done(json!({"status": status, "body": value}))
            })
        }
        Action::Fail { message } => Err(StepFailure::fatal(
            x.render(message, scope).map_err(StepFailure::fatal)?,
        )),
        other => Err(StepFailure::fatal(format!(
            "a `{}` step cannot run without the engine",
            other.kind()
        ))),
    }
}

/// What an in-memory run came to.
struct Outcome {
    status: RunStatus,
    context: String,
    response: Option<String>,
    error: Option<String>,
    steps: Vec<StepRecord>,
}

impl Connect {
    /// Executes a run of a flow of computing steps in memory and records
    /// it finished in one transaction (queued instead if the team is at
    /// its concurrency limit).
    pub(crate) async fn run_inline(
        &self,
        flow: &FlowRecord,
        compiled: &CompiledFlow,
        trigger: &str,
        input: Value,
    ) -> Result<InlineRun, ConnectError> {
        let inner = &self.inner;
        let doc = &compiled.document;
        let new = Self::new_run(flow, doc, trigger, &input, inner.clock.now());
        let first = new.first_step.clone();
        let o = self.compute(new.id, doc, flow.version, first, input);
        let finished_at = inner.clock.now();
        let record = RunRecord {
            id: new.id,
            team: new.team,
            flow: new.flow,
            version: new.version,
            status: o.status,
            trigger: new.trigger.clone(),
            input: new.input.clone(),
            context: o.context.clone(),
            next_step: None,
            steps_done: o.steps.last().map_or(0, |s| s.seq),
            response: o.response.clone(),
            error: o.error.clone(),
            claims: 0,
            lease_owner: None,
            lease_until: None,
            not_before: new.at,
            created_at: new.at,
            started_at: Some(new.at),
            finished_at: Some(finished_at),
        };
        let id = new.id;
        let ran = inner
            .store
            .insert_finished_run(
                FinishedRun {
                    new,
                    status: o.status,
                    context: o.context,
                    response: o.response,
                    error: o.error,
                    steps: o.steps,
                    finished_at,
                },
                inner.config.team_concurrency,
            )
            .await?;
        if ran {
            return Ok(InlineRun { run: record, ran });
        }
        // Queued behind the team's running runs: a worker runs it.
        inner.wake.notify_one();
        let run = inner
            .store
            .run(id)
            .await?
            .ok_or(ConnectError::NotFound("run"))?;
        Ok(InlineRun { run, ran })
    }

    /// Runs the steps from `first` as the engine would, keeping the step
    /// records instead of writing each one.
    fn compute(
        &self,
        run: kura_types::RunId,
        doc: &FlowDocument,
        version: u32,
        first: Option<String>,
        input: Value,
    ) -> Outcome {
        let inner = &self.inner;
        let mut scope = json!({"input": input, "steps": {}});
        let mut records: Vec<StepRecord> = Vec::new();
        let mut response = None;
        let mut failure = None;
        let mut next = first;
        while let Some(step_id) = next.take() {
            let Some(idx) = doc.index_of(&step_id) else {
                failure = Some(format!("no step `{step_id}` in version {version}"));
                break;
            };
            if records.len() >= doc.steps.len() {
                // Saved documents have no cycles; this only guards a
                // document that was stored some other way.
                failure = Some(format!(
                    "step `{step_id}` would run twice: the flow has a cycle"
                ));
                break;
            }
            let step = &doc.steps[idx];
            let started_at = inner.clock.now();
            let mut recorded = Value::Null;
            let result = compute_step(&inner.expr, step, &scope, &mut recorded);
            let following = step
                .next
                .clone()
                .or_else(|| doc.following(idx).map(str::to_owned));
            let (status, output, error);
            match result {
                Ok(p) => {
                    next = p.goto.or(following);
                    if let Some(r) = p.response {
                        response = Some(r.to_string());
                    }
                    status = "succeeded";
                    output = Some(p.value.to_string());
                    error = None;
                    if let Some(steps) = scope["steps"].as_object_mut() {
                        steps.insert(step.id.clone(), p.value);
                    }
                }
                Err(f) => {
                    status = "failed";
                    output = None;
                    match &step.on_error {
                        OnError::Fail => {
                            failure = Some(format!("step `{}` failed: {}", step.id, f.message));
                        }
                        OnError::Continue | OnError::Goto(_) => {
                            next = match &step.on_error {
                                OnError::Goto(t) => Some(t.clone()),
                                _ => following,
                            };
                            if let Some(steps) = scope["steps"].as_object_mut() {
                                steps.insert(step.id.clone(), json!({"error": f.message}));
                            }
                        }
                    }
                    error = Some(f.message);
                }
            }
            records.push(StepRecord {
                run,
                seq: u32::try_from(records.len() + 1).unwrap_or(u32::MAX),
                step: step.id.clone(),
                status: status.into(),
                input: recorded.to_string(),
                output,
                error,
                attempts: 1,
                idempotency_key: None,
                started_at,
                finished_at: Some(inner.clock.now()),
            });
            if failure.is_some() {
                break;
            }
        }
        Outcome {
            status: if failure.is_some() {
                RunStatus::Failed
            } else {
                RunStatus::Succeeded
            },
            context: scope["steps"].to_string(),
            response,
            error: failure,
            steps: records,
        }
    }
}
