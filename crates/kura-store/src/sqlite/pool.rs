//! Connections to one database file: one writer, several readers.
//!
//! SQLite in WAL mode lets readers proceed while one writer commits. The pool
//! keeps one write connection, driven by a thread of its own, and a set of
//! read connections behind a semaphore of their count; reads run on Tokio's
//! blocking threads (or, when short, on the calling one), so the async
//! runtime never waits on the disk.
//!
//! Writes are group-committed: writes queue up, and the writer thread runs
//! all that are queued when it takes the connection (up to [`MAX_BATCH`])
//! in one transaction, each inside its own savepoint, and commits once. A
//! write that fails rolls back to its savepoint and changes nothing; the
//! others are unaffected. Every caller is answered only after the shared
//! commit has returned, so with `synchronous = FULL` an acknowledged write
//! is on disk — the batch just shares one fsync among many writers. The
//! thread starts the next batch as soon as a commit returns: no hand-off
//! to another thread sits between two commits. When the last commit
//! carried several writes, it first waits briefly for as many to be
//! queued ([`GATHER_WAIT`]).
//!
//! Reads run in a read transaction, so every statement of one read sees
//! one snapshot. For a file only this process writes (an app's file), a
//! reader keeps its transaction open after the read and the next read
//! reuses it while no commit has happened since ([`Pool::snapshot`]):
//! every commit counts up the pool's commit number before its writers are
//! answered, and a reader whose snapshot is older than the number ends it
//! and starts a new one. Starting and ending a read transaction takes and
//! releases a lock on the WAL index (two `fcntl` calls) and runs two
//! statements, about a tenth of the CPU of reading one record.
//!
//! Checkpoints (copying committed pages from the WAL into the database
//! file) run on a connection of their own, in the background, once the WAL
//! holds [`CHECKPOINT_FRAMES`] pages. SQLite's automatic checkpoint would
//! run inside the commit that crosses it, on the writer: two more fsyncs
//! and a copy of the whole WAL while every queued write waits. A passive
//! checkpoint runs beside the writer and the readers and blocks neither.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kura_crypto::DataKey;
use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{Semaphore, oneshot};

use super::{Durability, PageHmac, open_file};
use crate::StoreError;
use crate::events::TxEvents;

/// A pool of connections to one encrypted database file.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

/// The most writes one shared transaction carries.
pub const MAX_BATCH: usize = 256;

/// WAL pages that make a checkpoint due: about 32 MiB of WAL. SQLite's own
/// default is 1,000; under steady writes that meant about twenty
/// checkpoints a second, each sorting the WAL index and writing and syncing
/// the same hot pages again (15% of the server's CPU in a profile of
/// creates). A checkpoint copies only the newest version of each page, so
/// eight times the frames cost less than eight checkpoints: in an A/B run
/// creates answered 5–10% more requests and edits 8–22% more
/// (BENCHMARKS.md, "Session 6"). A reader looks pages up in one more
/// WAL-index segment, which did not show in get-one or find.
const CHECKPOINT_FRAMES: u32 = 8_000;

/// How long the writer waits, after the first write of a batch arrives, for
/// as many writes as the last commit carried, when that was more than one.
/// Writers running side by side (16 clients creating records) otherwise
/// met a writer that took the first three or four of them and committed,
/// paying the commit's fixed part (the table's last leaf, the count row,
/// the outbox leaf, page 1, each encrypted and authenticated, and an
/// fsync) for every few writes while the rest were still being parsed.
/// Waiting for them cut the server's CPU per create by 12–20% and raised
/// creates per second by about 18% (BENCHMARKS.md, "Session 12"). A
/// lone writer never waits, and writers at a steady concurrency rarely do
/// for long: the wait ends as soon as the last commit's count is queued,
/// so the full wait is paid once when the concurrency drops. The idea is
/// PostgreSQL's `commit_delay` with `commit_siblings`, sized by the last
/// commit instead of a setting.
const GATHER_WAIT: Duration = Duration::from_micros(200);

