//! Ed25519 signatures, for statements others must be able to check later
//! (the event log's checkpoints).
//!
//! A [`SigningKey`] is generated as a PKCS#8 v2 document, which is also its
//! storage form ([`SigningKey::to_pkcs8`], to be sealed before it is written
//! anywhere). Only the [`PublicKey`] leaves the process in the clear; its
//! [`PublicKey::key_id`] names it in signed statements.

use std::fmt;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use zeroize::Zeroizing;

use crate::digest;

/// The length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Why a signing operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// Key generation failed (the random generator or the library).
    #[error("cannot generate an Ed25519 key")]
    Generate,
    /// Stored key material is not a valid Ed25519 PKCS#8 document.
    #[error("the stored Ed25519 key is not a valid PKCS#8 document")]
    InvalidKey,
    /// A public key or signature has the wrong form.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The signature does not match the message under this public key.
    #[error("signature does not verify")]
    BadSignature,
}

/// An Ed25519 private key. Its PKCS#8 form is wiped on drop and nothing about
/// it prints except the public key id.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl SigningKey {
    /// A fresh key from the system random generator.
    pub fn generate() -> Result<Self, SigningError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // The document zeroizes its own buffer when dropped.
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SigningError::Generate)?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// Loads a key from its PKCS#8 v2 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, SigningError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| SigningError::InvalidKey)?;
        Ok(Self {
            pair,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
        })
    }

    /// The PKCS#8 document, for sealing into storage. It is a secret: seal it
    /// before writing it anywhere and let the returned buffer drop (it wipes).
    pub fn to_pkcs8(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8.clone()
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(out)
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        let sig = self.pair.sign(message);
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(sig.as_ref());
        Signature(out)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.public_key().key_id())
            .field("private", &"[REDACTED]")
            .finish()
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// Wraps raw public key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SigningError> {
        let raw: [u8; PUBLIC_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| SigningError::Malformed("public key"))?;
        Ok(Self(raw))
    }

    /// Parses the lowercase hex form.
    pub fn from_hex(s: &str) -> Result<Self, SigningError> {
        let bytes = hex::decode(s.trim()).map_err(|_| SigningError::Malformed("public key"))?;
        Self::from_bytes(&bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short stable name for the key: the first 16 hex digits of the
    /// SHA-256 of the raw public key.
    pub fn key_id(&self) -> String {
        let mut id = digest::sha256_hex(&self.0);
        id.truncate(16);
        id
    }

    /// Checks `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SigningError> {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, &signature.0)
            .map_err(|_| SigningError::BadSignature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; SIGNATURE_LEN]);

impl Signature {
    /// Wraps raw signature bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SigningError> {
        let raw: [u8; SIGNATURE_LEN] = bytes
            .try_into()
            .map_err(|_| SigningError::Malformed("signature"))?;
        Ok(Self(raw))
    }

    /// Parses the lowercase hex form.
    pub fn from_hex(s: &str) -> Result<Self, SigningError> {
        let bytes = hex::decode(s.trim()).map_err(|_| SigningError::Malformed("signature"))?;
        Self::from_bytes(&bytes)
    }

    /// The raw 64 bytes.
    pub fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_survives_storage() {
        let key = SigningKey::generate().unwrap();
        let sig = key.sign(b"checkpoint 7");
        let public = key.public_key();
        public.verify(b"checkpoint 7", &sig).unwrap();
        let reloaded = SigningKey::from_pkcs8(&key.to_pkcs8()).unwrap();
        assert_eq!(reloaded.public_key(), public);
        reloaded
            .public_key()
            .verify(b"checkpoint 7", &reloaded.sign(b"checkpoint 7"))
            .unwrap();
        let round = PublicKey::from_hex(&public.to_hex()).unwrap();
        assert_eq!(round, public);
        assert_eq!(Signature::from_hex(&sig.to_hex()).unwrap(), sig);
        assert_eq!(public.key_id().len(), 16);
    }

    #[test]
    fn forgeries_wrong_keys_and_garbage_fail() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let sig = key.sign(b"message");
        let public = key.public_key();
        assert_eq!(
            public.verify(b"messagf", &sig),
            Err(SigningError::BadSignature)
        );
        assert_eq!(
            other.public_key().verify(b"message", &sig),
            Err(SigningError::BadSignature)
        );
        for i in 0..SIGNATURE_LEN {
            let mut bad = *sig.as_bytes();
            bad[i] ^= 0x01;
            let bad = Signature::from_bytes(&bad).unwrap();
            assert_eq!(
                public.verify(b"message", &bad),
                Err(SigningError::BadSignature),
                "byte {i}"
            );
        }
        assert!(Signature::from_bytes(&[0; 63]).is_err());
        assert!(PublicKey::from_hex("zz").is_err());
        assert_eq!(
            SigningKey::from_pkcs8(b"not a key").unwrap_err(),
            SigningError::InvalidKey
        );
    }

    #[test]
    fn private_material_never_prints() {
        let key = SigningKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("REDACTED"), "{shown}");
        assert!(shown.contains(&key.public_key().key_id()), "{shown}");
        let pkcs8_hex = hex::encode(&*key.to_pkcs8());
        // The last 32 bytes of the document hold the public key in v2; the
        // seed sits before it and must not appear.
        assert!(!shown.contains(&pkcs8_hex[32..64]), "{shown}");
    }
}
