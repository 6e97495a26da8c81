//! The event log's SQL: appends, the verification walk, queries, checkpoints,
//! the signing key's row and pruning. Tables are created by platform
//! migration 2. Since migration 15 `events` has no index but its `seq` key:
//! filters walk the log by `seq` and stop after one page of matches, and the
//! id and time lookups are tables derived from the log in batches
//! ([`extend_lookups`]). Since migration 16 an entry is its sequence number,
//! time, canonical body and hash alone: filters decide on the decoded body,
//! which the chain covers, the link to the previous entry is that entry's
//! hash, and verification holds the time column to the body's time.

use kura_crypto::signing::{PublicKey, Signature};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension as _, Transaction, params, params_from_iter};
use time::OffsetDateTime;

use super::Pool;
use crate::StoreError;
use crate::events::verify::{Segment, Verifier};
use crate::events::{
    CHECKPOINT_FORMAT, ChainHash, ChainVerification, Checkpoint, CheckpointExport, EventPage,
    EventQuery, EventRecord, ExportedCheckpoint, ExportedKey, Facets, GENESIS, MAX_PAGE, Order,
    Seq, StoredEvent, VerifyOptions, chain_hash,
};
use kura_types::SecurityEvent;

fn to_i64(seq: Seq) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Malformed(format!("sequence {seq} out of range")))
}

fn to_seq(n: i64) -> Result<Seq, StoreError> {
    Seq::try_from(n).map_err(|_| StoreError::Malformed(format!("negative sequence {n}")))
}

fn to_hash(bytes: &[u8], what: &str) -> Result<ChainHash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Malformed(format!("{what} is not 32 bytes")))
}

/// The last entry's sequence number and hash, or the prune anchor, or the
/// genesis.
pub(crate) fn head(conn: &Connection) -> Result<(Seq, ChainHash), StoreError> {
    let last: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((seq, hash)) = last {
        return Ok((to_seq(seq)?, to_hash(&hash, "entry hash")?));
    }
    Ok(anchor(conn)?.unwrap_or((0, GENESIS)))
}

/// The last pruned entry and its hash.
pub(crate) fn anchor(conn: &Connection) -> Result<Option<(Seq, ChainHash)>, StoreError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row("SELECT seq, hash FROM event_anchor WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    row.map(|(seq, hash)| Ok((to_seq(seq)?, to_hash(&hash, "anchor hash")?)))
        .transpose()
}

/// Appends `records` to the log inside the caller's write transaction and
/// returns their sequence numbers. The events commit (or roll back) with
/// whatever else the transaction does, which is how a state change and the
/// event describing it become durable together:
///
/// ```text
/// let record = EventRecord::new(event)?;
/// pool.write(move |tx| {
///     tx.execute("UPDATE roles SET …", params![…])?;
///     append_in_tx(tx, &[record])?;
///     Ok(())
/// }).await?;
/// ```
///
/// Appends are serialised by the database's single writer, so the chain
/// never forks.
pub fn append_in_tx(tx: &Transaction<'_>, records: &[EventRecord]) -> Result<Vec<Seq>, StoreError> {
    let mut seqs = append_batches(tx, std::slice::from_ref(&records))?;
    Ok(seqs.pop().unwrap_or_default())
}

/// Appends several callers' batches in order with one head lookup and one
/// prepared statement, returning each batch's sequence numbers. The group
/// commit writer uses this so a transaction of many small requests costs
/// what one large request costs.
pub(crate) fn append_batches<B: AsRef<[EventRecord]>>(
    tx: &Transaction<'_>,
    batches: &[B],
) -> Result<Vec<Vec<Seq>>, StoreError> {
    let (mut seq, mut prev) = head(tx)?;
    let mut stmt =
        tx.prepare_cached("INSERT INTO events (seq, time, body, hash) VALUES (?1, ?2, ?3, ?4)")?;
    let mut out = Vec::with_capacity(batches.len());
    for records in batches {
        let records = records.as_ref();
        let mut seqs = Vec::with_capacity(records.len());
        for r in records {
            seq += 1;
            let hash = chain_hash(seq, &prev, &r.body);
            stmt.execute(params![to_i64(seq)?, r.time_ns, r.body, &hash[..]])?;
            prev = hash;
            seqs.push(seq);
        }
        out.push(seqs);
    }
    Ok(out)
}

