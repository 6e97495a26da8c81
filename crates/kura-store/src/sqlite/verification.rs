//! The writes a verified factor makes, as functions of an open
//! transaction: each is one small statement (or two), composed by
//! [`complete_factor`] into one transaction. Session rotation and the
//! throttle reset also serve their single-purpose
//! [`CredentialStore`](crate::CredentialStore) methods. A factor's proof is
//! used up only here, so it never commits apart from its session change
//! and events.

use kura_crypto::token::TokenHash;
use kura_types::{AccountId, SessionId};
use rusqlite::{OptionalExtension as _, Transaction, params};
use time::OffsetDateTime;

use super::identity::{insert_session_row, is_unique_violation, replace_codes, ts};
use crate::StoreError;
use crate::credentials::{FactorOutcome, FactorProof, FactorStep, SessionChange};
use crate::identity::SessionRecord;
use crate::passkeys::{PasskeyRecord, PasskeyUse};

/// Checks the session is live, uses up the proof, changes the session and
/// forgets the throttle counter, in `tx`. Every refusal comes before the
/// first write, so a refused step leaves the transaction empty.
pub(super) fn complete_factor(
    tx: &Transaction<'_>,
    step: FactorStep,
) -> Result<FactorOutcome, StoreError> {
    let FactorStep {
        account,
        proof,
        session,
        clear_throttle,
        now,
    } = step;
    let live = match &session {
        SessionChange::None | SessionChange::Insert(_) => true,
        SessionChange::Mark { id, .. } => session_live(tx, *id)?,
        SessionChange::Rotate { old, .. } => session_live(tx, *old)?,
    };
    if !live {
        return Ok(FactorOutcome::SessionGone);
    }
    let mut recovery_codes_left = None;
    let accepted = match proof {
        FactorProof::Password => true,
        FactorProof::TotpStep(s) => advance_totp_step(tx, account, s)?,
        FactorProof::TotpEnrolment {
            step,
            recovery_hashes,
        } => confirm_pending_totp(tx, account, step, &hashes(&recovery_hashes), now)?,
        FactorProof::RecoveryCode(hash) => {
            recovery_codes_left = use_recovery_code(tx, account, &hash, now)?;
            recovery_codes_left.is_some()
        }
        FactorProof::PasskeyUse {
            credential_id,
            change,
        } => record_passkey_use(tx, account, &credential_id, &change)?,
        FactorProof::NewPasskey {
            passkey,
            recovery_hashes,
        } => {
            if passkey.account != account {
                return Err(StoreError::Malformed(
                    "a new passkey of another account".into(),
                ));
            }
            insert_passkey(tx, &passkey)?;
            if let Some(h) = recovery_hashes {
                replace_codes(tx, account, &hashes(&h), now)?;
            }
            true
        }
        FactorProof::RememberedDevice(hash) => use_remembered_device(tx, account, &hash, now)?,
    };
    if !accepted {
        return Ok(FactorOutcome::Refused);
    }
    match session {
        SessionChange::None => {}
        SessionChange::Insert(s) => insert_session_row(tx, &s)?,
        SessionChange::Mark { id, stage, method } => {
            mark_session(tx, id, &stage, &method, now)?;
        }
        SessionChange::Rotate { old, new } => {
            rotate_session(tx, old, &new, now)?;
        }
    }
    if let Some(key) = clear_throttle {
        clear_throttle_key(tx, &key)?;
    }
    Ok(FactorOutcome::Done {
        recovery_codes_left,
    })
}

fn hashes(h: &[TokenHash]) -> Vec<String> {
    h.iter().map(|h| h.as_str().to_owned()).collect()
}

