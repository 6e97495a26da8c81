//! Kura's cryptography, in one place.
//!
//! Every cryptographic primitive Kura uses lives here, on one backend
//! (`aws-lc-rs`, the same library rustls uses): randomness ([`random`]),
//! hashing and constant-time comparison ([`digest`]), message
//! authentication with HMAC-SHA256 ([`hmac`]), authenticated encryption
//! with AES-256-GCM ([`aead`]), opaque bearer secrets ([`token`]), Ed25519
//! signatures for statements others verify later ([`signing`]), and
//! envelope encryption through the [`Kms`] trait with the [`LocalKms`] provider.
//!
//! Key material lives in [`DataKey`] and friends, which zeroize on drop and
//! print as `[REDACTED]`. This crate knows nothing about storage layout, HTTP or
//! configuration files; callers hand it bytes and paths.

pub mod aead;
pub mod digest;
pub mod hmac;
mod keys;
pub mod kms;
pub mod random;
pub mod signing;
pub mod token;

pub use keys::{DataKey, WrappedKey};
pub use kms::{Kms, KmsError, LocalKms, MasterKeyVersion, SealParams, VersionState};
