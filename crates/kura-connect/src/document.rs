//! The flow document: one trigger and an ordered list of steps.
//!
//! Steps run in list order unless a step names its `next`, a condition
//! picks a branch, or `on_error` sends a failure elsewhere. Documents are
//! JSON or YAML; both parse into the same types, and [`schema`] is the
//! published JSON Schema.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A flow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowDocument {
    /// A name for people (1–200 characters).
    pub name: String,
    /// What the flow is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What starts a run.
    pub trigger: Trigger,
    /// The steps, run in order unless a step says otherwise.
    pub steps: Vec<Step>,
}

/// What starts a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// A POST to the flow's unguessable `/hooks/{token}` URL; the request
    /// body (JSON) is the run's input.
    Webhook {
        /// Require an `X-Kura-Signature: sha256=<hex>` header: HMAC-SHA256
        /// of the body under the flow's webhook secret.
        #[serde(default)]
        verify_signature: bool,
    },
    /// Only through the API, with an input document.
    Manual {},
    /// A record created, edited or deleted in a hosted app of the flow's
    /// team: every change in the app's change outbox after the flow was
    /// enabled starts one run, at least once and in order (the flow's
    /// place in the outbox moves in the transaction that queues the run).
    /// The input is `{event, table, record_id, mod_id, at, account,
    /// record}`; `record` is the record as the service account sees it
    /// through `layout` when the run is queued (`null` once deleted).
    AppEvent {
        /// The app's id.
        app: String,
        /// A layout of the app: only changes to its table start runs.
        layout: String,
        /// A service account of the app, whose privileges read the record.
        account: String,
        /// Which changes start runs (default: all of them).
        #[serde(default = "all_events")]
        events: Vec<AppEventKind>,
    },
    /// A cron expression (5 or 6 fields) in a time zone.
    Schedule {
        /// The cron expression, e.g. `0 9 * * MON-FRI`.
        cron: String,
        /// An IANA time zone, e.g. `Europe/Paris`; UTC by default.
        #[serde(default = "utc")]
        timezone: String,
    },
}

fn all_events() -> Vec<AppEventKind> {
    vec![
        AppEventKind::Created,
        AppEventKind::Edited,
        AppEventKind::Deleted,
    ]
}

/// A kind of record change (creations include duplicates and imports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppEventKind {
    /// A record was created (also duplicated or imported).
    Created,
    /// A record was changed.
    Edited,
    /// A record was deleted.
    Deleted,
}

fn utc() -> String {
    "UTC".into()
}

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    /// Unique in the flow: `[a-z][a-z0-9_]*`, at most 64 characters. Later
    /// steps read its output as `steps.<id>`.
    pub id: String,
    /// What the step does.
    #[serde(flatten)]
    pub action: Action,
    /// The step to run next instead of the following one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Retries before the step counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// What a failure does.
    #[serde(default, skip_serializing_if = "OnError::is_default")]
    pub on_error: OnError,
}

/// Retry policy: exponential back-off with full jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Tries in all, 1–10.
    pub max_attempts: u32,
    /// The first back-off, in milliseconds (default 200).
    #[serde(default = "initial_backoff")]
    pub initial_backoff_ms: u64,
    /// The longest back-off, in milliseconds (default 10,000).
    #[serde(default = "max_backoff")]
    pub max_backoff_ms: u64,
}

fn initial_backoff() -> u64 {
    200
}

fn max_backoff() -> u64 {
    10_000
}

/// What a step's failure does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The run fails (the default).
    #[default]
    Fail,
    /// The error is recorded and the run goes on with the next step.
    Continue,
    /// The run goes on at this step (an error branch); the error is in
    /// `steps.<id>.error`.
    Goto(String),
}

impl OnError {
    fn is_default(&self) -> bool {
        *self == OnError::Fail
    }
}

