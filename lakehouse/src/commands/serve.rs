//! `serve`: the query server ([`lakehouse::serve`]) until SIGTERM or SIGINT; SIGHUP reloads the project.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use lakehouse::KeyUse;
use lakehouse::serve::{Server, reload_project};
use tokio::signal::unix::{SignalKind, signal};

use super::{CliError, CmdResult, check_enforceable, open};

pub async fn run(dir: &Path, listen: Option<&str>) -> CmdResult {
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let running = tokio::spawn(server.clone().run(listener, stop_rx));
    loop {
        tokio::select! {
            _ = hangup.recv() => match reload_project(dir).await {
                Ok(lh) => {
                    server.reload(lh);
                    eprintln!("reloaded the project and its access policy");
                }
                Err(e) => eprintln!("reload refused, the running policy stays:\n{e}"),
            },
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    eprintln!("stopping: no new connection; running statements may finish");
    let _ = stop_tx.send(true);
    running.await?;
    Ok(ExitCode::SUCCESS)
}
