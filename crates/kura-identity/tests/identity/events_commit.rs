//! State changes and their security events commit in one transaction: an
//! event the log refuses takes its change down with it, and events appended
//! inside identity writes keep the hash chain intact next to the pipeline's
//! own appends.

use super::*;
use kura_identity::RequestFacts;
use kura_store::events::{EventLog, EventLogOptions, EventQuery, Order, VerifyOptions};
use kura_types::{Action as EventAction, Actor, Outcome, SecurityEvent};

const NEW_PASSWORD: &str = "pelican-Harbour-58-slowly";

/// Makes every append to the event log fail (a trigger that aborts the
/// insert), or lets appends through again.
pub(super) async fn refuse_events(env: &Env, refuse: bool) {
    let sql = if refuse {
        "CREATE TRIGGER refuse_events BEFORE INSERT ON events
         BEGIN SELECT RAISE(ABORT, 'events refused'); END"
    } else {
        "DROP TRIGGER refuse_events"
    };
    env.storage
        .sqlite
        .pool()
        .write(move |tx| {
            tx.execute_batch(sql)?;
            Ok(())
        })
        .await
        .unwrap();
}

/// Every event in the log, oldest first.
pub(super) async fn logged(env: &Env) -> Vec<SecurityEvent> {
    let page = kura_store::events::query(
        env.storage.sqlite.pool(),
        EventQuery {
            limit: 1000,
            order: Order::OldestFirst,
            ..EventQuery::default()
        },
    )
    .await
    .unwrap();
    page.events.into_iter().map(|e| e.event).collect()
}

fn token_request() -> NewApiToken {
    NewApiToken {
        name: "ci".into(),
        kind: ApiTokenKind::Personal,
        scopes: BTreeSet::from(["hosts:read".to_owned()]),
        lifetime: Duration::days(30),
        service: None,
    }
}

pub(super) fn store_failure<T: std::fmt::Debug>(a: Audited<T>) {
    let (e, _) = err(a);
    assert!(matches!(e, IdentityError::Store(_)), "{e:?}");
}

#[tokio::test]
async fn a_change_whose_event_cannot_be_stored_does_not_happen() {
    let env = env().await;
    let op = first_operator(&env).await;
    let p = env.principal(&op.token).await;
    let issued = ok(env.id.create_api_token(&p, token_request()).await);
    let events_before = logged(&env).await.len();
    let sessions_before = env.store.sessions_of(op.account).await.unwrap().len();

    refuse_events(&env, true).await;
    store_failure(
        env.id
            .change_password(&p, &secret(PASSWORD), &secret(NEW_PASSWORD))
            .await,
    );
    store_failure(env.id.create_api_token(&p, token_request()).await);
    store_failure(env.id.revoke_api_token(&p, issued.id).await);
    store_failure(env.id.sign_out_everywhere(&p).await);
    store_failure(env.id.update_profile(&p, "Somebody Else", None).await);
    store_failure(env.sign_in("root@example.com", PASSWORD).await);
    refuse_events(&env, false).await;

    // Not one of them left a trace: no event, and no state change.
    assert_eq!(logged(&env).await.len(), events_before);
    let p = env.principal(&op.token).await;
    let tokens = ok(env.id.api_tokens(&p).await);
    assert_eq!(tokens.len(), 1, "no token was created");
    assert!(tokens[0].revoked_at.is_none(), "the token was not revoked");
    assert_eq!(ok(env.id.me(&p).await).display_name, "Root");
    assert_eq!(
        env.store.sessions_of(op.account).await.unwrap().len(),
        sessions_before,
        "the refused sign-in issued no session"
    );
    let (e, _) = err(env.sign_in("root@example.com", NEW_PASSWORD).await);
    assert!(matches!(e, IdentityError::InvalidCredentials), "{e:?}");
    ok(env.sign_in("root@example.com", PASSWORD).await);

    // Once the log accepts events again the same change goes through, with
    // its event in the log.
    ok(env
        .id
        .change_password(&p, &secret(PASSWORD), &secret(NEW_PASSWORD))
        .await);
    let last = logged(&env).await.pop().unwrap();
    assert_eq!(last.action.as_str(), "auth.password.changed");
    // It revoked the one session signed in since (the refused sign-in left
    // none) and the token whose refused revocation left it active.
    assert_eq!(last.details["sessions_revoked"], "1");
    assert_eq!(last.details["tokens_revoked"], "1");
}

