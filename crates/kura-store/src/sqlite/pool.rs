//! Connections to one database file: one writer, several readers.
//!
//! SQLite in WAL mode lets readers proceed while one writer commits. The pool
//! keeps one write connection behind an async semaphore of one and a set of
//! read connections behind a semaphore of their count; work runs on Tokio's
//! blocking threads so the async runtime never waits on the disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kura_crypto::DataKey;
use parking_lot::Mutex;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::Semaphore;

use super::{Durability, open_encrypted};
use crate::StoreError;

/// A pool of connections to one encrypted database file.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    write_permit: Semaphore,
    readers: Mutex<Vec<Connection>>,
    read_permits: Semaphore,
    reader_count: usize,
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
        let readers = readers.max(1);
        let mut conns = Vec::with_capacity(readers);
        for _ in 0..readers {
            let conn = open_encrypted(path, key, false, durability)?;
            conn.execute_batch("PRAGMA query_only = ON;")?;
            conns.push(conn);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(writer),
                write_permit: Semaphore::new(1),
                readers: Mutex::new(conns),
                read_permits: Semaphore::new(readers),
                reader_count: readers,
            }),
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
        tokio::task::spawn_blocking(move || {
            // The permit guarantees a connection is free.
            let conn = inner
                .readers
                .lock()
                .pop()
                .ok_or_else(|| StoreError::Worker("reader pool is empty".into()))?;
            let result = f(&conn);
            inner.readers.lock().push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }

    /// Runs work in one immediate write transaction; commits when `f`
    /// returns `Ok`, rolls back otherwise, so a failed request changes nothing.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .inner
            .write_permit
            .acquire()
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
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
}
