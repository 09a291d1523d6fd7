//! `sources/<name>.yaml`: one partner feed, version 1.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::names::{ColumnName, CronSchedule, DomainName, Duration, PartnerId, Retention, TableName, TimeZone};

/// A source manifest: one partner feed landing in the bronze table `bronze.<name>`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceManifest {
    /// Format version of the manifest; only `1` exists.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// Bronze table name: `bronze.<name>`. Lowercase letters, digits and single underscores.
    pub name: TableName,
    pub description: String,
    /// The partner sending this feed, declared in `lakehouse.yaml`.
    pub owner: PartnerId,
    /// Reference of the legal agreement with the partner; required for external partners.
    #[serde(default)]
    pub agreement: Option<String>,
    /// Why the data is processed (GDPR art. 30 (1)(b)), for the register of processing (`lakehouse register`).
    #[serde(default)]
    pub purpose: Option<String>,
    /// The lawful basis of the processing (GDPR art. 6 (1)).
    #[serde(default)]
    pub legal_basis: Option<LegalBasis>,
    /// The categories of people the records are about (`[reporters, victims]`), for the register.
    #[serde(default)]
    pub data_subjects: Vec<String>,
    /// When the scheduler runs the connector: 5-field crontab, or 6 fields with seconds first.
    pub schedule: CronSchedule,
    pub connector: Connector,
    /// How the connector's bytes become records: required by `files` and `http`; absent for `postgres` (rows) and
    /// the streams `mqtt` and `nats` (each message is a JSON object).
    #[serde(default)]
    pub format: Option<Format>,
    /// The declared columns, in table order. Records are parsed into these types; what does not parse is
    /// quarantined with a reason.
    pub columns: IndexMap<ColumnName, Column>,
    #[serde(default)]
    pub load: Load,
    /// Columns whose values, taken together, no two records may share (`unique: [accident_id, vehicle_id]`); a
    /// single column says `unique: true` on itself. A record whose values were already seen, earlier in the same
    /// run or in bronze, is quarantined with `duplicate key (first seen at <file>:<line>)`.
    #[serde(default)]
    pub unique: Option<Vec<ColumnName>>,
    /// JSON sources: arrays of each record landed as child tables `bronze.<name>__<child>`, one row per element,
    /// keyed by the record's `key` columns and the element's position (`_index`). The element's fields are
    /// declared like columns (`from` relative to the element, `.` for the element itself), `pii` included: personal
    /// data inside arrays is pseudonymized element by element.
    #[serde(default)]
    pub explode: IndexMap<ColumnName, Explode>,
    #[serde(default)]
    pub on_bad_record: OnBadRecord,
    /// A field of the input that no column declares (a CSV header, a Parquet column, a JSON record's key, a GeoJSON
    /// property): `warn` (default: the run logs it and the ledger's `new_fields` names it), `ignore`, or `fail` (the
    /// file, page or unit is not taken).
    #[serde(default)]
    pub on_new_field: OnNewField,
    /// How long bronze rows are kept: `90 days`, `3 years`, `forever`.
    pub retention: Retention,
    /// What the scheduler does when a run fails.
    #[serde(default)]
    pub retry: Retry,
}

/// Retries of failed scheduled runs: exponential backoff (doubling from `backoff`, at most `max_backoff`) with
/// ±50% random jitter, up to `attempts` attempts in all; then the source waits for its next scheduled time.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts per scheduled run, the first included (1 = no retry).
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 1, max = 20))]
    pub attempts: u32,
    /// Wait before the first retry.
    #[serde(default = "default_backoff")]
    pub backoff: Duration,
    /// Longest wait between two attempts.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Duration,
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration(std::time::Duration::from_secs(60))
}
fn default_max_backoff() -> Duration {
    Duration(std::time::Duration::from_secs(3600))
}

impl Default for Retry {
    fn default() -> Self {
        Self { attempts: default_attempts(), backoff: default_backoff(), max_backoff: default_max_backoff() }
    }
}