/// How many entries one time block spans (`seq >> BLOCK_BITS`; the SQL
/// below and migration 15 write the same shift as `seq >> 8`).
const BLOCK_BITS: u32 = 8;

/// The last entry the lookups (`event_ids`, `event_time_blocks`) cover;
/// entries after it are the log's unindexed tail.
pub(crate) fn lookups_upto(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT seq FROM event_lookups_upto WHERE id = 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Extends the lookups over the log's tail and returns how many entries it
/// added. Runs in batches (at signed checkpoints, at start and on a timer),
/// never in the transaction of the write being recorded, so recording an
/// event maintains no B-tree but the log's own.
pub(crate) fn extend_lookups(tx: &Transaction<'_>) -> Result<u64, StoreError> {
    let upto = lookups_upto(tx)?;
    let last: Option<i64> = tx
        .prepare_cached("SELECT max(seq) FROM events")?
        .query_row([], |r| r.get(0))?;
    let Some(last) = last.filter(|&l| l > upto) else {
        return Ok(0);
    };
    // Ids are read out of the bodies here rather than with SQLite's
    // `json_extract`, which builds a whole binary JSON tree per entry.
    let mut read =
        tx.prepare_cached("SELECT seq, body FROM events WHERE seq > ?1 AND seq <= ?2")?;
    let mut insert =
        tx.prepare_cached("INSERT OR IGNORE INTO event_ids (id, seq) VALUES (?1, ?2)")?;
    let mut rows = read.query(params![upto, last])?;
    let mut added = 0;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let body = r.get_ref(1)?.as_blob().unwrap_or_default();
        let facets =
            Facets::of(body).map_err(|e| StoreError::Malformed(format!("event {seq}: {e}")))?;
        added += insert.execute(params![facets.id.as_ref(), seq])?;
    }
    tx.prepare_cached(
        "INSERT INTO event_time_blocks (block, min_time, max_time)
         SELECT seq >> 8, min(time), max(time) FROM events
          WHERE seq > ?1 AND seq <= ?2 GROUP BY seq >> 8
         ON CONFLICT(block) DO UPDATE SET
             min_time = min(min_time, excluded.min_time),
             max_time = max(max_time, excluded.max_time)",
    )?
    .execute(params![upto, last])?;
    tx.prepare_cached(
        "INSERT INTO event_lookups_upto (id, seq) VALUES (1, ?1)
         ON CONFLICT(id) DO UPDATE SET seq = excluded.seq",
    )?
    .execute([last])?;
    Ok(added as u64)
}

/// Whether the log has entries the lookups do not cover yet.
pub(crate) fn lookups_pending(conn: &Connection) -> Result<bool, StoreError> {
    let upto = lookups_upto(conn)?;
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM events WHERE seq > ?1)")?
        .query_row([upto], |r| r.get(0))?)
}

/// The ranges of `seq` (inclusive, ascending, disjoint) that can hold
/// entries with `since <= time < until`: the covered blocks whose bounds
/// meet the window, then the unindexed tail. Without bounds, the whole log.
fn seq_ranges_for_time(
    conn: &Connection,
    since: Option<i64>,
    until: Option<i64>,
) -> Result<Vec<(i64, i64)>, StoreError> {
    if since.is_none() && until.is_none() {
        return Ok(vec![(i64::MIN, i64::MAX)]);
    }
    let upto = lookups_upto(conn)?;
    let mut stmt = conn.prepare_cached(
        "SELECT block FROM event_time_blocks
          WHERE max_time >= ?1 AND min_time < ?2 ORDER BY block",
    )?;
    let blocks = stmt.query_map(
        params![since.unwrap_or(i64::MIN), until.unwrap_or(i64::MAX)],
        |r| r.get::<_, i64>(0),
    )?;
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for block in blocks {
        let block = block?;
        let (first, last) = (block << BLOCK_BITS, ((block + 1) << BLOCK_BITS) - 1);
        // Entries after `upto` are the tail's, walked below.
        let last = last.min(upto);
        if first > last {
            continue;
        }
        match ranges.last_mut() {
            Some(r) if r.1 + 1 >= first => r.1 = last,
            _ => ranges.push((first, last)),
        }
    }
    ranges.push((upto + 1, i64::MAX));
    Ok(ranges)
}

