//! Unit tests of the SQLite identity store: constraints, transactions and
//! encodings.

use kura_crypto::DataKey;

use kura_types::InvitationId;

use super::*;
use crate::events::TxEvents;
use crate::sqlite::{Durability, SqlitePlatformStore};
use crate::{CredentialStore, TeamStore};

fn open(dir: &tempfile::TempDir) -> SqliteIdentityStore {
    let platform = SqlitePlatformStore::open(
        &dir.path().join("platform.db"),
        &DataKey::from_bytes([9; 32]),
        true,
        Durability::Full,
        2,
    )
    .unwrap();
    SqliteIdentityStore::new(platform.pool().clone())
}

fn account(email: &str, now: OffsetDateTime) -> NewAccount {
    NewAccount {
        account: AccountRecord {
            id: AccountId::new(),
            email: email.into(),
            display_name: "A".into(),
            phone: None,
            status: "active".into(),
            kind: "customer".into(),
            created_at: now,
        },
        password_phc: Some("$argon2id$stub".into()),
        grants: Vec::new(),
        teams: Vec::new(),
    }
}

fn invitation(team: TeamId, by: AccountId, token: &str, now: OffsetDateTime) -> InvitationRecord {
    InvitationRecord {
        id: InvitationId::new(),
        token_hash: TokenHash::of(token),
        team,
        email: "new@example.com".into(),
        role: "member".into(),
        invited_by: by,
        created_at: now,
        expires_at: now + time::Duration::days(7),
        accepted_at: None,
        revoked_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_row_writes_are_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let owner = account("owner@example.com", now);
    let owner_id = owner.account.id;
    store.create_account(owner, TxEvents::none()).await.unwrap();
    let team = TeamId::new();
    let inv = invitation(team, owner_id, "t1", now);
    store
        .create_team(
            TeamRecord {
                id: team,
                name: "T".into(),
                mfa_policy: "{}".into(),
                created_at: now,
            },
            Some(owner_id),
            Some(inv.clone()),
            TxEvents::none(),
        )
        .await
        .unwrap();

    // A second team whose invitation collides fails as a whole: no team row.
    let team2 = TeamId::new();
    let mut dup = invitation(team2, owner_id, "t1", now);
    dup.id = InvitationId::new();
    let failed = store
        .create_team(
            TeamRecord {
                id: team2,
                name: "T2".into(),
                mfa_policy: "{}".into(),
                created_at: now,
            },
            Some(owner_id),
            Some(dup),
            TxEvents::none(),
        )
        .await;
    assert!(failed.is_err());
    assert!(store.team(team2).await.unwrap().is_none());
    assert_eq!(store.teams_of(owner_id).await.unwrap().len(), 1);

    // Accepting with a new account whose email is taken fails as a whole:
    // the invitation stays open and nobody joins.
    let taken = account("owner@example.com", now);
    let taken_id = taken.account.id;
    let r = store
        .accept_invitation(inv.id, taken_id, Some(taken), now, TxEvents::none())
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    let still = store.invitation(inv.id).await.unwrap().unwrap();
    assert_eq!(still.accepted_at, None);
    assert_eq!(store.members(team).await.unwrap().len(), 1);

    // A good acceptance works once.
    let fresh = account("new@example.com", now);
    let fresh_id = fresh.account.id;
    assert!(
        store
            .accept_invitation(inv.id, fresh_id, Some(fresh), now, TxEvents::none())
            .await
            .unwrap()
    );
    assert!(
        !store
            .accept_invitation(inv.id, fresh_id, None, now, TxEvents::none())
            .await
            .unwrap()
    );
    assert_eq!(store.members(team).await.unwrap().len(), 2);
    let grants = store.grants_of(fresh_id).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].role, "member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_counters_restart_after_their_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let w = time::Duration::minutes(15);
    assert_eq!(
        store
            .throttle_failure("k", t, t - w)
            .await
            .unwrap()
            .failures,
        1
    );
    assert_eq!(
        store
            .throttle_failure("k", t, t - w)
            .await
            .unwrap()
            .failures,
        2
    );
    let later = t + time::Duration::minutes(16);
    let r = store.throttle_failure("k", later, later - w).await.unwrap();
    assert_eq!((r.failures, r.first_failure_at), (1, later));
    store
        .throttle_lock("k", Some(later + w), TxEvents::none())
        .await
        .unwrap();
    assert_eq!(
        store.throttle("k").await.unwrap().unwrap().locked_until,
        Some(later + w)
    );
    store.throttle_clear("k", TxEvents::none()).await.unwrap();
    assert!(store.throttle("k").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_teams_and_group_members_list_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    assert!(store.all_teams().await.unwrap().is_empty());
    let a = account("a@example.com", now);
    let b = account("b@example.com", now);
    let (a_id, b_id) = (a.account.id, b.account.id);
    store.create_account(a, TxEvents::none()).await.unwrap();
    store.create_account(b, TxEvents::none()).await.unwrap();
    let mut teams = Vec::new();
    for name in ["Zeta", "Alpha"] {
        let id = TeamId::new();
        store
            .create_team(
                TeamRecord {
                    id,
                    name: name.into(),
                    mfa_policy: "{}".into(),
                    created_at: now,
                },
                Some(a_id),
                None,
                TxEvents::none(),
            )
            .await
            .unwrap();
        teams.push(id);
    }
    // Every team, by name, whoever belongs to it.
    let all = store.all_teams().await.unwrap();
    let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Alpha", "Zeta"]);
    assert!(store.teams_of(b_id).await.unwrap().is_empty());

    let group = GroupId::new();
    store
        .create_group(
            GroupRecord {
                id: group,
                team: teams[0],
                name: "ops".into(),
                created_at: now,
            },
            TxEvents::none(),
        )
        .await
        .unwrap();
    assert!(store.group_members(group).await.unwrap().is_empty());
    store
        .add_group_member(group, b_id, now, TxEvents::none())
        .await
        .unwrap();
    store
        .add_group_member(
            group,
            a_id,
            now + time::Duration::seconds(1),
            TxEvents::none(),
        )
        .await
        .unwrap();
    assert_eq!(store.group_members(group).await.unwrap(), [b_id, a_id]);
    assert!(
        store
            .remove_group_member(group, b_id, TxEvents::none())
            .await
            .unwrap()
    );
    assert_eq!(store.group_members(group).await.unwrap(), [a_id]);
    // Another group's members are not mixed in.
    assert!(
        store
            .group_members(GroupId::new())
            .await
            .unwrap()
            .is_empty()
    );
}
