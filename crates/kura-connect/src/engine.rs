//! The durable engine: runs a claimed run step by step, writing each step's
//! record and the run's next position in one transaction, so a worker that
//! stops at any point leaves a run another worker can resume.
//!
//! A step with side effects (`http`, `store_set`, `call_flow`, `email`) is
//! first recorded as started with an idempotency key; a resumed run that
//! finds it started sends the same key again (`Idempotency-Key` header, the
//! e-mail's `Message-ID`), and a step that was recorded as finished is
//! never run again.

use std::time::Duration;

use kura_store::connect::{RunAdvance, RunRecord, RunStatus, StepRecord};
use kura_types::{Actor, Outcome, SecurityEvent};
use serde_json::{Value, json};

use crate::document::{Action, HttpBody, OnError, Step};
use crate::outbound::{OutboundError, OutboundRequest};
use crate::service::Connect;

/// What a step produced.
pub(crate) struct Produced {
    pub value: Value,
    pub goto: Option<String>,
    pub response: Option<Value>,
    pub wait: Option<Duration>,
    /// The step record's status when not `succeeded` (`waiting`).
    pub label: Option<&'static str>,
}

impl Produced {
    /// A plain output.
    pub fn value(value: Value) -> Self {
        Self {
            value,
            goto: None,
            response: None,
            wait: None,
            label: None,
        }
    }
}

/// Why a step failed.
pub(crate) struct StepFailure {
    pub message: String,
    pub retryable: bool,
}

impl StepFailure {
    pub(crate) fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

impl Connect {
    /// Runs a claimed run until it ends, waits or loses its lease.
    pub(crate) async fn execute(&self, run: RunRecord, owner: String) {
        if let Err(e) = self.execute_inner(&run, &owner).await {
            tracing::error!(run = %run.id, error = %e, "connect run stopped on a storage error");
        }
    }

