//! [`EventLog`]: the group-commit appender, checkpoint signer and pruner.
//!
//! Callers hand events to one writer task through a bounded queue. The task
//! takes everything waiting (up to a batch limit), appends it in one write
//! transaction, signs a checkpoint in that same transaction when one is due,
//! commits, and only then answers each caller. One fsync thus covers many
//! events, and no caller hears "recorded" before its event is on disk. A full
//! queue makes callers wait (back-pressure); nothing is ever dropped, and an
//! append that fails is returned to its caller as an error.
//!
//! The Ed25519 signing key's PKCS#8 document is sealed with AES-256-GCM under
//! the platform data key (itself wrapped by the KMS) and stored in the
//! platform database, which SQLCipher also encrypts under that key. Sealing
//! keeps the key out of anything that reads rows (a query, a logical dump)
//! and binds it to its key id. It does not protect against someone who holds
//! the platform data key; against them, export checkpoints to a place they do
//! not control and verify with [`VerifyOptions::trusted_keys`].

use std::sync::Arc;

use kura_crypto::signing::{PublicKey, SigningKey};
use kura_crypto::{DataKey, aead};
use kura_types::{Clock, KeyScope, SecurityEvent};
use rusqlite::{Connection, Transaction};
use time::{Duration, OffsetDateTime};
use tokio::sync::{mpsc, oneshot};

use super::{
    ChainHash, ChainVerification, Checkpoint, CheckpointExport, EventPage, EventQuery, EventRecord,
    Seq, VerifyOptions,
};
use crate::sqlite::Pool;
use crate::sqlite::events as sql;
use crate::{Storage, StoreError};

/// Tuning for [`EventLog`].
#[derive(Debug, Clone, Copy)]
pub struct EventLogOptions {
    /// Sign a checkpoint whenever this many entries have been appended since
    /// the last one (0: only on demand).
    pub checkpoint_every: u64,
    /// Sign a checkpoint once the oldest entry after the last one is this
    /// old, however few entries there are (`None`: by count only). Checked
    /// once a second, with the injected clock.
    pub checkpoint_after: Option<std::time::Duration>,
    /// How many append requests may wait before callers are made to wait.
    pub queue_capacity: usize,
    /// The most events one transaction appends.
    pub max_batch: usize,
    /// Logs of at least this many entries are verified in stretches on
    /// several read connections at once.
    pub split_verify_at: u64,
}

impl Default for EventLogOptions {
    fn default() -> Self {
        Self {
            checkpoint_every: 1000,
            checkpoint_after: Some(std::time::Duration::from_secs(60)),
            queue_capacity: 8192,
            max_batch: 4096,
            split_verify_at: 100_000,
        }
    }
}

/// What a prune did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneReport {
    /// Entries deleted.
    pub removed: u64,
    /// The last pruned entry, which a signed checkpoint now anchors.
    pub anchor_seq: Option<Seq>,
}

type Ack = oneshot::Sender<Result<Vec<Seq>, StoreError>>;

struct Job {
    records: Vec<EventRecord>,
    ack: Ack,
}

/// What the writer task and the handles share. The queue's sender is not in
/// here, so dropping the last handle closes the queue and ends the task.
struct Shared {
    pool: Pool,
    signer: SigningKey,
    clock: Arc<dyn Clock>,
    options: EventLogOptions,
}

impl Shared {
    fn sign(&self, tree_size: Seq, head_hash: ChainHash) -> Result<Checkpoint, StoreError> {
        let now = self.clock.now().unix_timestamp();
        let signed_at = OffsetDateTime::from_unix_timestamp(now)
            .map_err(|e| StoreError::Malformed(e.to_string()))?;
        let key_id = self.signer.public_key().key_id();
        let signature = self.signer.sign(&Checkpoint::signed_message(
            tree_size, &head_hash, now, &key_id,
        ));
        Ok(Checkpoint {
            tree_size,
            head_hash,
            signed_at,
            key_id,
            signature,
        })
    }

