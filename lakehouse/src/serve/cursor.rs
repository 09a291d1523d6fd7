//! SQL cursors: `DECLARE name [BINARY] [NO SCROLL] CURSOR [WITH HOLD | WITHOUT HOLD] FOR query`, `FETCH`,
//! `MOVE` and `CLOSE`, as psql's `FETCH_COUNT`, psycopg's named cursors (and SQLAlchemy's `stream_results` on
//! them) use them.
//!
//! - A cursor is its query's running stream, read only as far as its `FETCH`es go: nothing is gathered ahead of
//!   the client, and a `FETCH ALL` streams like any result.
//! - Forward only (PostgreSQL's `NO SCROLL`): `FETCH NEXT | n | ALL | FORWARD [n | ALL]` and the same `MOVE`s;
//!   `SCROLL`, `BACKWARD`, `PRIOR`, `FIRST`, `LAST`, `ABSOLUTE`, `RELATIVE` are refused (0A000 at `DECLARE`,
//!   55000 at `FETCH`).
//! - As in PostgreSQL, a cursor `WITHOUT HOLD` (the default) is declared in a transaction block and closed at its
//!   `COMMIT` or `ROLLBACK`; one `WITH HOLD` lives until `CLOSE` or the end of the connection. At most
//!   [`MAX_OPEN`] per connection.
//! - The policy is the one the query was planned under at `DECLARE`; a reload of the project (SIGHUP) closes the
//!   open cursors, so a revoked grant or a new row filter holds from the next statement, as everywhere else.
//! - Each `FETCH` or `MOVE` is a statement: the statement timeout and cancel requests apply to it, and its row in
//!   the query log names the cursor's tables. `serve.max_rows` bounds the rows of the whole cursor. A `FETCH`
//!   that fails, is canceled or runs out of time closes its cursor (PostgreSQL aborts the transaction).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::DataFrame;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use futures::{Stream, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::messages::response::TransactionStatus;
use pgwire::types::format::FormatOptions;
use tokio::sync::OwnedMutexGuard;

use crate::access::enforce::Reads;

/// Open cursors per connection.
pub const MAX_OPEN: usize = 64;

/// Why a cursor is remembered as closed when it was closed by something else than `CLOSE`.
const CLOSED_AT_COMMIT: &str = "closed at the end of the transaction it was declared in (declare it WITH HOLD to \
                                keep it beyond)";
const CLOSED_BY_FETCH: &str = "closed when a FETCH or MOVE on it did not finish (it failed, was canceled or ran out \
                               of time)";
const CLOSED_BY_RELOAD: &str = "closed when the server reloaded its project and access policy: declare it again";

/// The cursors of one connection.
pub(super) struct Cursors {
    state: Mutex<State>,
    /// `serve.max_rows`: the rows of a whole cursor.
    max_rows: u64,
}

#[derive(Default)]
struct State {
    open: HashMap<String, Open>,
    /// Within `BEGIN` … `COMMIT`/`ROLLBACK`, as the statements of this connection went.
    in_block: bool,
    /// Cursors closed otherwise than by `CLOSE`, with why (for the error of a later `FETCH`).
    closed: HashMap<String, &'static str>,
}

/// An open cursor.
#[derive(Clone)]
struct Open {
    hold: bool,
    binary: bool,
    /// The `DECLARE` statement, for `pg_cursors`.
    statement: String,
    declared_at: chrono::DateTime<chrono::Utc>,
    schema: SchemaRef,
    /// The tables its query reads, for the query log's rows of its `FETCH`es.
    tables: Vec<String>,
    /// Locked by a `FETCH` while its rows stream.
    rows: Arc<tokio::sync::Mutex<Rows>>,
}

impl Open {
    /// The columns of its rows in `format`, or else in its own: text, or binary for a `BINARY` cursor.
    fn fields(&self, format: Option<&Format>, options: Option<Arc<FormatOptions>>) -> PgWireResult<Vec<FieldInfo>> {
        let own = if self.binary { Format::UnifiedBinary } else { Format::UnifiedText };
        arrow_schema_to_pg_fields(&self.schema, format.unwrap_or(&own), options)
    }
}

/// Where a cursor's query stands.
struct Rows {
    stream: SendableRecordBatchStream,
    /// The rest of a batch of which a `FETCH` took only the first rows.
    pending: Option<RecordBatch>,
    exhausted: bool,
    /// Rows fetched or moved over so far.
    read: u64,
}

