//! One file per verb. Commands print results on stdout and diagnostics on stderr, and return the exit code.

mod bench;
mod ingest;
mod quarantine;
mod schema;
mod validate;

use std::process::ExitCode;

use lakehouse::manifest::{LoadError, Project};

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
