//! Key material types.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::random::{self, RandomError};

/// A 256-bit data key in plaintext. It exists only in memory, is wiped when
/// dropped and never prints.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// A fresh random data key.
    pub fn generate() -> Result<Self, RandomError> {
        Ok(Self(random::array()?))
    }

    /// Takes ownership of raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key, for handing to a cipher. Callers must not copy it into
    /// anything that outlives the operation.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

/// A data key encrypted under a master key version. Safe to store anywhere:
/// without the master key it is noise, and it is bound to the scope it was
/// wrapped for.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// Which KMS provider wrapped it (`local`, …).
    pub provider: String,
    /// The master key's id within that provider.
    pub key_id: String,
    /// The master key version that wrapped it.
    pub version: u32,
    /// Nonce, ciphertext and tag.
    #[serde(with = "hex_bytes")]
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("provider", &self.provider)
            .field("key_id", &self.key_id)
            .field("version", &self.version)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_material_never_prints() {
        let key = DataKey::from_bytes([0xAB; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }
}
