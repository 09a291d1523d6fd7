//! `lakehouse.yaml`: one per deployment.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::names::{DomainName, Duration, PartnerId, PhoneCountry, Retention, TimeZone};

pub const PROJECT_FILE: &str = "lakehouse.yaml";

/// The project file of a deployment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectFile {
    /// Format version of this file; only `1` exists.
    pub version: u32,
    /// Name of the deployment.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Where tables live: `file://./warehouse` (default, relative to the project directory) or
    /// `s3://bucket/prefix` (credentials and endpoint from the standard `AWS_*` variables).
    #[serde(default = "default_warehouse")]
    pub warehouse: String,
    /// Catalog database: `sqlite://…` (default, embedded) or `postgres://…`.
    #[serde(default = "default_catalog")]
    pub catalog: String,
    /// Time zone for local times in partner data and for schedules.
    #[serde(default)]
    pub timezone: TimeZone,
    /// Directory of source manifests, relative to the project.
    #[serde(default = "default_sources")]
    pub sources: PathBuf,
    /// Directory of transform models (`silver/`, `gold/`, `macros/`), relative to the project.
    #[serde(default = "default_transforms")]
    pub transforms: PathBuf,
    /// Directory of the access policy (`*.yaml`: roles and their grants), relative to the project.
    #[serde(default = "default_access")]
    pub access: PathBuf,
    /// Where `files` connectors may read: directories (relative to the project, or absolute) and
    /// `s3://bucket/prefix/` URLs. Every `connector.location` must lie inside one of them once `..` and symbolic
    /// links are resolved, and no drop zone may hold the warehouse or the key file.
    #[serde(default)]
    pub drop_zones: Vec<String>,
    /// Values for `var('name')` in templates (overridden by `--var name=value`).
    #[serde(default)]
    pub vars: indexmap::IndexMap<String, serde_json::Value>,
    /// The organisations that send data.
    #[serde(default)]
    pub partners: Vec<Partner>,
    #[serde(default)]
    pub privacy: Privacy,
    /// Where OpenLineage run events go (none when absent).
    #[serde(default)]
    pub openlineage: Option<OpenLineage>,
    /// Timeouts and retries of requests to object storage (S3).
    #[serde(default)]
    pub storage: StorageSettings,
    /// How long every table keeps its Delta log (each version's commit entry: lineage, time travel, `reproduce`,
    /// incremental models, `catalog rebuild` read it); at least the longest source `retention`. Default: the
    /// longest source retention, and at least 10 years ([`super::Project::log_retention`]).
    #[serde(default)]
    pub log_retention: Option<Retention>,
    /// Bounds on what a partner file may make the parser hold.
    #[serde(default)]
    pub limits: ReadLimits,
    /// The query server (`lakehouse serve`).
    #[serde(default)]
    pub serve: ServeSettings,
}

/// `lakehouse serve`: where it listens, its TLS certificate, and what one statement or the whole server may
/// take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    /// Address and port (default `127.0.0.1:5433`; `--listen` overrides it). An address other than loopback
    /// needs `tls`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The server's certificate chain and private key (PEM files, outside the repository; relative paths are
    /// relative to the project). When set, every connection must use TLS (`sslmode=require` or stricter).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Connections served at once (default 64); one more is refused with SQLSTATE 53300.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Longest a statement may run, results included (default `5 minutes`); a client's `SET statement_timeout`
    /// may only lower it. SQLSTATE 57014 beyond.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout: Duration,
    /// Most rows one statement may return (default 1,000,000): the statement fails (SQLSTATE 54000) when it
    /// would send more; `LIMIT` or an aggregate brings it under.
    #[serde(default = "default_max_rows")]
    pub max_rows: u64,
    /// Memory all running statements may hold together, in bytes (default 2 GiB): a statement that needs more
    /// (sorts, joins, aggregates) fails with SQLSTATE 53200 instead of growing the server.
    #[serde(default = "default_max_memory_bytes")]
    pub max_memory_bytes: u64,
    /// `lakehouse schedule` serves too (default false): one process lands the data on its schedules and serves
    /// it, with the same settings, reloads and stop as `lakehouse serve`.
    #[serde(default)]
    pub with_schedule: bool,
}

