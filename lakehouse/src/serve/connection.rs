//! One client connection: TLS, the SCRAM login, then its statements in a session built for its user.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{CloseCursor, Set, Statement};
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::{Sink, SinkExt, Stream, StreamExt};
use pgwire::api::auth::{
    StartupHandler, finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_describe_response, send_execution_response, send_query_response,
};
use pgwire::api::results::{DescribePortalResponse, FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry as Stored, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, DEFAULT_NAME, METADATA_APPLICATION_NAME, METADATA_USER, NoopHandler,
    PgWireConnectionState, PidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::data::DataRow;
use pgwire::messages::extendedquery::{Describe, Execute, TARGET_TYPE_BYTE_PORTAL};
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{MaybeTls, PgWireMessageServerCodec, negotiate_tls, process_error, process_message};
use pgwire::types::format::FormatOptions;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use super::Server;
use super::cursor::{self, Command, Cursors, Declaration};
use super::querylog::QueryRecord;
use crate::Lakehouse;
use crate::access::Identity;
use crate::access::scram::{Exchange, Verifier};

/// Rows computed ahead of the client.
const ROWS_IN_FLIGHT: usize = 1024;

/// A client that has not logged in within this time is disconnected.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest message read before login (SCRAM's messages take a few hundred bytes).
const MAX_LOGIN_MESSAGE: usize = 16 << 10;
/// The longest message read from a logged-in client: a statement with its parameters. (PostgreSQL and pgwire
/// take up to 1 GiB, which a client would make the server hold in memory before anything is checked.)
pub const MAX_MESSAGE: usize = 64 << 20;

/// The statements of DataFusion's PostgreSQL handlers: the SQL and, once parsed, the statement and its plan.
type DfStatement = <DfSessionService as ExtendedQueryHandler>::Statement;

/// Serves one client until it leaves, fails to log in, or the server stops (an idle connection is closed at
/// once then; a running statement is let finish).
pub(super) async fn serve(
    server: Arc<Server>,
    socket: TcpStream,
    peer: SocketAddr,
    slot: Option<OwnedSemaphorePermit>,
    mut stop: watch::Receiver<bool>,
) {
    let startup = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup);
    let negotiated = tokio::select! {
        _ = &mut startup => return,
        n = negotiate_tls::<DfStatement>(socket, server.tls.clone()) => n,
    };
    let mut socket = match negotiated {
        Ok(Some(socket)) => socket,
        // A direct TLS handshake to a server without TLS, or a broken one: nothing can be said to the client.
        Ok(None) => return,
        Err(e) => {
            tracing::debug!("serve: {peer}: TLS negotiation failed: {e}");
            return;
        }
    };
    let conn = Arc::new(Connection::new(server.clone(), peer, slot));
    let cancels = Arc::new(Canceller(server.clone()));
    let copy = Arc::new(NoopHandler);
    loop {
        let logging_in = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
        );
        let message = tokio::select! {
            _ = &mut startup, if logging_in => break,
            _ = stop.changed(), if !logging_in => {
                let bye = fatal("57P01", "terminating connection: the server is shutting down".into());
                let _ = process_error(&mut socket, bye, false).await;
                break;
            }
            m = next_message(&mut socket, if logging_in { MAX_LOGIN_MESSAGE } else { MAX_MESSAGE }) => m,
        };
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(Oversized { len, limit, unread })) => {
                tracing::info!("serve: {peer}: a message of {len} bytes (limit {limit}); connection closed");
                let message = format!(
                    "message of {len} bytes refused: the server reads at most {limit} bytes{}",
                    if logging_in { " before login" } else { " for a statement and its parameters" }
                );
                let info = ErrorInfo::new("FATAL".into(), "54000".into(), message);
                // Sent without closing the sending side (as `process_error` does): see `linger`.
                if socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await.is_ok() {
                    linger(&mut socket, unread).await;
                }
                break;
            }
            None => break,
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let handled = process_message(
            message,
            &mut socket,
            conn.clone(),
            conn.clone(),
            conn.clone(),
            copy.clone(),
            cancels.clone(),
        )
        .await;
        if let Err(e) = handled {
            let info = public_error(e);
            let is_fatal = info.is_fatal();
            if process_error(&mut socket, PgWireError::UserError(Box::new(info)), extended).await.is_err() || is_fatal {
                break;
            }
        }
    }
    conn.close();
}

type Socket = tokio_util::codec::Framed<MaybeTls, PgWireMessageServerCodec<DfStatement>>;

/// A message longer than the limit.
struct Oversized {
    /// Its length, as announced.
    len: usize,
    limit: usize,
    /// How many of its bytes are still to come.
    unread: usize,
}

/// The client's next message, read only as far as its length is within `limit`; `None` when the client left
/// or the connection broke.
///
/// Once the startup message is in, every message is a type byte and a length, so the bytes are read here
/// into the codec's buffer until it holds a whole message, checking the length first; then the codec decodes
/// that message without reading (the framed stream reads only when its buffer holds no whole message).
async fn next_message(socket: &mut Socket, limit: usize) -> Option<Result<PgWireFrontendMessage, Oversized>> {
    use tokio::io::AsyncReadExt;
    if !matches!(socket.state(), PgWireConnectionState::AwaitingStartup) {
        loop {
            let buffered = socket.read_buffer();
            if let Some(header) = buffered.get(1..5) {
                let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
                if len > limit {
                    let unread = (len + 1).saturating_sub(buffered.len());
                    return Some(Err(Oversized { len, limit, unread }));
                }
                if buffered.len() > len {
                    break;
                }
            }
            let mut chunk = [0u8; 16 << 10];
            match socket.get_mut().read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => socket.read_buffer_mut().extend_from_slice(&chunk[..n]),
            }
        }
    }
    match socket.next().await {
        Some(Ok(message)) => Some(Ok(message)),
        Some(Err(e)) => {
            tracing::debug!("serve: a message could not be decoded: {e}");
            None
        }
        None => None,
    }
}

