//! The `loop` step: runs one step (`each`) per item of a list, up to a
//! concurrency limit, and collects the outputs in item order.
//!
//! Every iteration is a step record of its own, named `<loop>[<index>]`,
//! at a sequence number fixed by the loop's place in the run (the loop's
//! sequence number plus the index), and the loop's own record comes after
//! them. An iteration with side effects is recorded as started, with an
//! idempotency key, before it runs. A resumed run re-evaluates the list,
//! keeps the outputs of the iterations recorded as finished, reuses the
//! keys of those recorded as started, and runs only the rest.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use kura_store::connect::{RunRecord, StepRecord};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::document::{Action, OnError, Step};
use crate::engine::{Produced, StepFailure, backoff};
use crate::expr::Expressions;
use crate::service::Connect;
use crate::validate::{DocumentError, err};

/// The most items a loop runs over.
pub const MAX_ITEMS: usize = 1_000;
/// The most iterations at once.
pub const MAX_CONCURRENCY: u32 = 16;

/// The step kinds `each` may be.
const BODY_KINDS: &[&str] = &[
    "transform",
    "http",
    "store_get",
    "store_set",
    "app",
    "call_flow",
];

/// Checks a `loop` step's own fields; `each` is checked as a step of its
/// own by the caller (`check_body`).
pub(crate) fn check(
    action: &Action,
    at: &dyn Fn(&str) -> String,
    x: &Expressions,
    errors: &mut Vec<DocumentError>,
) {
    let Action::Loop {
        over,
        concurrency,
        each,
    } = action
    else {
        return;
    };
    if let Err(e) = x.check_expression(over) {
        errors.push(err(
            at("over"),
            format!("the expression does not parse: {e}"),
        ));
    }
    if !(1..=MAX_CONCURRENCY).contains(concurrency) {
        errors.push(err(
            at("concurrency"),
            format!("from 1 to {MAX_CONCURRENCY} iterations at once"),
        ));
    }
    if !BODY_KINDS.contains(&each.kind()) {
        errors.push(err(
            at("each.kind"),
            format!(
                "a loop runs one of {}, not `{}`",
                BODY_KINDS.join(", "),
                each.kind()
            ),
        ));
    }
}

/// A finished or started iteration found in the run's records.
enum Prior {
    Done(Value),
    Started(Option<String>),
}

type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<Produced, StepFailure>> + Send + 'a>>;