/// PEM files of the server's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn default_listen() -> String {
    "127.0.0.1:5433".into()
}
fn default_max_connections() -> u32 {
    64
}
fn default_statement_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(300))
}
fn default_max_rows() -> u64 {
    1_000_000
}
fn default_max_memory_bytes() -> u64 {
    2 << 30
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls: None,
            max_connections: default_max_connections(),
            statement_timeout: default_statement_timeout(),
            max_rows: default_max_rows(),
            max_memory_bytes: default_max_memory_bytes(),
            with_schedule: false,
        }
    }
}

/// Bounds on untrusted input. A record over a limit is quarantined with the reason; a file over a limit is not
/// taken and the run says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadLimits {
    /// Largest record (a CSV record, an NDJSON line), in bytes (default 4 MiB). A larger one is quarantined
    /// with its first `max_record_bytes` bytes.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: u64,
    /// Most lines one CSV record may span (quoted fields with line breaks; default 1000): beyond, the record is
    /// quarantined as a quote that is probably never closed.
    #[serde(default = "default_max_record_lines")]
    pub max_record_lines: u64,
    /// Largest decompressed size of a compressed file, in bytes (default 64 GiB).
    #[serde(default = "default_max_decompressed_bytes")]
    pub max_decompressed_bytes: u64,
    /// Largest ratio of decompressed to compressed size (default 200): beyond, the file is a decompression bomb.
    #[serde(default = "default_max_ratio")]
    pub max_ratio: u64,
}

fn default_max_record_bytes() -> u64 {
    4 << 20
}
fn default_max_record_lines() -> u64 {
    1000
}
fn default_max_decompressed_bytes() -> u64 {
    64 << 30
}
fn default_max_ratio() -> u64 {
    200
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_record_bytes: default_max_record_bytes(),
            max_record_lines: default_max_record_lines(),
            max_decompressed_bytes: default_max_decompressed_bytes(),
            max_ratio: default_max_ratio(),
        }
    }
}

/// Timeouts and retries of every request to object storage, so that a store that is down or frozen fails a run
/// in bounded time instead of holding it for minutes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Time to open a connection (default `5 seconds`).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Time for one request, from sending it to the end of the answer (default `60 seconds`).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// Retries of a request that failed for a reason that may pass (a connection error, a timeout, a 5xx or
    /// 429 answer), with exponential backoff (default `3`).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Time after which a request is not retried any more (default `2 minutes`).
    #[serde(default = "default_retry_timeout")]
    pub retry_timeout: Duration,
    /// How long an S3 lock lease lives without renewal (default `60 seconds`): after a crash, the next run of
    /// the target waits at most this long.
    #[serde(default = "default_lock_lease")]
    pub lock_lease: Duration,
}

fn default_lock_lease() -> Duration {
    Duration(std::time::Duration::from_secs(60))
}

fn default_connect_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(5))
}
fn default_request_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(60))
}
fn default_retries() -> u32 {
    3
}
fn default_retry_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(120))
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            retries: default_retries(),
            retry_timeout: default_retry_timeout(),
            lock_lease: default_lock_lease(),
        }
    }
}

/// OpenLineage 2-0-2 run events: one JSON file per event in `directory`, and/or POSTed to `url`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenLineage {
    /// Directory of the event files, relative to the project.
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// HTTP endpoint receiving each event as a POST (e.g. Marquez: `http://host:5000/api/v1/lineage`).
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the endpoint's API key (sent as a bearer token); never in the file.
    #[serde(default)]
    pub api_key_variable: Option<String>,
}