/// The step kinds. Expressions are minijinja expressions
/// (`input.total * 2`); templates are minijinja templates
/// (`https://example.com/{{ input.id }}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Computes fields: each value is an expression; the output is the map
    /// of results.
    Transform {
        /// Field name → expression.
        set: BTreeMap<String, String>,
    },
    /// Goes to the first branch whose expression is true, else `otherwise`
    /// (else the following step).
    Condition {
        /// The branches, tried in order.
        branches: Vec<Branch>,
        /// The step when no branch matches.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        otherwise: Option<String>,
    },
    /// Answers the webhook request that started the run (the run goes on).
    Respond {
        /// The HTTP status (default 200).
        #[serde(default = "ok_status")]
        status: u16,
        /// An expression whose value is the JSON body.
        body: String,
    },
    /// Reads a value of the team's key-value store (`null` when absent).
    StoreGet {
        /// A template for the key.
        key: String,
    },
    /// Writes a value to the team's key-value store.
    StoreSet {
        /// A template for the key.
        key: String,
        /// An expression for the value.
        value: String,
    },
    /// An outbound HTTP request (checked against the SSRF policy).
    Http {
        /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD`.
        method: String,
        /// A template for the URL (`http` or `https`).
        url: String,
        /// Header name → template.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        /// The request body.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<HttpBody>,
        /// The name of a team credential used to authenticate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<String>,
        /// The time limit in milliseconds (default 10,000, at most 60,000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Pauses the run; a worker resumes it when the time has come (it
    /// survives restarts). Give `seconds` or `until`, not both.
    Delay {
        /// Seconds to wait (at most 30 days).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
        /// An expression for an RFC 3339 time to wait until (a time in the
        /// past does not wait; at most 30 days ahead).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
    },
    /// Starts a run of another flow of the same team (queued; this run
    /// goes on). The output is the new run's id. A resumed run does not
    /// start it twice: the child run's id is derived from the step's
    /// idempotency key.
    CallFlow {
        /// The flow's id.
        flow: String,
        /// An expression for the child run's input (default: this run's
        /// input).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// Fails the run with a message (for error branches).
    Fail {
        /// A template for the message.
        message: String,
    },
    /// Sends a plain-text e-mail through SMTP (the server's relay or a
    /// team `smtp` credential); the relay passes the SSRF policy.
    Email(crate::steps::email::EmailStep),
    /// Pauses the run until a named team member approves or rejects (through
    /// the API or a one-time link), or the time runs out; each outcome goes
    /// to its own step.
    Approval(crate::steps::approval::ApprovalStep),
    /// Finds, reads, creates, edits or deletes records of a hosted app of
    /// the flow's team, as a service account of the app and under its
    /// privilege set (the same checks as the Data API). Writes carry the
    /// step's idempotency key, so a resumed run writes once.
    App {
        /// The app's id (an app of the flow's team).
        app: String,
        /// A layout of the app; it names the table and the fields seen.
        layout: String,
        /// A service account of the app the team created for flows.
        account: String,
        /// What to do.
        op: AppOp,
        /// An expression for the record id (`get`, `edit`, `delete`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record_id: Option<String>,
        /// Field name → expression (`create`, `edit`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        fields: BTreeMap<String, String>,
        /// An expression for FileMaker find requests, a list of objects
        /// like `[{"city": "Paris"}]` (`find`; none: every record).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        query: Option<String>,
        /// Sort fields (`find`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sort: Vec<SortField>,
        /// At most this many records (`find`; default 100, at most 10,000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    /// Runs `each` once per item of a list, up to `concurrency` at a time;
    /// the output is the list of their outputs, in item order. `each` sees
    /// `item` and `index`. Every finished iteration is recorded, so a
    /// resumed run does not repeat it; a failed iteration fails the step.
    Loop {
        /// An expression whose value is the list (at most 1,000 items).
        over: String,
        /// Iterations at once, 1–16 (default 1).
        #[serde(default = "one")]
        concurrency: u32,
        /// The step run for every item: `transform`, `http`, `store_get`,
        /// `store_set`, `app` or `call_flow` (no `id`).
        each: Box<Action>,
    },
}

fn one() -> u32 {
    1
}

/// A hosted-app step's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppOp {
    /// Records matching `query` (the output is `{found, records}`).
    Find,
    /// The record `record_id` (the output is `{record}`).
    Get,
    /// A new record with `fields`.
    Create,
    /// `fields` of the record `record_id`.
    Edit,
    /// The record `record_id`.
    Delete,
}

impl AppOp {
    /// Whether the operation changes records.
    pub fn writes(self) -> bool {
        matches!(self, AppOp::Create | AppOp::Edit | AppOp::Delete)
    }
}

/// A sort field of a `find`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SortField {
    /// The field's name.
    pub field: String,
    /// Largest first.
    #[serde(default)]
    pub descending: bool,
}

fn ok_status() -> u16 {
    200
}

/// One branch of a condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    /// An expression; the branch is taken when it is true.
    pub when: String,
    /// The step to go to.
    pub goto: String,
}

/// An HTTP request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpBody {
    /// An expression whose value is sent as JSON.
    Json {
        /// The expression.
        value: String,
    },
    /// Fields sent as `application/x-www-form-urlencoded`.
    Form {
        /// Field → template.
        fields: BTreeMap<String, String>,
    },
    /// A template sent as-is.
    Raw {
        /// The template.
        content: String,
        /// Its media type.
        content_type: String,
    },
}

/// The step kinds a document may use.
pub const STEP_KINDS: &[&str] = &[
    "transform",
    "condition",
    "respond",
    "store_get",
    "store_set",
    "http",
    "delay",
    "call_flow",
    "fail",
    "email",
    "approval",
    "app",
    "loop",
];

impl Action {
    /// Whether running the step twice could do something twice outside the
    /// run (such steps are recorded as started before they run and carry
    /// an idempotency key). A loop is not: each of its iterations is
    /// recorded on its own, by this rule applied to `each`.
    pub fn has_side_effects(&self) -> bool {
        match self {
            Action::Http { .. }
            | Action::StoreSet { .. }
            | Action::CallFlow { .. }
            | Action::Email(_) => true,
            Action::App { op, .. } => op.writes(),
            _ => false,
        }
    }

    /// Its kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Transform { .. } => "transform",
            Action::Condition { .. } => "condition",
            Action::Respond { .. } => "respond",
            Action::StoreGet { .. } => "store_get",
            Action::StoreSet { .. } => "store_set",
            Action::Http { .. } => "http",
            Action::Delay { .. } => "delay",
            Action::CallFlow { .. } => "call_flow",
            Action::Fail { .. } => "fail",
            Action::Email(_) => "email",
            Action::Approval(_) => "approval",
            Action::App { .. } => "app",
            Action::Loop { .. } => "loop",
        }
    }
}

impl FlowDocument {
    /// The index of a step by id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }

    /// The step after `index` when nothing else is said.
    pub fn following(&self, index: usize) -> Option<&str> {
        self.steps.get(index + 1).map(|s| s.id.as_str())
    }
}

/// The JSON Schema of [`FlowDocument`].
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(FlowDocument)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed schema (docs/connect-flow.schema.json) is the one the
    /// code publishes; regenerate it with `KURA_WRITE_SCHEMA=1`.
    #[test]
    fn the_committed_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/connect-flow.schema.json");
        let text = serde_json::to_string_pretty(&schema()).unwrap() + "\n";
        if std::env::var_os("KURA_WRITE_SCHEMA").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(committed, text, "run with KURA_WRITE_SCHEMA=1 to update");
    }
}
