//! The lakehouse catalog model: what ran, on which inputs, and what it produced.
//!
//! Every Delta commit made by a run carries a [`RunCommit`] under the commit-metadata key [`RUN_COMMIT_KEY`],
//! so the catalog can always be rebuilt from the lake. This crate never depends on `lakehouse`.

pub mod lineage;
mod store;

pub use store::{
    AttemptRow, Catalog, CatalogError, ColumnLineageRow, ColumnRow, LineageRow, RunRow, Snapshot, TableRow, UserRow,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Commit-metadata key holding a [`RunCommit`] (namespaced: Delta reserves keys like `operation`).
pub const RUN_COMMIT_KEY: &str = "lakehouse.run";

/// A run identifier: a UUID v7, so ids sort by start time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

impl RunId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Ingest,
    Transform,
    /// Deletion of rows past the manifest's retention.
    Retention,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Transform => "transform",
            Self::Retention => "retention",
        }
    }
}

/// Records read, written, quarantined and superseded. Invariant: `read == written + quarantined + superseded`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordCounts {
    pub read: u64,
    pub written: u64,
    pub quarantined: u64,
    /// `upsert` sources: records replaced by a later record of the same key in the same batch (the last wins).
    #[serde(default)]
    pub superseded: u64,
}

impl RecordCounts {
    pub fn add(&mut self, other: RecordCounts) {
        self.read += other.read;
        self.written += other.written;
        self.quarantined += other.quarantined;
        self.superseded += other.superseded;
    }
    pub fn balanced(&self) -> bool {
        self.read == self.written + self.quarantined + self.superseded
    }
}

/// One input file of an ingest run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// Drop-zone location URL + path relative to it.
    pub location: String,
    pub path: String,
    pub size: u64,
    pub records: RecordCounts,
}

/// What a run writes into the commit metadata of each table it commits to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCommit {
    pub run_id: RunId,
    pub kind: RunKind,
    /// The manifest or transform that ran (`bronze.ddsp_incidents`).
    pub target: String,
    /// SHA-256 of the manifest text.
    pub manifest_hash: String,
    /// Sequence number of this ingest batch (the Delta application-transaction version), or of this transform
    /// run on its target.
    pub batch: i64,
    pub started_at: DateTime<Utc>,
    pub records: RecordCounts,
    /// Files read (ingest runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputFile>,
    /// Tables read and the exact Delta version of each (transform runs). An incremental run processes the data
    /// committed after the versions its last run read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<TableVersion>,
    /// SHA-256 of the rendered SQL (transform runs, full rendering): a run on the same inputs with the same SQL
    /// has nothing to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_hash: Option<String>,
    /// The rendered SQL of a transform run (as executed; it names tables, columns and key domains, never keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// How a transform run built its output (`full` or `incremental`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A table at one Delta version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableVersion {
    /// `layer.name`.
    pub table: String,
    pub version: u64,
}
