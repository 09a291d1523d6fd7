//! `lakehouse serve`: the lake over the PostgreSQL wire protocol, for analysts' and partners' own tools (psql,
//! Python, BI tools), under the access policy.
//!
//! - **One session per connection**, built for the authenticated user: the policy's rule in its analyzer
//!   ([`crate::access::enforce::governed`]), only the tables its roles are granted registered (so `pg_catalog`,
//!   `information_schema` and `\dt` list nothing else), a memory pool shared by every connection.
//! - **Authentication**: SCRAM-SHA-256 against the verifiers of the catalog database (`lakehouse user`), nothing
//!   else (no trust, cleartext or MD5); repeated failures from one address are slowed down ([`auth::Throttle`]).
//! - **TLS** (rustls): with `serve.tls` set, every connection must use it; without, the server listens on
//!   loopback only.
//! - **Read only**: queries, cursors over queries ([`cursor`]), `SHOW`, `SET` of session settings and
//!   transactions; anything else is refused before it is planned ([`connection`]).
//! - Limits from `lakehouse.yaml` (`serve:`): connections, statement time, rows per statement, memory. A statement
//!   stopped stops computing ([`probe`] for the nested-loop joins, which would not).
//! - `SIGHUP` reloads the project and its policy (each connection takes the new policy at its next statement;
//!   users are read from the catalog at each login); `SIGTERM` or `SIGINT` stops accepting, lets running
//!   statements finish for up to 30 seconds, then closes.
//!
//! The wire protocol is pgwire's; the message loop is ours (one per connection, [`connection::serve`]) so that
//! a connection whose login failed is closed at once, and the statement handlers check that the connection is
//! authenticated whatever the protocol state.

pub mod auth;
pub mod connection;
pub mod cursor;
pub mod probe;
pub mod querylog;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use pgwire::api::auth::DefaultServerParameterProvider;
use pgwire::tokio::TlsAcceptor;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::Lakehouse;
use crate::manifest::{Project, ServeSettings};

/// How long a stopping server lets running statements finish.
pub const DRAIN: Duration = Duration::from_secs(30);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

/// What every connection shares.
pub struct Server {
    pub(crate) lh: RwLock<Arc<Lakehouse>>,
    /// Bumped at each reload of the project; a connection rebuilds its session when it sees a new value.
    pub(crate) generation: AtomicU64,
    pub(crate) settings: ServeSettings,
    pub(crate) runtime: Arc<RuntimeEnv>,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) throttle: auth::Throttle,
    /// Salts unknown users' mock verifiers ([`crate::access::scram::Verifier::for_unknown_user`]).
    pub(crate) secret: [u8; 32],
    pub(crate) cancels: Cancels,
    pub(crate) keys: pgwire::api::RandomPidSecretKeyGenerator,
    pub(crate) parameters: DefaultServerParameterProvider,
    pub(crate) log: querylog::QueryLog,
    /// The catalog database of users, opened at the first login (and again when a reload changes its URL).
    users: tokio::sync::Mutex<Option<(String, Arc<catalog::Catalog>)>>,
    /// Where statements compute (DataFusion's tasks): apart from the runtime that serves connections, so that
    /// heavy statements never hold up logins, cancel requests or other clients.
    queries: Option<tokio::runtime::Runtime>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.queries.take() {
            runtime.shutdown_background();
        }
    }
}

impl Server {
    /// A server for `lh` with its project's `serve` settings, `listen` overriding the address.
    pub fn new(lh: Lakehouse) -> Result<Self, ServeError> {
        let settings = lh.project.file.serve.clone();
        let tls = match &settings.tls {
            Some(files) => Some(load_tls(&lh.project.dir, files)?),
            None => None,
        };
        let pool = TrackConsumersPool::new(
            GreedyMemoryPool::new(usize::try_from(settings.max_memory_bytes).unwrap_or(usize::MAX)),
            std::num::NonZeroUsize::new(5).expect("5 is not 0"),
        );
        // No spilling: query results (personal data among them) are never written to local disk, and a
        // statement that needs more memory than the pool fails.
        let no_spill = DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .with_disk_manager_builder(no_spill)
            .build_arc()
            .map_err(|e| ServeError::Config(format!("serve.max_memory_bytes: {e}")))?;
        let mut secret = [0u8; 32];
        aes_gcm::aead::rand_core::RngCore::fill_bytes(&mut aes_gcm::aead::OsRng, &mut secret);
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = format!("16.0 (lakehouse {})", env!("CARGO_PKG_VERSION"));
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        parameters.time_zone = lh.project.file.timezone.0.name().to_string();
        let log = querylog::QueryLog::start(lh.warehouse.clone());
        let queries = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name("lakehouse-query")
            .enable_all()
            .build()
            .map_err(|e| ServeError::Config(format!("cannot start the query threads: {e}")))?;
        Ok(Self {
            queries: Some(queries),
            log,
            users: Default::default(),
            lh: RwLock::new(Arc::new(lh)),
            generation: AtomicU64::new(1),
            settings,
            runtime,
            tls,
            throttle: auth::Throttle::default(),
            secret,
            cancels: Cancels::default(),
            keys: Default::default(),
            parameters,
        })
    }

    /// The `serve:` settings of the project the server started with (a reload keeps them).
    pub fn settings(&self) -> &ServeSettings {
        &self.settings
    }

