//! Opaque bearer secrets: setup links, session tokens, API tokens.
//!
//! A token is 256 random bits shown to its holder once as URL-safe base64; the
//! server stores only its SHA-256 digest. Because the token is uniformly
//! random, a fast hash is the right tool here (unlike passwords).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};

use crate::digest;
use crate::random::{self, RandomError};

/// A freshly issued bearer secret. Its plaintext can be read exactly where it
/// is handed to the holder; everywhere else only its hash travels.
pub struct SecretToken(SecretString);

impl SecretToken {
    /// A new 256-bit token.
    pub fn generate() -> Result<Self, RandomError> {
        let bytes: [u8; 32] = random::array()?;
        Ok(Self(SecretString::from(URL_SAFE_NO_PAD.encode(bytes))))
    }

    /// The token text, to show the holder once.
    pub fn reveal(&self) -> &str {
        self.0.expose_secret()
    }

    /// The digest to store.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.reveal())
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken([REDACTED])")
    }
}

/// The stored form of a token: lowercase hex SHA-256 of its text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    /// Hashes presented token text. Text that could never be a token still
    /// hashes, so lookups take the same path for garbage and for real tokens.
    pub fn of(presented: &str) -> Self {
        Self(digest::sha256_hex(presented.as_bytes()))
    }

    /// Wraps a digest read back from storage.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.0[..self.0.len().min(8)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_256_bits_and_hash_stably() {
        let t = SecretToken::generate().unwrap();
        assert_eq!(t.reveal().len(), 43);
        assert!(
            t.reveal()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(t.hash(), TokenHash::of(t.reveal()));
        assert_ne!(t.hash().as_str(), t.reveal());
        assert!(!format!("{t:?}").contains(t.reveal()));
    }
}
