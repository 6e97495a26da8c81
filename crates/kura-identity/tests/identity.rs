//! Kura ID against a real SQLCipher platform store, with time from a
//! `ManualClock` and TOTP codes from an independent implementation (Python's
//! `pyotp`, see [`pyotp_code`]). One binary for the crate.

// Helpers outside `#[test]` functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use kura_crypto::token::SecretToken;
use kura_crypto::{LocalKms, SealParams};
use kura_identity::{
    Acceptance, Action, ApiTokenKind, Audited, DenyReason, HashParams, Identity, IdentityConfig,
    IdentityError, IssuedApiToken, MfaStrength, NewApiToken, OperatorRole, Principal, Resource,
    SignInStep, TeamMfaPolicy, TeamRole, TokenProblem,
};
use kura_store::{
    CredentialStore, DataDir, GrantSubject, IdentityStore, SETUP_COMPLETED, SetupTokenCheck,
    SqliteIdentityStore, Storage, StorageOptions, TeamStore, open_storage,
};
use kura_types::{AccountId, Clock, ManualClock, TeamId};
use secrecy::{ExposeSecret, SecretString};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

#[path = "identity/access.rs"]
mod access;
#[path = "identity/devices.rs"]
mod devices;
#[path = "identity/directory.rs"]
mod directory;
#[path = "identity/events_commit.rs"]
mod events_commit;
#[path = "identity/passkeys.rs"]
mod passkeys;

// ----- the independent TOTP oracle -----

/// The Python interpreter that has `pyotp`: `$KURA_PYOTP_PYTHON`, else the
/// virtualenv `cargo xtask test` prepares at `$HOME/.cache/kura-venv`, else
/// `python3` from `PATH`.
fn pyotp_python() -> String {
    if let Ok(p) = std::env::var("KURA_PYOTP_PYTHON") {
        return p;
    }
    if let Ok(home) = std::env::var("HOME") {
        let venv = format!("{home}/.cache/kura-venv/bin/python");
        if std::path::Path::new(&venv).exists() {
            return venv;
        }
    }
    "python3".into()
}

/// The TOTP code for a base32 secret at Unix time `t`, computed by `pyotp`
/// (RFC 6238, SHA-1, 6 digits, 30 s), never by the code under test.
fn pyotp_code(secret_b32: &str, t: OffsetDateTime) -> String {
    let python = pyotp_python();
    let out = Command::new(&python)
        .args([
            "-c",
            "import sys, pyotp; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))",
            secret_b32,
            &t.unix_timestamp().to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}; install pyotp (see pyotp_python)"));
    assert!(
        out.status.success(),
        "pyotp failed under {python} (is pyotp installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(code.len(), 6, "{code}");
    code
}

// ----- environment -----

const START: OffsetDateTime = datetime!(2026-03-02 09:00:00 UTC);
const PASSWORD: &str = "tangerine-Rowboat-41-quietly";

struct Env {
    _tmp: tempfile::TempDir,
    storage: Storage,
    store: Arc<SqliteIdentityStore>,
    clock: ManualClock,
    id: Identity,
}

async fn env_with(config: IdentityConfig) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("kura-data"));
    dir.prepare().unwrap();
    let kms = Arc::new(
        LocalKms::create(
            &dir.master_key_file(),
            None,
            SealParams::default(),
            OffsetDateTime::now_utc(),
        )
        .unwrap(),
    );
    let clock = ManualClock::new(START);
    let storage = open_storage(
        &dir,
        kms,
        Arc::new(clock.clone()),
        StorageOptions::default(),
    )
    .await
    .unwrap();
    let store = Arc::new(SqliteIdentityStore::new(storage.sqlite.pool().clone()));
    let id = Identity::new(
        store.clone(),
        storage.platform.clone(),
        Arc::new(clock.clone()),
        config,
    )
    .unwrap();
    Env {
        _tmp: tmp,
        storage,
        store,
        clock,
        id,
    }
}

async fn env() -> Env {
    env_with(IdentityConfig::default()).await
}

impl Env {
    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    async fn setup_token(&self) -> String {
        let t = SecretToken::generate().unwrap();
        self.storage
            .platform
            .issue_setup_token(&t.hash(), self.now(), self.now() + Duration::hours(1))
            .await
            .unwrap();
        t.reveal().to_owned()
    }

    async fn principal(&self, token: &str) -> Principal {
        ok(self.id.authenticate_session(token, None).await)
    }

    /// Signs in again with [`PASSWORD`] and resolves the new session.
    async fn fresh_principal(&self, email: &str) -> Principal {
        let s = ok(self.sign_in(email, PASSWORD).await).into_signed_in();
        self.principal(s.token.reveal()).await
    }

    async fn sign_in(&self, email: &str, password: &str) -> Audited<SignInStep> {
        self.id
            .sign_in_password(email, &secret(password), Some(ip("192.0.2.10")))
            .await
    }
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ok<T>(a: Audited<T>) -> T {
    match a.result {
        Ok(v) => v,
        Err(e) => panic!("expected success, got {e:?} (events {:?})", a.events),
    }
}

fn err<T: std::fmt::Debug>(a: Audited<T>) -> (IdentityError, Vec<&'static str>) {
    let actions = a.actions();
    match a.result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => (e, actions),
    }
}

/// A fully signed-in operator (every operator role, TOTP enrolled).
struct Operator {
    account: AccountId,
    token: String,
    totp: String,
    recovery: Vec<String>,
}

async fn first_operator(env: &Env) -> Operator {
    let setup = env.setup_token().await;
    let signed = ok(env
        .id
        .create_first_operator(&setup, "root@example.com", "Root", &secret(PASSWORD), None)
        .await);
    let p = env.principal(signed.token.reveal()).await;
    let enrol = ok(env.id.enroll_totp(&p).await);
    let b32 = enrol.secret_base32.expose_secret().to_owned();
    let confirmed = ok(env.id.confirm_totp(&p, &pyotp_code(&b32, env.now())).await);
    let session = confirmed.session.expect("enrolment session is replaced");
    Operator {
        account: signed.account,
        token: session.token.reveal().to_owned(),
        totp: b32,
        recovery: confirmed
            .recovery_codes
            .reveal()
            .iter()
            .map(|c| c.to_string())
            .collect(),
    }
}

