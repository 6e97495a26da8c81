//! [`CredentialStore`] on the encrypted platform database: sessions, TOTP
//! and recovery codes, API tokens and throttle counters (tables from
//! platform migration 3).

use async_trait::async_trait;
use kura_crypto::token::TokenHash;
use kura_types::{AccountId, ApiTokenId, SessionId};
use rusqlite::{OptionalExtension as _, params};
use time::OffsetDateTime;

use super::identity::*;
use super::verification;
use crate::StoreError;
use crate::credentials::{CredentialStore, FactorOutcome, FactorStep};
use crate::events::TxEvents;
use crate::identity::{ApiTokenRecord, MfaReset, SessionRecord, ThrottleRecord, TotpRecord};
use crate::sqlite::SqliteIdentityStore;

#[async_trait]
impl CredentialStore for SqliteIdentityStore {
    async fn insert_session(
        &self,
        s: SessionRecord,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        self.pool
            .write_described(events, move |tx| insert_session_row(tx, &s))
            .await
    }

    async fn session_by_hash(&self, hash: &TokenHash) -> Result<Option<SessionRecord>, StoreError> {
        let hash = hash.as_str().to_owned();
        self.pool
            .read(move |c| super::principal::session_by_hash(c, &hash))
            .await
    }

    async fn remember_device(
        &self,
        account: AccountId,
        hash: &TokenHash,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        let hash = hash.as_str().to_owned();
        self.pool
            .write_described(events, move |tx| {
                tx.execute(
                    "INSERT INTO remembered_devices (token_hash, account_id, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![hash, account.to_string(), ts(now), ts(expires_at)],
                )?;
                Ok(())
            })
            .await
    }