fn default_warehouse() -> String {
    "file://./warehouse".into()
}
fn default_catalog() -> String {
    "sqlite://./.lakehouse/catalog.db".into()
}
fn default_transforms() -> PathBuf {
    PathBuf::from("transforms")
}
fn default_access() -> PathBuf {
    PathBuf::from("access")
}
fn default_sources() -> PathBuf {
    PathBuf::from("sources")
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Partner {
    pub id: PartnerId,
    pub name: String,
    /// `external` partners need an `agreement` reference in each of their manifests.
    pub kind: PartnerKind,
    #[serde(default)]
    pub contact: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartnerKind {
    External,
    Internal,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    /// Pseudonymization domains: a value pseudonymized in one domain cannot be linked to another domain.
    /// Every `domain` used by a manifest must be listed here; each needs a key at run time.
    #[serde(default)]
    pub domains: Vec<DomainName>,
    /// Where the keys come from (never the repository, never the lake).
    #[serde(default)]
    pub keys: KeySource,
    /// Smallest number of people or events a published gold cell may describe; smaller cells are suppressed.
    #[serde(default = "default_min_group_size")]
    pub min_group_size: u32,
    /// The finest generalization that still masks a quasi-identifier: a silver or gold column computed from a
    /// `quasi` or `sensitive` bronze column through a finer one is refused, as if no privacy function were used.
    #[serde(default)]
    pub min_generalization: MinGeneralization,
    /// The country of phone numbers written in national notation (ISO 3166 code such as `FR`), for
    /// `normalize: phone`.
    #[serde(default)]
    pub phone_country: Option<PhoneCountry>,
}

/// Minimum sizes of the generalization functions (`geo_cell`, `age_band`, `time_bucket`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MinGeneralization {
    /// Smallest `geo_cell` size, in meters (default 200).
    #[serde(default = "default_cell_meters")]
    pub cell_meters: u32,
    /// Smallest `age_band` width, in years (default 5).
    #[serde(default = "default_age_band_years")]
    pub age_band_years: u32,
    /// Finest `time_bucket` unit (default `hour`).
    #[serde(default = "default_time_bucket")]
    pub time_bucket: Bucket,
}

fn default_cell_meters() -> u32 {
    200
}
fn default_age_band_years() -> u32 {
    5
}
fn default_time_bucket() -> Bucket {
    Bucket::Hour
}

impl Default for MinGeneralization {
    fn default() -> Self {
        Self {
            cell_meters: default_cell_meters(),
            age_band_years: default_age_band_years(),
            time_bucket: default_time_bucket(),
        }
    }
}

/// A `time_bucket` unit, from finest to coarsest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    Hour,
    Day,
    Week,
    Month,
}

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            _ => None,
        }
    }
}

fn default_min_group_size() -> u32 {
    11
}

/// Where pseudonymization and quarantine-encryption keys come from.
///
/// The key material is lines of `domain key_id hex_key` (64 hex digits = 32 bytes), `#` comments allowed;
/// in an environment variable the entries may also be separated by `;`. The domain `quarantine` holds the key
/// that encrypts quarantined raw records.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeySource {
    /// Keys in an environment variable.
    Env {
        #[serde(default = "default_key_variable")]
        variable: String,
    },
    /// Keys in a file outside the project directory (`~` expands to the home directory).
    File {
        path: String,
        /// Create the file with fresh random keys (mode 0600) when it does not exist. For development and
        /// demo deployments; keep it `false` in production so a missing key is an error.
        #[serde(default)]
        create_if_missing: bool,
    },
}

impl ProjectFile {
    /// A project with these key domains and every other setting at its default (unit tests, fuzzing).
    pub fn with_domains(domains: &[&str]) -> Self {
        let value = serde_json::json!({ "version": 1, "name": "test", "privacy": { "domains": domains } });
        serde_json::from_value(value).expect("a valid project")
    }
}

impl Default for Privacy {
    fn default() -> Self {
        Self {
            domains: Vec::new(),
            keys: KeySource::default(),
            min_group_size: default_min_group_size(),
            min_generalization: MinGeneralization::default(),
            phone_country: None,
        }
    }
}

fn default_key_variable() -> String {
    "LAKEHOUSE_KEYS".into()
}

impl Default for KeySource {
    fn default() -> Self {
        Self::Env { variable: default_key_variable() }
    }
}
