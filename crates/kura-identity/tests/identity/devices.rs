//! "Remember this device": a device token skips the second factor of a
//! password sign-in for its own account until it expires, never counts as
//! a step-up, and is forgotten when the account's sessions are revoked.

use kura_identity::{Credential, MfaMethod, REMEMBER_DEVICE_FOR, SessionStage};

use super::*;

/// Password sign-in of the operator, waiting for its second factor.
async fn pending(env: &Env) -> Principal {
    let step = ok(env.sign_in("root@example.com", PASSWORD).await);
    assert!(matches!(step, SignInStep::MfaRequired(_)), "{step:?}");
    env.principal(step.signed_in().token.reveal()).await
}

/// Signs in with TOTP (a fresh step) and remembers the device.
async fn remember(env: &Env, op: &Operator) -> String {
    let p = pending(env).await;
    env.advance(Duration::seconds(30));
    let verified = ok(env
        .id
        .verify_totp(&p, &pyotp_code(&op.totp, env.now()))
        .await);
    let session = verified.session.expect("a complete session");
    let p = env.principal(session.token.reveal()).await;
    let device = ok(env.id.remember_device(&p).await);
    assert_eq!(device.expires_at, env.now() + REMEMBER_DEVICE_FOR);
    device.token.reveal().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_device_skips_the_second_factor_until_revoked_or_expired() {
    let env = env().await;
    let op = first_operator(&env).await;
    // Only right after a real second factor: a pending session cannot.
    let p = pending(&env).await;
    let (e, _) = err(env.id.remember_device(&p).await);
    assert!(matches!(e, IdentityError::Denied(_)), "{e:?}");
    let token = remember(&env, &op).await;

    // The next password sign-in completes with the device.
    let p = pending(&env).await;
    let a = env.id.use_remembered_device(&p, &token).await;
    assert!(a.actions().contains(&"auth.mfa.verified"));
    let session = ok(a).session.expect("a complete session");
    let p = env.principal(session.token.reveal()).await;
    assert!(matches!(
        p.credential,
        Credential::Session {
            stage: SessionStage::Complete,
            mfa: Some(MfaMethod::RememberedDevice),
            ..
        }
    ));
    // It signs in, but it is no step-up: sensitive actions still need a
    // real factor, and it cannot remember further devices.
    assert!(!p.stepped_up());
    let (e, _) = err(env.id.remember_device(&p).await);
    assert!(matches!(e, IdentityError::Denied(_)), "{e:?}");
    // Operators' work needs an MFA-verified session; this one is.
    ok(env.id.check(&p, Action::TeamsList, &Resource::Platform));

    // A wrong token, or one used by a complete session, does nothing.
    let pend = pending(&env).await;
    let (e, _) = err(env.id.use_remembered_device(&pend, "not-a-device").await);
    assert!(matches!(e, IdentityError::InvalidCode), "{e:?}");
    let (e, _) = err(env.id.use_remembered_device(&p, &token).await);
    assert!(matches!(e, IdentityError::InvalidCode), "{e:?}");

    // Signing out everywhere forgets the device.
    assert!(ok(env.id.sign_out_everywhere(&p).await) >= 1);
    let pend = pending(&env).await;
    let (e, _) = err(env.id.use_remembered_device(&pend, &token).await);
    assert!(matches!(e, IdentityError::InvalidCode), "{e:?}");

    // A device expires by itself.
    let token = remember(&env, &op).await;
    env.advance(REMEMBER_DEVICE_FOR);
    let pend = pending(&env).await;
    let (e, _) = err(env.id.use_remembered_device(&pend, &token).await);
    assert!(matches!(e, IdentityError::InvalidCode), "{e:?}");

    // A password change (from a session with a real factor: a device's
    // session may not) forgets it too.
    let token = remember(&env, &op).await;
    let pend = pending(&env).await;
    env.advance(Duration::seconds(30));
    let s = ok(env
        .id
        .verify_totp(&pend, &pyotp_code(&op.totp, env.now()))
        .await)
    .session
    .unwrap();
    let p = env.principal(s.token.reveal()).await;
    ok(env
        .id
        .change_password(
            &p,
            &secret(PASSWORD),
            &secret("a-whole-new-operator-passphrase"),
        )
        .await);
    let step = ok(env
        .sign_in("root@example.com", "a-whole-new-operator-passphrase")
        .await);
    let pend = env.principal(step.signed_in().token.reveal()).await;
    let (e, _) = err(env.id.use_remembered_device(&pend, &token).await);
    assert!(matches!(e, IdentityError::InvalidCode), "{e:?}");
}