/// A `FETCH` or `MOVE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Command {
    /// `MOVE`: the cursor moves, no row is sent.
    pub moves: bool,
    /// How many rows; `None` for all that are left.
    pub count: Option<u64>,
    pub name: String,
}

/// An error with its SQLSTATE.
fn error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}

/// A cursor's name as PostgreSQL takes it: case folded unless quoted.
pub(super) fn name_of(ident: &datafusion::sql::sqlparser::ast::Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

impl Command {
    /// `sql` as a `FETCH` or `MOVE` statement; `Ok(None)` when it is another statement.
    ///
    /// The grammar is PostgreSQL's (`FETCH [direction] [FROM | IN] name`), parsed here because the SQL parser
    /// knows no `MOVE` and only some forms of `FETCH`.
    pub fn parse(sql: &str) -> PgWireResult<Option<Command>> {
        if sql.trim_end().trim_end_matches(';').contains(';') && moves_among_others(sql) {
            return Err(error(
                "0A000",
                "MOVE is served as a query of its own: send it alone, not among other statements in one query \
                 string (FETCH may be among them)"
                    .into(),
            ));
        }
        let tokens = tokens(sql);
        let Some(Token::Word(verb)) = tokens.first() else {
            return Ok(None);
        };
        let moves = match verb.to_ascii_uppercase().as_str() {
            "FETCH" => false,
            "MOVE" => true,
            _ => return Ok(None),
        };
        // Several statements: the SQL parser splits them (a FETCH among them comes back here alone).
        if tokens.contains(&Token::Other(';')) {
            return Ok(None);
        }
        let what = if moves { "MOVE" } else { "FETCH" };
        let syntax = |detail: &str| {
            error(
                "42601",
                format!(
                    "syntax error in {what}: {detail} (expected {what} [NEXT | count | ALL | FORWARD [count | ALL]] \
                     [FROM | IN] cursor_name)"
                ),
            )
        };
        let backward = |direction: &str| {
            error(
                "55000",
                format!(
                    "cursor can only scan forward: {what} {direction} is not served (this server's cursors are NO \
                     SCROLL; use NEXT, a count, ALL or FORWARD)"
                ),
            )
        };
        let mut rest = &tokens[1..];
        // A count: what follows is a name or FROM/IN, not a direction.
        let count = |token: Option<&Token>| -> PgWireResult<Option<u64>> {
            match token {
                Some(Token::Number(n)) => match n.parse::<i64>() {
                    Ok(n) if n > 0 => Ok(Some(n as u64)),
                    Ok(0) => Err(backward("0 (the current row again)")),
                    Ok(_) => Err(backward("with a negative count")),
                    Err(_) => Err(syntax(&format!("count {n} is not a whole number"))),
                },
                _ => Ok(None),
            }
        };
        let word = |token: Option<&Token>| match token {
            Some(Token::Word(w)) => Some(w.to_ascii_uppercase()),
            _ => None,
        };
        let mut amount = Some(1);
        if let Some(n) = count(rest.first())? {
            amount = Some(n);
            rest = &rest[1..];
        } else {
            match word(rest.first()).as_deref() {
                Some("NEXT") => rest = &rest[1..],
                Some("ALL") => {
                    amount = None;
                    rest = &rest[1..];
                }
                Some("FORWARD") => {
                    rest = &rest[1..];
                    if let Some(n) = count(rest.first())? {
                        amount = Some(n);
                        rest = &rest[1..];
                    } else if word(rest.first()).as_deref() == Some("ALL") {
                        amount = None;
                        rest = &rest[1..];
                    }
                }
                Some(direction @ ("BACKWARD" | "PRIOR" | "FIRST" | "LAST" | "ABSOLUTE" | "RELATIVE")) => {
                    return Err(backward(direction));
                }
                _ => {}
            }
        }
        if matches!(word(rest.first()).as_deref(), Some("FROM" | "IN")) {
            rest = &rest[1..];
        }
        let name = match rest.first() {
            Some(Token::Word(name)) => name.to_lowercase(),
            Some(Token::Quoted(name)) => name.clone(),
            Some(other) => return Err(syntax(&format!("{other} is not a cursor name"))),
            None => return Err(syntax("the cursor's name is missing")),
        };
        if let Some(extra) = rest.get(1) {
            return Err(syntax(&format!("unexpected {extra} after the cursor's name")));
        }
        Ok(Some(Command { moves, count: amount, name }))
    }
}

/// Whether `sql` holds several statements of which one is a `MOVE`, which the SQL parser that splits them does not
/// know: a `MOVE` there is answered with a clear error instead of a syntax error. (Run between the statements,
/// a `MOVE` would move its cursor before the rows of a `FETCH` before it in the same string are read.)
fn moves_among_others(sql: &str) -> bool {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return false;
    };
    let (mut statements, mut moves, mut starting) = (0, false, true);
    for token in tokens {
        match token {
            Token::Whitespace(_) => continue,
            Token::SemiColon => starting = true,
            token if starting => {
                statements += 1;
                moves |=
                    matches!(&token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("MOVE"));
                starting = false;
            }
            _ => {}
        }
    }
    moves && statements > 1
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Number(String),
    Other(char),
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Word(w) | Token::Number(w) => write!(f, "`{w}`"),
            Token::Quoted(q) => write!(f, "`\"{q}\"`"),
            Token::Other(c) => write!(f, "`{c}`"),
        }
    }
}

