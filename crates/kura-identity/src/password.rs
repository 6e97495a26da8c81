//! Passwords: the NIST SP 800-63B policy and Argon2id hashing.
//!
//! Policy: 12 to 128 characters (Unicode scalar values, not bytes), any
//! characters, no composition rules, and not one of the shipped common or
//! breached passwords (compared case-insensitively). Hashes are PHC strings
//! (`$argon2id$v=19$m=19456,t=2,p=1$…`), so each records its own parameters
//! and [`Passwords::needs_rehash`] can tell when a stored hash is weaker than
//! the current setting.

use std::cell::RefCell;
use std::sync::{LazyLock, OnceLock};

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroize as _;

/// Fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Most characters a password may have (NIST asks to allow at least 64).
pub const MAX_PASSWORD_CHARS: usize = 128;

/// The shipped list: 20,000 distinct passwords of 12 or more characters, the
/// most frequent first-seen in the top-1M list of the "10 million passwords"
/// corpus; see the crate documentation for source and licence. Shorter
/// entries are left out because the length rule already refuses them. The
/// file is sorted and lowercase, so a lookup is a binary search.
static COMMON_PASSWORDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut list: Vec<&'static str> = include_str!("../data/common-passwords.txt")
        .lines()
        .filter(|l| !l.is_empty())
        .collect();
    // The file is sorted already; sorting again costs little and keeps the
    // binary search right even if someone edits the file by hand.
    list.sort_unstable();
    list
});

/// How many passwords the shipped list holds.
pub fn common_password_count() -> usize {
    COMMON_PASSWORDS.len()
}

/// Whether `password` is on the shipped list (case-insensitively).
pub fn is_common_password(password: &str) -> bool {
    let lower = password.to_lowercase();
    COMMON_PASSWORDS.binary_search(&lower.as_str()).is_ok()
}

/// Why a new password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejection {
    /// Fewer than [`MIN_PASSWORD_CHARS`] characters.
    #[error("the password has {actual} characters; at least {min} are needed")]
    TooShort {
        /// Required minimum.
        min: usize,
        /// What was given.
        actual: usize,
    },
    /// More than [`MAX_PASSWORD_CHARS`] characters.
    #[error("the password has more than {max} characters")]
    TooLong {
        /// Allowed maximum.
        max: usize,
    },
    /// On the list of common or breached passwords.
    #[error("the password is on a list of common or breached passwords; choose another")]
    Common,
}

/// Checks a new password against the policy.
pub fn check_password_policy(password: &SecretString) -> Result<(), PasswordRejection> {
    let pw = password.expose_secret();
    let n = pw.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(PasswordRejection::TooShort {
            min: MIN_PASSWORD_CHARS,
            actual: n,
        });
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(PasswordRejection::TooLong {
            max: MAX_PASSWORD_CHARS,
        });
    }
    if is_common_password(pw) {
        return Err(PasswordRejection::Common);
    }
    Ok(())
}

/// The threads every Argon2id computation in the process runs on: one per
/// core, started on first use. Each computation holds its memory cost (19
/// MiB at the OWASP setting) while it runs, so a burst of sign-ins — or an
/// attacker sending many — must not run them on as many threads as there
/// are requests: that holds hundreds of megabytes at once, and the
/// allocator keeps a freed block in each thread's arena, so the process
/// stays that large afterwards. On a few long-lived threads, more
/// concurrent sign-ins only queue (first come, first served), the memory
/// is a few blocks whatever the load, and throughput is the same because
/// the work is CPU-bound anyway.
static HASHERS: LazyLock<Hashers> = LazyLock::new(Hashers::start);

type HashJob = Box<dyn FnOnce() + Send>;

struct Hashers {
    jobs: std::sync::mpsc::Sender<HashJob>,
}

