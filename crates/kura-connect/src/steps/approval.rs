//! The `approval` step: a run waits, holding no worker, until a named team
//! member approves or rejects, or the time runs out.
//!
//! On its first visit the step opens an approval (with a
//! `connect.approval.requested` event in the same transaction) and the run
//! waits until the timeout. A decision — through the API, or through a
//! one-time link mailed to an approver (a random 256-bit token of which
//! only the SHA-256 is stored; it works once and dies with the approval) —
//! is a compare-and-swap on the pending approval, committed with its
//! security event, and makes the run due at once. The step, run again,
//! finds the decision (or, past the time, records the timeout) and goes to
//! `on_approve`, `on_reject` or `on_timeout`.
//!
//! Who is a team member is the server's to check (Kura ID); this module
//! checks that the decider is one of the step's approvers.

use std::time::Duration;

use kura_store::connect::RunRecord;
use kura_store::connect_approvals::{
    ApprovalDecision, ApprovalLinkRecord, ApprovalRecord, ApprovalStatus, DecisionOutcome,
};
use kura_types::{Actor, ApprovalId, Outcome, SecurityEvent, TeamId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ConnectError;
use crate::document::Step;
use crate::engine::{Produced, StepFailure};
use crate::expr::Expressions;
use crate::service::Connect;
use crate::steps::email::{Outgoing, parse_mailbox};

/// Approvers one step may name.
pub const MAX_APPROVERS: usize = 20;
/// The longest wait, in seconds (30 days).
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;
/// The longest comment kept with a decision.
pub const MAX_COMMENT_CHARS: usize = 2000;

/// Waits for a person's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalStep {
    /// The e-mail addresses of the team members who may decide (1–20); the
    /// first decision counts.
    pub approvers: Vec<String>,
    /// A template: what is asked (shown in the API and the e-mail).
    pub message: String,
    /// Seconds until the timeout path is taken (1 to 30 days).
    pub timeout_seconds: u64,
    /// The step after an approval.
    pub on_approve: String,
    /// The step after a rejection.
    pub on_reject: String,
    /// The step when nobody decided in time.
    pub on_timeout: String,
    /// E-mail each approver a one-time link to decide with (needs the
    /// server's `public_url` and an SMTP relay: `credential` or the
    /// server's `[connect.smtp]`).
    #[serde(default)]
    pub send_links: bool,
    /// The name of a team `smtp` credential for the links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl ApprovalStep {
    /// Problems on save, as (field, message).
    pub(crate) fn check(
        &self,
        x: &Expressions,
        credential_exists: &dyn Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.approvers.is_empty() || self.approvers.len() > MAX_APPROVERS {
            out.push((
                "approvers".into(),
                format!("from 1 to {MAX_APPROVERS} approvers"),
            ));
        }
        for (i, a) in self.approvers.iter().enumerate() {
            if let Err(e) = parse_mailbox(a) {
                out.push((format!("approvers[{i}]"), e));
            }
        }
        if let Err(e) = x.check_template(&self.message) {
            out.push((
                "message".into(),
                format!("the template does not parse: {e}"),
            ));
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.timeout_seconds) {
            out.push(("timeout_seconds".into(), "from 1 second to 30 days".into()));
        }
        if let Some(c) = &self.credential
            && !credential_exists(c)
        {
            out.push((
                "credential".into(),
                format!("the team has no credential `{c}`"),
            ));
        }
        out
    }

    /// The three paths, with their field names.
    pub(crate) fn paths(&self) -> [(&'static str, &str); 3] {
        [
            ("on_approve", self.on_approve.as_str()),
            ("on_reject", self.on_reject.as_str()),
            ("on_timeout", self.on_timeout.as_str()),
        ]
    }

    fn approvers(&self) -> Vec<String> {
        self.approvers
            .iter()
            .map(|a| a.trim().to_lowercase())
            .collect()
    }
}

/// Why a decision was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No such approval or link (in this team).
    #[error("approval not found")]
    NotFound,
    /// The person is not one of the step's approvers.
    #[error("you are not an approver of this step")]
    NotApprover,
    /// Already decided or timed out, or its run no longer waits.
    #[error("the approval is no longer pending")]
    NotPending,
    /// Its time ran out.
    #[error("the approval has expired")]
    Expired,
    /// The link was used before.
    #[error("the link has been used")]
    LinkUsed,
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// Anything else.
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

impl From<kura_store::StoreError> for ApprovalError {
    fn from(e: kura_store::StoreError) -> Self {
        ApprovalError::Connect(e.into())
    }
}

/// A decision asked for.
pub struct Decide<'a> {
    /// The approval.
    pub approval: ApprovalId,
    /// Approve (true) or reject.
    pub approve: bool,
    /// The deciding account.
    pub actor: Actor,
    /// Its e-mail address.
    pub email: String,
    /// A comment for the record.
    pub comment: Option<String>,
    /// The link's token, when deciding through a link.
    pub token: Option<&'a str>,
    /// Adds the request's facts (source, request id) to the events.
    pub decorate: &'a (dyn Fn(SecurityEvent) -> SecurityEvent + Sync),
}

