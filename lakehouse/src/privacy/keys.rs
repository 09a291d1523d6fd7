use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::manifest::KeySource;

/// One 256-bit key with its id.
///
/// The id is the one of the key file followed by a fingerprint of the key (`k20261129:3fa2c1d09b7e`): the
/// first 12 hex digits of HMAC-SHA-256(key, "lakehouse key fingerprint"), which identifies the key without
/// revealing it. Two different keys given the same id in two key files therefore have different ids, and a
/// table written with one refuses pseudonyms of the other.
#[derive(Clone)]
pub struct Key {
    pub id: String,
    pub(crate) bytes: [u8; 32],
}

impl Key {
    fn new(name: &str, bytes: [u8; 32]) -> Self {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&bytes).expect("HMAC takes any key size");
        mac.update(b"lakehouse key fingerprint");
        let fingerprint = hex::encode(&mac.finalize().into_bytes()[..6]);
        Self { id: format!("{name}:{fingerprint}"), bytes }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({}, <redacted>)", self.id)
    }
}

/// The keys of a deployment by domain: the last one listed is the domain's current key, the ones before it were
/// rotated out. New pseudonyms and encryption use the current key; the older ones still read what was written
/// with them (the quarantine, archives) and let `lakehouse erase` find the pseudonyms made with them.
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<String, Vec<Key>>,
    origin: String,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("origin", &self.origin)
            .field(
                "domains",
                &self
                    .keys
                    .iter()
                    .flat_map(|(d, ks)| ks.iter().map(move |k| format!("{d}:{}", k.id)))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("environment variable {0} is not set")]
    MissingVariable(String),
    #[error("cannot read key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: entry {entry}: {problem} (expected `domain key_id hex_key` with 64 hex digits)")]
    Malformed { origin: String, entry: usize, problem: String },
    #[error("no key for domain `{domain}` in {origin}")]
    MissingDomain { domain: String, origin: String },
}

impl KeyRing {
    /// Loads the keys from the project's key source.
    pub fn load(source: &KeySource, extra_domains: &[&str]) -> Result<Self, KeyError> {
        match source {
            KeySource::Env { variable } => {
                let text = std::env::var(variable).map_err(|_| KeyError::MissingVariable(variable.clone()))?;
                Self::parse(&text, &format!("${variable}"))
            }
            KeySource::File { path, create_if_missing } => {
                let path = crate::manifest::expand_home(path);
                if *create_if_missing && !path.exists() {
                    generate_file(&path, extra_domains)?;
                    tracing::warn!(path = %path.display(), "created a new key file with random keys (create_if_missing)");
                }
                let text =
                    std::fs::read_to_string(&path).map_err(|source| KeyError::Io { path: path.clone(), source })?;
                Self::parse(&text, &path.display().to_string())
            }
        }
    }

    /// The key ring of a read-only command: no key, and an error saying why when one is asked for.
    pub fn not_loaded() -> Self {
        Self {
            keys: BTreeMap::new(),
            origin: "no key source (keys are loaded only by commands that write pseudonyms)".into(),
        }
    }

    /// Parses `domain key_id hex_key` entries separated by newlines or `;`. A domain listed again under another
    /// key id was rotated: its last entry is its current key.
    pub fn parse(text: &str, origin: &str) -> Result<Self, KeyError> {
        let mut keys: BTreeMap<String, Vec<Key>> = BTreeMap::new();
        let entries = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default())
            .flat_map(|l| l.split(';'))
            .map(str::trim)
            .filter(|l| !l.is_empty());
        for (i, entry) in entries.enumerate() {
            let malformed = |problem: &str| KeyError::Malformed {
                origin: origin.to_string(),
                entry: i + 1,
                problem: problem.to_string(),
            };
            let parts: Vec<&str> = entry.split_whitespace().collect();
            let [domain, id, hex_key] = parts[..] else {
                return Err(malformed("expected three fields"));
            };
            let bytes = hex::decode(hex_key).map_err(|_| malformed("the key is not hexadecimal"))?;
            let bytes: [u8; 32] = bytes.try_into().map_err(|_| malformed("the key is not 32 bytes (64 hex digits)"))?;
            let listed = keys.entry(domain.to_string()).or_default();
            if listed.iter().any(|k| key_name(&k.id) == id) {
                return Err(malformed(&format!(
                    "domain `{domain}` has key id `{id}` twice (a rotated key gets a new id: `lakehouse keys rotate`)"
                )));
            }
            listed.push(Key::new(id, bytes));
        }
        Ok(Self { keys, origin: origin.to_string() })
    }

    /// The current key of `domain`.
    pub fn get(&self, domain: &str) -> Result<&Key, KeyError> {
        self.all(domain)?.last().ok_or_else(|| self.missing(domain))
    }

    /// Every key of `domain`, oldest first (the current one last).
    pub fn all(&self, domain: &str) -> Result<&[Key], KeyError> {
        self.keys.get(domain).map(Vec::as_slice).ok_or_else(|| self.missing(domain))
    }

    /// The key of `domain` with the id (with fingerprint) `id`, current or rotated out.
    pub fn with_id(&self, domain: &str, id: &str) -> Option<&Key> {
        self.keys.get(domain)?.iter().find(|k| k.id == id)
    }

    /// Where the keys come from (a file's path, `$VARIABLE`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn missing(&self, domain: &str) -> KeyError {
        KeyError::MissingDomain { domain: domain.to_string(), origin: self.origin.clone() }
    }
}