/// The tokens of a short statement: words, quoted identifiers, signed numbers, other characters; spaces,
/// comments and a final `;` are left out.
fn tokens(sql: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = sql.trim().trim_end_matches(';').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' => {
                let mut name = String::new();
                while let Some(c) = chars.next() {
                    if c == '"' {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    name.push(c);
                }
                out.push(Token::Quoted(name));
            }
            c if c.is_ascii_digit() || ((c == '-' || c == '+') && chars.peek().is_some_and(char::is_ascii_digit)) => {
                let mut n = String::from(c);
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    n.push(d);
                }
                out.push(Token::Number(n));
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut w = String::from(c);
                while let Some(d) = chars.next_if(|d| d.is_alphanumeric() || *d == '_' || *d == '$') {
                    w.push(d);
                }
                out.push(Token::Word(w));
            }
            other => out.push(Token::Other(other)),
        }
    }
    out
}

/// What a `DECLARE` asks for besides its query.
pub(super) struct Declaration {
    pub name: String,
    pub binary: bool,
    pub hold: bool,
    /// The statement, as the SQL parser writes it back.
    pub statement: String,
}

impl Declaration {
    /// The declaration of a `DECLARE` (of one cursor), or why it is not served.
    pub fn of(declared: &[datafusion::sql::sqlparser::ast::Declare]) -> PgWireResult<(Declaration, &Query)> {
        use datafusion::sql::sqlparser::ast::DeclareType;
        let [declare] = declared else {
            return Err(error("0A000", "declare one cursor per DECLARE".into()));
        };
        let (Some(DeclareType::Cursor), [name], Some(query)) =
            (&declare.declare_type, declare.names.as_slice(), &declare.for_query)
        else {
            return Err(error(
                "0A000",
                "only DECLARE name CURSOR FOR query is served (a cursor over a query; no variables)".into(),
            ));
        };
        if declare.scroll == Some(true) {
            return Err(error(
                "0A000",
                "SCROLL cursors are not served: this server's cursors move forward only (declare it without SCROLL)"
                    .into(),
            ));
        }
        let declaration = Declaration {
            name: name_of(name),
            binary: declare.binary == Some(true),
            hold: declare.hold == Some(true),
            statement: format!("DECLARE {declare}"),
        };
        Ok((declaration, query.as_ref()))
    }
}

type Query = datafusion::sql::sqlparser::ast::Query;

/// The columns of `pg_catalog.pg_cursors`, as PostgreSQL's (`is_scrollable` is always false here).
pub(super) fn listing_schema() -> SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("statement", DataType::Utf8, false),
        Field::new("is_holdable", DataType::Boolean, false),
        Field::new("is_binary", DataType::Boolean, false),
        Field::new("is_scrollable", DataType::Boolean, false),
        Field::new("creation_time", DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())), false),
    ]))
}

impl Cursors {
    pub fn new(max_rows: u64) -> Self {
        Self { state: Mutex::default(), max_rows }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("cursors lock")
    }

    /// A `BEGIN`.
    pub fn begin(&self) {
        self.state().in_block = true;
    }

