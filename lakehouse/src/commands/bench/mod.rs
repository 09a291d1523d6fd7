use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::{BenchCommand, BenchData};

mod job;
mod pull;
mod serve;
mod stream;
pub mod usage;
mod workload;

pub async fn run(cmd: BenchCommand) -> super::CmdResult {
    let work_dir = |dir: Option<PathBuf>| -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
        Ok(match dir {
            Some(d) => (d, None),
            None => {
                let tmp = tempfile::tempdir()?;
                (tmp.path().to_path_buf(), Some(tmp))
            }
        })
    };
    match cmd {
        BenchCommand::Ingest(BenchData { rows, files, dir }) => {
            let (dir, _tmp) = work_dir(dir)?;
            let result = workload::ingest(&dir, rows, files).await.map_err(|e| anyhow::anyhow!(e))?;
            println!("{result}");
        }
        BenchCommand::Job { data: BenchData { rows, files, dir }, pseudonymize_at_landing } => {
            let (dir, _tmp) = work_dir(dir)?;
            let exe = std::env::current_exe()?;
            let result = job::run(&exe, &dir, rows, files, pseudonymize_at_landing).map_err(|e| anyhow::anyhow!(e))?;
            println!("{result}");
        }
        BenchCommand::Serve { rows, clients, stream_rows, dir } => {
            let (dir, _tmp) = work_dir(dir)?;
            let exe = std::env::current_exe()?;
            let result = serve::run(&exe, &dir, rows, clients, stream_rows).await.map_err(|e| anyhow::anyhow!(e))?;
            println!("{result}");
        }
        BenchCommand::Pull { rows, page_size, pg_url_env, dir } => {
            let (dir, _tmp) = work_dir(dir)?;
            let exe = std::env::current_exe()?;
            let result =
                pull::run(&exe, &dir, rows, page_size.max(1), &pg_url_env).await.map_err(|e| anyhow::anyhow!(e))?;
            println!("{result}");
        }
        BenchCommand::Stream { nats_url, rates, seconds, backlog, dir } => {
            let (dir, _tmp) = work_dir(dir)?;
            let exe = std::env::current_exe()?;
            let result = stream::run(&exe, &dir, &nats_url, &rates, seconds.max(1), backlog)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            println!("{result}");
        }
        BenchCommand::Transform(BenchData { rows, files, dir }) => {
            let (dir, _tmp) = work_dir(dir)?;
            let result = workload::transform(&dir, rows, files).await.map_err(|e| anyhow::anyhow!(e))?;
            println!("{result}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `x` rounded to `digits` decimals (for the JSON lines).
fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
