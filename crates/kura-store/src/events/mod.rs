//! The security event log: an append-only hash chain with signed checkpoints,
//! kept in the platform database.
//!
//! Each entry `n` stores the canonical JSON of one [`SecurityEvent`] and
//! `hash_n = SHA-256("kura-events/v1" || 0x00 || seq_n (8 bytes, big endian) ||
//! hash_(n-1) || body_n)`, with 32 zero bytes before the first entry. Binding
//! the sequence number makes a moved entry fail on its own, not only through
//! its neighbour's link. A [`Checkpoint`] signs (tree size, head hash, time)
//! with the log's Ed25519 key; [`CheckpointExport`] hands checkpoints to an
//! outside party, who can check them with the public key alone and later
//! prove that history up to a checkpoint was not rewritten.
//!
//! Writing: [`append_in_tx`] appends inside a caller's write transaction, so a
//! state change and its event commit together ([`TxEvents`] carries the events
//! of one write through a store trait); [`EventLog`] is the
//! group-commit appender for everything else. Reading: [`verify`], [`query`],
//! [`export_checkpoints`]. Retention: [`EventLog::prune_before`] deletes a
//! prefix of the log only after a signed checkpoint anchors what remains.
//!
//! This module is the log's format and types; the SQL is in
//! `sqlite::events`. The event model and its rules (what an action is, what
//! counts as a secret) belong to `kura-types`; detection belongs to
//! `kura-events`.

mod log;
mod tx;
pub(crate) mod verify;

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use kura_crypto::digest;
use kura_crypto::signing::{PublicKey, Signature};
use kura_types::{Actor, EventId, Outcome, SecurityEvent, TeamId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::StoreError;

pub use crate::sqlite::events::{append_in_tx, export_checkpoints, query, verify};
pub use log::{EventLog, EventLogOptions, PruneReport};
pub use tx::TxEvents;
pub use verify::{BreakKind, ChainBreak, ChainVerification, VerifyOptions};

/// A position in the log, counting from 1.
pub type Seq = u64;

/// A SHA-256 chain hash.
pub type ChainHash = [u8; 32];

/// What comes before the first entry.
pub const GENESIS: ChainHash = [0; 32];

const CHAIN_DOMAIN: &[u8] = b"kura-events/v1\0";

/// The format name of checkpoints and their exports.
pub const CHECKPOINT_FORMAT: &str = "kura-events-checkpoint/v1";

/// The hash of entry `seq` with body `body` following `prev`.
pub fn chain_hash(seq: Seq, prev: &ChainHash, body: &[u8]) -> ChainHash {
    digest::sha256_parts(&[CHAIN_DOMAIN, &seq.to_be_bytes(), prev, body])
}

/// One event ready for the log: its canonical body (what the chain commits
/// to, and all that queries read) and its time, the one column kept beside
/// the body to find time ranges without decoding entries.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub(crate) id: EventId,
    pub(crate) time_ns: i64,
    pub(crate) body: Vec<u8>,
}

impl EventRecord {
    /// Sanitises `event` (secrets and card numbers never reach the log, even
    /// from a caller that forgot) and encodes it canonically.
    pub fn new(mut event: SecurityEvent) -> Result<Self, StoreError> {
        event.sanitize();
        let body = event
            .canonical_json()
            .map_err(|e| StoreError::Malformed(e.to_string()))?;
        let time_ns = i64::try_from(event.time.unix_timestamp_nanos())
            .map_err(|_| StoreError::Malformed("event time is out of range".into()))?;
        Ok(Self {
            id: event.id,
            time_ns,
            body,
        })
    }

    /// The event's id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The canonical body the chain commits to.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// A stored event with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Its position in the log.
    pub seq: Seq,
    /// Its chain hash, so an exported copy can be checked against the chain
    /// and its signed checkpoints.
    pub hash: ChainHash,
    /// The event, decoded from the stored canonical body (the body is what
    /// the chain protects, so it is what queries return).
    pub event: SecurityEvent,
}

/// Which way a query walks the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Newest first (the default for consoles and APIs).
    #[default]
    NewestFirst,
    /// Oldest first (exports and SIEM cursors).
    OldestFirst,
}

/// The most events one query page returns.
pub const MAX_PAGE: usize = 1000;

