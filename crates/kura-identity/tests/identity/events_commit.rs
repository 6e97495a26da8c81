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
async fn refuse_events(env: &Env, refuse: bool) {
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
async fn logged(env: &Env) -> Vec<SecurityEvent> {
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

fn store_failure<T: std::fmt::Debug>(a: Audited<T>) {
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