/// Where records come from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Connector {
    /// Files in a drop zone: a local directory (relative to the project) or an `s3://bucket/prefix`.
    /// Each file is taken exactly once; the files taken are committed with the rows.
    Files {
        location: String,
        /// Glob matched against the path relative to `location`, e.g. `*.csv.gz` or `**/*.json`.
        #[serde(default = "default_pattern")]
        pattern: String,
        /// A file is taken only once it has not changed for this long (default `10 seconds`): one modified more
        /// recently is taken if its size and modification time are the same when listed again after the
        /// settle time, else it is still being written and waits for a later run. Empty files are never taken.
        #[serde(default = "default_settle")]
        settle: Duration,
        /// What becomes of a file that changes after it was taken (`refuse` by default).
        #[serde(default)]
        changed_files: ChangedFiles,
    },
    /// A JSON (or CSV) API over HTTP(S), read page by page. Each response is archived, compressed and encrypted,
    /// under `<warehouse>/archive/<source>/`, and taken like a file: the position reached (the `cursor`'s
    /// high-water mark) is committed with the rows, so a rerun after a crash neither loses nor duplicates.
    Http(Box<HttpConnector>),
    /// A PostgreSQL table or query, read in one consistent snapshot (`REPEATABLE READ`, read only) and streamed
    /// in units of `batch_rows` rows, archived like an API's pages. With a `cursor`, each run reads the rows whose
    /// cursor column is at or after the highest value taken (minus `lookback`), and that value is committed with
    /// the rows. The source has no `format`: rows are read as PostgreSQL types, checked against the declared ones
    /// before any row is read.
    Postgres(Box<PostgresConnector>),
    /// MQTT topics (QoS 1, a persistent session): each run takes a micro-batch of messages (`batch`), archives it
    /// as one unit (one JSON record per message), commits it, and only then acknowledges the messages to the
    /// broker. A message the broker delivers again after a crash is recognized by its `message_id` and landed once.
    /// Under `lakehouse schedule`, `schedule: continuous` takes batch after batch.
    Mqtt(Box<MqttConnector>),
    /// A NATS JetStream stream read through a durable pull consumer: micro-batches like `mqtt`, acknowledged after
    /// their commit; a redelivered message is recognized by its stream sequence.
    Nats(Box<NatsConnector>),
}

/// `kind: postgres`: where the database is (a connection string in the environment), what to read and where to
/// resume.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresConnector {
    /// The environment variable holding the connection string (`postgresql://user:password@host:5432/db` or
    /// `host=… user=… dbname=…`): credentials never in the manifest. TLS is required off the local machine
    /// (`sslmode=require` is implied; certificates are checked against the system's roots and `PGSSLROOTCERT`).
    pub url_env: String,
    /// A table or view, `schema.table` or `table` (one of `table` and `query`).
    #[serde(default)]
    pub table: Option<String>,
    /// A `SELECT` (or `WITH … SELECT`) whose rows are the records, without a trailing `;` (one of `table` and
    /// `query`). It is read as a subquery: its columns are the fields the manifest's columns name.
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub cursor: Option<PostgresCursor>,
    /// Rows per archived unit (each unit is one ledger row).
    #[serde(default = "default_batch_rows")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub batch_rows: u64,
    /// Longest wait to connect.
    #[serde(default = "default_http_timeout")]
    pub timeout: Duration,
}

/// Incremental reads of a table: the rows whose `column` is at or after the highest value taken so far (`initial`
/// on the first run, every row without it), minus `lookback`; rows read again are merged by key (`load: upsert`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresCursor {
    /// A column of the table or query: a timestamp, a date, an integer, a numeric or a text. Rows where it is null
    /// are read by the first run only.
    pub column: String,
    /// The value the first run reads from (every row when absent), in PostgreSQL's syntax for the column's type.
    #[serde(default)]
    pub initial: Option<String>,
    /// How far back before the highest value taken the next run reads again (timestamp and date columns):
    /// rows committed late with an earlier timestamp are caught.
    #[serde(default)]
    pub lookback: Option<Duration>,
}