/// Filters for [`query`]. All set filters must match.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Events at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Events strictly before this time.
    pub until: Option<OffsetDateTime>,
    /// Only this team's events (team auditors are always given this).
    pub team: Option<TeamId>,
    /// Only this actor, by [`kura_types::Actor::key`] (`account:<id>`).
    pub actor: Option<String>,
    /// Only actions equal to or under this dotted prefix (`auth` matches
    /// `auth.signin.failed`, not `authz.check`).
    pub action_prefix: Option<String>,
    /// Only this outcome.
    pub outcome: Option<Outcome>,
    /// Only this source address.
    pub source: Option<IpAddr>,
    /// Only this request id.
    pub request_id: Option<String>,
    /// Continue after this sequence number (the previous page's
    /// `next_cursor`), in the query's order.
    pub cursor: Option<Seq>,
    /// Walking direction.
    pub order: Order,
    /// Page size, clamped to 1..=[`MAX_PAGE`]; 0 means 100.
    pub limit: usize,
}

impl EventQuery {
    /// Whether any filter reads the entries' bodies (the cursor, order and
    /// limit do not): a query without one decodes each entry once, in full.
    /// The fields are named one by one, so a filter added to the query
    /// cannot be left out here (and so skipped) without the build failing.
    pub(crate) fn filters(&self) -> bool {
        let Self {
            since,
            until,
            team,
            actor,
            action_prefix,
            outcome,
            source,
            request_id,
            cursor: _,
            order: _,
            limit: _,
        } = self;
        since.is_some()
            || until.is_some()
            || team.is_some()
            || actor.is_some()
            || action_prefix.is_some()
            || outcome.is_some()
            || source.is_some()
            || request_id.is_some()
    }

    /// Whether an entry with these facets passes every set filter but the
    /// cursor. The time and actor are decoded only when a filter needs them;
    /// the error says which of them does not decode.
    pub(crate) fn matches(&self, f: &Facets<'_>) -> Result<bool, String> {
        if self.since.is_some() || self.until.is_some() {
            let time = OffsetDateTime::parse(&f.time, &Rfc3339)
                .map_err(|e| format!("its time does not parse: {e}"))?;
            if self.since.is_some_and(|t| time < t) || self.until.is_some_and(|t| time >= t) {
                return Ok(false);
            }
        }
        let passes = self.team.is_none_or(|t| f.team == Some(t))
            && self.action_prefix.as_deref().is_none_or(|prefix| {
                // Whole dotted segments: `auth` is `auth` itself or anything
                // under `auth.`.
                let prefix = prefix.trim_end_matches('.');
                f.action
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
            })
            && self.outcome.is_none_or(|o| f.outcome == o)
            && self
                .source
                // IPv4-mapped IPv6 addresses compare as the IPv4 address they
                // carry, so one client has one form.
                .is_none_or(|s| f.source.map(|a| a.to_canonical()) == Some(s.to_canonical()))
            && self
                .request_id
                .as_deref()
                .is_none_or(|r| f.request_id.as_deref() == Some(r));
        match &self.actor {
            Some(key) if passes => {
                let actor: Actor = serde_json::from_str(f.actor.get())
                    .map_err(|e| format!("its actor does not decode: {e}"))?;
                Ok(actor.key() == *key)
            }
            _ => Ok(passes),
        }
    }
}

/// The fields of a stored body that queries filter on, read without
/// decoding the rest of it (details, user agent and target are skipped; the
/// actor and time stay text until a filter needs them), so a filter that
/// walks many entries decodes only its matches in full.
#[derive(Debug, Deserialize)]
pub(crate) struct Facets<'a> {
    /// The event's id, for the id lookup.
    #[serde(borrow)]
    pub(crate) id: Cow<'a, str>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    actor: &'a RawValue,
    outcome: Outcome,
    #[serde(default, borrow)]
    request_id: Option<Cow<'a, str>>,
    #[serde(default)]
    source: Option<IpAddr>,
    #[serde(default)]
    team: Option<TeamId>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

impl<'a> Facets<'a> {
    /// Reads the facets of a stored body.
    pub(crate) fn of(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// The events, in the query's order.
    pub events: Vec<StoredEvent>,
    /// Pass as [`EventQuery::cursor`] to get the next page; `None` at the end.
    pub next_cursor: Option<Seq>,
}

/// A signed statement that the log held `tree_size` entries whose last hash
/// was `head_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The sequence number of the last entry covered.
    pub tree_size: Seq,
    /// The chain hash of that entry.
    pub head_hash: ChainHash,
    /// When it was signed (whole seconds).
    pub signed_at: OffsetDateTime,
    /// The signing key's [`PublicKey::key_id`].
    pub key_id: String,
    /// Ed25519 over [`Checkpoint::signed_message`].
    pub signature: Signature,
}

