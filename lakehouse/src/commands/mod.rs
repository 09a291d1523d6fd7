//! One file per verb. Commands print results on stdout and diagnostics on stderr. A command returns its exit
//! code, or a [`CliError`] that `main` prints and maps to one (user error 1, internal error 2).

mod audit;
mod bench;
mod erase;
mod feed;
mod ingest;
mod output;
mod plan;
mod quarantine;
mod retention;
mod schedule;
mod schema;
mod serve;
mod sql;
mod transform;
mod user;
mod validate;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use lakehouse::manifest::{Diagnostic, Diagnostics, LoadError, LoadedSource, Project};
use lakehouse::transform::{Plan, RunOptions};
use lakehouse::{KeyUse, Lakehouse};

use crate::cli::{Cli, Command};

pub use bench::usage::report as report_usage;

/// Exit code of user errors (bad manifests, data, configuration, arguments).
pub const USER_ERROR: u8 = 1;
/// Exit code of internal errors (a bug, or the environment failing).
pub const INTERNAL_ERROR: u8 = 2;

/// How a command fails.
#[derive(Debug)]
pub enum CliError {
    /// The user's to fix (exit 1): printed as `error: <message>`.
    User(String),
    /// Problems already printed (a list of diagnostics): exit 1.
    Reported,
    /// A bug, or the environment failing (exit 2); `?` on any other error gives this.
    Internal(anyhow::Error),
}

// Not `std::error::Error`, so that every error converts with `?` (as with anyhow).
impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        Self::Internal(e.into())
    }
}

/// An engine error that knows whether the user can fix it (a bad file, an unreachable store, a missing key) or
/// not (a bug).
pub trait Classified: std::error::Error + Send + Sync + 'static {
    fn is_user_error(&self) -> bool;
}

macro_rules! classified {
    ($($t:ty),*) => {$(
        impl Classified for $t {
            fn is_user_error(&self) -> bool {
                <$t>::is_user_error(self)
            }
        }
    )*};
}
classified!(
    lakehouse::ingest::IngestError,
    lakehouse::storage::StorageError,
    lakehouse::audit::AuditError,
    lakehouse::catalog_sync::SyncError
);

impl CliError {
    /// An engine error, as a user error or an internal one.
    pub fn of<E: Classified>(e: E) -> Self {
        if e.is_user_error() { Self::User(e.to_string()) } else { Self::Internal(e.into()) }
    }

    /// The exit code of an engine error ([`Self::of`]).
    pub fn code_of<E: Classified>(e: &E) -> u8 {
        if e.is_user_error() { USER_ERROR } else { INTERNAL_ERROR }
    }
}

/// A command's result: its exit code (a run can succeed in part), or how it failed.
pub type CmdResult = Result<ExitCode, CliError>;