/// The largest signed tree size.
pub(crate) fn last_checkpoint(conn: &Connection) -> Result<Seq, StoreError> {
    let n: Option<i64> = conn
        .prepare_cached("SELECT max(tree_size) FROM event_checkpoints")?
        .query_row([], |r| r.get(0))?;
    to_seq(n.unwrap_or(0))
}

/// The time (Unix nanoseconds) of entry `seq`, if the log holds it.
pub(crate) fn entry_time(conn: &Connection, seq: Seq) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT time FROM events WHERE seq = ?1")?
        .query_row([to_i64(seq)?], |r| r.get(0))
        .optional()?)
}

/// Stores a checkpoint (ignoring one that already exists for its tree size).
pub(crate) fn insert_checkpoint(tx: &Transaction<'_>, c: &Checkpoint) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO event_checkpoints (tree_size, head_hash, signed_at, key_id, signature)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(tree_size) DO NOTHING",
        params![
            to_i64(c.tree_size)?,
            &c.head_hash[..],
            c.signed_at.unix_timestamp(),
            c.key_id,
            &c.signature.as_bytes()[..],
        ],
    )?;
    Ok(())
}

/// The stored hash of one entry.
pub(crate) fn entry_hash(conn: &Connection, seq: Seq) -> Result<Option<ChainHash>, StoreError> {
    let hash: Option<Vec<u8>> = conn
        .query_row(
            "SELECT hash FROM events WHERE seq = ?1",
            [to_i64(seq)?],
            |r| r.get(0),
        )
        .optional()?;
    hash.map(|h| to_hash(&h, "entry hash")).transpose()
}

/// Every checkpoint, by tree size.
pub(crate) fn checkpoints(conn: &Connection) -> Result<Vec<Checkpoint>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT tree_size, head_hash, signed_at, key_id, signature
           FROM event_checkpoints ORDER BY tree_size",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let tree_size = to_seq(r.get(0)?)?;
        let head: Vec<u8> = r.get(1)?;
        let sig: Vec<u8> = r.get(4)?;
        out.push(Checkpoint {
            tree_size,
            head_hash: to_hash(&head, "checkpoint head")?,
            signed_at: OffsetDateTime::from_unix_timestamp(r.get(2)?)
                .map_err(|e| StoreError::Malformed(e.to_string()))?,
            key_id: r.get(3)?,
            // A signature of the wrong length cannot verify; keep it as an
            // all-zero signature so the walk reports it as forged.
            signature: Signature::from_bytes(&sig)
                .or_else(|_| Signature::from_bytes(&[0; 64]))
                .map_err(|e| StoreError::Malformed(e.to_string()))?,
        });
    }
    Ok(out)
}

/// The public halves of every signing key ever used.
pub(crate) fn public_keys(conn: &Connection) -> Result<Vec<PublicKey>, StoreError> {
    let mut stmt = conn.prepare("SELECT public_key FROM event_signing_keys ORDER BY created_at")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let raw: Vec<u8> = r.get(0)?;
        out.push(PublicKey::from_bytes(&raw).map_err(|e| StoreError::Malformed(e.to_string()))?);
    }
    Ok(out)
}

/// A stored signing key: key id, raw public key, sealed PKCS#8.
pub(crate) type StoredSigningKey = (String, Vec<u8>, Vec<u8>);

/// The current signing key's sealed PKCS#8 and public key.
pub(crate) fn current_signing_key(
    conn: &Connection,
) -> Result<Option<StoredSigningKey>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT key_id, public_key, sealed_pkcs8 FROM event_signing_keys
              WHERE retired_at IS NULL ORDER BY created_at DESC, key_id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
}