/// `kind: mqtt`: the broker, the topics, the session and the message's identity.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttConnector {
    /// `mqtts://host:8883` (TLS, certificates checked against the system's roots and the file named by
    /// `ca_file_env`), or `mqtt://host:1883` in clear on a loopback address only.
    pub url: String,
    /// Topic filters subscribed with QoS 1; `+` matches one level, `#` the rest (`city/traffic/+/flow`).
    pub topics: Vec<String>,
    /// The field of each message's JSON payload that identifies it (unique per message, as the publisher writes
    /// it): a message delivered again after a crash is recognized by it and landed once.
    pub message_id: String,
    /// The client id of the persistent session (default `lakehouse-<source>`): the broker keeps the session's
    /// messages while no run is connected, up to `session_expiry`. One source, one client id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// How long the broker keeps the session and its queued messages while no run is connected (default
    /// `7 days` as `168 hours`).
    #[serde(default = "default_session_expiry")]
    pub session_expiry: Duration,
    /// The record gets the message's topic in this field (declare a column reading it).
    #[serde(default)]
    pub topic_field: Option<String>,
    /// Environment variables holding the user name and password (never the values themselves).
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// An environment variable naming a PEM file of CA certificates trusted besides the system's (`mqtts://`).
    #[serde(default)]
    pub ca_file_env: Option<String>,
    #[serde(default)]
    pub batch: StreamBatch,
    /// Longest wait to connect and for the broker's answers (default `30 seconds`).
    #[serde(default = "default_http_timeout")]
    pub timeout: Duration,
}

/// `kind: nats`: the server, the JetStream stream and the durable consumer reading it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsConnector {
    /// `tls://host:4222` (TLS, certificates checked against the system's roots and the file named by
    /// `ca_file_env`), or `nats://host:4222` in clear on a loopback address only.
    pub url: String,
    /// The JetStream stream (it must exist: streams are the broker's configuration).
    pub stream: String,
    /// The durable consumer's name (default `lakehouse_<source>`), created on the first run if it does not exist;
    /// it remembers which messages were acknowledged.
    #[serde(default)]
    pub consumer: Option<String>,
    /// Only the messages of these subjects (`patrol.alarms.>`); every message of the stream without it.
    #[serde(default)]
    pub subject: Option<String>,
    /// The record gets the message's subject in this field.
    #[serde(default)]
    pub subject_field: Option<String>,
    /// The record gets the message's stream sequence in this field (an `int` column).
    #[serde(default)]
    pub sequence_field: Option<String>,
    /// How long a delivered message may stay unacknowledged before the server delivers it again (default
    /// `30 seconds`): after a crash, the messages of the batch that was not committed come back after this.
    #[serde(default = "default_http_timeout")]
    pub ack_wait: Duration,
    /// Environment variables holding a token, or a user name and password (never the values themselves).
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// An environment variable naming a PEM file of CA certificates trusted besides the system's (`tls://`).
    #[serde(default)]
    pub ca_file_env: Option<String>,
    #[serde(default)]
    pub batch: StreamBatch,
    /// Longest wait to connect and for the server's answers (default `30 seconds`).
    #[serde(default = "default_http_timeout")]
    pub timeout: Duration,
}

/// When a micro-batch of a stream closes: at `max_records` messages, at `max_bytes` of payload (`nats` asks the
/// server for at least 64 MiB, its largest message), or `max_wait` after the run started receiving, whichever
/// comes first. A run that receives nothing for `max_wait` ends without a batch.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamBatch {
    #[serde(default = "default_stream_records")]
    #[schemars(range(min = 1, max = 65535))]
    pub max_records: u64,
    #[serde(default = "default_stream_bytes")]
    #[schemars(range(min = 1024, max = 1073741824))]
    pub max_bytes: u64,
    #[serde(default = "default_stream_wait")]
    pub max_wait: Duration,
}

impl Default for StreamBatch {
    fn default() -> Self {
        Self {
            max_records: default_stream_records(),
            max_bytes: default_stream_bytes(),
            max_wait: default_stream_wait(),
        }
    }
}

