//! HMAC-SHA256 (RFC 2104) for messages others check with a shared secret,
//! such as the signatures on outgoing webhooks.
//!
//! [`HmacKey`] holds the secret inside aws-lc-rs and prints as `[REDACTED]`;
//! [`HmacKey::verify`] compares tags in constant time.

use std::fmt;

use aws_lc_rs::hmac;

/// The length of an HMAC-SHA256 tag in bytes.
pub const TAG_LEN: usize = 32;

/// A secret key for HMAC-SHA256.
#[derive(Clone)]
pub struct HmacKey(hmac::Key);

impl HmacKey {
    /// A key from secret bytes. Any length is accepted (RFC 2104 hashes keys
    /// longer than the block size); use at least 32 random bytes.
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The tag of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; TAG_LEN] {
        let tag = hmac::sign(&self.0, message);
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// The tag of `message` as lowercase hex.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        hex::encode(self.sign(message))
    }

    /// Whether `tag` is the tag of `message`, compared in constant time.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.0, message, tag).is_ok()
    }

    /// [`HmacKey::verify`] for a hex-encoded tag; malformed hex never
    /// verifies.
    pub fn verify_hex(&self, message: &[u8], tag_hex: &str) -> bool {
        hex::decode(tag_hex).is_ok_and(|tag| self.verify(message, &tag))
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test cases 1-4, 6 and 7 (case 5 truncates the output).
    #[test]
    fn rfc_4231_vectors() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 6] = [
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                (1..=25).collect(),
                vec![0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                vec![0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (i, (key, data, expected)) in cases.iter().enumerate() {
            let key = HmacKey::new(key);
            assert_eq!(key.sign_hex(data), *expected, "case {i}");
            assert!(key.verify_hex(data, expected), "case {i}");
        }
    }

    #[test]
    fn verification_refuses_changed_messages_tags_and_keys() {
        let key = HmacKey::new(b"0123456789abcdef0123456789abcdef");
        let tag = key.sign(b"1700000000.{}");
        assert!(key.verify(b"1700000000.{}", &tag));
        assert!(!key.verify(b"1700000001.{}", &tag));
        let mut bad = tag;
        bad[31] ^= 1;
        assert!(!key.verify(b"1700000000.{}", &bad));
        assert!(!key.verify(b"1700000000.{}", &tag[..31]));
        assert!(!HmacKey::new(b"other").verify(b"1700000000.{}", &tag));
        assert!(!key.verify_hex(b"1700000000.{}", "not hex"));
        assert_eq!(format!("{key:?}"), "HmacKey([REDACTED])");
    }
}