impl std::fmt::Debug for Decide<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decide")
            .field("approval", &self.approval)
            .field("approve", &self.approve)
            .field("email", &self.email)
            .field("token", &self.token.map(|_| "[REDACTED]"))
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a link token.
pub fn token_hash(token: &str) -> [u8; 32] {
    kura_crypto::digest::sha256(token.as_bytes())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn event(
    at: time::OffsetDateTime,
    actor: Actor,
    action: &str,
    outcome: Outcome,
    a: &ApprovalRecord,
) -> Result<SecurityEvent, ConnectError> {
    let action = kura_types::Action::parse(action)
        .map_err(|e| ConnectError::Invalid(format!("event action: {e}")))?;
    Ok(SecurityEvent::new(at, actor, action, outcome)
        .with_team(a.team)
        .with_target(format!("approval:{}", a.id))
        .with_detail("flow", a.flow.to_string())
        .with_detail("run", a.run.to_string())
        .with_detail("step", a.step.clone()))
}

fn prepared(e: SecurityEvent) -> Result<kura_store::events::EventRecord, ConnectError> {
    kura_events::prepare(e).map_err(|e| ConnectError::Invalid(e.to_string()))
}

fn system() -> Actor {
    Actor::System {
        component: "kura-connect".into(),
    }
}

impl Connect {
    /// Runs an `approval` step.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn approval_step(
        &self,
        run: &RunRecord,
        owner: &str,
        step: &Step,
        spec: &ApprovalStep,
        scope: &Value,
        secrets: &mut Vec<String>,
        recorded: &mut Value,
    ) -> Result<Produced, StepFailure> {
        let store = &self.inner.store;
        let now = self.inner.clock.now();
        let fail = |e: ConnectError| StepFailure::fatal(e.to_string());
        let Some(mut a) = store.open_approval_of_step(run.id, &step.id).await? else {
            return self
                .open_approval(run, owner, step, spec, scope, secrets, recorded)
                .await;
        };
        *recorded = json!({"approval": a.id.to_string()});
        if a.status == ApprovalStatus::Pending {
            if now < a.expires_at {
                // Woken early (a decision that lost a race, a takeover):
                // wait out the rest.
                return Ok(waiting(&a, now));
            }
            let e = event(
                now,
                system(),
                "connect.approval.timed_out",
                Outcome::Success,
                &a,
            )
            .and_then(prepared)
            .map_err(fail)?;
            if !store.time_out_approval(a.id, now, vec![e]).await? {
                // A decision won the race: read it.
                a = store
                    .approval(a.id)
                    .await?
                    .ok_or_else(|| StepFailure::fatal("the approval disappeared"))?;
            } else {
                a.status = ApprovalStatus::TimedOut;
                a.decided_by = Some("system".into());
                a.decided_via = Some("timeout".into());
                a.decided_at = Some(now);
            }
        }
        let goto = match a.status {
            ApprovalStatus::Approved => &spec.on_approve,
            ApprovalStatus::Rejected => &spec.on_reject,
            ApprovalStatus::TimedOut => &spec.on_timeout,
            ApprovalStatus::Pending => return Ok(waiting(&a, now)),
        };
        store.close_approval(a.id).await?;
        Ok(Produced {
            goto: Some(goto.clone()),
            ..Produced::value(json!({
                "approval": a.id.to_string(),
                "decision": a.status.as_str(),
                "decided_by": a.decided_by,
                "decided_via": a.decided_via,
                "comment": a.comment,
                "decided_at": a.decided_at.map(rfc3339),
            }))
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn open_approval(
        &self,
        run: &RunRecord,
        owner: &str,
        step: &Step,
        spec: &ApprovalStep,
        scope: &Value,
        secrets: &mut Vec<String>,
        recorded: &mut Value,
    ) -> Result<Produced, StepFailure> {
        let fail = |e: ConnectError| StepFailure::fatal(e.to_string());
        let now = self.inner.clock.now();
        let message = self
            .inner
            .expr
            .render(&spec.message, scope)
            .map_err(StepFailure::fatal)?;
        let timeout = Duration::from_secs(spec.timeout_seconds);
        let a = ApprovalRecord {
            id: ApprovalId::new(),
            team: run.team,
            flow: run.flow,
            run: run.id,
            step: step.id.clone(),
            approvers: spec.approvers(),
            message: message.clone(),
            status: ApprovalStatus::Pending,
            decided_by: None,
            decided_via: None,
            comment: None,
            created_at: now,
            expires_at: now + timeout,
            decided_at: None,
            closed: false,
        };
        *recorded = json!({
            "approval": a.id.to_string(), "approvers": a.approvers, "message": message,
            "send_links": spec.send_links,
        });
        // The links' relay and base URL are checked before anything is
        // stored, so a step that cannot send them fails without a trace.
        let mailing = if spec.send_links {
            let base =
                self.inner.config.public_url.clone().ok_or_else(|| {
                    StepFailure::fatal("approval links need the server's public_url")
                })?;
            let relay = self
                .smtp_relay(run.team, spec.credential.as_deref(), secrets)
                .await?;
            Some((base, relay))
        } else {
            None
        };
        let mut links = Vec::new();
        let mut tokens = Vec::new();
        if mailing.is_some() {
            for approver in &a.approvers {
                let raw = kura_crypto::random::array::<32>()
                    .map_err(|_| StepFailure::fatal("the random source failed"))?;
                let token = hex::encode(raw);
                links.push(ApprovalLinkRecord {
                    token_hash: token_hash(&token),
                    approval: a.id,
                    approver: approver.clone(),
                    expires_at: a.expires_at,
                    used_at: None,
                });
                secrets.push(token.clone());
                tokens.push((approver.clone(), token));
            }
        }
        let requested = event(
            now,
            system(),
            "connect.approval.requested",
            Outcome::Success,
            &a,
        )
        .map(|e| e.with_detail("approvers", a.approvers.join(", ")))
        .and_then(prepared)
        .map_err(fail)?;
        if !self
            .inner
            .store
            .open_approval(owner, a.clone(), links, vec![requested])
            .await?
        {
            return Err(StepFailure::fatal("the run was cancelled or taken over"));
        }
        let mut sent = Vec::new();
        let mut unsent = Vec::new();
        if let Some((base, relay)) = &mailing {
            for (approver, token) in &tokens {
                let url = format!("{}/hooks/approvals/{token}", base.trim_end_matches('/'));
                let mail = Outgoing {
                    to: vec![approver.clone()],
                    subject: format!(
                        "Approval needed: {}",
                        message.lines().next().unwrap_or_default()
                    ),
                    body: format!(
                        "{message}\n\nApprove or reject: {url}\n\nThe link works once and expires at {}.\n",
                        rfc3339(a.expires_at)
                    ),
                    message_id: format!("{}.{}@kura-connect", a.id, sent.len() + unsent.len()),
                };
                // A link that cannot be sent leaves the API and the timeout.
                match self.send_mail(run, relay, &mail).await {
                    Ok(_) => sent.push(approver.clone()),
                    Err(f) => unsent.push(json!({"approver": approver, "error": f.message})),
                }
            }
        }
        let mut p = waiting(&a, now);
        p.value["links_sent"] = json!(sent);
        if !unsent.is_empty() {
            p.value["links_failed"] = json!(unsent);
        }
        Ok(p)
    }

    /// After the run paused at an approval step: a decision recorded while
    /// it was pausing (after the approval opened, before the pause was
    /// written) did not find it waiting, so it is made due here.
    pub(crate) async fn approval_paused(&self, run: kura_types::RunId, step: &str) {
        let store = &self.inner.store;
        let decided = match store.open_approval_of_step(run, step).await {
            Ok(Some(a)) => a.status != ApprovalStatus::Pending,
            Ok(None) => false,
            Err(e) => {
                tracing::error!(%run, error = %e, "cannot look at a paused approval");
                false
            }
        };
        if decided && let Err(e) = store.wake_waiting_run(run, self.inner.clock.now()).await {
            tracing::error!(%run, error = %e, "cannot wake a decided approval's run");
        }
    }

    /// A team's approval, for the API.
    pub async fn approval(
        &self,
        team: TeamId,
        id: ApprovalId,
    ) -> Result<ApprovalRecord, ApprovalError> {
        self.inner
            .store
            .approval(id)
            .await?
            .filter(|a| a.team == team)
            .ok_or(ApprovalError::NotFound)
    }

    /// The approval and approver behind a link's token, without spending
    /// it.
    pub async fn approval_link(
        &self,
        token: &str,
    ) -> Result<(ApprovalLinkRecord, ApprovalRecord), ApprovalError> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApprovalError::NotFound);
        }
        let link = self
            .inner
            .store
            .approval_link(token_hash(token))
            .await?
            .ok_or(ApprovalError::NotFound)?;
        let a = self
            .inner
            .store
            .approval(link.approval)
            .await?
            .ok_or(ApprovalError::NotFound)?;
        Ok((link, a))
    }

    /// Records a decision (with its security event, in one transaction)
    /// and wakes the workers. The decider must be one of the approvers; the
    /// caller has checked that they are a member of the team.
    pub async fn decide(&self, d: Decide<'_>) -> Result<ApprovalRecord, ApprovalError> {
        let now = self.inner.clock.now();
        let a = self
            .inner
            .store
            .approval(d.approval)
            .await?
            .ok_or(ApprovalError::NotFound)?;
        let email = d.email.trim().to_lowercase();
        if !a.approvers.contains(&email) {
            return Err(ApprovalError::NotApprover);
        }
        if let Some(c) = &d.comment
            && c.chars().count() > MAX_COMMENT_CHARS
        {
            return Err(ApprovalError::Invalid(format!(
                "a comment has at most {MAX_COMMENT_CHARS} characters"
            )));
        }
        let (status, action) = if d.approve {
            (ApprovalStatus::Approved, "connect.approval.approved")
        } else {
            (ApprovalStatus::Rejected, "connect.approval.rejected")
        };
        let link = d.token.map(token_hash);
        let via = if link.is_some() { "link" } else { "api" };
        let by = match &d.actor {
            Actor::Account { id } => format!("account:{id}"),
            other => format!("{other:?}"),
        };
        let e = event(now, d.actor.clone(), action, Outcome::Success, &a)?
            .with_detail("via", via.to_owned())
            .with_detail("approver", email.clone());
        let e = prepared((d.decorate)(e))?;
        let outcome = self
            .inner
            .store
            .decide(ApprovalDecision {
                approval: a.id,
                status,
                by,
                via: via.into(),
                comment: d.comment,
                link,
                at: now,
                events: vec![e],
            })
            .await?;
        match outcome {
            DecisionOutcome::Recorded => {
                self.inner.wake.notify_one();
                self.approval(a.team, a.id).await
            }
            DecisionOutcome::NotFound => Err(ApprovalError::NotFound),
            DecisionOutcome::NotPending => Err(ApprovalError::NotPending),
            DecisionOutcome::Expired => Err(ApprovalError::Expired),
            DecisionOutcome::LinkUsed => Err(ApprovalError::LinkUsed),
        }
    }
}

