//! One file per verb. Commands print results on stdout and diagnostics on stderr, and return the exit code.

mod bench;
mod ingest;
mod quarantine;
mod schema;
mod validate;

use std::process::ExitCode;

use lakehouse::Lakehouse;
use lakehouse::manifest::{LoadError, LoadedSource, Project};

use crate::cli::{Cli, Command};

/// Exit code of user errors (bad manifests, data, configuration).
pub const USER_ERROR: u8 = 1;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate => validate::run(&cli.project),
        Command::Ingest { sources } => ingest::run(&cli.project, &sources).await,
        Command::Quarantine { source, raw } => quarantine::run(&cli.project, &source, raw).await,
        Command::Schema => schema::run(),
        Command::Bench { bench } => bench::run(bench).await,
    }
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

/// Loads the project, selects the named sources (all when none) and opens the warehouse and keys; on a user
/// error prints it and returns the exit code.
pub fn open(
    dir: &std::path::Path,
    names: &[String],
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
    match Lakehouse::open(project) {
        Ok(lh) => Ok(Ok((lh, selected))),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(Err(ExitCode::from(USER_ERROR)))
        }
    }
}
