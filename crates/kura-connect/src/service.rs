//! [`Connect`]: the service the server calls — saving flows (every save a
//! new immutable version), starting runs, credentials — and the worker pool
//! that claims and runs queued runs.

use std::sync::Arc;
use std::time::Duration;

use kura_events::EventSink;
use kura_store::connect::{
    ConnectStore, FlowRecord, FlowVersionRecord, NewRun, RunRecord, ScheduleRecord,
};
use kura_store::{KeyService, StoreError};
use kura_types::{Clock, FlowId, RunId, TeamId};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::ConnectError;
use crate::audit::Audit;
use crate::compiled::{CompiledFlow, FlowCache};
use crate::document::{FlowDocument, Trigger};
use crate::expr::Expressions;
use crate::outbound::OutboundPolicy;
use crate::validate::{DocumentError, parse_document};

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Worker tasks.
    pub workers: usize,
    /// Running runs per team at once.
    pub team_concurrency: u32,
    /// How long a claim holds a run without progress.
    pub lease: Duration,
    /// How often idle workers look for due runs.
    pub poll: Duration,
    /// Takeovers of a run (its worker stopped) before it is dead-lettered.
    pub max_takeovers: u32,
    /// Outbound HTTP policy.
    pub outbound: OutboundPolicy,
    /// Finished runs are deleted after this long (`None`: kept).
    pub retention: Option<Duration>,
    /// The server's SMTP relay for `email` steps and approval links
    /// (`[connect.smtp]`); steps may name a team `smtp` credential instead.
    pub smtp: Option<crate::steps::email::SmtpRelay>,
    /// The server's public base URL, for approval links.
    pub public_url: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            team_concurrency: 16,
            lease: Duration::from_secs(120),
            poll: Duration::from_millis(500),
            max_takeovers: 5,
            outbound: OutboundPolicy::default(),
            retention: Some(Duration::from_secs(30 * 86_400)),
            smtp: None,
            public_url: None,
        }
    }
}

pub(crate) struct Inner {
    pub store: Arc<dyn ConnectStore>,
    pub keys: KeyService,
    pub events: Arc<dyn EventSink>,
    pub clock: Arc<dyn Clock>,
    pub config: EngineConfig,
    pub expr: Expressions,
    pub wake: Notify,
    /// Parsed flow versions.
    pub flows: FlowCache,
    /// One refresh at a time per OAuth credential in this process.
    pub refreshing: crate::oauth::RefreshLocks,
    pub node: String,
    pub apps: kura_apps::Apps,
}