/// The run waits at this step until the approval's time (a decision makes
/// it due sooner).
fn waiting(a: &ApprovalRecord, now: time::OffsetDateTime) -> Produced {
    let left =
        Duration::try_from((a.expires_at - now).max(time::Duration::ZERO)).unwrap_or_default();
    Produced {
        goto: Some(a.step.clone()),
        wait: Some(left),
        label: Some("waiting"),
        ..Produced::value(json!({
            "approval": a.id.to_string(),
            "status": "pending",
            "approvers": a.approvers,
            "message": a.message,
            "expires_at": rfc3339(a.expires_at),
        }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::validate::parse_document;

    fn doc(on_reject: &str) -> serde_json::Value {
        json!({"name": "f", "trigger": {"kind": "manual"}, "steps": [
            {"id": "prep", "kind": "transform", "set": {"x": "1"}},
            {"id": "ask", "kind": "approval", "approvers": ["a@example.org"],
             "message": "ok?", "timeout_seconds": 60,
             "on_approve": "done", "on_reject": on_reject, "on_timeout": "done"},
            {"id": "done", "kind": "transform", "set": {"y": "2"}}
        ]})
    }

    #[test]
    fn approval_paths_are_checked_like_any_goto() {
        assert!(parse_document(doc("done"), &|_| false).is_ok());
        let errors = parse_document(doc("prep"), &|_| false).unwrap_err();
        assert_eq!(errors[0].path, "steps[1].on_reject", "{errors:?}");
        assert!(errors[0].message.contains("cycle"), "{errors:?}");
        let errors = parse_document(doc("nowhere"), &|_| false).unwrap_err();
        assert_eq!(errors[0].path, "steps[1].on_reject", "{errors:?}");
        let mut with_next = doc("done");
        with_next["steps"][1]["next"] = json!("done");
        let errors = parse_document(with_next, &|_| false).unwrap_err();
        assert_eq!(errors[0].path, "steps[1].next", "{errors:?}");
    }
}
