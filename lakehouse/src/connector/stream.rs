//! What the stream connectors (`mqtt`, `nats`) share: a micro-batch of messages written as one archived unit,
//! one JSON record per line, and message identities kept as hashes.
//!
//! A message's payload is a JSON object; it is written compact on one line, with the fields the manifest asks
//! for (topic, subject, sequence) added. A payload that is not JSON is written as it came (its line breaks as
//! spaces, so that it stays one line), and the NDJSON reader quarantines it with the reason, at its line — the
//! message's number in the batch. A payload longer than `limits.max_record_bytes` is cut one byte past the limit:
//! the reader quarantines it as too long, its first bytes kept.

use std::collections::HashSet;
use std::io::Write;

use serde_json::Value;

use super::archive::Archive;
use super::{ConnectorError, FileEntry};

/// The name of a batch's unit in its run directory.
const UNIT: &str = "messages.ndjson";

/// A message's identity: 16 bytes of SHA-256 of its id (or of its line when it has none); never the value.
pub type MessageId = [u8; 16];

pub fn hash_id(bytes: &[u8]) -> MessageId {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// The identity of a unit's line: the value of `field` in its JSON object (a string as itself, anything else as
/// its JSON text), else the whole line.
pub fn line_id(line: &[u8], field: &str) -> MessageId {
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(line)
        && let Some(v) = obj.get(field).filter(|v| !v.is_null())
    {
        return match v {
            Value::String(s) => hash_id(format!("s{s}").as_bytes()),
            other => hash_id(format!("j{other}").as_bytes()),
        };
    }
    hash_id(line)
}

/// The lines of a micro-batch, compressed as they come.
pub struct Batch {
    gz: flate2::write::GzEncoder<Vec<u8>>,
    pub records: u64,
    pub bytes: u64,
    max_record_bytes: u64,
    line: Vec<u8>,
}

impl Batch {
    pub fn new(max_record_bytes: u64) -> Self {
        Self { gz: Archive::encoder(), records: 0, bytes: 0, max_record_bytes, line: Vec::new() }
    }

    /// Renders a message as its unit line (without the line feed) into `self.line`: the payload's JSON object
    /// with `extra` fields added, or the payload as it came when it is not one.
    pub fn render(&mut self, payload: &[u8], extra: &[(&str, Value)]) -> &[u8] {
        self.line.clear();
        let too_long = payload.len() as u64 > self.max_record_bytes;
        let parsed = if too_long { None } else { serde_json::from_slice::<Value>(payload).ok() };
        match parsed {
            Some(Value::Object(mut obj)) => {
                for (name, value) in extra {
                    obj.insert((*name).to_string(), value.clone());
                }
                // Serializing a parsed value cannot fail.
                let _ = serde_json::to_writer(&mut self.line, &Value::Object(obj));
            }
            Some(other) => {
                let _ = serde_json::to_writer(&mut self.line, &other);
            }
            None => {
                let keep = payload.len().min(self.max_record_bytes as usize + 1);
                self.line.extend(payload[..keep].iter().map(|b| if matches!(b, b'\n' | b'\r') { b' ' } else { *b }));
            }
        }
        &self.line
    }

    /// Adds the line last rendered.
    pub fn push_rendered(&mut self) -> std::io::Result<()> {
        self.gz.write_all(&self.line)?;
        self.gz.write_all(b"\n")?;
        self.records += 1;
        self.bytes += self.line.len() as u64 + 1;
        Ok(())
    }

    /// Archives the batch as the unit of `batch`.
    pub async fn archive(self, archive: &Archive, batch: i64) -> Result<FileEntry, ConnectorError> {
        let path = format!("{}/{UNIT}", Archive::run_dir(batch));
        let io = |source| ConnectorError::Io { location: format!("{}{path}", archive.url()), source };
        let compressed = self.gz.finish().map_err(io)?;
        archive.put_compressed(&path, compressed).await?;
        Ok(FileEntry { path, size: self.bytes, last_modified: chrono::Utc::now(), etag: None, refused: None })
    }
}

/// The identities of the lines of archived units (a committed batch's).
pub async fn unit_ids(
    archive: &Archive,
    units: &[&str],
    field: &str,
    ids: &mut HashSet<MessageId>,
) -> Result<(), ConnectorError> {
    use std::io::BufRead;
    for path in units {
        let file = archive.open(path).await?;
        let location = format!("{}{path}", archive.url());
        for line in std::io::BufReader::new(file).split(b'\n') {
            let line = line.map_err(|source| ConnectorError::Io { location: location.clone(), source })?;
            if !line.is_empty() {
                ids.insert(line_id(&line, field));
            }
        }
    }
    Ok(())
}

/// Hashes as the hex text of a position.
pub fn ids_to_hex<'a>(ids: impl Iterator<Item = &'a MessageId>) -> Vec<String> {
    ids.map(hex::encode).collect()
}

pub fn ids_from_hex(hex: &[String]) -> HashSet<MessageId> {
    hex.iter().filter_map(|h| hex::decode(h).ok().and_then(|b| <MessageId>::try_from(b.as_slice()).ok())).collect()
}

/// Archive sweeps list the whole archive: a stream, with a batch a second, sweeps on one batch in this many.
pub const SWEEP_EVERY: i64 = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_one_line_with_its_extra_fields_and_a_bad_one_stays_one_line() {
        let mut b = Batch::new(64);
        let line = b.render(b"{\n \"id\": 7,\n \"v\": \"a\\nb\"\n}", &[("topic", Value::from("x/y"))]).to_vec();
        assert_eq!(String::from_utf8(line).unwrap(), r#"{"id":7,"topic":"x/y","v":"a\nb"}"#);
        let line = b.render(b"{\"id\": 7,\n broken", &[]).to_vec();
        assert_eq!(line, b"{\"id\": 7,  broken");
        let long = vec![b'x'; 100];
        assert_eq!(b.render(&long, &[]).len(), 65, "cut one byte past the limit: quarantined as too long");
    }

    #[test]
    fn an_id_is_its_field_whatever_else_changes_and_the_line_without_one() {
        let a = line_id(br#"{"id":"m-1","v":1}"#, "id");
        assert_eq!(a, line_id(br#"{"v":2,"id":"m-1"}"#, "id"));
        assert_ne!(a, line_id(br#"{"id":"m-2","v":1}"#, "id"));
        assert_ne!(line_id(br#"{"id":1}"#, "id"), line_id(br#"{"id":"1"}"#, "id"));
        assert_eq!(line_id(b"not json", "id"), hash_id(b"not json"));
        let ids = [a];
        assert_eq!(ids_from_hex(&ids_to_hex(ids.iter())), ids.into_iter().collect());
    }
}