fn default_stream_records() -> u64 {
    10_000
}
fn default_stream_bytes() -> u64 {
    16 << 20
}
fn default_stream_wait() -> Duration {
    Duration(std::time::Duration::from_secs(1))
}
fn default_session_expiry() -> Duration {
    Duration(std::time::Duration::from_secs(7 * 24 * 3600))
}

fn default_batch_rows() -> u64 {
    50_000
}

/// `kind: http`: where the API is, how to authenticate, how to page through it and where to resume.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConnector {
    /// `https://…` (or `http://` on a loopback address only: credentials never travel in clear).
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// Query parameters sent with every request.
    #[serde(default)]
    pub params: IndexMap<String, String>,
    /// Headers sent with every request (no secrets here: see `auth`).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// `method: post`: the JSON body sent with every request.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// How to authenticate; every secret is named by an environment variable, never written here.
    #[serde(default)]
    pub auth: Option<HttpAuth>,
    #[serde(default)]
    pub pagination: Pagination,
    /// Incremental reads: only the records changed since the last run are asked for.
    #[serde(default)]
    pub cursor: Option<HttpCursor>,
    /// Longest wait for one response, connection included (default `30 seconds`).
    #[serde(default = "default_http_timeout")]
    pub timeout: Duration,
    /// Most requests per second (default: no limit).
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// Retries of a request answered 429 or 5xx, or that failed on the network, with exponential backoff from
    /// one second (or the `Retry-After` the server sends, up to 5 minutes). Default 4.
    #[serde(default = "default_http_retries")]
    #[schemars(range(max = 20))]
    pub retries: u32,
    /// A run that would read more pages fails and commits nothing (default 10,000): a pagination that never ends
    /// is a configuration error.
    #[serde(default = "default_max_pages")]
    #[schemars(range(min = 1))]
    pub max_pages: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
}

/// Authentication; each `*_env` names the environment variable holding the secret.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpAuth {
    /// `Authorization: Bearer <token>`.
    Bearer { token_env: String },
    /// An API key in a header (`X-API-Key` by default) or a query parameter.
    ApiKey {
        #[serde(default = "default_api_key_name")]
        name: String,
        #[serde(default, rename = "in")]
        place: ApiKeyIn,
        value_env: String,
    },
    /// HTTP basic authentication.
    Basic { username_env: String, password_env: String },
    /// OAuth 2 client credentials: a token asked for at `token_url` once per run (and again when it expires).
    Oauth2 {
        token_url: String,
        client_id_env: String,
        client_secret_env: String,
        #[serde(default)]
        scope: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyIn {
    #[default]
    Header,
    Query,
}

fn default_api_key_name() -> String {
    "X-API-Key".into()
}

/// How to go from one page to the next; pages are read until the API says there is no more.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One request.
    #[default]
    None,
    /// `?page=1`, `?page=2`… until a page holds no record, or fewer than `size`.
    Page {
        #[serde(default = "default_page_param")]
        param: String,
        /// The first page's number.
        #[serde(default = "default_first_page")]
        first: u64,
        /// The parameter asking for a page size, and the size.
        #[serde(default)]
        size_param: Option<String>,
        #[serde(default)]
        size: Option<u64>,
    },
    /// `?offset=0&limit=100`, `?offset=100&limit=100`… until a page holds fewer than `limit` records.
    Offset {
        #[serde(default = "default_offset_param")]
        param: String,
        #[serde(default = "default_limit_param")]
        limit_param: String,
        limit: u64,
    },
    /// A token for the next page in the body (`from`, a dotted path), sent back as `param`; no token: the end.
    Cursor { from: String, param: String },
    /// The next page's URL in the body (`from`, a dotted path); none: the end. It must stay on the API's origin.
    NextUrl { from: String },
    /// The next page's URL in the `Link` header (`rel="next"`, RFC 8288); none: the end. Same origin only.
    LinkHeader,
}

