//! The `postgres` connector: a table or a query, read in one consistent snapshot.
//!
//! A poll opens one connection (the connection string from the environment variable `url_env`; TLS with
//! verified certificates off the local machine, [`super::pg_tls`]) and one `REPEATABLE READ, READ ONLY`
//! transaction, in which it:
//! 1. describes the table or query (`SELECT * FROM (…) q LIMIT 0`) and checks every declared column against it:
//!    a column the result lacks, or of a type that cannot land as the declared one, fails the run before any row
//!    is read, naming the column, both types and what to change;
//! 2. with a `cursor`, takes the high-water mark of the rows it is about to read (`max` of the cursor column,
//!    at least the committed position), in the same snapshot as the rows;
//! 3. streams the rows with `COPY (SELECT …) TO STDOUT` as CSV with a header, each value in a text form the CSV
//!    reader parses as the declared type ([`render`]: ISO 8601 dates and times, JSON for arrays, composites and
//!    json/jsonb, `numeric`'s exact digits), cut at record ends ([`Splitter`]) into units of `batch_rows` rows
//!    (past [`UNIT_BYTES`], at the next record's end) archived like an API's pages ([`super::archive`]). COPY takes
//!    no parameters: the cursor's value is inlined as a literal quoted by the server (`quote_literal`).
//!
//! Memory holds one chunk of COPY's output and one compressed unit, whatever the table's size. The units and the
//! position are committed by ingest as for any connector: a crash before the ledger's commit reads again from
//! the committed position (in a new snapshot); a crash after it completes the batch from the archived units.
//!
//! Errors name the database by host, port and name (never the user or password) and PostgreSQL's SQLSTATE; the
//! messages of data exceptions (classes 22 and 23), which may quote a value, are not repeated.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use futures::StreamExt;

use chrono::Utc;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{Kind, Type};
use url::Url;

use super::archive::Archive;
use super::pg_tls::RustlsMaker;
use super::{Connector, ConnectorError, FileEntry, Polled, secret};
use crate::ingest::LedgerRow;
use crate::manifest::{ColumnType, SourceManifest};

/// Largest unit, in bytes of CSV: a unit is closed at `batch_rows` rows or past this size, at a record's end.
pub const UNIT_BYTES: u64 = 64 << 20;
/// Largest unit read back from the archive (a unit is closed past [`UNIT_BYTES`], after its last row).
const MAX_UNIT_BYTES: u64 = 1 << 30;

pub struct PostgresConnector {
    spec: crate::manifest::PostgresConnector,
    config: tokio_postgres::Config,
    /// `None`: a connection on the local machine, in clear.
    tls: Option<RustlsMaker>,
    /// How the database is named in messages: host, port, database and what is read.
    database: String,
    /// The table or query, as a subquery's SQL.
    from: String,
    /// The declared columns: name, accepted input names, type.
    columns: Vec<(String, Vec<String>, ColumnType)>,
    archive: Archive,
}