    /// Whether the once-a-second task should sign the head: enough entries
    /// arrived since the last checkpoint (events appended inside other
    /// writes' transactions never pass through the log's own writer, which
    /// signs by count as it commits), or the oldest of them has waited
    /// `checkpoint_after`.
    fn checkpoint_due(&self, conn: &Connection) -> Result<bool, StoreError> {
        let (seq, _) = sql::head(conn)?;
        let last = sql::last_checkpoint(conn)?;
        if seq <= last {
            return Ok(false);
        }
        let every = self.options.checkpoint_every;
        if every > 0 && seq - last >= every {
            return Ok(true);
        }
        let Some(after) = self.options.checkpoint_after else {
            return Ok(false);
        };
        let Some(oldest) = sql::entry_time(conn, last + 1)? else {
            return Ok(false);
        };
        let waited = self.clock.now().unix_timestamp_nanos() - i128::from(oldest);
        Ok(waited >= i128::try_from(after.as_nanos()).unwrap_or(i128::MAX))
    }

    /// Signs the head if `force` or if enough entries arrived since the last
    /// checkpoint. Returns the new checkpoint.
    fn checkpoint_in(
        &self,
        tx: &Transaction<'_>,
        force: bool,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let (seq, hash) = sql::head(tx)?;
        let last = sql::last_checkpoint(tx)?;
        let every = self.options.checkpoint_every;
        let due = seq > last && (force || (every > 0 && seq - last >= every));
        if !due {
            return Ok(None);
        }
        let checkpoint = self.sign(seq, hash)?;
        sql::insert_checkpoint(tx, &checkpoint)?;
        // A checkpoint is a batch boundary: extend the id and time lookups with it.
        sql::extend_lookups(tx)?;
        Ok(Some(checkpoint))
    }
}

/// The security event log of one platform database.
#[derive(Clone)]
pub struct EventLog {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Job>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("pool", &self.shared.pool)
            .field("signing_key", &self.shared.signer)
            .field("options", &self.shared.options)
            .finish()
    }
}

fn sealing_context(key_id: &str) -> Vec<u8> {
    format!("kura-events/signing-key/v1:{key_id}").into_bytes()
}

fn load_or_create_signer(
    tx: &Transaction<'_>,
    sealing: &DataKey,
    now: OffsetDateTime,
) -> Result<SigningKey, StoreError> {
    if let Some((key_id, public, sealed)) = sql::current_signing_key(tx)? {
        let pkcs8 = zeroize::Zeroizing::new(
            aead::open(sealing.expose(), &sealing_context(&key_id), &sealed).map_err(|_| {
                StoreError::Malformed(format!(
                    "event signing key {key_id} does not unseal under the platform data key"
                ))
            })?,
        );
        let key =
            SigningKey::from_pkcs8(&pkcs8).map_err(|e| StoreError::Malformed(e.to_string()))?;
        if key.public_key().as_bytes()[..] != public[..] || key.public_key().key_id() != key_id {
            return Err(StoreError::Malformed(format!(
                "event signing key {key_id} does not match its stored public key"
            )));
        }
        return Ok(key);
    }
    let key = SigningKey::generate().map_err(|e| StoreError::Malformed(e.to_string()))?;
    let public = key.public_key();
    let key_id = public.key_id();
    let sealed = aead::seal(sealing.expose(), &sealing_context(&key_id), &key.to_pkcs8())
        .map_err(|e| StoreError::Malformed(e.to_string()))?;
    sql::insert_signing_key(tx, &key_id, public.as_bytes(), &sealed, now)?;
    Ok(key)
}

impl EventLog {
    /// Opens the log in the platform database of `storage`, creating its
    /// signing key on first use, and starts the writer task. Must be called
    /// inside a Tokio runtime.
    pub async fn open(
        storage: &Storage,
        clock: Arc<dyn Clock>,
        options: EventLogOptions,
    ) -> Result<Self, StoreError> {
        let key = storage.keys.get(KeyScope::Platform).await?;
        Self::open_on(storage.sqlite.pool().clone(), &key, clock, options).await
    }

