//! The `files` connector: a drop zone on local disk or S3.
//!
//! A file is identified by its path relative to the location; the ledger's paths are the connector's memory (it
//! keeps no position). A new file is taken once it has settled (not empty, not modified for `settle`). A file
//! already taken that changes afterwards is reported and not taken again (`changed_files: refuse`, the default:
//! partners send corrections as new files), or taken again as a new version (`new_version`).
//!
//! A local drop zone takes regular files only. Listing does not follow symbolic links (a linked directory is
//! not entered); a symbolic link, pipe or device whose name matches the pattern is listed, and opening it is
//! refused with an error naming it, so the run reports it as not taken instead of reading what it points to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use globset::GlobMatcher;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use super::{Connector, ConnectorError, FailedFile, Polled};
use crate::ingest::LedgerRow;
use crate::manifest::ChangedFiles;
use crate::storage::resolve_url;

/// A file available in the drop zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the connector's location.
    pub path: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    pub etag: Option<String>,
    /// Why the entry may not be read (a symbolic link, a pipe or a device in a local drop zone): it is reported
    /// as not taken without being opened.
    pub refused: Option<&'static str>,
}

pub struct FilesConnector {
    url: Url,
    zone: Zone,
    matcher: GlobMatcher,
    settle: Duration,
    changed_files: ChangedFiles,
}

enum Zone {
    /// A local directory (its canonical path).
    Local(PathBuf),
    Store {
        store: Arc<dyn ObjectStore>,
        prefix: StorePath,
    },
}

impl FilesConnector {
    pub fn new(
        project_dir: &Path,
        location: &str,
        pattern: &str,
        settle: Duration,
        changed_files: ChangedFiles,
        warehouse: &crate::storage::Warehouse,
    ) -> Result<Self, ConnectorError> {
        let url = resolve_url(project_dir, location)?;
        let store_err = |source| ConnectorError::Store { location: url.to_string(), source };
        let zone = if url.scheme() == "file" {
            let dir = url.to_file_path().map_err(|()| ConnectorError::Io {
                location: url.to_string(),
                source: std::io::Error::other("not a local path"),
            })?;
            if !dir.is_dir() {
                return Err(ConnectorError::Io {
                    location: dir.display().to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "the drop zone directory does not exist"),
                });
            }
            let dir = std::fs::canonicalize(&dir)
                .map_err(|source| ConnectorError::Io { location: dir.display().to_string(), source })?;
            Zone::Local(dir)
        } else {
            let (store, prefix) = warehouse.object_store(&url).map_err(store_err)?;
            Zone::Store { store, prefix }
        };
        let matcher = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| ConnectorError::Pattern { pattern: pattern.to_string(), reason: e.kind().to_string() })?
            .compile_matcher();
        Ok(Self { url, zone, matcher, settle, changed_files })
    }

    /// The files matching the pattern, sorted by path. Names starting with `.` are skipped.
    async fn list(&self) -> Result<Vec<FileEntry>, ConnectorError> {
        let mut files = match &self.zone {
            Zone::Local(dir) => {
                let (dir, matcher) = (dir.clone(), self.matcher.clone());
                let location = self.url.to_string();
                tokio::task::spawn_blocking(move || list_local(&dir, &matcher))
                    .await
                    .map_err(|e| ConnectorError::Io { location: location.clone(), source: std::io::Error::other(e) })?
                    .map_err(|source| ConnectorError::Io { location, source })?
            }
            Zone::Store { store, prefix } => {
                let listed = (!prefix.as_ref().is_empty()).then_some(prefix);
                let metas: Vec<_> = store
                    .list(listed)
                    .try_collect()
                    .await
                    .map_err(|source| ConnectorError::Store { location: self.url.to_string(), source })?;
                metas
                    .into_iter()
                    .filter_map(|m| {
                        let full = m.location.as_ref();
                        let rel = full.strip_prefix(prefix.as_ref()).unwrap_or(full).trim_start_matches('/');
                        let name = rel.rsplit('/').next().unwrap_or(rel);
                        (!name.starts_with('.') && self.matcher.is_match(rel)).then(|| FileEntry {
                            path: rel.to_string(),
                            size: m.size,
                            last_modified: m.last_modified,
                            etag: m.e_tag,
                            refused: None,
                        })
                    })
                    .collect()
            }
        };
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Opens a file for streaming reads. Local files are read in place; remote objects are downloaded to a
    /// temporary file first (streamed, so memory stays bounded), which is removed when the file is dropped.
    async fn open_file(&self, entry: &FileEntry) -> Result<std::fs::File, ConnectorError> {
        let io_err = |source| ConnectorError::Io { location: format!("{}{}", self.url, entry.path), source };
        let (store, prefix) = match &self.zone {
            Zone::Local(dir) => return open_regular(dir, &entry.path, &self.url),
            Zone::Store { store, prefix } => (store, prefix),
        };
        let location = if prefix.as_ref().is_empty() {
            StorePath::from(entry.path.as_str())
        } else {
            StorePath::from(format!("{}/{}", prefix.as_ref(), entry.path))
        };
        let mut tmp = tempfile::tempfile().map_err(io_err)?;
        let mut stream = store
            .get(&location)
            .await
            .map_err(|source| ConnectorError::Store { location: format!("{}{}", self.url, entry.path), source })?
            .into_stream();
        use std::io::{Seek, Write};
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|source| ConnectorError::Store { location: format!("{}{}", self.url, entry.path), source })?
        {
            tmp.write_all(&chunk).map_err(io_err)?;
        }
        tmp.seek(std::io::SeekFrom::Start(0)).map_err(io_err)?;
        Ok(tmp)
    }
}

