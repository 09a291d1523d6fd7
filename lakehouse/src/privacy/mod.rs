//! Privacy by design: keyed pseudonyms for direct identifiers and encryption of quarantined records.
//!
//! - A `pii: direct` value is replaced before landing by `HMAC-SHA-256(key[domain], normalize(value))` in
//!   lowercase hex; the key id is stored beside it so keys can be rotated. Without the key a pseudonym cannot
//!   be reversed or recomputed; with one key per domain, pseudonyms of two domains cannot be linked.
//! - Quarantined raw records may hold clear identifiers, so they are encrypted with AES-256-GCM under the key
//!   of the reserved domain `quarantine` (random 96-bit nonce prepended to the ciphertext).
//!
//! Keys come from an environment variable or a key file outside the project ([`KeyRing::load`]); their bytes
//! are never printed (`Debug` shows the key ids only).

mod keys;
mod landing;
pub mod normalize;
mod pseudonym;
pub mod udf;

pub use crate::manifest::QUARANTINE_DOMAIN;
pub use keys::{Key, KeyError, KeyRing, key_name, rotate_in_file};
pub use landing::PseudonymColumn;
pub use pseudonym::{Encryptor, Pseudonymizer, decrypt};