#[tokio::test]
async fn committed_events_carry_request_facts_and_keep_the_chain_intact() {
    let env = env().await;
    let op = first_operator(&env).await;
    let log = EventLog::open(
        &env.storage,
        Arc::new(env.clock.clone()),
        EventLogOptions::default(),
    )
    .await
    .unwrap();
    let p = env.principal(&op.token).await;

    // Identity writes (each appending in its own transaction) race with
    // the pipeline's group-committed appends on the same log.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let id = env.id.at(RequestFacts {
            request_id: Some(format!("req-{i}")),
            user_agent: Some("events-test/1".into()),
            source: Some(ip("198.51.100.7")),
        });
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let issued = ok(id.create_api_token(&p, token_request()).await);
            ok(id.revoke_api_token(&p, issued.id).await);
        }));
        let log = log.clone();
        let now = env.now();
        tasks.push(tokio::spawn(async move {
            let action = EventAction::parse("data.read").unwrap();
            log.append(SecurityEvent::new(
                now,
                Actor::Anonymous,
                action,
                Outcome::Success,
            ))
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let report = log.verify(VerifyOptions::default()).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.problem);
    let events = logged(&env).await;
    assert_eq!(report.entries_checked, events.len() as u64);
    let count = |action: &str| {
        events
            .iter()
            .filter(|e| e.action.as_str() == action)
            .count()
    };
    assert_eq!(count("token.created"), 12);
    assert_eq!(count("token.revoked"), 12);
    assert_eq!(count("data.read"), 12);

    // The events stored inside the writes carry the request's facts.
    let created = events
        .iter()
        .find(|e| e.action.as_str() == "token.created" && e.request_id.as_deref() == Some("req-3"))
        .expect("the event of request 3");
    assert_eq!(created.user_agent.as_deref(), Some("events-test/1"));
    assert_eq!(created.source, Some(ip("198.51.100.7")));
}

// ----- second factors, remembered devices and setup -----
//
// Each of these steps writes several things (a code used up, a session
// rotated, a throttle counter forgotten, a device or passkey stored) and
// must write all of them with its events or none: with the log refusing
// events, the step fails and the same proof works afterwards.

/// The failure counter of an account's second factor, if it has one.
pub(super) async fn mfa_failures(env: &Env, account: AccountId) -> Option<u32> {
    env.store
        .throttle(&format!("mfa:{account}"))
        .await
        .unwrap()
        .map(|t| t.failures)
}

/// Password sign-in of the operator, waiting for its second factor, with
/// its token.
async fn pending_operator(env: &Env) -> (Principal, String) {
    let step = ok(env.sign_in("root@example.com", PASSWORD).await);
    assert!(matches!(step, SignInStep::MfaRequired(_)), "{step:?}");
    let token = step.signed_in().token.reveal().to_owned();
    (env.principal(&token).await, token)
}

/// The stage of a session, through authentication (so a revoked one
/// fails the test).
pub(super) async fn stage_of(env: &Env, token: &str) -> kura_identity::SessionStage {
    match env.principal(token).await.credential {
        kura_identity::Credential::Session { stage, .. } => stage,
        other => panic!("not a session: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_whose_event_cannot_be_stored_is_not_used_up() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (p, token) = pending_operator(&env).await;
    // A wrong code first, so the success has a counter to reset.
    err(env.id.verify_totp(&p, "000000").await);
    assert_eq!(mfa_failures(&env, op.account).await, Some(1));
    env.advance(Duration::seconds(30));
    let code = pyotp_code(&op.totp, env.now());
    let events_before = logged(&env).await.len();

    refuse_events(&env, true).await;
    store_failure(env.id.verify_totp(&p, &code).await);
    store_failure(env.id.use_recovery_code(&p, &op.recovery[0]).await);
    refuse_events(&env, false).await;

    // Nothing happened: no event, the session still waits for its factor,
    // the counter stands, the code's step and the recovery code are unused.
    assert_eq!(logged(&env).await.len(), events_before);
    assert_eq!(
        stage_of(&env, &token).await,
        kura_identity::SessionStage::MfaPending
    );
    assert_eq!(mfa_failures(&env, op.account).await, Some(1));
    assert_eq!(env.store.recovery_codes_left(op.account).await.unwrap(), 10);

    // The very same code now works, once.
    let verified = ok(env.id.verify_totp(&p, &code).await);
    assert!(verified.session.is_some());
    assert_eq!(
        logged(&env).await.pop().unwrap().action.as_str(),
        "auth.mfa.verified"
    );
    assert_eq!(mfa_failures(&env, op.account).await, None);
    let (again, _) = pending_operator(&env).await;
    let (e, _) = err(env.id.verify_totp(&again, &code).await);
    assert!(matches!(e, IdentityError::InvalidCode), "{e:?}");
    // And so does the recovery code.
    let used = ok(env.id.use_recovery_code(&again, &op.recovery[0]).await);
    assert_eq!(used.recovery_codes_left, Some(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_totp_enrolment_whose_event_cannot_be_stored_changes_nothing() {
    let env = env().await;
    let setup = env.setup_token().await;
    let signed = ok(env
        .id
        .create_first_operator(&setup, "root@example.com", "Root", &secret(PASSWORD), None)
        .await);
    let first = env.principal(signed.token.reveal()).await;
    let b32 = ok(env.id.enroll_totp(&first).await)
        .secret_base32
        .expose_secret()
        .to_owned();
    let code = pyotp_code(&b32, env.now());

    // A session signed out meanwhile confirms nothing: the enrolment, its
    // recovery codes and its event go with the session's verification.
    let step = ok(env.sign_in("root@example.com", PASSWORD).await);
    let token = step.signed_in().token.reveal().to_owned();
    let p = env.principal(&token).await;
    ok(env.id.sign_out(&first).await);
    let (e, _) = err(env.id.confirm_totp(&first, &code).await);
    assert!(matches!(e, IdentityError::Unauthenticated), "{e:?}");
    assert!(
        env.store
            .totp(signed.account, true)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        env.store.recovery_codes_left(signed.account).await.unwrap(),
        0
    );
    assert!(
        logged(&env)
            .await
            .iter()
            .all(|e| e.action.as_str() != "auth.mfa.enrolled")
    );

    err(env.id.confirm_totp(&p, "000000").await);
    assert_eq!(mfa_failures(&env, signed.account).await, Some(1));

    refuse_events(&env, true).await;
    store_failure(env.id.confirm_totp(&p, &code).await);
    refuse_events(&env, false).await;

    assert!(
        env.store
            .totp(signed.account, true)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        env.store
            .totp(signed.account, false)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        env.store.recovery_codes_left(signed.account).await.unwrap(),
        0
    );
    assert_eq!(mfa_failures(&env, signed.account).await, Some(1));
    assert_eq!(
        stage_of(&env, &token).await,
        kura_identity::SessionStage::MfaEnrolment
    );

    let confirmed = ok(env.id.confirm_totp(&p, &code).await);
    assert!(confirmed.session.is_some());
    assert_eq!(
        logged(&env).await.pop().unwrap().action.as_str(),
        "auth.mfa.enrolled"
    );
    assert_eq!(
        env.store.recovery_codes_left(signed.account).await.unwrap(),
        10
    );
    assert_eq!(mfa_failures(&env, signed.account).await, None);
}

/// How many devices are remembered, and when the one with `token` was last
/// used.
async fn devices(env: &Env, token: Option<&str>) -> (i64, Option<i64>) {
    let hash = token.map(|t| kura_crypto::token::TokenHash::of(t).as_str().to_owned());
    env.storage
        .sqlite
        .pool()
        .read(move |c| {
            let n = c.query_row("SELECT count(*) FROM remembered_devices", [], |r| r.get(0))?;
            let used = match hash {
                Some(h) => c.query_row(
                    "SELECT last_used_at FROM remembered_devices WHERE token_hash = ?1",
                    [h],
                    |r| r.get(0),
                )?,
                None => None,
            };
            Ok((n, used))
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembering_and_using_a_device_commit_with_their_events() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (p, _) = pending_operator(&env).await;
    env.advance(Duration::seconds(30));
    let verified = ok(env
        .id
        .verify_totp(&p, &pyotp_code(&op.totp, env.now()))
        .await);
    let complete = env
        .principal(verified.session.unwrap().token.reveal())
        .await;

    refuse_events(&env, true).await;
    store_failure(env.id.remember_device(&complete).await);
    refuse_events(&env, false).await;
    assert_eq!(
        devices(&env, None).await,
        (0, None),
        "no device without its event"
    );

    let device = ok(env.id.remember_device(&complete).await);
    let device = device.token.reveal().to_owned();
    assert_eq!(
        logged(&env).await.pop().unwrap().action.as_str(),
        "auth.device.remembered"
    );

    let (p, token) = pending_operator(&env).await;
    refuse_events(&env, true).await;
    store_failure(env.id.use_remembered_device(&p, &device).await);
    refuse_events(&env, false).await;
    assert_eq!(devices(&env, Some(&device)).await, (1, None));
    assert_eq!(
        stage_of(&env, &token).await,
        kura_identity::SessionStage::MfaPending
    );

    let used = ok(env.id.use_remembered_device(&p, &device).await);
    assert!(used.session.is_some());
    assert_eq!(
        devices(&env, Some(&device)).await,
        (1, Some(env.now().unix_timestamp()))
    );
    let last = logged(&env).await.pop().unwrap();
    assert_eq!(last.action.as_str(), "auth.mfa.verified");
    assert_eq!(last.details["method"], "remembered_device");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_whose_event_cannot_be_stored_leaves_the_link_live() {
    let env = env().await;
    let setup = env.setup_token().await;
    let password = secret(PASSWORD);
    let create = || {
        env.id
            .create_first_operator(&setup, "root@example.com", "Root", &password, None)
    };

    refuse_events(&env, true).await;
    store_failure(create().await);
    refuse_events(&env, false).await;

    // No operator, setup not marked complete, the link still valid.
    assert_eq!(env.store.count_accounts("operator").await.unwrap(), 0);
    assert_eq!(
        env.storage.platform.setting(SETUP_COMPLETED).await.unwrap(),
        None
    );
    let hash = kura_crypto::token::TokenHash::of(&setup);
    assert_eq!(
        env.storage
            .platform
            .check_setup_token(&hash, env.now(), false)
            .await
            .unwrap(),
        SetupTokenCheck::Valid
    );
    assert!(logged(&env).await.is_empty());

    let signed = ok(create().await);
    let actions: Vec<_> = logged(&env)
        .await
        .iter()
        .map(|e| e.action.as_str().to_owned())
        .collect();
    assert_eq!(
        actions,
        ["setup.first_operator.created", "auth.signin.succeeded"]
    );
    assert_eq!(
        stage_of(&env, signed.token.reveal()).await,
        kura_identity::SessionStage::MfaEnrolment
    );
    assert_eq!(
        env.storage
            .platform
            .check_setup_token(&hash, env.now(), false)
            .await
            .unwrap(),
        SetupTokenCheck::Used
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_setup_requests_create_exactly_one_operator() {
    let env = env().await;
    let setup = env.setup_token().await;
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let id = env.id.at(RequestFacts::default());
            let setup = setup.clone();
            tokio::spawn(async move {
                id.create_first_operator(
                    &setup,
                    &format!("root{i}@example.com"),
                    "Root",
                    &secret(PASSWORD),
                    None,
                )
                .await
                .result
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(IdentityError::SetupComplete) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(env.store.count_accounts("operator").await.unwrap(), 1);
    let created_events = logged(&env)
        .await
        .iter()
        .filter(|e| e.action.as_str() == "setup.first_operator.created")
        .count();
    assert_eq!(created_events, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_whose_event_cannot_be_stored_keeps_its_failure_count() {
    let env = env().await;
    let op = first_operator(&env).await;
    let failures = || async {
        env.store
            .throttle("account:root@example.com")
            .await
            .unwrap()
            .map(|t| t.failures)
    };
    err(env
        .sign_in("root@example.com", "wrong-Password-00-wrong")
        .await);
    assert_eq!(failures().await, Some(1));
    let sessions = env.store.sessions_of(op.account).await.unwrap().len();

    refuse_events(&env, true).await;
    store_failure(env.sign_in("root@example.com", PASSWORD).await);
    refuse_events(&env, false).await;
    assert_eq!(failures().await, Some(1), "the reset goes with the session");
    assert_eq!(
        env.store.sessions_of(op.account).await.unwrap().len(),
        sessions
    );

    ok(env.sign_in("root@example.com", PASSWORD).await);
    assert_eq!(failures().await, None);
    assert_eq!(
        env.store.sessions_of(op.account).await.unwrap().len(),
        sessions + 1
    );
}