#[async_trait::async_trait]
impl Connector for FilesConnector {
    fn location(&self) -> &Url {
        &self.url
    }

    /// The files not taken yet (or changed since, with `changed_files: new_version`) that have settled.
    async fn poll(
        &self,
        taken: &BTreeMap<String, LedgerRow>,
        _position: Option<&str>,
        _batch: i64,
    ) -> Result<Polled, ConnectorError> {
        let mut rejected = Vec::new();
        let mut new = Vec::new();
        for e in self.list().await? {
            if let Some(reason) = e.refused {
                let location = format!("{}{}", self.url, e.path);
                let reason = ConnectorError::Refused { location, reason }.to_string();
                tracing::error!(file = %e.path, error = %reason, "the file is not taken");
                rejected.push(FailedFile { path: e.path, reason });
                continue;
            }
            let Some(r) = taken.get(&e.path) else {
                new.push(e);
                continue;
            };
            let what = match self.change(r, &e).await {
                Ok(None) => continue,
                Ok(Some(what)) => what,
                Err(error) => {
                    let reason =
                        format!("taken in batch {}, it cannot be read to check it is unchanged: {error}", r.batch);
                    rejected.push(FailedFile { path: e.path, reason });
                    continue;
                }
            };
            if self.changed_files == ChangedFiles::NewVersion {
                tracing::info!(file = %e.path, batch = r.batch, change = %what, "changed since it was taken: taken again");
                new.push(e);
            } else {
                let reason = format!(
                    "changed after it was taken in batch {} ({what}); its new content is not ingested: send \
                     corrections as a new file and move this one out of the drop zone, or set `changed_files: \
                     new_version` on the connector to take changed files again",
                    r.batch
                );
                tracing::error!(file = %e.path, error = %reason, "the file is not taken");
                rejected.push(FailedFile { path: e.path, reason });
            }
        }
        let (units, waiting) = self.settled(new).await?;
        Ok(Polled { units, rejected, waiting, position: None })
    }

    async fn open(&self, unit: &FileEntry) -> Result<std::fs::File, ConnectorError> {
        self.open_file(unit).await
    }
}

impl FilesConnector {
    /// How a file taken before differs now, if it does: its size; or its content, checked against the hash the
    /// ledger holds when its modification time or tag moved (a file only touched, or copied over with the same
    /// bytes, has not changed). `Err`: the file could not be read to check it.
    async fn change(&self, taken: &LedgerRow, now: &FileEntry) -> Result<Option<String>, String> {
        if taken.size != now.size {
            return Ok(Some(format!("its size went from {} to {} bytes", taken.size, now.size)));
        }
        let moved = modified_apart(&taken.entry(), now);
        let retagged = matches!((&taken.etag, &now.etag), (Some(a), Some(b)) if a != b);
        if !moved && !retagged {
            return Ok(None);
        }
        let Some(expected) = &taken.content_hash else {
            // Taken before content hashes were recorded: the modification time is all there is.
            return Ok(moved.then(|| "its modification time differs".to_string()));
        };
        let mut file = self.open_file(now).await.map_err(|e| e.to_string())?;
        let hash = tokio::task::spawn_blocking(move || content_hash(&mut file))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok((hash != *expected).then(|| "same size, different content".to_string()))
    }

