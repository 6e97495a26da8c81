//! Unit tests of the one-transaction steps: a verified second factor
//! ([`CredentialStore::complete_factor`]) and first-run setup
//! ([`IdentityStore::create_first_operator`]). Each refusal, and each event
//! that cannot be stored, must leave every part of the step undone.

use kura_crypto::DataKey;
use kura_crypto::token::TokenHash;
use kura_types::{AccountId, SessionId};
use time::{Duration, OffsetDateTime};

use crate::events::TxEvents;
use crate::sqlite::{Durability, SqliteIdentityStore, SqlitePlatformStore};
use crate::{
    AccountRecord, CredentialStore, FactorOutcome, FactorProof, FactorStep, FirstOperator,
    FirstOperatorOutcome, IdentityStore, NewAccount, PlatformStore, SETUP_COMPLETED, SessionChange,
    SessionRecord, SetupTokenCheck, StoreError,
};

fn open(dir: &tempfile::TempDir) -> (SqlitePlatformStore, SqliteIdentityStore) {
    let platform = SqlitePlatformStore::open(
        &dir.path().join("platform.db"),
        &DataKey::from_bytes([9; 32]),
        true,
        Durability::Full,
        2,
    )
    .unwrap();
    let identity = SqliteIdentityStore::new(platform.pool().clone());
    (platform, identity)
}

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn account(email: &str, kind: &str) -> NewAccount {
    NewAccount {
        account: AccountRecord {
            id: AccountId::new(),
            email: email.into(),
            display_name: "A".into(),
            phone: None,
            status: "active".into(),
            kind: kind.into(),
            created_at: t0(),
        },
        password_phc: Some("$argon2id$stub".into()),
        grants: Vec::new(),
        teams: Vec::new(),
    }
}

fn session(account: AccountId, stage: &str, token: &str) -> SessionRecord {
    SessionRecord {
        id: SessionId::new(),
        token_hash: TokenHash::of(token),
        account,
        stage: stage.into(),
        created_at: t0(),
        last_seen_at: t0(),
        expires_at: t0() + Duration::hours(12),
        mfa_verified_at: None,
        mfa_method: None,
        revoked_at: None,
        source: None,
    }
}

/// Events that cannot be built: the write they describe must roll back.
fn refused_events<T>() -> TxEvents<T> {
    TxEvents::from_result(|_| Err(StoreError::Malformed("refused".into())))
}

/// An account with a confirmed TOTP secret (last step 100), the recovery
/// codes `c1` and `c2`, a session waiting for its second factor and a
/// failure counter under `mfa:key`.
async fn enrolled(store: &SqliteIdentityStore) -> (AccountId, SessionRecord) {
    let a = account("a@example.com", "customer");
    let id = a.account.id;
    store.create_account(a, TxEvents::none()).await.unwrap();
    store
        .put_pending_totp(id, &[1; 20], t0(), TxEvents::none())
        .await
        .unwrap();
    let step = FactorStep {
        account: id,
        proof: FactorProof::TotpEnrolment {
            step: 100,
            recovery_hashes: vec![TokenHash::of("c1"), TokenHash::of("c2")],
        },
        session: SessionChange::None,
        clear_throttle: None,
        now: t0(),
    };
    assert!(matches!(
        store.complete_factor(step, TxEvents::none()).await.unwrap(),
        FactorOutcome::Done { .. }
    ));
    let pending = session(id, "mfa_pending", "pending");
    store
        .insert_session(pending.clone(), TxEvents::none())
        .await
        .unwrap();
    store
        .throttle_failure("mfa:key", t0(), t0() - Duration::minutes(15))
        .await
        .unwrap();
    (id, pending)
}

fn step(account: AccountId, proof: FactorProof, session: SessionChange) -> FactorStep {
    FactorStep {
        account,
        proof,
        session,
        clear_throttle: Some("mfa:key".into()),
        now: t0(),
    }
}

