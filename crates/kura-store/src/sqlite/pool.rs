//! Connections to one database file: one writer, several readers.
//!
//! SQLite in WAL mode lets readers proceed while one writer commits. The pool
//! keeps one write connection behind an async semaphore of one and a set of
//! read connections behind a semaphore of their count; work runs on Tokio's
//! blocking threads so the async runtime never waits on the disk.
//!
//! Writes are group-committed: writes that arrive while the writer is busy
//! queue up, and the next writer runs all of them (up to [`MAX_BATCH`]) in
//! one transaction, each inside its own savepoint, and commits once. A write
//! that fails rolls back to its savepoint and changes nothing; the others
//! are unaffected. Every caller is answered only after the shared commit
//! has returned, so with `synchronous = FULL` an acknowledged write is on
//! disk — the batch just shares one fsync among many writers.
//!
//! Checkpoints (copying committed pages from the WAL into the database
//! file) run on a connection of their own, in the background, once the WAL
//! holds [`CHECKPOINT_FRAMES`] pages — SQLite's own threshold. SQLite's
//! automatic checkpoint would run inside the commit that crosses it, on the
//! writer: two more fsyncs and a copy of the whole WAL while every queued
//! write waits. A passive checkpoint runs beside the writer and the readers
//! and blocks neither.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use kura_crypto::DataKey;
use parking_lot::Mutex;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{Semaphore, oneshot};

use super::{Durability, open_encrypted};
use crate::StoreError;
use crate::events::TxEvents;

/// A pool of connections to one encrypted database file.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

/// The most writes one shared transaction carries.
pub const MAX_BATCH: usize = 256;

/// WAL pages that make a checkpoint due (SQLite's default for its own).
const CHECKPOINT_FRAMES: u32 = 1_000;