fn default_page_param() -> String {
    "page".into()
}
fn default_first_page() -> u64 {
    1
}
fn default_offset_param() -> String {
    "offset".into()
}
fn default_limit_param() -> String {
    "limit".into()
}
fn default_http_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}
fn default_http_retries() -> u32 {
    4
}
fn default_max_pages() -> u32 {
    10_000
}

/// Incremental reads: `param` asks the API for the records whose `field` is at or after the highest value taken
/// so far (`initial` on the first run), minus `lookback` to catch records updated late; the records read again are
/// merged by key (`load: upsert`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpCursor {
    /// The record field (a dotted path) holding an ISO 8601 timestamp or a number.
    pub field: String,
    /// The query parameter it is sent as.
    pub param: String,
    /// The value asked for on the first run.
    pub initial: String,
    /// How far back before the highest value taken the next run asks again (timestamps only).
    #[serde(default)]
    pub lookback: Option<Duration>,
}

/// A file already taken whose content changed since (its size, or its content hash when its modification time,
/// inode or ETag moved).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangedFiles {
    /// Not ingested again: every run reports it as an error naming the file, until it is moved out of the drop
    /// zone (partners send corrections as new files).
    #[default]
    Refuse,
    /// Taken again, as a new version, by the next run: its records land like a new file's (`upsert` updates by
    /// key; `append` adds them, so `unique` quarantines the keys already taken).
    NewVersion,
}

fn default_pattern() -> String {
    "*".into()
}

fn default_settle() -> Duration {
    Duration(std::time::Duration::from_secs(10))
}

/// How file bytes become records.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Format {
    Csv {
        #[serde(default = "default_delimiter")]
        delimiter: char,
        #[serde(default = "default_quote")]
        quote: char,
        /// Whether the first line names the columns (matched by name); otherwise columns are in order.
        #[serde(default = "yes")]
        header: bool,
        #[serde(default)]
        encoding: Encoding,
        /// Decimal separator for `double` and `decimal` columns: `.` or `,`.
        #[serde(default = "default_decimal")]
        decimal: char,
        /// Field values read as null (after trimming).
        #[serde(default = "default_nulls")]
        null_values: Vec<String>,
        #[serde(default)]
        compression: Compression,
    },
    /// One JSON object per line.
    Ndjson {
        #[serde(default)]
        compression: Compression,
    },
    /// A JSON document holding an array of records, at `records` (a dotted path, empty for a top-level array).
    /// The document is read whole: use `ndjson` for large feeds.
    Json {
        #[serde(default)]
        records: String,
        #[serde(default)]
        compression: Compression,
    },
    /// A GeoJSON `FeatureCollection` (RFC 7946), one record per feature: `properties.<name>`, `id`, `geometry` as
    /// WKT, and `lat`/`lon`, a representative point (the point itself, else the centre of its bounding box).
    /// Read whole, like `json`.
    Geojson {
        #[serde(default)]
        compression: Compression,
    },
    Parquet,
    /// An Excel workbook (`.xlsx`): one sheet, its header row naming the columns, one record per row below it
    /// (empty rows skipped). Cells formatted as dates or times are read as local date-times (in the column's
    /// `timezone`, else the project's), from the workbook's 1900 or 1904 date system.
    Xlsx {
        /// The sheet: its name (`sheet: Interventions`) or its position from 1 (`sheet: 2`); the first sheet by
        /// default.
        #[serde(default)]
        sheet: Option<Sheet>,
        /// The row holding the column names (from 1; rows above it, a title, are skipped).
        #[serde(default = "default_header_row")]
        #[schemars(range(min = 1))]
        header_row: u32,
    },
}

/// A sheet of a workbook: by position (from 1) or by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Sheet {
    Index(#[schemars(range(min = 1))] u32),
    Name(String),
}

fn default_header_row() -> u32 {
    1
}