impl Checkpoint {
    /// The exact bytes signed:
    ///
    /// ```text
    /// kura-events-checkpoint/v1
    /// tree_size <decimal>
    /// head <64 lowercase hex digits>
    /// signed_at <unix seconds, decimal>
    /// key <key id>
    /// ```
    ///
    /// each line ending in `\n`.
    pub fn signed_message(
        tree_size: Seq,
        head_hash: &ChainHash,
        signed_at: i64,
        key_id: &str,
    ) -> Vec<u8> {
        format!(
            "{CHECKPOINT_FORMAT}\ntree_size {tree_size}\nhead {}\nsigned_at {signed_at}\nkey {key_id}\n",
            hex::encode(head_hash)
        )
        .into_bytes()
    }

    /// Checks the signature under `key`.
    pub fn verify_with(&self, key: &PublicKey) -> bool {
        key.key_id() == self.key_id
            && key
                .verify(
                    &Self::signed_message(
                        self.tree_size,
                        &self.head_hash,
                        self.signed_at.unix_timestamp(),
                        &self.key_id,
                    ),
                    &self.signature,
                )
                .is_ok()
    }
}

/// A public key as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedKey {
    /// Its id (first 16 hex digits of SHA-256 of the raw key).
    pub key_id: String,
    /// The raw Ed25519 public key, hex.
    pub public_key: String,
}

/// A checkpoint as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedCheckpoint {
    /// The sequence number of the last entry covered.
    pub tree_size: Seq,
    /// The chain hash of that entry, hex.
    pub head_hash: String,
    /// Unix seconds, exactly as signed.
    pub signed_at: i64,
    /// The signing key's id.
    pub key_id: String,
    /// The Ed25519 signature, hex.
    pub signature: String,
}

/// Signed checkpoints in a form an outside party can keep and check with
/// nothing but the public key: rebuild [`Checkpoint::signed_message`] from
/// each entry's fields and verify the Ed25519 signature. Comparing a later
/// export with a kept one ([`CheckpointExport::consistent_with`]) proves the
/// history both cover was not rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointExport {
    /// Always [`CHECKPOINT_FORMAT`].
    pub format: String,
    /// The keys that signed the checkpoints.
    pub public_keys: Vec<ExportedKey>,
    /// Checkpoints by increasing tree size.
    pub checkpoints: Vec<ExportedCheckpoint>,
}

/// Why an exported checkpoint file does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// Not this format.
    #[error("not a {CHECKPOINT_FORMAT} export (format `{0}`)")]
    Format(String),
    /// A field does not parse.
    #[error("checkpoint {tree_size}: malformed {field}")]
    Malformed {
        /// Which checkpoint.
        tree_size: Seq,
        /// Which field.
        field: &'static str,
    },
    /// A signature does not verify under the trusted key.
    #[error(
        "checkpoint {tree_size}: signature by key {key_id} does not verify under the trusted key"
    )]
    BadSignature {
        /// Which checkpoint.
        tree_size: Seq,
        /// The key it names.
        key_id: String,
    },
    /// Tree sizes do not increase.
    #[error("checkpoint {tree_size} is out of order")]
    Order {
        /// Which checkpoint.
        tree_size: Seq,
    },
    /// Two exports disagree about the head at the same tree size: history
    /// was rewritten.
    #[error(
        "checkpoint {tree_size}: head hash differs between the two exports; history was rewritten"
    )]
    Rewritten {
        /// Where they disagree.
        tree_size: Seq,
    },
}

impl ExportedCheckpoint {
    /// Decodes into a [`Checkpoint`].
    pub fn decode(&self) -> Result<Checkpoint, ExportError> {
        let bad = |field| ExportError::Malformed {
            tree_size: self.tree_size,
            field,
        };
        let head: ChainHash = hex::decode(&self.head_hash)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("head_hash"))?;
        Ok(Checkpoint {
            tree_size: self.tree_size,
            head_hash: head,
            signed_at: OffsetDateTime::from_unix_timestamp(self.signed_at)
                .map_err(|_| bad("signed_at"))?,
            key_id: self.key_id.clone(),
            signature: Signature::from_hex(&self.signature).map_err(|_| bad("signature"))?,
        })
    }
}

impl From<&Checkpoint> for ExportedCheckpoint {
    fn from(c: &Checkpoint) -> Self {
        Self {
            tree_size: c.tree_size,
            head_hash: hex::encode(c.head_hash),
            signed_at: c.signed_at.unix_timestamp(),
            key_id: c.key_id.clone(),
            signature: c.signature.to_hex(),
        }
    }
}