    /// Splits new files into the ones that are stable — not empty, and unmodified for `settle`, or unchanged when
    /// listed again once the youngest has had `settle` — and the paths of those still being written.
    async fn settled(&self, new: Vec<FileEntry>) -> Result<(Vec<FileEntry>, Vec<String>), ConnectorError> {
        let settle = chrono::Duration::from_std(self.settle).unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        let (empty, new): (Vec<FileEntry>, Vec<FileEntry>) = new.into_iter().partition(|e| e.size == 0);
        let mut waiting: Vec<String> = empty.into_iter().map(|e| e.path).collect();
        let (old, young): (Vec<FileEntry>, Vec<FileEntry>) =
            new.into_iter().partition(|e| now - e.last_modified >= settle);
        let mut stable = old;
        if let Some(youngest) = young.iter().map(|e| e.last_modified).max() {
            let wait = (youngest + settle - now).to_std().unwrap_or_default();
            tracing::info!(files = young.len(), wait_secs = wait.as_secs_f64(), "waiting for recent files to settle");
            tokio::time::sleep(wait).await;
            let again: BTreeMap<String, FileEntry> =
                self.list().await?.into_iter().map(|e| (e.path.clone(), e)).collect();
            for e in young {
                match again.get(&e.path) {
                    Some(now) if !changed(&e, now) => stable.push(e),
                    _ => waiting.push(e.path),
                }
            }
        }
        stable.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((stable, waiting))
    }
}

/// Whether a file changed between two listings: its size, its modification time beyond a second, or its tag
/// (ETag; inode and status-change time on a local disk).
fn changed(before: &FileEntry, now: &FileEntry) -> bool {
    before.size != now.size || modified_apart(before, now) || before.etag != now.etag
}

/// Whether two modification times of a file differ by more than a second (stores and file systems round them).
fn modified_apart(before: &FileEntry, now: &FileEntry) -> bool {
    (before.last_modified - now.last_modified).num_milliseconds().abs() > 1000
}

/// Walks a local drop zone without following symbolic links. Entries that are not directories are listed when
/// their relative path matches, whatever their type: [`open_regular`] refuses the ones that are not regular
/// files, so they are reported rather than silently skipped.
fn list_local(root: &Path, matcher: &GlobMatcher) -> std::io::Result<Vec<FileEntry>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            // `file_type` and `symlink_metadata` do not follow links.
            let meta = std::fs::symlink_metadata(entry.path())?;
            if meta.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            let rel = entry.path().strip_prefix(root).unwrap_or(&entry.path()).to_string_lossy().replace('\\', "/");
            if matcher.is_match(&rel) {
                let refused = if meta.file_type().is_symlink() {
                    Some("it is a symbolic link")
                } else if !meta.is_file() {
                    Some("it is not a regular file")
                } else {
                    None
                };
                out.push(FileEntry {
                    path: rel,
                    size: meta.len(),
                    last_modified: meta.modified().map(DateTime::<Utc>::from).unwrap_or_default(),
                    etag: local_tag(&meta),
                    refused,
                });
            }
        }
    }
    Ok(out)
}

/// The hash identifying a file's content, `xxh3-128:<32 hex digits>`: read from the start, and the file left
/// rewound for its reader.
pub fn content_hash(file: &mut std::fs::File) -> std::io::Result<String> {
    use std::io::Seek;
    file.rewind()?;
    let mut hasher = twox_hash::XxHash3_128::new();
    hash_to_end(file, &mut hasher)?;
    file.rewind()?;
    Ok(hash_text(&hasher))
}

/// Hashes the rest of `file`, from where it is.
fn hash_to_end(file: &mut std::fs::File, hasher: &mut twox_hash::XxHash3_128) -> std::io::Result<()> {
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.write(&buf[..n]);
    }
}

fn hash_text(hasher: &twox_hash::XxHash3_128) -> String {
    format!("xxh3-128:{:032x}", hasher.finish_128())
}

/// A file read once for both its reader and its [`content_hash`]: a reader that reads it in order
/// ([`Self::reader`]) gets its bytes through a hasher, and [`Self::finish`] hashes what the reader left
/// unread; a reader that seeks ([`Self::file`]) gets the file after a first pass for the hash. Reading a
/// large file twice was a few percent of an ingest's time.
pub struct ContentHash {
    file: Option<std::fs::File>,
    /// What [`Self::finish`] reads on from: the same open file as the reader's, so at the offset it reached.
    rest: Option<std::fs::File>,
    hasher: Arc<std::sync::Mutex<twox_hash::XxHash3_128>>,
    hash: Option<String>,
}

