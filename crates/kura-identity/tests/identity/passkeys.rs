//! Passkeys through real WebAuthn ceremonies: `webauthn-authenticator-rs`'s
//! `SoftPasskey` holds P-256 keys and signs what the relying party asks, the
//! same way a hardware or platform authenticator does, and
//! `WebauthnAuthenticator` plays the browser (client data with origin and
//! challenge). Nothing on the server side is mocked.

use kura_identity::{
    IdentityConfig, IdentityError, PasskeyChallenge, PasskeyConfig, Principal, SignInStep,
};
use serde_json::json;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use super::*;

const ORIGIN: &str = "https://localhost:8443";

fn passkey_config() -> IdentityConfig {
    IdentityConfig {
        passkeys: PasskeyConfig {
            rp_id: "localhost".into(),
            origin: ORIGIN.into(),
            ..PasskeyConfig::default()
        },
        ..IdentityConfig::default()
    }
}

/// An authenticator that says it verified its user (PIN or biometrics), as
/// passkeys do; `SoftPasskey` cannot ask a person, so it is told to claim it.
fn authenticator() -> SoftPasskey {
    SoftPasskey::new(true)
}

fn register(auth: &mut SoftPasskey, c: &PasskeyChallenge, origin: &str) -> serde_json::Value {
    let options: CreationChallengeResponse = serde_json::from_value(c.options.clone()).unwrap();
    let answer = auth
        .do_registration(Url::parse(origin).unwrap(), options)
        .unwrap();
    serde_json::to_value(answer).unwrap()
}

fn assert_with(
    auth: &mut SoftPasskey,
    options: serde_json::Value,
    origin: &str,
) -> serde_json::Value {
    let options: RequestChallengeResponse = serde_json::from_value(options).unwrap();
    let answer = auth
        .do_authentication(Url::parse(origin).unwrap(), options)
        .unwrap();
    serde_json::to_value(answer).unwrap()
}

