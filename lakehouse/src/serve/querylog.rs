//! The query log: every statement the server received, served or refused, in the Delta table `system.queries`
//! (`<warehouse>/system/queries`), for the auditor role.
//!
//! A row holds who (user, roles, client address, application), what (the statement with its literal values
//! replaced by `?`: they can be personal data), the tables read with the Delta version of each, and how it
//! ended (rows sent, duration, outcome, the error in one line without values). Rows are appended in the
//! background, a commit every few seconds at most; a failing store delays them (kept in memory, up to a
//! bound), it never fails a statement.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::{DateTime, Utc};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use tokio::sync::{mpsc, oneshot};

use crate::storage::Warehouse;
use crate::storage::rows;
use crate::storage::timestamp_type;

/// Rows kept in memory while the store does not take them; older ones are dropped beyond (with a warning).
const MAX_PENDING: usize = 100_000;
/// Most time a row waits before it is committed.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// Commits between two compactions of the table by the server (about 17 minutes of a busy server; the
/// scheduler's daily maintenance compacts it too).
const COMPACT_EVERY: u64 = 500;

/// One statement: a row of `system.queries`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueryRecord {
    pub query_id: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub user: String,
    /// The roles the statement ran under, comma separated.
    pub roles: String,
    /// The client's IP address.
    pub client: String,
    pub application: Option<String>,
    /// The statement with its literals replaced by `?` ([`redact`]).
    pub statement: String,
    /// The tables read, `layer.table@version`, comma separated.
    pub tables: String,
    /// `ok`, `error`, `refused`, `canceled` or `interrupted` (the client left before the end).
    pub outcome: String,
    pub error: Option<String>,
    /// Rows sent to the client.
    pub rows: i64,
}

/// The columns of `system.queries`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("query_id", DataType::Utf8, false),
        Field::new("started_at", timestamp_type(), false),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("roles", DataType::Utf8, false),
        Field::new("client", DataType::Utf8, false),
        Field::new("application", DataType::Utf8, true),
        Field::new("statement", DataType::Utf8, false),
        Field::new("tables", DataType::Utf8, false),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("rows", DataType::Int64, false),
    ]))
}

/// The statement as logged: string, number and other literal tokens become `?` (`WHERE name = 'Dupont'` →
/// `WHERE name = ?`); identifiers, keywords and layout stay. A statement that does not tokenize is logged as
/// `<not SQL: N bytes>`.
pub fn redact(sql: &str) -> String {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return format!("<not SQL: {} bytes>", sql.len());
    };
    let mut out = String::with_capacity(sql.len());
    for token in tokens {
        match token {
            Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::DollarQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_) => out.push('?'),
            other => out.push_str(&other.to_string()),
        }
    }
    out
}

/// Where the server sends its rows; cheap to clone.
#[derive(Clone)]
pub struct QueryLog {
    tx: mpsc::UnboundedSender<Message>,
}

enum Message {
    Record(Box<QueryRecord>),
    /// Commit what is pending now, then answer.
    Flush(oneshot::Sender<()>),
}

impl QueryLog {
    /// A log writing to `warehouse` from a background task (which ends when every `QueryLog` is dropped).
    pub fn start(warehouse: Warehouse) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(warehouse, rx));
        Self { tx }
    }

    pub fn send(&self, record: QueryRecord) {
        let _ = self.tx.send(Message::Record(Box::new(record)));
    }

    /// Commits the rows sent so far (one try): at shutdown.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn write(warehouse: Warehouse, mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut pending: Vec<QueryRecord> = Vec::new();
    let mut commits = 0u64;
    loop {
        // Wait for a first message, then gather what comes within FLUSH_EVERY.
        let mut flushed = Vec::new();
        let mut open = true;
        let first = rx.recv().await;
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        let mut next = first;
        loop {
            match next {
                Some(Message::Record(r)) => pending.push(*r),
                Some(Message::Flush(ack)) => {
                    flushed.push(ack);
                    break;
                }
                None => {
                    open = false;
                    break;
                }
            }
            next = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(m) => m,
                Err(_) => break,
            };
        }
        if !pending.is_empty() {
            match QUERIES.append(&warehouse, &pending).await {
                Ok(()) => {
                    pending.clear();
                    commits += 1;
                    if commits.is_multiple_of(COMPACT_EVERY)
                        && let Err(e) = QUERIES.compact(&warehouse).await
                    {
                        tracing::warn!(error = %e, "could not compact system.queries");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, rows = pending.len(), "could not append to system.queries; will retry");
                    if pending.len() > MAX_PENDING {
                        let dropped = pending.len() - MAX_PENDING;
                        pending.drain(..dropped);
                        tracing::warn!(dropped, "system.queries: the oldest rows waiting were dropped");
                    }
                    if open && flushed.is_empty() {
                        tokio::time::sleep(FLUSH_EVERY).await;
                    }
                }
            }
        }
        for ack in flushed {
            let _ = ack.send(());
        }
        if !open {
            if !pending.is_empty() {
                tracing::warn!(rows = pending.len(), "system.queries: rows not recorded at shutdown");
            }
            return;
        }
    }
}

/// `system.queries`.
pub const QUERIES: rows::RowTable = rows::RowTable {
    layer: "system",
    name: "queries",
    description: "Statements received by the query server (lakehouse serve)",
    schema,
};

/// The statements logged, oldest first, those of `user` only when given (empty before the server's first).
pub async fn read(
    warehouse: &Warehouse,
    user: Option<&str>,
) -> Result<Vec<QueryRecord>, Box<dyn std::error::Error + Send + Sync>> {
    let filter = user.map(|u| datafusion::prelude::ident("user").eq(datafusion::prelude::lit(u)));
    QUERIES.read(warehouse, filter, &["started_at"]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact("SELECT name FROM gold.t WHERE name = 'Dupont' AND age > 42 AND id IN ($1, E'x\\'y')"),
            "SELECT name FROM gold.t WHERE name = ? AND age > ? AND id IN ($1, ?)"
        );
        assert_eq!(redact("select \"Nom\" from t where x = $$secret$$"), "select \"Nom\" from t where x = ?");
        assert_eq!(redact("SELECT 'unterminated"), "<not SQL: 20 bytes>");
    }
}