impl PostgresConnector {
    pub fn new(
        m: &SourceManifest,
        spec: &crate::manifest::PostgresConnector,
        lh: &crate::Lakehouse,
    ) -> Result<Self, ConnectorError> {
        let text = secret(&spec.url_env, "url_env")?;
        let failed = |detail: String| ConnectorError::Database { database: format!("${}", spec.url_env), detail };
        let mut config: tokio_postgres::Config = text.parse().map_err(|e| {
            failed(format!(
                "the environment variable `{}` is not a PostgreSQL connection string (`postgresql://…` or \
                 `host=… dbname=…`): {}",
                spec.url_env,
                describe_error(&e)
            ))
        })?;
        drop(text);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(spec.timeout.0);
        }
        if config.get_application_name().is_none() {
            config.application_name("lakehouse");
        }
        let tls = tls_policy(&mut config).map_err(failed)?;
        let (what, from) = match (&spec.table, &spec.query) {
            (Some(table), _) => {
                let quoted = table_name(table).ok_or_else(|| failed(format!("`{table}` is not a table name")))?;
                (format!("table {table}"), format!("(SELECT * FROM {quoted})"))
            }
            (None, Some(query)) => {
                let body = check_query(query).map_err(failed)?;
                ("query".to_string(), format!("(\n{body}\n)"))
            }
            (None, None) => return Err(failed("neither `table` nor `query` is declared".into())),
        };
        let columns = m
            .columns
            .iter()
            .map(|(name, col)| (name.to_string(), SourceManifest::input_names(name, col), col.ty))
            .collect();
        Ok(Self {
            database: format!("postgres {} ({what})", server_name(&config)),
            spec: spec.clone(),
            config,
            tls,
            from,
            columns,
            archive: Archive::new(lh, m.name.as_str(), MAX_UNIT_BYTES)?,
        })
    }

    fn error(&self, detail: String) -> ConnectorError {
        ConnectorError::Database { database: self.database.clone(), detail }
    }

    /// A PostgreSQL error as a message: what was being done, the SQLSTATE and the server's message, unless the
    /// message may quote a value.
    fn db(&self, doing: &str, e: tokio_postgres::Error) -> ConnectorError {
        self.error(format!("{doing}: {}", describe_error(&e)))
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, ConnectorError> {
        let connecting = |e| self.db("cannot connect", e);
        match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await.map_err(connecting)?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
            None => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await.map_err(connecting)?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
        }
    }

    /// The select list and the cursor column's type, from the described result: every declared column must be
    /// in it with a type that lands as the declared one.
    fn plan(&self, result: &[tokio_postgres::Column]) -> Result<(String, Option<Type>), ConnectorError> {
        let mut seen = HashSet::new();
        for c in result {
            if !seen.insert(c.name()) {
                return Err(self.error(format!(
                    "the result has two columns named `{}`: give one another name (`AS …`) in connector.query",
                    c.name()
                )));
            }
        }
        let names: Vec<&str> = result.iter().map(|c| c.name()).collect();
        for (name, inputs, declared) in &self.columns {
            // Top-level names only: a dotted `from` reads inside a json/jsonb or composite column.
            let found = inputs.iter().find_map(|input| {
                let top = input.split('.').next().unwrap_or(input);
                result.iter().find(|c| c.name() == top).map(|c| (input, c))
            });
            let Some((input, column)) = found else {
                let wanted = inputs.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(" or ");
                return Err(self.error(format!(
                    "column `{name}` reads {wanted}, which the result does not have (its columns: {}): a declared \
                     field that disappeared from the source; fix the table or query, or the column's `from`",
                    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                )));
            };
            let ty = base_type(column.type_());
            if !input.contains('.') && !lands_as(*declared, ty) {
                return Err(self.error(format!(
                    "column `{name}` is declared `{}` and `{}` is `{}` in PostgreSQL: declare `type: {}`, or cast it \
                     in connector.query (`{}::…`)",
                    type_word(*declared),
                    column.name(),
                    ty.name(),
                    suggested(ty),
                    column.name()
                )));
            }
        }
        let select = result.iter().map(|c| render(c.name(), base_type(c.type_()))).collect::<Vec<_>>().join(", ");
        let cursor = match &self.spec.cursor {
            None => None,
            Some(cursor) => {
                let column = result.iter().find(|c| c.name() == cursor.column).ok_or_else(|| {
                    self.error(format!(
                        "the cursor's column `{}` (connector.cursor.column) is not in the result (its columns: {})",
                        cursor.column,
                        names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                let ty = base_type(column.type_()).clone();
                let ordered = [
                    Type::INT2,
                    Type::INT4,
                    Type::INT8,
                    Type::NUMERIC,
                    Type::DATE,
                    Type::TIMESTAMP,
                    Type::TIMESTAMPTZ,
                    Type::TEXT,
                    Type::VARCHAR,
                ];
                if !ordered.contains(&ty) {
                    return Err(self.error(format!(
                        "the cursor's column `{}` is `{}`: a cursor is a timestamp, date, integer, numeric or text \
                         column",
                        cursor.column,
                        ty.name()
                    )));
                }
                if cursor.lookback.is_some() && ![Type::DATE, Type::TIMESTAMP, Type::TIMESTAMPTZ].contains(&ty) {
                    return Err(self.error(format!(
                        "connector.cursor.lookback applies to timestamp and date columns, and `{}` is `{}`: remove \
                         lookback",
                        cursor.column,
                        ty.name()
                    )));
                }
                Some(ty)
            }
        };
        Ok((select, cursor))
    }

    /// Reads the rows into archived units; on an error, `units` holds those archived so far.
    async fn read(
        &self,
        position: Option<&str>,
        batch: i64,
        units: &mut Vec<FileEntry>,
    ) -> Result<Option<String>, ConnectorError> {
        let mut client = self.connect().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| self.db("cannot start a read-only snapshot", e))?;
        // Timestamps with a time zone are written in UTC.
        tx.batch_execute("SET LOCAL TimeZone = 'UTC'").await.map_err(|e| self.db("cannot set the time zone", e))?;
        let from = &self.from;
        let described = tx
            .prepare(&format!("SELECT * FROM {from} AS q LIMIT 0"))
            .await
            .map_err(|e| self.db("the table or query cannot be read", e))?;
        let (select, cursor_type) = self.plan(described.columns())?;

        // The rows to read: `cursor >= since` (minus the lookback) with the cursor, else all of them. COPY takes no
        // parameters: the value is inlined as a literal the server quotes itself.
        let mut filter = String::new();
        let mut high = None;
        if let (Some(cursor), Some(ty)) = (&self.spec.cursor, &cursor_type) {
            let ty_sql = format!("{}.{}", quote(ty.schema()), quote(ty.name()));
            let column = format!("q.{}", quote(&cursor.column));
            let since = match (position, &cursor.initial) {
                (Some(p), _) => Some(p.to_string()),
                (None, Some(initial)) => {
                    let check = format!("SELECT CAST($1::text AS {ty_sql})::text");
                    tx.query_one(&check, &[initial as &(dyn tokio_postgres::types::ToSql + Sync)]).await.map_err(
                        |e| match e.code() {
                            Some(code) if code.code().starts_with("22") => self.error(format!(
                                "connector.cursor.initial `{initial}` is not a value of `{}` (`{}`'s type)",
                                ty.name(),
                                cursor.column
                            )),
                            _ => self.db("connector.cursor.initial", e),
                        },
                    )?;
                    Some(initial.clone())
                }
                (None, None) => None,
            };
            let mut since_sql = None;
            if let Some(since) = since {
                let quoted: String = tx
                    .query_one(
                        "SELECT quote_literal($1::text)",
                        &[&since as &(dyn tokio_postgres::types::ToSql + Sync)],
                    )
                    .await
                    .and_then(|row| row.try_get(0))
                    .map_err(|e| self.db("the cursor's value", e))?;
                let value = format!("CAST({quoted}::text AS {ty_sql})");
                filter = format!(" WHERE {column} >= {value}");
                if let (Some(back), Some(_)) = (cursor.lookback, position) {
                    filter.push_str(&format!(" - CAST('{} seconds' AS interval)", back.0.as_secs()));
                }
                since_sql = Some(value);
            }
            // The high-water mark: the highest value read, never below the committed position (which is `since`
            // when there is one).
            let previous = match (position, since_sql) {
                (Some(_), Some(value)) => value,
                _ => format!("CAST(NULL AS {ty_sql})"),
            };
            let sql = format!("SELECT GREATEST(max({column}), {previous})::text FROM {from} AS q{filter}");
            let row = tx.query_one(&sql, &[]).await.map_err(|e| self.db("the cursor's mark", e))?;
            high = row.try_get::<_, Option<String>>(0).map_err(|e| self.db("the cursor's mark", e))?;
        }
        let copy = format!("COPY (SELECT {select} FROM {from} AS q{filter}) TO STDOUT WITH (FORMAT csv, HEADER true)");
        let stream = tx.copy_out(&copy).await.map_err(|e| self.db("the rows cannot be read", e))?;
        futures::pin_mut!(stream);
        let dir = Archive::run_dir(batch);
        let mut split = Splitter::default();
        let mut unit = Unit::default();
        let mut total: u64 = 0;
        let io = |source| ConnectorError::Io { location: self.database.clone(), source };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.db("reading the rows", e))?;
            let mut rest: &[u8] = &chunk;
            while !rest.is_empty() {
                let room = self.spec.batch_rows.saturating_sub(unit.rows).max(1);
                let (header_len, taken, records) = split.feed(rest, room);
                if split.header_done && unit.header.is_empty() {
                    unit.header = split.header.clone();
                }
                if taken > 0 {
                    unit.write(&rest[header_len..header_len + taken], records).map_err(io)?;
                }
                total += records;
                rest = &rest[header_len + taken..];
                if unit.rows >= self.spec.batch_rows || (unit.bytes >= UNIT_BYTES && split.at_end) {
                    let next = Unit::with_header(split.header.clone());
                    self.close_unit(&dir, std::mem::replace(&mut unit, next), units).await?;
                }
            }
        }
        if unit.rows > 0 {
            self.close_unit(&dir, unit, units).await?;
        }
        // Read only: nothing to commit; the snapshot ends here.
        tx.rollback().await.map_err(|e| self.db("ending the snapshot", e))?;
        tracing::info!(database = %self.database, rows = total, units = units.len(), "rows read");
        Ok(high)
    }

    async fn close_unit(&self, dir: &str, unit: Unit, units: &mut Vec<FileEntry>) -> Result<(), ConnectorError> {
        let path = format!("{dir}/rows-{:05}.csv", units.len() + 1);
        let io = |source| ConnectorError::Io { location: format!("{}{path}", self.archive.url()), source };
        let compressed = unit.gz.finish().map_err(io)?;
        self.archive.put_compressed(&path, compressed).await?;
        tracing::info!(unit = %path, rows = unit.rows, "rows archived");
        units.push(FileEntry { path, size: unit.bytes, last_modified: Utc::now(), etag: None, refused: None });
        // Test hook: `LAKEHOUSE_FAULT=after-first-unit` stops the process once a unit is archived (a crash in the
        // middle of a read).
        crate::fault::abort_at("after-first-unit");
        Ok(())
    }
}