impl Hashers {
    fn start() -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<HashJob>();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        for i in 0..threads {
            let queue = std::sync::Arc::clone(&queue);
            let started = std::thread::Builder::new()
                .name(format!("kura-hash-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take the next job.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => break,
                        };
                        let Ok(job) = job else { break };
                        // A panicking job fails its caller (its answer is
                        // dropped), not the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start a password-hashing thread");
            }
        }
        Self { jobs }
    }
}

thread_local! {
    /// This thread's Argon2 working memory, kept between computations.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Computes an Argon2 hash into `out` in this thread's working memory,
/// which is allocated once (at the largest size asked for) and wiped after
/// every use. Allocating 19 MiB per computation made glibc raise its
/// threshold for serving large blocks from fresh mappings, so later blocks
/// came from, and stayed in, the hashing threads' arenas, fragmented: the
/// process grew by 140–230 MiB during a burst of sign-ins and kept it. Now
/// a hashing thread that has hashed holds exactly one working memory (19
/// MiB at the default cost) for as long as it lives: one per core at most,
/// none before the first password is checked.
fn compute(
    argon2: &Argon2<'_>,
    password: &SecretString,
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), HashError> {
    let count = argon2.params().block_count();
    BLOCKS.with(|cell| {
        let mut blocks = cell.borrow_mut();
        if blocks.len() < count {
            blocks.resize(count, Block::default());
        }
        let memory = &mut blocks[..count];
        let done = argon2.hash_password_into_with_memory(
            password.expose_secret().as_bytes(),
            salt,
            out,
            &mut *memory,
        );
        // The blocks are derived from the password: none outlives the
        // computation.
        memory.iter_mut().for_each(Block::zeroize);
        done.map_err(|e| HashError(e.to_string()))
    })
}

/// Runs password-hashing work (hash, verify, dummy verify) on the
/// process's hashing threads (see `HASHERS`) and waits for it without
/// blocking the async runtime. Every Argon2id computation in Kura goes
/// through here.
pub async fn run_hashing<T, F>(work: F) -> Result<T, HashError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (done, result) = tokio::sync::oneshot::channel();
    let job: HashJob = Box::new(move || {
        let _ = done.send(work());
    });
    HASHERS
        .jobs
        .send(job)
        .map_err(|_| HashError("no password-hashing thread is running".into()))?;
    result
        .await
        .map_err(|_| HashError("the password-hashing thread stopped".into()))
}

/// Hashing failed (bad parameters or a broken random generator).
#[derive(Debug, Clone, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Parallelism.
    pub p: u32,
}

impl HashParams {
    /// OWASP's recommendation for Argon2id: m=19456 KiB (19 MiB), t=2, p=1.
    pub const OWASP: Self = Self {
        m_kib: 19_456,
        t: 2,
        p: 1,
    };
}

impl Default for HashParams {
    fn default() -> Self {
        Self::OWASP
    }
}

/// Hashes and verifies passwords at one parameter setting.
#[derive(Debug)]
pub struct Passwords {
    params: HashParams,
    argon2: Argon2<'static>,
    /// A hash of a fixed string at the current parameters, verified against
    /// when the account does not exist so that both paths cost the same.
    dummy: OnceLock<Result<String, HashError>>,
}

