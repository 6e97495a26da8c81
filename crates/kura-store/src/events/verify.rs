//! Checking the log: the walk over entries and checkpoints, independent of
//! where the rows come from. `sqlite::events::verify` streams rows into a
//! [`Verifier`] one at a time, so memory stays flat however long the log is.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use kura_crypto::digest::constant_time_eq;
use kura_crypto::signing::PublicKey;

use super::{ChainHash, Checkpoint, GENESIS, Seq, chain_hash};

/// How to check.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Public keys obtained out of band (from an earlier export or a config
    /// file). When set, checkpoints must be signed by one of these and the
    /// keys stored in the database are ignored, so someone who rewrote the
    /// database and its key table together is still caught.
    pub trusted_keys: Vec<PublicKey>,
}

/// What broke, at [`ChainBreak::seq`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakKind {
    /// The entry is missing: the next one present is `next_present`
    /// (`None` when the log ends there).
    Missing {
        /// The next sequence number present.
        next_present: Option<Seq>,
    },
    /// The entry's stored hash is not the hash of its position, its body
    /// and the hash of the entry before it: its body or hash was altered,
    /// entries were reordered, or the entry before it was replaced (an entry
    /// rewritten with a fresh hash breaks the link of the one after it).
    HashMismatch,
    /// The entry's time column, which time-range queries and pruning walk
    /// by, is not the time in its body (which its hash covers).
    TimeAltered,
    /// A signed checkpoint covers this entry but names a different head hash:
    /// history up to here was rewritten.
    CheckpointMismatch,
    /// The checkpoint at this tree size has a signature that does not verify.
    BadSignature {
        /// The key it names.
        key_id: String,
    },
    /// The checkpoint at this tree size names a key that is not trusted.
    UnknownKey {
        /// The key it names.
        key_id: String,
    },
    /// The log ends before a signed checkpoint says it should: entries from
    /// here to `checkpoint` were removed from the tail.
    Truncated {
        /// The signed tree size.
        checkpoint: Seq,
    },
    /// The log was pruned, but no valid signed checkpoint vouches for the
    /// hash it now starts from.
    AnchorUnsigned {
        /// The last pruned entry.
        anchor: Seq,
    },
}

/// The first place the log fails to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The first sequence number where the chain or a signature breaks.
    pub seq: Seq,
    /// What broke.
    pub kind: BreakKind,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seq = self.seq;
        match &self.kind {
            BreakKind::Missing {
                next_present: Some(next),
            } => write!(
                f,
                "entry {seq} is missing (the log jumps to entry {next}): entries were deleted"
            ),
            BreakKind::Missing { next_present: None } => {
                write!(f, "entry {seq} is missing: entries were deleted")
            }
            BreakKind::HashMismatch => write!(
                f,
                "entry {seq} does not match its hash after entry {}: its content was altered, entries were reordered, or the entry before it was replaced",
                seq.saturating_sub(1)
            ),
            BreakKind::TimeAltered => write!(
                f,
                "entry {seq} is stored under a time other than its own: its time column was altered"
            ),
            BreakKind::CheckpointMismatch => write!(
                f,
                "the signed checkpoint at entry {seq} names a different head: history up to entry {seq} was rewritten"
            ),
            BreakKind::BadSignature { key_id } => write!(
                f,
                "the checkpoint at entry {seq} has a signature that does not verify under key {key_id}: it was forged or altered"
            ),
            BreakKind::UnknownKey { key_id } => write!(
                f,
                "the checkpoint at entry {seq} is signed by key {key_id}, which is not trusted"
            ),
            BreakKind::Truncated { checkpoint } => write!(
                f,
                "the log ends before entry {seq}, but a signed checkpoint covers entries up to {checkpoint}: the tail was truncated"
            ),
            BreakKind::AnchorUnsigned { anchor } => write!(
                f,
                "the log was pruned up to entry {anchor}, but no valid signed checkpoint anchors entry {seq}"
            ),
        }
    }
}

/// The result of walking the whole log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainVerification {
    /// Entries whose hash was recomputed.
    pub entries_checked: u64,
    /// The first entry present (after pruning, later than 1).
    pub first_seq: Option<Seq>,
    /// The last entry checked.
    pub last_seq: Option<Seq>,
    /// The hash of the last entry checked.
    pub head_hash: Option<ChainHash>,
    /// The last pruned entry, whose hash the log starts from.
    pub anchor_seq: Option<Seq>,
    /// Checkpoints whose signature was checked.
    pub checkpoints_checked: usize,
    /// The largest tree size covered by a valid checkpoint that matched.
    pub last_signed: Option<Seq>,
    /// The first break, if any.
    pub problem: Option<ChainBreak>,
    /// How many stretches were walked at once (1: one walk in one read
    /// snapshot).
    pub stretches: usize,
}

