//! Second factors: TOTP, recovery codes and team MFA requirements
//! (passkeys have their own module, `passkey`).

use std::collections::BTreeSet;

use kura_crypto::token::TokenHash;
use kura_types::GroupId;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Builder, Secret};
use zeroize::Zeroizing;

/// TOTP time step in seconds (RFC 6238 default, what authenticator apps use).
pub const TOTP_STEP_SECONDS: u64 = 30;
/// Digits per TOTP code.
pub const TOTP_DIGITS: u8 = 6;
/// Steps accepted either side of the current one.
pub const TOTP_SKEW_STEPS: u16 = 1;
/// Secret length: 160 bits, as RFC 4226 recommends.
pub const TOTP_SECRET_BYTES: usize = 20;
/// Recovery codes issued at a time.
pub const RECOVERY_CODE_COUNT: usize = 10;

/// How strong a team's required second factor must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MfaStrength {
    /// Any second factor (TOTP, recovery code, passkey).
    Any,
    /// Only a passkey (phishing-resistant).
    PasskeyOnly,
}

/// Who in a team must use MFA.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "applies_to", rename_all = "snake_case")]
pub enum TeamMfaPolicy {
    /// Nobody is required to (operators always are, whatever their teams say).
    #[default]
    None,
    /// Every member.
    AllMembers {
        /// Minimum strength.
        strength: MfaStrength,
    },
    /// Members of the chosen groups.
    Groups {
        /// The groups.
        groups: BTreeSet<GroupId>,
        /// Minimum strength.
        strength: MfaStrength,
    },
}

impl TeamMfaPolicy {
    /// The strength required of an account in these groups, if any.
    pub fn requirement_for(&self, member_groups: &BTreeSet<GroupId>) -> Option<MfaStrength> {
        match self {
            Self::None => None,
            Self::AllMembers { strength } => Some(*strength),
            Self::Groups { groups, strength } => {
                (!groups.is_disjoint(member_groups)).then_some(*strength)
            }
        }
    }

    pub(crate) fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{\"applies_to\":\"none\"}".into())
    }

    pub(crate) fn from_stored(s: &str) -> Result<Self, crate::IdentityError> {
        serde_json::from_str(s)
            .map_err(|e| crate::IdentityError::Corrupt(format!("team MFA policy: {e}")))
    }
}

/// A TOTP shared secret; zeroized on drop, never printed.
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret([REDACTED])")
    }
}

/// The TOTP secret or random generator failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("TOTP failed: {0}")]
pub struct TotpError(String);

impl TotpSecret {
    /// A new 160-bit secret from the system CSPRNG.
    pub fn generate() -> Result<Self, TotpError> {
        let bytes: [u8; TOTP_SECRET_BYTES] =
            kura_crypto::random::array().map_err(|e| TotpError(e.to_string()))?;
        Ok(Self(Zeroizing::new(bytes.to_vec())))
    }

    /// Wraps a stored secret.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw secret, for storage.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn totp(&self, issuer: Option<&str>, account: &str) -> Result<totp_rs::Totp, TotpError> {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(TOTP_DIGITS)
            .with_skew(TOTP_SKEW_STEPS)
            .with_step_duration(TOTP_STEP_SECONDS)
            .with_secret(Secret::new(self.0.to_vec().into_boxed_slice()))
            .with_account_name(account)
            .with_issuer(issuer)
            .build()
            .map_err(|e| TotpError(format!("{e:?}")))
    }

    /// The secret in base32 (for manual entry in an authenticator app).
    pub fn base32(&self) -> SecretString {
        SecretString::from(Secret::new(self.0.to_vec().into_boxed_slice()).to_base32())
    }

    /// The `otpauth://` URI (for a QR code).
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> Result<SecretString, TotpError> {
        // `:` separates issuer and account in the label, so neither may hold one.
        let issuer = issuer.replace(':', " ");
        let account = account.replace(':', " ");
        let url = self
            .totp(Some(&issuer), &account)?
            .to_url()
            .map_err(|e| TotpError(format!("{e:?}")))?;
        Ok(SecretString::from(url))
    }

    /// Checks a code at Unix time `now_unix`, accepting the current step and
    /// one either side, but only steps after `last_used_step` (RFC 6238 §5.2:
    /// a code is accepted once). Returns the matched step.
    pub fn verify(&self, code: &str, now_unix: u64, last_used_step: Option<i64>) -> Option<i64> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != usize::from(TOTP_DIGITS) || !code.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let totp = self.totp(None, "kura").ok()?;
        let current = now_unix / TOTP_STEP_SECONDS;
        let skew = u64::from(TOTP_SKEW_STEPS);
        let mut matched = None;
        // Every candidate is computed and compared in constant time, so the
        // time taken does not tell which step matched.
        for step in current.saturating_sub(skew)..=current.saturating_add(skew) {
            let candidate = totp.generate(step * TOTP_STEP_SECONDS).to_string();
            let Ok(step_i) = i64::try_from(step) else {
                continue;
            };
            let fresh = last_used_step.is_none_or(|last| step_i > last);
            if kura_crypto::digest::constant_time_eq(candidate.as_bytes(), code.as_bytes())
                && fresh
                && matched.is_none()
            {
                matched = Some(step_i);
            }
        }
        matched
    }

    /// The code for Unix time `t` (for tests inside this crate only; the
    /// integration tests use an independent implementation).
    #[cfg(test)]
    pub(crate) fn code_at(&self, t: u64) -> String {
        self.totp(None, "kura")
            .map(|t2| t2.generate(t).to_string())
            .unwrap_or_default()
    }
}

/// Freshly issued recovery codes, to show the holder once.
pub struct RecoveryCodes(Vec<SecretString>);