/// After refusing a message still arriving: discards the rest of it for a moment (at most 2 seconds, nothing
/// kept), then closes. A client still sending would otherwise see its connection closed or reset under it and
/// lose the error it was sent (libpq then reports "server closed the connection unexpectedly").
async fn linger(socket: &mut Socket, mut unread: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = socket.get_mut();
    let mut discarded = [0u8; 16 << 10];
    let drain = async {
        while unread > 0 {
            match io.read(&mut discarded).await {
                Ok(0) | Err(_) => break,
                Ok(n) => unread = unread.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    let _ = io.shutdown().await;
}

/// Where a login stands.
enum Login {
    /// The startup message is not in yet.
    Start,
    /// SASL offered; the client's first message is awaited.
    Offered {
        user: String,
    },
    /// The server-first-message sent; the client's proof is awaited.
    Challenged {
        user: String,
        exchange: Box<Exchange>,
        verifier: Verifier,
        /// The user's roles as read with the verifier; `None` for an unknown user (a mock verifier).
        roles: Option<Vec<String>>,
    },
    Done,
}

/// One connection's state: the login, then the user's session.
pub(super) struct Connection {
    server: Arc<Server>,
    peer: SocketAddr,
    /// `None` when the connection is one over `serve.max_connections` (refused at startup).
    slot: Option<OwnedSemaphorePermit>,
    login: Mutex<Login>,
    /// The user, once logged in.
    user: OnceLock<String>,
    session: Arc<Session>,
    parser: Arc<Parser>,
    /// The connection's SQL cursors (kept across rebuilds of its session, which close them).
    cursors: Arc<Cursors>,
    /// The key of cancel requests, and the receiver of cancellations.
    cancel: Mutex<Option<(i32, Bytes, watch::Receiver<u64>)>>,
}

/// The user's session: rebuilt when the server reloads its project (new policy, new tables).
struct Session {
    current: tokio::sync::Mutex<Option<Arc<Built>>>,
    /// The current session, for the protocol's synchronous questions (parameter types, result columns) and
    /// for logging refusals at parse time.
    last: Mutex<Option<Arc<Built>>>,
    log: super::querylog::QueryLog,
}

/// A session built for the user under one version of the project.
struct Built {
    generation: u64,
    service: DfSessionService,
    /// The roles, comma separated (for the log).
    roles: String,
    reads: crate::access::enforce::Reads,
    opened: crate::session::Opened,
    _pg_catalog: PgCatalog,
}

/// The session's catalog, whose `pg_catalog` schema holds the session's list of catalogs: a cycle of `Arc`s,
/// broken when this is dropped (else every session, its tables included, would stay in memory for good: 5 MiB a
/// connection, measured).
struct PgCatalog(Arc<dyn datafusion::catalog::CatalogProvider>);

impl PgCatalog {
    /// Sets up `pg_catalog` (with the connection's `pg_cursors`) and the PostgreSQL functions in `ctx`.
    fn setup(ctx: &SessionContext, cursors: &Arc<Cursors>) -> PgWireResult<Self> {
        let failed = |e: &dyn std::fmt::Display| fatal("XX000", format!("pg_catalog: {e}"));
        datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog(ctx, "datafusion", EmptyContextProvider)
            .map_err(|e| failed(&e))?;
        let catalog = ctx.catalog("datafusion").ok_or_else(|| failed(&"the session has no catalog"))?;
        let inner = catalog.schema("pg_catalog").ok_or_else(|| failed(&"no pg_catalog schema"))?;
        let schema = WithCursors { inner, cursors: Arc::downgrade(cursors) };
        catalog.register_schema("pg_catalog", Arc::new(schema)).map_err(|e| failed(&e))?;
        Ok(Self(catalog))
    }
}

/// `pg_catalog` with `pg_cursors`, the connection's open cursors as they are when a statement is planned
/// (psycopg reads it before closing a named cursor it did not declare itself).
struct WithCursors {
    inner: Arc<dyn datafusion::catalog::SchemaProvider>,
    cursors: std::sync::Weak<Cursors>,
}

impl Debug for WithCursors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithCursors").field("inner", &self.inner).finish_non_exhaustive()
    }
}

#[async_trait]
impl datafusion::catalog::SchemaProvider for WithCursors {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.push("pg_cursors".into());
        names
    }

    async fn table(
        &self,
        name: &str,
    ) -> datafusion::error::Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        if !name.eq_ignore_ascii_case("pg_cursors") {
            return self.inner.table(name).await;
        }
        let rows = match self.cursors.upgrade() {
            Some(cursors) => vec![cursors.listing()],
            None => Vec::new(),
        };
        let table = datafusion::datasource::MemTable::try_new(cursor::listing_schema(), vec![rows])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case("pg_cursors") || self.inner.table_exist(name)
    }
}

impl Drop for PgCatalog {
    fn drop(&mut self) {
        let _ = self.0.deregister_schema("pg_catalog", true);
    }
}

impl Built {
    /// The tables read since the last call, `layer.table@version`.
    fn take_reads(&self) -> String {
        let reads = std::mem::take(&mut *self.reads.lock().expect("reads lock"));
        let opened = self.opened.lock().expect("opened lock");
        let named: Vec<String> = reads
            .into_iter()
            .map(|t| match opened.get(&t) {
                Some(v) => format!("{t}@{v}"),
                None => t,
            })
            .collect();
        named.join(",")
    }
}