    /// The runtime statements compute on.
    pub(crate) fn queries(&self) -> tokio::runtime::Handle {
        self.queries.as_ref().expect("the query runtime lives as long as the server").handle().clone()
    }

    /// The project as last loaded.
    pub fn lakehouse(&self) -> Arc<Lakehouse> {
        self.lh.read().expect("project lock").clone()
    }

    /// The catalog database holding the users of the current project.
    pub(crate) async fn users(&self) -> Result<Arc<catalog::Catalog>, catalog::CatalogError> {
        let url = crate::catalog_sync::catalog_url(&self.lakehouse());
        let mut users = self.users.lock().await;
        if let Some((open, db)) = &*users
            && *open == url
        {
            return Ok(db.clone());
        }
        let db = Arc::new(catalog::Catalog::open(&url).await?);
        *users = Some((url, db.clone()));
        Ok(db)
    }

    /// Takes a reloaded project: connections switch to its policy at their next statement.
    pub fn reload(&self, lh: Lakehouse) {
        *self.lh.write().expect("project lock") = Arc::new(lh);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Binds `listen` (the settings' address when `None`), checking that an address beyond loopback has TLS.
    pub async fn bind(&self, listen: Option<&str>) -> Result<TcpListener, ServeError> {
        let addr = listen.unwrap_or(&self.settings.listen).to_string();
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host(&addr)
            .await
            .map_err(|e| ServeError::Config(format!("serve.listen `{addr}` is not host:port ({e})")))?
            .collect();
        if self.tls.is_none()
            && let Some(open) = resolved.iter().find(|a| !a.ip().is_loopback())
        {
            return Err(ServeError::Config(format!(
                "refusing to listen on {open} without TLS: passwords and results would cross the network in \
                 clear. Set serve.tls (cert and key) in lakehouse.yaml, or listen on 127.0.0.1"
            )));
        }
        TcpListener::bind(&addr[..]).await.map_err(|source| ServeError::Listen { addr, source })
    }

    /// Accepts connections on `listener` until `stop` turns true, then waits up to [`DRAIN`] for the
    /// connections to end.
    pub async fn run(self: Arc<Self>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.settings.max_connections as usize));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let slot = slots.clone().try_acquire_owned().ok();
                        let server = self.clone();
                        let stop = stop.clone();
                        tasks.spawn(async move {
                            connection::serve(server, socket, peer, slot, stop).await;
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little rather than spin.
                        tracing::warn!("serve: accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drop(listener);
        let open = tasks.len();
        if open > 0 {
            tracing::info!("serve: stopping; waiting up to {} s for {open} connection(s)", DRAIN.as_secs());
        }
        let drained = tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!("serve: {} connection(s) still open after {} s: closed", tasks.len(), DRAIN.as_secs());
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        self.log.flush().await;
    }
}

/// Reads the certificate chain and key of `serve.tls`.
fn load_tls(dir: &Path, files: &crate::manifest::TlsFiles) -> Result<TlsAcceptor, ServeError> {
    use pgwire::tokio::tokio_rustls::rustls;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let path = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { dir.join(p) };
    let (cert_path, key_path) = (path(&files.cert), path(&files.key));
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| ServeError::Config(format!("serve.tls.{what}: cannot read {}: {e}", p.display())))
    };
    let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&read(&cert_path, "cert")?)
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Config(format!("serve.tls.cert: {} is not PEM: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Config(format!(
            "serve.tls.cert: {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&key_path, "key")?).map_err(|e| {
        ServeError::Config(format!(
            "serve.tls.key: {} holds no private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            key_path.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| {
            ServeError::Config(format!("serve.tls: the certificate and key do not make a TLS identity: {e}"))
        })?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Cancel requests: each connection's (process id, secret key) to its statement canceller.
#[derive(Default)]
pub(crate) struct Cancels {
    open: Mutex<HashMap<(i32, Bytes), watch::Sender<u64>>>,
}

impl Cancels {
    pub(crate) fn register(&self, pid: i32, key: Bytes) -> watch::Receiver<u64> {
        let (tx, rx) = watch::channel(0);
        self.open.lock().expect("cancel registry").insert((pid, key), tx);
        rx
    }

    pub(crate) fn remove(&self, pid: i32, key: &Bytes) {
        self.open.lock().expect("cancel registry").remove(&(pid, key.clone()));
    }

    /// Cancels the running statement of the connection with this key (a wrong key does nothing, as in
    /// PostgreSQL).
    pub(crate) fn cancel(&self, pid: i32, key: &Bytes) {
        match self.open.lock().expect("cancel registry").get(&(pid, key.clone())) {
            Some(tx) => {
                tx.send_modify(|n| *n += 1);
                tracing::info!("serve: cancel request for connection {pid}");
            }
            None => tracing::info!("serve: cancel request for no connection ({pid}, or a wrong key)"),
        }
    }
}

/// Loads the project again for a reload, or says why the running one is kept.
pub async fn reload_project(dir: &Path) -> Result<Lakehouse, String> {
    let project = Project::load(dir).map_err(|e| e.to_string())?;
    crate::access::check_enforceable(&project).await?;
    Lakehouse::open(project, crate::KeyUse::ReadOnly).map_err(|e| e.to_string())
}