    /// Opens the log on a pool whose database has the event tables (platform
    /// migration 2), sealing the signing key under `sealing_key`.
    pub async fn open_on(
        pool: Pool,
        sealing_key: &DataKey,
        clock: Arc<dyn Clock>,
        options: EventLogOptions,
    ) -> Result<Self, StoreError> {
        let sealing = sealing_key.clone();
        let now = clock.now();
        let signer = pool
            .write(move |tx| {
                let signer = load_or_create_signer(tx, &sealing, now)?;
                sql::extend_lookups(tx)?;
                Ok(signer)
            })
            .await?;
        let shared = Arc::new(Shared {
            pool,
            signer,
            clock,
            options: EventLogOptions {
                queue_capacity: options.queue_capacity.max(1),
                max_batch: options.max_batch.max(1),
                ..options
            },
        });
        let (queue, rx) = mpsc::channel(shared.options.queue_capacity);
        tokio::spawn(run_writer(Arc::clone(&shared), rx));
        tokio::spawn(run_maintenance(Arc::downgrade(&shared)));
        Ok(Self { shared, queue })
    }

    /// The database pool the log lives in (for [`super::append_in_tx`]
    /// inside `pool.write`).
    pub fn pool(&self) -> &Pool {
        &self.shared.pool
    }

    /// The public key checkpoints are signed with.
    pub fn public_key(&self) -> PublicKey {
        self.shared.signer.public_key()
    }

    /// Records one event durably and returns its sequence number. Returns
    /// only after the transaction holding it has committed.
    pub async fn append(&self, event: SecurityEvent) -> Result<Seq, StoreError> {
        let seqs = self.append_records(vec![EventRecord::new(event)?]).await?;
        seqs.first()
            .copied()
            .ok_or_else(|| StoreError::Worker("the event writer returned no sequence".into()))
    }

