//! The archive of the units a connector makes itself (an API's responses, a database's rows): kept in the
//! warehouse under `<warehouse>/archive/<source>/<batch>-<run>/`, so that a pending batch is completed from them
//! and bronze can be rebuilt and audited. Each unit is stored gzip-compressed, then encrypted with AES-256-GCM
//! under the key of domain `quarantine` (the units hold personal data in clear, like the quarantine's raw
//! records), behind a one-line header naming the format and the key's id. Retention deletes them with the rows
//! they gave ([`crate::retention`]); the units of a run that died before its commit are swept by a later poll
//! ([`Archive::sweep`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, Write};
use std::sync::Arc;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use super::{ConnectorError, FileEntry};
use crate::ingest::LedgerRow;
use crate::privacy::{Encryptor, Key, QUARANTINE_DOMAIN};

/// Header of an archived unit: the format's name and the id of the key it is encrypted with, then a line feed.
const MAGIC: &str = "lakehouse-archive-1";
/// Suffix of an archived unit's object after the unit's path.
const SUFFIX: &str = ".gz.aes";
/// How old an unreferenced run directory must be before [`Archive::sweep`] removes it.
const ORPHAN_AGE: chrono::Duration = chrono::Duration::hours(1);

/// Where the units of source `name` are archived: `<warehouse>/archive/<name>/`.
pub fn archive_url(warehouse: &crate::storage::Warehouse, name: &str) -> Url {
    // Names are checked identifiers: joining cannot fail.
    warehouse.root().join(&format!("archive/{name}/")).unwrap_or_else(|_| warehouse.root().clone())
}

/// Every object of an archive (`prefix` in `store`, [`crate::storage::Warehouse::object_store`] of
/// [`archive_url`]); none when the archive does not exist yet.
pub async fn list(
    store: &dyn ObjectStore,
    prefix: &StorePath,
) -> Result<Vec<object_store::ObjectMeta>, object_store::Error> {
    use futures::TryStreamExt;
    let listed = (!prefix.as_ref().is_empty()).then_some(prefix);
    match store.list(listed).try_collect().await {
        Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
        other => other,
    }
}

pub struct Archive {
    url: Url,
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    /// The current key of domain `quarantine` (units are written with it).
    key: Key,
    /// Every key of the domain, rotated ones too (units are read with the one they name).
    keys: Vec<Key>,
    /// The largest unit read back (a larger one is refused, as a decompression bomb would be).
    max_unit_bytes: u64,
}

impl Archive {
    pub fn new(lh: &crate::Lakehouse, name: &str, max_unit_bytes: u64) -> Result<Self, ConnectorError> {
        let url = archive_url(&lh.warehouse, name);
        let (store, prefix) = lh
            .warehouse
            .object_store(&url)
            .map_err(|source| ConnectorError::Store { location: url.to_string(), source })?;
        let key = lh.keys.get(QUARANTINE_DOMAIN)?.clone();
        let keys = lh.keys.all(QUARANTINE_DOMAIN)?.to_vec();
        Ok(Self { url, store, prefix, key, keys, max_unit_bytes })
    }

    /// The archive's URL: the ledger's `location` of the units.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The directory of one run's units for `batch`: `<batch>-<run>` (a run that crashed before its commit
    /// leaves a directory no ledger row names, and the next one writes another).
    pub fn run_dir(batch: i64) -> String {
        let run = uuid::Uuid::new_v4().simple().to_string();
        format!("{batch:06}-{}", &run[..12])
    }

    fn object(&self, path: &str) -> StorePath {
        let prefix = self.prefix.as_ref().trim_end_matches('/');
        if prefix.is_empty() {
            StorePath::from(format!("{path}{SUFFIX}"))
        } else {
            StorePath::from(format!("{prefix}/{path}{SUFFIX}"))
        }
    }

