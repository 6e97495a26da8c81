//! [`PasskeyStore`] on the encrypted platform database (tables from
//! platform migration 6).

use async_trait::async_trait;
use kura_types::AccountId;
use rusqlite::{OptionalExtension as _, Row, params};
use time::OffsetDateTime;

use super::identity::{from_ts, opt_ts, parse_id, ts};
use crate::StoreError;
use crate::events::TxEvents;
use crate::passkeys::{CeremonyRecord, PasskeyRecord, PasskeyStore};
use crate::sqlite::SqliteIdentityStore;

pub(super) const PASSKEY_COLUMNS: &str = "id, account_id, credential_id, name, data, counter, backup_eligible, backup_state, created_at, last_used_at";

type RawPasskey = (
    String,
    String,
    String,
    String,
    String,
    i64,
    bool,
    bool,
    i64,
    Option<i64>,
);

fn raw_passkey(r: &Row<'_>) -> rusqlite::Result<RawPasskey> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    ))
}

fn decode_passkey(raw: RawPasskey) -> Result<PasskeyRecord, StoreError> {
    let (id, account, credential_id, name, data, counter, eligible, state, created, used) = raw;
    Ok(PasskeyRecord {
        id,
        account: parse_id(&account, "account")?,
        credential_id,
        name,
        data,
        counter: u32::try_from(counter)
            .map_err(|_| StoreError::Malformed(format!("passkey counter {counter}")))?,
        backup_eligible: eligible,
        backup_state: state,
        created_at: from_ts(created)?,
        last_used_at: opt_ts(used)?,
    })
}

#[async_trait]
impl PasskeyStore for SqliteIdentityStore {
    async fn passkeys_of(&self, account: AccountId) -> Result<Vec<PasskeyRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE account_id = ?1 ORDER BY created_at, id"
                ))?;
                let rows = stmt.query_map([account.to_string()], raw_passkey)?;
                rows.map(|r| decode_passkey(r?)).collect()
            })
            .await
    }

    async fn delete_passkey(
        &self,
        account: AccountId,
        id: &str,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.pool
            .write_described(events, move |tx| {
                let n = tx.execute(
                    "DELETE FROM passkeys WHERE account_id = ?1 AND id = ?2",
                    params![account.to_string(), id],
                )?;
                Ok(n > 0)
            })
            .await
    }

    async fn put_ceremony(
        &self,
        c: CeremonyRecord,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        self.pool
            .write_described(events, move |tx| {
                tx.execute(
                    "DELETE FROM webauthn_ceremonies WHERE expires_at <= ?1",
                    [ts(c.created_at)],
                )?;
                tx.execute(
                    "INSERT INTO webauthn_ceremonies (id, kind, account_id, session_id, state, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        c.id,
                        c.kind,
                        c.account.map(|a| a.to_string()),
                        c.session,
                        c.state,
                        ts(c.created_at),
                        ts(c.expires_at),
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn take_ceremony(
        &self,
        id: &str,
        kind: &str,
        now: OffsetDateTime,
    ) -> Result<Option<CeremonyRecord>, StoreError> {
        let id = id.to_owned();
        let kind = kind.to_owned();
        self.pool
            .write(move |tx| {
                let row: Option<(String, Option<String>, Option<String>, String, i64, i64)> = tx
                    .query_row(
                        "SELECT kind, account_id, session_id, state, created_at, expires_at
                           FROM webauthn_ceremonies WHERE id = ?1",
                        [&id],
                        |r| {
                            Ok((
                                r.get(0)?,
                                r.get(1)?,
                                r.get(2)?,
                                r.get(3)?,
                                r.get(4)?,
                                r.get(5)?,
                            ))
                        },
                    )
                    .optional()?;
                let Some((found_kind, account, session, state, created, expires)) = row else {
                    return Ok(None);
                };
                // A challenge answered under the wrong kind is used up too:
                // it was offered once and is not offered again.
                tx.execute("DELETE FROM webauthn_ceremonies WHERE id = ?1", [&id])?;
                if found_kind != kind || expires <= ts(now) {
                    return Ok(None);
                }
                Ok(Some(CeremonyRecord {
                    id,
                    kind: found_kind,
                    account: account.map(|a| parse_id(&a, "account")).transpose()?,
                    session,
                    state,
                    created_at: from_ts(created)?,
                    expires_at: from_ts(expires)?,
                }))
            })
            .await
    }
}