    /// Records several events in order, durably, in one transaction.
    pub async fn append_records(&self, records: Vec<EventRecord>) -> Result<Vec<Seq>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let (ack, done) = oneshot::channel();
        self.queue
            .send(Job { records, ack })
            .await
            .map_err(|_| StoreError::Worker("the event writer has stopped".into()))?;
        done.await
            .map_err(|_| StoreError::Worker("the event writer stopped before committing".into()))?
    }

    /// Signs a checkpoint at the current head now. `None` if the log is empty
    /// or its head is already checkpointed.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let shared = Arc::clone(&self.shared);
        self.shared
            .pool
            .write(move |tx| shared.checkpoint_in(tx, true))
            .await
    }

    /// Extends the id and time lookups over every entry recorded so far
    /// (they otherwise catch up at signed checkpoints and once a second) and
    /// returns how many entries it added. Lookups search the entries after
    /// them in the log's tail, so this changes how fast they are, never what
    /// they find.
    pub async fn catch_up_lookups(&self) -> Result<u64, StoreError> {
        catch_up_lookups(&self.shared.pool).await
    }

    /// What the log's once-a-second task does: signs a checkpoint when one
    /// is due (see [`EventLogOptions::checkpoint_after`]) and extends the
    /// lookups. A read when there is nothing to do. Returns the checkpoint
    /// signed, if any.
    pub async fn maintain(&self) -> Result<Option<Checkpoint>, StoreError> {
        maintain(&self.shared).await
    }

    /// Walks the whole log; see [`super::verify`].
    pub async fn verify(&self, options: VerifyOptions) -> Result<ChainVerification, StoreError> {
        sql::verify(
            &self.shared.pool,
            options,
            self.shared.options.split_verify_at,
        )
        .await
    }

    /// Finds events; see [`super::query`].
    pub async fn query(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        sql::query(&self.shared.pool, query).await
    }

    /// Exports signed checkpoints; see [`super::export_checkpoints`].
    pub async fn export_checkpoints(&self) -> Result<CheckpointExport, StoreError> {
        sql::export_checkpoints(&self.shared.pool).await
    }

    /// Deletes entries older than `retention` (by the injected clock); see
    /// [`EventLog::prune_before`].
    pub async fn prune_older_than(&self, retention: Duration) -> Result<PruneReport, StoreError> {
        let cutoff = self.shared.clock.now() - retention;
        self.prune_before(cutoff).await
    }

    /// Deletes the longest prefix of the log whose entries are all older than
    /// `cutoff`, keeping the rest verifiable: the log is verified first (a
    /// broken log is never pruned, so tampering cannot be laundered into an
    /// anchor), then, in one transaction, a checkpoint is signed at the last
    /// entry to go, the entries are deleted, and that entry's hash is kept as
    /// the anchor the remaining chain starts from.
    pub async fn prune_before(&self, cutoff: OffsetDateTime) -> Result<PruneReport, StoreError> {
        // Verifying walks the whole log; skip it (and the write) when nothing
        // is old enough to prune, which is the usual case for a retention job
        // that runs at every start and every few hours.
        let nothing_to_prune = self
            .shared
            .pool
            .read(move |c| Ok(sql::prunable_prefix(c, cutoff)?.is_none()))
            .await?;
        if nothing_to_prune {
            let anchor = self
                .shared
                .pool
                .read(|c| Ok(sql::anchor(c)?.map(|a| a.0)))
                .await?;
            return Ok(PruneReport {
                removed: 0,
                anchor_seq: anchor,
            });
        }
        let check = self.verify(VerifyOptions::default()).await?;
        if let Some(problem) = check.problem {
            return Err(StoreError::Malformed(format!(
                "the event log does not verify ({problem}); refusing to prune it"
            )));
        }
        let shared = Arc::clone(&self.shared);
        self.shared
            .pool
            .write(move |tx| {
                let Some((last, hash)) = sql::prunable_prefix(tx, cutoff)? else {
                    return Ok(PruneReport {
                        removed: 0,
                        anchor_seq: sql::anchor(tx)?.map(|a| a.0),
                    });
                };
                let checkpoint = shared.sign(last, hash)?;
                sql::insert_checkpoint(tx, &checkpoint)?;
                let removed = sql::prune_to(tx, last, &hash, shared.clock.now())?;
                Ok(PruneReport {
                    removed,
                    anchor_seq: Some(last),
                })
            })
            .await
    }
}

/// How often the id and time lookups catch up with events recorded in other
/// writes' transactions (which do not pass through the log's own writer),
/// and how often a due checkpoint is looked for.
const MAINTENANCE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Once a second while the log is open: signs a due checkpoint and extends
/// the lookups over the log's tail ([`maintain`]); a tick with nothing to do
/// costs one read.
async fn run_maintenance(shared: std::sync::Weak<Shared>) {
    // `open_on` has just extended the lookups: the first tick is one
    // interval away, not immediate.
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + MAINTENANCE_INTERVAL,
        MAINTENANCE_INTERVAL,
    );
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(e) = maintain(&shared).await {
            // The entries stay as they are: unsigned ones are signed, and
            // ones the lookups do not cover yet (which lookups still find in
            // the tail) are covered, by the next tick.
            tracing::warn!(error = %e, "signing or indexing the event log failed");
        }
    }
}

/// [`EventLog::maintain`].
async fn maintain(shared: &Arc<Shared>) -> Result<Option<Checkpoint>, StoreError> {
    let s = Arc::clone(shared);
    let (pending, due) = shared
        .pool
        .read(move |conn| Ok((sql::lookups_pending(conn)?, s.checkpoint_due(conn)?)))
        .await?;
    if !pending && !due {
        return Ok(None);
    }
    let s = Arc::clone(shared);
    shared
        .pool
        .write(move |tx| {
            let checkpoint = if due {
                s.checkpoint_in(tx, true)?
            } else {
                None
            };
            // Signing extends the lookups itself (`checkpoint_in`).
            if checkpoint.is_none() {
                sql::extend_lookups(tx)?;
            }
            Ok(checkpoint)
        })
        .await
}