/// Called with the shared commit's outcome, to answer a queued write.
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A queued write: runs inside the shared transaction (in its own
/// savepoint) and returns how to answer its caller once committed. It sets
/// the flag when its savepoint could not be undone, so the whole
/// transaction must be abandoned.
type Job = Box<dyn FnOnce(&Transaction<'_>, &mut bool) -> Finish + Send>;

/// Writes waiting for the writer thread.
#[derive(Default)]
struct WriteQueue {
    jobs: Mutex<Queued>,
    /// Signalled when a job is queued or the pool closes.
    ready: Condvar,
}

#[derive(Default)]
struct Queued {
    jobs: Vec<Job>,
    /// The pool is gone: the thread ends once the queue is empty.
    closed: bool,
}

impl WriteQueue {
    fn push(&self, job: Job) {
        self.jobs.lock().jobs.push(job);
        self.ready.notify_one();
    }

    /// Waits until a job is queued; `false` once the pool has closed and
    /// nothing is left.
    fn wait(&self) -> bool {
        let mut q = self.jobs.lock();
        while q.jobs.is_empty() && !q.closed {
            self.ready.wait(&mut q);
        }
        !q.jobs.is_empty()
    }

    /// Waits until `n` jobs are queued, the pool closes or `deadline`
    /// passes, whichever comes first.
    fn gather(&self, n: usize, deadline: Instant) {
        let mut q = self.jobs.lock();
        while q.jobs.len() < n && !q.closed {
            if self.ready.wait_until(&mut q, deadline).timed_out() {
                break;
            }
        }
    }

    /// Takes up to [`MAX_BATCH`] queued jobs, oldest first.
    fn take(&self) -> Vec<Job> {
        let mut q = self.jobs.lock();
        let n = q.jobs.len().min(MAX_BATCH);
        q.jobs.drain(..n).collect()
    }

    fn close(&self) {
        self.jobs.lock().closed = true;
        self.ready.notify_all();
    }
}

struct Inner {
    path: PathBuf,
    /// Shared with the writer thread, which holds nothing else of the pool.
    writer: Arc<Mutex<Connection>>,
    /// Joined when the pool goes, so no write is still running on the file
    /// (nor a connection closing) once the last `Pool` is dropped.
    writer_thread: Option<std::thread::JoinHandle<()>>,
    queue: Arc<WriteQueue>,
    readers: Mutex<Vec<Reader>>,
    /// Counts commits (and everything else run on the write connection);
    /// counted up before the writers of a commit are answered.
    commits: Arc<AtomicU64>,
    read_permits: Semaphore,
    reader_count: usize,
    /// The connection background checkpoints run on, opened for the first.
    checkpointer: Mutex<Option<Connection>>,
    /// The file's key, page authentication and durability, for
    /// connections opened later.
    key: Option<DataKey>,
    hmac: Option<PageHmac>,
    durability: Durability,
    /// Pages in the WAL after the last commit (from SQLite's WAL hook).
    wal_frames: Arc<AtomicU32>,
    /// Whether a checkpoint is running.
    checkpointing: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue.close();
        // The thread holds no reference to the pool, so it is waiting for
        // work or finishing the batch it took; either way it ends soon. A
        // process that exits right after dropping a pool (a test, `kura
        // serve` stopping) must not do so while the thread still commits
        // or closes: the C libraries' exit handlers would pull their state
        // out from under it. Joining is skipped on the thread itself (a
        // queued job that held the last `Pool` is dropped there).
        if let Some(thread) = self.writer_thread.take()
            && thread.thread().id() != std::thread::current().id()
            && thread.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the writer thread panicked");
        }
    }
}

/// A read connection of the pool. Whether it holds a read transaction is
/// the connection's own state (`is_autocommit`).
struct Reader {
    conn: Connection,
    /// The commit count when its latest read transaction began.
    began: u64,
}

impl Reader {
    /// Makes sure a read transaction begun at commit count `latest` is
    /// open, ending an older one first. (`BEGIN` takes the snapshot at the
    /// first statement that reads.)
    fn begin(&mut self, latest: u64) -> Result<(), StoreError> {
        if self.in_snapshot() && self.began == latest {
            return Ok(());
        }
        self.end_snapshot()?;
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        self.began = latest;
        Ok(())
    }