/// A statement's row of the query log, sent when the statement is over: its last result streamed, refused,
/// failed, or dropped with the connection.
struct Entry {
    record: Mutex<QueryRecord>,
    rows: AtomicI64,
    started: std::time::Instant,
    log: super::querylog::QueryLog,
}

impl Entry {
    fn new<C: ClientInfo + ?Sized>(log: &super::querylog::QueryLog, client: &C, built: &Built, sql: &str) -> Self {
        let metadata = client.metadata();
        let record = QueryRecord {
            query_id: uuid::Uuid::now_v7().to_string(),
            started_at: chrono::Utc::now(),
            duration_ms: 0,
            user: metadata.get(METADATA_USER).cloned().unwrap_or_default(),
            roles: built.roles.clone(),
            client: client.socket_addr().ip().to_string(),
            application: metadata.get(METADATA_APPLICATION_NAME).filter(|a| !a.is_empty()).cloned(),
            statement: super::querylog::redact(sql),
            tables: String::new(),
            outcome: "interrupted".into(),
            error: None,
            rows: 0,
        };
        Self {
            record: Mutex::new(record),
            rows: AtomicI64::new(0),
            started: std::time::Instant::now(),
            log: log.clone(),
        }
    }

    fn tables(&self, tables: String) {
        self.record.lock().expect("entry lock").tables = tables;
    }

    /// How the statement (or one of its results) ended; a failure is not overwritten by a later success.
    fn finish(&self, error: Option<&ErrorInfo>) {
        let mut record = self.record.lock().expect("entry lock");
        if !matches!(record.outcome.as_str(), "interrupted" | "ok") {
            return;
        }
        (record.outcome, record.error) = match error {
            None => ("ok".into(), None),
            Some(info) => {
                let outcome = match info.code.as_str() {
                    "25006" | "42501" => "refused",
                    "57014" => "canceled",
                    _ => "error",
                };
                (outcome.into(), Some(info.message.clone()))
            }
        };
    }
}

impl Entry {
    /// A statement's error as the client is told it ([`public_error`]), noted in its row.
    fn failed(&self, e: PgWireError) -> PgWireError {
        let info = public_error(e);
        self.finish(Some(&info));
        PgWireError::UserError(Box::new(info))
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let record = self.record.get_mut().expect("entry lock");
        record.duration_ms = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        record.rows = self.rows.load(Ordering::Relaxed);
        self.log.send(record.clone());
    }
}

impl Connection {
    fn new(server: Arc<Server>, peer: SocketAddr, slot: Option<OwnedSemaphorePermit>) -> Self {
        let session =
            Arc::new(Session { current: Default::default(), last: Default::default(), log: server.log.clone() });
        let cursors = Arc::new(Cursors::new(server.settings.max_rows));
        Self {
            parser: Arc::new(Parser { session: session.clone(), cursors: cursors.clone() }),
            cursors,
            server,
            peer,
            slot,
            login: Mutex::new(Login::Start),
            user: OnceLock::new(),
            session,
            cancel: Mutex::new(None),
        }
    }

    fn close(&self) {
        if let Some((pid, key, _)) = self.cancel.lock().expect("cancel lock").take() {
            self.server.cancels.remove(pid, &key);
        }
    }

    /// The session of the logged-in user, built again (with the user's roles read again) when the project was
    /// reloaded since.
    async fn service(&self) -> PgWireResult<Arc<Built>> {
        self.service_with(None).await
    }

    /// [`Self::service`], with the user's roles when they were just read (at login).
    async fn service_with(&self, roles: Option<Vec<String>>) -> PgWireResult<Arc<Built>> {
        let Some(user) = self.user.get() else {
            return Err(fatal("08P01", "the connection is not logged in".into()));
        };
        let generation = self.server.generation.load(Ordering::SeqCst);
        let mut current = self.session.current.lock().await;
        if let Some(built) = &*current
            && built.generation == generation
        {
            return Ok(built.clone());
        }
        let lh = self.server.lakehouse();
        let roles = match roles {
            Some(roles) => roles,
            None => match self.user_row(user).await? {
                Some((_, roles)) => roles,
                None => return Err(fatal("28000", format!("user \"{user}\" does not exist any more"))),
            },
        };
        let identity = identity(&lh, user, roles)?;
        if current.is_some() {
            self.cursors.close_all_for_reload();
        }
        let built = Arc::new(session(&self.server, lh, identity, generation, &self.cursors).await?);
        *self.session.last.lock().expect("session lock") = Some(built.clone());
        *current = Some(built.clone());
        Ok(built)
    }

    /// What stops a statement: a cancel request, or its time running out.
    fn limits<C: ClientInfo>(&self, client: &C, entry: Arc<Entry>) -> Limits {
        let cancel = self.cancel.lock().expect("cancel lock").as_ref().map(|(_, _, rx)| {
            let mut rx = rx.clone();
            rx.borrow_and_update();
            rx
        });
        Limits {
            started: Instant::now(),
            timeout: self.statement_timeout(client),
            cancel,
            max_rows: self.server.settings.max_rows,
            entry,
            queries: self.server.queries(),
        }
    }

    /// The session's statement timeout as it is now: the client's (`SET statement_timeout`), within the server's.
    fn statement_timeout<C: ClientInfo>(&self, client: &C) -> Duration {
        let server_limit = self.server.settings.statement_timeout.0;
        let client_limit = client
            .metadata()
            .get("statement_timeout_ms")
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        client_limit.map_or(server_limit, |c| c.min(server_limit))
    }
}