/// The id of the key file in a key id with fingerprint (`k1` of `k1:3fa2c1d09b7e`).
pub fn key_name(id: &str) -> &str {
    id.rsplit_once(':').map_or(id, |(name, _)| name)
}

/// Adds a new key for `domain` to the key file at `path` (after its current one, which stays to read and erase
/// what was written with it) and returns the new key's id with fingerprint. The id is `k<date>`, with `-2`, `-3`…
/// when the domain already has that id.
pub fn rotate_in_file(path: &Path, domain: &str) -> Result<String, KeyError> {
    use std::io::Write;
    let io = |source| KeyError::Io { path: path.to_path_buf(), source };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let ring = KeyRing::parse(&text, &path.display().to_string())?;
    let taken: Vec<&str> = ring.all(domain).map(|ks| ks.iter().map(|k| key_name(&k.id)).collect()).unwrap_or_default();
    let base = chrono::Utc::now().format("k%Y%m%d").to_string();
    let name = std::iter::once(base.clone())
        .chain((2..).map(|n| format!("{base}-{n}")))
        .find(|n| !taken.contains(&n.as_str()))
        .unwrap_or(base);
    let bytes = rand_bytes();
    let mut line = String::new();
    if !text.is_empty() && !text.ends_with('\n') {
        line.push('\n');
    }
    line.push_str(&format!("{domain} {name} {}\n", hex::encode(bytes)));
    let mut f = std::fs::OpenOptions::new().append(true).open(path).map_err(io)?;
    f.write_all(line.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(Key::new(&name, bytes).id)
}

fn generate_file(path: &Path, domains: &[&str]) -> Result<(), KeyError> {
    use std::io::Write;
    let io = |source| KeyError::Io { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut text = String::from("# lakehouse keys: domain key_id hex_key (generated; keep this file secret)\n");
    let id = chrono::Utc::now().format("k%Y%m%d").to_string();
    for domain in domains {
        let key: [u8; 32] = rand_bytes();
        text.push_str(&format!("{domain} {id} {}\n", hex::encode(key)));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

fn rand_bytes() -> [u8; 32] {
    use aes_gcm::aead::rand_core::RngCore;
    let mut b = [0u8; 32];
    aes_gcm::aead::OsRng.fill_bytes(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_hides_keys() {
        let k = "ab".repeat(32);
        let ring = KeyRing::parse(&format!("# c\npolice k1 {k}; fire k2 {k}\n"), "test").unwrap();
        let id = &ring.get("police").unwrap().id;
        assert!(id.starts_with("k1:") && id.len() == 3 + 12, "{id}");
        // Another key under the same id gets another fingerprint.
        let other = KeyRing::parse(&format!("police k1 {}", "cd".repeat(32)), "test").unwrap();
        assert_ne!(&other.get("police").unwrap().id, id);
        assert!(!format!("{ring:?}").contains(&k));
        assert!(matches!(ring.get("health"), Err(KeyError::MissingDomain { .. })));
        // A domain listed again under a new id was rotated: the last entry is current, both are kept.
        let rotated = KeyRing::parse(&format!("police k1 {k}\npolice k2 {}", "cd".repeat(32)), "test").unwrap();
        assert!(rotated.get("police").unwrap().id.starts_with("k2:"));
        assert_eq!(rotated.all("police").unwrap().len(), 2);
        assert!(rotated.with_id("police", id).is_some());
        let twice = KeyRing::parse(&format!("police k1 {k}\npolice k1 {k}"), "test").unwrap_err().to_string();
        assert!(twice.contains("twice") && !twice.contains(&k), "{twice}");
        let err = KeyRing::parse("police k1 abcd", "test").unwrap_err().to_string();
        assert!(err.contains("32 bytes") && !err.contains("abcd"), "{err}");
    }
}