/// A customer signed in without MFA (its team requires none).
struct Customer {
    account: AccountId,
    email: String,
    token: String,
}

async fn team_with_owner(
    env: &Env,
    op: &Operator,
    name: &str,
    owner_email: &str,
) -> (TeamId, Customer) {
    let p = env.principal(&op.token).await;
    let created = ok(env.id.create_team(&p, name, owner_email).await);
    let accepted = ok(env
        .id
        .accept_invitation(
            created.owner_invitation.token.reveal(),
            Acceptance::NewAccount {
                display_name: "Owner",
                password: &secret(PASSWORD),
            },
        )
        .await);
    let signed = ok(env.sign_in(owner_email, PASSWORD).await);
    let SignInStep::Complete(s) = signed else {
        panic!("expected a complete sign-in");
    };
    (
        created.team,
        Customer {
            account: accepted.account,
            email: owner_email.into(),
            token: s.token.reveal().to_owned(),
        },
    )
}

async fn add_member(
    env: &Env,
    owner: &Customer,
    team: TeamId,
    email: &str,
    role: TeamRole,
) -> Customer {
    let p = env.principal(&owner.token).await;
    let inv = ok(env.id.invite(&p, team, email, role).await);
    let accepted = ok(env
        .id
        .accept_invitation(
            inv.token.reveal(),
            Acceptance::NewAccount {
                display_name: "Someone",
                password: &secret(PASSWORD),
            },
        )
        .await);
    let s = ok(env.sign_in(email, PASSWORD).await).into_signed_in();
    Customer {
        account: accepted.account,
        email: email.into(),
        token: s.token.reveal().to_owned(),
    }
}

// ----- tests -----