fn rotate(old: &SessionRecord, token: &str) -> SessionChange {
    SessionChange::Rotate {
        old: old.id,
        new: session(old.account, "complete", token),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_steps_and_recovery_codes_are_used_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = open(&dir);
    let (id, _) = enrolled(&store).await;
    let use_once = |proof| step(id, proof, SessionChange::None);
    for (proof, expected) in [
        (FactorProof::TotpStep(100), FactorOutcome::Refused),
        (FactorProof::TotpStep(99), FactorOutcome::Refused),
        (
            FactorProof::TotpStep(101),
            FactorOutcome::Done {
                recovery_codes_left: None,
            },
        ),
        (FactorProof::TotpStep(101), FactorOutcome::Refused),
        (
            FactorProof::RecoveryCode(TokenHash::of("c1")),
            FactorOutcome::Done {
                recovery_codes_left: Some(1),
            },
        ),
        (
            FactorProof::RecoveryCode(TokenHash::of("c1")),
            FactorOutcome::Refused,
        ),
        (
            FactorProof::RememberedDevice(TokenHash::of("no-such-device")),
            FactorOutcome::Refused,
        ),
    ] {
        let outcome = store
            .complete_factor(use_once(proof.clone()), TxEvents::none())
            .await
            .unwrap();
        assert_eq!(outcome, expected, "{proof:?}");
    }
    assert_eq!(store.recovery_codes_left(id).await.unwrap(), 1);

    // Re-enrolment keeps the confirmed secret until the new one is
    // confirmed; confirming twice finds nothing pending the second time.
    store
        .put_pending_totp(id, &[2; 20], t0(), TxEvents::none())
        .await
        .unwrap();
    assert_eq!(
        store.totp(id, true).await.unwrap().unwrap().secret,
        vec![1; 20]
    );
    let confirm = || {
        use_once(FactorProof::TotpEnrolment {
            step: 200,
            recovery_hashes: vec![TokenHash::of("d1"), TokenHash::of("d2")],
        })
    };
    let first = store
        .complete_factor(confirm(), TxEvents::none())
        .await
        .unwrap();
    assert!(matches!(first, FactorOutcome::Done { .. }), "{first:?}");
    let again = store
        .complete_factor(confirm(), TxEvents::none())
        .await
        .unwrap();
    assert_eq!(again, FactorOutcome::Refused);
    assert_eq!(
        store.totp(id, true).await.unwrap().unwrap().secret,
        vec![2; 20]
    );
    assert!(store.totp(id, false).await.unwrap().is_none());
    assert_eq!(store.recovery_codes_left(id).await.unwrap(), 2);
    assert!(!format!("{:?}", store.totp(id, true).await.unwrap()).contains("2, 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_factor_commits_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = open(&dir);
    let (id, pending) = enrolled(&store).await;
    let live = |s: &SessionRecord| {
        let s = s.clone();
        let store = store.clone();
        async move {
            store
                .sessions_of(s.account)
                .await
                .unwrap()
                .iter()
                .any(|x| x.id == s.id)
        }
    };

    // A refused proof: the session is not rotated, the counter stays.
    let refused = store
        .complete_factor(
            step(id, FactorProof::TotpStep(100), rotate(&pending, "new-1")),
            TxEvents::none(),
        )
        .await
        .unwrap();
    assert_eq!(refused, FactorOutcome::Refused);
    assert!(live(&pending).await);
    assert!(store.throttle("mfa:key").await.unwrap().is_some());

    // Events that cannot be stored: the step's CAS, the code, the session
    // and the counter all roll back.
    for proof in [
        FactorProof::TotpStep(101),
        FactorProof::RecoveryCode(TokenHash::of("c1")),
    ] {
        let r = store
            .complete_factor(step(id, proof, rotate(&pending, "new-2")), refused_events())
            .await;
        assert!(r.is_err(), "{r:?}");
    }
    assert!(live(&pending).await);
    assert_eq!(store.sessions_of(id).await.unwrap().len(), 1);
    assert!(store.throttle("mfa:key").await.unwrap().is_some());
    assert_eq!(store.recovery_codes_left(id).await.unwrap(), 2);
    assert_eq!(
        store.totp(id, true).await.unwrap().unwrap().last_used_step,
        Some(100)
    );

    // A session revoked meanwhile: the code is not used up.
    let other = session(id, "mfa_pending", "other");
    store
        .insert_session(other.clone(), TxEvents::none())
        .await
        .unwrap();
    store
        .revoke_session(other.id, t0(), TxEvents::none())
        .await
        .unwrap();
    let gone = store
        .complete_factor(
            step(
                id,
                FactorProof::RecoveryCode(TokenHash::of("c1")),
                rotate(&other, "new-3"),
            ),
            TxEvents::none(),
        )
        .await
        .unwrap();
    assert_eq!(gone, FactorOutcome::SessionGone);
    assert_eq!(store.recovery_codes_left(id).await.unwrap(), 2);
    assert!(store.throttle("mfa:key").await.unwrap().is_some());

    // The same step with storable events does all of it.
    let done = store
        .complete_factor(
            step(id, FactorProof::TotpStep(101), rotate(&pending, "new-4")),
            TxEvents::none(),
        )
        .await
        .unwrap();
    assert!(matches!(done, FactorOutcome::Done { .. }), "{done:?}");
    assert!(!live(&pending).await);
    let sessions = store.sessions_of(id).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].token_hash, TokenHash::of("new-4"));
    assert!(store.throttle("mfa:key").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_device_and_its_events_commit_together_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = open(&dir);
    let (id, pending) = enrolled(&store).await;
    let device = TokenHash::of("device");
    let expires = t0() + Duration::days(30);
    let r = store
        .remember_device(id, &device, t0(), expires, refused_events())
        .await;
    assert!(r.is_err(), "{r:?}");
    let use_device = |at: OffsetDateTime, token: &str| FactorStep {
        now: at,
        ..step(
            id,
            FactorProof::RememberedDevice(device.clone()),
            rotate(&pending, token),
        )
    };
    // The refused remembering left no device behind.
    let outcome = store
        .complete_factor(use_device(t0(), "n1"), TxEvents::none())
        .await
        .unwrap();
    assert_eq!(outcome, FactorOutcome::Refused);

    store
        .remember_device(id, &device, t0(), expires, TxEvents::none())
        .await
        .unwrap();
    let outcome = store
        .complete_factor(use_device(expires, "n2"), TxEvents::none())
        .await
        .unwrap();
    assert_eq!(outcome, FactorOutcome::Refused, "expired at `expires_at`");
    let outcome = store
        .complete_factor(use_device(t0(), "n3"), TxEvents::none())
        .await
        .unwrap();
    assert!(matches!(outcome, FactorOutcome::Done { .. }), "{outcome:?}");
    let used: Option<i64> = store
        .pool
        .read(move |c| {
            Ok(c.query_row(
                "SELECT last_used_at FROM remembered_devices WHERE token_hash = ?1",
                [TokenHash::of("device").as_str()],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(used, Some(t0().unix_timestamp()));
}

fn first_operator(token: &str) -> FirstOperator {
    let a = account("root@example.com", "operator");
    let session = session(a.account.id, "mfa_enrolment", "root-session");
    FirstOperator {
        setup_token: TokenHash::of(token),
        account: a,
        session,
        now: t0(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_setup_is_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (platform, store) = open(&dir);
    platform
        .issue_setup_token(&TokenHash::of("setup"), t0(), t0() + Duration::hours(1))
        .await
        .unwrap();
    let untouched = || async {
        assert_eq!(store.count_accounts("operator").await.unwrap(), 0);
        assert_eq!(platform.setting(SETUP_COMPLETED).await.unwrap(), None);
        assert_eq!(
            platform
                .check_setup_token(&TokenHash::of("setup"), t0(), false)
                .await
                .unwrap(),
            SetupTokenCheck::Valid
        );
    };

    let wrong = store
        .create_first_operator(first_operator("wrong"), TxEvents::none())
        .await
        .unwrap();
    assert_eq!(wrong, FirstOperatorOutcome::Token(SetupTokenCheck::Unknown));
    untouched().await;
    let refused = store
        .create_first_operator(first_operator("setup"), refused_events())
        .await;
    assert!(refused.is_err(), "{refused:?}");
    untouched().await;

    let first = first_operator("setup");
    let id = first.account.account.id;
    let created = store
        .create_first_operator(first, TxEvents::none())
        .await
        .unwrap();
    assert_eq!(created, FirstOperatorOutcome::Created);
    assert_eq!(store.count_accounts("operator").await.unwrap(), 1);
    assert!(platform.setting(SETUP_COMPLETED).await.unwrap().is_some());
    assert_eq!(
        platform
            .check_setup_token(&TokenHash::of("setup"), t0(), false)
            .await
            .unwrap(),
        SetupTokenCheck::Used
    );
    assert_eq!(store.sessions_of(id).await.unwrap().len(), 1);

    // A new link after setup cannot make a second operator.
    platform
        .issue_setup_token(&TokenHash::of("again"), t0(), t0() + Duration::hours(1))
        .await
        .unwrap();
    let again = store
        .create_first_operator(first_operator("again"), TxEvents::none())
        .await
        .unwrap();
    assert_eq!(again, FirstOperatorOutcome::AlreadyComplete);
    assert_eq!(store.count_accounts("operator").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_setups_create_one_operator() {
    let dir = tempfile::tempdir().unwrap();
    let (platform, store) = open(&dir);
    platform
        .issue_setup_token(&TokenHash::of("setup"), t0(), t0() + Duration::hours(1))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_first_operator(first_operator("setup"), TxEvents::none())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            FirstOperatorOutcome::Created => created += 1,
            FirstOperatorOutcome::AlreadyComplete => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(store.count_accounts("operator").await.unwrap(), 1);
}
