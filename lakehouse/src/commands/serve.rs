//! `serve`: the query server ([`lakehouse::serve`]) until SIGTERM or SIGINT; SIGHUP reloads the project. With
//! `serve.with_schedule`, `lakehouse schedule` runs the same server beside its scheduler ([`Serving`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use lakehouse::KeyUse;
use lakehouse::serve::{Server, reload_project};
use tokio::signal::unix::{SignalKind, signal};

use super::{CliError, CmdResult, check_enforceable, open};

pub async fn run(dir: &Path, listen: Option<&str>) -> CmdResult {
    let serving = Serving::start(dir, listen).await?;
    until_stopped(Some(&serving)).await?;
    serving.stop().await?;
    Ok(ExitCode::SUCCESS)
}

/// Waits for SIGTERM or SIGINT; meanwhile each SIGHUP reloads the server's project and policy, when there is a
/// server (`lakehouse schedule` keeps the project it started with).
pub async fn until_stopped(serving: Option<&Serving>) -> std::io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => match serving {
                Some(s) => s.reload().await,
                None => tracing::info!("SIGHUP received: the scheduler reads the project at start only"),
            },
            _ = terminate.recv() => break tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => break tracing::info!("SIGINT received"),
        }
    }
    Ok(())
}

/// A query server accepting connections, until [`Serving::stop`].
pub struct Serving {
    dir: PathBuf,
    server: Arc<Server>,
    stop: tokio::sync::watch::Sender<bool>,
    running: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Checks the project's policy against its tables, listens (on `listen`, or the project's `serve.listen`)
    /// and says where on standard error.
    pub async fn start(dir: &Path, listen: Option<&str>) -> Result<Self, CliError> {
        let (lh, _) = open(dir, &[], KeyUse::ReadOnly)?;
        // The policy is checked against the tables before anyone is served under it.
        check_enforceable(&lh.project).await?;
        if lh.project.policy.roles.is_empty() {
            eprintln!("warning: the access policy defines no role: every login will be refused (see access/*.yaml)");
        }
        let server = Arc::new(Server::new(lh).map_err(|e| CliError::User(e.to_string()))?);
        let listener = server.bind(listen).await.map_err(|e| CliError::User(e.to_string()))?;
        let addr = listener.local_addr()?;
        let tls = if server.settings().tls.is_some() { "TLS required" } else { "loopback only, no TLS" };
        eprintln!("serving on {addr} ({tls}); SIGHUP reloads the policy, SIGTERM stops");
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(server.clone().run(listener, stop_rx));
        Ok(Self { dir: dir.to_path_buf(), server, stop, running })
    }

    /// Reloads the project and its access policy (SIGHUP); a project that does not load keeps the running one.
    pub async fn reload(&self) {
        match reload_project(&self.dir).await {
            Ok(lh) => {
                self.server.reload(lh);
                eprintln!("reloaded the project and its access policy");
            }
            Err(e) => eprintln!("reload refused, the running policy stays:\n{e}"),
        }
    }

    /// Stops accepting connections and waits for the running statements ([`lakehouse::serve::DRAIN`] at most).
    pub async fn stop(self) -> Result<(), CliError> {
        eprintln!("stopping: no new connection; running statements may finish");
        let _ = self.stop.send(true);
        self.running.await?;
        Ok(())
    }
}