    /// A `COMMIT` or `ROLLBACK`: the cursors without `HOLD` are closed.
    pub fn end_block(&self) {
        let mut state = self.state();
        state.in_block = false;
        let ending: Vec<String> = state.open.iter().filter(|(_, c)| !c.hold).map(|(n, _)| n.clone()).collect();
        for name in ending {
            state.open.remove(&name);
            state.closed.insert(name, CLOSED_AT_COMMIT);
        }
    }

    /// The project was reloaded: every cursor is closed.
    pub fn close_all_for_reload(&self) {
        let mut state = self.state();
        let names: Vec<String> = state.open.drain().map(|(n, _)| n).collect();
        for name in names {
            state.closed.insert(name, CLOSED_BY_RELOAD);
        }
    }

    /// The open cursors as the rows of `pg_catalog.pg_cursors` (PostgreSQL's columns), by name.
    pub fn listing(&self) -> RecordBatch {
        use datafusion::arrow::array::{ArrayRef, BooleanArray, StringArray, TimestampMicrosecondArray};
        let state = self.state();
        let mut open: Vec<(&String, &Open)> = state.open.iter().collect();
        open.sort_by(|a, b| a.0.cmp(b.0));
        let flag = |f: &dyn Fn(&Open) -> bool| -> ArrayRef {
            Arc::new(open.iter().map(|(_, o)| Some(f(o))).collect::<BooleanArray>())
        };
        let declared = open.iter().map(|(_, o)| Some(o.declared_at.timestamp_micros()));
        let columns = vec![
            Arc::new(open.iter().map(|(name, _)| Some(name.as_str())).collect::<StringArray>()) as ArrayRef,
            Arc::new(open.iter().map(|(_, o)| Some(o.statement.as_str())).collect::<StringArray>()),
            flag(&|o| o.hold),
            flag(&|o| o.binary),
            flag(&|_| false),
            Arc::new(declared.collect::<TimestampMicrosecondArray>().with_timezone("+00:00")) as ArrayRef,
        ];
        RecordBatch::try_new(listing_schema(), columns).expect("the columns of pg_cursors")
    }

    /// The columns a `FETCH` from the open cursor `name` returns, in `format` (None: the cursor's own); None
    /// when no cursor of that name is open.
    pub fn fields(
        &self,
        name: &str,
        format: Option<&Format>,
        options: Option<Arc<FormatOptions>>,
    ) -> Option<PgWireResult<Vec<FieldInfo>>> {
        self.state().open.get(name).map(|open| open.fields(format, options))
    }

    /// Opens a cursor on `df`, the planned query of a `DECLARE`, whose planning noted the tables it reads in
    /// `reads`.
    pub async fn declare(
        &self,
        declaration: Declaration,
        df: DataFrame,
        status: TransactionStatus,
        reads: &Reads,
    ) -> PgWireResult<Response> {
        Self::usable(status)?;
        {
            let state = self.state();
            if !declaration.hold && !state.in_block && status != TransactionStatus::Transaction {
                return Err(error(
                    "25P01",
                    "DECLARE CURSOR can only be used in transaction blocks: BEGIN first, or declare it WITH HOLD"
                        .into(),
                ));
            }
            if state.open.contains_key(&declaration.name) {
                return Err(error("42P03", format!("cursor \"{}\" already exists", declaration.name)));
            }
            if state.open.len() >= MAX_OPEN {
                return Err(error(
                    "54000",
                    format!("too many open cursors ({MAX_OPEN} per connection): CLOSE those you are done with"),
                ));
            }
        }
        let schema = Arc::new(df.schema().as_arrow().clone());
        let stream = df.execute_stream().await.map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        let tables = reads.lock().expect("reads lock").iter().cloned().collect();
        let rows = Rows { stream, pending: None, exhausted: false, read: 0 };
        let open = Open {
            hold: declaration.hold,
            binary: declaration.binary,
            statement: declaration.statement,
            declared_at: chrono::Utc::now(),
            schema,
            tables,
            rows: Arc::new(tokio::sync::Mutex::new(rows)),
        };
        let mut state = self.state();
        state.closed.remove(&declaration.name);
        state.open.insert(declaration.name, open);
        Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
    }

    /// `CLOSE name` (a cursor closed otherwise is closed without an error) or `CLOSE ALL`.
    pub fn close(&self, name: Option<&str>, status: TransactionStatus) -> PgWireResult<Response> {
        Self::usable(status)?;
        let mut state = self.state();
        match name {
            None => {
                state.open.clear();
                state.closed.clear();
            }
            Some(name) => {
                if state.open.remove(name).is_none() && state.closed.remove(name).is_none() {
                    return Err(error("34000", format!("cursor \"{name}\" does not exist")));
                }
            }
        }
        Ok(Response::Execution(Tag::new("CLOSE CURSOR")))
    }