    fn in_snapshot(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// Ends the open read transaction, if any. Nothing was written, so
    /// ending it only releases the snapshot.
    fn end_snapshot(&mut self) -> Result<(), StoreError> {
        if self.in_snapshot() {
            self.conn.prepare_cached("ROLLBACK")?.execute([])?;
        }
        Ok(())
    }
}

/// The writer thread: waits for queued writes, takes the connection, runs
/// everything queued by then as one batch, and starts over; it ends once
/// the pool has closed its queue and the queue is empty.
fn run_writer(queue: &WriteQueue, writer: &Mutex<Connection>, commits: &AtomicU64, path: &Path) {
    // How many writes the last commit carried: more than one means
    // writers are running side by side.
    let mut last = 0;
    while queue.wait() {
        if last > 1 {
            queue.gather(last.min(MAX_BATCH), Instant::now() + GATHER_WAIT);
        }
        let conn = writer.lock();
        // Taken after the connection: writes queued while someone else
        // (`with_writer`) held it join this batch.
        let batch = queue.take();
        last = batch.len();
        // A panic drops this batch's answers (its callers get an error);
        // the thread lives on for the next.
        let run = std::panic::AssertUnwindSafe(|| commit_batch(conn, commits, batch));
        if std::panic::catch_unwind(run).is_err() {
            tracing::error!(path = %path.display(), "a write batch panicked; its writes failed");
        }
    }
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
        let mut reader = self.take_reader()?;
        // `f` manages its own transactions, so none may be open.
        reader.end_snapshot()?;
        let result = f(&reader.conn);
        self.readers.lock().push(reader);
        result
    }