/// Stores a new signing key.
pub(crate) fn insert_signing_key(
    tx: &Transaction<'_>,
    key_id: &str,
    public_key: &[u8],
    sealed_pkcs8: &[u8],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO event_signing_keys (key_id, public_key, sealed_pkcs8, created_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![key_id, public_key, sealed_pkcs8, now.unix_timestamp()],
    )?;
    Ok(())
}

/// Walks the whole log and every checkpoint; reports the first sequence
/// number where the chain or a signature breaks.
///
/// A long log is first walked in stretches on several read connections at
/// once (the walk is bound by page decryption and row decoding, which one
/// connection does on one core). Entries below the head never change, so the
/// stretches need no common snapshot: each starts from the stored hash of the
/// entry before it, and the stretch before recomputes that hash. If every
/// stretch is intact the log is; if any is not (or pruning ran meanwhile),
/// the single walk in one read snapshot runs and gives the exact report.
/// Logs shorter than `split_at` entries are walked in one piece.
pub async fn verify(
    pool: &Pool,
    options: VerifyOptions,
    split_at: Seq,
) -> Result<ChainVerification, StoreError> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let lanes = pool.reader_count().min(cores);
    if lanes >= 2
        && let Some(report) = verify_split(pool, options.clone(), lanes, split_at.max(2)).await?
    {
        return Ok(report);
    }
    pool.read(move |conn| verify_conn(conn, &options)).await
}

/// The walk in `lanes` stretches; `None` when the single walk must decide.
async fn verify_split(
    pool: &Pool,
    options: VerifyOptions,
    lanes: usize,
    split_at: Seq,
) -> Result<Option<ChainVerification>, StoreError> {
    let (mut walk, end) = pool
        .read(move |conn| {
            let snapshot = conn.unchecked_transaction()?;
            let walk = Verifier::new(
                anchor(&snapshot)?,
                checkpoints(&snapshot)?,
                public_keys(&snapshot)?,
                &options,
            );
            let (end, _) = head(&snapshot)?;
            Ok((walk, end))
        })
        .await?;
    let start = walk.next_seq();
    if walk.failed() || end < start || end - start + 1 < split_at {
        return Ok(None);
    }
    let lanes = Seq::try_from(lanes).unwrap_or(1);
    let per = (end - start + 1).div_ceil(lanes);
    let mut stretches = tokio::task::JoinSet::new();
    let mut from = start;
    while from <= end {
        let to = (from + per - 1).min(end);
        let prev = (from == start).then(|| walk.prev_hash());
        let template = walk.segment(from, walk.prev_hash());
        let pool = pool.clone();
        stretches.spawn(async move {
            pool.read(move |conn| walk_stretch(conn, template, from, to, prev))
                .await
        });
        from = to + 1;
    }
    let mut done = Vec::new();
    while let Some(joined) = stretches.join_next().await {
        let walked = joined.map_err(|e| StoreError::Worker(e.to_string()))??;
        match walked {
            Some(segment) => done.push(segment),
            None => return Ok(None),
        }
    }
    done.sort_by_key(|(from, _)| *from);
    for (_, segment) in &done {
        if !walk.absorb(segment) {
            return Ok(None);
        }
    }
    let mut report = walk.finish();
    report.stretches = done.len();
    Ok(Some(report))
}

/// Walks entries `from..=to`, linking the first to `prev` or, when that is
/// `None`, to the stored hash of the entry before `from`.
fn walk_stretch(
    conn: &Connection,
    template: Verifier,
    from: Seq,
    to: Seq,
    prev: Option<ChainHash>,
) -> Result<Option<(Seq, Segment)>, StoreError> {
    let link = match prev {
        Some(hash) => hash,
        None => {
            let stored: Option<Vec<u8>> = conn
                .query_row(
                    "SELECT hash FROM events WHERE seq = ?1",
                    [to_i64(from - 1)?],
                    |r| r.get(0),
                )
                .optional()?;
            match stored.as_deref().map(|h| to_hash(h, "entry hash")) {
                Some(Ok(hash)) => hash,
                _ => return Ok(None),
            }
        }
    };
    let mut stretch = template.segment(from, link);
    let mut stmt = conn.prepare(
        "SELECT seq, time, hash, body FROM events WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
    )?;
    let mut rows = stmt.query([to_i64(from)?, to_i64(to)?])?;
    while let Some(r) = rows.next()? {
        let seq = to_seq(r.get(0)?)?;
        let hash = r.get_ref(2)?.as_blob().unwrap_or_default();
        let body = r.get_ref(3)?.as_blob().unwrap_or_default();
        if !stretch.entry(seq, r.get(1)?, hash, body) {
            return Ok(None);
        }
    }
    Ok(stretch.segment_end(to).map(|segment| (from, segment)))
}