/// The identity of `user` under the current policy: the roles of the user that the policy still defines.
fn identity(lh: &Lakehouse, user: &str, names: Vec<String>) -> PgWireResult<Identity> {
    let roles: Vec<_> = names.iter().filter_map(|r| lh.project.policy.roles.get(r).cloned()).collect();
    if roles.is_empty() {
        return Err(fatal(
            "28000",
            format!(
                "user \"{user}\" has no role of the access policy (roles {}): ask an administrator \
                 (`lakehouse user roles`)",
                names.join(", ")
            ),
        ));
    }
    Ok(Identity { user: user.to_string(), roles })
}

/// A session for `identity`: the policy rule in its analyzer, the granted tables only, `pg_catalog`, and the
/// read-only guard first among the statement hooks.
async fn session(
    server: &Server,
    lh: Arc<Lakehouse>,
    identity: Identity,
    generation: u64,
    cursors: &Arc<Cursors>,
) -> PgWireResult<Built> {
    let roles = identity.roles.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(",");
    let (reads, opened) = (crate::access::enforce::Reads::default(), crate::session::Opened::default());
    let ctx = crate::session::new_session_in(
        crate::session::Functions::Interactive,
        &lh.project.file,
        server.runtime.clone(),
    );
    // pg_catalog first: the identity functions of the governed session then replace its `session_user`.
    let pg_catalog = PgCatalog::setup(&ctx, cursors)?;
    let ctx = crate::access::enforce::governed(&ctx, identity.clone(), Some(reads.clone()));
    // Nested-loop joins stop when their statement does (a canceled one went on computing for minutes).
    let state = datafusion::execution::SessionStateBuilder::new_from_existing(ctx.state())
        .with_physical_optimizer_rule(Arc::new(super::probe::SlicedProbes))
        .build();
    let ctx = SessionContext::new_with_state(state);
    let visible = |table: &str| identity.serves(table);
    let layers = ["silver", "gold", "system"];
    crate::session::serve_layers(&ctx, &lh.warehouse, &layers, &BTreeMap::new(), &visible, &opened)
        .await
        .map_err(|e| fatal("58030", format!("the lake cannot be read: {e}")))?;
    crate::catalog_sync::serve_catalog(&ctx, lh.clone(), &visible);
    // A schema without a table the identity is served is not listed either (`\dn`, getSchemas, pg_namespace):
    // a partner granted gold only does not learn that the lake has other layers.
    for schema in ["bronze", "silver", "gold", "system", "catalog"] {
        if pg_catalog.0.schema(schema).is_some_and(|s| s.table_names().is_empty()) {
            let _ = pg_catalog.0.deregister_schema(schema, false);
        }
    }
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ReadOnly),
        Arc::new(CursorStatements { cursors: cursors.clone(), reads: reads.clone() }),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let service = DfSessionService::new_with_hooks(Arc::new(ctx), hooks);
    Ok(Built { generation, service, roles, reads, opened, _pg_catalog: pg_catalog })
}

#[async_trait]
impl StartupHandler for Connection {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                if self.slot.is_none() {
                    return Err(fatal(
                        "53300",
                        format!(
                            "sorry, too many clients already (serve.max_connections = {})",
                            self.server.settings.max_connections
                        ),
                    ));
                }
                if self.server.tls.is_some() && !client.is_secure() {
                    return Err(fatal(
                        "28000",
                        "this server accepts TLS connections only: connect with sslmode=require (or verify-full)"
                            .into(),
                    ));
                }
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                let Some(user) = client.metadata().get(METADATA_USER).cloned() else {
                    return Err(PgWireError::UserNameRequired);
                };
                let delay = self.server.throttle.delay(self.peer.ip());
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                *self.login.lock().expect("login lock") = Login::Offered { user };
                let methods = vec!["SCRAM-SHA-256".to_string()];
                client.send(PgWireBackendMessage::Authentication(Authentication::SASL(methods))).await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let login = std::mem::replace(&mut *self.login.lock().expect("login lock"), Login::Done);
                match login {
                    Login::Offered { user } => {
                        let initial = message.into_sasl_initial_response()?;
                        if initial.auth_method != "SCRAM-SHA-256" {
                            return Err(fatal(
                                "28000",
                                format!(
                                    "authentication method {} is not offered: use SCRAM-SHA-256",
                                    initial.auth_method
                                ),
                            ));
                        }
                        let found = self.user_row(&user).await?;
                        let (verifier, roles) = match found {
                            Some((v, roles)) => (v, Some(roles)),
                            None => (Verifier::for_unknown_user(&self.server.secret, &user), None),
                        };
                        let data = initial.data.unwrap_or_default();
                        let (exchange, server_first) =
                            Exchange::start(&data, &verifier).map_err(|e| fatal("08P01", e))?;
                        *self.login.lock().expect("login lock") =
                            Login::Challenged { user, exchange: Box::new(exchange), verifier, roles };
                        let answer = Authentication::SASLContinue(Bytes::from(server_first));
                        client.send(PgWireBackendMessage::Authentication(answer)).await?;
                    }
                    Login::Challenged { user, exchange, verifier, roles } => {
                        let response = message.into_sasl_response()?;
                        let checked = exchange.finish(&response.data, &verifier).map_err(|e| fatal("08P01", e))?;
                        let (Some(server_final), Some(roles)) = (checked, roles) else {
                            self.server.throttle.failed(self.peer.ip());
                            tracing::info!("serve: failed login of user {user:?} from {}", self.peer.ip());
                            return Err(fatal("28P01", format!("password authentication failed for user \"{user}\"")));
                        };
                        self.server.throttle.succeeded(self.peer.ip());
                        let _ = self.user.set(user.clone());
                        // The session is built now, so that a user without a role fails at login.
                        self.service_with(Some(roles)).await?;
                        client
                            .send(PgWireBackendMessage::Authentication(Authentication::SASLFinal(Bytes::from(
                                server_final,
                            ))))
                            .await?;
                        let (pid, key) = self.server.keys.generate(&*client);
                        client.set_pid_and_secret_key(pid, key.clone());
                        let bytes = key.to_bytes();
                        let cancel = self.server.cancels.register(pid, bytes.clone());
                        *self.cancel.lock().expect("cancel lock") = Some((pid, bytes, cancel));
                        tracing::info!(
                            "serve: user {user:?} logged in from {} ({})",
                            self.peer.ip(),
                            client.metadata().get(METADATA_APPLICATION_NAME).map_or("no application name", |a| a)
                        );
                        finish_authentication(client, &self.server.parameters).await?;
                    }
                    Login::Start | Login::Done => return Err(PgWireError::InvalidSASLState),
                }
            }
            _ => return Err(PgWireError::InvalidSASLState),
        }
        Ok(())
    }
}

