use std::process::ExitCode;

use crate::cli::BenchCommand;

pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Ingest { rows, files, dir } => {
            let tmp;
            let dir = match dir {
                Some(d) => d,
                None => {
                    tmp = tempfile::tempdir()?;
                    tmp.path().to_path_buf()
                }
            };
            let result = lakehouse::bench::ingest(&dir, rows, files).await.map_err(|e| anyhow::anyhow!(e))?;
            println!("{result}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