    /// Runs a `FETCH` (its rows as they stream, in `format`, or the cursor's own: text, or binary for a `BINARY`
    /// cursor) or a `MOVE`; the cursor's tables are noted in `reads`.
    pub async fn run(
        self: &Arc<Self>,
        command: Command,
        format: Option<&Format>,
        options: Arc<FormatOptions>,
        status: TransactionStatus,
        reads: &Reads,
    ) -> PgWireResult<Response> {
        Self::usable(status)?;
        let open = {
            let state = self.state();
            match state.open.get(&command.name) {
                Some(open) => open.clone(),
                None => {
                    let why = state.closed.get(&command.name).map(|w| format!(": {w}")).unwrap_or_default();
                    return Err(error("34000", format!("cursor \"{}\" does not exist{why}", command.name)));
                }
            }
        };
        reads.lock().expect("reads lock").extend(open.tables.iter().cloned());
        let fields = if command.moves { None } else { Some(Arc::new(open.fields(format, Some(options))?)) };
        let mut fetching = Fetching {
            name: command.name,
            cursors: self.clone(),
            open: open.rows.clone(),
            lock: Box::pin(open.rows.lock_owned()),
            rows: None,
            fields: fields.clone(),
            left: command.count,
            encoded: None,
            count: 0,
            done: false,
            failed: false,
        };
        match fields {
            Some(fields) => {
                let mut response = QueryResponse::new(fields, fetching);
                response.set_command_tag("FETCH");
                Ok(Response::Query(response))
            }
            None => {
                while let Some(step) = fetching.next().await {
                    step?;
                }
                Ok(Response::Execution(Tag::new("MOVE").with_rows(fetching.count as usize)))
            }
        }
    }

    /// Refuses cursor statements in a failed transaction, as every statement there.
    fn usable(status: TransactionStatus) -> PgWireResult<()> {
        if status == TransactionStatus::Error {
            return Err(error(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block".into(),
            ));
        }
        Ok(())
    }

    /// A `FETCH` did not finish: its cursor is closed, unless it was already (or declared again).
    fn forget(&self, name: &str, rows: &Arc<tokio::sync::Mutex<Rows>>) {
        let mut state = self.state();
        if state.open.get(name).is_some_and(|o| Arc::ptr_eq(&o.rows, rows)) {
            state.open.remove(name);
            state.closed.insert(name.to_string(), CLOSED_BY_FETCH);
        }
    }
}

/// The rows of one `FETCH` (or the steps of one `MOVE`) as they stream from the cursor's query.
struct Fetching {
    name: String,
    cursors: Arc<Cursors>,
    open: Arc<tokio::sync::Mutex<Rows>>,
    /// The cursor, taken at the first poll: in a simple query of several statements, this one's rows are read
    /// after the previous statements' have been sent.
    lock: Pin<Box<dyn Future<Output = OwnedMutexGuard<Rows>> + Send>>,
    rows: Option<OwnedMutexGuard<Rows>>,
    /// `None` for a `MOVE`.
    fields: Option<Arc<Vec<FieldInfo>>>,
    /// Rows still to take; `None` for all.
    left: Option<u64>,
    encoded: Option<Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync>>,
    /// Rows taken.
    count: u64,
    /// All the rows asked for were sent.
    done: bool,
    /// An error was sent: nothing follows it, and the cursor is closed.
    failed: bool,
}

