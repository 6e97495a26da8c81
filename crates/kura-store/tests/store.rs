//! Storage integration tests: encryption at rest, key rotation, crypto-shredding
//! and refusal of damaged state. One binary for the crate.

// Helpers outside `#[test]` functions are not covered by clippy.toml's
// allow-*-in-tests settings; a failing helper should fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use kura_crypto::{Kms, LocalKms, SealParams};
use kura_store::{DataDir, SetupTokenCheck, Storage, StorageOptions, StoreError, open_storage};
use kura_types::{AppId, Clock, KeyScope, SystemClock};
use time::{Duration, OffsetDateTime};

struct Env {
    _tmp: tempfile::TempDir,
    dir: DataDir,
}

fn fresh() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("kura-data"));
    dir.prepare().unwrap();
    Env { _tmp: tmp, dir }
}

fn kms(dir: &DataDir) -> Arc<dyn Kms> {
    let path = dir.master_key_file();
    if path.exists() {
        Arc::new(LocalKms::open(&path, None).unwrap())
    } else {
        Arc::new(
            LocalKms::create(
                &path,
                None,
                SealParams::default(),
                OffsetDateTime::now_utc(),
            )
            .unwrap(),
        )
    }
}

async fn open(dir: &DataDir) -> Result<Storage, StoreError> {
    open_storage(
        dir,
        kms(dir),
        Arc::new(SystemClock),
        StorageOptions::default(),
    )
    .await
}