/// Registers one passkey for the principal and returns its credential id.
async fn enrol(env: &Env, p: &Principal, auth: &mut SoftPasskey, name: &str) -> String {
    let c = ok(env.id.start_passkey_registration(p).await);
    let answer = register(auth, &c, ORIGIN);
    let done = env
        .id
        .finish_passkey_registration(p, &c.ceremony, name, answer)
        .await;
    assert_eq!(done.actions(), ["auth.mfa.enrolled"]);
    ok(done).passkey.credential_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_registers_and_then_serves_as_the_second_factor() {
    let env = env_with(passkey_config()).await;
    let op = first_operator(&env).await;
    let (_, owner) = team_with_owner(&env, &op, "Acme", "owner@acme.example").await;
    let p = env.principal(&owner.token).await;
    let mut auth = authenticator();

    // Registration: a real attestation over the server's challenge.
    let c = ok(env.id.start_passkey_registration(&p).await);
    assert_eq!(c.options["publicKey"]["rp"]["id"], "localhost");
    let answer = register(&mut auth, &c, ORIGIN);
    // Bad names change nothing, and the challenge survives them.
    let (e, _) = err(env
        .id
        .finish_passkey_registration(&p, &c.ceremony, "  ", answer.clone())
        .await);
    assert!(matches!(e, IdentityError::InvalidInput(_)), "{e:?}");
    let done = ok(env
        .id
        .finish_passkey_registration(&p, &c.ceremony, "Laptop", answer.clone())
        .await);
    assert_eq!(done.passkey.name, "Laptop");
    // The first second factor comes with recovery codes.
    assert_eq!(done.recovery_codes.unwrap().reveal().len(), 10);
    // The same attestation again: the challenge was used up.
    let (e, _) = err(env
        .id
        .finish_passkey_registration(&p, &c.ceremony, "Laptop", answer)
        .await);
    assert!(matches!(e, IdentityError::PasskeyChallengeUnknown), "{e:?}");

    let listed = ok(env.id.passkeys(&p).await);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].credential_id, done.passkey.credential_id);
    let counter_at_registration = listed[0].counter;

    // Password sign-in now stops at the second factor.
    let step = ok(env.sign_in(&owner.email, PASSWORD).await);
    let SignInStep::MfaRequired(pending) = step else {
        panic!("a passkey is a second factor: {step:?}");
    };
    let pending = env.principal(pending.token.reveal()).await;
    let c = ok(env.id.start_passkey_mfa(&pending).await);
    let answer = assert_with(&mut auth, c.options.clone(), ORIGIN);
    let verified = env
        .id
        .finish_passkey_mfa(&pending, &c.ceremony, answer.clone())
        .await;
    assert_eq!(verified.actions(), ["auth.mfa.verified"]);
    let session = ok(verified).session.expect("a new, complete session");
    let complete = env.principal(session.token.reveal()).await;
    assert!(complete.mfa_enrolled);

    // The counter and the backup flags are kept.
    let after = ok(env.id.passkeys(&complete).await);
    assert!(after[0].counter > counter_at_registration, "{after:?}");
    assert!(after[0].last_used_at.is_some());
    assert!(!after[0].backup_eligible);

    // A replayed assertion finds no challenge.
    let (e, _) = err(env
        .id
        .finish_passkey_mfa(&complete, &c.ceremony, answer)
        .await);
    assert!(matches!(e, IdentityError::PasskeyChallengeUnknown), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_origins_wrong_challenges_and_other_sessions_are_refused() {
    let env = env_with(passkey_config()).await;
    let op = first_operator(&env).await;
    let (_, owner) = team_with_owner(&env, &op, "Acme", "owner@acme.example").await;
    let p = env.principal(&owner.token).await;
    let mut auth = authenticator();

    // Registration from another origin (another port of the same host, so
    // the browser side still signs): the server refuses it and stores
    // nothing.
    let c = ok(env.id.start_passkey_registration(&p).await);
    let answer = register(&mut auth, &c, "https://localhost:9443");
    let refused = env
        .id
        .finish_passkey_registration(&p, &c.ceremony, "Laptop", answer)
        .await;
    assert_eq!(refused.actions(), ["auth.mfa.failed"]);
    let (e, _) = err(refused);
    assert!(matches!(e, IdentityError::PasskeyRejected(_)), "{e:?}");
    assert!(ok(env.id.passkeys(&p).await).is_empty());

    enrol(&env, &p, &mut auth, "Laptop").await;
    let step = ok(env.sign_in(&owner.email, PASSWORD).await).into_signed_in();
    let pending = env.principal(step.token.reveal()).await;

    // An assertion made for one challenge does not answer another.
    let first = ok(env.id.start_passkey_mfa(&pending).await);
    let second = ok(env.id.start_passkey_mfa(&pending).await);
    let for_first = assert_with(&mut auth, first.options.clone(), ORIGIN);
    let refused = env
        .id
        .finish_passkey_mfa(&pending, &second.ceremony, for_first)
        .await;
    assert_eq!(refused.actions(), ["auth.mfa.failed"]);
    assert!(matches!(
        refused.result,
        Err(IdentityError::PasskeyRejected(_))
    ));

    // A wrong origin in the assertion.
    let c = ok(env.id.start_passkey_mfa(&pending).await);
    let answer = assert_with(&mut auth, c.options.clone(), "https://localhost:9443");
    let (e, _) = err(env
        .id
        .finish_passkey_mfa(&pending, &c.ceremony, answer)
        .await);
    assert!(matches!(e, IdentityError::PasskeyRejected(_)), "{e:?}");

    // A challenge issued to one session cannot be answered by another.
    let other = ok(env.sign_in(&owner.email, PASSWORD).await).into_signed_in();
    let other = env.principal(other.token.reveal()).await;
    let c = ok(env.id.start_passkey_mfa(&pending).await);
    let answer = assert_with(&mut auth, c.options.clone(), ORIGIN);
    let (e, _) = err(env.id.finish_passkey_mfa(&other, &c.ceremony, answer).await);
    assert!(matches!(e, IdentityError::PasskeyChallengeUnknown), "{e:?}");

    // Malformed answers are named as such.
    let c = ok(env.id.start_passkey_mfa(&pending).await);
    let (e, _) = err(env
        .id
        .finish_passkey_mfa(&pending, &c.ceremony, json!({"id": 3}))
        .await);
    assert!(matches!(e, IdentityError::InvalidInput(_)), "{e:?}");

    // Expired challenges are gone.
    let c = ok(env.id.start_passkey_mfa(&pending).await);
    let answer = assert_with(&mut auth, c.options.clone(), ORIGIN);
    env.advance(Duration::minutes(6));
    let (e, _) = err(env
        .id
        .finish_passkey_mfa(&pending, &c.ceremony, answer)
        .await);
    assert!(matches!(e, IdentityError::PasskeyChallengeUnknown), "{e:?}");
}

/// What a discoverable (resident) credential adds in a browser: the
/// authenticator picks the credential itself and returns the user handle it
/// stored at registration. `SoftPasskey` keeps neither, so the test, in the
/// client's place, names the credential and attaches the handle (the
/// account id the server put in the creation options). Neither is covered
/// by the signature, which is still the authenticator's own over this
/// challenge and origin.
async fn passwordless_answer(
    env: &Env,
    auth: &mut SoftPasskey,
    credential_id: &str,
    user: AccountId,
) -> (String, serde_json::Value) {
    let c = ok(env.id.start_passkey_sign_in(Some(ip("192.0.2.20"))).await);
    assert_eq!(c.options["publicKey"]["allowCredentials"], json!([]));
    let mut options = c.options.clone();
    options["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": credential_id}]);
    let mut answer = assert_with(auth, options, ORIGIN);
    use base64::Engine as _;
    answer["response"]["userHandle"] =
        json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user.as_uuid().as_bytes()));
    (c.ceremony, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_signs_in_alone_with_a_complete_mfa_session() {
    let env = env_with(passkey_config()).await;
    let op = first_operator(&env).await;
    let (team, boss) = team_with_owner(&env, &op, "Acme", "boss@acme.example").await;
    let owner = add_member(&env, &boss, team, "m@acme.example", TeamRole::Member).await;
    let p = env.principal(&owner.token).await;
    let mut auth = authenticator();
    let cred = enrol(&env, &p, &mut auth, "Phone").await;

    let (ceremony, answer) = passwordless_answer(&env, &mut auth, &cred, owner.account).await;
    let signed = env
        .id
        .finish_passkey_sign_in(&ceremony, answer.clone(), Some(ip("192.0.2.20")))
        .await;
    assert_eq!(signed.actions(), ["auth.signin.succeeded"]);
    assert_eq!(signed.events[0].detail_value("method"), Some("passkey"));
    let SignInStep::Complete(s) = ok(signed) else {
        panic!("a passkey sign-in is complete");
    };
    let principal = env.principal(s.token.reveal()).await;
    assert_eq!(principal.account, owner.account);
    assert!(principal.mfa_enrolled);

    // Replaying the same assertion fails: the challenge is used up.
    let (e, _) = err(env
        .id
        .finish_passkey_sign_in(&ceremony, answer, Some(ip("192.0.2.20")))
        .await);
    assert!(matches!(e, IdentityError::PasskeyChallengeUnknown), "{e:?}");

    // A user handle naming another account does not sign that account in.
    let (ceremony, answer) = passwordless_answer(&env, &mut auth, &cred, op.account).await;
    let refused = env
        .id
        .finish_passkey_sign_in(&ceremony, answer, Some(ip("192.0.2.20")))
        .await;
    assert_eq!(refused.actions(), ["auth.signin.failed"]);
    let (e, _) = err(refused);
    assert!(matches!(e, IdentityError::PasskeyRejected(_)), "{e:?}");

    // A disabled account cannot sign in with its passkey.
    let pop = env.principal(&boss.token).await;
    ok(env.id.set_account_disabled(&pop, owner.account, true).await);
    let (ceremony, answer) = passwordless_answer(&env, &mut auth, &cred, owner.account).await;
    let (e, _) = err(env
        .id
        .finish_passkey_sign_in(&ceremony, answer, Some(ip("192.0.2.20")))
        .await);
    assert!(matches!(e, IdentityError::PasskeyRejected(_)), "{e:?}");
    // Re-enabled, it can again; re-enabling an active account is refused.
    ok(env
        .id
        .set_account_disabled(&pop, owner.account, false)
        .await);
    let (e, _) = err(env
        .id
        .set_account_disabled(&pop, owner.account, false)
        .await);
    assert!(matches!(e, IdentityError::AccountStatus("active")), "{e:?}");
    let (ceremony, answer) = passwordless_answer(&env, &mut auth, &cred, owner.account).await;
    ok(env
        .id
        .finish_passkey_sign_in(&ceremony, answer, Some(ip("192.0.2.20")))
        .await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkeys_are_removed_by_their_owner_or_an_mfa_reset() {
    let env = env_with(passkey_config()).await;
    let op = first_operator(&env).await;
    let (team, boss) = team_with_owner(&env, &op, "Acme", "boss@acme.example").await;
    let owner = add_member(&env, &boss, team, "m@acme.example", TeamRole::Member).await;
    let p = env.principal(&owner.token).await;
    let mut laptop = authenticator();
    let mut phone = authenticator();
    enrol(&env, &p, &mut laptop, "Laptop").await;
    // A second passkey needs a recent MFA check, which the first one gives.
    let s = ok(env.sign_in(&owner.email, PASSWORD).await).into_signed_in();
    let pending = env.principal(s.token.reveal()).await;
    let c = ok(env.id.start_passkey_mfa(&pending).await);
    let answer = assert_with(&mut laptop, c.options.clone(), ORIGIN);
    let s = ok(env
        .id
        .finish_passkey_mfa(&pending, &c.ceremony, answer)
        .await)
    .session
    .unwrap();
    let p = env.principal(s.token.reveal()).await;
    enrol(&env, &p, &mut phone, "Phone").await;
    let keys = ok(env.id.passkeys(&p).await);
    assert_eq!(keys.len(), 2);

    // Removing needs a recent MFA check too.
    env.advance(Duration::minutes(11));
    let p = env.principal(s.token.reveal()).await;
    let (e, actions) = err(env.id.remove_passkey(&p, &keys[0].id).await);
    assert!(
        matches!(e, IdentityError::Denied(DenyReason::StepUpRequired)),
        "{e:?}"
    );
    assert_eq!(actions, ["authz.denied"]);
    let c = ok(env.id.start_passkey_mfa(&p).await);
    let answer = assert_with(&mut phone, c.options.clone(), ORIGIN);
    assert!(
        ok(env.id.finish_passkey_mfa(&p, &c.ceremony, answer).await)
            .session
            .is_none(),
        "a step-up keeps the session"
    );
    let p = env.principal(s.token.reveal()).await;
    let removed = env.id.remove_passkey(&p, &keys[0].id).await;
    assert_eq!(removed.actions(), ["auth.mfa.removed"]);
    ok(removed);
    let (e, _) = err(env.id.remove_passkey(&p, &keys[0].id).await);
    assert!(matches!(e, IdentityError::NotFound("passkey")), "{e:?}");
    assert_eq!(ok(env.id.passkeys(&p).await).len(), 1);

    // The team owner's MFA reset removes the rest and ends the sessions.
    let pop = env.fresh_principal(&boss.email).await;
    ok(env.id.reset_mfa(&pop, owner.account).await);
    let after = env.id.authenticate_session(s.token.reveal(), None).await;
    assert!(after.result.is_err());
    let s = ok(env.sign_in(&owner.email, PASSWORD).await);
    assert!(
        matches!(s, SignInStep::Complete(_)),
        "no second factor is left: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_step_whose_event_cannot_be_stored_changes_nothing() {
    use super::events_commit::{logged, mfa_failures, refuse_events, stage_of, store_failure};
    use kura_store::PasskeyStore;
    let env = env_with(passkey_config()).await;
    let op = first_operator(&env).await;
    let (team, boss) = team_with_owner(&env, &op, "Acme", "boss@acme.example").await;
    let member = add_member(&env, &boss, team, "m@acme.example", TeamRole::Member).await;
    let p = env.principal(&member.token).await;
    let mut auth = authenticator();
    let source = Some(ip("192.0.2.20"));

    // A session signed out meanwhile registers nothing: the passkey, its
    // recovery codes and its event go with the session's verification.
    let c = ok(env.id.start_passkey_registration(&p).await);
    let answer = register(&mut auth, &c, ORIGIN);
    let fresh = env.fresh_principal("m@acme.example").await;
    ok(env.id.sign_out(&p).await);
    let (e, _) = err(env
        .id
        .finish_passkey_registration(&p, &c.ceremony, "Phone", answer)
        .await);
    assert!(matches!(e, IdentityError::Unauthenticated), "{e:?}");
    assert!(
        env.store
            .passkeys_of(member.account)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        env.store.recovery_codes_left(member.account).await.unwrap(),
        0
    );
    let p = fresh;

    // A first passkey, with the recovery codes that come with it.
    let c = ok(env.id.start_passkey_registration(&p).await);
    let answer = register(&mut auth, &c, ORIGIN);
    refuse_events(&env, true).await;
    store_failure(
        env.id
            .finish_passkey_registration(&p, &c.ceremony, "Phone", answer)
            .await,
    );
    refuse_events(&env, false).await;
    assert!(
        env.store
            .passkeys_of(member.account)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        env.store.recovery_codes_left(member.account).await.unwrap(),
        0
    );
    let cred = enrol(&env, &p, &mut auth, "Phone").await;
    assert_eq!(
        env.store.recovery_codes_left(member.account).await.unwrap(),
        10
    );
    let stored = || async { env.store.passkeys_of(member.account).await.unwrap()[0].clone() };

    // The passkey as the second factor of a password sign-in, after a
    // wrong answer (one for another challenge) was counted.
    let step = ok(env.sign_in("m@acme.example", PASSWORD).await);
    assert!(matches!(step, SignInStep::MfaRequired(_)), "{step:?}");
    let token = step.signed_in().token.reveal().to_owned();
    let pending = env.principal(&token).await;
    let first = ok(env.id.start_passkey_mfa(&pending).await);
    let stale = assert_with(&mut auth, first.options, ORIGIN);
    let second = ok(env.id.start_passkey_mfa(&pending).await);
    err(env
        .id
        .finish_passkey_mfa(&pending, &second.ceremony, stale)
        .await);
    assert_eq!(mfa_failures(&env, member.account).await, Some(1));
    let before = stored().await;
    let events_before = logged(&env).await.len();
    let c = ok(env.id.start_passkey_mfa(&pending).await);
    let answer = assert_with(&mut auth, c.options, ORIGIN);
    refuse_events(&env, true).await;
    store_failure(
        env.id
            .finish_passkey_mfa(&pending, &c.ceremony, answer)
            .await,
    );
    refuse_events(&env, false).await;
    assert_eq!(stored().await, before, "the signature counter did not move");
    assert_eq!(mfa_failures(&env, member.account).await, Some(1));
    assert_eq!(
        stage_of(&env, &token).await,
        kura_identity::SessionStage::MfaPending
    );
    assert_eq!(logged(&env).await.len(), events_before);
    let c = ok(env.id.start_passkey_mfa(&pending).await);
    let answer = assert_with(&mut auth, c.options, ORIGIN);
    let verified = ok(env
        .id
        .finish_passkey_mfa(&pending, &c.ceremony, answer)
        .await);
    assert!(verified.session.is_some());
    assert_eq!(mfa_failures(&env, member.account).await, None);
    let after_mfa = stored().await;
    assert!(after_mfa.counter > before.counter || after_mfa.last_used_at.is_some());
    assert_eq!(after_mfa.last_used_at, Some(env.now()));

    // Passwordless sign-in: no session and no passkey change without the
    // sign-in's event.
    env.advance(Duration::minutes(1));
    let sessions = env.store.sessions_of(member.account).await.unwrap().len();
    let (ceremony, answer) = passwordless_answer(&env, &mut auth, &cred, member.account).await;
    refuse_events(&env, true).await;
    store_failure(
        env.id
            .finish_passkey_sign_in(&ceremony, answer, source)
            .await,
    );
    refuse_events(&env, false).await;
    assert_eq!(
        env.store.sessions_of(member.account).await.unwrap().len(),
        sessions
    );
    assert_eq!(stored().await, after_mfa);
    let (ceremony, answer) = passwordless_answer(&env, &mut auth, &cred, member.account).await;
    ok(env
        .id
        .finish_passkey_sign_in(&ceremony, answer, source)
        .await);
    assert_eq!(
        env.store.sessions_of(member.account).await.unwrap().len(),
        sessions + 1
    );
    assert_eq!(stored().await.last_used_at, Some(env.now()));
    assert_eq!(
        logged(&env).await.pop().unwrap().action.as_str(),
        "auth.signin.succeeded"
    );
}
