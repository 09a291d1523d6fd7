//! One file per verb. Commands print results on stdout and diagnostics on stderr, and return the exit code.

mod audit;
mod bench;
mod ingest;
mod quarantine;
mod retention;
mod schedule;
mod schema;
mod sql;
mod transform;
mod validate;

use std::process::ExitCode;

use lakehouse::Lakehouse;
use std::collections::BTreeMap;

use lakehouse::manifest::{Diagnostic, Diagnostics, LoadError, LoadedSource, Project};
use lakehouse::transform::Plan;

use crate::cli::{Cli, Command};

/// Exit code of user errors (bad manifests, data, configuration).
pub const USER_ERROR: u8 = 1;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { vars } => validate::run(&cli.project, &vars).await,
        Command::Ingest { sources } => ingest::run(&cli.project, &sources).await,
        Command::Compile { select, vars, incremental } => {
            transform::compile(&cli.project, &select, &vars, incremental).await
        }
        Command::Transform { select, vars, full_refresh } => {
            transform::transform(&cli.project, &select, &vars, full_refresh).await
        }
        Command::Run { vars, full_refresh } => transform::run_all(&cli.project, &vars, full_refresh).await,
        Command::Schedule { vars, grace, parallel } => schedule::schedule(&cli.project, &vars, grace, parallel).await,
        Command::Status { vars } => schedule::status(&cli.project, &vars).await,
        Command::Lineage { target, version, format, downstream } => {
            audit::lineage(&cli.project, &target, version, format, downstream).await
        }
        Command::Tables => audit::tables(&cli.project).await,
        Command::Catalog { command: crate::cli::CatalogCommand::Rebuild } => audit::rebuild(&cli.project).await,
        Command::Retention { sources, dry_run, as_of } => {
            retention::run(&cli.project, &sources, dry_run, as_of.as_deref()).await
        }
        Command::Runs { target, failed, limit } => audit::runs(&cli.project, target.as_deref(), failed, limit).await,
        Command::Describe { table } => audit::describe(&cli.project, &table).await,
        Command::Reproduce { table, version } => audit::reproduce(&cli.project, &table, version).await,
        Command::Sql { query, file, format, at } => sql::run(&cli.project, query, file, format, &at).await,
        Command::Quarantine { source, raw } => quarantine::run(&cli.project, &source, raw).await,
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
    dir: &std::path::Path,
    vars: &[String],
) -> anyhow::Result<Result<(Project, Plan, BTreeMap<String, String>), ExitCode>> {
    let vars = match parse_vars(vars) {
        Ok(v) => v,
        Err(d) => {
            eprintln!("{d}");
            return Ok(Err(ExitCode::from(USER_ERROR)));
        }
    };
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
        (Some(p), Some(plan)) if diags.is_empty() => Ok(Ok((p, plan, vars))),
        _ => {
            eprintln!("{}", diags.sorted());
            Ok(Err(ExitCode::from(USER_ERROR)))
        }
    }
}

/// The plan of an already validated project (for commands that did not need it), to update the catalog.
pub async fn quiet_plan(lh: &Lakehouse) -> Option<Plan> {
    let mut diags = Diagnostics::default();
    let mut plan = Plan::build(&lh.project, &BTreeMap::new(), &mut diags);
    plan.check_sql(&lh.project, &mut diags).await;
    diags.is_empty().then_some(plan)
}

/// Loads the project, printing every problem on failure.
pub fn load_project(dir: &std::path::Path) -> anyhow::Result<Result<Project, ExitCode>> {
    match Project::load(dir) {
        Ok(p) => Ok(Ok(p)),
        Err(LoadError::Invalid(diags)) => {
            eprintln!("{diags}");
            Ok(Err(ExitCode::from(USER_ERROR)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Loads the project, selects the named sources (all when none) and opens the warehouse (and the keys, for
/// [`lakehouse::KeyUse::Write`]); on a user
/// error prints it and returns the exit code.
pub fn open(
    dir: &std::path::Path,
    names: &[String],
    keys: lakehouse::KeyUse,
) -> anyhow::Result<Result<(Lakehouse, Vec<LoadedSource>), ExitCode>> {
    let project = match load_project(dir)? {
        Ok(p) => p,
        Err(code) => return Ok(Err(code)),
    };
    let selected: Vec<LoadedSource> = match project.select_sources(names) {
        Ok(s) => s.into_iter().cloned().collect(),
        Err(diags) => {
            eprintln!("{diags}");
            return Ok(Err(ExitCode::from(USER_ERROR)));
        }
    };
    match Lakehouse::open(project, keys) {
        Ok(lh) => Ok(Ok((lh, selected))),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(Err(ExitCode::from(USER_ERROR)))
        }
    }
}