impl Connection {
    /// The verifier and roles of `user`, `None` when there is no such user (or its verifier is unreadable).
    async fn user_row(&self, user: &str) -> PgWireResult<Option<(Verifier, Vec<String>)>> {
        let unavailable = |e: &dyn std::fmt::Display| {
            tracing::warn!("serve: the catalog database cannot be read for a login: {e}");
            fatal("08006", "the user store is unavailable; try again later".into())
        };
        let db = self.server.users().await.map_err(|e| unavailable(&e))?;
        let row = db.user(user).await.map_err(|e| unavailable(&e))?;
        Ok(row.and_then(|r| {
            let roles = r.roles().map(str::to_string).collect();
            Verifier::parse(&r.verifier).ok().map(|v| (v, roles))
        }))
    }
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let built = self.service().await?;
        let entry = Arc::new(Entry::new(&self.session.log, client, &built, query));
        let limits = self.limits(client, entry.clone());
        // FETCH and MOVE are read here: the SQL parser knows no MOVE and only some forms of FETCH.
        let work = async {
            match Command::parse(query)? {
                Some(command) => {
                    let (options, status) = (format_options(client), client.transaction_status());
                    Ok(vec![self.cursors.run(command, None, options, status, &built.reads).await?])
                }
                None => SimpleQueryHandler::do_query(&built.service, client, query).await,
            }
        };
        let result = limits.run(work).await;
        entry.tables(built.take_reads());
        // A `SET statement_timeout` among the message's statements bounds the rows of those after it (from the
        // message's start), as PostgreSQL bounds each statement by the timeout in force when it starts.
        let limits = Limits { timeout: self.statement_timeout(client), ..limits };
        match result {
            Ok(responses) => {
                if !responses.iter().any(|r| matches!(r, Response::Query(_))) {
                    entry.finish(None);
                }
                Ok(responses.into_iter().map(|r| limits.guard(r)).collect())
            }
            Err(e) => Err(entry.failed(e)),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = DfStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    /// An `Execute` without a row limit (what drivers send for a whole result) streams the query's rows to the
    /// client as they come: pgwire would first gather them all in memory (its portal keeps a result to serve it
    /// in parts). An `Execute` with a row limit, or on a portal already started, goes through pgwire.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Stored::Value(portal))
                if message.max_rows == 0
                    && matches!(client.state(), PgWireConnectionState::ReadyForQuery)
                    && matches!(*portal.state().lock().await, PortalExecutionState::Initial) =>
            {
                portal
            }
            _ => return self._on_execute(client, message).await,
        };
        let mut transaction_status = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        *portal.state().lock().await = PortalExecutionState::Finished;
        let response = ExtendedQueryHandler::do_query(self, client, portal.as_ref(), 0).await;
        // As pgwire answers each kind of response.
        let sent = match response {
            Ok(Response::Query(results)) => send_query_response(client, results, false).await,
            Ok(Response::EmptyQuery) => client
                .feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new()))
                .await
                .map_err(Into::into),
            Ok(Response::Execution(tag)) => send_execution_response(client, tag).await,
            Ok(Response::TransactionStart(tag)) => {
                transaction_status = transaction_status.to_in_transaction_state();
                send_execution_response(client, tag).await
            }
            Ok(Response::TransactionEnd(tag)) => {
                transaction_status = transaction_status.to_idle_state();
                client.portal_store().rm_portal(DEFAULT_NAME);
                send_execution_response(client, tag).await
            }
            Ok(Response::Error(e)) => {
                transaction_status = transaction_status.to_error_state();
                client.send(PgWireBackendMessage::ErrorResponse((*e).into())).await.map_err(Into::into)
            }
            // COPY is refused before it is planned.
            Ok(Response::CopyIn(_) | Response::CopyOut(_) | Response::CopyBoth(_)) => Err(PgWireError::UserError(
                Box::new(ErrorInfo::new("ERROR".into(), "25006".into(), "COPY is not served".into())),
            )),
            Err(e) => Err(e),
        };
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(transaction_status);
        sent
    }

    /// A `Describe` of a portal named like an open cursor describes the cursor's rows (psycopg's named cursors
    /// ask so after their `DECLARE`).
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let cursor = match (&message.name, message.target_type) {
            (Some(name), TARGET_TYPE_BYTE_PORTAL) => self.cursors.fields(name, None, Some(format_options(client))),
            _ => None,
        };
        match cursor {
            Some(fields) => send_describe_response(client, &DescribePortalResponse::new(fields?)).await,
            None => self._on_describe(client, message).await,
        }
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<DfStatement>, max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let built = self.service().await?;
        let entry = Arc::new(Entry::new(&self.session.log, client, &built, &portal.statement.statement.0));
        let limits = self.limits(client, entry.clone());
        let work = async {
            // A FETCH or MOVE, parsed by [`Parser::parse_sql`] into its text alone.
            let command = match &portal.statement.statement {
                (text, None) => Command::parse(text)?,
                _ => None,
            };
            match command {
                Some(command) => {
                    let (options, status) = (format_options(client), client.transaction_status());
                    let format = Some(&portal.result_column_format);
                    self.cursors.run(command, format, options, status, &built.reads).await
                }
                None => ExtendedQueryHandler::do_query(&built.service, client, portal, max_rows).await,
            }
        };
        let result = limits.run(work).await;
        entry.tables(built.take_reads());
        match result {
            Ok(response) => {
                if !matches!(response, Response::Query(_)) {
                    entry.finish(None);
                }
                Ok(limits.guard(response))
            }
            Err(e) => Err(entry.failed(e)),
        }
    }
}

