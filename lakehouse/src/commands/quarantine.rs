//! `quarantine`: the records a source refused, where they were and why (and, with `--raw`, their text).

use std::path::Path;
use std::process::ExitCode;

use lakehouse::ingest::{QuarantinedRecord, read_quarantine};
use serde::{Deserialize, Serialize};

use super::output::{OutputFormat, print_batches, rows_batch};
use super::{CliError, CmdResult};

/// A line of `lakehouse quarantine`.
#[derive(Serialize, Deserialize)]
struct QuarantineLine {
    file: String,
    line: Option<u64>,
    record: u64,
    column: Option<String>,
    reason: String,
    /// With `--raw`: the record's text in the file's declared encoding, or why it cannot be shown.
    raw: Option<String>,
}

pub async fn run(dir: &Path, source: &str, raw: bool, format: OutputFormat) -> CmdResult {
    let keys = if raw { lakehouse::KeyUse::Write } else { lakehouse::KeyUse::ReadOnly };
    let (lh, selected) = super::open(dir, &[source.to_string()], keys)?;
    let encoding = match selected[0].manifest.format() {
        lakehouse::manifest::Format::Csv { encoding, .. } => *encoding,
        _ => lakehouse::manifest::Encoding::Utf8,
    };
    let records = read_quarantine(&lh, source, raw).await.map_err(CliError::of)?;
    let lines: Vec<QuarantineLine> = records
        .iter()
        .map(|QuarantinedRecord { row: r, decrypted }| QuarantineLine {
            file: r.source_file.rsplit('/').next().unwrap_or(&r.source_file).to_string(),
            line: r.line,
            record: r.record,
            column: r.column.clone(),
            reason: r.reason.clone(),
            raw: decrypted.as_ref().map(|raw| match raw {
                // Raw records keep the file's bytes: show them in its declared encoding.
                Ok(bytes) => lakehouse::format::decode(bytes, encoding)
                    .map(|t| t.into_owned())
                    .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
                    .replace('\n', "\\n"),
                Err(why) => format!("<{why}>"),
            }),
        })
        .collect();
    let mut batch = rows_batch(&lines)?;
    if !raw {
        // Without `--raw`, no `raw` column at all.
        batch.remove_column(batch.schema().index_of("raw")?);
    }
    print_batches(&[batch], format)?;
    if format == OutputFormat::Table {
        let n = records.len();
        println!("{n} quarantined record{} in bronze.{source}__quarantine", if n == 1 { "" } else { "s" });
    }
    Ok(ExitCode::SUCCESS)
}