impl Stream for Fetching {
    type Item = PgWireResult<DataRow>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done || this.failed {
            return Poll::Ready(None);
        }
        if this.rows.is_none() {
            this.rows = Some(ready!(this.lock.as_mut().poll(cx)));
        }
        let rows = this.rows.as_mut().expect("locked");
        loop {
            if let Some(encoded) = &mut this.encoded {
                match encoded.next() {
                    Some(row) => {
                        this.failed = row.is_err();
                        return Poll::Ready(Some(row));
                    }
                    None => this.encoded = None,
                }
            }
            if this.left == Some(0) || rows.exhausted {
                this.done = true;
                return Poll::Ready(None);
            }
            let batch = match rows.pending.take() {
                Some(batch) => batch,
                None => match ready!(rows.stream.poll_next_unpin(cx)) {
                    Some(Ok(batch)) => batch,
                    Some(Err(e)) => {
                        this.failed = true;
                        return Poll::Ready(Some(Err(PgWireError::ApiError(Box::new(e)))));
                    }
                    None => {
                        rows.exhausted = true;
                        continue;
                    }
                },
            };
            let n = batch.num_rows();
            let take = this.left.map_or(n, |left| n.min(usize::try_from(left).unwrap_or(usize::MAX)));
            if take < n {
                rows.pending = Some(batch.slice(take, n - take));
            }
            if take == 0 {
                continue;
            }
            rows.read += take as u64;
            if rows.read > this.cursors.max_rows {
                this.failed = true;
                return Poll::Ready(Some(Err(error(
                    "54000",
                    format!(
                        "the cursor's result has more than {} rows (serve.max_rows): add a LIMIT, filter or aggregate",
                        this.cursors.max_rows
                    ),
                ))));
            }
            this.count += take as u64;
            this.left = this.left.map(|left| left - take as u64);
            if let Some(fields) = &this.fields {
                this.encoded = Some(Box::new(encode_recordbatch(fields.clone(), batch.slice(0, take))));
            }
        }
    }
}

impl Drop for Fetching {
    fn drop(&mut self) {
        if !self.done {
            self.cursors.forget(&self.name, &self.open);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(count: Option<u64>, name: &str) -> Option<Command> {
        Some(Command { moves: false, count, name: name.into() })
    }

    #[test]
    fn fetch_and_move_are_read_as_postgresql_writes_them() {
        let ok = |sql: &str| Command::parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(ok("FETCH FORWARD 100 FROM _psql_cursor"), fetch(Some(100), "_psql_cursor"));
        assert_eq!(ok("fetch forward all from \"By Period\";"), fetch(None, "By Period"));
        assert_eq!(ok("FETCH c"), fetch(Some(1), "c"));
        assert_eq!(ok("FETCH NEXT IN C"), fetch(Some(1), "c"));
        assert_eq!(ok("FETCH 7 c -- seven"), fetch(Some(7), "c"));
        assert_eq!(ok("FETCH ALL FROM c"), fetch(None, "c"));
        assert_eq!(ok("FETCH FORWARD FROM c"), fetch(Some(1), "c"));
        assert_eq!(ok(" MOVE 5 FROM \"a\"\"b\" "), Some(Command { moves: true, count: Some(5), name: "a\"b".into() }));
        assert_eq!(ok("SELECT 1"), None);
        assert_eq!(ok("fetched"), None);
        assert_eq!(ok("FETCH 2 FROM c; CLOSE c"), None);
        assert_eq!(ok(""), None);
        let refused = |sql: &str| match Command::parse(sql) {
            Err(PgWireError::UserError(info)) => (info.code.clone(), info.message.clone()),
            other => panic!("{sql}: {other:?}"),
        };
        for sql in ["FETCH BACKWARD 2 FROM c", "FETCH PRIOR FROM c", "MOVE ABSOLUTE 3 IN c", "FETCH -1 FROM c"] {
            let (code, message) = refused(sql);
            assert_eq!(code, "55000", "{sql}: {message}");
            assert!(message.contains("forward"), "{message}");
        }
        for sql in ["FETCH FROM", "FETCH 2 FROM c d", "FETCH 1.5 FROM c", "FETCH FROM 'c'"] {
            let (code, message) = refused(sql);
            assert_eq!(code, "42601", "{sql}: {message}");
            assert!(message.contains("FETCH [NEXT"), "{message}");
        }
        // A MOVE among other statements of one string: the SQL parser that splits them knows no MOVE.
        for sql in ["FETCH 2 FROM c; MOVE 1 IN c", "BEGIN; move 3 in c; COMMIT;", "SELECT ';'; /* x */ MOVE c"] {
            let (code, message) = refused(sql);
            assert_eq!(code, "0A000", "{sql}: {message}");
            assert!(message.contains("MOVE is served as a query of its own"), "{message}");
        }
        for sql in [
            "SELECT 'MOVE'; SELECT 1",
            "SELECT 1; SELECT \"move\" FROM t",
            "MOVE 2 IN c;",
            "SELECT 1 AS move; SELECT 2",
        ] {
            assert!(ok(sql).is_none_or(|c| c.moves && c.count == Some(2)), "{sql}");
        }
    }
}