/// The parser of the extended protocol, in the connection's current session.
pub(super) struct Parser {
    session: Arc<Session>,
    cursors: Arc<Cursors>,
}

impl Parser {
    fn current(&self) -> PgWireResult<Arc<Built>> {
        self.session.last.lock().expect("session lock").clone().ok_or(PgWireError::NotReadyForQuery)
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = DfStatement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<DfStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let built = self.current()?;
        // A FETCH or MOVE is kept as its text, run by the connection (the SQL parser knows no MOVE).
        let parsed = match Command::parse(sql) {
            Ok(Some(_)) => Ok(Some((sql.to_string(), None))),
            Ok(None) => ExtendedQueryHandler::query_parser(&built.service).parse_sql(client, sql, types).await,
            Err(e) => Err(e),
        };
        // A statement refused or failing here never reaches execution: it is logged now.
        parsed.map_err(|e| Entry::new(&self.session.log, client, &built, sql).failed(e))
    }

    fn get_parameter_types(&self, stmt: &DfStatement) -> PgWireResult<Vec<Type>> {
        ExtendedQueryHandler::query_parser(&self.current()?.service).get_parameter_types(stmt)
    }

    fn get_result_schema(&self, stmt: &DfStatement, column_format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        match stmt {
            // A DECLARE returns no rows (its plan is its query's, for the parameters' types).
            (_, Some((Statement::Declare { .. }, _))) => Ok(vec![]),
            (text, None) => match Command::parse(text)? {
                // A statement's columns are described in text until its portal chooses their formats.
                Some(Command { moves: false, name, .. }) => {
                    let format = column_format.unwrap_or(&Format::UnifiedText);
                    self.cursors.fields(&name, Some(format), None).unwrap_or(Ok(vec![]))
                }
                _ => Ok(vec![]),
            },
            _ => ExtendedQueryHandler::query_parser(&self.current()?.service).get_result_schema(stmt, column_format),
        }
    }
}

/// Cancel requests, for any connection of the server.
struct Canceller(Arc<Server>);

#[async_trait]
impl CancelHandler for Canceller {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.0.cancels.cancel(request.pid, &request.secret_key.to_bytes());
    }
}

/// The bounds of one statement.
struct Limits {
    /// When the statement (or the simple-query message) started; it must end `timeout` later.
    started: Instant,
    timeout: Duration,
    cancel: Option<watch::Receiver<u64>>,
    max_rows: u64,
    entry: Arc<Entry>,
    queries: tokio::runtime::Handle,
}