/// Called with the shared commit's outcome, to answer a queued write.
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A queued write: runs inside the shared transaction (in its own
/// savepoint) and returns how to answer its caller once committed. It sets
/// the flag when its savepoint could not be undone, so the whole
/// transaction must be abandoned.
type Job = Box<dyn FnOnce(&Transaction<'_>, &mut bool) -> Finish + Send>;

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    write_permit: Semaphore,
    queue: Mutex<Vec<Job>>,
    readers: Mutex<Vec<Connection>>,
    read_permits: Semaphore,
    reader_count: usize,
    /// The connection background checkpoints run on, opened for the first.
    checkpointer: Mutex<Option<Connection>>,
    /// The file's key and durability, for connections opened later.
    key: Option<DataKey>,
    durability: Durability,
    /// Pages in the WAL after the last commit (from SQLite's WAL hook).
    wal_frames: Arc<AtomicU32>,
    /// Whether a checkpoint is running.
    checkpointing: AtomicBool,
}

impl Inner {
    /// Runs `f` on a free reader connection. Callers hold a read permit,
    /// so there are never more readers than permits; one is opened when
    /// every open reader is busy (readers are opened as the load needs
    /// them, and an idle server keeps one).
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let free = self.readers.lock().pop();
        let conn = match free {
            Some(conn) => conn,
            None => self.open_reader()?,
        };
        let result = f(&conn);
        self.readers.lock().push(conn);
        result
    }

    fn open_reader(&self) -> Result<Connection, StoreError> {
        let conn = open_encrypted(&self.path, self.key.as_ref(), false, self.durability)?;
        conn.execute_batch("PRAGMA query_only = ON;")?;
        Ok(conn)
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Opens `readers` read connections and one write connection. The writer
    /// is opened first so it can create the file and run `init` (migrations)
    /// before any reader looks at the schema.
    pub fn open(
        path: &Path,
        key: Option<&DataKey>,
        create: bool,
        durability: Durability,
        readers: usize,
        init: impl FnOnce(&mut Connection) -> Result<(), StoreError>,
    ) -> Result<Self, StoreError> {
        let mut writer = open_encrypted(path, key, create, durability)?;
        init(&mut writer)?;
        // Checkpoints are the checkpointer's job, not the writer's; the
        // writer only reports how long the WAL has grown. (Setting
        // wal_autocheckpoint replaces the hook, so it comes first.)
        writer.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        let wal_frames = Arc::new(AtomicU32::new(0));
        let frames = Arc::clone(&wal_frames);
        writer.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            frames.store(u32::try_from(pages).unwrap_or(0), Ordering::Relaxed);
            Ok(())
        }))?;

        let readers = readers.max(1);
        let inner = Inner {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            write_permit: Semaphore::new(1),
            queue: Mutex::new(Vec::new()),
            readers: Mutex::new(Vec::with_capacity(readers)),
            read_permits: Semaphore::new(readers),
            reader_count: readers,
            checkpointer: Mutex::new(None),
            key: key.cloned(),
            durability,
            wal_frames,
            checkpointing: AtomicBool::new(false),
        };
        // One reader now, so a file readers cannot open fails here; the
        // others as concurrent reads need them.
        let first = inner.open_reader()?;
        inner.readers.lock().push(first);
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How many read connections the pool holds (how many reads can run at
    /// once).
    pub fn reader_count(&self) -> usize {
        self.inner.reader_count
    }

    /// Runs read-only work on a reader connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .inner
            .read_permits
            .acquire()
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.with_reader(f))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }

    /// Runs a short read — a handful of rows by key, such as one record or
    /// the facts behind a session — on the calling thread when a reader
    /// connection is free, and like [`Pool::read`] otherwise. A request
    /// then skips the hand-off to a blocking thread and back (two thread
    /// wake-ups, which cost more than such a read itself). Never use it for
    /// scans or anything whose length depends on the data: it holds the
    /// async worker while it runs.
    pub async fn read_quick<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let Ok(_permit) = self.inner.read_permits.try_acquire() else {
            return self.read(f).await;
        };
        self.inner.with_reader(f)
    }

    /// Runs work in a write transaction; commits when `f` returns `Ok`,
    /// rolls back otherwise, so a failed request changes nothing. Concurrent
    /// writes share one transaction and one commit (see the module
    /// documentation); `f` sees the changes of the writes before it.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |tx, broken| {
            let outcome = match in_savepoint(tx, f) {
                Ok(outcome) => outcome,
                Err(e) => {
                    *broken = true;
                    Err(e)
                }
            };
            Box::new(move |committed| {
                let result = match (outcome, committed) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Ok(_), Err(e)) => Err(StoreError::Worker(format!("commit failed: {e}"))),
                    (Err(e), _) => Err(e),
                };
                let _ = answer.send(result);
            })
        });
        self.inner.queue.lock().push(job);
        let mut answered = answered;
        // Whoever holds the writer next commits everything queued by then,
        // this write included (unless an earlier holder already took it).
        // A write that an earlier holder committed is answered without
        // waiting its turn for the writer: otherwise every caller of a
        // batch would queue for the permit again after its commit, each
        // behind the next batch's commit, and the batch's answers would
        // trickle out one commit apart.
        let permit = tokio::select! {
            biased;
            result = &mut answered => {
                return result.map_err(|_| {
                    StoreError::Worker("the write was dropped unanswered".into())
                })?;
            }
            permit = self.inner.write_permit.acquire() => {
                permit.map_err(|e| StoreError::Worker(e.to_string()))?
            }
        };
        let batch: Vec<Job> = {
            let mut queue = self.inner.queue.lock();
            let n = queue.len().min(MAX_BATCH);
            queue.drain(..n).collect()
        };
        if !batch.is_empty() {
            let inner = Arc::clone(&self.inner);
            tokio::task::spawn_blocking(move || commit_batch(&inner, batch))
                .await
                .map_err(|e| StoreError::Worker(e.to_string()))?;
            self.checkpoint_when_due();
        }
        drop(permit);
        answered
            .await
            .map_err(|_| StoreError::Worker("the write was dropped unanswered".into()))?
    }

    /// Starts a background checkpoint once the WAL holds
    /// [`CHECKPOINT_FRAMES`] pages, unless one is still running.
    fn checkpoint_when_due(&self) {
        let inner = &self.inner;
        if inner.wal_frames.load(Ordering::Relaxed) < CHECKPOINT_FRAMES
            || inner.checkpointing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let inner = Arc::clone(inner);
        tokio::task::spawn_blocking(move || {
            // Passive: copies what no reader still needs, waits for nobody.
            // A failure leaves the pages in the WAL, where readers find
            // them; the next checkpoint (or SQLite at close) copies them.
            let done = (|| {
                let mut slot = inner.checkpointer.lock();
                let conn = match slot.take() {
                    Some(conn) => conn,
                    None => {
                        let conn = open_encrypted(
                            &inner.path,
                            inner.key.as_ref(),
                            false,
                            inner.durability,
                        )?;
                        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
                        conn
                    }
                };
                let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                *slot = Some(conn);
                done.map_err(StoreError::from)
            })();
            if let Err(e) = done {
                tracing::warn!(path = %inner.path.display(), error = %e, "a background checkpoint failed");
            }
            inner.checkpointing.store(false, Ordering::Release);
        });
    }

    /// [`Pool::write`], appending the events that describe the result in the
    /// same transaction (see [`TxEvents`]): if they cannot be built or
    /// appended, the write rolls back and fails.
    pub async fn write_described<T, F>(&self, events: TxEvents<T>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.write(move |tx| {
            let result = f(tx)?;
            events.append(tx, &result)?;
            Ok(result)
        })
        .await
    }

    /// Runs blocking work with the write connection outside a transaction
    /// (checkpoints, pragmas). Callers that change data use [`Pool::write`].
    pub async fn with_writer<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .inner
            .write_permit
            .acquire()
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&mut inner.writer.lock()))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

