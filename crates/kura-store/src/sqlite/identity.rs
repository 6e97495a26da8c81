//! [`IdentityStore`] on the encrypted platform database (tables from
//! migration 3 in `platform.rs`).

use async_trait::async_trait;
use kura_crypto::token::TokenHash;
use kura_types::{AccountId, GroupId, SessionId, TeamId};
use rusqlite::{OptionalExtension as _, Row, Transaction, params};
use time::OffsetDateTime;

use super::Pool;
use crate::StoreError;
use crate::events::TxEvents;
use crate::identity::{
    AccountFacts, AccountRecord, ApiTokenRecord, FirstOperator, FirstOperatorOutcome, GrantSubject,
    GroupRecord, IdentityStore, InvitationRecord, NewAccount, PasswordSet, RoleGrant,
    SessionRecord, SessionRevocation, TeamRecord, ThrottleRecord,
};

/// Kura ID state in the embedded platform database.
#[derive(Debug, Clone)]
pub struct SqliteIdentityStore {
    pub(super) pool: Pool,
}

impl SqliteIdentityStore {
    /// Uses the platform database's pool (see
    /// [`crate::SqlitePlatformStore::pool`]); its migrations created the tables.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

pub(super) fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

pub(super) fn from_ts(secs: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| StoreError::Malformed(e.to_string()))
}

pub(super) fn opt_ts(secs: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    secs.map(from_ts).transpose()
}

pub(super) fn parse_id<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Malformed(format!("bad {what} id `{s}`")))
}

/// Operator roles are stored with team '' so the primary key covers them.
pub(super) fn team_col(team: Option<TeamId>) -> String {
    team.map(|t| t.to_string()).unwrap_or_default()
}

pub(super) fn subject_cols(subject: GrantSubject) -> (&'static str, String) {
    match subject {
        GrantSubject::Account(a) => ("account", a.to_string()),
        GrantSubject::Group(g) => ("group", g.to_string()),
    }
}

pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ConstraintViolation)
    )
}

pub(super) const ACCOUNT_COLUMNS: &str = "id, email, display_name, phone, status, kind, created_at";

pub(super) type RawAccount = (String, String, String, Option<String>, String, String, i64);

