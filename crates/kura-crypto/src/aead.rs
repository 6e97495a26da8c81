//! Authenticated encryption with AES-256-GCM.
//!
//! A sealed box is `version (1 byte) || nonce (12 bytes) || ciphertext || tag`.
//! Nonces are random; callers bind context through the additional data so a
//! box cannot be moved to another purpose.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::random;

const FORMAT_V1: u8 = 1;

/// Sealing or opening failed. Opening fails the same way for a wrong key, wrong
/// context and tampered bytes, so the error reveals nothing about which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AeadError {
    /// The box is not authentic under this key and context.
    #[error("decryption failed: wrong key, wrong context or tampered data")]
    Open,
    /// The cipher or the random generator failed while sealing.
    #[error("encryption failed")]
    Seal,
}

fn cipher(key: &[u8; 32]) -> Result<LessSafeKey, AeadError> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| AeadError::Seal)
}

/// Encrypts `plaintext` under `key`, bound to `context`.
pub fn seal(key: &[u8; 32], context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AeadError> {
    let nonce_bytes: [u8; NONCE_LEN] = random::array().map_err(|_| AeadError::Seal)?;
    let mut in_out = plaintext.to_vec();
    cipher(key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(context),
            &mut in_out,
        )
        .map_err(|_| AeadError::Seal)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&in_out);
    Ok(out)
}

/// Decrypts a box made by [`seal`] with the same key and context.
pub fn open(key: &[u8; 32], context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AeadError> {
    let Some((&FORMAT_V1, rest)) = sealed.split_first() else {
        return Err(AeadError::Open);
    };
    if rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(AeadError::Open);
    }
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| AeadError::Open)?;
    let mut in_out = body.to_vec();
    let plain_len = cipher(key)
        .map_err(|_| AeadError::Open)?
        .open_in_place(nonce, Aad::from(context), &mut in_out)
        .map_err(|_| AeadError::Open)?
        .len();
    in_out.truncate(plain_len);
    Ok(in_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn round_trips() {
        let sealed = seal(&KEY, b"ctx", b"hello").unwrap();
        assert_eq!(open(&KEY, b"ctx", &sealed).unwrap(), b"hello");
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(
            seal(&KEY, b"", b"x").unwrap(),
            seal(&KEY, b"", b"x").unwrap()
        );
    }

    #[test]
    fn every_bit_flip_wrong_key_and_wrong_context_fail() {
        let sealed = seal(&KEY, b"ctx", b"payload").unwrap();
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(open(&KEY, b"ctx", &bad), Err(AeadError::Open), "byte {i}");
            }
        }
        assert_eq!(open(&[8; 32], b"ctx", &sealed), Err(AeadError::Open));
        assert_eq!(open(&KEY, b"other", &sealed), Err(AeadError::Open));
        assert_eq!(open(&KEY, b"ctx", &sealed[..10]), Err(AeadError::Open));
    }
}