impl ChainVerification {
    /// Whether the log verified end to end.
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// What an intact stretch of the log walked on its own proved.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    entries: u64,
    first: Seq,
    last: Seq,
    head: ChainHash,
    last_signed: Option<Seq>,
}

/// A checkpoint's signature status.
struct CheckedCheckpoint {
    head: ChainHash,
    signature: Result<(), BreakKind>,
}

/// The walk, fed one entry at a time in sequence order.
pub(crate) struct Verifier {
    checkpoints: Arc<BTreeMap<Seq, CheckedCheckpoint>>,
    expected: Seq,
    prev: ChainHash,
    report: ChainVerification,
}

impl Verifier {
    /// Starts a walk. `anchor` is the last pruned entry and its hash.
    pub(crate) fn new(
        anchor: Option<(Seq, ChainHash)>,
        checkpoints: Vec<Checkpoint>,
        stored_keys: Vec<PublicKey>,
        options: &VerifyOptions,
    ) -> Self {
        let keys: HashMap<String, PublicKey> = if options.trusted_keys.is_empty() {
            stored_keys
        } else {
            options.trusted_keys.clone()
        }
        .into_iter()
        .map(|k| (k.key_id(), k))
        .collect();
        let checked_count = checkpoints.len();
        let checkpoints: BTreeMap<Seq, CheckedCheckpoint> = checkpoints
            .into_iter()
            .map(|c| {
                let signature = match keys.get(&c.key_id) {
                    None => Err(BreakKind::UnknownKey {
                        key_id: c.key_id.clone(),
                    }),
                    Some(key) if c.verify_with(key) => Ok(()),
                    Some(_) => Err(BreakKind::BadSignature {
                        key_id: c.key_id.clone(),
                    }),
                };
                (
                    c.tree_size,
                    CheckedCheckpoint {
                        head: c.head_hash,
                        signature,
                    },
                )
            })
            .collect();
        let mut report = ChainVerification {
            entries_checked: 0,
            first_seq: None,
            last_seq: None,
            head_hash: None,
            anchor_seq: anchor.map(|a| a.0),
            checkpoints_checked: checked_count,
            last_signed: None,
            problem: None,
            stretches: 1,
        };
        let (start, prev) = anchor.unwrap_or((0, GENESIS));
        // Checkpoints over pruned entries can only be checked for their
        // signature; the one at the anchor must also vouch for its hash.
        for (&size, c) in checkpoints.range(..=start) {
            if let Err(kind) = &c.signature {
                report.problem.get_or_insert(ChainBreak {
                    seq: size,
                    kind: kind.clone(),
                });
            }
        }
        if report.problem.is_none() && start > 0 {
            match checkpoints.get(&start) {
                Some(c) if c.signature.is_ok() && constant_time_eq(&c.head, &prev) => {
                    report.last_signed = Some(start);
                }
                _ => {
                    report.problem = Some(ChainBreak {
                        seq: start + 1,
                        kind: BreakKind::AnchorUnsigned { anchor: start },
                    });
                }
            }
        }
        Self {
            checkpoints: Arc::new(checkpoints),
            expected: start + 1,
            prev,
            report,
        }
    }

    /// The next sequence number the walk expects.
    pub(crate) fn next_seq(&self) -> Seq {
        self.expected
    }

    /// The hash the next entry must link to.
    pub(crate) fn prev_hash(&self) -> ChainHash {
        self.prev
    }

    /// A walk over the stretch of the log that starts at `start`, linking to
    /// `prev` (the stored hash of the entry before it), with the same
    /// checked checkpoints. Stretches walked apart prove the chain only when
    /// every one of them is intact and they are absorbed in order: each
    /// recomputes its last entry's hash, which the next one started from.
    pub(crate) fn segment(&self, start: Seq, prev: ChainHash) -> Self {
        Self {
            checkpoints: Arc::clone(&self.checkpoints),
            expected: start,
            prev,
            report: ChainVerification {
                entries_checked: 0,
                first_seq: None,
                last_seq: None,
                head_hash: None,
                anchor_seq: None,
                checkpoints_checked: 0,
                last_signed: None,
                problem: None,
                stretches: 1,
            },
        }
    }