/// The rows of one unit, compressed as they come: the CSV header line, then whole records.
struct Unit {
    gz: flate2::write::GzEncoder<Vec<u8>>,
    header: Vec<u8>,
    rows: u64,
    bytes: u64,
}

impl Default for Unit {
    fn default() -> Self {
        Self::with_header(Vec::new())
    }
}

impl Unit {
    fn with_header(header: Vec<u8>) -> Self {
        Self { gz: Archive::encoder(), header, rows: 0, bytes: 0 }
    }

    /// Appends CSV bytes holding `records` record ends (the first unit's bytes start with the header itself).
    fn write(&mut self, bytes: &[u8], records: u64) -> std::io::Result<()> {
        if self.bytes == 0 {
            // A unit's first bytes: its header.
            self.gz.write_all(&self.header)?;
            self.bytes += self.header.len() as u64;
        }
        self.gz.write_all(bytes)?;
        self.rows += records;
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

/// Finds the ends of CSV records in COPY's output, chunk by chunk: a line feed outside quotes (a doubled quote
/// inside a quoted field toggles twice). The first record is the header, kept apart.
#[derive(Default)]
struct Splitter {
    in_quotes: bool,
    header: Vec<u8>,
    header_done: bool,
    /// Whether the bytes taken so far end at the end of a record.
    at_end: bool,
}

impl Splitter {
    /// Reads `chunk`: its first bytes may complete the header (`header_len` of them, kept here); then the record
    /// bytes to take — up to the end of the `room`-th record, or to the chunk's end — and how many records end in
    /// them. Returns `(header_len, taken, records)`.
    fn feed(&mut self, chunk: &[u8], room: u64) -> (usize, usize, u64) {
        let mut start = 0;
        let mut records = 0;
        for at in memchr::memchr2_iter(b'"', b'\n', chunk) {
            if chunk[at] == b'"' {
                self.in_quotes = !self.in_quotes;
                continue;
            }
            if self.in_quotes {
                continue;
            }
            if !self.header_done {
                self.header.extend_from_slice(&chunk[..=at]);
                self.header_done = true;
                start = at + 1;
                continue;
            }
            records += 1;
            if records == room {
                self.at_end = true;
                return (start, at + 1 - start, records);
            }
        }
        if !self.header_done {
            self.header.extend_from_slice(chunk);
            return (chunk.len(), 0, 0);
        }
        let taken = chunk.len() - start;
        if taken > 0 {
            self.at_end = !self.in_quotes && chunk.last() == Some(&b'\n');
        }
        (start, taken, records)
    }
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // Its errors reach the client's next call ("connection closed").
    if let Err(e) = connection.await {
        tracing::debug!(error = %describe_error(&e), "the PostgreSQL connection ended");
    }
}

#[async_trait::async_trait]
impl Connector for PostgresConnector {
    fn location(&self) -> &Url {
        self.archive.url()
    }

    async fn poll(
        &self,
        taken: &BTreeMap<String, LedgerRow>,
        position: Option<&str>,
        batch: i64,
    ) -> Result<Polled, ConnectorError> {
        self.archive.sweep(taken).await;
        let mut units = Vec::new();
        match self.read(position, batch, &mut units).await {
            Ok(high) => {
                let position = self.spec.cursor.as_ref().and(high.or_else(|| position.map(str::to_string)));
                Ok(Polled { units, rejected: Vec::new(), waiting: Vec::new(), position })
            }
            Err(e) => {
                self.archive.discard(&units).await;
                Err(e)
            }
        }
    }

    fn archive(&self) -> Option<&Archive> {
        Some(&self.archive)
    }
}

/// TLS off the local machine: `sslmode=disable` is refused there and `prefer` becomes `require`, with the
/// certificate verified. On the local machine (a Unix socket, `localhost`, a loopback address) the connection is
/// in clear unless `sslmode=require` asks for TLS.
fn tls_policy(config: &mut tokio_postgres::Config) -> Result<Option<RustlsMaker>, String> {
    let local_host = |h: &Host| match h {
        Host::Tcp(name) => name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        #[cfg(unix)]
        Host::Unix(_) => true,
    };
    let local = !config.get_hosts().is_empty()
        && config.get_hosts().iter().all(local_host)
        && config.get_hostaddrs().iter().all(|ip| ip.is_loopback());
    let mode = config.get_ssl_mode();
    if local {
        if mode == SslMode::Require {
            return RustlsMaker::new().map(Some);
        }
        config.ssl_mode(SslMode::Disable);
        return Ok(None);
    }
    if mode == SslMode::Disable {
        return Err(format!(
            "`sslmode=disable` is refused for {}: a connection off this machine is encrypted (remove sslmode, or use \
             `sslmode=require`)",
            server_name(config)
        ));
    }
    config.ssl_mode(SslMode::Require);
    RustlsMaker::new().map(Some)
}

/// `host:port/dbname`, without the user or password.
fn server_name(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
}

/// A tokio-postgres error without what it may quote of the data: a server error is its SQLSTATE and message,
/// except for data exceptions and integrity violations (classes 22 and 23), whose message may hold a value.
fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            if code.starts_with("22") || code.starts_with("23") {
                format!("PostgreSQL refused a value (SQLSTATE {code}; its message is not repeated: it may quote data)")
            } else {
                format!("{} (SQLSTATE {code})", db.message())
            }
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

/// A column of the select list, as text the CSV reader parses as the declared type: dates and times in ISO 8601
/// (`2024-03-01T08:30:00+00:00`, through their JSON form), booleans as `true`/`false`, arrays, composites, `json`
/// and `jsonb` as JSON text; numbers (`numeric` with its exact digits), texts and the rest in their own text form.
fn render(name: &str, ty: &Type) -> String {
    let q = quote(name);
    let time = [Type::DATE, Type::TIMESTAMP, Type::TIMESTAMPTZ, Type::TIME, Type::TIMETZ].contains(ty);
    let json = matches!(ty.kind(), Kind::Array(_) | Kind::Composite(_)) || *ty == Type::JSON || *ty == Type::JSONB;
    if time {
        format!("to_json(q.{q}) #>> '{{}}' AS {q}")
    } else if json {
        format!("to_json(q.{q})::text AS {q}")
    } else if *ty == Type::BOOL {
        format!("q.{q}::text AS {q}")
    } else {
        format!("q.{q}")
    }
}

/// A domain's base type.
fn base_type(ty: &Type) -> &Type {
    match ty.kind() {
        Kind::Domain(inner) => base_type(inner),
        _ => ty,
    }
}

/// Whether values of PostgreSQL type `ty` land as `declared`.
fn lands_as(declared: ColumnType, ty: &Type) -> bool {
    let int = [Type::INT2, Type::INT4, Type::INT8].contains(ty);
    let json = *ty == Type::JSON || *ty == Type::JSONB;
    match declared {
        ColumnType::String | ColumnType::Json => true,
        ColumnType::Int => int,
        ColumnType::Double => int || [Type::FLOAT4, Type::FLOAT8, Type::NUMERIC].contains(ty),
        ColumnType::Decimal => int || *ty == Type::NUMERIC,
        ColumnType::Bool => *ty == Type::BOOL,
        ColumnType::Date => *ty == Type::DATE,
        ColumnType::Timestamp => *ty == Type::TIMESTAMP || *ty == Type::TIMESTAMPTZ,
        ColumnType::List => json || matches!(ty.kind(), Kind::Array(_)),
        ColumnType::Struct => json || matches!(ty.kind(), Kind::Composite(_)),
    }
}

/// The declared type a PostgreSQL type lands as.
fn suggested(ty: &Type) -> &'static str {
    match ty {
        t if [Type::INT2, Type::INT4, Type::INT8].contains(t) => "int",
        t if [Type::FLOAT4, Type::FLOAT8].contains(t) => "double",
        t if *t == Type::NUMERIC => "decimal",
        t if *t == Type::BOOL => "bool",
        t if *t == Type::DATE => "date",
        t if *t == Type::TIMESTAMP || *t == Type::TIMESTAMPTZ => "timestamp",
        t if *t == Type::JSON || *t == Type::JSONB => "json",
        t if matches!(t.kind(), Kind::Array(_)) => "list",
        t if matches!(t.kind(), Kind::Composite(_)) => "struct",
        _ => "string",
    }
}

fn type_word(ty: ColumnType) -> String {
    serde_json::to_value(ty).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// An identifier, double-quoted.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `table` or `schema.table` as SQL (folded to lower case, as PostgreSQL reads names unquoted), or `None` when it
/// is not such a name.
pub fn table_name(table: &str) -> Option<String> {
    let parts: Vec<&str> = table.split('.').collect();
    let ident = |p: &str| {
        p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    if parts.len() > 2 || !parts.iter().all(|p| ident(p)) {
        return None;
    }
    Some(parts.iter().map(|p| quote(&p.to_ascii_lowercase())).collect::<Vec<_>>().join("."))
}

/// A query read as a subquery: one `SELECT`, `WITH`, `VALUES` or `TABLE` statement. Returns it without a final
/// `;` (and what follows it: spaces and comments). Strings, quoted names and comments are skipped when looking
/// for a `;`.
pub fn check_query(query: &str) -> Result<&str, String> {
    let bytes = query.as_bytes();
    let mut i = 0;
    let mut end = None;
    let mut first_word: Option<String> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' | b'"' => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b {
                        if bytes.get(i + 1) == Some(&b) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                if i >= bytes.len() {
                    return Err("the query has an unterminated quote".into());
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => match query[i + 2..].find("*/") {
                Some(at) => i += at + 4,
                None => return Err("the query has an unterminated comment".into()),
            },
            b'$' => {
                // A dollar-quoted string: `$tag$ … $tag$`.
                let tag_end = query[i + 1..].find('$').map(|at| i + 1 + at);
                let tag = tag_end.map(|e| &query[i..=e]);
                match tag {
                    Some(tag) if tag[1..tag.len() - 1].chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                        let after = i + tag.len();
                        match query[after..].find(tag) {
                            Some(at) => i = after + at + tag.len(),
                            None => return Err("the query has an unterminated dollar-quoted string".into()),
                        }
                    }
                    _ => i += 1,
                }
            }
            b';' => {
                end.get_or_insert(i);
                i += 1;
            }
            _ if b.is_ascii_whitespace() => i += 1,
            _ => {
                if end.is_some() {
                    return Err("the query holds more than one statement: one SELECT is read".into());
                }
                if first_word.is_none() {
                    let word: String = query[i..].chars().take_while(|c| c.is_ascii_alphabetic()).collect();
                    first_word = Some(word.to_ascii_lowercase());
                }
                i += 1;
            }
        }
    }
    match first_word.as_deref() {
        None => Err("the query is empty".into()),
        Some("select" | "with" | "values" | "table") => Ok(query[..end.unwrap_or(query.len())].trim()),
        Some(word) => Err(format!(
            "the query starts with `{word}`: connector.query is one SELECT (or WITH … SELECT), read in a read-only \
             snapshot"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_one_select_whatever_its_strings_and_comments_hold() {
        assert_eq!(check_query("SELECT 1;").unwrap(), "SELECT 1");
        assert_eq!(
            check_query("  with x AS (SELECT 1) SELECT * FROM x ; -- done\n").unwrap(),
            "with x AS (SELECT 1) SELECT * FROM x"
        );
        assert_eq!(
            check_query("SELECT ';' AS a, \"x;y\" FROM t /* ; */").unwrap(),
            "SELECT ';' AS a, \"x;y\" FROM t /* ; */"
        );
        assert_eq!(check_query("SELECT $q$ ; $q$ AS a").unwrap(), "SELECT $q$ ; $q$ AS a");
        assert_eq!(check_query("SELECT 'it''s;' AS a").unwrap(), "SELECT 'it''s;' AS a");
        assert!(check_query("SELECT 1; DELETE FROM t").unwrap_err().contains("more than one statement"));
        assert!(check_query("DELETE FROM t").unwrap_err().contains("starts with `delete`"));
        assert!(check_query("SELECT 'open").unwrap_err().contains("unterminated quote"));
        assert!(check_query(" -- nothing\n").unwrap_err().contains("empty"));
        // A positional parameter is not a dollar quote.
        assert_eq!(check_query("SELECT $1").unwrap(), "SELECT $1");
    }

    #[test]
    fn copy_output_is_cut_at_record_ends_whatever_the_chunks_and_quoted_line_feeds() {
        let csv = b"id,\"note\"\n1,\"a\nb\"\n2,\"say \"\"hi\"\"\n\"\n3,x\n4,y\n";
        for chunk_len in 1..csv.len() {
            let mut split = Splitter::default();
            let mut units: Vec<Vec<u8>> = vec![Vec::new()];
            let mut rows = vec![0u64];
            for chunk in csv.chunks(chunk_len) {
                let mut rest = chunk;
                while !rest.is_empty() {
                    let room = (2 - *rows.last().unwrap()).max(1);
                    let (header, taken, records) = split.feed(rest, room);
                    units.last_mut().unwrap().extend_from_slice(&rest[header..header + taken]);
                    *rows.last_mut().unwrap() += records;
                    rest = &rest[header + taken..];
                    if *rows.last().unwrap() == 2 {
                        assert!(split.at_end);
                        units.push(Vec::new());
                        rows.push(0);
                    }
                }
            }
            assert_eq!(split.header, b"id,\"note\"\n", "chunks of {chunk_len}");
            let text: Vec<String> = units.iter().map(|u| String::from_utf8_lossy(u).into_owned()).collect();
            assert_eq!(text, ["1,\"a\nb\"\n2,\"say \"\"hi\"\"\n\"\n", "3,x\n4,y\n", ""], "chunks of {chunk_len}");
        }
    }

    #[test]
    fn table_names_are_folded_and_quoted_as_postgresql_reads_them_unquoted() {
        assert_eq!(table_name("Transit.Positions").as_deref(), Some("\"transit\".\"positions\""));
        assert_eq!(table_name("stops").as_deref(), Some("\"stops\""));
        assert_eq!(table_name("a.b.c"), None);
        assert_eq!(table_name("x; DROP TABLE y"), None);
        assert_eq!(table_name("1table"), None);
    }

    #[test]
    fn tls_is_required_off_the_local_machine_and_sslmode_disable_refused_there() {
        let mut remote: tokio_postgres::Config = "postgresql://u:p@db.example:5432/x".parse().unwrap();
        assert!(tls_policy(&mut remote).is_ok_and(|tls| tls.is_some()));
        assert_eq!(remote.get_ssl_mode(), SslMode::Require);
        let mut clear: tokio_postgres::Config = "host=10.0.0.7 dbname=x sslmode=disable".parse().unwrap();
        let refused = tls_policy(&mut clear).err().unwrap();
        assert!(refused.contains("`sslmode=disable` is refused for 10.0.0.7:5432/x"), "{refused}");
        let mut local: tokio_postgres::Config = "postgresql://u:p@127.0.0.1/x".parse().unwrap();
        assert!(tls_policy(&mut local).is_ok_and(|tls| tls.is_none()));
        let mut local_tls: tokio_postgres::Config = "postgresql://localhost/x?sslmode=require".parse().unwrap();
        assert!(tls_policy(&mut local_tls).is_ok_and(|tls| tls.is_some()));
        // The message names the server, never the user or the password.
        assert_eq!(server_name(&remote), "db.example:5432/x");
    }

    #[test]
    fn declared_types_land_from_the_postgresql_types_that_hold_them() {
        assert!(lands_as(ColumnType::Int, &Type::INT8));
        assert!(!lands_as(ColumnType::Int, &Type::NUMERIC));
        assert!(lands_as(ColumnType::Decimal, &Type::NUMERIC));
        assert!(lands_as(ColumnType::Timestamp, &Type::TIMESTAMPTZ));
        assert!(!lands_as(ColumnType::Date, &Type::TIMESTAMPTZ));
        assert!(lands_as(ColumnType::List, &Type::INT4_ARRAY));
        assert!(lands_as(ColumnType::String, &Type::UUID));
        assert!(!lands_as(ColumnType::Bool, &Type::TEXT));
        assert_eq!(suggested(&Type::NUMERIC), "decimal");
        assert_eq!(suggested(&Type::TEXT_ARRAY), "list");
    }
}
