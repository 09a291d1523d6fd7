//! SCRAM-SHA-256 (RFC 5802, RFC 7677) verifiers, stored as PostgreSQL stores them:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64). The password itself is never stored
//! and cannot be recovered from a verifier; checking a client's proof needs only the verifier.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// PBKDF2 iterations of new verifiers. Only the client pays them at each login (the server checks a proof
/// with two HMACs); PostgreSQL's default is 4096.
pub const ITERATIONS: u32 = 100_000;

/// A salted, iterated SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

/// The keys stay out of logs.
impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

impl Verifier {
    /// A verifier of `password` with a fresh random 16-byte salt and [`ITERATIONS`].
    pub fn new(password: &str) -> Self {
        use aes_gcm::aead::rand_core::RngCore;
        let mut salt = vec![0u8; 16];
        aes_gcm::aead::OsRng.fill_bytes(&mut salt);
        Self::with_salt(password, &salt, ITERATIONS)
    }

    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = salted_password(&normalize(password), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// A verifier no password matches, the same for a name at each login (its salt and iteration count do not
    /// tell an unknown user from a known one): what a login of an unknown user is checked against.
    pub fn for_unknown_user(server_secret: &[u8], user: &str) -> Self {
        let seed = hmac(server_secret, user.as_bytes());
        Self {
            iterations: ITERATIONS,
            salt: seed[..16].to_vec(),
            stored_key: hmac(&seed, b"Stored Key"),
            server_key: hmac(&seed, b"Server Key"),
        }
    }

    /// Reads a verifier as [`fmt::Display`] writes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad =
            || "not a SCRAM-SHA-256 verifier (SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)".to_string();
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let key = |b64: &str| -> Result<[u8; 32], String> {
            STANDARD.decode(b64).ok().and_then(|k| k.try_into().ok()).ok_or_else(bad)
        };
        Ok(Self {
            iterations: iterations.parse().map_err(|_| bad())?,
            salt: STANDARD.decode(salt).map_err(|_| bad())?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// Checks a client's proof for `auth_message` (client-first-message-bare `,` server-first-message `,`
    /// client-final-message-without-proof); on success, the server signature that proves the server knew
    /// the verifier.
    pub fn verify(&self, auth_message: &str, client_proof: &[u8]) -> Option<[u8; 32]> {
        let signature = hmac(&self.stored_key, auth_message.as_bytes());
        if client_proof.len() != 32 {
            return None;
        }
        let client_key: Vec<u8> = client_proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let computed: [u8; 32] = Sha256::digest(&client_key).into();
        // Constant time: every byte is compared.
        let differ = computed.iter().zip(self.stored_key).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (differ == 0).then(|| hmac(&self.server_key, auth_message.as_bytes()))
    }
}

/// The password as SCRAM clients hash it: SASLprep'd (RFC 4013) when it can be, as is otherwise (libpq does
/// the same).
fn normalize(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(p) => p.as_bytes().to_vec(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 of one block (RFC 5802's `Hi`).
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        out.iter_mut().zip(u).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// The server's side of one SCRAM-SHA-256 exchange (RFC 5802, section 5), without channel binding: the client
/// proves it knows the password, the server proves it knows the verifier, and the password never travels.
pub struct Exchange {
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    /// Reads the client-first-message and gives the server-first-message for `verifier` (salt, iterations and
    /// the client's nonce followed by a fresh one of the server).
    pub fn start(client_first: &[u8], verifier: &Verifier) -> Result<(Self, String), String> {
        use aes_gcm::aead::rand_core::RngCore;
        let text = std::str::from_utf8(client_first).map_err(|_| "the SCRAM client-first-message is not UTF-8")?;
        // gs2-header: `n,,` (no channel binding) or `y,,` (the client could bind but the server does not offer it).
        let (gs2_header, bare) = match text.get(..3) {
            Some("n,," | "y,,") => (&text[..3], &text[3..]),
            _ if text.starts_with("p=") => {
                return Err("SCRAM channel binding is not offered: use SCRAM-SHA-256 (channel_binding=prefer)".into());
            }
            _ => return Err("malformed SCRAM client-first-message (authorization identities are not supported)".into()),
        };
        let client_nonce = attribute(bare, 'r').ok_or("the SCRAM client-first-message has no nonce")?;
        if bare.split(',').any(|a| a.starts_with("m=")) {
            return Err("SCRAM extensions are not supported".into());
        }
        let mut random = [0u8; 18];
        aes_gcm::aead::OsRng.fill_bytes(&mut random);
        let nonce = format!("{client_nonce}{}", STANDARD.encode(random));
        let server_first = format!("r={nonce},s={},i={}", STANDARD.encode(&verifier.salt), verifier.iterations);
        let exchange = Self {
            gs2_header: gs2_header.to_string(),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// Checks the client-final-message: the server-final-message (`v=<server signature>`) when its proof
    /// matches `verifier`, `Ok(None)` when it does not, an error when the message is malformed.
    pub fn finish(&self, client_final: &[u8], verifier: &Verifier) -> Result<Option<String>, String> {
        let text = std::str::from_utf8(client_final).map_err(|_| "the SCRAM client-final-message is not UTF-8")?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or("the SCRAM client-final-message has no proof")?;
        let binding = attribute(without_proof, 'c').ok_or("the SCRAM client-final-message has no channel binding")?;
        if STANDARD.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err("the SCRAM channel binding does not match the client-first-message".into());
        }
        if attribute(without_proof, 'r') != Some(self.nonce.as_str()) {
            return Err("the SCRAM nonce does not match the server's".into());
        }
        let proof = STANDARD.decode(proof).map_err(|_| "the SCRAM proof is not base64")?;
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, self.server_first);
        Ok(verifier.verify(&auth_message, &proof).map(|signature| format!("v={}", STANDARD.encode(signature))))
    }
}

/// The value of the attribute `name=` of a SCRAM message.
fn attribute(message: &str, name: char) -> Option<&str> {
    message.split(',').find_map(|a| a.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
}

/// A password of 24 letters and digits (about 143 bits), for `lakehouse user add` without one.
pub fn generate_password() -> String {
    use aes_gcm::aead::rand_core::RngCore;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut out = String::with_capacity(24);
    while out.len() < 24 {
        let mut b = [0u8; 1];
        aes_gcm::aead::OsRng.fill_bytes(&mut b);
        // Rejection sampling keeps the letters equally likely.
        let i = usize::from(b[0]);
        if i < ALPHABET.len() * (256 / ALPHABET.len()) {
            out.push(char::from(ALPHABET[i % ALPHABET.len()]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3: the exchange of user "user", password "pencil". The client's proof must check
    /// against the verifier our side derives, and our server signature must be the RFC's.
    #[test]
    fn the_rfc_7677_exchange_checks() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = Verifier::with_salt("pencil", &salt, 4096);
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth =
            format!("n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}");
        let proof = STANDARD.decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").unwrap();
        let server = v.verify(&auth, &proof).expect("the RFC's proof checks");
        assert_eq!(STANDARD.encode(server), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        // Another password, another proof, a changed message: refused.
        assert!(Verifier::with_salt("pencil!", &salt, 4096).verify(&auth, &proof).is_none());
        let mut wrong = proof.clone();
        wrong[0] ^= 1;
        assert!(v.verify(&auth, &wrong).is_none());
        assert!(v.verify(&auth.replace("i=4096", "i=4097"), &proof).is_none());
        assert!(v.verify(&auth, &proof[..31]).is_none());
    }

    /// A whole exchange as a client computes it (RFC 5802's client side, written here from the RFC): the right
    /// password logs in and the server's signature checks; a wrong one, a replayed nonce, a changed channel
    /// binding or a malformed message do not.
    #[test]
    fn a_server_exchange_accepts_the_right_proof_only() {
        let verifier = Verifier::with_salt("pencil", b"0123456789abcdef", 4096);
        let client = |password: &str, first: &str, server_first: &str, binding: &str| {
            let nonce = attribute(server_first, 'r').unwrap();
            let salt = STANDARD.decode(attribute(server_first, 's').unwrap()).unwrap();
            let iterations: u32 = attribute(server_first, 'i').unwrap().parse().unwrap();
            let salted = salted_password(password.as_bytes(), &salt, iterations);
            let client_key = hmac(&salted, b"Client Key");
            let without_proof = format!("c={binding},r={nonce}");
            let auth = format!("{},{server_first},{without_proof}", &first[3..]);
            let signature = hmac(&Sha256::digest(client_key), auth.as_bytes());
            let proof: Vec<u8> = client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
            (
                format!("{without_proof},p={}", STANDARD.encode(proof)),
                hmac(&hmac(&salted, b"Server Key"), auth.as_bytes()),
            )
        };
        let first = "n,,n=,r=fyko+d2lbbFgONRv9qkxdawL";
        let (exchange, server_first) = Exchange::start(first.as_bytes(), &verifier).unwrap();
        assert!(server_first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL") && server_first.ends_with(",i=4096"));
        let (good, signature) = client("pencil", first, &server_first, "biws");
        let answer = exchange.finish(good.as_bytes(), &verifier).unwrap().expect("the right password logs in");
        assert_eq!(answer, format!("v={}", STANDARD.encode(signature)));
        let (bad, _) = client("pencil2", first, &server_first, "biws");
        assert_eq!(exchange.finish(bad.as_bytes(), &verifier), Ok(None));
        let (bound, _) = client("pencil", first, &server_first, "eSws");
        assert!(exchange.finish(bound.as_bytes(), &verifier).is_err(), "the binding of `y,,` for a `n,,` login");
        let (_, other_first) = Exchange::start(first.as_bytes(), &verifier).unwrap();
        let (replayed, _) = client("pencil", first, &other_first, "biws");
        assert!(exchange.finish(replayed.as_bytes(), &verifier).is_err(), "another exchange's nonce");
        for bad in ["", "p=tls-server-end-point,,n=,r=x", "n,a=admin,n=,r=x", "n,,n=,r=x,m=ext", "n,,n="] {
            assert!(Exchange::start(bad.as_bytes(), &verifier).is_err(), "{bad}");
        }
        // An unknown user gets a salt of its own, stable across logins, and no proof matches.
        let unknown = Verifier::for_unknown_user(b"secret", "mallory");
        assert_eq!(unknown.salt, Verifier::for_unknown_user(b"secret", "mallory").salt);
        assert_ne!(unknown.salt, Verifier::for_unknown_user(b"secret", "eve").salt);
    }

    #[test]
    fn verifiers_round_trip_and_hide_their_keys() {
        let v = Verifier::new("correct horse battery staple");
        assert_eq!(v.iterations, ITERATIONS);
        let text = v.to_string();
        assert!(text.starts_with(&format!("SCRAM-SHA-256${ITERATIONS}:")), "{text}");
        assert!(!text.contains("horse"));
        assert_eq!(Verifier::parse(&text).unwrap(), v);
        assert!(!format!("{v:?}").contains(&STANDARD.encode(v.stored_key)));
        // Two verifiers of one password differ (fresh salts).
        assert_ne!(Verifier::new("correct horse battery staple").to_string(), text);
        for bad in ["", "md5abc", "SCRAM-SHA-256$x:AA==$AA==:AA==", "SCRAM-SHA-256$4096:AA==$AA==:AA=="] {
            assert!(Verifier::parse(bad).is_err(), "{bad}");
        }
        let p = generate_password();
        assert_eq!(p.len(), 24);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(p, generate_password());
    }
}