impl Limits {
    /// Why the statement must stop, when it must.
    fn stopped(&self) -> Pin<Box<dyn Future<Output = PgWireError> + Send>> {
        let (deadline, timeout, cancel) = (self.started + self.timeout, self.timeout, self.cancel.clone());
        Box::pin(async move {
            let canceled = async move {
                if let Some(mut rx) = cancel
                    && rx.changed().await.is_ok()
                {
                    return;
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = canceled => canceled_error("canceling statement due to user request".into()),
                _ = tokio::time::sleep_until(deadline) => canceled_error(format!(
                    "canceling statement due to statement timeout ({} s; serve.statement_timeout or the session's \
                     statement_timeout)",
                    timeout.as_secs_f64()
                )),
            }
        })
    }

    /// Runs the planning part of a statement within its limits; the tasks it starts run on the query runtime.
    async fn run<T>(&self, work: impl Future<Output = PgWireResult<T>>) -> PgWireResult<T> {
        let work = OnRuntime { handle: self.queries.clone(), work: Box::pin(work) };
        tokio::select! {
            result = work => result,
            e = self.stopped() => Err(e),
        }
    }

    /// A response whose rows stream within the statement's limits.
    fn guard(&self, response: Response) -> Response {
        match response {
            Response::Query(mut query) => {
                let mut rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
                // The rows are computed on the query runtime, so that a heavy statement never holds up the
                // connections' runtime (logins, cancel requests, other clients).
                let (tx, rx) = tokio::sync::mpsc::channel(ROWS_IN_FLIGHT);
                let task = self.queries.spawn(async move {
                    while let Some(row) = rows.next().await {
                        if tx.send(row).await.is_err() {
                            break;
                        }
                    }
                });
                query.data_rows = Box::pin(Guarded {
                    rows: rx,
                    task,
                    stop: self.stopped(),
                    sent: 0,
                    max_rows: self.max_rows,
                    done: false,
                    entry: self.entry.clone(),
                });
                Response::Query(query)
            }
            other => other,
        }
    }
}

/// Rows streamed to the client as they are computed, until the statement is canceled, times out or passes
/// `serve.max_rows`.
struct Guarded {
    rows: tokio::sync::mpsc::Receiver<PgWireResult<DataRow>>,
    /// Computes the rows; stopped when the statement stops, however it stops.
    task: tokio::task::JoinHandle<()>,
    stop: Pin<Box<dyn Future<Output = PgWireError> + Send>>,
    sent: u64,
    max_rows: u64,
    done: bool,
    entry: Arc<Entry>,
}

impl Stream for Guarded {
    type Item = PgWireResult<DataRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(e) = this.stop.as_mut().poll(cx) {
            this.done = true;
            return Poll::Ready(Some(Err(this.entry.failed(e))));
        }
        match this.rows.poll_recv(cx) {
            Poll::Ready(Some(Ok(row))) => {
                this.sent += 1;
                if this.sent > this.max_rows {
                    this.done = true;
                    let info = ErrorInfo::new(
                        "ERROR".into(),
                        "54000".into(),
                        format!(
                            "the result has more than {} rows (serve.max_rows): add a LIMIT, filter or aggregate",
                            this.max_rows
                        ),
                    );
                    return Poll::Ready(Some(Err(this.entry.failed(PgWireError::UserError(Box::new(info))))));
                }
                this.entry.rows.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Some(Ok(row)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(this.entry.failed(e))))
            }
            Poll::Ready(None) => {
                this.done = true;
                this.entry.finish(None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A future polled with the query runtime as the current one: the tasks it spawns (DataFusion's partitions)
/// run there.
struct OnRuntime<F> {
    handle: tokio::runtime::Handle,
    work: Pin<Box<F>>,
}

impl<F: Future> Future for OnRuntime<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _current = self.handle.enter();
        self.work.as_mut().poll(cx)
    }
}

/// Refuses, before planning, every statement a read-only server does not run, and plans queries in the
/// read-only sandbox ([`crate::session::sql`]: `SELECT … INTO` and the like are refused there).
struct ReadOnly;

impl ReadOnly {
    /// What this hook does with a statement, or why it is refused.
    fn check(statement: &Statement) -> PgWireResult<Kind> {
        let refuse = |what: &str| {
            Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                "25006".into(),
                format!(
                    "{what} is refused: this server is read-only (queries, cursors over queries, SHOW, SET of \
                     session settings and transactions)"
                ),
            ))))
        };
        match statement {
            Statement::Query(_) | Statement::ShowTables { .. } | Statement::ShowColumns { .. } => Ok(Kind::Query),
            Statement::Deallocate { name, .. } => Ok(Kind::Deallocate(name.value.clone())),
            Statement::Set(Set::SingleAssignment { variable, .. })
                if variable.to_string().to_lowercase().starts_with("datafusion.") =>
            {
                refuse(&format!("SET {variable} (an engine setting of the server)"))
            }
            Statement::Set(Set::SetRole { .. } | Set::SetSessionAuthorization(_)) => {
                refuse("SET ROLE (the roles of a session are its user's)")
            }
            Statement::Set(_)
            | Statement::ShowVariable { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            // Cursors over queries: [`CursorStatements`].
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. } => Ok(Kind::Other),
            Statement::Explain { .. } | Statement::ExplainTable { .. } => {
                Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".into(),
                    "42501".into(),
                    "EXPLAIN is not served: plans show the access policy's filters and the tables' statistics".into(),
                ))))
            }
            other => {
                let text = other.to_string();
                let verb: String = text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
                refuse(&format!("`{verb}`"))
            }
        }
    }
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match Self::check(statement) {
            Err(e) => Some(Err(e)),
            Ok(Kind::Other) => None,
            Ok(Kind::Deallocate(name)) => Some(Ok(deallocate(client, &name))),
            Ok(Kind::Query) => {
                let df = match crate::session::sql(ctx, &statement.to_string()).await {
                    Ok(df) => df,
                    Err(e) => return Some(Err(PgWireError::ApiError(Box::new(e)))),
                };
                Some(
                    encode_dataframe(df, &Format::UnifiedText, Some(format_options(client))).await.map(Response::Query),
                )
            }
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match Self::check(statement) {
            Err(e) => Some(Err(e)),
            Ok(Kind::Other) => None,
            Ok(Kind::Deallocate(_)) => Some(Ok(no_rows())),
            Ok(Kind::Query) => Some(plan_read_only(ctx, statement.clone()).await),
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match statement {
            Statement::Deallocate { name, .. } => Some(Ok(deallocate(client, &name.value))),
            _ => None,
        }
    }
}

/// The plan of a statement that returns no rows.
fn no_rows() -> LogicalPlan {
    LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(datafusion::common::DFSchema::empty()),
    })
}

/// The plan of a query of the extended protocol, checked read only (its parameters still placeholders).
async fn plan_read_only(ctx: &SessionContext, statement: Statement) -> PgWireResult<LogicalPlan> {
    ctx.state()
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(statement)))
        .await
        .and_then(|plan| crate::session::read_only().verify_plan(&plan).map(|()| plan))
        .map_err(|e| PgWireError::ApiError(Box::new(e)))
}

/// `DECLARE … CURSOR FOR query` and `CLOSE` ([`super::cursor`]), and the transaction statements that end cursors;
/// `FETCH` and `MOVE` are run by the connection from their text ([`Command`]), but for a `FETCH` among other
/// statements of a simple query.
struct CursorStatements {
    cursors: Arc<Cursors>,
    reads: crate::access::enforce::Reads,
}

impl CursorStatements {
    /// Notes a transaction statement (answered by the next hook); false for the others.
    fn transaction(&self, statement: &Statement) -> bool {
        match statement {
            Statement::StartTransaction { .. } => self.cursors.begin(),
            Statement::Commit { .. } | Statement::Rollback { .. } => self.cursors.end_block(),
            _ => return false,
        }
        true
    }