/// Runs `f` inside a savepoint of `tx`: released on success, rolled back
/// (and released) on failure, so only this write's changes are undone. The
/// outer error means the savepoint itself failed.
fn in_savepoint<T>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<Result<T, StoreError>, StoreError> {
    // Prepared once per connection rather than parsed per write.
    tx.prepare_cached("SAVEPOINT kura_write")?.execute([])?;
    let outcome = f(tx);
    if outcome.is_err() {
        tx.prepare_cached("ROLLBACK TO kura_write")?.execute([])?;
    }
    tx.prepare_cached("RELEASE kura_write")?.execute([])?;
    Ok(outcome)
}

/// Runs queued writes in one immediate transaction, commits once, then
/// answers each caller with the commit's outcome. Writes that could not
/// begin are dropped unrun (their callers get an error).
fn commit_batch(inner: &Inner, batch: Vec<Job>) {
    let mut conn = inner.writer.lock();
    let mut finishers: Vec<Finish> = Vec::with_capacity(batch.len());
    let committed = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => {
            let mut broken = false;
            for job in batch {
                finishers.push(job(&tx, &mut broken));
            }
            if broken {
                // Dropping the transaction rolls every write back.
                drop(tx);
                Err("a failed write could not be undone; the whole batch was rolled back".into())
            } else {
                tx.commit().map_err(|e| e.to_string())
            }
        }
        Err(e) => Err(e.to_string()),
    };
    drop(conn);
    for finish in finishers {
        finish(committed.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_run_beside_the_writer_and_failed_writes_roll_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = DataKey::from_bytes([3; 32]);
        let pool = Pool::open(
            &dir.path().join("p.db"),
            Some(&key),
            true,
            Durability::Full,
            4,
            |c| Ok(c.execute_batch("CREATE TABLE t(n INTEGER NOT NULL)")?),
        )
        .unwrap();
        pool.write(|tx| Ok(tx.execute("INSERT INTO t VALUES (1)", [])?))
            .await
            .unwrap();
        let failed = pool
            .write(|tx| {
                tx.execute("INSERT INTO t VALUES (2)", [])?;
                tx.execute("INSERT INTO t VALUES (NULL)", [])?;
                Ok(())
            })
            .await;
        assert!(failed.is_err());
        let mut reads = Vec::new();
        for _ in 0..16 {
            let pool = pool.clone();
            reads.push(tokio::spawn(async move {
                pool.read(|c| Ok(c.query_row("SELECT sum(n) FROM t", [], |r| r.get::<_, i64>(0))?))
                    .await
            }));
        }
        for r in reads {
            assert_eq!(
                r.await.unwrap().unwrap(),
                1,
                "the failed write left nothing"
            );
        }
        let denied = pool
            .read(|c| Ok(c.execute("INSERT INTO t VALUES (5)", [])?))
            .await;
        assert!(denied.is_err(), "readers are query-only");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_pages_reach_the_database_file_from_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let pool = Pool::open(
            &path,
            Some(&DataKey::from_bytes([6; 32])),
            true,
            Durability::Full,
            2,
            |c| Ok(c.execute_batch("CREATE TABLE t(b BLOB NOT NULL)")?),
        )
        .unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        // Each commit adds a few pages; together they pass the checkpoint
        // threshold, and the writer runs no checkpoint of its own.
        let commits = CHECKPOINT_FRAMES / 4;
        for _ in 0..commits {
            pool.write(|tx| Ok(tx.execute("INSERT INTO t VALUES (zeroblob(20000))", [])?))
                .await
                .unwrap();
        }
        let mut grown = 0;
        for _ in 0..100 {
            grown = std::fs::metadata(&path).unwrap().len() - before;
            if grown > 64 * 6000 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            grown > 64 * 6000,
            "the database file grew by {grown} bytes while the pool is open"
        );
        let rows = pool
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))?))
            .await
            .unwrap();
        assert_eq!(rows, i64::from(commits));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn readers_are_opened_as_concurrent_reads_need_them_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open(
            &dir.path().join("r.db"),
            Some(&DataKey::from_bytes([7; 32])),
            true,
            Durability::Full,
            3,
            |c| Ok(c.execute_batch("CREATE TABLE t(n INTEGER)")?),
        )
        .unwrap();
        assert_eq!(pool.inner.readers.lock().len(), 1, "an idle pool keeps one");
        let mut reads = Vec::new();
        for _ in 0..12 {
            let pool = pool.clone();
            reads.push(tokio::spawn(async move {
                pool.read(|c| {
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))?)
                })
                .await
            }));
        }
        for r in reads {
            assert_eq!(r.await.unwrap().unwrap(), 0);
        }
        let open = pool.inner.readers.lock().len();
        assert!((2..=3).contains(&open), "{open} readers open");
        assert!(
            pool.inner.checkpointer.lock().is_none(),
            "no checkpoint was due"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_share_commits_but_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open(
            &dir.path().join("g.db"),
            Some(&DataKey::from_bytes([5; 32])),
            true,
            Durability::Full,
            2,
            |c| Ok(c.execute_batch("CREATE TABLE t(n INTEGER NOT NULL UNIQUE)")?),
        )
        .unwrap();
        let mut writes = Vec::new();
        for n in 0..200i64 {
            let pool = pool.clone();
            writes.push(tokio::spawn(async move {
                pool.write(move |tx| {
                    tx.execute("INSERT INTO t VALUES (?1)", [n])?;
                    // Every tenth write fails after changing something: only
                    // its own change is undone.
                    if n % 10 == 0 {
                        tx.execute("INSERT INTO t VALUES (?1)", [n + 1000])?;
                        tx.execute("INSERT INTO t VALUES (NULL)", [])?;
                    }
                    Ok(n)
                })
                .await
            }));
        }
        let mut ok = 0;
        for (n, w) in writes.into_iter().enumerate() {
            match w.await.unwrap() {
                Ok(v) => {
                    assert_eq!(v, n as i64);
                    ok += 1;
                }
                Err(_) => assert_eq!(n % 10, 0, "write {n} failed"),
            }
        }
        assert_eq!(ok, 180);
        let (count, max) = pool
            .read(|c| {
                Ok(c.query_row("SELECT count(*), max(n) FROM t", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })?)
            })
            .await
            .unwrap();
        assert_eq!((count, max), (180, 199));
        // A later write sees every committed one.
        let seen = pool
            .write(|tx| Ok(tx.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))?))
            .await
            .unwrap();
        assert_eq!(seen, 180);
    }

    // One runtime thread, so the tasks wait for the writer in the order
    // they are started here (each registers in its first poll, and this
    // test runs only between polls).
    #[tokio::test]
    async fn a_committed_write_returns_while_another_caller_holds_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open(
            &dir.path().join("w.db"),
            Some(&DataKey::from_bytes([7; 32])),
            true,
            Durability::Full,
            1,
            |c| Ok(c.execute_batch("CREATE TABLE t(n INTEGER NOT NULL)")?),
        )
        .unwrap();
        // Holds the writer until told to let go.
        let hold = |pool: &Pool| {
            let (release, released) = std::sync::mpsc::channel::<()>();
            let (held, holding) = oneshot::channel::<()>();
            let waiting = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let pool = pool.clone();
            let flag = Arc::clone(&waiting);
            let task = tokio::spawn(async move {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                pool.with_writer(move |_| {
                    let _ = held.send(());
                    let _ = released.recv();
                    Ok(())
                })
                .await
            });
            (release, holding, waiting, task)
        };
        let (release_first, first_holds, _, first) = hold(&pool);
        first_holds.await.unwrap();
        // Two writes queue behind the holder; the first of them to get the
        // writer commits both.
        let a = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.write(|tx| Ok(tx.execute("INSERT INTO t VALUES (1)", [])?))
                    .await
            }
        });
        while pool.inner.queue.lock().is_empty() {
            tokio::task::yield_now().await;
        }
        // A second holder waits for the writer after `a`, before `b`.
        let (release_second, second_holds, second_waits, second) = hold(&pool);
        while !second_waits.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        let b = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.write(|tx| Ok(tx.execute("INSERT INTO t VALUES (2)", [])?))
                    .await
            }
        });
        while pool.inner.queue.lock().len() < 2 {
            tokio::task::yield_now().await;
        }
        release_first.send(()).unwrap();
        first.await.unwrap().unwrap();
        assert_eq!(a.await.unwrap().unwrap(), 1);
        // The second holder now has the writer; `b` was committed with `a`
        // and returns without waiting for it.
        second_holds.await.unwrap();
        let b = tokio::time::timeout(std::time::Duration::from_secs(30), b)
            .await
            .expect("a committed write waited for the writer");
        assert_eq!(b.unwrap().unwrap(), 1);
        release_second.send(()).unwrap();
        second.await.unwrap().unwrap();
        let n = pool
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))?))
            .await
            .unwrap();
        assert_eq!(n, 2);
    }
}