fn default_delimiter() -> char {
    ','
}
fn default_quote() -> char {
    '"'
}
fn default_decimal() -> char {
    '.'
}
fn default_nulls() -> Vec<String> {
    vec![String::new()]
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Encoding {
    #[default]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    #[serde(rename = "windows-1252", alias = "cp1252")]
    Windows1252,
    #[serde(rename = "iso-8859-1", alias = "latin1")]
    Iso88591,
}

/// `auto` decompresses files whose name ends in `.gz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Auto,
    Gzip,
    None,
}

/// An array of each record, landed as a child table.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Explode {
    /// Key or dotted path of the array in the record (default: the child's name).
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// The fields of each element, in table order (`from: .` for an array of scalars).
    pub columns: IndexMap<ColumnName, Column>,
}

/// A bronze table a source writes ([`SourceManifest::tables`]), as its manifest declares it.
#[derive(Debug, Clone)]
pub struct BronzeTable<'a> {
    /// The table's name without `bronze.`: `<source>` or `<source>__<child>`.
    pub name: String,
    pub description: Option<&'a str>,
    pub columns: Vec<(&'a ColumnName, &'a Column)>,
}

impl BronzeTable<'_> {
    /// A declared column by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n.as_str() == name).map(|(_, c)| *c)
    }
}

/// `from:` one input field name, or a list of accepted names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum InputNames {
    One(String),
    Many(Vec<String>),
}

/// A declared column.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Column {
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Name of the field in the input (CSV header, JSON key or dotted path) when it differs from the column name;
    /// a list accepts several names (files that renamed the field between years): each file must hold exactly
    /// one of them.
    #[serde(default)]
    pub from: Option<InputNames>,
    #[serde(default)]
    pub description: Option<String>,
    /// Part of the record key (used by `load: upsert`); implies `required`.
    #[serde(default)]
    pub key: bool,
    /// No two records may have the same value: a record whose value was already seen, earlier in the same run or
    /// in bronze (`append`), is quarantined with `duplicate key (first seen at <file>:<line>)`; the first one
    /// stays. Nulls are not compared (add `required: true` to refuse them).
    #[serde(default)]
    pub unique: bool,
    /// A null value quarantines the record.
    #[serde(default)]
    pub required: bool,
    /// Allowed values (string columns).
    #[serde(default)]
    pub values: Option<Vec<String>>,
    /// Inclusive numeric range `[min, max]` (int, double and decimal columns).
    #[serde(default)]
    pub range: Option<[f64; 2]>,
    /// strptime format for `date` and `timestamp` (default ISO 8601).
    #[serde(default)]
    pub format: Option<String>,
    /// Time zone of `timestamp` values without an offset (default: the project's).
    #[serde(default)]
    pub timezone: Option<TimeZone>,
    /// Total digits of a `decimal`.
    #[serde(default)]
    pub precision: Option<u8>,
    /// Digits after the point of a `decimal`.
    #[serde(default)]
    pub scale: Option<i8>,
    /// Privacy class.
    #[serde(default)]
    pub pii: Pii,
    /// Key domain of a `pii: direct` column.
    #[serde(default)]
    pub domain: Option<DomainName>,
    /// How a direct identifier is normalized before hashing, after trimming.
    #[serde(default)]
    pub normalize: Normalize,
    /// Keep a `pii: direct` column in clear: the reference of the DPO's written approval.
    #[serde(default)]
    pub keep_clear: Option<String>,
    /// `type: list`: the type of its items (a scalar type).
    #[serde(default)]
    pub items: Option<ColumnType>,
    /// `type: struct`: its fields, declared like columns (scalar types; `from` relative to the object; no `pii`:
    /// the struct's own applies).
    #[serde(default)]
    pub fields: Option<IndexMap<ColumnName, Column>>,
    /// JSON sources: accept a value of another JSON type and read it through its text (`"43.3"` for a double,
    /// `13201` for a string, an object or array as JSON text). Without it, a value of the wrong JSON type is
    /// quarantined with a type error.
    #[serde(default)]
    pub coerce: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    String,
    Int,
    Double,
    Bool,
    Date,
    Timestamp,
    Decimal,
    /// Any JSON value (an object, an array…) kept as compact JSON text; in CSV and Parquet, text that must be
    /// valid JSON. Arrays of records with personal data are landed with `explode` instead.
    Json,
    /// An array of values of the type `items` (an Arrow list); `values`, `range`, `format`… apply to each item.
    List,
    /// An object with the declared `fields` (an Arrow struct).
    Struct,
}