#[test]
fn the_totp_oracle_is_independent_and_matches_rfc_6238() {
    // RFC 6238 appendix B, SHA-1, T = 59: 94287082 (last six digits).
    let rfc_secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"; // base32("12345678901234567890")
    assert_eq!(
        pyotp_code(rfc_secret, OffsetDateTime::from_unix_timestamp(59).unwrap()),
        "287082"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_operator_needs_the_setup_token_and_mfa_before_any_admin_action() {
    let env = env().await;
    let setup = env.setup_token().await;
    // Bad input is refused before the token is used, so the link survives.
    let (e, _) = err(env
        .id
        .create_first_operator(&setup, "root@example.com", "Root", &secret("short"), None)
        .await);
    assert!(matches!(e, IdentityError::WeakPassword(_)), "{e:?}");
    let (e, _) = err(env
        .id
        .create_first_operator(&setup, "not-an-email", "Root", &secret(PASSWORD), None)
        .await);
    assert!(matches!(e, IdentityError::InvalidAttribute(_)), "{e:?}");
    assert_eq!(
        env.storage
            .platform
            .check_setup_token(&kura_crypto::token::TokenHash::of(&setup), env.now(), false)
            .await
            .unwrap(),
        SetupTokenCheck::Valid
    );
    let (e, actions) = err(env
        .id
        .create_first_operator(
            "wrong-token",
            "root@example.com",
            "Root",
            &secret(PASSWORD),
            None,
        )
        .await);
    assert!(
        matches!(e, IdentityError::BadToken(TokenProblem::Unknown)),
        "{e:?}"
    );
    assert_eq!(actions, ["setup.rejected"]);

    let created = env
        .id
        .create_first_operator(&setup, "Root@Example.COM", "Root", &secret(PASSWORD), None)
        .await;
    assert_eq!(
        created.actions(),
        ["setup.first_operator.created", "auth.signin.succeeded"]
    );
    let signed = ok(created);
    assert!(
        env.storage
            .platform
            .setting(SETUP_COMPLETED)
            .await
            .unwrap()
            .is_some()
    );
    let again = env
        .id
        .create_first_operator(&setup, "second@example.com", "Two", &secret(PASSWORD), None)
        .await;
    assert!(matches!(err(again).0, IdentityError::SetupComplete));

    // The new operator can do nothing administrative until MFA is enrolled.
    let p = env.principal(signed.token.reveal()).await;
    assert_eq!(p.operator_roles.len(), 5);
    let denied = env.id.check(&p, Action::TeamsCreate, &Resource::Platform);
    assert_eq!(denied.actions(), ["authz.denied"]);
    assert!(matches!(
        denied.result,
        Err(IdentityError::Denied(DenyReason::SessionIncomplete))
    ));
    let (e, _) = err(env.id.create_team(&p, "Acme", "owner@acme.test").await);
    assert!(matches!(
        e,
        IdentityError::Denied(DenyReason::SessionIncomplete)
    ));

    let enrol = ok(env.id.enroll_totp(&p).await);
    let b32 = enrol.secret_base32.expose_secret().to_owned();
    assert_eq!(b32.len(), 32, "160-bit secret");
    assert!(
        enrol
            .otpauth_uri
            .expose_secret()
            .starts_with("otpauth://totp/Kura:")
    );
    let (e, _) = err(env.id.confirm_totp(&p, "000000").await);
    assert!(matches!(e, IdentityError::InvalidCode));
    let confirmed = env.id.confirm_totp(&p, &pyotp_code(&b32, env.now())).await;
    assert!(confirmed.actions().contains(&"auth.mfa.enrolled"));
    let confirmed = ok(confirmed);
    assert_eq!(confirmed.recovery_codes.reveal().len(), 10);
    let new = confirmed.session.unwrap();
    // The enrolment token is dead; the new one is a complete, MFA-verified session.
    assert!(matches!(
        env.id
            .authenticate_session(signed.token.reveal(), None)
            .await
            .result,
        Err(IdentityError::Unauthenticated)
    ));
    let p = env.principal(new.token.reveal()).await;
    ok(env.id.check(&p, Action::TeamsCreate, &Resource::Platform));
    ok(env.id.create_team(&p, "Acme", "owner@acme.test").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_codes_are_single_use_and_recovery_codes_too() {
    let env = env().await;
    let op = first_operator(&env).await;
    // Sign in again in the same 30-second step: the code used to confirm
    // enrolment is spent.
    let step = ok(env.sign_in("root@example.com", PASSWORD).await);
    let SignInStep::MfaRequired(pending) = step else {
        panic!("an enrolled operator must pass MFA");
    };
    let pending_p = env.principal(pending.token.reveal()).await;
    let denied = env
        .id
        .check(&pending_p, Action::TeamsList, &Resource::Platform);
    assert!(matches!(
        denied.result,
        Err(IdentityError::Denied(DenyReason::SessionIncomplete))
    ));
    let replay = pyotp_code(&op.totp, env.now());
    let (e, actions) = err(env.id.verify_totp(&pending_p, &replay).await);
    assert!(matches!(e, IdentityError::InvalidCode));
    assert_eq!(actions, ["auth.mfa.failed"]);

    env.advance(Duration::seconds(30));
    let code = pyotp_code(&op.totp, env.now());
    let verified = ok(env.id.verify_totp(&pending_p, &code).await);
    let full = verified.session.expect("a pending session is replaced");
    assert!(matches!(
        env.id
            .authenticate_session(pending.token.reveal(), None)
            .await
            .result,
        Err(IdentityError::Unauthenticated)
    ));
    let p = env.principal(full.token.reveal()).await;
    ok(env.id.check(&p, Action::TeamsList, &Resource::Platform));
    // The same code again (step-up in the complete session) is a replay.
    assert!(matches!(
        env.id.verify_totp(&p, &code).await.result,
        Err(IdentityError::InvalidCode)
    ));
    // A code from the previous step (within the skew) is older than the
    // last used one, so it is refused too.
    let old = pyotp_code(&op.totp, env.now() - Duration::seconds(30));
    assert!(matches!(
        env.id.verify_totp(&p, &old).await.result,
        Err(IdentityError::InvalidCode)
    ));
    // The next step's code (skew +1) is accepted once (after the short
    // delay three wrong codes earned).
    env.advance(Duration::seconds(2));
    let next = pyotp_code(&op.totp, env.now() + Duration::seconds(30));
    ok(env.id.verify_totp(&p, &next).await);

    // Recovery codes: each works once, in any case and with spaces.
    let step = ok(env.sign_in("root@example.com", PASSWORD).await).into_signed_in();
    let pending_p = env.principal(step.token.reveal()).await;
    let typed = op.recovery[0].to_uppercase().replace('-', " ");
    let used = env.id.use_recovery_code(&pending_p, &typed).await;
    assert!(used.actions().contains(&"auth.mfa.recovery_used"));
    let used = ok(used);
    assert_eq!(used.recovery_codes_left, Some(9));
    let again = ok(env.sign_in("root@example.com", PASSWORD).await).into_signed_in();
    let again_p = env.principal(again.token.reveal()).await;
    assert!(matches!(
        env.id
            .use_recovery_code(&again_p, &op.recovery[0])
            .await
            .result,
        Err(IdentityError::InvalidCode)
    ));
    ok(env.id.use_recovery_code(&again_p, &op.recovery[1]).await);
    assert_eq!(env.store.recovery_codes_left(op.account).await.unwrap(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_accounts_and_wrong_passwords_look_the_same() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (_team, owner) = team_with_owner(&env, &op, "Acme", "owner@acme.test").await;
    let disabled = add_member(&env, &owner, _team, "gone@acme.test", TeamRole::Member).await;
    let owner_p = env.principal(&owner.token).await;
    ok(env
        .id
        .set_account_disabled(&owner_p, disabled.account, true)
        .await);

    let mut timings = Vec::new();
    let mut outcomes = Vec::new();
    for (email, pw) in [
        ("nobody@acme.test", PASSWORD),
        (owner.email.as_str(), "wrong-password-but-long"),
        (disabled.email.as_str(), PASSWORD),
    ] {
        let mut times = Vec::new();
        for _ in 0..5 {
            // Stay below the delay threshold so every attempt runs the hash.
            env.advance(Duration::minutes(16));
            let t = Instant::now();
            let a = env.id.sign_in_password(email, &secret(pw), None).await;
            times.push(t.elapsed());
            let (e, actions) = err(a);
            outcomes.push((e.to_string(), format!("{e:?}"), actions));
        }
        // The fastest attempt is the floor the hash sets; slower ones only
        // add the machine's noise (fsync latency, other processes).
        times.sort();
        timings.push(times[0]);
    }
    let first = &outcomes[0];
    for o in &outcomes {
        assert_eq!(o, first, "every failure looks the same to the caller");
    }
    assert_eq!(first.2, ["auth.signin.failed"]);
    // The unknown account ran a real Argon2 verification (the dummy hash):
    // its fastest time is of the same order as the wrong password's.
    let (unknown, wrong) = (timings[0].as_secs_f64(), timings[1].as_secs_f64());
    // Skipping the hash would make the unknown account about twenty times
    // faster; noise on a loaded machine only ever adds time, so the upper
    // bound is loose.
    assert!(
        unknown > wrong * 0.25 && unknown < wrong * 10.0,
        "unknown {unknown:.3}s vs wrong password {wrong:.3}s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_delay_then_lock_out_and_the_lockout_expires() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (_team, owner) = team_with_owner(&env, &op, "Acme", "owner@acme.test").await;
    let src = Some(ip("198.51.100.7"));
    let wrong = secret("wrong-password-but-long");
    let fail = || env.id.sign_in_password(&owner.email, &wrong, src);
    for _ in 0..3 {
        assert!(matches!(
            err(fail().await).0,
            IdentityError::InvalidCredentials
        ));
    }
    // After three failures the next attempt must wait (growing delay) and
    // is refused without checking the password, even with the right one.
    let (e, actions) = err(env.sign_in(&owner.email, PASSWORD).await);
    assert!(matches!(e, IdentityError::Throttled { .. }), "{e:?}");
    assert_eq!(actions, ["auth.signin.throttled"]);
    let mut started = false;
    for _ in 3..10 {
        env.advance(Duration::seconds(61));
        let a = fail().await;
        started |= a.actions().contains(&"auth.lockout.started");
        assert!(matches!(err(a).0, IdentityError::InvalidCredentials));
    }
    assert!(started, "the tenth failure starts a lockout");
    env.advance(Duration::minutes(5));
    let (e, _) = err(env.sign_in(&owner.email, PASSWORD).await);
    let IdentityError::Throttled { retry_after } = e else {
        panic!("locked out, got {e:?}");
    };
    assert!(retry_after > env.now());
    // Another account from another address is not affected.
    let other = env
        .id
        .sign_in_password(
            "root@example.com",
            &secret(PASSWORD),
            Some(ip("203.0.113.9")),
        )
        .await;
    assert!(other.result.is_ok());
    // The lockout ends by itself, and that is recorded.
    env.clock.advance(retry_after - env.now());
    let a = env.sign_in(&owner.email, PASSWORD).await;
    assert!(
        a.actions().contains(&"auth.lockout.expired"),
        "{:?}",
        a.actions()
    );
    assert!(matches!(ok(a), SignInStep::Complete(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_after_idle_and_absolute_timeouts() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (_team, owner) = team_with_owner(&env, &op, "Acme", "owner@acme.test").await;
    // Idle: 29 minutes apart is fine (each use restarts the timer), 30 is not.
    env.advance(Duration::minutes(29));
    env.principal(&owner.token).await;
    env.advance(Duration::minutes(29));
    env.principal(&owner.token).await;
    env.advance(Duration::minutes(30));
    let a = env.id.authenticate_session(&owner.token, None).await;
    assert_eq!(a.actions(), ["auth.session.rejected"]);
    assert_eq!(a.events[0].detail_value("reason"), Some("idle_timeout"));
    assert!(matches!(a.result, Err(IdentityError::Unauthenticated)));

    // Absolute: used every 20 minutes, it still ends 12 hours after sign-in.
    let s = ok(env.sign_in(&owner.email, PASSWORD).await).into_signed_in();
    let token = s.token.reveal().to_owned();
    let signed_at = env.now();
    while env.now() + Duration::minutes(20) < signed_at + Duration::hours(12) {
        env.advance(Duration::minutes(20));
        env.principal(&token).await;
    }
    env.clock
        .advance(signed_at + Duration::hours(12) - env.now());
    let a = env.id.authenticate_session(&token, None).await;
    assert_eq!(a.events[0].detail_value("reason"), Some("absolute_timeout"));
    assert!(a.result.is_err());
    // Unknown tokens are simply unauthenticated.
    assert!(matches!(
        env.id
            .authenticate_session("not-a-token", None)
            .await
            .result,
        Err(IdentityError::Unauthenticated)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_configurable() {
    let mut config = IdentityConfig::default();
    config.session.idle_timeout = Duration::minutes(5);
    config.session.absolute_timeout = Duration::hours(1);
    let env = env_with(config).await;
    let op = first_operator(&env).await;
    env.advance(Duration::minutes(5));
    assert!(
        env.id
            .authenticate_session(&op.token, None)
            .await
            .result
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_revokes_the_other_sessions() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (team, owner) = team_with_owner(&env, &op, "Acme", "owner@acme.test").await;
    let other = ok(env.sign_in(&owner.email, PASSWORD).await).into_signed_in();
    let p = env.principal(&owner.token).await;
    let listed = ok(env.id.sessions(&p).await);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed.iter().filter(|s| s.current).count(), 1);

    let (e, _) = err(env
        .id
        .change_password(
            &p,
            &secret("not-the-password"),
            &secret("a-brand-new-passphrase"),
        )
        .await);
    assert!(matches!(e, IdentityError::InvalidCredentials));
    let (e, _) = err(env
        .id
        .change_password(&p, &secret(PASSWORD), &secret("password1234"))
        .await);
    assert!(matches!(e, IdentityError::WeakPassword(_)));
    // A personal token dies with the old password; a team's service token
    // (the team's, not the person's) stays.
    let token = |kind, service| NewApiToken {
        name: "t".into(),
        kind,
        scopes: BTreeSet::from(["hosts:read".to_owned()]),
        lifetime: Duration::days(30),
        service,
    };
    let personal = ok(env
        .id
        .create_api_token(&p, token(ApiTokenKind::Personal, None))
        .await);
    let service = ok(env
        .id
        .create_api_token(
            &p,
            token(ApiTokenKind::Service, Some((team, TeamRole::Member))),
        )
        .await);
    let changed = env
        .id
        .change_password(&p, &secret(PASSWORD), &secret("a-brand-new-passphrase"))
        .await;
    assert_eq!(changed.actions(), ["auth.password.changed"]);
    assert_eq!(changed.events[0].detail_value("tokens_revoked"), Some("1"));
    let changed = ok(changed);
    assert_eq!(changed.sessions_revoked, 1);
    assert_eq!(changed.tokens_revoked, 1);
    let auth_token = |t: &IssuedApiToken| {
        let text = t.token.expose_secret().to_owned();
        let id = env.id.clone();
        async move { id.authenticate_api_token(&text, None).await.result }
    };
    assert!(matches!(
        auth_token(&personal).await,
        Err(IdentityError::Unauthenticated)
    ));
    auth_token(&service).await.unwrap();
    assert!(
        env.id
            .authenticate_session(other.token.reveal(), None)
            .await
            .result
            .is_err()
    );
    env.principal(&owner.token).await;
    assert!(env.sign_in(&owner.email, PASSWORD).await.result.is_err());
    ok(env.sign_in(&owner.email, "a-brand-new-passphrase").await);

    // An admin's reset revokes every session of the target; disabling too.
    let member = add_member(&env, &owner, team, "m@acme.test", TeamRole::Member).await;
    let p = env.principal(&owner.token).await;
    ok(env
        .id
        .reset_password(&p, member.account, &secret("reset-by-the-owner-1"))
        .await);
    assert!(
        env.id
            .authenticate_session(&member.token, None)
            .await
            .result
            .is_err()
    );
    let s = ok(env.sign_in(&member.email, "reset-by-the-owner-1").await).into_signed_in();
    ok(env.id.set_account_disabled(&p, member.account, true).await);
    assert!(
        env.id
            .authenticate_session(s.token.reveal(), None)
            .await
            .result
            .is_err()
    );
    assert!(matches!(
        err(env.sign_in(&member.email, "reset-by-the-owner-1").await).0,
        IdentityError::InvalidCredentials
    ));
    // Sign out, and sign out everywhere.
    let a = ok(env.sign_in(&owner.email, "a-brand-new-passphrase").await).into_signed_in();
    let pa = env.principal(a.token.reveal()).await;
    ok(env.id.sign_out(&pa).await);
    assert!(
        env.id
            .authenticate_session(a.token.reveal(), None)
            .await
            .result
            .is_err()
    );
    let p = env.principal(&owner.token).await;
    assert!(ok(env.id.sign_out_everywhere(&p).await) >= 1);
    assert!(
        env.id
            .authenticate_session(&owner.token, None)
            .await
            .result
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_actions_need_a_recent_mfa_check() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (team, _owner) = team_with_owner(&env, &op, "Acme", "owner@acme.test").await;
    // Operators: creating an operator is sensitive; eleven minutes after the
    // last MFA check it needs a step-up.
    env.advance(Duration::minutes(9));
    let p = env.principal(&op.token).await;
    env.advance(Duration::minutes(2));
    let p2 = env.principal(&op.token).await;
    assert_ne!(p, p2, "the step-up window closed between the two");
    let roles = BTreeSet::from([OperatorRole::Support]);
    let (e, actions) = err(env
        .id
        .create_operator(&p2, "help@example.com", "Help", &secret(PASSWORD), &roles)
        .await);
    assert!(matches!(
        e,
        IdentityError::Denied(DenyReason::StepUpRequired)
    ));
    assert_eq!(actions, ["authz.denied"]);
    // Non-sensitive operator work still goes on.
    ok(env
        .id
        .check(&p2, Action::HostsManage, &Resource::Team(team)));
    ok(env
        .id
        .verify_totp(&p2, &pyotp_code(&op.totp, env.now()))
        .await);
    let p3 = env.principal(&op.token).await;
    ok(env
        .id
        .create_operator(&p3, "help@example.com", "Help", &secret(PASSWORD), &roles)
        .await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_single_use_expire_and_bind_to_their_address() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (team, owner) = team_with_owner(&env, &op, "Acme", "owner@acme.test").await;
    let p = env.principal(&owner.token).await;
    let inv = ok(env
        .id
        .invite(&p, team, "New@ACME.test", TeamRole::Member)
        .await);
    assert_eq!(inv.email.as_str(), "New@acme.test");
    let accept = |token: String| {
        let env = &env;
        async move {
            env.id
                .accept_invitation(
                    &token,
                    Acceptance::NewAccount {
                        display_name: "New",
                        password: &secret(PASSWORD),
                    },
                )
                .await
        }
    };
    let first = accept(inv.token.reveal().to_owned()).await;
    assert_eq!(first.actions(), ["account.created", "invitation.accepted"]);
    ok(first);
    let (e, actions) = err(accept(inv.token.reveal().to_owned()).await);
    assert!(
        matches!(e, IdentityError::BadToken(TokenProblem::Used)),
        "{e:?}"
    );
    assert_eq!(actions, ["invitation.rejected"]);

    let late = ok(env
        .id
        .invite(&p, team, "late@acme.test", TeamRole::Member)
        .await);
    env.advance(Duration::days(7));
    let (e, _) = err(accept(late.token.reveal().to_owned()).await);
    assert!(
        matches!(e, IdentityError::BadToken(TokenProblem::Expired)),
        "{e:?}"
    );
    assert!(
        env.store
            .account_by_email("late@acme.test")
            .await
            .unwrap()
            .is_none()
    );

    // A week later the owner signs in again.
    let fresh = ok(env.sign_in(&owner.email, PASSWORD).await).into_signed_in();
    let owner = Customer {
        token: fresh.token.reveal().to_owned(),
        ..owner
    };
    let p = env.principal(&owner.token).await;
    let withdrawn = ok(env
        .id
        .invite(&p, team, "w@acme.test", TeamRole::Member)
        .await);
    let open: Vec<_> = ok(env.id.invitations(&p, team).await)
        .into_iter()
        .map(|i| i.email)
        .collect();
    assert_eq!(open, ["late@acme.test", "w@acme.test"]);
    ok(env.id.revoke_invitation(&p, team, withdrawn.id).await);
    assert_eq!(ok(env.id.invitations(&p, team).await).len(), 1);
    let (e, _) = err(accept(withdrawn.token.reveal().to_owned()).await);
    assert!(matches!(e, IdentityError::BadToken(TokenProblem::Unknown)));
    let (e, _) = err(accept("never-issued".into()).await);
    assert!(matches!(e, IdentityError::BadToken(TokenProblem::Unknown)));

    // An existing account may accept only an invitation for its own address.
    let someone_else = ok(env
        .id
        .invite(&p, team, "third@acme.test", TeamRole::Member)
        .await);
    let (e, _) = err(env
        .id
        .accept_invitation(someone_else.token.reveal(), Acceptance::Existing(&p))
        .await);
    assert!(matches!(e, IdentityError::Denied(_)));
    // A weak password on acceptance changes nothing; the link still works.
    let (e, _) = err(env
        .id
        .accept_invitation(
            someone_else.token.reveal(),
            Acceptance::NewAccount {
                display_name: "Third",
                password: &secret("123456789012"),
            },
        )
        .await);
    assert!(matches!(e, IdentityError::WeakPassword(_)));
    ok(accept(someone_else.token.reveal().to_owned()).await);
    // Only owners invite owners.
    let admin = add_member(&env, &owner, team, "admin@acme.test", TeamRole::Admin).await;
    let ap = env.principal(&admin.token).await;
    let (e, _) = err(env
        .id
        .invite(&ap, team, "boss@acme.test", TeamRole::Owner)
        .await);
    assert!(matches!(
        e,
        IdentityError::Denied(DenyReason::HigherPrivilegeTarget)
    ));
    ok(env
        .id
        .invite(&ap, team, "staff@acme.test", TeamRole::Member)
        .await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_team_cannot_read_or_change_anything_of_another() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (a, owner_a) = team_with_owner(&env, &op, "Acme", "owner@acme.test").await;
    let (b, owner_b) = team_with_owner(&env, &op, "Bravo", "owner@bravo.test").await;
    let member_b = add_member(&env, &owner_b, b, "m@bravo.test", TeamRole::Member).await;
    let pa = env.principal(&owner_a.token).await;
    let other = |e: IdentityError| matches!(e, IdentityError::Denied(DenyReason::OtherTeam));
    assert!(other(err(env.id.team(&pa, b).await).0));
    assert!(other(err(env.id.members(&pa, b).await).0));
    assert!(other(err(env.id.groups(&pa, b).await).0));
    assert!(other(
        err(env.id.invite(&pa, b, "x@acme.test", TeamRole::Member).await).0
    ));
    assert!(other(err(env.id.create_group(&pa, b, "spies").await).0));
    assert!(other(
        err(env
            .id
            .grant_team_role(
                &pa,
                b,
                GrantSubject::Account(owner_a.account),
                TeamRole::Owner
            )
            .await)
        .0
    ));
    assert!(other(
        err(env.id.remove_member(&pa, b, member_b.account).await).0
    ));
    assert!(other(
        err(env
            .id
            .set_team_mfa_policy(&pa, b, TeamMfaPolicy::None)
            .await)
        .0
    ));
    assert!(other(
        err(env
            .id
            .reset_password(&pa, member_b.account, &secret(PASSWORD))
            .await)
        .0
    ));
    assert!(other(
        err(env
            .id
            .set_account_disabled(&pa, member_b.account, true)
            .await)
        .0
    ));
    let svc = NewApiToken {
        name: "ci".into(),
        kind: ApiTokenKind::Service,
        scopes: BTreeSet::from(["hosts:read".to_owned()]),
        lifetime: Duration::days(30),
        service: Some((b, TeamRole::Member)),
    };
    assert!(other(err(env.id.create_api_token(&pa, svc).await).0));
    for action in [
        Action::HostsRead,
        Action::AppRecordsRead,
        Action::SecurityEventsRead,
    ] {
        assert!(other(err(env.id.check(&pa, action, &Resource::Team(b))).0));
        ok(env.id.check(&pa, action, &Resource::Team(a)));
    }
    // A token of team A is no key to team B either.
    let t = ok(env
        .id
        .create_api_token(
            &pa,
            NewApiToken {
                name: "mine".into(),
                kind: ApiTokenKind::Personal,
                scopes: BTreeSet::from(["hosts:read".to_owned()]),
                lifetime: Duration::days(1),
                service: None,
            },
        )
        .await);
    let tp = ok(env
        .id
        .authenticate_api_token(t.token.expose_secret(), None)
        .await);
    ok(env.id.check(&tp, Action::HostsRead, &Resource::Team(a)));
    assert!(other(
        err(env.id.check(&tp, Action::HostsRead, &Resource::Team(b))).0
    ));
    // And operators never read records of any team.
    let po = env.principal(&op.token).await;
    assert!(
        env.id
            .check(&po, Action::AppRecordsRead, &Resource::Team(a))
            .result
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_equal_or_higher_privilege_resets_high_privilege_accounts() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (team, owner) = team_with_owner(&env, &op, "Acme", "owner@acme.test").await;
    let admin = add_member(&env, &owner, team, "admin@acme.test", TeamRole::Admin).await;
    let member = add_member(&env, &owner, team, "m@acme.test", TeamRole::Member).await;
    let pad = env.principal(&admin.token).await;
    ok(env
        .id
        .reset_password(&pad, member.account, &secret("fresh-member-password"))
        .await);
    let (e, actions) = err(env
        .id
        .reset_password(&pad, owner.account, &secret("taken-over-owner!"))
        .await);
    assert!(matches!(
        e,
        IdentityError::Denied(DenyReason::HigherPrivilegeTarget)
    ));
    assert_eq!(actions, ["authz.denied"]);
    assert!(matches!(
        err(env.id.reset_mfa(&pad, owner.account).await).0,
        IdentityError::Denied(DenyReason::HigherPrivilegeTarget)
    ));
    assert!(matches!(
        err(env.id.set_account_disabled(&pad, owner.account, true).await).0,
        IdentityError::Denied(DenyReason::HigherPrivilegeTarget)
    ));
    // The owner's password still works: nothing changed.
    ok(env.sign_in(&owner.email, PASSWORD).await);
    let po = env.principal(&owner.token).await;
    ok(env
        .id
        .reset_password(&po, admin.account, &secret("fresh-admin-password"))
        .await);
    // Granting the owner role through a group is an owner's business too.
    let g = ok(env.id.create_group(&po, team, "leads").await);
    ok(env
        .id
        .grant_team_role(&po, team, GrantSubject::Group(g), TeamRole::Owner)
        .await);
    let s = ok(env.sign_in(&admin.email, "fresh-admin-password").await).into_signed_in();
    let pad = env.principal(s.token.reveal()).await;
    assert!(matches!(
        err(env
            .id
            .set_group_member(&pad, team, g, admin.account, true)
            .await)
        .0,
        IdentityError::Denied(DenyReason::HigherPrivilegeTarget)
    ));
    // The last owner cannot be removed or demoted.
    assert!(matches!(
        err(env.id.remove_member(&po, team, owner.account).await).0,
        IdentityError::LastOwner
    ));
    assert!(matches!(
        err(env
            .id
            .revoke_team_role(
                &po,
                team,
                GrantSubject::Account(owner.account),
                TeamRole::Owner
            )
            .await)
        .0,
        IdentityError::LastOwner
    ));

    // Operators: a support operator cannot reset the server admin; the
    // first operator (all roles) can reset the support operator.
    let pop = env.principal(&op.token).await;
    let support = ok(env
        .id
        .create_operator(
            &pop,
            "help@example.com",
            "Help",
            &secret(PASSWORD),
            &BTreeSet::from([OperatorRole::Support]),
        )
        .await);
    let s = ok(env.sign_in("help@example.com", PASSWORD).await);
    let SignInStep::MfaEnrolmentRequired(s) = s else {
        panic!("operators must enrol MFA");
    };
    let ps = env.principal(s.token.reveal()).await;
    let enrol = ok(env.id.enroll_totp(&ps).await);
    let b32 = enrol.secret_base32.expose_secret().to_owned();
    let s = ok(env.id.confirm_totp(&ps, &pyotp_code(&b32, env.now())).await)
        .session
        .unwrap();
    let ps = env.principal(s.token.reveal()).await;
    assert!(matches!(
        err(env
            .id
            .reset_password(&ps, op.account, &secret("taken-over-root!!"))
            .await)
        .0,
        IdentityError::Denied(DenyReason::NoRole)
    ));
    assert!(matches!(
        err(env
            .id
            .set_operator_role(&ps, op.account, OperatorRole::Support, false)
            .await)
        .0,
        IdentityError::Denied(DenyReason::NoRole)
    ));
    ok(env
        .id
        .set_operator_role(&pop, support, OperatorRole::NetworkAdmin, true)
        .await);
    let ps = env.principal(s.token.reveal()).await;
    assert!(ps.operator_roles.contains(&OperatorRole::NetworkAdmin));
    ok(env
        .id
        .set_operator_role(&pop, support, OperatorRole::NetworkAdmin, false)
        .await);
    assert!(matches!(
        err(env
            .id
            .set_operator_role(&pop, support, OperatorRole::Support, false)
            .await)
        .0,
        IdentityError::InvalidInput(_)
    ));
    ok(env.id.reset_mfa(&pop, support).await);
    assert!(
        env.id
            .authenticate_session(s.token.reveal(), None)
            .await
            .result
            .is_err()
    );
    // Operators never manage customer accounts.
    assert!(matches!(
        err(env
            .id
            .reset_password(&pop, member.account, &secret("operator-was-here"))
            .await)
        .0,
        IdentityError::Denied(DenyReason::OtherTeam)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weaker_stored_hashes_are_upgraded_at_sign_in() {
    let weak = HashParams {
        m_kib: 8192,
        t: 1,
        p: 1,
    };
    let env = env_with(IdentityConfig {
        hash: weak,
        ..IdentityConfig::default()
    })
    .await;
    let op = first_operator(&env).await;
    let stored = env.store.password_hash(op.account).await.unwrap().unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"),
        "{stored}"
    );
    let upgraded = Identity::new(
        env.store.clone(),
        env.storage.platform.clone(),
        Arc::new(env.clock.clone()),
        IdentityConfig::default(),
    )
    .unwrap();
    let a = upgraded
        .sign_in_password("root@example.com", &secret(PASSWORD), None)
        .await;
    assert_eq!(
        a.actions(),
        ["auth.password.rehashed", "auth.signin.succeeded"]
    );
    ok(a);
    let stored = env.store.password_hash(op.account).await.unwrap().unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    let again = upgraded
        .sign_in_password("root@example.com", &secret(PASSWORD), None)
        .await;
    assert_eq!(again.actions(), ["auth.signin.succeeded"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_are_scoped_expire_are_revocable_and_stored_hashed() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (team, owner) = team_with_owner(&env, &op, "Acme", "owner@acme.test").await;
    let p = env.principal(&owner.token).await;
    let issued = env
        .id
        .create_api_token(
            &p,
            NewApiToken {
                name: "laptop".into(),
                kind: ApiTokenKind::Personal,
                scopes: BTreeSet::from(["hosts:read".to_owned()]),
                lifetime: Duration::days(30),
                service: None,
            },
        )
        .await;
    assert_eq!(issued.actions(), ["token.created"]);
    let issued = ok(issued);
    let text = issued.token.expose_secret().to_owned();
    assert!(text.starts_with("kura_pat_"));
    let stored = env.store.api_token(issued.id).await.unwrap().unwrap();
    assert_ne!(stored.token_hash.as_str(), text);
    assert!(!stored.token_hash.as_str().contains(&text[9..]));

    let tp = ok(env.id.authenticate_api_token(&text, None).await);
    ok(env.id.check(&tp, Action::HostsRead, &Resource::Team(team)));
    assert!(matches!(
        err(env
            .id
            .check(&tp, Action::HostsManage, &Resource::Team(team)))
        .0,
        IdentityError::Denied(DenyReason::TokenScope)
    ));
    assert!(matches!(
        err(env
            .id
            .invite(&tp, team, "x@acme.test", TeamRole::Member)
            .await)
        .0,
        IdentityError::Denied(DenyReason::TokenNotAllowed)
    ));
    let listed = ok(env.id.api_tokens(&p).await);
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_used_at.is_some());
    ok(env.id.revoke_api_token(&p, issued.id).await);
    let rejected = env.id.authenticate_api_token(&text, None).await;
    assert_eq!(rejected.actions(), ["token.rejected"]);
    assert!(rejected.result.is_err());

    // Service tokens act with their own role in their team, and expire.
    let svc = ok(env
        .id
        .create_api_token(
            &p,
            NewApiToken {
                name: "ci".into(),
                kind: ApiTokenKind::Service,
                scopes: BTreeSet::from([
                    "records:read".to_owned(),
                    "hosts:read".to_owned(),
                    "account:read".to_owned(),
                ]),
                lifetime: Duration::days(1),
                service: Some((team, TeamRole::Member)),
            },
        )
        .await);
    let sp = ok(env
        .id
        .authenticate_api_token(svc.token.expose_secret(), None)
        .await);
    ok(env
        .id
        .check(&sp, Action::AppRecordsRead, &Resource::Team(team)));
    // It is not its creator: it cannot read the creator's account or tokens.
    assert!(matches!(
        err(env.id.me(&sp).await).0,
        IdentityError::Denied(DenyReason::TokenNotAllowed)
    ));
    assert!(matches!(
        err(env.id.api_tokens(&sp).await).0,
        IdentityError::Denied(DenyReason::TokenNotAllowed)
    ));
    env.advance(Duration::days(1));
    assert!(
        env.id
            .authenticate_api_token(svc.token.expose_secret(), None)
            .await
            .result
            .is_err()
    );
    // Bad requests are refused and create nothing.
    let p = env.fresh_principal(&owner.email).await;
    for bad in [
        NewApiToken {
            name: "x".into(),
            kind: ApiTokenKind::Personal,
            scopes: BTreeSet::from(["root".to_owned()]),
            lifetime: Duration::days(1),
            service: None,
        },
        NewApiToken {
            name: "x".into(),
            kind: ApiTokenKind::Personal,
            scopes: BTreeSet::from(["hosts:read".to_owned()]),
            lifetime: Duration::days(400),
            service: None,
        },
        NewApiToken {
            name: "x".into(),
            kind: ApiTokenKind::Service,
            scopes: BTreeSet::from(["hosts:read".to_owned()]),
            lifetime: Duration::days(1),
            service: Some((team, TeamRole::Owner)),
        },
    ] {
        assert!(matches!(
            err(env.id.create_api_token(&p, bad).await).0,
            IdentityError::InvalidInput(_)
        ));
    }
    assert_eq!(
        env.store.api_tokens_of(owner.account).await.unwrap().len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_mfa_requirements_and_group_roles_apply_at_sign_in() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (team, owner) = team_with_owner(&env, &op, "Acme", "owner@acme.test").await;
    let member = add_member(&env, &owner, team, "m@acme.test", TeamRole::Member).await;
    let po = env.principal(&owner.token).await;
    // A group carrying the auditor role lets its members read team events.
    let g = ok(env.id.create_group(&po, team, "audit").await);
    ok(env
        .id
        .grant_team_role(&po, team, GrantSubject::Group(g), TeamRole::Auditor)
        .await);
    let pm = env.principal(&member.token).await;
    assert!(
        env.id
            .check(&pm, Action::SecurityEventsRead, &Resource::Team(team))
            .result
            .is_err()
    );
    ok(env
        .id
        .set_group_member(&po, team, g, member.account, true)
        .await);
    let pm = env.principal(&member.token).await;
    ok(env
        .id
        .check(&pm, Action::SecurityEventsRead, &Resource::Team(team)));

    // Requiring MFA of the group: its members must enrol at next sign-in,
    // and their existing sessions lose access until they do.
    ok(env
        .id
        .set_team_mfa_policy(
            &po,
            team,
            TeamMfaPolicy::Groups {
                groups: BTreeSet::from([g]),
                strength: MfaStrength::Any,
            },
        )
        .await);
    let pm = env.principal(&member.token).await;
    assert!(matches!(
        err(env.id.check(&pm, Action::HostsRead, &Resource::Team(team))).0,
        IdentityError::Denied(DenyReason::MfaRequired)
    ));
    // Nor can it mint an API token, which would not ask for MFA later.
    let personal = || NewApiToken {
        name: "dodge".into(),
        kind: ApiTokenKind::Personal,
        scopes: BTreeSet::from(["hosts:read".to_owned()]),
        lifetime: Duration::days(1),
        service: None,
    };
    assert!(matches!(
        err(env.id.create_api_token(&pm, personal()).await).0,
        IdentityError::Denied(DenyReason::MfaRequired)
    ));
    let step = ok(env.sign_in(&member.email, PASSWORD).await);
    assert!(matches!(step, SignInStep::MfaEnrolmentRequired(_)));
    let ps = env.principal(step.into_signed_in().token.reveal()).await;
    assert!(matches!(
        err(env.id.create_api_token(&ps, personal()).await).0,
        IdentityError::Denied(DenyReason::SessionIncomplete)
    ));
    assert!(matches!(
        err(env
            .id
            .change_password(&ps, &secret(PASSWORD), &secret("another-long-passphrase"))
            .await)
        .0,
        IdentityError::Denied(DenyReason::SessionIncomplete)
    ));
    let enrol = ok(env.id.enroll_totp(&ps).await);
    let b32 = enrol.secret_base32.expose_secret().to_owned();
    let done = ok(env.id.confirm_totp(&ps, &pyotp_code(&b32, env.now())).await);
    let pm = env.principal(done.session.unwrap().token.reveal()).await;
    ok(env.id.check(&pm, Action::HostsRead, &Resource::Team(team)));
    // Passkey-only cannot be met by TOTP.
    ok(env
        .id
        .set_team_mfa_policy(
            &po,
            team,
            TeamMfaPolicy::AllMembers {
                strength: MfaStrength::PasskeyOnly,
            },
        )
        .await);
    let pm = env.fresh_principal(&member.email).await;
    env.advance(Duration::seconds(30));
    let verified = ok(env.id.verify_totp(&pm, &pyotp_code(&b32, env.now())).await);
    let pm = env
        .principal(verified.session.unwrap().token.reveal())
        .await;
    assert!(matches!(
        err(env.id.check(&pm, Action::HostsRead, &Resource::Team(team))).0,
        IdentityError::Denied(DenyReason::PasskeyRequired)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_changes_nothing() {
    let env = env().await;
    let op = first_operator(&env).await;
    let p = env.principal(&op.token).await;
    let (e, _) = err(env.id.create_team(&p, "", "owner@acme.test").await);
    assert!(matches!(e, IdentityError::InvalidInput(_)));
    let (e, _) = err(env.id.create_team(&p, "Acme", "owner@@acme").await);
    assert!(matches!(e, IdentityError::InvalidAttribute(_)));
    assert!(env.store.teams_of(op.account).await.unwrap().is_empty());
    let (team, owner) = team_with_owner(&env, &op, "Acme", "owner@acme.test").await;
    let po = env.principal(&owner.token).await;
    assert!(matches!(
        err(env.id.update_profile(&po, "Ada", Some("12345")).await).0,
        IdentityError::InvalidAttribute(_)
    ));
    assert!(matches!(
        err(env.id.update_profile(&po, " ", None).await).0,
        IdentityError::InvalidAttribute(_)
    ));
    assert_eq!(ok(env.id.me(&po).await).display_name, "Owner");
    let me = ok(env
        .id
        .update_profile(&po, "Ada Lovelace", Some("+44 20 7946 0958"))
        .await);
    assert_eq!(
        (me.display_name.as_str(), me.phone.as_deref()),
        ("Ada Lovelace", Some("+442079460958"))
    );
    ok(env.id.create_group(&po, team, "ops").await);
    assert!(matches!(
        err(env.id.create_group(&po, team, "ops").await).0,
        IdentityError::Conflict(_)
    ));
    assert_eq!(env.store.groups(team).await.unwrap().len(), 1);
    assert!(matches!(
        err(env
            .id
            .set_team_mfa_policy(
                &po,
                team,
                TeamMfaPolicy::Groups {
                    groups: BTreeSet::from([kura_types::GroupId::new()]),
                    strength: MfaStrength::Any
                }
            )
            .await)
        .0,
        IdentityError::InvalidInput(_)
    ));
}
