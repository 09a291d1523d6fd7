//! # lakehouse
//!
//! A declarative data lakehouse for public-safety data shared under GDPR. The pipeline, phase by phase:
//!
//! ```text
//! partner feed ──connector──▶ format: parse + check + pseudonymize ──▶ ingest: bronze Delta table
//!  (drop zone files)           (declared types, bad records kept)        (+ quarantine, + file ledger;
//!                                                                          exactly once per file)
//!                                                                               │
//!        gold Delta tables ◀── transform: SQL models on DataFusion ◀── silver ◀─┘
//!   (aggregates, small cells    (minijinja, DAG, incremental,        (pseudonymized,
//!    suppressed)                 audits before commit)                generalized)
//! ```
//!
//! - [`manifest`]: `lakehouse.yaml` and `sources/*.yaml`, strict and versioned, every problem reported at once.
//! - [`connector`]: where records come from (`files` on local disk or S3).
//! - [`format`](mod@format): CSV / NDJSON / JSON / Parquet into Arrow with the declared schema; bad records kept with a reason.
//! - [`privacy`]: keyed pseudonyms (HMAC-SHA-256) and encryption of quarantined records.
//! - [`ingest`]: the exactly-once commit protocol into bronze Delta tables.
//! - [`transform`]: SQL models (minijinja templates) → silver and gold Delta tables, full or incremental, with
//!   audits before publishing and small-cell suppression in gold.
//! - [`schedule`]: the scheduler — sources on cron (time-zone and DST aware), models when their inputs change,
//!   retries, locks per target across processes, graceful stop; time and work are injectable.
//! - [`audit`]: lineage trees from the lake (versions, runs, manifests, partners, files) and reproduction of a
//!   table version by time travel.
//! - [`catalog_sync`]: the catalog database kept up to date from the lake (tables, runs, lineage, attempts).
//! - [`openlineage`]: OpenLineage 2-0-2 run events with schema, version and column-lineage facets.
//! - [`retention`]: deletes bronze and quarantine rows past the manifest's retention, then vacuums.
//! - [`review`]: what a change set changes in sources, models, privacy and access (`lakehouse plan`).
//! - [`register`]: the register of processing activities (GDPR art. 30) from the deployment's declarations.
//! - [`erase`]: erasure of a data subject across layers, old files and log entries purged, evidence in
//!   `system.erasures`.
//! - [`runlog`]: `system.runs`, one row per run attempt, read by `lakehouse status`.
//! - [`session`]: the one factory of DataFusion sessions, a read-only SQL sandbox.
//! - [`storage`]: warehouse URL → Delta tables on `file://` or `s3://`.

pub mod access;
pub mod audit;
pub mod catalog_sync;
pub mod connector;
pub mod erase;
pub mod fault;
pub mod format;
pub mod fuzzing;
pub mod ingest;
pub mod manifest;
pub mod openlineage;
pub mod privacy;
pub mod register;
pub mod retention;
pub mod review;
pub mod runlog;
pub mod schedule;
pub mod serve;
pub mod session;
pub mod storage;
#[cfg(test)]
mod testing;
pub mod transform;

use std::sync::Arc;

use manifest::Project;
use privacy::{KeyError, KeyRing, QUARANTINE_DOMAIN};
use storage::{StorageError, Warehouse};

/// Whether a command loads the privacy keys.
///
/// Only commands that write pseudonyms or decrypt quarantined records load them (ingest, transform, run,
/// schedule, retention, reproduce, `quarantine --raw`); read-only commands (sql, lineage, tables, runs, status,
/// describe) never read, and never create, a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// Load the keys (and create the key file when the project says `create_if_missing`).
    Write,
    /// No keys: every keyed operation fails with a clear error.
    ReadOnly,
}

/// A loaded project with its warehouse and keys: what every command runs against.
#[derive(Debug, Clone)]
pub struct Lakehouse {
    pub project: Project,
    pub warehouse: Warehouse,
    pub keys: Arc<KeyRing>,
    /// Where OpenLineage run events go.
    pub events: openlineage::Emitter,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("privacy keys: {0}")]
    Keys(#[from] KeyError),
}

impl Lakehouse {
    /// Opens the warehouse of a validated project, and loads its keys when `keys` is [`KeyUse::Write`].
    pub fn open(project: Project, keys: KeyUse) -> Result<Self, OpenError> {
        let warehouse =
            Warehouse::new(&project.dir, &project.file.warehouse, &project.file.storage, project.log_retention())?;
        let mut domains: Vec<&str> = project.file.privacy.domains.iter().map(|d| d.as_str()).collect();
        domains.push(QUARANTINE_DOMAIN);
        let keys = match keys {
            KeyUse::Write => KeyRing::load(&project.file.privacy.keys, &domains)?,
            KeyUse::ReadOnly => KeyRing::not_loaded(),
        };
        let ol = project.file.openlineage.as_ref();
        let endpoint = ol.and_then(|o| {
            let url = url::Url::parse(o.url.as_deref()?).ok()?;
            Some((url, o.api_key_variable.as_ref().and_then(|v| std::env::var(v).ok())))
        });
        let events = openlineage::Emitter::new(
            ol.and_then(|o| o.directory.as_ref()).map(|d| project.dir.join(d)),
            endpoint,
            &project.file.name,
        );
        Ok(Self { project, warehouse, keys: Arc::new(keys), events })
    }
}