    /// Runs `f` on a free reader connection inside a read transaction
    /// showing the latest commit: the reader's open one when no commit has
    /// happened since it began, a new one otherwise. The transaction stays
    /// open for the next read.
    fn with_snapshot<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut reader = self.take_reader()?;
        // Read before the snapshot is taken: the snapshot holds at least
        // every commit counted so far, so while the count stays the same
        // it holds every commit any writer has been told about.
        let latest = self.commits.load(Ordering::Acquire);
        let result = reader.begin(latest).and_then(|()| f(&reader.conn));
        // After a failure the transaction may hold anything: the next read
        // starts a new one. A reader that cannot even end its transaction
        // is closed rather than reused.
        if result.is_err() && reader.end_snapshot().is_err() {
            return result;
        }
        self.readers.lock().push(reader);
        result
    }

    /// A free reader, or a new one when every open reader is busy.
    fn take_reader(&self) -> Result<Reader, StoreError> {
        let free = self.readers.lock().pop();
        match free {
            Some(reader) => Ok(reader),
            None => Ok(Reader {
                conn: self.open_reader()?,
                began: 0,
            }),
        }
    }

    /// Ends the open snapshots of the readers nobody is using, so they do
    /// not keep the WAL from being copied into the database file and
    /// started over. A reader whose transaction cannot be ended is closed.
    fn release_idle_snapshots(&self) {
        self.readers
            .lock()
            .retain_mut(|reader| reader.end_snapshot().is_ok());
    }

    /// Another connection to the file, with the format the writer found.
    fn open_connection(&self) -> Result<Connection, StoreError> {
        let (conn, _) = open_file(
            &self.path,
            self.key.as_ref(),
            false,
            self.durability,
            self.hmac,
        )?;
        Ok(conn)
    }

    fn open_reader(&self) -> Result<Connection, StoreError> {
        let conn = self.open_connection()?;
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
        let (mut writer, hmac) = open_file(path, key, create, durability, None)?;
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
        let writer = Arc::new(Mutex::new(writer));
        let queue: Arc<WriteQueue> = Arc::default();
        let commits = Arc::new(AtomicU64::new(0));
        let thread = {
            let (queue, writer, commits, path) = (
                Arc::clone(&queue),
                Arc::clone(&writer),
                Arc::clone(&commits),
                path.to_owned(),
            );
            std::thread::Builder::new()
                .name("kura-writer".into())
                .spawn(move || run_writer(&queue, &writer, &commits, &path))
                .map_err(|e| StoreError::Worker(format!("starting the writer thread: {e}")))?
        };
        // From here on, a failure drops `inner`, which ends the thread.
        let inner = Inner {
            path: path.to_owned(),
            writer,
            writer_thread: Some(thread),
            queue,
            readers: Mutex::new(Vec::with_capacity(readers)),
            commits,
            read_permits: Semaphore::new(readers),
            reader_count: readers,
            checkpointer: Mutex::new(None),
            key: key.cloned(),
            hmac,
            durability,
            wal_frames,
            checkpointing: AtomicBool::new(false),
        };
        // One reader now, so a file readers cannot open fails here; the
        // others as concurrent reads need them.
        let first = inner.open_reader()?;
        inner.readers.lock().push(Reader {
            conn: first,
            began: 0,
        });
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
        self.on_blocking_reader(move |inner| inner.with_reader(f))
            .await
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

    /// Runs read-only work in a snapshot of the latest commit, on a
    /// blocking thread, reusing a reader's open snapshot while no commit
    /// has happened since it began (see the module documentation).
    ///
    /// Only for files this process alone writes: the pool counts its own
    /// commits and cannot see another process's.
    pub async fn snapshot<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.on_blocking_reader(move |inner| inner.with_snapshot(f))
            .await
    }

    /// [`Pool::snapshot`] for a short read, on the calling thread when a
    /// reader is free (see [`Pool::read_quick`]).
    pub async fn snapshot_quick<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let Ok(_permit) = self.inner.read_permits.try_acquire() else {
            return self.snapshot(f).await;
        };
        self.inner.with_snapshot(f)
    }

    /// Waits for a read permit, then runs `g` on a blocking thread.
    async fn on_blocking_reader<T, G>(&self, g: G) -> Result<T, StoreError>
    where
        T: Send + 'static,
        G: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .inner
            .read_permits
            .acquire()
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || g(&inner))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
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
        self.inner.queue.push(job);
        let result = answered
            .await
            .map_err(|_| StoreError::Worker("the write was dropped unanswered".into()))?;
        self.checkpoint_when_due();
        result
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
            // Idle readers' snapshots would keep the checkpoint from
            // copying the pages written after them.
            inner.release_idle_snapshots();
            let done = (|| {
                let mut slot = inner.checkpointer.lock();
                let conn = match slot.take() {
                    Some(conn) => conn,
                    None => {
                        let conn = inner.open_connection()?;
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
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // What runs here may need the readers gone (a truncating
            // checkpoint) and may change data.
            inner.release_idle_snapshots();
            let out = f(&mut inner.writer.lock());
            inner.commits.fetch_add(1, Ordering::Release);
            out
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

/// Runs `f` inside one read transaction on a reader connection, so every
/// statement sees the same snapshot. `BEGIN` and `ROLLBACK` are prepared
/// once per connection (a `Transaction` parses them on every read); the
/// transaction always ends, whatever `f` returned, so the connection goes
/// back to the pool outside any transaction.
pub(crate) fn in_snapshot<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let out = f(conn);
    // Nothing was written: ending the transaction only releases the
    // snapshot.
    conn.prepare_cached("ROLLBACK")?.execute([])?;
    out
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
fn commit_batch(
    mut conn: parking_lot::MutexGuard<'_, Connection>,
    commits: &AtomicU64,
    batch: Vec<Job>,
) {
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
    // Before anyone hears of the commit, so a read that starts after a
    // writer was answered never reuses a snapshot from before it.
    commits.fetch_add(1, Ordering::Release);
    for finish in finishers {
        finish(committed.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new encrypted file with `readers` readers and `schema` applied.
    fn test_pool(path: &Path, readers: usize, schema: &'static str) -> Pool {
        Pool::open(
            path,
            Some(&DataKey::from_bytes([7; 32])),
            true,
            Durability::Full,
            readers,
            |c| Ok(c.execute_batch(schema)?),
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_connection_of_a_pool_opens_a_file_with_sqlciphers_default_hmac() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let key = DataKey::from_bytes([7; 32]);
        drop(super::super::sqlcipher_default_file(
            &path,
            &key,
            "CREATE TABLE t(n INTEGER NOT NULL); INSERT INTO t VALUES (1);",
        ));
        let pool = Pool::open(&path, Some(&key), false, Durability::Full, 4, |_| Ok(())).unwrap();
        pool.write(|tx| Ok(tx.execute("INSERT INTO t VALUES (2)", [])?))
            .await
            .unwrap();
        // Concurrent reads make the pool open more readers than the first.
        let reads: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.read(|c| {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        Ok(c.query_row("SELECT sum(n) FROM t", [], |r| r.get::<_, i64>(0))?)
                    })
                    .await
                })
            })
            .collect();
        for r in reads {
            assert_eq!(r.await.unwrap().unwrap(), 3);
        }
        assert!(
            pool.inner.readers.lock().len() > 1,
            "more readers were opened"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_run_beside_the_writer_and_failed_writes_roll_back() {
        let dir = tempfile::tempdir().unwrap();
        let pool = test_pool(
            &dir.path().join("p.db"),
            4,
            "CREATE TABLE t(n INTEGER NOT NULL)",
        );
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
        let pool = test_pool(&path, 2, "CREATE TABLE t(b BLOB NOT NULL)");
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
        let pool = test_pool(&dir.path().join("r.db"), 3, "CREATE TABLE t(n INTEGER)");
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

    /// Whether an idle reader holds an open read transaction.
    fn idle_snapshots(pool: &Pool) -> usize {
        pool.inner
            .readers
            .lock()
            .iter()
            .filter(|r| r.in_snapshot())
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kept_snapshot_is_reused_only_until_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let pool = test_pool(
            &dir.path().join("s.db"),
            2,
            "CREATE TABLE t(n INTEGER NOT NULL)",
        );
        let sum = |pool: Pool| async move {
            pool.snapshot_quick(|c| {
                Ok(c.query_row("SELECT coalesce(sum(n), 0) FROM t", [], |r| {
                    r.get::<_, i64>(0)
                })?)
            })
            .await
            .unwrap()
        };
        assert_eq!(sum(pool.clone()).await, 0);
        assert_eq!(idle_snapshots(&pool), 1, "the snapshot stays open");
        for n in 1..=50_i64 {
            pool.write(move |tx| Ok(tx.execute("INSERT INTO t VALUES (?1)", [n])?))
                .await
                .unwrap();
            // Every answered write is seen by the next read, and reads
            // with no commit between them agree.
            let want = n * (n + 1) / 2;
            assert_eq!(sum(pool.clone()).await, want, "after write {n}");
            assert_eq!(sum(pool.clone()).await, want, "again after write {n}");
        }
        // A failed read leaves no transaction behind.
        let failed = pool
            .snapshot_quick(|c| {
                Ok(c.query_row("SELECT n FROM missing", [], |r| r.get::<_, i64>(0))?)
            })
            .await;
        assert!(failed.is_err());
        // Reads that manage their own transactions get a reader without one.
        let plain = pool
            .read(|c| {
                super::in_snapshot(c, |c| {
                    Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))?)
                })
            })
            .await
            .unwrap();
        assert_eq!(plain, 50);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kept_snapshots_do_not_hold_back_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let pool = test_pool(&path, 2, "CREATE TABLE t(b BLOB NOT NULL)");
        for _ in 0..20 {
            pool.write(|tx| Ok(tx.execute("INSERT INTO t VALUES (zeroblob(5000))", [])?))
                .await
                .unwrap();
            pool.snapshot_quick(|c| {
                Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))?)
            })
            .await
            .unwrap();
        }
        assert_eq!(idle_snapshots(&pool), 1);
        // A truncating checkpoint needs every reader out of the WAL.
        let (busy, _, _): (i64, i64, i64) = pool
            .with_writer(|c| {
                Ok(c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?)
            })
            .await
            .unwrap();
        assert_eq!(busy, 0, "the checkpoint was not blocked");
        let wal = std::fs::metadata(path.with_extension("db-wal"))
            .unwrap()
            .len();
        assert_eq!(wal, 0, "the WAL was truncated");
        assert_eq!(idle_snapshots(&pool), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_share_commits_but_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pool = test_pool(
            &dir.path().join("g.db"),
            2,
            "CREATE TABLE t(n INTEGER NOT NULL UNIQUE)",
        );
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_queued_while_the_writer_is_busy_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let pool = test_pool(
            &dir.path().join("w.db"),
            1,
            "CREATE TABLE t(n INTEGER NOT NULL)",
        );
        let commits = Arc::new(AtomicU32::new(0));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (held, holding) = oneshot::channel::<()>();
        let counter = Arc::clone(&commits);
        // Counts commits, then holds the writer until told to let go.
        let holder = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.with_writer(move |c| {
                    c.commit_hook(Some(move || {
                        counter.fetch_add(1, Ordering::SeqCst);
                        false
                    }))?;
                    let _ = held.send(());
                    let _ = released.recv();
                    Ok(())
                })
                .await
            }
        });
        holding.await.unwrap();
        let writes: Vec<_> = (1..=3_i64)
            .map(|n| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.write(move |tx| Ok(tx.execute("INSERT INTO t VALUES (?1)", [n])?))
                        .await
                })
            })
            .collect();
        while pool.inner.queue.jobs.lock().jobs.len() < 3 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        for w in writes {
            assert_eq!(w.await.unwrap().unwrap(), 1);
        }
        assert_eq!(
            commits.load(Ordering::SeqCst),
            1,
            "one commit for the three"
        );
        let n = pool
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))?))
            .await
            .unwrap();
        assert_eq!(n, 3);
        // The writer now waits a moment for three writes; a lone one is
        // committed all the same once the wait is over.
        pool.write(|tx| Ok(tx.execute("INSERT INTO t VALUES (4)", [])?))
            .await
            .unwrap();
        assert_eq!(commits.load(Ordering::SeqCst), 2);
    }

    fn job() -> Job {
        Box::new(|_, _| Box::new(|_| {}))
    }

    #[test]
    fn gathering_ends_when_enough_writes_are_queued_at_the_deadline_or_at_close() {
        let queue = Arc::new(WriteQueue::default());
        let far = Instant::now() + Duration::from_secs(600);
        // Enough writes: it returns as soon as the second is queued.
        let pusher = std::thread::spawn({
            let queue = Arc::clone(&queue);
            move || {
                for _ in 0..2 {
                    std::thread::sleep(Duration::from_millis(20));
                    queue.push(job());
                }
            }
        });
        let start = Instant::now();
        queue.gather(2, far);
        assert!(start.elapsed() < Duration::from_secs(300));
        pusher.join().unwrap();
        assert_eq!(queue.take().len(), 2);
        // Too few: it returns at the deadline with what there is.
        queue.push(job());
        let start = Instant::now();
        queue.gather(5, Instant::now() + Duration::from_millis(30));
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(queue.take().len(), 1);
        // Closing ends the wait at once.
        queue.close();
        let start = Instant::now();
        queue.gather(5, far);
        assert!(start.elapsed() < Duration::from_secs(300));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_thread_ends_with_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let pool = test_pool(
            &dir.path().join("e.db"),
            1,
            "CREATE TABLE t(n INTEGER NOT NULL)",
        );
        pool.write(|tx| Ok(tx.execute("INSERT INTO t VALUES (1)", [])?))
            .await
            .unwrap();
        let queue = Arc::downgrade(&pool.inner.queue);
        let writer = Arc::downgrade(&pool.inner.writer);
        drop(pool);
        // Dropping the pool waited for the thread, which held the queue and
        // the writer connection until it ended.
        assert!(
            queue.upgrade().is_none(),
            "the writer thread outlived its pool"
        );
        assert!(
            writer.upgrade().is_none(),
            "the writer connection outlived its pool"
        );
    }
}