impl Connect {
    /// Runs a `loop` step whose first iteration has sequence number
    /// `base`; sets `used` to the number of sequence numbers the
    /// iterations take.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn run_loop(
        &self,
        run: &RunRecord,
        owner: &str,
        step: &Step,
        scope: &Value,
        base: u32,
        used: &mut u32,
        recorded: &mut Value,
    ) -> Result<Produced, StepFailure> {
        let Action::Loop {
            over,
            concurrency,
            each,
        } = &step.action
        else {
            return Err(StepFailure::fatal("not a loop step"));
        };
        let list = self
            .inner
            .expr
            .eval(over, scope)
            .map_err(StepFailure::fatal)?;
        let Value::Array(items) = list else {
            return Err(StepFailure::fatal(format!(
                "`over` gave {list}, not a list"
            )));
        };
        if items.len() > MAX_ITEMS {
            return Err(StepFailure::fatal(format!(
                "`over` gave {} items; a loop takes at most {MAX_ITEMS}",
                items.len()
            )));
        }
        let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
        *used = count;
        *recorded = json!({"items": count, "concurrency": concurrency});
        let mut prior: HashMap<usize, Prior> = HashMap::new();
        for r in self.inner.store.steps(run.id).await? {
            let Some(i) = iteration_index(&step.id, &r.step) else {
                continue;
            };
            if i >= items.len() || Some(r.seq) != base.checked_add(count_of(i)) {
                continue;
            }
            match r.status.as_str() {
                "succeeded" => {
                    let out = r
                        .output
                        .as_deref()
                        .and_then(|o| serde_json::from_str(o).ok())
                        .unwrap_or(Value::Null);
                    prior.insert(i, Prior::Done(out));
                }
                "started" => {
                    prior.insert(i, Prior::Started(r.idempotency_key));
                }
                _ => {}
            }
        }
        let mut outputs: Vec<Option<Value>> = vec![None; items.len()];
        let mut keys: Vec<Option<String>> = vec![None; items.len()];
        for (i, p) in prior {
            match p {
                Prior::Done(v) => outputs[i] = Some(v),
                Prior::Started(k) => keys[i] = k,
            }
        }
        let mut pending = (0..items.len())
            .filter(|i| outputs[*i].is_none())
            .collect::<Vec<_>>();
        pending.reverse();
        let limit = usize::try_from((*concurrency).clamp(1, MAX_CONCURRENCY)).unwrap_or(1);
        let mut tasks = JoinSet::new();
        let mut failure: Option<(usize, StepFailure)> = None;
        loop {
            while tasks.len() < limit && failure.is_none() {
                let Some(i) = pending.pop() else { break };
                let mut iscope = scope.clone();
                if let Some(obj) = iscope.as_object_mut() {
                    obj.insert("item".into(), items[i].clone());
                    obj.insert("index".into(), json!(i));
                }
                let body = Step {
                    id: format!("{}[{i}]", step.id),
                    action: (**each).clone(),
                    next: None,
                    retry: step.retry.clone(),
                    on_error: OnError::Fail,
                };
                let (this, run, owner, key) =
                    (self.clone(), run.clone(), owner.to_owned(), keys[i].take());
                let seq = base.saturating_add(count_of(i));
                tasks.spawn(async move {
                    let r = this.iteration(&run, &owner, &body, iscope, seq, key).await;
                    (i, r)
                });
            }
            match tasks.join_next().await {
                None => break,
                Some(Ok((i, Ok(v)))) => outputs[i] = Some(v),
                Some(Ok((i, Err(f)))) => {
                    if failure.is_none() {
                        failure = Some((i, f));
                    }
                }
                Some(Err(e)) => {
                    if failure.is_none() {
                        failure = Some((usize::MAX, StepFailure::fatal(e.to_string())));
                    }
                }
            }
        }
        if let Some((i, f)) = failure {
            // Each iteration already used the step's retry policy.
            return Err(StepFailure {
                message: format!("iteration {i}: {}", f.message),
                retryable: false,
            });
        }
        Ok(Produced::value(Value::Array(
            outputs.into_iter().map(Option::unwrap_or_default).collect(),
        )))
    }

    /// Runs one iteration with the step's retry policy and records it.
    async fn iteration(
        &self,
        run: &RunRecord,
        owner: &str,
        body: &Step,
        scope: Value,
        seq: u32,
        key: Option<String>,
    ) -> Result<Value, StepFailure> {
        let inner = &self.inner;
        let started_at = inner.clock.now();
        // A long loop keeps its run: every iteration extends the lease.
        if !inner
            .store
            .renew_lease(run.id, owner, started_at + inner.config.lease)
            .await?
        {
            return Err(StepFailure::fatal("the run was cancelled or taken over"));
        }
        let mut idempotency_key = None;
        if body.action.has_side_effects() {
            let key = key.unwrap_or_else(|| format!("{}:{}:{seq}", run.id, body.id));
            let record = StepRecord {
                run: run.id,
                seq,
                step: body.id.clone(),
                status: "started".into(),
                input: "{}".into(),
                output: None,
                error: None,
                attempts: 0,
                idempotency_key: Some(key.clone()),
                started_at,
                finished_at: None,
            };
            if !inner.store.start_step(owner, record).await? {
                return Err(StepFailure::fatal("the run was cancelled or taken over"));
            }
            idempotency_key = Some(key);
        }
        let max_attempts = body.retry.as_ref().map_or(1, |r| r.max_attempts.max(1));
        let mut attempts = 0;
        let mut secrets = Vec::new();
        let mut recorded = Value::Null;
        let result = loop {
            attempts += 1;
            // Boxed so the spawned iteration's future has a nameable,
            // `Send` type.
            let fut: StepFuture<'_> = Box::pin(self.run_step(
                run,
                owner,
                body,
                &scope,
                idempotency_key.as_deref(),
                &mut secrets,
                &mut recorded,
            ));
            match fut.await {
                Err(f) if f.retryable && attempts < max_attempts => {
                    tokio::time::sleep(backoff(body, attempts)).await;
                }
                other => break other,
            }
        };
        let redact = |text: String| crate::credentials::redact(text, &secrets);
        let (status, output, error) = match &result {
            Ok(p) => ("succeeded", Some(redact(p.value.to_string())), None),
            Err(f) => ("failed", None, Some(redact(f.message.clone()))),
        };
        let record = StepRecord {
            run: run.id,
            seq,
            step: body.id.clone(),
            status: status.into(),
            input: redact(recorded.to_string()),
            output,
            error,
            attempts,
            idempotency_key,
            started_at,
            finished_at: Some(inner.clock.now()),
        };
        if !inner.store.start_step(owner, record).await? {
            return Err(StepFailure::fatal("the run was cancelled or taken over"));
        }
        result.map(|p| p.value)
    }
}

fn count_of(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// `Some(i)` when `name` is `<loop>[<i>]`.
fn iteration_index(loop_id: &str, name: &str) -> Option<usize> {
    name.strip_prefix(loop_id)?
        .strip_prefix('[')?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::iteration_index;

    #[test]
    fn iteration_names_parse_only_for_their_loop() {
        assert_eq!(iteration_index("each", "each[3]"), Some(3));
        assert_eq!(iteration_index("each", "each_other[3]"), None);
        assert_eq!(iteration_index("each", "each"), None);
        assert_eq!(iteration_index("each", "each[x]"), None);
    }
}
