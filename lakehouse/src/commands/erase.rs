//! `lakehouse erase` (a data subject everywhere, with evidence) and `lakehouse keys rotate`.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use lakehouse::KeyUse;
use lakehouse::erase::{Report, Request, Subject, erase};
use lakehouse::manifest::KeySource;

use super::{CliError, CmdResult};
use crate::cli::{KeysCommand, ReportFormat};

/// The person to erase, from the flags (exactly one of them).
pub fn subject(value: Option<String>, value_stdin: bool, token: Option<String>) -> Result<Subject, CliError> {
    match (value, value_stdin, token) {
        (Some(v), false, None) => Ok(Subject::Value(v)),
        (None, true, None) => {
            let mut text = String::new();
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut text)
                .map_err(|e| CliError::User(format!("cannot read the value from standard input: {e}")))?;
            Ok(Subject::Value(text.lines().next().unwrap_or_default().to_string()))
        }
        (None, false, Some(t)) => Ok(Subject::Token(t)),
        _ => Err(CliError::User("name the person with one of --value, --value-stdin or --token".into())),
    }
}

pub async fn run(
    dir: &Path,
    domain: String,
    request: String,
    subject: Subject,
    dry_run: bool,
    format: ReportFormat,
) -> CmdResult {
    let request = request.trim().to_string();
    if request.is_empty() || request.len() > 200 || request.chars().any(char::is_control) {
        return Err(CliError::User("--request: the DPO's reference of the request, 1 to 200 characters".into()));
    }
    let (lh, _) = super::open(dir, &[], KeyUse::Write)?;
    let req = Request { id: request, domain, subject, dry_run };
    let report = erase(&lh, &req).await.map_err(|e| {
        if e.is_user_error() {
            CliError::User(e.to_string())
        } else {
            CliError::Internal(anyhow::anyhow!(e.to_string()))
        }
    })?;
    match format {
        ReportFormat::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report)
                    .map_err(|e| CliError::Internal(anyhow::anyhow!(e.to_string())))?
            );
        }
        ReportFormat::Text => print!("{}", text(&report)),
    }
    if !dry_run && let Some(plan) = lakehouse::transform::Plan::quiet(&lh.project).await {
        lakehouse::catalog_sync::sync_catalog_quietly(&lh, &plan).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// The report as text: one line per table, then the totals.
fn text(r: &Report) -> String {
    let mut out = String::new();
    let verb = if r.dry_run { "Dry run of erasure" } else { "Erasure" };
    out.push_str(&format!(
        "{verb} {} (domain {}; pseudonyms of key ids {})\n",
        r.request_id,
        r.domain,
        r.key_ids.join(", ")
    ));
    let version = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let width = r.steps.iter().map(|s| s.table.len()).max().unwrap_or(5).max(5);
    out.push_str(&format!(
        "  {:width$}  {:7}  {:>7}  {:>7}  {:>6}  {:>5}  {:>4}  {}\n",
        "table", "action", "before", "after", "rows", "files", "log", "at"
    ));
    for s in &r.steps {
        out.push_str(&format!(
            "  {:width$}  {:7}  {:>7}  {:>7}  {:>6}  {:>5}  {:>4}  {}\n",
            s.table,
            s.action,
            version(s.version_before),
            version(s.version_after),
            s.rows_deleted,
            s.files_removed,
            s.log_entries_removed,
            s.erased_at.format("%Y-%m-%d %H:%M:%S UTC"),
        ));
    }
    let rows: u64 = r.steps.iter().map(|s| s.rows_deleted).sum();
    let rebuilt = r.steps.iter().filter(|s| s.action == "rebuild").count();
    if r.dry_run {
        out.push_str(&format!(
            "{rows} rows would be deleted, {rebuilt} models rebuilt; nothing was changed (dry run)\n"
        ));
    } else {
        let files: u64 = r.steps.iter().map(|s| s.files_removed).sum();
        let logs: u64 = r.steps.iter().map(|s| s.log_entries_removed).sum();
        out.push_str(&format!(
            "{rows} rows deleted, {rebuilt} models rebuilt, {files} data files and {logs} log entries removed: the \
             versions before the erasure can no longer be read. Evidence: system.erasures, request {}\n",
            r.request_id
        ));
    }
    if r.archived_units > 0 {
        out.push_str(&format!(
            "note: {} archived units (encrypted API pages, database chunks or stream batches) of these sources are \
             kept until their retention; they are not searched\n",
            r.archived_units
        ));
    }
    out
}

/// `lakehouse keys rotate DOMAIN`.
pub fn keys(dir: &Path, command: KeysCommand) -> CmdResult {
    let KeysCommand::Rotate { domain } = command;
    let project = super::load_project(dir)?;
    let privacy = &project.file.privacy;
    if domain != lakehouse::privacy::QUARANTINE_DOMAIN && !privacy.domains.iter().any(|d| d.as_str() == domain) {
        return Err(CliError::User(format!(
            "unknown domain `{domain}`: the project declares {} (and `{}` for the quarantine and archives)",
            privacy.domains.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
            lakehouse::privacy::QUARANTINE_DOMAIN
        )));
    }
    match &privacy.keys {
        KeySource::File { path, .. } => {
            let path = lakehouse::manifest::expand_home(path);
            let id = lakehouse::privacy::rotate_in_file(&path, &domain).map_err(|e| CliError::User(e.to_string()))?;
            println!(
                "domain {domain}: new key {id} added to {} (the old keys stay: their pseudonyms keep their key \
                 ids, and `lakehouse erase` still finds them). New data is pseudonymized with the new key from \
                 the next run; restart `lakehouse schedule` and `lakehouse serve` to load it.",
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeySource::Env { variable } => Err(CliError::User(format!(
            "the keys come from ${variable}: add a line `{domain} <new id> <64 hex digits>` after the current \
             entry of `{domain}` where that variable is set (keep the old entry: its pseudonyms stay valid and \
             erasable); `openssl rand -hex 32` makes a key"
        ))),
    }
}