/// The reader [`ContentHash::reader`] hands out.
struct Hashing {
    file: std::fs::File,
    hasher: Arc<std::sync::Mutex<twox_hash::XxHash3_128>>,
}

impl std::io::Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.lock().unwrap_or_else(std::sync::PoisonError::into_inner).write(&buf[..n]);
        Ok(n)
    }
}

impl ContentHash {
    pub fn new(mut file: std::fs::File) -> std::io::Result<Self> {
        use std::io::Seek;
        file.rewind()?;
        Ok(Self { file: Some(file), rest: None, hasher: Default::default(), hash: None })
    }

    /// The file's bytes from the start, hashed as they are read.
    pub fn reader(&mut self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        let file = self.file.take().ok_or_else(|| std::io::Error::other("the file was handed out already"))?;
        self.rest = Some(file.try_clone()?);
        Ok(Box::new(Hashing { file, hasher: self.hasher.clone() }))
    }

    /// The file itself, rewound, its hash taken first.
    pub fn file(&mut self) -> std::io::Result<std::fs::File> {
        let mut file = self.file.take().ok_or_else(|| std::io::Error::other("the file was handed out already"))?;
        self.hash = Some(content_hash(&mut file)?);
        Ok(file)
    }

    /// The hash of the whole file, reading what the reader left.
    pub fn finish(self) -> std::io::Result<String> {
        if let Some(hash) = self.hash {
            return Ok(hash);
        }
        let mut hasher = self.hasher.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(mut rest) = self.file.or(self.rest) {
            hash_to_end(&mut rest, &mut hasher)?;
        }
        Ok(hash_text(&hasher))
    }
}

/// A local file's version tag, as an ETag is on a store: its inode and its status-change time (`ctime`, which
/// every write or replacement moves and no one can set back, unlike the modification time).
#[cfg(unix)]
fn local_tag(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    Some(format!("{:x}-{:x}.{:09}", meta.ino(), meta.ctime(), meta.ctime_nsec()))
}

#[cfg(not(unix))]
fn local_tag(_meta: &std::fs::Metadata) -> Option<String> {
    None
}

/// Opens `rel` under `root` only if it is a regular file reached without any symbolic link.
fn open_regular(root: &Path, rel: &str, url: &Url) -> Result<std::fs::File, ConnectorError> {
    let full = root.join(rel);
    let location = format!("{url}{rel}");
    let refused = |reason: &'static str| ConnectorError::Refused { location: location.clone(), reason };
    let io_err = |source| ConnectorError::Io { location: location.clone(), source };
    let before = std::fs::symlink_metadata(&full).map_err(io_err)?;
    if before.file_type().is_symlink() {
        return Err(refused("it is a symbolic link"));
    }
    if !before.is_file() {
        return Err(refused("it is not a regular file"));
    }
    // A directory on the way replaced by a link since the listing leaves the drop zone.
    if !std::fs::canonicalize(&full).map_err(io_err)?.starts_with(root) {
        return Err(refused("its path goes through a symbolic link"));
    }
    let file = std::fs::File::open(&full).map_err(io_err)?;
    // The file opened is the one checked (not swapped for a link in between).
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let opened = file.metadata().map_err(io_err)?;
        if (opened.dev(), opened.ino()) != (before.dev(), before.ino()) || !opened.is_file() {
            return Err(refused("it changed while it was being opened"));
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// The hash taken while a reader reads the file (all of it, part of it, nothing, in small reads) or before
    /// the file is handed out whole is the hash of the file.
    #[test]
    fn the_hash_taken_while_reading_is_the_content_hash() {
        let mut file = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        file.write_all(&bytes).unwrap();
        let expected = content_hash(&mut file).unwrap();
        for stop_after in [0, 1, 4096, 100_001, usize::MAX] {
            let mut hash = ContentHash::new(file.try_clone().unwrap()).unwrap();
            let mut reader = hash.reader().unwrap();
            let (mut buf, mut read) = ([0u8; 777], Vec::new());
            while read.len() < stop_after {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                read.extend_from_slice(&buf[..n]);
            }
            assert!(bytes.starts_with(&read));
            drop(reader);
            assert_eq!(hash.finish().unwrap(), expected, "a reader that stopped after {stop_after} bytes");
        }
        let mut hash = ContentHash::new(file.try_clone().unwrap()).unwrap();
        let mut whole = Vec::new();
        hash.file().unwrap().read_to_end(&mut whole).unwrap();
        assert_eq!(whole, bytes, "the file is handed out rewound");
        assert_eq!(hash.finish().unwrap(), expected);
    }
}