impl ColumnType {
    pub fn is_numeric(self) -> bool {
        matches!(self, Self::Int | Self::Double | Self::Decimal)
    }

    /// A type whose values are one value each (not json, list or struct).
    pub fn is_scalar(self) -> bool {
        !matches!(self, Self::Json | Self::List | Self::Struct)
    }
}

/// The lawful basis of a processing (GDPR art. 6 (1) (a) to (f)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LegalBasis {
    /// (a) the person consented.
    Consent,
    /// (b) a contract with the person.
    Contract,
    /// (c) a legal obligation of the controller.
    LegalObligation,
    /// (d) the vital interests of a person.
    VitalInterests,
    /// (e) a task carried out in the public interest or in the exercise of official authority.
    PublicTask,
    /// (f) the legitimate interests of the controller (not for public authorities' tasks).
    LegitimateInterests,
}

impl LegalBasis {
    /// The basis as the register states it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Consent => "consent (GDPR art. 6 (1) (a))",
            Self::Contract => "contract (GDPR art. 6 (1) (b))",
            Self::LegalObligation => "legal obligation (GDPR art. 6 (1) (c))",
            Self::VitalInterests => "vital interests (GDPR art. 6 (1) (d))",
            Self::PublicTask => "public task (GDPR art. 6 (1) (e))",
            Self::LegitimateInterests => "legitimate interests (GDPR art. 6 (1) (f))",
        }
    }
}

/// Privacy class of a column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pii {
    /// Not personal data.
    #[default]
    None,
    /// Identifies a person on its own (name, phone number): replaced by a keyed pseudonym before landing.
    Direct,
    /// Identifies a person in combination (place, time, age): generalized in silver.
    Quasi,
    /// Sensitive content (free text, health): restricted access.
    Sensitive,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Trim only.
    #[default]
    Trim,
    /// Trim and lower-case (Unicode case folding): `Dupont` and `DUPONT` give the same pseudonym.
    Casefold,
    /// Keep digits only: `06 12 34 56 78` and `06.12.34.56.78` give the same pseudonym.
    Digits,
    /// A phone number in E.164 form, national notations read with `privacy.phone_country`: `06 12 34 56 78`,
    /// `+33 6 12 34 56 78`, `+33 (0)6 12 34 56 78`, `0033612345678` and `06.12.34.56.78` give one pseudonym. A
    /// value that is not a phone number is quarantined.
    Phone,
    /// An e-mail address: trimmed and lower-cased, so `Jean.Dupont@Mairie.fr ` and `jean.dupont@mairie.fr` give
    /// one pseudonym. A value without exactly one `@` between two non-empty parts is quarantined.
    Email,
}

/// How new rows are written to bronze.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Load {
    #[serde(default)]
    pub mode: LoadMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    /// Add the new rows.
    #[default]
    Append,
    /// Insert or update by the `key` columns (the last record of a run wins).
    Upsert,
    /// The rows of each run replace the table's content.
    Replace,
}

/// What becomes of a field the manifest does not declare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnNewField {
    /// Read nothing of it, say nothing.
    Ignore,
    /// Read nothing of it; the run logs it and the ledger names it (`new_fields`).
    #[default]
    Warn,
    /// The file (or page) holding it is not taken, with the field's name: declare it, or change the policy.
    Fail,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnBadRecord {
    /// Keep bad records in `bronze.<name>__quarantine` with the reason, and go on.
    #[default]
    Quarantine,
    /// Stop the run at the first bad record; nothing is committed.
    Fail,
}