/// [`EventLog::catch_up_lookups`]: a read when nothing is pending, one
/// write when something is.
async fn catch_up_lookups(pool: &Pool) -> Result<u64, StoreError> {
    if !pool.read(sql::lookups_pending).await? {
        return Ok(0);
    }
    pool.write(sql::extend_lookups).await
}

/// The writer task: batch, commit, acknowledge.
async fn run_writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut count = first.records.len();
        let mut jobs = vec![first];
        while count < shared.options.max_batch {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.records.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let (acks, batches): (Vec<Ack>, Vec<Vec<EventRecord>>) =
            jobs.into_iter().map(|j| (j.ack, j.records)).unzip();
        let batches = Arc::new(batches);
        let result = {
            let batches = Arc::clone(&batches);
            let s = Arc::clone(&shared);
            shared
                .pool
                .write(move |tx| {
                    let seqs = sql::append_batches(tx, &batches)?;
                    s.checkpoint_in(tx, false)?;
                    Ok(seqs)
                })
                .await
        };
        match result {
            Ok(seqs) => {
                for (ack, seqs) in acks.into_iter().zip(seqs) {
                    // A caller that stopped waiting still had its event
                    // recorded; there is no one left to tell.
                    let _ = ack.send(Ok(seqs));
                }
            }
            Err(e) if acks.len() == 1 => {
                if let Some(ack) = acks.into_iter().next() {
                    let _ = ack.send(Err(e));
                }
            }
            Err(_) => {
                // Retry one request at a time, so a request that cannot be
                // stored fails alone and the others still land.
                for (i, ack) in acks.into_iter().enumerate() {
                    let batches = Arc::clone(&batches);
                    let s = Arc::clone(&shared);
                    let result = shared
                        .pool
                        .write(move |tx| {
                            let records = batches.get(i).map(Vec::as_slice).unwrap_or_default();
                            let seqs = sql::append_in_tx(tx, records)?;
                            s.checkpoint_in(tx, false)?;
                            Ok(seqs)
                        })
                        .await;
                    let _ = ack.send(result);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{BreakKind, Order};
    use crate::sqlite::{Durability, SqlitePlatformStore};
    use kura_types::{Action, Actor, ManualClock, Outcome, TeamId};

    struct Env {
        _dir: tempfile::TempDir,
        log: EventLog,
        clock: ManualClock,
    }

    async fn fresh(checkpoint_every: u64) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let key = DataKey::from_bytes([9; 32]);
        let store = SqlitePlatformStore::open(
            &dir.path().join("platform.db"),
            &key,
            true,
            Durability::Normal,
            2,
        )
        .unwrap();
        let clock = ManualClock::new(OffsetDateTime::UNIX_EPOCH + Duration::days(20_000));
        let log = EventLog::open_on(
            store.pool().clone(),
            &key,
            Arc::new(clock.clone()),
            EventLogOptions {
                checkpoint_every,
                ..EventLogOptions::default()
            },
        )
        .await
        .unwrap();
        Env {
            _dir: dir,
            log,
            clock,
        }
    }

    fn event(clock: &ManualClock, action: &str, outcome: Outcome) -> SecurityEvent {
        SecurityEvent::new(
            clock.now(),
            Actor::Account { id: "a1".into() },
            Action::parse(action).unwrap(),
            outcome,
        )
    }

    /// Appends `n` events inside a write of the log's database, as a state
    /// change with its event does, bypassing the log's own writer.
    async fn append_in_other_write(env: &Env, n: usize) {
        let records: Vec<EventRecord> = (0..n)
            .map(|_| {
                EventRecord::new(event(
                    &env.clock,
                    "account.profile.changed",
                    Outcome::Success,
                ))
                .unwrap()
            })
            .collect();
        env.log
            .pool()
            .write(move |tx| sql::append_in_tx(tx, &records).map(drop))
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_from_other_writes_are_signed_by_count_and_by_age() {
        let env = fresh(5).await;
        append_in_other_write(&env, 3).await;
        assert_eq!(
            env.log.maintain().await.unwrap(),
            None,
            "too few, too young"
        );
        env.clock.advance(Duration::seconds(59));
        assert_eq!(env.log.maintain().await.unwrap(), None, "not a minute yet");
        env.clock.advance(Duration::seconds(1));
        let signed = env.log.maintain().await.unwrap().map(|c| c.tree_size);
        assert_eq!(signed, Some(3), "the oldest unsigned entry waited a minute");
        assert_eq!(env.log.maintain().await.unwrap(), None, "nothing new");
        // Five more at once: due by count, without waiting.
        append_in_other_write(&env, 5).await;
        let signed = env.log.maintain().await.unwrap().map(|c| c.tree_size);
        assert_eq!(signed, Some(8));
        let report = env.log.verify(VerifyOptions::default()).await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.last_signed, Some(8));
        assert_eq!(
            env.log.catch_up_lookups().await.unwrap(),
            0,
            "lookups extended too"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_chain_checkpoint_and_verify() {
        let env = fresh(5).await;
        for i in 0..12 {
            let seq = env
                .log
                .append(event(&env.clock, "auth.signin.succeeded", Outcome::Success))
                .await
                .unwrap();
            assert_eq!(seq, i + 1);
        }
        let report = env.log.verify(VerifyOptions::default()).await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.entries_checked, 12);
        assert_eq!(report.last_signed, Some(10), "checkpoints at 5 and 10");
        let cp = env.log.checkpoint().await.unwrap().unwrap();
        assert_eq!(cp.tree_size, 12);
        assert!(
            env.log.checkpoint().await.unwrap().is_none(),
            "head already signed"
        );
        let export = env.log.export_checkpoints().await.unwrap();
        assert_eq!(export.verify(&env.log.public_key()), Ok(3));
        // A pinned key that did not sign the log is refused.
        let stranger = SigningKey::generate().unwrap().public_key();
        let pinned = env
            .log
            .verify(VerifyOptions {
                trusted_keys: vec![stranger],
            })
            .await
            .unwrap();
        assert!(matches!(
            pinned.problem.map(|p| (p.seq, p.kind)),
            Some((5, BreakKind::UnknownKey { .. }))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_signing_key_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let key = DataKey::from_bytes([4; 32]);
        let path = dir.path().join("p.db");
        let open = || SqlitePlatformStore::open(&path, &key, true, Durability::Normal, 1);
        let clock: Arc<dyn Clock> = Arc::new(kura_types::SystemClock);
        let first = EventLog::open_on(
            open().unwrap().pool().clone(),
            &key,
            clock.clone(),
            EventLogOptions::default(),
        )
        .await
        .unwrap()
        .public_key();
        let again = EventLog::open_on(
            open().unwrap().pool().clone(),
            &key,
            clock.clone(),
            EventLogOptions::default(),
        )
        .await
        .unwrap()
        .public_key();
        assert_eq!(first, again);
        let wrong = EventLog::open_on(
            open().unwrap().pool().clone(),
            &DataKey::from_bytes([5; 32]),
            clock,
            EventLogOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(wrong.to_string().contains("does not unseal"), "{wrong}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_filter_and_paginate() {
        let env = fresh(0).await;
        let team = TeamId::new();
        let start = env.clock.now();
        for i in 0..30u32 {
            let mut e = event(
                &env.clock,
                if i % 3 == 0 {
                    "auth.signin.failed"
                } else {
                    "admin.role.granted"
                },
                if i % 3 == 0 {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
            );
            if i % 2 == 0 {
                e = e.with_team(team);
            }
            if i == 7 {
                e = e
                    .with_request_id("req-7")
                    .with_source("::ffff:192.0.2.1".parse().unwrap());
                e.actor = Actor::Token { id: "t9".into() };
            }
            env.log.append(e).await.unwrap();
            env.clock.advance(Duration::minutes(1));
        }
        let page = |q: EventQuery| {
            let log = env.log.clone();
            async move { log.query(q).await.unwrap() }
        };
        let seqs = |p: &EventPage| p.events.iter().map(|e| e.seq).collect::<Vec<_>>();

        let all = page(EventQuery::default()).await;
        assert_eq!(all.events.len(), 30);
        assert_eq!(all.events[0].seq, 30, "newest first by default");
        assert_eq!(all.next_cursor, None);

        let failed = page(EventQuery {
            action_prefix: Some("auth".into()),
            order: Order::OldestFirst,
            ..Default::default()
        })
        .await;
        assert_eq!(seqs(&failed), vec![1, 4, 7, 10, 13, 16, 19, 22, 25, 28]);
        assert!(
            page(EventQuery {
                action_prefix: Some("aut".into()),
                ..Default::default()
            })
            .await
            .events
            .is_empty()
        );
        let team_failures = page(EventQuery {
            team: Some(team),
            outcome: Some(Outcome::Failure),
            order: Order::OldestFirst,
            ..Default::default()
        })
        .await;
        assert_eq!(seqs(&team_failures), vec![1, 7, 13, 19, 25]);

        let by_request = page(EventQuery {
            request_id: Some("req-7".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(seqs(&by_request), vec![8]);
        let by_source = page(EventQuery {
            source: Some("192.0.2.1".parse().unwrap()),
            actor: Some("token:t9".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(seqs(&by_source), vec![8]);
        assert_eq!(
            by_source.events[0].event.request_id.as_deref(),
            Some("req-7")
        );

        let window = page(EventQuery {
            since: Some(start + Duration::minutes(10)),
            until: Some(start + Duration::minutes(15)),
            order: Order::OldestFirst,
            ..Default::default()
        })
        .await;
        assert_eq!(seqs(&window), vec![11, 12, 13, 14, 15]);

        // Cursor pagination visits every event exactly once, both ways.
        for order in [Order::NewestFirst, Order::OldestFirst] {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let p = page(EventQuery {
                    cursor,
                    limit: 7,
                    order,
                    ..Default::default()
                })
                .await;
                seen.extend(seqs(&p));
                match p.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            seen.sort_unstable();
            assert_eq!(seen, (1..=30).collect::<Vec<_>>(), "{order}");
        }
    }

    /// Times follow `seq` only roughly (concurrent writers, ingested
    /// events); a time window must still find exactly its entries, whether
    /// the time blocks cover them yet or they are in the unindexed tail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn time_windows_find_exactly_their_entries_indexed_or_not() {
        let env = fresh(0).await;
        let base = env.clock.now();
        let mut times = Vec::new();
        for i in 0..700i64 {
            // Mostly rising, with every 97th entry far in the past and every
            // 13th a little late.
            let offset = match i {
                _ if i % 97 == 0 => i - 400,
                _ if i % 13 == 0 => i - 3,
                _ => i,
            };
            let mut e = event(&env.clock, "auth.signin.succeeded", Outcome::Success);
            e.time = base + Duration::seconds(offset);
            env.log.append(e).await.unwrap();
            times.push(offset);
            if i == 300 {
                env.log.catch_up_lookups().await.unwrap();
            }
        }
        let windows = [
            (Some(-50), Some(10)),
            (Some(100), Some(101)),
            (Some(250), None),
            (None, Some(-300)),
            (Some(290), Some(310)),
            (Some(600), Some(650)),
            (Some(-1000), Some(1000)),
            (Some(5000), None),
        ];
        for round in ["partly covered", "covered"] {
            for (since, until) in windows {
                for order in [Order::OldestFirst, Order::NewestFirst] {
                    let mut expected: Vec<Seq> = (1..=700u64)
                        .filter(|&seq| {
                            let t = times[seq as usize - 1];
                            since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u)
                        })
                        .collect();
                    if order == Order::NewestFirst {
                        expected.reverse();
                    }
                    let (mut got, mut cursor) = (Vec::new(), None);
                    loop {
                        let page = env
                            .log
                            .query(EventQuery {
                                since: since.map(|s| base + Duration::seconds(s)),
                                until: until.map(|u| base + Duration::seconds(u)),
                                cursor,
                                order,
                                limit: 7,
                                ..EventQuery::default()
                            })
                            .await
                            .unwrap();
                        got.extend(page.events.iter().map(|e| e.seq));
                        match page.next_cursor {
                            Some(c) => cursor = Some(c),
                            None => break,
                        }
                    }
                    assert_eq!(got, expected, "{round}: {since:?}..{until:?} {order:?}");
                }
            }
            env.log.catch_up_lookups().await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pruning_keeps_the_rest_verifiable() {
        let env = fresh(4).await;
        for _ in 0..10 {
            env.log
                .append(event(&env.clock, "data.export", Outcome::Success))
                .await
                .unwrap();
            env.clock.advance(Duration::days(1));
        }
        // Events 1..=10 are 10..1 days old; keep the last 3 days.
        let report = env.log.prune_older_than(Duration::days(3)).await.unwrap();
        assert_eq!(report.removed, 7);
        assert_eq!(report.anchor_seq, Some(7));
        let check = env.log.verify(VerifyOptions::default()).await.unwrap();
        assert!(check.is_intact(), "{check:?}");
        assert_eq!((check.first_seq, check.last_seq), (Some(8), Some(10)));
        // The lookups (extended at each checkpoint) went with the pruned
        // entries and still covers the kept ones.
        env.log.catch_up_lookups().await.unwrap();
        let ids: Vec<i64> = env
            .log
            .pool()
            .read(|c| {
                let mut stmt = c.prepare("SELECT seq FROM event_ids ORDER BY seq")?;
                let seqs = stmt.query_map([], |r| r.get(0))?;
                Ok(seqs.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap();
        assert_eq!(ids, [8, 9, 10]);
        // Appends continue the chain from the anchor.
        let seq = env
            .log
            .append(event(&env.clock, "data.export", Outcome::Success))
            .await
            .unwrap();
        assert_eq!(seq, 11);
        assert!(
            env.log
                .verify(VerifyOptions::default())
                .await
                .unwrap()
                .is_intact()
        );
        // Pruning again with nothing old enough changes nothing.
        let again = env.log.prune_older_than(Duration::days(30)).await.unwrap();
        assert_eq!(again.removed, 0);
        // A forged anchor is caught.
        env.log
            .pool()
            .write(|tx| Ok(tx.execute("UPDATE event_anchor SET hash = zeroblob(32)", [])?))
            .await
            .unwrap();
        let broken = env.log.verify(VerifyOptions::default()).await.unwrap();
        assert_eq!(
            broken.problem.map(|p| (p.seq, p.kind)),
            Some((8, BreakKind::AnchorUnsigned { anchor: 7 }))
        );
        let refused = env
            .log
            .prune_older_than(Duration::days(1))
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("refusing to prune"),
            "{refused}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_group_commit_into_one_chain() {
        let env = fresh(100).await;
        let mut tasks = Vec::new();
        for _ in 0..500 {
            let log = env.log.clone();
            let e = event(&env.clock, "auth.signin.succeeded", Outcome::Success);
            tasks.push(tokio::spawn(async move { log.append(e).await }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap().unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=500).collect::<Vec<_>>());
        let report = env.log.verify(VerifyOptions::default()).await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.entries_checked, 500);
        // Checkpoints land at batch boundaries once 100 entries accumulated.
        assert!(report.last_signed.is_some_and(|s| s > 400), "{report:?}");
    }
}