fn files_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_file_in_the_data_directory_holds_plaintext() {
    let env = fresh();
    let storage = open(&env.dir).await.unwrap();
    let marker = "KURA-PLAINTEXT-MARKER-7f3a9c";
    let now = OffsetDateTime::now_utc();
    storage
        .platform
        .set_setting("marker", marker, now)
        .await
        .unwrap();
    let app = AppId::new();
    let pool = storage.apps.create(app).await.unwrap();
    let m = marker.to_owned();
    pool.write(move |tx| {
        tx.execute_batch("CREATE TABLE notes(body TEXT)")?;
        tx.execute("INSERT INTO notes VALUES (?1)", [m])?;
        Ok(())
    })
    .await
    .unwrap();
    // The marker must be readable back through the stores ...
    assert_eq!(
        storage.platform.setting("marker").await.unwrap().as_deref(),
        Some(marker)
    );
    let got: String = pool
        .read(|c| Ok(c.query_row("SELECT body FROM notes", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(got, marker);
    // ... and absent from every byte on disk, WAL files included.
    let files = files_under(env.dir.root());
    assert!(files.iter().any(|f| f.to_string_lossy().ends_with("-wal")));
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains(&app.to_string()))
    );
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains(&bytes, marker.as_bytes()),
            "plaintext marker found in {}",
            file.display()
        );
        assert!(
            !contains(&bytes, b"SQLite format 3"),
            "unencrypted header in {}",
            file.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_runs_reuse_keys_and_data() {
    let env = fresh();
    let app = AppId::new();
    {
        let storage = open(&env.dir).await.unwrap();
        assert!(storage.created);
        storage
            .platform
            .set_setting("k", "v", OffsetDateTime::now_utc())
            .await
            .unwrap();
        storage
            .apps
            .create(app)
            .await
            .unwrap()
            .write(|tx| Ok(tx.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (42);")?))
            .await
            .unwrap();
    }
    let storage = open(&env.dir).await.unwrap();
    assert!(!storage.created);
    assert_eq!(
        storage.platform.setting("k").await.unwrap().as_deref(),
        Some("v")
    );
    let n: i64 = storage
        .apps
        .open(app)
        .await
        .unwrap()
        .read(|c| Ok(c.query_row("SELECT x FROM t", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(n, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_rewraps_every_key_and_data_stays_readable() {
    let env = fresh();
    let storage = open(&env.dir).await.unwrap();
    let apps: Vec<AppId> = (0..3).map(|_| AppId::new()).collect();
    for app in &apps {
        storage
            .apps
            .create(*app)
            .await
            .unwrap()
            .write(|tx| Ok(tx.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES ('kept');")?))
            .await
            .unwrap();
    }
    let before = storage.keys.usage().await.unwrap();
    assert_eq!(
        before.by_version.get(&1),
        Some(&4),
        "platform key and three app keys"
    );

    let report = storage.keys.rotate_master().await.unwrap();
    assert_eq!(report.current_version, 2);
    assert_eq!(report.rewrapped, 4);
    assert_eq!(report.unused_versions, vec![1]);
    let after = storage.keys.usage().await.unwrap();
    assert_eq!(after.by_version.get(&2), Some(&4));
    assert!(!after.by_version.contains_key(&1));

    // A second run finds nothing to do.
    let again = storage.keys.rewrap_all().await.unwrap();
    assert_eq!((again.rewrapped, again.already_current), (0, 4));

    storage.keys.retire(1).await.unwrap();
    drop(storage);
    // Everything opens under the new version alone.
    let storage = open(&env.dir).await.unwrap();
    for app in &apps {
        let v: String = storage
            .apps
            .open(*app)
            .await
            .unwrap()
            .read(|c| Ok(c.query_row("SELECT x FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(v, "kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_in_use_cannot_be_retired() {
    let env = fresh();
    let storage = open(&env.dir).await.unwrap();
    storage.keys.kms().rotate().await.unwrap();
    let err = storage.keys.retire(1).await.unwrap_err();
    assert!(err.to_string().contains("still wrapped"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroying_an_app_key_makes_its_data_unrecoverable() {
    let env = fresh();
    let storage = open(&env.dir).await.unwrap();
    let app = AppId::new();
    storage
        .apps
        .create(app)
        .await
        .unwrap()
        .write(|tx| Ok(tx.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?))
        .await
        .unwrap();
    // Keep a "backup" copy of the file before destruction.
    let backup = env.dir.root().join("backup.db");
    storage
        .apps
        .open(app)
        .await
        .unwrap()
        .with_writer(|c| Ok(c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?))
        .await
        .unwrap();
    std::fs::copy(env.dir.app_db(app), &backup).unwrap();

    assert!(storage.apps.destroy(app).await.unwrap());
    assert!(!env.dir.app_db(app).exists());
    let err = storage.keys.get(KeyScope::App(app)).await.unwrap_err();
    assert!(err.to_string().contains("destroyed"), "{err}");
    // The scope can never get a new key that would make old copies readable.
    assert!(storage.apps.create(app).await.is_err());
    // The backup is noise without the key.
    std::fs::rename(&backup, env.dir.app_db(app)).unwrap();
    assert!(storage.apps.open(app).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_tokens_are_single_use_expiring_and_replaced() {
    let env = fresh();
    let storage = open(&env.dir).await.unwrap();
    let now = SystemClock.now();
    let first = kura_crypto::token::SecretToken::generate().unwrap();
    let second = kura_crypto::token::SecretToken::generate().unwrap();
    let p = &storage.platform;
    p.issue_setup_token(&first.hash(), now, now + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        p.check_setup_token(&first.hash(), now, false)
            .await
            .unwrap(),
        SetupTokenCheck::Valid
    );
    p.issue_setup_token(&second.hash(), now, now + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        p.check_setup_token(&first.hash(), now, true).await.unwrap(),
        SetupTokenCheck::Unknown
    );
    assert_eq!(
        p.check_setup_token(&second.hash(), now + Duration::minutes(61), true)
            .await
            .unwrap(),
        SetupTokenCheck::Expired
    );
    assert_eq!(
        p.check_setup_token(&second.hash(), now, true)
            .await
            .unwrap(),
        SetupTokenCheck::Valid
    );
    assert_eq!(
        p.check_setup_token(&second.hash(), now, true)
            .await
            .unwrap(),
        SetupTokenCheck::Used
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_mismatched_state_is_refused_and_left_alone() {
    // A different master key file.
    let env = fresh();
    open(&env.dir).await.unwrap();
    std::fs::remove_file(env.dir.master_key_file()).unwrap();
    let err = open(&env.dir).await.unwrap_err();
    assert!(err.to_string().contains("different master key"), "{err}");

    // A missing platform key with an existing database.
    let env = fresh();
    open(&env.dir).await.unwrap();
    std::fs::remove_file(env.dir.platform_key_file()).unwrap();
    let err = open(&env.dir).await.unwrap_err();
    assert!(err.to_string().contains("platform.key"), "{err}");
    assert!(
        !env.dir.platform_key_file().exists(),
        "nothing was generated over existing data"
    );

    // A corrupt database file.
    let env = fresh();
    open(&env.dir).await.unwrap();
    let db = env.dir.platform_db();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().take(4096) {
        *b ^= 0x5a;
    }
    std::fs::write(&db, &bytes).unwrap();
    let err = open(&env.dir).await.unwrap_err();
    assert!(err.to_string().contains("platform.db"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        bytes,
        "the damaged file was not touched"
    );
}

// Helpers outside `#[test]` functions are not covered by clippy.toml's
// allow-*-in-tests settings; a failing helper should fail the test.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod event_log {
    //! The event log's tamper evidence, proven against the raw store: every
    //! kind of edit made with plain SQL is reported at the right entry.

    use super::*;
    use kura_store::events::{
        BreakKind, ChainBreak, EventLog, EventLogOptions, VerifyOptions, chain_hash,
    };
    use kura_store::{Durability, open_encrypted};
    use kura_types::{Action, Actor, Outcome, SecurityEvent};
    use rusqlite::{Connection, params};

    async fn log_with_30_events() -> (Env, Storage, EventLog, Connection) {
        let env = fresh();
        let storage = open(&env.dir).await.unwrap();
        let log = EventLog::open(
            &storage,
            Arc::new(SystemClock),
            EventLogOptions {
                checkpoint_every: 10,
                // Every walk below first runs in stretches, so each kind of
                // tampering is also shown to stop the split walk.
                split_verify_at: 8,
                ..EventLogOptions::default()
            },
        )
        .await
        .unwrap();
        for i in 0..30 {
            let event = SecurityEvent::new(
                SystemClock.now(),
                Actor::Account {
                    id: format!("acc-{i}"),
                },
                Action::parse("auth.signin.failed").unwrap(),
                Outcome::Failure,
            )
            .with_detail("attempt", i);
            log.append(event).await.unwrap();
        }
        let key = storage.keys.get(KeyScope::Platform).await.unwrap();
        let raw =
            open_encrypted(&env.dir.platform_db(), Some(&key), false, Durability::Full).unwrap();
        (env, storage, log, raw)
    }

    async fn first_break(log: &EventLog) -> ChainBreak {
        let report = log.verify(VerifyOptions::default()).await.unwrap();
        report.problem.expect("tampering must be detected")
    }

    fn hash_of(raw: &Connection, seq: i64) -> [u8; 32] {
        let h: Vec<u8> = raw
            .query_row("SELECT hash FROM events WHERE seq = ?1", [seq], |r| {
                r.get(0)
            })
            .unwrap();
        h.try_into().unwrap()
    }

    /// Rewrites entries `from..=to` with correct hashes, as a careful attacker
    /// with database access would.
    fn rehash(raw: &Connection, from: i64, to: i64) {
        for seq in from..=to {
            let prev = if seq == 1 {
                [0; 32]
            } else {
                hash_of(raw, seq - 1)
            };
            let body: Vec<u8> = raw
                .query_row("SELECT body FROM events WHERE seq = ?1", [seq], |r| {
                    r.get(0)
                })
                .unwrap();
            let hash = chain_hash(seq as u64, &prev, &body);
            raw.execute(
                "UPDATE events SET hash = ?1 WHERE seq = ?2",
                params![&hash[..], seq],
            )
            .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_untouched_log_verifies_and_exports() {
        let (_env, _storage, log, _raw) = log_with_30_events().await;
        let report = log.verify(VerifyOptions::default()).await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.entries_checked, 30);
        assert_eq!(report.last_signed, Some(30));
        assert_eq!(report.first_seq, Some(1));
        assert_eq!(report.last_seq, Some(30));
        assert_eq!(report.head_hash, Some(hash_of(&_raw, 30)));
        if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
            assert!(report.stretches >= 2, "{report:?}");
        }
        let pinned = log
            .verify(VerifyOptions {
                trusted_keys: vec![log.public_key()],
            })
            .await
            .unwrap();
        assert!(pinned.is_intact());
        let export = log.export_checkpoints().await.unwrap();
        assert_eq!(export.verify(&log.public_key()), Ok(3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mutated_body_is_found_at_its_entry() {
        let (_env, _storage, log, raw) = log_with_30_events().await;
        let n = raw
            .execute(
                "UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'failed', 'succeeded') AS BLOB)
                  WHERE seq = 13",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
        let b = first_break(&log).await;
        assert_eq!(
            (b.seq, b.kind.clone()),
            (13, BreakKind::HashMismatch),
            "{b}"
        );
        assert!(b.to_string().contains("entry 13"), "{b}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rehashed_edit_breaks_the_next_link_or_the_checkpoint() {
        let (_env, _storage, log, raw) = log_with_30_events().await;
        raw.execute(
            "UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'acc-13', 'acc-99') AS BLOB)
              WHERE seq = 14",
            [],
        )
        .unwrap();
        rehash(&raw, 14, 14);
        let b = first_break(&log).await;
        assert_eq!((b.seq, b.kind), (15, BreakKind::HashMismatch));
        // Rewriting the rest of the chain too is caught by the next signed
        // checkpoint.
        rehash(&raw, 15, 30);
        let b = first_break(&log).await;
        assert_eq!(
            (b.seq, b.kind.clone()),
            (20, BreakKind::CheckpointMismatch),
            "{b}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_moved_time_column_is_found_at_its_entry() {
        let (_env, _storage, log, raw) = log_with_30_events().await;
        // A day later: out of reach of a query for the hour it happened in.
        raw.execute(
            "UPDATE events SET time = time + 86400000000000 WHERE seq = 9",
            [],
        )
        .unwrap();
        let b = first_break(&log).await;
        assert_eq!((b.seq, b.kind.clone()), (9, BreakKind::TimeAltered), "{b}");
        assert!(b.to_string().contains("entry 9"), "{b}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_entry_is_reported_missing() {
        let (_env, _storage, log, raw) = log_with_30_events().await;
        raw.execute("DELETE FROM events WHERE seq = 7", []).unwrap();
        let b = first_break(&log).await;
        assert_eq!(
            (b.seq, b.kind),
            (
                7,
                BreakKind::Missing {
                    next_present: Some(8)
                }
            )
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_deleted_across_a_stretch_boundary_are_reported_missing() {
        let (_env, _storage, log, raw) = log_with_30_events().await;
        // With two stretches the first ends at 15 and the second starts at 16.
        raw.execute("DELETE FROM events WHERE seq IN (15, 16)", [])
            .unwrap();
        let b = first_break(&log).await;
        assert_eq!(
            (b.seq, b.kind),
            (
                15,
                BreakKind::Missing {
                    next_present: Some(17)
                }
            )
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reordered_entries_break_the_link() {
        let (_env, _storage, log, raw) = log_with_30_events().await;
        raw.execute_batch(
            "UPDATE events SET seq = -5 WHERE seq = 5;
             UPDATE events SET seq = 5 WHERE seq = 6;
             UPDATE events SET seq = 6 WHERE seq = -5;",
        )
        .unwrap();
        let b = first_break(&log).await;
        assert_eq!((b.seq, b.kind), (5, BreakKind::HashMismatch));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_truncated_tail_is_caught_by_the_last_checkpoint() {
        let (_env, _storage, log, raw) = log_with_30_events().await;
        raw.execute("DELETE FROM events WHERE seq > 25", [])
            .unwrap();
        let b = first_break(&log).await;
        assert_eq!(
            (b.seq, b.kind),
            (26, BreakKind::Truncated { checkpoint: 30 })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forged_checkpoint_signature_is_caught() {
        let (_env, _storage, log, raw) = log_with_30_events().await;
        let sig: Vec<u8> = raw
            .query_row(
                "SELECT signature FROM event_checkpoints WHERE tree_size = 20",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let mut forged = sig;
        forged[10] ^= 0x40;
        raw.execute(
            "UPDATE event_checkpoints SET signature = ?1 WHERE tree_size = 20",
            [forged],
        )
        .unwrap();
        let b = first_break(&log).await;
        assert!(
            matches!(&b.kind, BreakKind::BadSignature { .. }) && b.seq == 20,
            "{b:?}"
        );
    }
}

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod exports_and_incidents {
    //! Export cursors and incidents on the real platform database: cursors
    //! survive reopening and only move forward from where they are; an
    //! incident change and its events commit together or not at all.

    use super::*;
    use kura_store::events::{EventLog, EventLogOptions, EventQuery, EventRecord};
    use kura_store::exports::ExportStore;
    use kura_store::incidents::{
        IncidentRecord, IncidentStore, IncidentTarget, IncidentUpdate, IncidentWrite, TimelineEntry,
    };
    use kura_store::{SqliteExportStore, SqliteIncidentStore};
    use kura_types::{Action, Actor, IncidentId, Outcome, SecurityEvent};

    fn record(action: &str) -> EventRecord {
        EventRecord::new(SecurityEvent::new(
            SystemClock.now(),
            Actor::Anonymous,
            Action::parse(action).unwrap(),
            Outcome::Success,
        ))
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn export_cursors_survive_reopening_and_move_only_forward() {
        let env = fresh();
        let now = SystemClock.now();
        {
            let storage = open(&env.dir).await.unwrap();
            let cursors = SqliteExportStore::new(storage.sqlite.pool().clone());
            assert_eq!(cursors.cursor("siem").await.unwrap(), None);
            cursors.advance("siem", None, 10, 10, now).await.unwrap();
            // A second "first" advance, a stale one and a backward one are
            // all refused.
            for (from, to) in [(None, 5), (Some(3), 12), (Some(10), 10)] {
                let err = cursors.advance("siem", from, to, 1, now).await.unwrap_err();
                assert!(
                    matches!(err, StoreError::Conflict(_)),
                    "{from:?}->{to}: {err}"
                );
            }
            cursors.advance("siem", Some(10), 15, 5, now).await.unwrap();
        }
        let storage = open(&env.dir).await.unwrap();
        let cursors = SqliteExportStore::new(storage.sqlite.pool().clone());
        let c = cursors.cursor("siem").await.unwrap().unwrap();
        assert_eq!((c.seq, c.exported), (15, 15));
        assert_eq!(cursors.cursor("other").await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_incident_change_and_its_events_commit_together_or_not_at_all() {
        let env = fresh();
        let storage = open(&env.dir).await.unwrap();
        let log = EventLog::open(&storage, Arc::new(SystemClock), EventLogOptions::default())
            .await
            .unwrap();
        let store = SqliteIncidentStore::new(storage.sqlite.pool().clone());
        let now = SystemClock.now();
        let id = IncidentId::new();
        let entry = |text: &str| TimelineEntry {
            at: now,
            actor: "account:a".into(),
            kind: "note".into(),
            text: text.into(),
        };
        store
            .write(IncidentWrite {
                target: IncidentTarget::Create(IncidentRecord {
                    id,
                    title: "t".into(),
                    severity: "sev3".into(),
                    state: "open".into(),
                    owner: None,
                    team: None,
                    rule: None,
                    subject: None,
                    opened_at: now,
                    updated_at: now,
                    last_alert_at: None,
                    version: 1,
                }),
                alert: None,
                link_events: Vec::new(),
                timeline: vec![entry("opened")],
                notifications: Vec::new(),
                events: vec![record("incident.opened")],
            })
            .await
            .unwrap();
        let update = |expected_version, state: &str| IncidentWrite {
            target: IncidentTarget::Update {
                id,
                expected_version,
                set: IncidentUpdate {
                    state: Some(state.into()),
                    severity: None,
                    owner: None,
                    last_alert_at: None,
                    updated_at: now,
                },
            },
            alert: None,
            link_events: Vec::new(),
            timeline: vec![entry(state)],
            notifications: Vec::new(),
            events: vec![record("incident.state.changed")],
        };
        store.write(update(1, "triaged")).await.unwrap();
        // Decided on version 1, which is gone: refused, nothing written.
        let stale = store.write(update(1, "resolved")).await.unwrap_err();
        assert!(matches!(stale, StoreError::Conflict(_)), "{stale}");
        let mut missing = update(1, "triaged");
        missing.target = IncidentTarget::Update {
            id: IncidentId::new(),
            expected_version: 1,
            set: IncidentUpdate {
                state: None,
                severity: None,
                owner: None,
                last_alert_at: None,
                updated_at: now,
            },
        };
        let err = store.write(missing).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");

        let incident = store.incident(id).await.unwrap().unwrap();
        assert_eq!((incident.state.as_str(), incident.version), ("triaged", 2));
        let timeline: Vec<String> = store
            .timeline(id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert_eq!(timeline, ["opened", "triaged"]);
        let events = log.query(EventQuery::default()).await.unwrap().events;
        assert_eq!(events.len(), 2, "only the committed changes left events");
    }
}

mod change_outbox {
    use kura_store::app_data::{AppData, Cell, ChangeKind, ColumnKind, Ddl};

    use super::*;

    #[tokio::test]
    async fn changes_commit_with_their_writes_and_page_by_cursor() {
        let env = fresh();
        let storage = open(&env.dir).await.unwrap();
        let data = AppData::new(storage.apps.create(AppId::new()).await.unwrap());
        data.apply_schema(
            0,
            "{}".into(),
            vec![
                Ddl::CreateTable { table: 1 },
                Ddl::AddColumn {
                    table: 1,
                    col: 1,
                    kind: ColumnKind::Text,
                },
                Ddl::CreateIndex {
                    table: 1,
                    col: 1,
                    unique: true,
                },
            ],
        )
        .await
        .unwrap();
        for name in ["ada", "grace", "edsger"] {
            data.write(move |w| {
                let (rid, modid) = w
                    .insert(1, Some("alice"), &[(1, Cell::Text(name.into()))])?
                    .unwrap();
                w.record_change(1, rid, ChangeKind::Create, modid, 1_000, "alice")
            })
            .await
            .unwrap();
        }
        // A write that fails after logging its change leaves no entry.
        let failed = data
            .write(|w| {
                let (rid, modid) = w
                    .insert(1, Some("bob"), &[(1, Cell::Text("linus".into()))])?
                    .unwrap();
                w.record_change(1, rid, ChangeKind::Create, modid, 2_000, "bob")?;
                Err::<(), _>(StoreError::Worker("rolled back".into()))
            })
            .await;
        assert!(failed.is_err());
        data.write(|w| {
            let modid = w.delete(1, 2)?.unwrap();
            w.record_change(1, 2, ChangeKind::Delete, modid, 3_000, "alice")
        })
        .await
        .unwrap();

        let all = data.read(|r| r.changes_after(0, 100)).await.unwrap();
        let summary: Vec<_> = all
            .iter()
            .map(|c| (c.rid, c.kind, c.account.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, ChangeKind::Create, "alice"),
                (2, ChangeKind::Create, "alice"),
                (3, ChangeKind::Create, "alice"),
                (2, ChangeKind::Delete, "alice"),
            ]
        );
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        let cursor = all[1].seq;
        let rest = data
            .read(move |r| r.changes_after(cursor, 1))
            .await
            .unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].seq, all[2].seq);
        let last = all[3].seq;
        assert!(
            data.read(move |r| r.changes_after(last, 10))
                .await
                .unwrap()
                .is_empty()
        );
    }
}

mod first_use_indexes {
    use kura_store::Pool;
    use kura_store::app_data::{AppData, Cell, ColumnKind, Cond, Ddl, Filter, SortKey};

    use super::*;

    /// The app file's indexes on table 1, by name.
    async fn indexes(pool: &Pool) -> Vec<String> {
        pool.read(|c| {
            let mut stmt = c.prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 't1' ORDER BY name",
            )?;
            let names = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(names)
        })
        .await
        .unwrap()
    }

    /// Waits (at most ten seconds) until table 1's indexes are `want`.
    async fn until_indexes(pool: &Pool, want: &[&str]) {
        for _ in 0..200 {
            if indexes(pool).await == want {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(indexes(pool).await, want);
    }

    #[tokio::test]
    async fn finds_and_sorts_index_the_columns_they_use_once_and_only_those() {
        let env = fresh();
        let storage = open(&env.dir).await.unwrap();
        let pool = storage.apps.create(AppId::new()).await.unwrap();
        let data = AppData::new(pool.clone());
        let number = ColumnKind::Number;
        let mut ddl = vec![Ddl::CreateTable { table: 1 }];
        for (col, kind) in [(1, number), (2, number), (3, ColumnKind::Text), (4, number)] {
            ddl.push(Ddl::AddColumn {
                table: 1,
                col,
                kind,
            });
        }
        // An index declared on (1, 2): column 1 leads it.
        ddl.push(Ddl::CreateCompositeIndex {
            table: 1,
            cols: vec![1, 2],
        });
        data.apply_schema(0, "{}".into(), ddl).await.unwrap();
        // Column 4 is never indexed; the others on first use.
        data.index_on_first_use([(1, 1), (1, 2), (1, 3)], [(1, vec![1, 2])]);
        data.write(|w| {
            for i in 0..200_i64 {
                let cells = [
                    (1, Cell::Int(18 + i % 60)),
                    (2, Cell::Int(i % 2)),
                    (3, Cell::Text(format!("name {i}"))),
                    (4, Cell::Int(i)),
                ];
                w.insert(1, Some("a"), &cells)?.unwrap();
            }
            Ok(())
        })
        .await
        .unwrap();
        until_indexes(&pool, &["x1_1_2"]).await;

        // A word match cannot use an index, nor can a negation; column 4
        // is never indexed: none of these makes one.
        let unindexable = Filter::And(vec![
            Filter::Col(3, Cond::WordGlob("name*".into())),
            Filter::Not(Box::new(Filter::Col(2, Cond::Eq(Cell::Int(1))))),
            Filter::Col(4, Cond::Gt(Cell::Int(5))),
        ]);
        let found = data
            .read(move |r| r.matching_ids(1, &unindexable))
            .await
            .unwrap();
        assert_eq!(found.len(), 97);
        // A range on column 1 (led by the declared index) and an equality
        // on column 2: the declared index serves both, so neither gets one
        // of its own (which every create would pay for).
        let find = Filter::And(vec![
            Filter::Col(1, Cond::Between(Cell::Int(40), Cell::Int(45))),
            Filter::Col(2, Cond::Eq(Cell::Int(1))),
        ]);
        for _ in 0..5 {
            let f = find.clone();
            let ids = data.read(move |r| r.matching_ids(1, &f)).await.unwrap();
            assert_eq!(ids.len(), 9);
        }
        // A sort uses column 3, which gets its index; by then a build for
        // column 2, queued before it, would have shown.
        let sort = [SortKey {
            col: 3,
            descending: true,
        }];
        let rows = data
            .read(move |r| r.select(1, &Filter::All, &sort, 0, 3, &[3]))
            .await
            .unwrap();
        assert_eq!(rows[0].cells, vec![Cell::Text("name 99".into())]);
        until_indexes(&pool, &["i1_3", "x1_1_2"]).await;
        // Column 2 compared without column 1 beside it (alone, or under an
        // `or` with it) gets its index.
        let apart = Filter::Or(vec![
            Filter::Col(1, Cond::Eq(Cell::Int(40))),
            Filter::Col(2, Cond::Eq(Cell::Int(1))),
        ]);
        let ids = data.read(move |r| r.matching_ids(1, &apart)).await.unwrap();
        assert_eq!(ids.len(), 103);
        until_indexes(&pool, &["i1_2", "i1_3", "x1_1_2"]).await;
        let analysed: bool = pool
            .read(|c| {
                Ok(c.query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_stat1 WHERE idx = 'i1_2')",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert!(analysed, "a new index is analysed with it");

        // The declared index goes with its column's drop, when dropped first.
        data.apply_schema(
            1,
            "{}".into(),
            vec![
                Ddl::DropCompositeIndex {
                    table: 1,
                    cols: vec![1, 2],
                },
                Ddl::DropColumn { table: 1, col: 2 },
            ],
        )
        .await
        .unwrap();
        assert_eq!(indexes(&pool).await, ["i1_3"]);
    }
}