    async fn touch_session(&self, id: SessionId, now: OffsetDateTime) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                tx.execute(
                    "UPDATE sessions SET last_seen_at = max(last_seen_at, ?1) WHERE id = ?2",
                    params![ts(now), id.to_string()],
                )?;
                Ok(())
            })
            .await
    }

    async fn rotate_session(
        &self,
        old: SessionId,
        new: SessionRecord,
        now: OffsetDateTime,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError> {
        self.pool
            .write_described(events, move |tx| {
                verification::rotate_session(tx, old, &new, now)
            })
            .await
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        now: OffsetDateTime,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError> {
        self.pool
            .write_described(events, move |tx| {
                let n = tx.execute(
                    "UPDATE sessions SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                    params![ts(now), id.to_string()],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn revoke_sessions_of(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        now: OffsetDateTime,
        events: TxEvents<u64>,
    ) -> Result<u64, StoreError> {
        self.pool
            .write_described(events, move |tx| revoke_sessions(tx, account, except, now))
            .await
    }

    async fn sessions_of(&self, account: AccountId) -> Result<Vec<SessionRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions
                      WHERE account_id = ?1 AND revoked_at IS NULL ORDER BY created_at, id"
                ))?;
                let rows = stmt.query_map([account.to_string()], raw_session)?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(row?.decode()?);
                }
                Ok(out)
            })
            .await
    }

    async fn totp(
        &self,
        account: AccountId,
        confirmed: bool,
    ) -> Result<Option<TotpRecord>, StoreError> {
        self.pool
            .read(move |c| {
                c.query_row(
                    "SELECT secret, confirmed_at, last_used_step, created_at FROM totp_credentials
                      WHERE account_id = ?1 AND (confirmed_at IS NOT NULL) = ?2",
                    params![account.to_string(), confirmed],
                    |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, Option<i64>>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    },
                )
                .optional()?
                .map(|(secret, confirmed, step, created)| {
                    Ok(TotpRecord {
                        account,
                        secret,
                        confirmed_at: opt_ts(confirmed)?,
                        last_used_step: step,
                        created_at: from_ts(created)?,
                    })
                })
                .transpose()
            })
            .await
    }

    async fn put_pending_totp(
        &self,
        account: AccountId,
        secret: &[u8],
        now: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        let secret = secret.to_vec();
        self.pool
            .write_described(events, move |tx| {
                tx.execute(
                    "DELETE FROM totp_credentials WHERE account_id = ?1 AND confirmed_at IS NULL",
                    [account.to_string()],
                )?;
                tx.execute(
                    "INSERT INTO totp_credentials (account_id, secret, created_at) VALUES (?1, ?2, ?3)",
                    params![account.to_string(), secret, ts(now)],
                )?;
                Ok(())
            })
            .await
    }

    async fn complete_factor(
        &self,
        step: FactorStep,
        events: TxEvents<FactorOutcome>,
    ) -> Result<FactorOutcome, StoreError> {
        self.pool
            .write_described(events, move |tx| verification::complete_factor(tx, step))
            .await
    }

    async fn reset_mfa(
        &self,
        account: AccountId,
        now: OffsetDateTime,
        events: TxEvents<MfaReset>,
    ) -> Result<MfaReset, StoreError> {
        self.pool
            .write_described(events, move |tx| {
                let id = account.to_string();
                let totp =
                    tx.execute("DELETE FROM totp_credentials WHERE account_id = ?1", [&id])?;
                tx.execute("DELETE FROM recovery_codes WHERE account_id = ?1", [&id])?;
                let passkeys = tx.execute("DELETE FROM passkeys WHERE account_id = ?1", [&id])?;
                let mut reset = MfaReset {
                    totp_removed: totp > 0,
                    passkeys_removed: passkeys as u64,
                    sessions_revoked: 0,
                };
                if reset.removed_any() {
                    reset.sessions_revoked = revoke_sessions(tx, account, None, now)?;
                }
                Ok(reset)
            })
            .await
    }

    async fn replace_recovery_codes(
        &self,
        account: AccountId,
        hashes: &[TokenHash],
        now: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        let hashes: Vec<String> = hashes.iter().map(|h| h.as_str().to_owned()).collect();
        self.pool
            .write_described(events, move |tx| replace_codes(tx, account, &hashes, now))
            .await
    }

    async fn recovery_codes_left(&self, account: AccountId) -> Result<u64, StoreError> {
        self.pool
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM recovery_codes WHERE account_id = ?1 AND used_at IS NULL",
                    [account.to_string()],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| u64::try_from(n).unwrap_or(0))?)
            })
            .await
    }

    async fn insert_api_token(
        &self,
        t: ApiTokenRecord,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        self.pool
            .write_described(events, move |tx| {
                tx.execute(
                    "INSERT INTO api_tokens (id, token_hash, account_id, team_id, kind, role, name, scopes, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        t.id.to_string(),
                        t.token_hash.as_str(),
                        t.account.to_string(),
                        t.team.map(|x| x.to_string()),
                        t.kind,
                        t.role,
                        t.name,
                        t.scopes.join(" "),
                        ts(t.created_at),
                        ts(t.expires_at)
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn api_token_by_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<ApiTokenRecord>, StoreError> {
        let hash = hash.as_str().to_owned();
        self.pool
            .read(move |c| super::principal::api_token_by_hash(c, &hash))
            .await
    }

    async fn api_token(&self, id: ApiTokenId) -> Result<Option<ApiTokenRecord>, StoreError> {
        self.pool
            .read(move |c| {
                c.query_row(
                    &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"),
                    [id.to_string()],
                    raw_token,
                )
                .optional()?
                .map(RawToken::decode)
                .transpose()
            })
            .await
    }

    async fn touch_api_token(&self, id: ApiTokenId, now: OffsetDateTime) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                tx.execute(
                    "UPDATE api_tokens SET last_used_at = ?1 WHERE id = ?2",
                    params![ts(now), id.to_string()],
                )?;
                Ok(())
            })
            .await
    }

    async fn revoke_api_token(
        &self,
        id: ApiTokenId,
        now: OffsetDateTime,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError> {
        self.pool
            .write_described(events, move |tx| {
                let n = tx.execute(
                    "UPDATE api_tokens SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                    params![ts(now), id.to_string()],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn api_tokens_of(&self, account: AccountId) -> Result<Vec<ApiTokenRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE account_id = ?1 ORDER BY created_at, id"
                ))?;
                let rows = stmt.query_map([account.to_string()], raw_token)?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(row?.decode()?);
                }
                Ok(out)
            })
            .await
    }

    async fn throttle(&self, key: &str) -> Result<Option<ThrottleRecord>, StoreError> {
        let key = key.to_owned();
        self.pool.read(move |c| read_throttle(c, &key)).await
    }

    async fn throttle_failure(
        &self,
        key: &str,
        now: OffsetDateTime,
        window_start: OffsetDateTime,
    ) -> Result<ThrottleRecord, StoreError> {
        let key = key.to_owned();
        self.pool
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO throttle_counters (key, failures, first_failure_at, last_failure_at)
                     VALUES (?1, 1, ?2, ?2)
                     ON CONFLICT(key) DO UPDATE SET
                        failures = CASE WHEN last_failure_at < ?3 THEN 1 ELSE failures + 1 END,
                        first_failure_at = CASE WHEN last_failure_at < ?3 THEN ?2 ELSE first_failure_at END,
                        last_failure_at = ?2",
                    params![key, ts(now), ts(window_start)],
                )?;
                read_throttle(tx, &key)?
                    .ok_or_else(|| StoreError::NotFound(format!("throttle counter {key}")))
            })
            .await
    }

    async fn throttle_lock(
        &self,
        key: &str,
        until: Option<OffsetDateTime>,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.pool
            .write_described(events, move |tx| {
                tx.execute(
                    "UPDATE throttle_counters SET locked_until = ?1 WHERE key = ?2",
                    params![until.map(ts), key],
                )?;
                Ok(())
            })
            .await
    }

    async fn throttle_clear(&self, key: &str, events: TxEvents<()>) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.pool
            .write_described(events, move |tx| verification::clear_throttle_key(tx, &key))
            .await
    }
}