/// Kura Connect: flows, runs, credentials and the engine.
#[derive(Clone)]
pub struct Connect {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

/// A saved flow: its record and current document.
#[derive(Debug, Clone)]
pub struct SavedFlow {
    /// The record.
    pub flow: FlowRecord,
    /// The document of `flow.version`.
    pub document: FlowDocument,
}

/// Why a flow was not saved.
#[derive(Debug)]
pub enum SaveError {
    /// The document has problems (each with its path).
    Invalid(Vec<DocumentError>),
    /// Anything else.
    Other(ConnectError),
}

impl From<ConnectError> for SaveError {
    fn from(e: ConnectError) -> Self {
        SaveError::Other(e)
    }
}

impl From<StoreError> for SaveError {
    fn from(e: StoreError) -> Self {
        SaveError::Other(e.into())
    }
}

/// What a started inline run came to.
#[derive(Debug, Clone)]
pub struct InlineRun {
    /// The run as it stands.
    pub run: RunRecord,
    /// Whether it ran in the request (false: it is queued, the team is at
    /// its concurrency limit).
    pub ran: bool,
}

/// A running worker pool.
#[derive(Debug)]
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Stops the workers; a run in the middle of a step is left to its
    /// lease (another start resumes it).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            // A worker finishes the run it holds up to its next pause;
            // one stuck in a long call is stopped and its lease expires.
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Connect {
    /// The service over its store.
    pub fn new(
        store: Arc<dyn ConnectStore>,
        keys: KeyService,
        events: Arc<dyn EventSink>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
        apps: kura_apps::Apps,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                keys,
                events,
                clock,
                config,
                expr: Expressions::new(),
                wake: Notify::new(),
                flows: FlowCache::default(),
                refreshing: crate::oauth::RefreshLocks::default(),
                node: uuid::Uuid::now_v7().to_string(),
                apps,
            }),
        }
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn ConnectStore> {
        &self.inner.store
    }

    async fn check_document(&self, team: TeamId, value: Value) -> Result<FlowDocument, SaveError> {
        let names: Vec<String> = self
            .inner
            .store
            .credentials(team)
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect();
        let doc =
            parse_document(value, &|n| names.iter().any(|x| x == n)).map_err(SaveError::Invalid)?;
        let problems = crate::steps::apps::check_targets(&self.inner.apps, team, &doc).await?;
        if !problems.is_empty() {
            return Err(SaveError::Invalid(problems));
        }
        Ok(doc)
    }

    /// Creates a flow (disabled until enabled) from a document.
    pub async fn create_flow(
        &self,
        team: TeamId,
        audit: &Audit<'_>,
        value: Value,
    ) -> Result<SavedFlow, SaveError> {
        let document = self.check_document(team, value).await?;
        let now = self.inner.clock.now();
        let token = kura_crypto::random::array::<32>().map_err(|_| ConnectError::Random)?;
        let secret = kura_crypto::random::array::<32>().map_err(|_| ConnectError::Random)?;
        let flow = FlowRecord {
            id: FlowId::new(),
            team,
            name: document.name.clone(),
            enabled: false,
            version: 1,
            webhook_token: hex::encode(token),
            webhook_secret: secret.to_vec(),
            created_at: now,
            updated_at: now,
        };
        let event = audit.event(
            now,
            team,
            "connect.flow.created",
            format!("flow:{}", flow.id),
            &[("name", flow.name.clone()), ("version", "1".into())],
        )?;
        self.inner
            .store
            .create_flow(
                flow.clone(),
                self.version_record(flow.id, 1, &document, &audit.key())?,
                vec![event],
            )
            .await?;
        Ok(SavedFlow { flow, document })
    }

    fn version_record(
        &self,
        flow: FlowId,
        version: u32,
        document: &FlowDocument,
        actor: &str,
    ) -> Result<FlowVersionRecord, ConnectError> {
        Ok(FlowVersionRecord {
            flow,
            version,
            document: serde_json::to_string(document)
                .map_err(|e| ConnectError::Corrupt(e.to_string()))?,
            created_by: actor.to_owned(),
            created_at: self.inner.clock.now(),
        })
    }

    /// Saves a new version of a flow.
    pub async fn update_flow(
        &self,
        team: TeamId,
        id: FlowId,
        audit: &Audit<'_>,
        value: Value,
    ) -> Result<SavedFlow, SaveError> {
        let mut flow = self
            .inner
            .store
            .flow(team, id)
            .await?
            .ok_or(ConnectError::NotFound("flow"))?;
        let document = self.check_document(team, value).await?;
        let next = flow.version + 1;
        let event = audit.event(
            self.inner.clock.now(),
            team,
            "connect.flow.saved",
            format!("flow:{id}"),
            &[
                ("name", document.name.clone()),
                ("version", next.to_string()),
            ],
        )?;
        self.inner
            .store
            .add_version(
                team,
                self.version_record(id, next, &document, &audit.key())?,
                document.name.clone(),
                flow.version,
                vec![event],
            )
            .await?;
        flow.version = next;
        flow.name = document.name.clone();
        self.schedule(&flow, &document).await?;
        self.subscribe(&flow, &document, false).await?;
        Ok(SavedFlow { flow, document })
    }

    /// A flow with a version's document (`None`: the newest).
    pub async fn flow(
        &self,
        team: TeamId,
        id: FlowId,
        version: Option<u32>,
    ) -> Result<(FlowRecord, FlowVersionRecord, FlowDocument), ConnectError> {
        let flow = self
            .inner
            .store
            .flow(team, id)
            .await?
            .ok_or(ConnectError::NotFound("flow"))?;
        let v = self
            .inner
            .store
            .version(team, id, version.unwrap_or(flow.version))
            .await?
            .ok_or(ConnectError::NotFound("flow version"))?;
        let doc =
            serde_json::from_str(&v.document).map_err(|e| ConnectError::Corrupt(e.to_string()))?;
        Ok((flow, v, doc))
    }

    /// A flow version's parsed document, from the cache or the store
    /// (`None`: the team has no such version).
    pub(crate) async fn compiled_version(
        &self,
        team: TeamId,
        flow: FlowId,
        version: u32,
    ) -> Result<Option<Arc<CompiledFlow>>, ConnectError> {
        if let Some(c) = self.inner.flows.get(team, flow, version) {
            return Ok(Some(c));
        }
        let Some(v) = self.inner.store.version(team, flow, version).await? else {
            return Ok(None);
        };
        let doc: FlowDocument =
            serde_json::from_str(&v.document).map_err(|e| ConnectError::Corrupt(e.to_string()))?;
        let compiled = Arc::new(CompiledFlow::new(doc));
        self.inner
            .flows
            .insert(team, flow, version, Arc::clone(&compiled));
        Ok(Some(compiled))
    }

    /// The parsed document of the version a flow record names.
    pub async fn compiled(&self, flow: &FlowRecord) -> Result<Arc<CompiledFlow>, ConnectError> {
        self.compiled_version(flow.team, flow.id, flow.version)
            .await?
            .ok_or(ConnectError::NotFound("flow version"))
    }

    pub(crate) fn new_run(
        flow: &FlowRecord,
        doc: &FlowDocument,
        trigger: &str,
        input: &Value,
        at: time::OffsetDateTime,
    ) -> NewRun {
        NewRun {
            id: RunId::new(),
            team: flow.team,
            flow: flow.id,
            version: flow.version,
            trigger: trigger.to_owned(),
            input: input.to_string(),
            context: "{}".into(),
            first_step: doc.steps.first().map(|s| s.id.clone()),
            at,
        }
    }

    /// Queues a run of a flow's newest version.
    pub async fn start_run(
        &self,
        flow: &FlowRecord,
        trigger: &str,
        input: Value,
    ) -> Result<RunRecord, ConnectError> {
        let (flow, _, doc) = self.flow(flow.team, flow.id, None).await?;
        let run = Self::new_run(&flow, &doc, trigger, &input, self.inner.clock.now());
        let id = run.id;
        self.inner.store.insert_run(run).await?;
        self.inner.wake.notify_one();
        self.inner
            .store
            .run(id)
            .await?
            .ok_or(ConnectError::NotFound("run"))
    }

    /// Re-runs a finished run: from the start (same input, newest version)
    /// or from its failed step (the same version, with the outputs of the
    /// steps before it).
    pub async fn rerun(
        &self,
        team: TeamId,
        run: RunId,
        from_failed: bool,
    ) -> Result<RunRecord, ConnectError> {
        let old = self
            .inner
            .store
            .run(run)
            .await?
            .filter(|r| r.team == team)
            .ok_or(ConnectError::NotFound("run"))?;
        if !old.status.is_final() {
            return Err(ConnectError::Invalid("the run is not over".into()));
        }
        let flow = self
            .inner
            .store
            .flow(team, old.flow)
            .await?
            .ok_or(ConnectError::NotFound("flow"))?;
        if !from_failed {
            let input = serde_json::from_str(&old.input).unwrap_or(Value::Null);
            return self.start_run(&flow, "rerun", input).await;
        }
        let steps = self.inner.store.steps(run).await?;
        let failed = steps
            .iter()
            .rev()
            .find(|s| s.status == "failed")
            .ok_or_else(|| ConnectError::Invalid("the run has no failed step".into()))?;
        let mut context = serde_json::Map::new();
        for s in steps
            .iter()
            .filter(|s| s.seq < failed.seq && s.status == "succeeded")
        {
            let out = s
                .output
                .as_deref()
                .and_then(|o| serde_json::from_str(o).ok())
                .unwrap_or(Value::Null);
            context.insert(s.step.clone(), out);
        }
        let id = RunId::new();
        self.inner
            .store
            .insert_run(NewRun {
                id,
                team,
                flow: old.flow,
                version: old.version,
                trigger: "rerun".into(),
                input: old.input.clone(),
                context: Value::Object(context).to_string(),
                first_step: Some(failed.step.clone()),
                at: self.inner.clock.now(),
            })
            .await?;
        self.inner.wake.notify_one();
        self.inner
            .store
            .run(id)
            .await?
            .ok_or(ConnectError::NotFound("run"))
    }

    /// Runs the version `flow` names (the record the caller just read) if
    /// the team is under its concurrency limit, else queues it. A flow of
    /// computing steps only runs in memory here and is recorded finished
    /// in one transaction (see `inline`); any other run is recorded as
    /// claimed and runs in a task of its own (so a caller that goes away
    /// does not stop it), and this waits for it to end or pause.
    pub async fn run_now(
        &self,
        flow: &FlowRecord,
        trigger: &str,
        input: Value,
    ) -> Result<InlineRun, ConnectError> {
        let compiled = self.compiled(flow).await?;
        if compiled.inline {
            return self.run_inline(flow, &compiled, trigger, input).await;
        }
        let now = self.inner.clock.now();
        let new = Self::new_run(flow, &compiled.document, trigger, &input, now);
        let id = new.id;
        let owner = format!("{}/{}", self.inner.node, uuid::Uuid::now_v7());
        let claimed = self
            .inner
            .store
            .insert_claimed_run(
                new,
                &owner,
                now + self.inner.config.lease,
                self.inner.config.team_concurrency,
            )
            .await?;
        let run = self
            .inner
            .store
            .run(id)
            .await?
            .ok_or(ConnectError::NotFound("run"))?;
        if !claimed {
            self.inner.wake.notify_one();
            return Ok(InlineRun { run, ran: false });
        }
        let this = self.clone();
        let task = tokio::spawn(async move { this.execute(run, owner).await });
        task.await
            .map_err(|e| ConnectError::Worker(e.to_string()))?;
        let run = self
            .inner
            .store
            .run(id)
            .await?
            .ok_or(ConnectError::NotFound("run"))?;
        Ok(InlineRun { run, ran: true })
    }

    /// Starts a run of another flow of `parent`'s team. The child's id is
    /// derived from the calling step's idempotency key, so a resumed parent
    /// finds the child it already started instead of starting another.
    pub(crate) async fn call_flow(
        &self,
        parent: &RunRecord,
        flow: &str,
        input: Value,
        idempotency_key: &str,
    ) -> Result<RunId, ConnectError> {
        let id: FlowId = flow
            .parse()
            .map_err(|_| ConnectError::Invalid(format!("`{flow}` is not a flow id")))?;
        let digest = kura_crypto::digest::sha256(idempotency_key.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        let child = RunId::from_uuid(uuid::Uuid::from_bytes(bytes));
        if self.inner.store.run(child).await?.is_some() {
            return Ok(child);
        }
        // Only the same team's flows: another team's id is "not found".
        let (flow, _, doc) = self.flow(parent.team, id, None).await?;
        let mut run = Self::new_run(&flow, &doc, "flow", &input, self.inner.clock.now());
        run.id = child;
        self.inner.store.insert_run(run).await?;
        self.inner.wake.notify_one();
        Ok(child)
    }

    /// Enables or disables a flow; enabling a scheduled flow sets its next
    /// fire time from now, so time spent disabled is not caught up.
    pub async fn set_enabled(
        &self,
        team: TeamId,
        id: FlowId,
        enabled: bool,
        audit: &Audit<'_>,
    ) -> Result<FlowRecord, ConnectError> {
        let now = self.inner.clock.now();
        let action = if enabled {
            "connect.flow.enabled"
        } else {
            "connect.flow.disabled"
        };
        let event = audit.event(now, team, action, format!("flow:{id}"), &[])?;
        if !self
            .inner
            .store
            .set_enabled(team, id, enabled, now, vec![event])
            .await?
        {
            return Err(ConnectError::NotFound("flow"));
        }
        let (flow, _, doc) = self.flow(team, id, None).await?;
        if enabled {
            self.schedule(&flow, &doc).await?;
            self.subscribe(&flow, &doc, true).await?;
        }
        Ok(flow)
    }

    /// Keeps a flow's schedule row in step with its document.
    async fn schedule(&self, flow: &FlowRecord, doc: &FlowDocument) -> Result<(), ConnectError> {
        let schedule = match &doc.trigger {
            Trigger::Schedule { cron, timezone } => {
                let next = crate::schedule::next_after(cron, timezone, self.inner.clock.now())
                    .map_err(ConnectError::Invalid)?;
                Some(ScheduleRecord {
                    flow: flow.id,
                    team: flow.team,
                    cron: cron.clone(),
                    timezone: timezone.clone(),
                    next_fire_at: next,
                })
            }
            _ => None,
        };
        self.inner.store.set_schedule(flow.id, schedule).await?;
        Ok(())
    }

    /// Fires the schedules that are due. Catch-up policy: a schedule whose
    /// fire times passed while Kura was down fires once (its input names
    /// the missed time as `scheduled_for`), and its next fire time is
    /// computed from now, so missed occurrences are not replayed one by
    /// one. The fire time moves in the same transaction that queues the
    /// run, so no fire time runs twice, across restarts or nodes.
    async fn fire_due(&self) -> Result<(), ConnectError> {
        let now = self.inner.clock.now();
        for due in self.inner.store.due_schedules(now).await? {
            let next = match crate::schedule::next_after(&due.cron, &due.timezone, now) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(flow = %due.flow, error = %e, "schedule cannot compute its next time");
                    continue;
                }
            };
            let Ok((flow, _, doc)) = self.flow(due.team, due.flow, None).await else {
                continue;
            };
            let fmt = |t: time::OffsetDateTime| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            };
            let input = serde_json::json!({
                "scheduled_for": fmt(due.next_fire_at),
                "fired_at": fmt(now),
            });
            let run = Self::new_run(&flow, &doc, "schedule", &input, now);
            if self.inner.store.fire_schedule(&due, next, run).await? {
                self.inner.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Whether a flow's trigger is a webhook, and whether it must be signed.
    pub fn webhook_signed(doc: &FlowDocument) -> Option<bool> {
        match doc.trigger {
            Trigger::Webhook { verify_signature } => Some(verify_signature),
            _ => None,
        }
    }

    /// Starts the worker pool.
    pub fn start_workers(&self) -> Workers {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for i in 0..self.inner.config.workers.max(1) {
            let this = self.clone();
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                this.work(i, &mut stopped).await;
            }));
        }
        Workers { stop, tasks }
    }

    async fn work(&self, index: usize, stopped: &mut watch::Receiver<bool>) {
        let mut last_prune = None;
        loop {
            if *stopped.borrow() {
                return;
            }
            if index == 0 {
                self.prune(&mut last_prune).await;
                if let Err(e) = self.fire_due().await {
                    tracing::error!(error = %e, "connect schedules could not fire");
                }
                if let Err(e) = self.deliver_app_events().await {
                    tracing::error!(error = %e, "connect app events could not be delivered");
                }
            }
            let now = self.inner.clock.now();
            let owner = format!("{}/{}", self.inner.node, uuid::Uuid::now_v7());
            let claimed = self
                .inner
                .store
                .claim_run(
                    &owner,
                    now,
                    now + self.inner.config.lease,
                    self.inner.config.team_concurrency,
                    None,
                )
                .await;
            match claimed {
                Ok(Some(run)) => {
                    self.execute(run, owner).await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "connect workers cannot claim runs"),
            }
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(self.inner.config.poll) => {}
                _ = stopped.changed() => return,
            }
        }
    }

    async fn prune(&self, last: &mut Option<std::time::Instant>) {
        let Some(retention) = self.inner.config.retention else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(3600)) {
            return;
        }
        *last = Some(std::time::Instant::now());
        let before = self.inner.clock.now() - retention;
        match self.inner.store.prune_runs(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "pruned connect runs past retention"),
            Err(e) => tracing::error!(error = %e, "connect run retention failed"),
        }
    }
}