pub async fn run(cli: Cli) -> CmdResult {
    match cli.command {
        Command::Validate { vars } => validate::run(&cli.project, &vars).await,
        Command::Ingest { sources } => ingest::run(&cli.project, &sources).await,
        Command::Feed { source, count, rate, bad_every } => {
            feed::run(&cli.project, &source, count, rate, bad_every).await
        }
        Command::Compile { select, vars, incremental } => {
            transform::compile(&cli.project, &select, &vars, incremental).await
        }
        Command::Transform { select, vars, full_refresh } => {
            transform::transform(&cli.project, &select, &vars, full_refresh).await
        }
        Command::Run { vars, full_refresh } => transform::run_all(&cli.project, &vars, full_refresh).await,
        Command::Schedule { vars, grace, parallel } => schedule::schedule(&cli.project, &vars, grace, parallel).await,
        Command::Status { vars, format } => schedule::status(&cli.project, &vars, format).await,
        Command::Lineage { target, version, format, downstream } => {
            audit::lineage(&cli.project, &target, version, format, downstream).await
        }
        Command::Tables { format } => audit::tables(&cli.project, format).await,
        Command::Catalog { command: crate::cli::CatalogCommand::Rebuild } => audit::rebuild(&cli.project).await,
        Command::Retention { sources, dry_run, as_of } => {
            retention::run(&cli.project, &sources, dry_run, as_of.as_deref()).await
        }
        Command::Runs { target, failed, limit, format } => {
            audit::runs(&cli.project, target.as_deref(), failed, limit, format).await
        }
        Command::Queries { user, refused, limit, format } => {
            audit::queries(&cli.project, user.as_deref(), refused, limit, format).await
        }
        Command::Describe { table, format } => audit::describe(&cli.project, &table, format).await,
        Command::Reproduce { table, version } => audit::reproduce(&cli.project, &table, version).await,
        Command::Sql { query, file, format, at, as_role } => {
            sql::run(&cli.project, query, file, format, &at, as_role.as_deref()).await
        }
        Command::Quarantine { source, raw, format } => quarantine::run(&cli.project, &source, raw, format).await,
        Command::User { command } => user::run(&cli.project, command).await,
        Command::Erase { domain, request, value, value_stdin, token, dry_run, format } => {
            let subject = erase::subject(value, value_stdin, token)?;
            erase::run(&cli.project, domain, request, subject, dry_run, format).await
        }
        Command::Keys { command } => erase::keys(&cli.project, command),
        Command::Plan { base, against_lake, format, preview } => {
            plan::run(&cli.project, &base, against_lake, format, preview).await
        }
        Command::Register { format } => {
            let register = lakehouse::register::build(&load_project(&cli.project)?);
            print!(
                "{}",
                match format {
                    crate::cli::RegisterFormat::Md => register.markdown(),
                    crate::cli::RegisterFormat::Html => register.html(),
                    crate::cli::RegisterFormat::Csv => register.csv(),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { listen } => serve::run(&cli.project, listen.as_deref()).await,
        Command::Schema => schema::run(),
        Command::Bench { bench } => bench::run(bench).await,
    }
}

/// Parses `--var name=value` arguments.
pub fn parse_vars(vars: &[String]) -> Result<BTreeMap<String, String>, Diagnostics> {
    let mut out = BTreeMap::new();
    let mut diags = Diagnostics::default();
    for v in vars {
        match v.split_once('=') {
            Some((k, val)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), val.to_string());
            }
            _ => diags.push(
                Diagnostic::new("<command line>", "--var", format!("`{v}` is not NAME=VALUE"))
                    .hint("e.g. --var min_year=2024"),
            ),
        }
    }
    if diags.is_empty() { Ok(out) } else { Err(diags) }
}

/// Loads the project and plans its transforms (templates, DAG, SQL against the declared schemas), printing
/// every problem of manifests, sidecars and models at once, sorted.
pub async fn load_with_plan(
    dir: &Path,
    vars: &[String],
) -> Result<(Project, Plan, BTreeMap<String, String>), CliError> {
    let vars = parse_vars(vars).map_err(|d| {
        eprintln!("{d}");
        CliError::Reported
    })?;
    let (project, mut diags) = match Project::load_partial(dir) {
        Ok(loaded) => loaded,
        Err(LoadError::Invalid(d)) => (None, d),
        Err(e) => return Err(e.into()),
    };
    let plan = match &project {
        Some(p) => {
            let mut plan = Plan::build(p, &vars, &mut diags);
            plan.check_sql(p, &mut diags).await;
            Some(plan)
        }
        None => None,
    };
    match (project, plan) {
        (Some(p), Some(plan)) if diags.is_empty() => Ok((p, plan, vars)),
        _ => {
            eprintln!("{}", diags.sorted());
            Err(CliError::Reported)
        }
    }
}

/// Checks the access policy against the tables of `plan`, printing every problem on failure.
pub async fn check_policy(project: &Project, plan: &Plan) -> Result<(), CliError> {
    let diags = lakehouse::access::policy_problems(project, plan).await;
    if diags.is_empty() {
        return Ok(());
    }
    eprintln!("{}", diags.sorted());
    Err(CliError::Reported)
}

/// Checks that the project's policy can be enforced ([`lakehouse::access::check_enforceable`]), printing every
/// problem on failure.
pub async fn check_enforceable(project: &Project) -> Result<(), CliError> {
    lakehouse::access::check_enforceable(project).await.map_err(|problems| {
        eprintln!("{problems}");
        CliError::Reported
    })
}

/// Loads the project, printing every problem on failure.
fn load_project(dir: &Path) -> Result<Project, CliError> {
    match Project::load(dir) {
        Ok(p) => Ok(p),
        Err(LoadError::Invalid(diags)) => {
            eprintln!("{diags}");
            Err(CliError::Reported)
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens the warehouse of a loaded project (and the keys, for [`KeyUse::Write`]).
fn open_lakehouse(project: Project, keys: KeyUse) -> Result<Lakehouse, CliError> {
    Lakehouse::open(project, keys).map_err(|e| CliError::User(e.to_string()))
}

/// Loads the project, selects the named sources (all when none) and opens the warehouse.
pub fn open(dir: &Path, names: &[String], keys: KeyUse) -> Result<(Lakehouse, Vec<LoadedSource>), CliError> {
    let project = load_project(dir)?;
    let selected: Vec<LoadedSource> = match project.select_sources(names) {
        Ok(s) => s.into_iter().cloned().collect(),
        Err(diags) => {
            eprintln!("{diags}");
            return Err(CliError::Reported);
        }
    };
    Ok((open_lakehouse(project, keys)?, selected))
}

/// Loads and plans the project (with `--var`s) and opens the warehouse: what commands that run or read models
/// need.
pub async fn open_planned(
    dir: &Path,
    vars: &[String],
    keys: KeyUse,
) -> Result<(Lakehouse, Plan, RunOptions), CliError> {
    let (project, plan, vars) = load_with_plan(dir, vars).await?;
    Ok((open_lakehouse(project, keys)?, plan, RunOptions { full_refresh: false, vars }))
}
