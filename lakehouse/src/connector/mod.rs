//! Connectors fetch partner data as **units**: a file of a drop zone, or a response of an API that the
//! connector archived in the warehouse ([`archive`]: an API's page, a database's rows). Ingest takes units the same way whatever their kind
//! ([`crate::ingest`]): it parses each unit with the manifest's format, records it in the ledger
//! (`bronze.<name>__files`) with the connector's **position** (the point reached in the source), and commits the
//! ledger, the quarantine and bronze with one batch number. The commit protocol knows nothing of the kind.
//!
//! Kinds: `files` (a local directory or an `s3://` prefix), `http` (a paginated API), `postgres` (a table or
//! a query, read in one snapshot), and the streams `mqtt` and `nats` (micro-batches of messages, acknowledged
//! after their commit). The manifest's `connector` becomes a [`Connector`] in [`open`], one `match`,
//! one file per kind.

mod archive;
mod files;
mod http;
mod mqtt;
mod nats;
mod pg_tls;
mod postgres;
mod stream;

pub use archive::{archive_url, list as list_archive};
pub use files::{ContentHash, FileEntry, content_hash};
pub use mqtt::check_filter as mqtt_check_filter;

pub use nats::Lag as StreamLag;

/// What a stream source's broker holds for it and it has not committed (`lakehouse status`): known for `nats`
/// (its durable consumer's pending messages); `None` for `mqtt` (the protocol does not tell a client how many
/// messages its session holds) and before a first run.
pub async fn stream_lag(m: &SourceManifest) -> Result<Option<StreamLag>, String> {
    match &m.connector {
        crate::manifest::Connector::Nats(spec) => nats::lag(spec, m.name.as_str()).await,
        _ => Ok(None),
    }
}

/// Publishes payloads to a stream source's broker, where its connector reads them: MQTT's first topic, or NATS's
/// subject filter (wildcards replaced by `demo`) — `lakehouse feed`. Waits until the broker has stored each.
pub async fn publish(m: &SourceManifest, payloads: Vec<Vec<u8>>) -> Result<(), String> {
    let concrete = |filter: &str, sep: char| {
        filter
            .split(sep)
            .map(|level| if matches!(level, "+" | "#" | "*" | ">") { "demo" } else { level })
            .collect::<Vec<_>>()
            .join(&sep.to_string())
    };
    match &m.connector {
        crate::manifest::Connector::Mqtt(spec) => {
            let topic = concrete(spec.topics.first().map(String::as_str).unwrap_or("demo"), '/');
            mqtt::publish(spec, &topic, payloads, 1000).await
        }
        crate::manifest::Connector::Nats(spec) => {
            let subject = concrete(spec.subject.as_deref().unwrap_or(&format!("{}.demo", spec.stream)), '.');
            nats::publish(spec, &subject, payloads, 1000).await
        }
        _ => Err(format!("`{}` is not a stream source (mqtt or nats)", m.name)),
    }
}
pub use postgres::{check_query as pg_check_query, table_name as pg_table_name};

use files::FilesConnector;

use std::collections::BTreeMap;
use std::path::Path;

use url::Url;