    /// Opens the cursor of a `DECLARE`: of the simple protocol (its query planned here), or of the extended one
    /// (its query's plan and the parameters bound to it).
    async fn declare(
        &self,
        declared: &[datafusion::sql::sqlparser::ast::Declare],
        ctx: &SessionContext,
        bound: Option<(&LogicalPlan, &ParamValues)>,
        status: TransactionStatus,
    ) -> PgWireResult<Response> {
        let (declaration, query) = Declaration::of(declared)?;
        let api = |e: DataFusionError| PgWireError::ApiError(Box::new(e));
        let df = match bound {
            None => crate::session::sql(ctx, &query.to_string()).await.map_err(api)?,
            Some((plan, params)) => {
                let plan = plan.clone().replace_params_with_values(params).map_err(api)?;
                ctx.execute_logical_plan(plan).await.map_err(api)?
            }
        };
        self.cursors.declare(declaration, df, status, &self.reads).await
    }

    fn close(&self, cursor: &CloseCursor, status: TransactionStatus) -> PgWireResult<Response> {
        let name = match cursor {
            CloseCursor::All => None,
            CloseCursor::Specific { name } => Some(cursor::name_of(name)),
        };
        self.cursors.close(name.as_deref(), status)
    }
}

#[async_trait]
impl QueryHook for CursorStatements {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let status = client.transaction_status();
        if self.transaction(statement) {
            return None;
        }
        Some(match statement {
            Statement::Declare { stmts } => self.declare(stmts, ctx, None, status).await,
            Statement::Fetch { .. } => match Command::parse(&statement.to_string()) {
                Ok(Some(command)) => {
                    let options = format_options(client);
                    self.cursors.run(command, None, options, status, &self.reads).await
                }
                Ok(None) => Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".into(),
                    "42601".into(),
                    format!("`{statement}` is not read as a FETCH"),
                )))),
                Err(e) => Err(e),
            },
            Statement::Close { cursor } => self.close(cursor, status),
            _ => return None,
        })
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match statement {
            // The plan of the query, so that its parameters are typed and bound.
            Statement::Declare { stmts } => Some(match Declaration::of(stmts) {
                Ok((_, query)) => plan_read_only(ctx, Statement::Query(Box::new(query.clone()))).await,
                Err(e) => Err(e),
            }),
            Statement::Close { .. } => Some(Ok(no_rows())),
            _ => None,
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let status = client.transaction_status();
        if self.transaction(statement) {
            return None;
        }
        Some(match statement {
            Statement::Declare { stmts } => self.declare(stmts, ctx, Some((plan, params)), status).await,
            Statement::Close { cursor } => self.close(cursor, status),
            _ => return None,
        })
    }
}

/// How the client asked values to be written (its DateStyle and the like).
fn format_options<C: ClientInfo + ?Sized>(client: &C) -> Arc<FormatOptions> {
    Arc::new(FormatOptions::from_client_metadata(client.metadata()))
}

/// What [`ReadOnly`] does with a statement it lets through.
enum Kind {
    /// Planned here, in the read-only sandbox.
    Query,
    /// `DEALLOCATE name | ALL`: forgets prepared statements (clients send it to clean up).
    Deallocate(String),
    /// Answered by the next hooks (`SET`, `SHOW`, transactions).
    Other,
}

/// Forgets a prepared statement of the connection; `ALL` is answered without forgetting the others (they
/// go with the connection).
fn deallocate(client: &mut dyn HookClient, name: &str) -> Response {
    if !name.eq_ignore_ascii_case("all") {
        client.portal_store().rm_statement(name);
    }
    Response::Execution(pgwire::api::results::Tag::new("DEALLOCATE"))
}

/// A FATAL error: the connection is closed after it.
fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), code.into(), message)))
}

fn canceled_error(message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), "57014".into(), message)))
}

/// An error as the client is told it: engine errors in one line without data values
/// ([`crate::session::error_text`]; a statement's own rows may hold values its filter hides, and an error
/// raised while computing may quote them), with the SQLSTATE of their kind.
fn public_error(e: PgWireError) -> ErrorInfo {
    match e {
        PgWireError::ApiError(inner) => match inner.downcast::<DataFusionError>() {
            Ok(df) => {
                let text = crate::session::error_text(&df);
                let code = match df.find_root() {
                    _ if text.contains("permission denied for table") => "42501",
                    _ if text.contains("is refused: SQL here is read-only") => "25006",
                    _ if text.contains("table") && text.contains("not found") => "42P01",
                    DataFusionError::SQL(..) => "42601",
                    DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => "42000",
                    DataFusionError::NotImplemented(_) => "0A000",
                    DataFusionError::ResourcesExhausted(_) => "53200",
                    _ => "XX000",
                };
                ErrorInfo::new("ERROR".into(), code.into(), text)
            }
            Err(other) => {
                ErrorInfo::new("ERROR".into(), "XX000".into(), crate::session::without_values(&other.to_string()))
            }
        },
        other => ErrorInfo::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ProjectFile;

    /// A session is freed with its connection: `pg_catalog` holds the session's catalogs, which hold it.
    #[tokio::test]
    async fn a_dropped_session_is_freed() {
        let ctx = crate::session::new_session(crate::session::Functions::Interactive, &ProjectFile::with_domains(&[]));
        let catalogs = Arc::downgrade(ctx.state().catalog_list());
        let pg_catalog = PgCatalog::setup(&ctx, &Arc::new(Cursors::new(10))).unwrap();
        let service = DfSessionService::new_with_hooks(Arc::new(ctx), vec![Arc::new(ReadOnly)]);
        drop(service);
        assert!(catalogs.upgrade().is_some(), "the cycle: pg_catalog holds the catalogs");
        drop(pg_catalog);
        assert!(catalogs.upgrade().is_none(), "the session's catalogs outlive it");
    }
}
