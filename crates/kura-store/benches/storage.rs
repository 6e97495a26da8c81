//! What encryption at rest costs: SQLCipher against plain SQLite, and the KMS.
//!
//! Every pair runs the same schema and the same work through
//! [`kura_store::open_encrypted`], once with a data key (SQLCipher, AES-256)
//! and once without (plain SQLite from the same build), so the two figures of
//! a pair differ only by encryption:
//!
//! - `point_read/{sqlcipher,sqlite}`: one row by integer primary key, random
//!   ids, from a table of 10,000 rows with eight mixed columns (about 1.6 MB,
//!   so it fits SQLite's default 2 MiB page cache per connection).
//! - `point_read_100k/{sqlcipher,sqlite}`: the same from 100,000 rows (about
//!   16 MB), so most reads miss the page cache and SQLCipher must decrypt and
//!   authenticate the page it fetches; this shows where encryption costs.
//! - `insert_tx1/{sqlcipher,sqlite}`: one row per transaction, `Durability::Full`.
//! - `insert_tx100/{sqlcipher,sqlite}`: 100 rows per transaction; throughput is
//!   counted in rows.
//! - `kms/{wrap,unwrap}`: a data key wrapped and unwrapped by [`LocalKms`].
//!
//! Run with `cargo bench -p kura-store --bench storage`. Timings are short so
//! the whole run fits a small shared machine; compare ratios within one run.

// A benchmark has nowhere to report a failed set-up but a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
    measurement::WallTime,
};
use kura_crypto::{DataKey, Kms as _, LocalKms, SealParams};
use kura_store::{Durability, open_encrypted};
use kura_types::{AppId, KeyScope};
use rusqlite::{Connection, TransactionBehavior, params};
use time::OffsetDateTime;

/// Rows in the point-read table that fits the default page cache.
const ROWS: u64 = 10_000;
/// Rows in the point-read table that does not.
const ROWS_LARGE: u64 = 100_000;
/// Rows per transaction in the batched insert.
const BATCH: u64 = 100;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS contacts (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL,
    city        TEXT NOT NULL,
    age         INTEGER NOT NULL,
    balance     REAL NOT NULL,
    visits      INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    notes       TEXT NOT NULL
)";

const INSERT: &str = "INSERT INTO contacts
    (name, email, city, age, balance, visits, created_at, notes)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

const SELECT: &str = "SELECT id, name, email, city, age, balance, visits, created_at, notes
    FROM contacts WHERE id = ?1";

const CITIES: [&str; 8] = [
    "Amsterdam",
    "Berlin",
    "Lisbon",
    "Nairobi",
    "Osaka",
    "Quito",
    "Tromsø",
    "Wellington",
];

/// One row as the application would read it.
#[allow(dead_code)] // The fields exist to be decoded, not read.
struct Contact {
    id: i64,
    name: String,
    email: String,
    city: String,
    age: i64,
    balance: f64,
    visits: i64,
    created_at: String,
    notes: String,
}

/// The two sides of every pair: a data key for SQLCipher, none for SQLite.
fn variants() -> [(&'static str, Option<DataKey>); 2] {
    [
        ("sqlcipher", Some(DataKey::from_bytes([0x5a; 32]))),
        ("sqlite", None),
    ]
}

fn open(path: &Path, key: Option<&DataKey>) -> Connection {
    let conn = open_encrypted(path, key, true, Durability::Full).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn
}

/// Inserts the `n`th generated row; the content is deterministic so both
/// variants store the same bytes.
fn insert_row(conn: &Connection, n: u64) {
    let i = i64::try_from(n).unwrap();
    let mut stmt = conn.prepare_cached(INSERT).unwrap();
    stmt.execute(params![
        format!("Contact number {n}"),
        format!("contact.{n}@example.org"),
        CITIES[(n % 8) as usize],
        18 + i % 70,
        (i as f64) * 1.25 - 300.0,
        i % 1000,
        format!(
            "2025-{:02}-{:02}T{:02}:{:02}:00Z",
            1 + n % 12,
            1 + n % 28,
            n % 24,
            n % 60
        ),
        format!("Met at event {n}; prefers email, follow up in the spring."),
    ])
    .unwrap();
}

fn read_row(conn: &Connection, id: i64) -> Contact {
    let mut stmt = conn.prepare_cached(SELECT).unwrap();
    stmt.query_row([id], |r| {
        Ok(Contact {
            id: r.get(0)?,
            name: r.get(1)?,
            email: r.get(2)?,
            city: r.get(3)?,
            age: r.get(4)?,
            balance: r.get(5)?,
            visits: r.get(6)?,
            created_at: r.get(7)?,
            notes: r.get(8)?,
        })
    })
    .unwrap()
}

/// A xorshift generator: the same id sequence for both variants, no
/// dependency, and cheap enough not to show in the timings.
struct Ids {
    state: u64,
    rows: u64,
}

impl Ids {
    fn new(rows: u64) -> Self {
        Self {
            state: 0x9e37_79b9_7f4a_7c15,
            rows,
        }
    }

    fn next(&mut self) -> i64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        1 + i64::try_from(self.state % self.rows).unwrap()
    }
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
}

