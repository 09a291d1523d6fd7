//! The `files` connector: a drop zone on local disk or S3.
//!
//! A file is identified by its path relative to the location. A file already taken is never taken again, even
//! if it changes afterwards (the run warns about it): to load corrected data, the partner drops a new file.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use globset::GlobMatcher;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use super::ConnectorError;
use crate::storage::{resolve_url, storage_options};

/// A file available in the drop zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the connector's location.
    pub path: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    pub etag: Option<String>,
}

pub struct FilesConnector {
    url: Url,
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    matcher: GlobMatcher,
}

impl FilesConnector {
    pub fn new(project_dir: &Path, location: &str, pattern: &str) -> Result<Self, ConnectorError> {
        let url = resolve_url(project_dir, location)?;
        let store_err = |source| ConnectorError::Store { location: url.to_string(), source };
        let (store, prefix): (Arc<dyn ObjectStore>, StorePath) = if url.scheme() == "file" {
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
            (
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(store_err)?),
                StorePath::default(),
            )
        } else {
            let (store, prefix) = object_store::parse_url_opts(&url, storage_options(&url)).map_err(store_err)?;
            (Arc::from(store), prefix)
        };
        let matcher = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| ConnectorError::Pattern { pattern: pattern.to_string(), reason: e.kind().to_string() })?
            .compile_matcher();
        Ok(Self { url, store, prefix, matcher })
    }

    pub fn location(&self) -> &Url {
        &self.url
    }

    /// The files matching the pattern, sorted by path.
    pub async fn list(&self) -> Result<Vec<FileEntry>, ConnectorError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let metas: Vec<_> = self
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(|source| ConnectorError::Store { location: self.url.to_string(), source })?;
        let mut files: Vec<FileEntry> = metas
            .into_iter()
            .filter_map(|m| {
                let full = m.location.as_ref();
                let rel = full.strip_prefix(self.prefix.as_ref()).unwrap_or(full).trim_start_matches('/');
                let name = rel.rsplit('/').next().unwrap_or(rel);
                (!name.starts_with('.') && self.matcher.is_match(rel)).then(|| FileEntry {
                    path: rel.to_string(),
                    size: m.size,
                    last_modified: m.last_modified,
                    etag: m.e_tag,
                })
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Opens a file for streaming reads. Local files are read in place; remote objects are downloaded to a
    /// temporary file first (streamed, so memory stays bounded), which is removed when the reader is dropped.
    pub async fn open(&self, entry: &FileEntry) -> Result<Box<dyn Read + Send>, ConnectorError> {
        let location = self.store_path(entry);
        let io_err = |source| ConnectorError::Io { location: format!("{}{}", self.url, entry.path), source };
        if self.url.scheme() == "file" {
            let path = self.url.to_file_path().map_err(|()| io_err(std::io::Error::other("not a local path")))?;
            let file = std::fs::File::open(path.join(&entry.path)).map_err(io_err)?;
            return Ok(Box::new(file));
        }
        let mut tmp = tempfile::tempfile().map_err(io_err)?;
        let mut stream = self
            .store
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
        Ok(Box::new(tmp))
    }

    fn store_path(&self, entry: &FileEntry) -> StorePath {
        if self.prefix.as_ref().is_empty() {
            StorePath::from(entry.path.as_str())
        } else {
            StorePath::from(format!("{}/{}", self.prefix.as_ref(), entry.path))
        }
    }
}