pub(crate) fn verify_conn(
    conn: &Connection,
    options: &VerifyOptions,
) -> Result<ChainVerification, StoreError> {
    let snapshot = conn.unchecked_transaction()?;
    let mut verifier = Verifier::new(
        anchor(&snapshot)?,
        checkpoints(&snapshot)?,
        public_keys(&snapshot)?,
        options,
    );
    if !verifier.failed() {
        let mut stmt = snapshot.prepare("SELECT seq, time, hash, body FROM events ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let seq = to_seq(r.get(0)?)?;
            let hash = r.get_ref(2)?.as_blob().unwrap_or_default();
            let body = r.get_ref(3)?.as_blob().unwrap_or_default();
            if !verifier.entry(seq, r.get(1)?, hash, body) {
                break;
            }
        }
    }
    let report = verifier.finish();
    drop(snapshot);
    Ok(report)
}

/// Signed checkpoints and their public keys, for handing to an outside party.
pub async fn export_checkpoints(pool: &Pool) -> Result<CheckpointExport, StoreError> {
    pool.read(|conn| {
        let snapshot = conn.unchecked_transaction()?;
        let keys = public_keys(&snapshot)?;
        let cps = checkpoints(&snapshot)?;
        Ok(CheckpointExport {
            format: CHECKPOINT_FORMAT.into(),
            public_keys: keys
                .iter()
                .map(|k| ExportedKey {
                    key_id: k.key_id(),
                    public_key: k.to_hex(),
                })
                .collect(),
            checkpoints: cps.iter().map(ExportedCheckpoint::from).collect(),
        })
    })
    .await
}

/// Decoded events matching `q`, one page at a time.
pub async fn query(pool: &Pool, q: EventQuery) -> Result<EventPage, StoreError> {
    pool.read(move |conn| query_conn(conn, &q)).await
}

fn time_ns(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos())
        .map_err(|_| StoreError::Malformed("query time is out of range".into()))
}