impl std::fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryCodes([{} REDACTED])", self.0.len())
    }
}

/// Crockford's base32 alphabet (no i, l, o, u), lowercase.
const CODE_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

impl RecoveryCodes {
    /// Ten codes of 80 random bits each, shown as `xxxx-xxxx-xxxx-xxxx`.
    pub fn generate() -> Result<Self, TotpError> {
        let mut codes = Vec::with_capacity(RECOVERY_CODE_COUNT);
        for _ in 0..RECOVERY_CODE_COUNT {
            let bytes: [u8; 10] =
                kura_crypto::random::array().map_err(|e| TotpError(e.to_string()))?;
            let mut acc: u128 = 0;
            for b in bytes {
                acc = (acc << 8) | u128::from(b);
            }
            let mut out = String::with_capacity(19);
            for i in 0..16 {
                if i > 0 && i % 4 == 0 {
                    out.push('-');
                }
                let shift = 5 * (15 - i);
                let idx = usize::try_from((acc >> shift) & 0x1f).unwrap_or(0);
                out.push(char::from(CODE_ALPHABET[idx]));
            }
            codes.push(SecretString::from(out));
        }
        Ok(Self(codes))
    }

    /// The codes, to show once.
    pub fn reveal(&self) -> Vec<&str> {
        self.0.iter().map(|c| c.expose_secret()).collect()
    }

    /// The digests to store.
    pub fn hashes(&self) -> Vec<TokenHash> {
        self.0
            .iter()
            .map(|c| recovery_code_hash(c.expose_secret()))
            .collect()
    }
}

/// The stored digest of a recovery code, after normalising what a person
/// may type (case, dashes, spaces, and Crockford's look-alikes).
///
/// SHA-256 rather than Argon2id: each code carries 80 bits from the CSPRNG,
/// so even a stolen digest cannot be brute-forced (2^80 guesses), and a slow
/// hash only helps secrets people choose. A fast hash also lets the store
/// find and use up a code in one atomic update.
pub fn recovery_code_hash(code: &str) -> TokenHash {
    let normal: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| match c.to_ascii_lowercase() {
            'i' | 'l' => '1',
            'o' => '0',
            other => other,
        })
        .collect();
    TokenHash::of(&format!("kura-recovery:{normal}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_160_bits_and_print_redacted() {
        let s = TotpSecret::generate().unwrap();
        assert_eq!(s.as_bytes().len(), 20);
        assert_eq!(s.base32().expose_secret().len(), 32);
        assert!(!format!("{s:?}").contains(s.base32().expose_secret()));
        let uri = s.otpauth_uri("Kura", "ada@example.com").unwrap();
        let uri = uri.expose_secret();
        assert!(
            uri.starts_with("otpauth://totp/Kura:ada%40example.com?"),
            "{uri}"
        );
        assert!(uri.contains("issuer=Kura"), "{uri}");
    }

    #[test]
    fn codes_verify_within_one_step_and_only_once() {
        let s = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        // RFC 6238 test vector (SHA-1, T = 59 s): 94287082, last six digits.
        assert_eq!(s.code_at(59), "287082");
        let t = 1_700_000_000;
        let step = i64::try_from(t / 30).unwrap();
        let code = s.code_at(t);
        assert_eq!(s.verify(&code, t, None), Some(step));
        assert_eq!(s.verify(&code, t + 30, None), Some(step));
        assert_eq!(s.verify(&code, t - 30, None), Some(step));
        assert_eq!(s.verify(&code, t + 60, None), None);
        assert_eq!(s.verify(&code, t, Some(step)), None, "replay refused");
        assert_eq!(s.verify(&code, t, Some(step - 1)), Some(step));
        assert_eq!(s.verify("12345", t, None), None);
        assert_eq!(s.verify("abcdef", t, None), None);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(s.verify(&spaced, t, None), Some(step));
    }

    #[test]
    fn recovery_codes_are_distinct_and_hash_after_normalising() {
        let codes = RecoveryCodes::generate().unwrap();
        let shown = codes.reveal();
        assert_eq!(shown.len(), 10);
        let unique: BTreeSet<&str> = shown.iter().copied().collect();
        assert_eq!(unique.len(), 10);
        for c in &shown {
            assert_eq!(c.len(), 19);
            assert!(
                c.chars()
                    .all(|ch| ch == '-' || CODE_ALPHABET.contains(&(ch as u8)))
            );
        }
        let hashes = codes.hashes();
        assert_eq!(recovery_code_hash(shown[0]), hashes[0]);
        assert_eq!(
            recovery_code_hash(&shown[0].to_uppercase().replace('-', " ")),
            hashes[0]
        );
        assert!(!format!("{codes:?}").contains(shown[0]));
    }

    #[test]
    fn team_policies_pick_their_members() {
        let g1 = GroupId::new();
        let g2 = GroupId::new();
        let p = TeamMfaPolicy::Groups {
            groups: BTreeSet::from([g1]),
            strength: MfaStrength::PasskeyOnly,
        };
        assert_eq!(
            p.requirement_for(&BTreeSet::from([g1, g2])),
            Some(MfaStrength::PasskeyOnly)
        );
        assert_eq!(p.requirement_for(&BTreeSet::from([g2])), None);
        let all = TeamMfaPolicy::AllMembers {
            strength: MfaStrength::Any,
        };
        assert_eq!(
            all.requirement_for(&BTreeSet::new()),
            Some(MfaStrength::Any)
        );
        assert_eq!(TeamMfaPolicy::from_stored(&p.to_stored()).unwrap(), p);
        assert_eq!(
            TeamMfaPolicy::None.requirement_for(&BTreeSet::from([g1])),
            None
        );
    }
}