impl Passwords {
    /// A hasher with the given parameters.
    pub fn new(params: HashParams) -> Result<Self, HashError> {
        let p = Params::new(params.m_kib, params.t, params.p, None)
            .map_err(|e| HashError(e.to_string()))?;
        Ok(Self {
            params,
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, p),
            dummy: OnceLock::new(),
        })
    }

    /// A hasher at [`HashParams::OWASP`].
    pub fn owasp() -> Result<Self, HashError> {
        Self::new(HashParams::OWASP)
    }

    /// The parameters new hashes use.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// Hashes a password with a fresh 128-bit salt into a PHC string.
    pub fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        fn err(e: impl std::fmt::Display) -> HashError {
            HashError(e.to_string())
        }
        let salt: [u8; 16] = kura_crypto::random::array().map_err(|e| HashError(e.to_string()))?;
        let salt = Salt::new(&salt).map_err(err)?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        compute(&self.argon2, password, &salt, &mut out)?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(self.argon2.params()).map_err(err)?,
            salt: Some(salt),
            hash: Some(Output::new(&out).map_err(err)?),
        };
        Ok(phc.to_string())
    }

    /// Verifies a password against a stored PHC string using the parameters
    /// recorded in it. The digest comparison is constant-time (the
    /// `password-hash` crate compares outputs without early exit). A
    /// malformed or non-Argon2id hash never verifies.
    pub fn verify(&self, password: &SecretString, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        if parsed.algorithm.as_str() != "argon2id" {
            return false;
        }
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return false;
        };
        // The stored hash's own parameters and output length.
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        let version = match parsed.version.map(Version::try_from).transpose() {
            Ok(v) => v.unwrap_or_default(),
            Err(_) => return false,
        };
        let argon2 = Argon2::new(Algorithm::Argon2id, version, params);
        let mut out = [0u8; Output::MAX_LENGTH];
        let Some(out) = out.get_mut(..expected.len()) else {
            return false;
        };
        if compute(&argon2, password, salt, out).is_err() {
            return false;
        }
        // `Output` compares in constant time.
        Output::new(out).is_ok_and(|computed| computed == *expected)
    }

    /// Runs a verification that cannot succeed, at the cost of a real one,
    /// so an unknown account takes as long to refuse as a wrong password.
    pub fn verify_dummy(&self, password: &SecretString) {
        let dummy = self
            .dummy
            .get_or_init(|| self.hash(&SecretString::from("kura-dummy-password-never-valid")));
        if let Ok(phc) = dummy {
            let _ = self.verify(password, phc);
        }
    }

    /// Whether a stored hash should be replaced on the next successful
    /// sign-in: another algorithm, or any cost parameter below the current
    /// setting.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        if parsed.algorithm.as_str() != "argon2id" {
            return true;
        }
        let Ok(stored) = Params::try_from(&parsed) else {
            return true;
        };
        stored.m_cost() < self.params.m_kib
            || stored.t_cost() < self.params.t
            || stored.p_cost() < self.params.p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn hashing_work_never_runs_on_more_threads_than_cores() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("runtime");
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        runtime.block_on(async {
            let tasks: Vec<_> = (0..cores * 4)
                .map(|_| {
                    let (running, most) = (Arc::clone(&running), Arc::clone(&most));
                    tokio::spawn(run_hashing(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                    }))
                })
                .collect();
            for t in tasks {
                t.await.expect("task").expect("hashing slot");
            }
        });
        let most = most.load(Ordering::SeqCst);
        assert!(
            (1..=cores).contains(&most),
            "{most} ran at once on {cores} cores"
        );
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_and_the_working_memory_is_reused_and_wiped() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let small = HashParams {
            m_kib: 1024,
            t: 1,
            p: 1,
        };
        let ours = Passwords::new(small).unwrap();
        let reference = |m_kib, t, len| {
            Argon2::new(
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(m_kib, t, 1, Some(len)).unwrap(),
            )
        };
        let pw = "correct horse battery staple";
        // A hash the crate made, with other parameters and a longer output,
        // verifies here by its own parameters.
        let theirs = reference(2048, 2, 64)
            .hash_password_with_salt(pw.as_bytes(), b"0123456789abcdef")
            .unwrap()
            .to_string();
        assert!(ours.verify(&secret(pw), &theirs));
        assert!(!ours.verify(&secret("correct horse battery stapler"), &theirs));
        // A hash made here verifies with the crate and has its format.
        let phc = ours.hash(&secret(pw)).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(
            reference(1024, 1, 32)
                .verify_password(pw.as_bytes(), &parsed)
                .is_ok()
        );
        assert!(
            reference(1024, 1, 32)
                .verify_password(b"another password", &parsed)
                .is_err()
        );
        // The thread's working memory is the largest size asked for, kept,
        // and holds nothing of the last computation.
        let (len, wiped) = BLOCKS.with(|b| {
            let b = b.borrow();
            let wiped = b.iter().all(|block| block.as_ref().iter().all(|w| *w == 0));
            (b.len(), wiped)
        });
        assert_eq!(len, 2048);
        assert!(wiped);
    }

    #[test]
    fn length_is_counted_in_characters_at_the_edges() {
        let check = |s: String| check_password_policy(&secret(&s));
        assert_eq!(
            check("x7Qp".repeat(3)[..11].to_owned()),
            Err(PasswordRejection::TooShort {
                min: 12,
                actual: 11
            })
        );
        assert_eq!(check("x7Qp".repeat(3)), Ok(()));
        assert_eq!(check("x7Qp".repeat(32)), Ok(()));
        assert_eq!(
            check(format!("{}z", "x7Qp".repeat(32))),
            Err(PasswordRejection::TooLong { max: 128 })
        );
        // Eleven two-byte characters are 22 bytes but still too short;
        // twelve are enough, and 128 four-byte emoji are not too long.
        assert!(matches!(
            check("é".repeat(11)),
            Err(PasswordRejection::TooShort { actual: 11, .. })
        ));
        assert_eq!(check("é".repeat(12)), Ok(()));
        assert_eq!(check("🦀".repeat(128)), Ok(()));
        assert!(check("🦀".repeat(129)).is_err());
        // Any characters at all, spaces included, without composition rules.
        assert_eq!(check("correct horse battery staple".into()), Ok(()));
        assert_eq!(check("aaaaaaaaaaaaaaaaaaaaaaaab".into()), Ok(()));
    }

    #[test]
    fn common_passwords_are_refused_in_any_case() {
        assert!(common_password_count() >= 10_000);
        for pw in [
            "password1234",
            "PASSWORD1234",
            "123456789012",
            "qwertyuiopasdfgh",
        ] {
            assert_eq!(
                check_password_policy(&secret(pw)),
                Err(PasswordRejection::Common),
                "{pw}"
            );
        }
        assert!(!is_common_password("tY8#kq2!vP0zLm"));
    }

    #[test]
    fn hashes_verify_exactly_and_record_owasp_parameters() {
        let pw = Passwords::owasp().unwrap();
        let phc = pw.hash(&secret("correct horse battery staple")).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(pw.verify(&secret("correct horse battery staple"), &phc));
        assert!(!pw.verify(&secret("correct horse battery stapl"), &phc));
        assert!(!pw.verify(&secret("Correct horse battery staple"), &phc));
        assert!(!pw.verify(&secret("correct horse battery staple"), "garbage"));
        assert!(!pw.needs_rehash(&phc));
        // Two long passwords differing only near the end must not both verify
        // (no truncation).
        let a = "a".repeat(100);
        let mut b = a.clone();
        b.replace_range(90..91, "b");
        let ha = pw.hash(&secret(&a)).unwrap();
        assert!(!pw.verify(&secret(&b), &ha));
        pw.verify_dummy(&secret("anything"));
    }

    #[test]
    fn weaker_stored_parameters_need_a_rehash() {
        let weak = Passwords::new(HashParams {
            m_kib: 8192,
            t: 1,
            p: 1,
        })
        .unwrap();
        let current = Passwords::owasp().unwrap();
        let phc = weak.hash(&secret("correct horse battery staple")).unwrap();
        assert!(current.verify(&secret("correct horse battery staple"), &phc));
        assert!(current.needs_rehash(&phc));
        assert!(!weak.needs_rehash(&phc));
        let stronger = Passwords::new(HashParams {
            m_kib: 19_456,
            t: 3,
            p: 1,
        })
        .unwrap();
        assert!(stronger.needs_rehash(&current.hash(&secret("x")).unwrap()));
        assert!(current.needs_rehash("$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaA"));
        assert!(current.needs_rehash("not a hash"));
    }
}