/// How a `postgres` source's units are read: CSV with a header, as the connector writes them (COPY's output).
static ROWS: std::sync::LazyLock<Format> = std::sync::LazyLock::new(|| Format::Csv {
    delimiter: ',',
    quote: '"',
    header: true,
    encoding: Encoding::Utf8,
    decimal: '.',
    null_values: vec![String::new()],
    compression: Compression::None,
});
/// What a manifest without `format` reads, after validation refused it (kinds other than `postgres`).
static UNDECLARED: Format = Format::Ndjson { compression: Compression::Auto };
/// The units of a stream source: one JSON record per message, a line each.
static MESSAGES: Format = Format::Ndjson { compression: Compression::None };

impl SourceManifest {
    /// How the connector's units are read: the declared `format`, or the rows a `postgres` source writes.
    pub fn format(&self) -> &Format {
        match (&self.format, &self.connector) {
            (_, Connector::Postgres(_)) => &ROWS,
            (_, Connector::Mqtt(_) | Connector::Nats(_)) => &MESSAGES,
            (Some(f), _) => f,
            // Refused by validation (`format` is required for files and http).
            (None, _) => &UNDECLARED,
        }
    }

    /// Whether the connector gives typed values, checked against the declared types when it reads them
    /// (`postgres`, whose units are CSV it renders itself).
    pub fn typed_connector(&self) -> bool {
        matches!(self.connector, Connector::Postgres(_))
    }

    /// Whether the connector is a message stream (`mqtt`, `nats`): micro-batches, acknowledged after their
    /// commit; its units are written by the connector (no `format`).
    pub fn is_stream(&self) -> bool {
        self.stream_batch().is_some()
    }

    /// A stream source's micro-batch settings.
    pub fn stream_batch(&self) -> Option<&StreamBatch> {
        match &self.connector {
            Connector::Mqtt(c) => Some(&c.batch),
            Connector::Nats(c) => Some(&c.batch),
            _ => None,
        }
    }

    /// The columns marked `key: true`, in order.
    pub fn key_columns(&self) -> Vec<&str> {
        self.columns.iter().filter(|(_, c)| c.key).map(|(n, _)| n.as_str()).collect()
    }

    /// The uniqueness constraints, each a list of columns: one per `unique: true` column, then the manifest's
    /// `unique:` list.
    pub fn unique_constraints(&self) -> Vec<Vec<&str>> {
        let mut out: Vec<Vec<&str>> =
            self.columns.iter().filter(|(_, c)| c.unique).map(|(n, _)| vec![n.as_str()]).collect();
        if let Some(cols) = &self.unique {
            out.push(cols.iter().map(ColumnName::as_str).collect());
        }
        out
    }

    /// The child tables of `explode`: (suffix, explode), `bronze.<name>__<suffix>`.
    pub fn children(&self) -> impl Iterator<Item = (&str, &Explode)> {
        self.explode.iter().map(|(n, e)| (n.as_str(), e))
    }

    /// Every bronze table the source writes: its own, then one per `explode` child (`<name>__<child>`, whose
    /// columns are the record's key columns, then the element's). The side tables (ledger, quarantine) are not
    /// in it.
    pub fn tables(&self) -> Vec<BronzeTable<'_>> {
        let mut out = vec![BronzeTable {
            name: self.name.to_string(),
            description: Some(&self.description),
            columns: self.columns.iter().collect(),
        }];
        for (child, e) in self.children() {
            let keys = self.columns.iter().filter(|(_, c)| c.key);
            out.push(BronzeTable {
                name: format!("{}__{child}", self.name),
                description: e.description.as_deref(),
                columns: keys.chain(&e.columns).collect(),
            });
        }
        out
    }

    /// The bronze table `name` (without `bronze.`) of this source, if it writes one.
    pub fn table(&self, name: &str) -> Option<BronzeTable<'_>> {
        self.tables().into_iter().find(|t| t.name == name)
    }

    /// The input field names a column accepts, in the order declared (its own name when `from` is absent).
    pub fn input_names(name: &ColumnName, col: &Column) -> Vec<String> {
        match &col.from {
            None => vec![name.to_string()],
            Some(InputNames::One(n)) => vec![n.clone()],
            Some(InputNames::Many(names)) => names.clone(),
        }
    }
}