fn point_read(c: &mut Criterion) {
    point_read_rows(c, "point_read", ROWS);
    point_read_rows(c, "point_read_100k", ROWS_LARGE);
}

fn point_read_rows(c: &mut Criterion, group_name: &str, rows: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group(group_name);
    configure(&mut group);
    // The pair differs by little when pages are cached, so it gets more
    // samples than the rest to average out a busy machine.
    group
        .sample_size(40)
        .measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Elements(1));
    for (name, key) in variants() {
        let path = dir.path().join(format!("read-{name}.db"));
        let mut writer = open(&path, key.as_ref());
        let tx = writer.transaction().unwrap();
        for n in 0..rows {
            insert_row(&tx, n);
        }
        tx.commit().unwrap();
        // Start from a checkpointed main file, as a long-running server has.
        writer
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        // Read through a fresh read-only connection, as `Pool::read` does;
        // its page cache starts cold and warms up like a server's would.
        let conn = open_encrypted(&path, key.as_ref(), false, Durability::Full).unwrap();
        conn.execute_batch("PRAGMA query_only = ON;").unwrap();
        // For investigating cache sizing only: `KURA_BENCH_CACHE_SIZE=-32768`
        // overrides the page cache (in `PRAGMA cache_size` units) of the
        // reader; figures in BENCHMARKS.md are from runs without it.
        if let Ok(size) = std::env::var("KURA_BENCH_CACHE_SIZE") {
            let size: i64 = size.parse().unwrap();
            conn.execute_batch(&format!("PRAGMA cache_size = {size};"))
                .unwrap();
        }
        let mut ids = Ids::new(rows);
        group.bench_function(name, |b| {
            b.iter(|| black_box(read_row(&conn, black_box(ids.next()))));
        });
    }
    group.finish();
}

fn insert_tx1(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("insert_tx1");
    configure(&mut group);
    // Each iteration waits for an fsync; flat sampling keeps the run short.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(1));
    for (name, key) in variants() {
        let mut conn = open(&dir.path().join(format!("tx1-{name}.db")), key.as_ref());
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .unwrap();
                insert_row(&tx, n);
                tx.commit().unwrap();
                n += 1;
            });
        });
    }
    group.finish();
}

fn insert_tx100(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("insert_tx100");
    configure(&mut group);
    group.sampling_mode(SamplingMode::Flat);
    // Counted in rows, so the figure compares directly with `insert_tx1`.
    group.throughput(Throughput::Elements(BATCH));
    for (name, key) in variants() {
        let mut conn = open(&dir.path().join(format!("tx100-{name}.db")), key.as_ref());
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .unwrap();
                for _ in 0..BATCH {
                    insert_row(&tx, n);
                    n += 1;
                }
                tx.commit().unwrap();
            });
        });
    }
    group.finish();
}

fn kms(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let kms = LocalKms::create(
        &dir.path().join("master.key"),
        None,
        SealParams::default(),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    // `LocalKms` never awaits anything real; a current-thread runtime is the
    // cheapest honest way to drive its futures.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let scope = KeyScope::App(AppId::new());
    let key = DataKey::generate().unwrap();
    let wrapped = rt.block_on(kms.wrap(&key, scope)).unwrap();

    let mut group = c.benchmark_group("kms");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    group.bench_function("wrap", |b| {
        b.iter(|| black_box(rt.block_on(kms.wrap(black_box(&key), scope)).unwrap()));
    });
    group.bench_function("unwrap", |b| {
        b.iter(|| black_box(rt.block_on(kms.unwrap(black_box(&wrapped), scope)).unwrap()));
    });
    group.finish();
}

criterion_group!(benches, point_read, insert_tx1, insert_tx100, kms);
criterion_main!(benches);
