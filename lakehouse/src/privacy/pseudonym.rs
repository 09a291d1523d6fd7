use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::keys::Key;
use crate::manifest::{Normalize, PhoneCountry};

type HmacSha256 = Hmac<Sha256>;

/// SHA-256 initial state (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// HMAC-SHA-256 for short messages in exactly two SHA-256 compressions: the states after absorbing the
/// `key ^ ipad` and `key ^ opad` blocks are computed once; a message of at most 55 bytes then fits one padded
/// block, and the inner hash one outer block. Equal to the `hmac` crate's result (tested below).
#[derive(Clone)]
struct ShortHmac {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl ShortHmac {
    const MAX_LEN: usize = 55;

    fn new(key: &[u8; 32]) -> Self {
        let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
        for (i, k) in key.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let (mut inner, mut outer) = (SHA256_IV, SHA256_IV);
        sha2::compress256(&mut inner, &[ipad.into()]);
        sha2::compress256(&mut outer, &[opad.into()]);
        Self { inner, outer }
    }

    fn mac(&self, msg: &[u8]) -> [u8; 32] {
        debug_assert!(msg.len() <= Self::MAX_LEN);
        let mut block = [0u8; 64];
        block[..msg.len()].copy_from_slice(msg);
        block[msg.len()] = 0x80;
        block[56..].copy_from_slice(&(((64 + msg.len()) as u64) * 8).to_be_bytes());
        let mut state = self.inner;
        sha2::compress256(&mut state, &[block.into()]);
        let mut block = [0u8; 64];
        for (i, w) in state.iter().enumerate() {
            block[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        block[32] = 0x80;
        block[56..].copy_from_slice(&((64u64 + 32) * 8).to_be_bytes());
        let mut state = self.outer;
        sha2::compress256(&mut state, &[block.into()]);
        let mut out = [0u8; 32];
        for (i, w) in state.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

/// Computes keyed pseudonyms for one column: `hex(HMAC-SHA-256(key, normalize(value)))`.
///
/// Values of up to 55 bytes (names, phone numbers, e-mail addresses) take the two-compression path of
/// `ShortHmac`; longer ones the general HMAC, whose keyed state is computed once and cloned per value.
#[derive(Clone)]
pub struct Pseudonymizer {
    short: ShortHmac,
    mac: HmacSha256,
    key_id: String,
    normalize: Normalize,
    phone_country: Option<PhoneCountry>,
    scratch: String,
}

impl Pseudonymizer {
    /// `phone_country` reads national phone numbers for [`Normalize::Phone`].
    pub fn new(key: &Key, normalize: Normalize, phone_country: Option<PhoneCountry>) -> Self {
        let mac = <HmacSha256 as Mac>::new_from_slice(&key.bytes).expect("HMAC accepts any key length");
        Self {
            short: ShortHmac::new(&key.bytes),
            mac,
            key_id: key.id.clone(),
            normalize,
            phone_country,
            scratch: String::new(),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The raw 32-byte HMAC of `value` after normalization: `Ok(None)` when nothing is left to hash, and an
    /// error saying what is wrong (never the value) when it is not what its normalization reads (a phone number,
    /// an e-mail address).
    pub fn digest(&mut self, value: &str) -> Result<Option<[u8; 32]>, String> {
        let v = value.trim();
        let normalized: &str = match self.normalize {
            Normalize::Trim => v,
            Normalize::Casefold => {
                self.scratch.clear();
                if v.is_ascii() {
                    self.scratch.push_str(v);
                    self.scratch.make_ascii_lowercase();
                } else {
                    // Character by character (`char::to_lowercase`; `str::to_lowercase` lowers a final sigma
                    // differently), the ASCII ones without the Unicode tables.
                    for c in v.chars() {
                        if c.is_ascii() {
                            self.scratch.push(c.to_ascii_lowercase());
                        } else {
                            self.scratch.extend(c.to_lowercase());
                        }
                    }
                }
                &self.scratch
            }
            Normalize::Digits => {
                self.scratch.clear();
                // An ASCII digit's byte is never part of another character's UTF-8 bytes.
                for b in v.bytes().filter(u8::is_ascii_digit) {
                    self.scratch.push(char::from(b));
                }
                &self.scratch
            }
            Normalize::Phone => {
                super::normalize::phone(v, self.phone_country.as_ref(), &mut self.scratch)?;
                &self.scratch
            }
            Normalize::Email => {
                super::normalize::email(v, &mut self.scratch)?;
                &self.scratch
            }
        };
        if normalized.is_empty() {
            return Ok(None);
        }
        if normalized.len() <= ShortHmac::MAX_LEN {
            return Ok(Some(self.short.mac(normalized.as_bytes())));
        }
        let mut mac = self.mac.clone();
        mac.update(normalized.as_bytes());
        Ok(Some(mac.finalize().into_bytes().into()))
    }

    /// Writes the lowercase hex pseudonym of `value` into `out` (64 characters). Returns false when the value
    /// has none (blank, or not what its normalization reads).
    pub fn pseudonym_into(&mut self, value: &str, out: &mut String) -> bool {
        let Ok(Some(d)) = self.digest(value) else { return false };
        out.clear();
        out.push_str(hex(&d, &mut [0; 64]));
        true
    }
}

/// `digest` in lowercase hex, written in `buf`.
pub fn hex<'a>(digest: &[u8; 32], buf: &'a mut [u8; 64]) -> &'a str {
    *buf = hex_digits(digest);
    // Cannot fail: hex digits are ASCII.
    simdutf8::basic::from_utf8(buf).unwrap_or_default()
}

/// The lowercase hex digits of `digest`, as bytes: arithmetic without branches or lookups, which the compiler
/// turns into vector instructions.
pub fn hex_digits(digest: &[u8; 32]) -> [u8; 64] {
    // `n + '0'`, and `'a' - '0' - 10` more when `n` is above 9 (then `9 - n` is negative: its sign spread).
    let digit = |n: u8| n + b'0' + (((9i8 - n as i8) >> 7) as u8 & (b'a' - b'0' - 10));
    let mut out = [0u8; 64];
    for (i, b) in digest.iter().enumerate() {
        out[2 * i] = digit(b >> 4);
        out[2 * i + 1] = digit(b & 15);
    }
    out
}

/// Encrypts quarantined raw records with AES-256-GCM: output is `nonce (12 bytes) || ciphertext+tag`.
pub struct Encryptor {
    cipher: Aes256Gcm,
    key_id: String,
}

impl Encryptor {
    pub fn new(key: &Key) -> Self {
        Self { cipher: Aes256Gcm::new((&key.bytes).into()), key_id: key.id.clone() }
    }
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        // Encryption with a fresh nonce and an in-memory buffer cannot fail.
        out.extend(self.cipher.encrypt(&nonce, plain).unwrap_or_default());
        out
    }
}

/// Decrypts what [`Encryptor::encrypt`] produced; `None` when the key is wrong or the data was altered.
pub fn decrypt(key: &Key, data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 12 {
        return None;
    }
    let (nonce, ct) = data.split_at(12);
    Aes256Gcm::new((&key.bytes).into()).decrypt(Nonce::from_slice(nonce), ct).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac_hex(key: &[u8], data: &[u8]) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap();
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    /// RFC 4231 test cases 1, 2 and 3 (HMAC-SHA-256).
    #[test]
    fn rfc4231_known_answers() {
        assert_eq!(
            hmac_hex(&[0x0b; 20], b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hmac_hex(&[0xaa; 20], &[0xdd; 50]),
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"
        );
    }

    /// Our pseudonymizer gives the RFC 4231 answer for a 32-byte key (test case 2's data, key padded).
    #[test]
    fn pseudonym_is_hmac_of_normalized_value() {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(b"Jefe");
        let key = Key { id: "k1".into(), bytes };
        // HMAC pads short keys with zeros, so this 32-byte key equals "Jefe".
        let mut p = Pseudonymizer::new(&key, Normalize::Trim, None);
        let mut out = String::new();
        assert!(p.pseudonym_into("  what do ya want for nothing?  ", &mut out));
        assert_eq!(out, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        let mut c = Pseudonymizer::new(&key, Normalize::Casefold, None);
        let (mut a, mut b) = (String::new(), String::new());
        c.pseudonym_into("Dupont", &mut a);
        c.pseudonym_into(" DUPONT ", &mut b);
        assert_eq!(a, b);
        let mut d = Pseudonymizer::new(&key, Normalize::Digits, None);
        d.pseudonym_into("06 12 34 56 78", &mut a);
        d.pseudonym_into("06.12.34.56.78", &mut b);
        assert_eq!(a, b);
        assert!(!d.pseudonym_into(" - ", &mut a));
    }

    /// Casefolding and keeping the digits give what their definitions give (`char::to_lowercase` of each
    /// character; the ASCII digits), whatever the characters; the hex is `hex::encode`'s.
    #[test]
    fn normalizations_and_hex_follow_their_definitions() {
        let key = Key { id: "k".into(), bytes: [5; 32] };
        let mut casefold = Pseudonymizer::new(&key, Normalize::Casefold, None);
        let mut digits = Pseudonymizer::new(&key, Normalize::Digits, None);
        let general = <HmacSha256 as Mac>::new_from_slice(&key.bytes).unwrap();
        let mac = |v: String| {
            (!v.is_empty()).then(|| <[u8; 32]>::from(general.clone().chain_update(v).finalize().into_bytes()))
        };
        let values = [
            "Dupont",
            "ÉLODIE Dupont",
            "ΣΊΣΥΦΟΣ",
            "İstanbul",
            "STRAẞE",
            "Ǆemal",
            "06 12 34 56 78",
            "+33 (0)6.12",
            "٣٤ 5६7",
            "tél. 0612",
            "",
            " - ",
            "Ωmega 3Σ",
        ];
        for v in values {
            let folded: String = v.trim().chars().flat_map(char::to_lowercase).collect();
            assert_eq!(casefold.digest(v).unwrap(), mac(folded), "{v}");
            let kept: String = v.trim().chars().filter(char::is_ascii_digit).collect();
            assert_eq!(digits.digest(v).unwrap(), mac(kept), "{v}");
        }
        for seed in 0..50u8 {
            let digest: [u8; 32] =
                std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add((i as u8).wrapping_mul(17)));
            assert_eq!(hex(&digest, &mut [0; 64]), hex::encode(digest));
        }
    }

    #[test]
    fn short_hmac_equals_the_general_one() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 3) as u8);
        let short = ShortHmac::new(&key);
        for len in 0..=ShortHmac::MAX_LEN {
            let msg: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
            assert_eq!(hex::encode(short.mac(&msg)), hmac_hex(&key, &msg), "length {len}");
        }
        // Through the pseudonymizer, short and long values agree with the general HMAC.
        let k = Key { id: "k".into(), bytes: key };
        let mut p = Pseudonymizer::new(&k, Normalize::Trim, None);
        let mut out = String::new();
        for v in ["a", &"x".repeat(55), &"y".repeat(56), &"z".repeat(200)] {
            p.pseudonym_into(v, &mut out);
            assert_eq!(out, hmac_hex(&key, v.as_bytes()));
        }
    }

    #[test]
    fn encryption_round_trips_and_detects_wrong_key() {
        let key = Key { id: "q1".into(), bytes: [7; 32] };
        let other = Key { id: "q2".into(), bytes: [8; 32] };
        let enc = Encryptor::new(&key);
        let ct = enc.encrypt(b"Jean Dupont;0612345678");
        assert!(!ct.windows(6).any(|w| w == b"Dupont"));
        assert_eq!(decrypt(&key, &ct).unwrap(), b"Jean Dupont;0612345678");
        assert!(decrypt(&other, &ct).is_none());
    }
}
