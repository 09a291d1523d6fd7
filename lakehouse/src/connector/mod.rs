//! Connectors fetch partner data. A connector lists what is available and opens one unit of it; which units
//! are new is decided by the ingest ledger (`ingest::ledger`), committed with the rows.
//!
//! Kinds: `files` (a local directory or an `s3://` prefix). The manifest's `connector` enum becomes a connector
//! in [`open`], one `match`, one file per kind.

mod files;

pub use files::{ContentHash, FileEntry, FilesConnector, content_hash};

use std::path::Path;

use crate::manifest::Connector;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{location}: {source}")]
    Store {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{location}: {source}")]
    Io {
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{location}: refused: {reason}; a drop zone takes regular files only (no symbolic links, pipes or devices)"
    )]
    Refused { location: String, reason: &'static str },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("invalid pattern `{pattern}`: {reason}")]
    Pattern { pattern: String, reason: String },
}

/// Builds the connector a manifest declares.
/// Remote stores use the warehouse's storage settings (timeouts, retries).
pub fn open(
    connector: &Connector,
    project_dir: &Path,
    warehouse: &crate::storage::Warehouse,
) -> Result<FilesConnector, ConnectorError> {
    match connector {
        Connector::Files { location, pattern, .. } => FilesConnector::new(project_dir, location, pattern, warehouse),
    }
}