    async fn execute_inner(&self, run: &RunRecord, owner: &str) -> Result<(), crate::ConnectError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        if run.claims > inner.config.max_takeovers {
            inner
                .store
                .finish_run(
                    run.id,
                    Some(owner),
                    RunStatus::DeadLetter,
                    &format!(
                        "dead letter: the run lost its worker {} times (a step may crash or hang the worker)",
                        run.claims
                    ),
                    now,
                )
                .await?;
            return Ok(());
        }
        let Some(compiled) = self
            .compiled_version(run.team, run.flow, run.version)
            .await?
        else {
            inner
                .store
                .finish_run(
                    run.id,
                    Some(owner),
                    RunStatus::Failed,
                    "the flow version is gone",
                    now,
                )
                .await?;
            return Ok(());
        };
        let doc = &compiled.document;
        let input: Value = serde_json::from_str(&run.input).unwrap_or(Value::Null);
        let mut steps: Value = serde_json::from_str(&run.context).unwrap_or_else(|_| json!({}));
        if !steps.is_object() {
            steps = json!({});
        }
        let mut next = run.next_step.clone();
        let mut seq = run.steps_done;
        while let Some(step_id) = next.take() {
            let Some(idx) = doc.index_of(&step_id) else {
                inner
                    .store
                    .finish_run(
                        run.id,
                        Some(owner),
                        RunStatus::Failed,
                        &format!("no step `{step_id}` in version {}", run.version),
                        inner.clock.now(),
                    )
                    .await?;
                return Ok(());
            };
            let step = &doc.steps[idx];
            seq += 1;
            let started_at = inner.clock.now();
            let scope = json!({"input": input, "steps": steps});
            let mut secrets = Vec::new();
            let mut idempotency_key = None;
            if step.action.has_side_effects() {
                let key = match inner.store.started_step(run.id, &step.id).await? {
                    Some(prev) => {
                        seq = prev.seq;
                        prev.idempotency_key
                    }
                    None => None,
                }
                .unwrap_or_else(|| format!("{}:{}:{seq}", run.id, step.id));
                let record = StepRecord {
                    run: run.id,
                    seq,
                    step: step.id.clone(),
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
                    return Ok(());
                }
                idempotency_key = Some(key);
            }
            let max_attempts = step.retry.as_ref().map_or(1, |r| r.max_attempts.max(1));
            let mut attempts = 0;
            let mut recorded_input = Value::Null;
            let base = seq;
            let mut loop_seqs = 0;
            let result = loop {
                attempts += 1;
                let r = if matches!(step.action, Action::Loop { .. }) {
                    // Iterations take the sequence numbers from `base`; the
                    // loop's own record follows them.
                    self.run_loop(
                        run,
                        owner,
                        step,
                        &scope,
                        base,
                        &mut loop_seqs,
                        &mut recorded_input,
                    )
                    .await
                } else {
                    self.run_step(
                        run,
                        owner,
                        step,
                        &scope,
                        idempotency_key.as_deref(),
                        &mut secrets,
                        &mut recorded_input,
                    )
                    .await
                };
                match r {
                    Err(f) if f.retryable && attempts < max_attempts => {
                        tokio::time::sleep(backoff(step, attempts)).await;
                    }
                    other => break other,
                }
            };
            seq = base + loop_seqs;
            let at = inner.clock.now();
            let following = step
                .next
                .clone()
                .or_else(|| doc.following(idx).map(str::to_owned));
            let (status_text, output, error, status, not_before, response, run_error);
            match result {
                Ok(p) => {
                    next = p.goto.or(following);
                    if let Some(obj) = steps.as_object_mut() {
                        obj.insert(step.id.clone(), p.value.clone());
                    }
                    status_text = p.label.unwrap_or("succeeded");
                    output = Some(p.value);
                    error = None;
                    response = p.response.map(|r| r.to_string());
                    run_error = None;
                    (status, not_before) = match p.wait {
                        Some(d) => (RunStatus::Waiting, Some(at + d)),
                        None if next.is_none() => (RunStatus::Succeeded, None),
                        None => (RunStatus::Running, None),
                    };
                }
                Err(f) => {
                    status_text = "failed";
                    output = None;
                    error = Some(f.message.clone());
                    response = None;
                    not_before = None;
                    let failed = json!({"error": f.message});
                    match &step.on_error {
                        OnError::Fail => {
                            next = None;
                            status = RunStatus::Failed;
                            run_error = Some(format!("step `{}` failed: {}", step.id, f.message));
                        }
                        OnError::Continue | OnError::Goto(_) => {
                            if let Some(obj) = steps.as_object_mut() {
                                obj.insert(step.id.clone(), failed);
                            }
                            next = match &step.on_error {
                                OnError::Goto(t) => Some(t.clone()),
                                _ => following,
                            };
                            status = if next.is_none() {
                                RunStatus::Succeeded
                            } else {
                                RunStatus::Running
                            };
                            run_error = None;
                        }
                    }
                }
            }
            let redact = |text: String| crate::credentials::redact(text, &secrets);
            let advance = RunAdvance {
                run: run.id,
                owner: owner.to_owned(),
                step: StepRecord {
                    run: run.id,
                    seq,
                    step: step.id.clone(),
                    status: status_text.into(),
                    input: redact(recorded_input.to_string()),
                    output: output.map(|o| redact(o.to_string())),
                    error: error.map(redact),
                    attempts,
                    idempotency_key: idempotency_key.clone(),
                    started_at,
                    finished_at: Some(at),
                },
                context: redact(steps.to_string()),
                next_step: if status.is_final() {
                    None
                } else {
                    next.clone()
                },
                status,
                not_before,
                response: response.map(redact),
                error: run_error.map(redact),
                lease_until: Some(at + inner.config.lease),
                at,
            };
            if !inner.store.advance(advance).await? {
                // Cancelled, or another worker took the run over.
                return Ok(());
            }
            if status != RunStatus::Running {
                if status == RunStatus::Waiting {
                    if matches!(step.action, Action::Approval(_)) {
                        self.approval_paused(run.id, &step.id).await;
                    }
                    inner.wake.notify_one();
                }
                return Ok(());
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn run_step(
        &self,
        run: &RunRecord,
        owner: &str,
        step: &Step,
        scope: &Value,
        idempotency_key: Option<&str>,
        secrets: &mut Vec<String>,
        recorded: &mut Value,
    ) -> Result<Produced, StepFailure> {
        let x = &self.inner.expr;
        let eval = |source: &str| x.eval(source, scope).map_err(StepFailure::fatal);
        let render = |source: &str| x.render(source, scope).map_err(StepFailure::fatal);
        let done = Produced::value;
        match &step.action {
            Action::Transform { .. }
            | Action::Condition { .. }
            | Action::Respond { .. }
            | Action::Fail { .. } => crate::inline::compute_step(x, step, scope, recorded),
            Action::StoreGet { key } => {
                let key = render(key)?;
                *recorded = json!({"key": key});
                let v = self
                    .inner
                    .store
                    .kv_get(run.team, &key)
                    .await
                    .map_err(|e| StepFailure {
                        message: e.to_string(),
                        retryable: true,
                    })?;
                Ok(done(
                    v.and_then(|t| serde_json::from_str(&t).ok())
                        .unwrap_or(Value::Null),
                ))
            }
            Action::StoreSet { key, value } => {
                let key = render(key)?;
                let value = eval(value)?;
                *recorded = json!({"key": key});
                self.inner
                    .store
                    .kv_set(run.team, &key, &value.to_string(), self.inner.clock.now())
                    .await
                    .map_err(|e| StepFailure {
                        message: e.to_string(),
                        retryable: true,
                    })?;
                Ok(done(json!({"key": key, "value": value})))
            }
            Action::Delay { seconds, until } => {
                let wait = match (seconds, until) {
                    (Some(s), _) => Duration::from_secs(*s),
                    (None, Some(source)) => {
                        let v = eval(source)?;
                        let text = v.as_str().ok_or_else(|| {
                            StepFailure::fatal(format!("`until` gave {v}, not an RFC 3339 time"))
                        })?;
                        let at = time::OffsetDateTime::parse(
                            text,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .map_err(|e| StepFailure::fatal(format!("`until` {text:?}: {e}")))?;
                        let ahead = (at - self.inner.clock.now()).max(time::Duration::ZERO);
                        let ahead = Duration::try_from(ahead).unwrap_or_default();
                        if ahead.as_secs() > crate::validate::MAX_DELAY_SECS {
                            return Err(StepFailure::fatal("`until` is more than 30 days ahead"));
                        }
                        ahead
                    }
                    (None, None) => Duration::ZERO,
                };
                Ok(Produced {
                    wait: Some(wait),
                    ..done(
                        json!({"waited_ms": u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)}),
                    )
                })
            }
            Action::Email(spec) => {
                self.email_step(run, spec, scope, idempotency_key, secrets, recorded)
                    .await
            }
            Action::Approval(spec) => {
                self.approval_step(run, owner, step, spec, scope, secrets, recorded)
                    .await
            }
            Action::App { .. } => {
                self.run_app_step(run, &step.action, scope, idempotency_key, recorded)
                    .await
            }
            Action::Loop { .. } => Err(StepFailure::fatal("a loop cannot run inside a loop")),
            Action::CallFlow { flow, input } => {
                let child_input = match input {
                    Some(source) => eval(source)?,
                    None => scope["input"].clone(),
                };
                *recorded = json!({"flow": flow, "input": child_input});
                let key = idempotency_key.unwrap_or_default();
                let child = self
                    .call_flow(run, flow, child_input, key)
                    .await
                    .map_err(|e| StepFailure::fatal(e.to_string()))?;
                Ok(done(json!({"run": child.to_string()})))
            }
            Action::Http {
                method,
                url,
                headers,
                body,
                credential,
                timeout_ms,
            } => {
                let url = render(url)?;
                let mut hs = Vec::new();
                for (k, v) in headers {
                    hs.push((k.clone(), render(v)?));
                }
                let body = match body {
                    None => None,
                    Some(HttpBody::Json { value }) => Some((
                        eval(value)?.to_string().into_bytes(),
                        "application/json".to_owned(),
                    )),
                    Some(HttpBody::Form { fields }) => {
                        let mut pairs = Vec::new();
                        for (k, v) in fields {
                            pairs.push((k.clone(), render(v)?));
                        }
                        let encoded = form_encode(&pairs);
                        Some((
                            encoded.into_bytes(),
                            "application/x-www-form-urlencoded".into(),
                        ))
                    }
                    Some(HttpBody::Raw {
                        content,
                        content_type,
                    }) => Some((render(content)?.into_bytes(), content_type.clone())),
                };
                *recorded = json!({
                    "method": method,
                    "url": url,
                    "headers": hs.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                    "body": body.as_ref().map(|(b, _)| String::from_utf8_lossy(b).into_owned()),
                    "credential": credential,
                });
                if let Some(name) = credential {
                    let secret = self
                        .open_credential(run.team, name)
                        .await
                        .map_err(|e| StepFailure::fatal(e.to_string()))?;
                    if secret.kind == crate::credentials::CredentialKind::Oauth2 {
                        let token = self
                            .oauth_access_token(run.team, name, &secret, secrets)
                            .await
                            .map_err(|e| StepFailure::fatal(e.to_string()))?;
                        hs.push(("Authorization".into(), format!("Bearer {}", token.as_str())));
                    } else {
                        let (header, value, exposed) = secret.header().ok_or_else(|| {
                            StepFailure::fatal(format!("credential `{name}` is not for HTTP"))
                        })?;
                        secrets.extend(exposed);
                        hs.push((header, value));
                    }
                }
                if let Some(k) = idempotency_key {
                    hs.push(("Idempotency-Key".into(), k.to_owned()));
                }
                let method = reqwest::Method::from_bytes(method.as_bytes())
                    .map_err(|e| StepFailure::fatal(e.to_string()))?;
                let req = OutboundRequest {
                    method,
                    url: url.clone(),
                    headers: hs,
                    body,
                    timeout: timeout_ms.map(Duration::from_millis),
                };
                match self.inner.config.outbound.send(req).await {
                    Ok(resp) => {
                        let text = String::from_utf8_lossy(&resp.body).into_owned();
                        let body =
                            serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
                        if resp.status >= 500 || resp.status == 429 {
                            return Err(StepFailure {
                                message: format!("the server answered {}", resp.status),
                                retryable: true,
                            });
                        }
                        Ok(done(json!({"status": resp.status, "body": body})))
                    }
                    Err(OutboundError::Refused(reason)) => {
                        self.refused(run, &url, &reason).await;
                        Err(StepFailure::fatal(format!(
                            "outbound call refused: {reason}"
                        )))
                    }
                    Err(OutboundError::Failed(reason)) => Err(StepFailure {
                        message: reason,
                        retryable: true,
                    }),
                }
            }
        }
    }

    pub(crate) async fn refused(&self, run: &RunRecord, url: &str, reason: &str) {
        let Ok(action) = kura_types::Action::parse("connect.outbound.refused") else {
            return;
        };
        let event = SecurityEvent::new(
            self.inner.clock.now(),
            Actor::System {
                component: "kura-connect".into(),
            },
            action,
            Outcome::Denied,
        )
        .with_team(run.team)
        .with_target(format!("flow:{}", run.flow))
        .with_detail("run", run.id.to_string())
        .with_detail("url", url.to_owned())
        .with_detail("reason", reason.to_owned());
        if let Err(e) = self.inner.events.record(event).await {
            tracing::error!(error = %e, "cannot record an SSRF refusal");
        }
    }
}

pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Exponential back-off with full jitter: a random wait up to
/// `initial * 2^(attempt-1)`, capped.
pub(crate) fn backoff(step: &Step, attempt: u32) -> Duration {
    let (initial, max) = step
        .retry
        .as_ref()
        .map_or((200, 10_000), |r| (r.initial_backoff_ms, r.max_backoff_ms));
    let ceiling = initial
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(max)
        .max(1);
    let r = kura_crypto::random::array::<8>().map_or(0, u64::from_le_bytes);
    Duration::from_millis(r % ceiling + 1)
}

fn form_encode(pairs: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

impl From<kura_store::StoreError> for StepFailure {
    fn from(e: kura_store::StoreError) -> Self {
        Self {
            message: e.to_string(),
            retryable: true,
        }
    }
}
