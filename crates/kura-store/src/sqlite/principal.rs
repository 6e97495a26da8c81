//! The one read authentication makes: a session or API token with
//! everything about its account that the policy needs, in one read
//! transaction on one reader connection.

use std::collections::BTreeMap;

use kura_crypto::token::TokenHash;
use kura_types::{AccountId, GroupId};
use rusqlite::{Connection, OptionalExtension as _, params};
use time::OffsetDateTime;

use super::identity::{
    ACCOUNT_COLUMNS, RawSession, SESSION_COLUMNS, TOKEN_COLUMNS, decode_account, parse_id,
    raw_account, raw_session, raw_token, ts,
};
use super::{Pool, access};
use crate::StoreError;
use crate::identity::{AccountFacts, AccountRecord, ApiTokenRecord, RoleGrant, SessionRecord};

/// Runs `f` on one reader connection inside one read transaction, so every
/// statement sees the same snapshot.
async fn in_snapshot<T, F>(pool: &Pool, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    // A few rows by key, on every authenticated request: no hand-off to a
    // blocking thread when a reader is free.
    pool.read_quick(move |c| super::in_snapshot(c, f)).await
}

pub(super) async fn session_facts(
    pool: &Pool,
    hash: &TokenHash,
    now: OffsetDateTime,
) -> Result<Option<(SessionRecord, AccountFacts)>, StoreError> {
    let hash = hash.as_str().to_owned();
    in_snapshot(pool, move |c| {
        let Some(session) = session_by_hash(c, &hash)? else {
            return Ok(None);
        };
        let facts = account_facts(c, session.account, now)?;
        Ok(Some((session, facts)))
    })
    .await
}

pub(super) async fn api_token_facts(
    pool: &Pool,
    hash: &TokenHash,
    now: OffsetDateTime,
) -> Result<Option<(ApiTokenRecord, AccountFacts)>, StoreError> {
    let hash = hash.as_str().to_owned();
    in_snapshot(pool, move |c| {
        let Some(token) = api_token_by_hash(c, &hash)? else {
            return Ok(None);
        };
        let facts = account_facts(c, token.account, now)?;
        Ok(Some((token, facts)))
    })
    .await
}

pub(super) async fn account_facts_of(
    pool: &Pool,
    id: AccountId,
    now: OffsetDateTime,
) -> Result<AccountFacts, StoreError> {
    in_snapshot(pool, move |c| account_facts(c, id, now)).await
}

fn account_facts(
    c: &Connection,
    id: AccountId,
    now: OffsetDateTime,
) -> Result<AccountFacts, StoreError> {
    let Some(account) = account(c, id)? else {
        return Ok(AccountFacts::default());
    };
    let grants = grants_of(c, id)?;
    let operator_access = active_operator_access(c, id, now)?;
    let mut team_mfa_policies = BTreeMap::new();
    let teams = grants
        .iter()
        .filter_map(|g| g.team)
        .chain(operator_access.iter().map(|g| g.team));
    let mut stmt = c.prepare_cached("SELECT mfa_policy FROM teams WHERE id = ?1")?;
    for team in teams {
        if team_mfa_policies.contains_key(&team) {
            continue;
        }
        let policy: Option<String> = stmt
            .query_row([team.to_string()], |r| r.get(0))
            .optional()?;
        if let Some(policy) = policy {
            team_mfa_policies.insert(team, policy);
        }
    }
    let id_text = id.to_string();
    let totp_confirmed = c
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM totp_credentials
                             WHERE account_id = ?1 AND confirmed_at IS NOT NULL)",
        )?
        .query_row([&id_text], |r| r.get(0))?;
    let has_passkey = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM passkeys WHERE account_id = ?1)")?
        .query_row([&id_text], |r| r.get(0))?;
    Ok(AccountFacts {
        account: Some(account),
        grants,
        operator_access,
        groups: groups_of(c, id)?,
        team_mfa_policies,
        totp_confirmed,
        has_passkey,
    })
}