pub(super) fn raw_account(r: &Row<'_>) -> rusqlite::Result<RawAccount> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

pub(super) fn decode_account(raw: RawAccount) -> Result<AccountRecord, StoreError> {
    let (id, email, display_name, phone, status, kind, created_at) = raw;
    Ok(AccountRecord {
        id: parse_id(&id, "account")?,
        email,
        display_name,
        phone,
        status,
        kind,
        created_at: from_ts(created_at)?,
    })
}

pub(super) fn insert_account(tx: &Transaction<'_>, new: &NewAccount) -> Result<(), StoreError> {
    let a = &new.account;
    let inserted = tx.execute(
        "INSERT INTO accounts (id, email, display_name, phone, status, kind, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT(email) DO NOTHING",
        params![
            a.id.to_string(),
            a.email,
            a.display_name,
            a.phone,
            a.status,
            a.kind,
            ts(a.created_at)
        ],
    )?;
    if inserted == 0 {
        return Err(StoreError::Conflict("an account with this email".into()));
    }
    if let Some(phc) = &new.password_phc {
        tx.execute(
            "INSERT INTO password_credentials (account_id, phc, changed_at) VALUES (?1, ?2, ?3)",
            params![a.id.to_string(), phc, ts(a.created_at)],
        )?;
    }
    for team in &new.teams {
        tx.execute(
            "INSERT OR IGNORE INTO team_members (team_id, account_id, joined_at) VALUES (?1, ?2, ?3)",
            params![team.to_string(), a.id.to_string(), ts(a.created_at)],
        )?;
    }
    for grant in &new.grants {
        tx.execute(
            "INSERT OR IGNORE INTO role_grants (subject_kind, subject_id, team, role, granted_by, granted_at)
             VALUES ('account', ?1, ?2, ?3, NULL, ?4)",
            params![
                a.id.to_string(),
                team_col(grant.team),
                grant.role,
                ts(a.created_at)
            ],
        )?;
    }
    Ok(())
}

pub(super) fn revoke_sessions(
    tx: &Transaction<'_>,
    account: AccountId,
    except: Option<SessionId>,
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    let n = tx.execute(
        "UPDATE sessions SET revoked_at = ?1
          WHERE account_id = ?2 AND revoked_at IS NULL AND id IS NOT ?3",
        params![ts(now), account.to_string(), except.map(|s| s.to_string())],
    )?;
    // A remembered device would let a new session skip the second factor:
    // whatever ends the account's other sessions forgets those devices too.
    tx.execute(
        "DELETE FROM remembered_devices WHERE account_id = ?1",
        [account.to_string()],
    )?;
    Ok(n as u64)
}

pub(super) const TEAM_COLUMNS: &str = "id, name, mfa_policy, created_at";

pub(super) fn decode_team(r: &Row<'_>) -> rusqlite::Result<(String, String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

pub(super) fn team_record(raw: (String, String, String, i64)) -> Result<TeamRecord, StoreError> {
    Ok(TeamRecord {
        id: parse_id(&raw.0, "team")?,
        name: raw.1,
        mfa_policy: raw.2,
        created_at: from_ts(raw.3)?,
    })
}

pub(super) const GROUP_COLUMNS: &str = "id, team_id, name, created_at";

pub(super) fn group_record(r: &Row<'_>) -> rusqlite::Result<(String, String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

pub(super) fn decode_group(raw: (String, String, String, i64)) -> Result<GroupRecord, StoreError> {
    Ok(GroupRecord {
        id: parse_id(&raw.0, "group")?,
        team: parse_id(&raw.1, "team")?,
        name: raw.2,
        created_at: from_ts(raw.3)?,
    })
}

pub(super) const SESSION_COLUMNS: &str = "id, token_hash, account_id, stage, created_at, last_seen_at, expires_at, mfa_verified_at, revoked_at, source, mfa_method";

pub(super) struct RawSession {
    id: String,
    hash: String,
    account: String,
    stage: String,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
    mfa_verified_at: Option<i64>,
    revoked_at: Option<i64>,
    source: Option<String>,
    mfa_method: Option<String>,
}

pub(super) fn raw_session(r: &Row<'_>) -> rusqlite::Result<RawSession> {
    Ok(RawSession {
        id: r.get(0)?,
        hash: r.get(1)?,
        account: r.get(2)?,
        stage: r.get(3)?,
        created_at: r.get(4)?,
        last_seen_at: r.get(5)?,
        expires_at: r.get(6)?,
        mfa_verified_at: r.get(7)?,
        revoked_at: r.get(8)?,
        source: r.get(9)?,
        mfa_method: r.get(10)?,
    })
}

impl RawSession {
    pub(super) fn decode(self) -> Result<SessionRecord, StoreError> {
        Ok(SessionRecord {
            id: parse_id(&self.id, "session")?,
            token_hash: TokenHash::from_stored(self.hash),
            account: parse_id(&self.account, "account")?,
            stage: self.stage,
            created_at: from_ts(self.created_at)?,
            last_seen_at: from_ts(self.last_seen_at)?,
            expires_at: from_ts(self.expires_at)?,
            mfa_verified_at: opt_ts(self.mfa_verified_at)?,
            revoked_at: opt_ts(self.revoked_at)?,
            source: self.source,
            mfa_method: self.mfa_method,
        })
    }
}

pub(super) const TOKEN_COLUMNS: &str = "id, token_hash, account_id, team_id, kind, role, name, scopes, created_at, expires_at, last_used_at, revoked_at";

pub(super) struct RawToken {
    id: String,
    hash: String,
    account: String,
    team: Option<String>,
    kind: String,
    role: Option<String>,
    name: String,
    scopes: String,
    created_at: i64,
    expires_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

pub(super) fn raw_token(r: &Row<'_>) -> rusqlite::Result<RawToken> {
    Ok(RawToken {
        id: r.get(0)?,
        hash: r.get(1)?,
        account: r.get(2)?,
        team: r.get(3)?,
        kind: r.get(4)?,
        role: r.get(5)?,
        name: r.get(6)?,
        scopes: r.get(7)?,
        created_at: r.get(8)?,
        expires_at: r.get(9)?,
        last_used_at: r.get(10)?,
        revoked_at: r.get(11)?,
    })
}

impl RawToken {
    pub(super) fn decode(self) -> Result<ApiTokenRecord, StoreError> {
        Ok(ApiTokenRecord {
            id: parse_id(&self.id, "API token")?,
            token_hash: TokenHash::from_stored(self.hash),
            account: parse_id(&self.account, "account")?,
            team: self
                .team
                .as_deref()
                .map(|t| parse_id(t, "team"))
                .transpose()?,
            kind: self.kind,
            role: self.role,
            name: self.name,
            scopes: self.scopes.split_whitespace().map(str::to_owned).collect(),
            created_at: from_ts(self.created_at)?,
            expires_at: from_ts(self.expires_at)?,
            last_used_at: opt_ts(self.last_used_at)?,
            revoked_at: opt_ts(self.revoked_at)?,
        })
    }
}

pub(super) const INVITATION_COLUMNS: &str = "id, token_hash, team_id, email, role, invited_by, created_at, expires_at, accepted_at, revoked_at";

pub(super) type RawInvitation = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);

pub(super) fn raw_invitation(r: &Row<'_>) -> rusqlite::Result<RawInvitation> {
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

pub(super) fn decode_invitation(raw: RawInvitation) -> Result<InvitationRecord, StoreError> {
    Ok(InvitationRecord {
        id: parse_id(&raw.0, "invitation")?,
        token_hash: TokenHash::from_stored(raw.1),
        team: parse_id(&raw.2, "team")?,
        email: raw.3,
        role: raw.4,
        invited_by: parse_id(&raw.5, "account")?,
        created_at: from_ts(raw.6)?,
        expires_at: from_ts(raw.7)?,
        accepted_at: opt_ts(raw.8)?,
        revoked_at: opt_ts(raw.9)?,
    })
}

pub(super) fn read_throttle(
    c: &rusqlite::Connection,
    key: &str,
) -> Result<Option<ThrottleRecord>, StoreError> {
    c.query_row(
        "SELECT key, failures, first_failure_at, last_failure_at, locked_until
           FROM throttle_counters WHERE key = ?1",
        [key],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        },
    )
    .optional()?
    .map(|(key, failures, first, last, locked)| {
        Ok(ThrottleRecord {
            key,
            failures,
            first_failure_at: from_ts(first)?,
            last_failure_at: from_ts(last)?,
            locked_until: opt_ts(locked)?,
        })
    })
    .transpose()
}

#[async_trait]
impl IdentityStore for SqliteIdentityStore {
    async fn create_account(
        &self,
        new: NewAccount,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        self.pool
            .write_described(events, move |tx| insert_account(tx, &new))
            .await
    }

    async fn create_first_operator(
        &self,
        first: FirstOperator,
        events: TxEvents<FirstOperatorOutcome>,
    ) -> Result<FirstOperatorOutcome, StoreError> {
        self.pool
            .write_described(events, move |tx| {
                super::setup::create_first_operator(tx, &first)
            })
            .await
    }

    async fn account(&self, id: AccountId) -> Result<Option<AccountRecord>, StoreError> {
        self.pool
            .read(move |c| super::principal::account(c, id))
            .await
    }

    async fn account_by_email(&self, email: &str) -> Result<Option<AccountRecord>, StoreError> {
        let email = email.to_owned();
        self.pool
            .read(move |c| {
                c.query_row(
                    &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = ?1"),
                    [email],
                    raw_account,
                )
                .optional()?
                .map(decode_account)
                .transpose()
            })
            .await
    }

    async fn update_profile(
        &self,
        id: AccountId,
        display_name: &str,
        phone: Option<&str>,
        now: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        let (name, phone) = (display_name.to_owned(), phone.map(str::to_owned));
        self.pool
            .write_described(events, move |tx| {
                let n = tx.execute(
                    "UPDATE accounts SET display_name = ?1, phone = ?2, updated_at = ?3 WHERE id = ?4",
                    params![name, phone, ts(now), id.to_string()],
                )?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("account {id}")));
                }
                Ok(())
            })
            .await
    }

    async fn count_accounts(&self, kind: &str) -> Result<u64, StoreError> {
        let kind = kind.to_owned();
        self.pool
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM accounts WHERE kind = ?1",
                    [kind],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| u64::try_from(n).unwrap_or(0))?)
            })
            .await
    }

    async fn set_account_status(
        &self,
        id: AccountId,
        status: &str,
        revoke_sessions_too: bool,
        now: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        let status = status.to_owned();
        self.pool
            .write_described(events, move |tx| {
                let n = tx.execute(
                    "UPDATE accounts SET status = ?1, updated_at = ?2 WHERE id = ?3",
                    params![status, ts(now), id.to_string()],
                )?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("account {id}")));
                }
                if revoke_sessions_too {
                    revoke_sessions(tx, id, None, now)?;
                    tx.execute(
                        "UPDATE api_tokens SET revoked_at = ?1 WHERE account_id = ?2 AND revoked_at IS NULL",
                        params![ts(now), id.to_string()],
                    )?;
                }
                Ok(())
            })
            .await
    }

    async fn password_hash(&self, id: AccountId) -> Result<Option<String>, StoreError> {
        self.pool
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT phc FROM password_credentials WHERE account_id = ?1",
                    [id.to_string()],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await
    }

    async fn set_password(
        &self,
        id: AccountId,
        phc: &str,
        revoke: SessionRevocation,
        now: OffsetDateTime,
        events: TxEvents<PasswordSet>,
    ) -> Result<PasswordSet, StoreError> {
        let phc = phc.to_owned();
        self.pool
            .write_described(events, move |tx| {
                tx.execute(
                    "INSERT INTO password_credentials (account_id, phc, changed_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(account_id) DO UPDATE SET phc = excluded.phc, changed_at = excluded.changed_at",
                    params![id.to_string(), phc, ts(now)],
                )?;
                let sessions_revoked = match revoke {
                    SessionRevocation::None => return Ok(PasswordSet::default()),
                    SessionRevocation::All => revoke_sessions(tx, id, None, now)?,
                    SessionRevocation::AllExcept(keep) => {
                        revoke_sessions(tx, id, Some(keep), now)?
                    }
                };
                let tokens_revoked = tx.execute(
                    "UPDATE api_tokens SET revoked_at = ?1
                      WHERE account_id = ?2 AND kind = 'personal' AND revoked_at IS NULL",
                    params![ts(now), id.to_string()],
                )? as u64;
                Ok(PasswordSet {
                    sessions_revoked,
                    tokens_revoked,
                })
            })
            .await
    }

    async fn rehash_password(
        &self,
        id: AccountId,
        expected: &str,
        phc: &str,
        now: OffsetDateTime,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError> {
        let (expected, phc) = (expected.to_owned(), phc.to_owned());
        self.pool
            .write_described(events, move |tx| {
                let n = tx.execute(
                    "UPDATE password_credentials SET phc = ?1, changed_at = ?2
                      WHERE account_id = ?3 AND phc = ?4",
                    params![phc, ts(now), id.to_string(), expected],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn grants_of(&self, id: AccountId) -> Result<Vec<RoleGrant>, StoreError> {
        self.pool
            .read(move |c| super::principal::grants_of(c, id))
            .await
    }

    async fn session_facts(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<(SessionRecord, AccountFacts)>, StoreError> {
        super::principal::session_facts(&self.pool, hash, now).await
    }

    async fn account_facts(
        &self,
        id: AccountId,
        now: OffsetDateTime,
    ) -> Result<AccountFacts, StoreError> {
        super::principal::account_facts_of(&self.pool, id, now).await
    }

    async fn api_token_facts(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<(ApiTokenRecord, AccountFacts)>, StoreError> {
        super::principal::api_token_facts(&self.pool, hash, now).await
    }

    async fn grants_of_group(&self, group: GroupId) -> Result<Vec<RoleGrant>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(
                    "SELECT team, role FROM role_grants
                      WHERE subject_kind = 'group' AND subject_id = ?1 ORDER BY team, role",
                )?;
                let rows = stmt.query_map([group.to_string()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (team, role) = row?;
                    out.push(RoleGrant {
                        team: if team.is_empty() {
                            None
                        } else {
                            Some(parse_id(&team, "team")?)
                        },
                        role,
                        via_group: Some(group),
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn grant_role(
        &self,
        subject: GrantSubject,
        team: Option<TeamId>,
        role: &str,
        granted_by: Option<AccountId>,
        now: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        let role = role.to_owned();
        let (kind, id) = subject_cols(subject);
        self.pool
            .write_described(events, move |tx| {
                tx.execute(
                    "INSERT OR IGNORE INTO role_grants (subject_kind, subject_id, team, role, granted_by, granted_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        kind,
                        id,
                        team_col(team),
                        role,
                        granted_by.map(|a| a.to_string()),
                        ts(now)
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn revoke_role(
        &self,
        subject: GrantSubject,
        team: Option<TeamId>,
        role: &str,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError> {
        let role = role.to_owned();
        let (kind, id) = subject_cols(subject);
        self.pool
            .write_described(events, move |tx| {
                let n = tx.execute(
                    "DELETE FROM role_grants WHERE subject_kind = ?1 AND subject_id = ?2 AND team = ?3 AND role = ?4",
                    params![kind, id, team_col(team), role],
                )?;
                Ok(n == 1)
            })
            .await
    }
}

pub(super) fn insert_session_row(
    tx: &Transaction<'_>,
    s: &SessionRecord,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO sessions (id, token_hash, account_id, stage, created_at, last_seen_at, expires_at, mfa_verified_at, revoked_at, source, mfa_method)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            s.id.to_string(),
            s.token_hash.as_str(),
            s.account.to_string(),
            s.stage,
            ts(s.created_at),
            ts(s.last_seen_at),
            ts(s.expires_at),
            s.mfa_verified_at.map(ts),
            s.revoked_at.map(ts),
            s.source,
            s.mfa_method
        ],
    )?;
    Ok(())
}

pub(super) fn insert_invitation(
    tx: &Transaction<'_>,
    inv: &InvitationRecord,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO invitations (id, token_hash, team_id, email, role, invited_by, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            inv.id.to_string(),
            inv.token_hash.as_str(),
            inv.team.to_string(),
            inv.email,
            inv.role,
            inv.invited_by.to_string(),
            ts(inv.created_at),
            ts(inv.expires_at)
        ],
    )?;
    Ok(())
}

pub(super) fn replace_codes(
    tx: &Transaction<'_>,
    account: AccountId,
    hashes: &[String],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM recovery_codes WHERE account_id = ?1",
        [account.to_string()],
    )?;
    for h in hashes {
        tx.execute(
            "INSERT INTO recovery_codes (account_id, code_hash, created_at) VALUES (?1, ?2, ?3)",
            params![account.to_string(), h, ts(now)],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