use crate::ingest::LedgerRow;
use crate::manifest::SourceManifest;

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
    /// A secret the manifest names is not in the environment.
    #[error("the environment variable `{variable}` (connector.{field}) is not set: export it before the run")]
    Secret { variable: String, field: &'static str },
    /// A request failed (network, status): nothing of the run is committed.
    #[error("{request}: {detail}; nothing was committed")]
    Http { request: String, detail: String },
    /// The credentials were refused (not retried).
    #[error("{request}: {detail}; nothing was committed")]
    Auth { request: String, detail: String },
    /// A response is not what the manifest declares.
    #[error("{request}: the response is not what the manifest declares: {detail}; nothing was committed")]
    Response { request: String, detail: String },
    /// A database refused a statement, or cannot be reached: nothing of the run is committed.
    #[error("{database}: {detail}; nothing was committed")]
    Database { database: String, detail: String },
    /// A message broker refused, failed or cannot be reached.
    #[error("{0}")]
    Broker(String),
    /// An archived unit cannot be read back.
    #[error("{location}: {detail}")]
    Archive { location: String, detail: String },
    #[error(transparent)]
    Keys(#[from] crate::privacy::KeyError),
}

/// A unit that is not taken in this run, and why: it is reported, and tried again by the next run.
#[derive(Debug, Clone)]
pub struct FailedFile {
    pub path: String,
    pub reason: String,
}

/// What a connector offers for the next batch.
#[derive(Debug, Default)]
pub struct Polled {
    /// The units to take, in the order their records are taken.
    pub units: Vec<FileEntry>,
    /// Units seen but not taken (refused, or changed since they were taken), with why.
    pub rejected: Vec<FailedFile>,
    /// Units not ready yet (a file still being written): a later run takes them.
    pub waiting: Vec<String>,
    /// The position reached once these units are taken, committed with them (in their ledger rows); `None`:
    /// the connector keeps none (the ledger's paths are its memory).
    pub position: Option<String>,
}

/// A kind of source, as ingest uses it.
///
/// # Contract
///
/// - [`Connector::poll`] returns what is new since the last committed batch. It is given the ledger (each path
///   taken, with its last batch; only the last batch's rows when [`Connector::last_batch_only`] says so) and the
///   position committed with the last batch. It may be called again for the
///   same batch (a run that crashed before its commit): it must then offer the same records or later ones, and
///   never skip one that was not committed.
/// - Every unit it returns can be read with [`Connector::open`] in this run **and in later runs**: a run that
///   crashes between the ledger's commit and bronze's leaves a pending batch, which the next run reads again
///   unit by unit from the ledger's rows (without polling), and whose bytes must hash as before.
/// - The position is an opaque text of the connector's; it is written with the batch's ledger rows, in the same
///   commit, so the position and the rows it covers are committed together or not at all.
/// - [`Connector::acknowledge`] is called once the batch is committed to bronze (a message broker is told
///   here); a crash before it leaves the source to offer the batch again, which the ledger then recognizes.
/// - No secret and no data value in an error, a log line or a position.
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    /// The URL the units' paths are relative to: the ledger's `location`, and with the path, the quarantine's
    /// `source_file`.
    fn location(&self) -> &Url;

    /// The units of the next batch, `batch`.
    async fn poll(
        &self,
        taken: &BTreeMap<String, LedgerRow>,
        position: Option<&str>,
        batch: i64,
    ) -> Result<Polled, ConnectorError>;

    /// Where the connector keeps the units it makes (an API's pages, a database's rows, a broker's batches),
    /// encrypted in the warehouse; `None` for a connector whose units are the partner's files.
    fn archive(&self) -> Option<&archive::Archive> {
        None
    }

    /// A unit's bytes from its start: one polled in this run, or one the ledger holds (a pending batch). By
    /// default, the archived unit.
    async fn open(&self, unit: &FileEntry) -> Result<std::fs::File, ConnectorError> {
        match self.archive() {
            Some(a) => a.open(&unit.path).await,
            None => Err(ConnectorError::Archive {
                location: format!("{}{}", self.location(), unit.path),
                detail: "this connector keeps no archive".into(),
            }),
        }
    }

    /// Batch `batch` is committed to bronze.
    async fn acknowledge(&self, _batch: i64) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Whether a batch is taken whole or not at all: a unit that cannot be read then fails the run, instead of
    /// being left for the next run while the others are committed (the position would move past its records).
    /// A connector that archives its units takes its batches whole.
    fn all_or_nothing(&self) -> bool {
        self.archive().is_some()
    }

    /// Whether [`Connector::poll`] of batch `batch` needs only the ledger's last batch (a stream: a batch a second,
    /// whose ledger would otherwise be read whole every second) rather than every row.
    fn last_batch_only(&self, _batch: i64) -> bool {
        false
    }

    /// The units polled by this run will not be committed (the run failed): a connector that made them (an
    /// archived response) removes them. Failures are logged, not returned.
    async fn discard(&self, units: &[FileEntry]) {
        if let Some(a) = self.archive() {
            a.discard(units).await
        }
    }
}

/// A secret the manifest names by its environment variable (`field`: where, under `connector.`).
fn secret(variable: &str, field: &'static str) -> Result<String, ConnectorError> {
    match std::env::var(variable) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(ConnectorError::Secret { variable: variable.to_string(), field }),
    }
}

/// The largest archived micro-batch read back (a batch holds at most `batch.max_bytes`, 1 GiB).
const MAX_STREAM_UNIT: u64 = 2 << 30;

/// A TLS client configuration: the system's root certificates, and those of the PEM file `ca_file` (named in
/// messages as `what`) when there is one; the `ring` provider the build already has.
fn tls_client_config(ca_file: Option<(&str, &str)>) -> Result<tokio_rustls::rustls::ClientConfig, String> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot parse is skipped, as the other TLS clients of the build do.
        let _ = roots.add(cert);
    }
    if let Some((what, file)) = ca_file {
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(file)
            .map_err(|e| format!("{what} `{file}` cannot be read: {e}"))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{what} `{file}` is not a PEM certificate file: {e}"))?;
            roots.add(cert).map_err(|e| format!("{what} `{file}`: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{what} `{file}` holds no certificate"));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS cannot be set up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Builds the connector a manifest declares. Remote stores use the warehouse's storage settings (timeouts,
/// retries); secrets are read from the environment here, so a missing one fails the run before any request.
pub fn open(
    m: &SourceManifest,
    project_dir: &Path,
    lh: &crate::Lakehouse,
) -> Result<Box<dyn Connector>, ConnectorError> {
    use crate::manifest::Connector as Kind;
    Ok(match &m.connector {
        Kind::Files { location, pattern, settle, changed_files } => {
            Box::new(FilesConnector::new(project_dir, location, pattern, settle.0, *changed_files, &lh.warehouse)?)
        }
        Kind::Http(spec) => Box::new(http::HttpConnector::new(m, spec, lh)?),
        Kind::Postgres(spec) => Box::new(postgres::PostgresConnector::new(m, spec, lh)?),
        Kind::Mqtt(spec) => Box::new(mqtt::MqttSource::new(m, spec, lh)?),
        Kind::Nats(spec) => Box::new(nats::NatsSource::new(m, spec, lh)?),
    })
}