    /// Ends a stretch that should have reached `end`; `None` when it failed
    /// or stopped short.
    pub(crate) fn segment_end(self, end: Seq) -> Option<Segment> {
        if self.failed() || self.expected != end + 1 {
            return None;
        }
        Some(Segment {
            entries: self.report.entries_checked,
            first: self.report.first_seq?,
            last: self.report.last_seq?,
            head: self.report.head_hash?,
            last_signed: self.report.last_signed,
        })
    }

    /// Continues the walk past a stretch checked apart. Returns false (and
    /// changes nothing) when the stretch does not start where the walk is.
    pub(crate) fn absorb(&mut self, segment: &Segment) -> bool {
        if self.failed() || segment.first != self.expected {
            return false;
        }
        self.report.entries_checked += segment.entries;
        self.report.first_seq.get_or_insert(segment.first);
        self.report.last_seq = Some(segment.last);
        self.report.head_hash = Some(segment.head);
        if segment.last_signed.is_some() {
            self.report.last_signed = segment.last_signed;
        }
        self.prev = segment.head;
        self.expected = segment.last + 1;
        true
    }

    /// Whether the walk already failed (the caller may stop reading).
    pub(crate) fn failed(&self) -> bool {
        self.report.problem.is_some()
    }

    /// Checks the next entry. Returns false once the walk has failed.
    /// `time_ns` is the entry's time column.
    pub(crate) fn entry(&mut self, seq: Seq, time_ns: i64, hash: &[u8], body: &[u8]) -> bool {
        if self.failed() {
            return false;
        }
        let fail = |this: &mut Self, seq, kind| {
            this.report.problem = Some(ChainBreak { seq, kind });
            false
        };
        if seq != self.expected {
            let expected = self.expected;
            return fail(
                self,
                expected,
                BreakKind::Missing {
                    next_present: Some(seq),
                },
            );
        }
        // The link is the previous entry's hash, which the walk recomputed
        // from that entry's body: an entry whose hash does not follow from it
        // and its own body breaks the chain here.
        let computed = chain_hash(seq, &self.prev, body);
        if !constant_time_eq(hash, &computed) {
            return fail(self, seq, BreakKind::HashMismatch);
        }
        if body_time_ns(body) != Some(time_ns) {
            return fail(self, seq, BreakKind::TimeAltered);
        }
        if let Some(c) = self.checkpoints.get(&seq) {
            if let Err(kind) = &c.signature {
                let kind = kind.clone();
                return fail(self, seq, kind);
            }
            if !constant_time_eq(&c.head, &computed) {
                return fail(self, seq, BreakKind::CheckpointMismatch);
            }
            self.report.last_signed = Some(seq);
        }
        self.report.entries_checked += 1;
        self.report.first_seq.get_or_insert(seq);
        self.report.last_seq = Some(seq);
        self.report.head_hash = Some(computed);
        self.prev = computed;
        self.expected = seq + 1;
        true
    }

    /// Ends the walk: checkpoints beyond the last entry mean the tail is gone.
    pub(crate) fn finish(mut self) -> ChainVerification {
        if self.report.problem.is_none() {
            let end = self.expected;
            let beyond = self.checkpoints.range(end..);
            let mut truncated = None;
            let mut forged = None;
            for (&size, c) in beyond {
                match &c.signature {
                    Ok(()) => truncated = truncated.or(Some(size)),
                    Err(kind) => forged = forged.or(Some((size, kind.clone()))),
                }
            }
            self.report.problem = match (truncated, forged) {
                (Some(checkpoint), _) => Some(ChainBreak {
                    seq: end,
                    kind: BreakKind::Truncated { checkpoint },
                }),
                (None, Some((size, kind))) => Some(ChainBreak { seq: size, kind }),
                (None, None) => None,
            };
        }
        self.report
    }
}

/// The time (Unix nanoseconds) in an entry's body, read without decoding the
/// rest of it.
fn body_time_ns(body: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Timed {
        #[serde(with = "time::serde::rfc3339")]
        time: time::OffsetDateTime,
    }
    let timed: Timed = serde_json::from_slice(body).ok()?;
    i64::try_from(timed.time.unix_timestamp_nanos()).ok()
}