fn session_live(tx: &Transaction<'_>, id: SessionId) -> Result<bool, StoreError> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM sessions WHERE id = ?1 AND revoked_at IS NULL",
            [id.to_string()],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Records a verification in a live session; false if it is not live.
fn mark_session(
    tx: &Transaction<'_>,
    id: SessionId,
    stage: &str,
    method: &str,
    verified_at: OffsetDateTime,
) -> Result<bool, StoreError> {
    let n = tx.execute(
        "UPDATE sessions SET stage = ?1, mfa_method = ?2, mfa_verified_at = ?3,
                last_seen_at = max(last_seen_at, ?3)
          WHERE id = ?4 AND revoked_at IS NULL",
        params![stage, method, ts(verified_at), id.to_string()],
    )?;
    Ok(n == 1)
}

/// Revokes `old` and inserts `new`; false, writing nothing, if `old` is
/// not live.
pub(super) fn rotate_session(
    tx: &Transaction<'_>,
    old: SessionId,
    new: &SessionRecord,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let n = tx.execute(
        "UPDATE sessions SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
        params![ts(now), old.to_string()],
    )?;
    if n != 1 {
        return Ok(false);
    }
    insert_session_row(tx, new)?;
    Ok(true)
}

/// The compare-and-swap of the last accepted TOTP step.
fn advance_totp_step(
    tx: &Transaction<'_>,
    account: AccountId,
    step: i64,
) -> Result<bool, StoreError> {
    let n = tx.execute(
        "UPDATE totp_credentials SET last_used_step = ?1
          WHERE account_id = ?2 AND confirmed_at IS NOT NULL
            AND (last_used_step IS NULL OR last_used_step < ?1)",
        params![step, account.to_string()],
    )?;
    Ok(n == 1)
}

/// Confirms the pending TOTP secret at `step` (replacing a confirmed one)
/// and replaces the recovery codes; false, writing nothing, if nothing is
/// pending.
fn confirm_pending_totp(
    tx: &Transaction<'_>,
    account: AccountId,
    step: i64,
    recovery_hashes: &[String],
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let pending: i64 = tx.query_row(
        "SELECT count(*) FROM totp_credentials WHERE account_id = ?1 AND confirmed_at IS NULL",
        [account.to_string()],
        |r| r.get(0),
    )?;
    if pending == 0 {
        return Ok(false);
    }
    tx.execute(
        "DELETE FROM totp_credentials WHERE account_id = ?1 AND confirmed_at IS NOT NULL",
        [account.to_string()],
    )?;
    tx.execute(
        "UPDATE totp_credentials SET confirmed_at = ?1, last_used_step = ?2
          WHERE account_id = ?3 AND confirmed_at IS NULL",
        params![ts(now), step, account.to_string()],
    )?;
    replace_codes(tx, account, recovery_hashes, now)?;
    Ok(true)
}

/// Uses up a recovery code; the unused codes left, or `None` (writing
/// nothing) if it is unknown or used.
fn use_recovery_code(
    tx: &Transaction<'_>,
    account: AccountId,
    hash: &TokenHash,
    now: OffsetDateTime,
) -> Result<Option<u64>, StoreError> {
    let n = tx.execute(
        "UPDATE recovery_codes SET used_at = ?1
          WHERE account_id = ?2 AND code_hash = ?3 AND used_at IS NULL",
        params![ts(now), account.to_string(), hash.as_str()],
    )?;
    if n != 1 {
        return Ok(None);
    }
    let left: i64 = tx.query_row(
        "SELECT count(*) FROM recovery_codes WHERE account_id = ?1 AND used_at IS NULL",
        [account.to_string()],
        |r| r.get(0),
    )?;
    Ok(Some(u64::try_from(left).unwrap_or(0)))
}

/// Records an assertion on one of the account's passkeys; false if it is
/// gone.
fn record_passkey_use(
    tx: &Transaction<'_>,
    account: AccountId,
    credential_id: &str,
    change: &PasskeyUse,
) -> Result<bool, StoreError> {
    let n = tx.execute(
        "UPDATE passkeys SET data = ?1, counter = ?2, backup_state = ?3, last_used_at = ?4
          WHERE account_id = ?5 AND credential_id = ?6",
        params![
            change.data,
            i64::from(change.counter),
            change.backup_state,
            ts(change.at),
            account.to_string(),
            credential_id,
        ],
    )?;
    Ok(n > 0)
}

/// Inserts a passkey; a credential id already registered is a conflict.
fn insert_passkey(tx: &Transaction<'_>, p: &PasskeyRecord) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "INSERT INTO passkeys ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            super::passkeys::PASSKEY_COLUMNS
        ),
        params![
            p.id,
            p.account.to_string(),
            p.credential_id,
            p.name,
            p.data,
            i64::from(p.counter),
            p.backup_eligible,
            p.backup_state,
            ts(p.created_at),
            p.last_used_at.map(ts),
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict("a passkey with this credential id".into())
        } else {
            e.into()
        }
    })?;
    Ok(())
}

/// Records the use of a device remembered for `account` that has not
/// expired; false if there is none.
fn use_remembered_device(
    tx: &Transaction<'_>,
    account: AccountId,
    hash: &TokenHash,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let n = tx.execute(
        "UPDATE remembered_devices SET last_used_at = ?1
          WHERE token_hash = ?2 AND account_id = ?3 AND expires_at > ?1",
        params![ts(now), hash.as_str(), account.to_string()],
    )?;
    Ok(n == 1)
}

/// Forgets a key's failures.
pub(super) fn clear_throttle_key(tx: &Transaction<'_>, key: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM throttle_counters WHERE key = ?1", [key])?;
    Ok(())
}

#[cfg(test)]
mod tests;