pub(super) fn session_by_hash(
    c: &Connection,
    hash: &str,
) -> Result<Option<SessionRecord>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE token_hash = ?1"
    ))?
    .query_row([hash], raw_session)
    .optional()?
    .map(RawSession::decode)
    .transpose()
}

pub(super) fn api_token_by_hash(
    c: &Connection,
    hash: &str,
) -> Result<Option<ApiTokenRecord>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?1"
    ))?
    .query_row([hash], raw_token)
    .optional()?
    .map(super::identity::RawToken::decode)
    .transpose()
}

pub(super) fn account(c: &Connection, id: AccountId) -> Result<Option<AccountRecord>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"
    ))?
    .query_row([id.to_string()], raw_account)
    .optional()?
    .map(decode_account)
    .transpose()
}

/// An account's role grants, direct and through its groups.
const GRANTS_OF: &str = "SELECT team, role, NULL FROM role_grants
      WHERE subject_kind = 'account' AND subject_id = ?1
     UNION ALL
     SELECT rg.team, rg.role, gm.group_id
       FROM group_members gm
       JOIN role_grants rg ON rg.subject_kind = 'group' AND rg.subject_id = gm.group_id
      WHERE gm.account_id = ?1";

/// An account's groups.
const GROUPS_OF: &str =
    "SELECT group_id FROM group_members WHERE account_id = ?1 ORDER BY group_id";

pub(super) fn grants_of(c: &Connection, id: AccountId) -> Result<Vec<RoleGrant>, StoreError> {
    let mut stmt = c.prepare_cached(GRANTS_OF)?;
    let rows = stmt.query_map([id.to_string()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (team, role, group) = row?;
        out.push(RoleGrant {
            team: if team.is_empty() {
                None
            } else {
                Some(parse_id(&team, "team")?)
            },
            role,
            via_group: group.as_deref().map(|g| parse_id(g, "group")).transpose()?,
        });
    }
    Ok(out)
}

pub(super) fn active_operator_access(
    c: &Connection,
    operator: AccountId,
    now: OffsetDateTime,
) -> Result<Vec<crate::OperatorAccessRecord>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {} FROM team_operator_access
          WHERE operator_id = ?1 AND revoked_at IS NULL AND expires_at > ?2",
        access::COLUMNS
    ))?;
    let rows = stmt.query_map(params![operator.to_string(), ts(now)], access::raw)?;
    rows.map(|r| access::decode(r?)).collect()
}

pub(super) fn groups_of(c: &Connection, account: AccountId) -> Result<Vec<GroupId>, StoreError> {
    let mut stmt = c.prepare_cached(GROUPS_OF)?;
    let rows = stmt.query_map([account.to_string()], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(parse_id(&row?, "group")?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::{Durability, SqlitePlatformStore};
    use kura_crypto::DataKey;

    /// The facts every authenticated request reads run from cached
    /// statements that are never parsed again: with a new account id bound
    /// each time, none of them is re-prepared (SQLite would, for statements
    /// like the grants union, unless the planner's stability guarantee is
    /// on).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_facts_statements_are_prepared_once() {
        let dir = tempfile::tempdir().unwrap();
        let platform = SqlitePlatformStore::open(
            &dir.path().join("platform.db"),
            &DataKey::from_bytes([9; 32]),
            true,
            Durability::Full,
            1,
        )
        .unwrap();
        let now = OffsetDateTime::now_utc();
        let reprepared = platform
            .pool()
            .read(move |c| {
                for _ in 0..20 {
                    let id = AccountId::new();
                    grants_of(c, id)?;
                    groups_of(c, id)?;
                    active_operator_access(c, id, now)?;
                    account(c, id)?;
                }
                // The cache hands back the same statements, with their
                // counters.
                let mut reprepared = 0;
                for sql in [GRANTS_OF, GROUPS_OF] {
                    let stmt = c.prepare_cached(sql)?;
                    assert!(stmt.get_status(rusqlite::StatementStatus::VmStep) > 0);
                    reprepared += stmt.get_status(rusqlite::StatementStatus::RePrepare);
                }
                Ok(reprepared)
            })
            .await
            .unwrap();
        assert_eq!(reprepared, 0);
    }
}