    /// A gzip stream for a unit written piece by piece ([`Archive::put_compressed`]).
    pub fn encoder() -> flate2::write::GzEncoder<Vec<u8>> {
        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast())
    }

    /// Archives a unit: `MAGIC key-id\n`, then its bytes compressed and encrypted.
    pub async fn put(&self, path: &str, body: &[u8]) -> Result<(), ConnectorError> {
        let location = format!("{}{path}", self.url);
        let io = |source| ConnectorError::Io { location: location.clone(), source };
        let mut gz = Self::encoder();
        gz.write_all(body).map_err(io)?;
        self.put_compressed(path, gz.finish().map_err(io)?).await
    }

    /// Archives a unit already gzip-compressed ([`Archive::encoder`]).
    pub async fn put_compressed(&self, path: &str, compressed: Vec<u8>) -> Result<(), ConnectorError> {
        let location = format!("{}{path}", self.url);
        let mut object = format!("{MAGIC} {}\n", self.key.id).into_bytes();
        object.extend(Encryptor::new(&self.key).encrypt(&compressed));
        drop(compressed);
        self.store
            .put(&self.object(path), PutPayload::from(object))
            .await
            .map_err(|source| ConnectorError::Store { location, source })?;
        Ok(())
    }

    /// An archived unit, decrypted and decompressed into a temporary file.
    pub async fn open(&self, path: &str) -> Result<std::fs::File, ConnectorError> {
        let location = format!("{}{path}", self.url);
        let bytes = self
            .store
            .get(&self.object(path))
            .await
            .map_err(|source| ConnectorError::Store { location: location.clone(), source })?
            .bytes()
            .await
            .map_err(|source| ConnectorError::Store { location: location.clone(), source })?;
        let broken = |detail: String| ConnectorError::Archive { location: location.clone(), detail };
        let not_ours = || broken("not an archived unit".into());
        let newline = bytes.iter().position(|b| *b == b'\n').ok_or_else(not_ours)?;
        let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| not_ours())?;
        let key_id = header.strip_prefix(MAGIC).map(str::trim).ok_or_else(not_ours)?;
        let Some(key) = self.keys.iter().find(|k| k.id == key_id) else {
            return Err(broken(format!(
                "archived with key {key_id}, which is not among the keys of domain `{QUARANTINE_DOMAIN}` (now {}): \
                 restore that key to read it",
                self.key.id
            )));
        };
        let compressed = crate::privacy::decrypt(key, &bytes[newline + 1..])
            .ok_or_else(|| broken("the archived unit does not decrypt (altered, or another key)".into()))?;
        drop(bytes);
        let io = |source: std::io::Error| ConnectorError::Io { location: location.clone(), source };
        let mut file = tempfile::tempfile().map_err(io)?;
        let mut gz = flate2::read::GzDecoder::new(compressed.as_slice()).take(self.max_unit_bytes + 1);
        let copied = std::io::copy(&mut gz, &mut file).map_err(io)?;
        if copied > self.max_unit_bytes {
            return Err(broken(format!(
                "the archived unit is larger than {} MiB, the most a unit may hold",
                self.max_unit_bytes >> 20
            )));
        }
        file.rewind().map_err(io)?;
        Ok(file)
    }

    /// Removes the units that no commit names and none will: those of a run directory (`<batch>-<run>/`) whose
    /// batch the ledger has already committed under another run, and that no ledger row (`taken`) points into,
    /// written more than an hour ago — a run killed between archiving and committing (a crash, `kill -9`) leaves
    /// them. A run still polling writes a batch the ledger has not committed, so it is never swept. Returns how
    /// many were removed; failures are logged (retention removes what is left).
    pub async fn sweep(&self, taken: &BTreeMap<String, LedgerRow>) -> usize {
        let Some(last) = taken.values().map(|r| r.batch).max() else { return 0 };
        let named: BTreeSet<&str> = taken.keys().filter_map(|p| p.split_once('/').map(|(dir, _)| dir)).collect();
        let metas = match list(self.store.as_ref(), &self.prefix).await {
            Ok(metas) => metas,
            Err(e) => {
                tracing::warn!(archive = %self.url, error = %e, "the archive cannot be listed: orphaned units not swept");
                return 0;
            }
        };
        let prefix = self.prefix.as_ref().trim_end_matches('/');
        let cutoff = chrono::Utc::now() - ORPHAN_AGE;
        let mut removed = 0;
        for meta in metas {
            let rel =
                meta.location.as_ref().strip_prefix(prefix).unwrap_or(meta.location.as_ref()).trim_start_matches('/');
            let Some((dir, _)) = rel.split_once('/') else { continue };
            let batch = dir.split_once('-').and_then(|(b, _)| b.parse::<i64>().ok());
            let orphan = batch.is_some_and(|b| b <= last) && !named.contains(dir) && meta.last_modified < cutoff;
            if !orphan {
                continue;
            }
            match self.store.delete(&meta.location).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(unit = %rel, error = %e, "an orphaned archived unit was not removed"),
            }
        }
        if removed > 0 {
            tracing::info!(archive = %self.url, units = removed, "removed archived units of runs that never committed");
        }
        removed
    }

    /// Removes the units of a batch that will not be committed. Failures are logged: retention removes what is
    /// left.
    pub async fn discard(&self, units: &[FileEntry]) {
        for unit in units {
            if let Err(e) = self.store.delete(&self.object(&unit.path)).await {
                tracing::warn!(unit = %unit.path, error = %e, "an archived unit of an uncommitted batch was not removed");
            }
        }
    }
}