impl CheckpointExport {
    /// Checks every checkpoint against `trusted` (a public key obtained out of
    /// band, not from the export) and their order; returns how many passed.
    pub fn verify(&self, trusted: &PublicKey) -> Result<usize, ExportError> {
        if self.format != CHECKPOINT_FORMAT {
            return Err(ExportError::Format(self.format.chars().take(64).collect()));
        }
        let mut last = None;
        for exported in &self.checkpoints {
            let c = exported.decode()?;
            if last.is_some_and(|l| c.tree_size <= l) {
                return Err(ExportError::Order {
                    tree_size: c.tree_size,
                });
            }
            if !c.verify_with(trusted) {
                return Err(ExportError::BadSignature {
                    tree_size: c.tree_size,
                    key_id: c.key_id,
                });
            }
            last = Some(c.tree_size);
        }
        Ok(self.checkpoints.len())
    }

    /// Checks that wherever this export and an `older` one both have a
    /// checkpoint for the same tree size, they agree on its head.
    pub fn consistent_with(&self, older: &CheckpointExport) -> Result<(), ExportError> {
        for old in &older.checkpoints {
            if let Some(new) = self
                .checkpoints
                .iter()
                .find(|c| c.tree_size == old.tree_size)
                && new.head_hash != old.head_hash
            {
                return Err(ExportError::Rewritten {
                    tree_size: old.tree_size,
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Order::NewestFirst => "newest_first",
            Order::OldestFirst => "oldest_first",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_crypto::signing::SigningKey;

    #[test]
    fn chain_hashes_bind_position_predecessor_and_body() {
        let h1 = chain_hash(1, &GENESIS, b"a");
        assert_ne!(h1, chain_hash(2, &GENESIS, b"a"), "sequence is bound");
        assert_ne!(h1, chain_hash(1, &[1; 32], b"a"), "predecessor is bound");
        assert_ne!(h1, chain_hash(1, &GENESIS, b"b"), "body is bound");
        // The layout existing logs were written with, byte for byte.
        let mut whole = b"kura-events/v1\0".to_vec();
        whole.extend_from_slice(&1u64.to_be_bytes());
        whole.extend_from_slice(&GENESIS);
        whole.extend_from_slice(b"a");
        assert_eq!(h1, digest::sha256(&whole));
    }

    fn signed(key: &SigningKey, tree_size: Seq, head: ChainHash) -> Checkpoint {
        let key_id = key.public_key().key_id();
        let msg = Checkpoint::signed_message(tree_size, &head, 1_700_000_000, &key_id);
        Checkpoint {
            tree_size,
            head_hash: head,
            signed_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            key_id,
            signature: key.sign(&msg),
        }
    }

    #[test]
    fn exports_verify_with_the_public_key_alone_and_catch_rewrites() {
        let key = SigningKey::generate().unwrap();
        let public = key.public_key();
        let export = |cps: &[Checkpoint]| CheckpointExport {
            format: CHECKPOINT_FORMAT.into(),
            public_keys: vec![ExportedKey {
                key_id: public.key_id(),
                public_key: public.to_hex(),
            }],
            checkpoints: cps.iter().map(ExportedCheckpoint::from).collect(),
        };
        let old = export(&[signed(&key, 10, [1; 32])]);
        let new = export(&[signed(&key, 10, [1; 32]), signed(&key, 20, [2; 32])]);
        let json = serde_json::to_string(&new).unwrap();
        let parsed: CheckpointExport = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed.verify(&public), Ok(2));
        assert_eq!(new.consistent_with(&old), Ok(()));

        let rewritten = export(&[signed(&key, 10, [9; 32])]);
        assert_eq!(
            rewritten.consistent_with(&old),
            Err(ExportError::Rewritten { tree_size: 10 })
        );
        let other = SigningKey::generate().unwrap().public_key();
        assert!(matches!(
            new.verify(&other),
            Err(ExportError::BadSignature { tree_size: 10, .. })
        ));
        let mut forged = new.clone();
        forged.checkpoints[1].head_hash = hex::encode([3u8; 32]);
        assert!(matches!(
            forged.verify(&public),
            Err(ExportError::BadSignature { tree_size: 20, .. })
        ));
        let mut swapped = new;
        swapped.checkpoints.reverse();
        assert_eq!(
            swapped.verify(&public),
            Err(ExportError::Order { tree_size: 10 })
        );
    }
}