pub(crate) fn query_conn(conn: &Connection, q: &EventQuery) -> Result<EventPage, StoreError> {
    let since = q.since.map(time_ns).transpose()?;
    let until = q.until.map(time_ns).transpose()?;
    let mut clauses: Vec<&str> = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    // The time column narrows the walk; the body's facets decide every
    // filter (`EventQuery::matches`), so a query reads nothing the chain
    // does not cover.
    if let Some(since) = since {
        clauses.push("time >= ?");
        args.push(SqlValue::Integer(since));
    }
    if let Some(until) = until {
        clauses.push("time < ?");
        args.push(SqlValue::Integer(until));
    }
    let (cmp, dir) = match q.order {
        Order::NewestFirst => ("seq < ?", "DESC"),
        Order::OldestFirst => ("seq > ?", "ASC"),
    };
    if let Some(cursor) = q.cursor {
        clauses.push(cmp);
        args.push(SqlValue::Integer(to_i64(cursor)?));
    }
    let limit = match q.limit {
        0 => 100,
        n => n.min(MAX_PAGE),
    };
    // A time window is walked as the ranges of `seq` that can hold it (see
    // `seq_ranges_for_time`), in the query's order.
    let mut ranges = seq_ranges_for_time(conn, since, until)?;
    if q.order == Order::NewestFirst {
        ranges.reverse();
    }
    clauses.push("seq BETWEEN ? AND ?");
    // Only fixed clause text is interpolated; every value is a parameter.
    let sql = format!(
        "SELECT seq, body, hash FROM events WHERE {} ORDER BY seq {dir}",
        clauses.join(" AND ")
    );
    let mut stmt = conn.prepare(&sql)?;
    let filtered = q.filters();
    let mut events = Vec::with_capacity(limit.min(64));
    let mut more = false;
    'ranges: for (first, last) in ranges {
        let range = [SqlValue::Integer(first), SqlValue::Integer(last)];
        let mut rows = stmt.query(params_from_iter(args.iter().chain(&range)))?;
        while let Some(r) = rows.next()? {
            let seq = to_seq(r.get(0)?)?;
            let body = r.get_ref(1)?.as_blob().unwrap_or_default();
            if filtered {
                let facets = Facets::of(body)
                    .map_err(|e| StoreError::Malformed(format!("event {seq}: {e}")))?;
                if !q
                    .matches(&facets)
                    .map_err(|e| StoreError::Malformed(format!("event {seq}: {e}")))?
                {
                    continue;
                }
            }
            if events.len() == limit {
                more = true;
                break 'ranges;
            }
            let event = SecurityEvent::from_json(body)
                .map_err(|e| StoreError::Malformed(format!("event {seq}: {e}")))?;
            let hash = to_hash(r.get_ref(2)?.as_blob().unwrap_or_default(), "entry hash")?;
            events.push(StoredEvent { seq, hash, event });
        }
    }
    let next_cursor = if more {
        events.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(EventPage {
        events,
        next_cursor,
    })
}

/// The largest prefix of the log (after the current anchor) whose entries are
/// all older than `cutoff`: its last sequence number and hash.
pub(crate) fn prunable_prefix(
    conn: &Connection,
    cutoff: OffsetDateTime,
) -> Result<Option<(Seq, ChainHash)>, StoreError> {
    let cutoff = time_ns(cutoff)?;
    let mut first_kept: Option<i64> = None;
    let mut stmt = conn
        .prepare_cached("SELECT min(seq) FROM events WHERE seq BETWEEN ?1 AND ?2 AND time >= ?3")?;
    for (first, last) in seq_ranges_for_time(conn, Some(cutoff), None)? {
        first_kept = stmt.query_row(params![first, last, cutoff], |r| r.get(0))?;
        if first_kept.is_some() {
            break;
        }
    }
    let last: Option<i64> = match first_kept {
        Some(first) => Some(first - 1),
        None => conn.query_row("SELECT max(seq) FROM events", [], |r| r.get(0))?,
    };
    let Some(last) = last.filter(|&l| l > 0) else {
        return Ok(None);
    };
    let last = to_seq(last)?;
    match entry_hash(conn, last)? {
        Some(hash) => Ok(Some((last, hash))),
        // Already pruned up to here (or earlier).
        None => Ok(None),
    }
}

/// Deletes entries up to `last` and records it as the anchor. The caller has
/// already stored a signed checkpoint at `last` in the same transaction.
pub(crate) fn prune_to(
    tx: &Transaction<'_>,
    last: Seq,
    hash: &ChainHash,
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    // The id lookup goes with the entries it points at (looked up by id, so
    // this walks the pruned rows, not the whole lookup).
    tx.execute(
        "DELETE FROM event_ids
          WHERE id IN (SELECT json_extract(CAST(body AS TEXT), '$.id') FROM events WHERE seq <= ?1)",
        [to_i64(last)?],
    )?;
    // Blocks wholly at or before `last` go; the block `last` ends inside
    // keeps its (now wider than needed) bounds, which only widen a walk.
    tx.execute(
        "DELETE FROM event_time_blocks WHERE block < ((?1 + 1) >> 8)",
        [to_i64(last)?],
    )?;
    let removed = tx.execute("DELETE FROM events WHERE seq <= ?1", [to_i64(last)?])?;
    tx.execute(
        "INSERT INTO event_anchor (id, seq, hash, pruned_at) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, pruned_at = excluded.pruned_at",
        params![to_i64(last)?, &hash[..], now.unix_timestamp()],
    )?;
    Ok(removed as u64)
}
