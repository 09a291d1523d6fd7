use std::path::Path;
use std::process::ExitCode;

use lakehouse::ingest::read_quarantine;

use super::USER_ERROR;

pub async fn run(dir: &Path, source: &str, raw: bool) -> anyhow::Result<ExitCode> {
    let (lh, selected) = match super::open(
        dir,
        &[source.to_string()],
        if raw { lakehouse::KeyUse::Write } else { lakehouse::KeyUse::ReadOnly },
    )? {
        Ok(opened) => opened,
        Err(code) => return Ok(code),
    };
    let encoding = match &selected[0].manifest.format {
        lakehouse::manifest::Format::Csv { encoding, .. } => *encoding,
        _ => lakehouse::manifest::Encoding::Utf8,
    };
    let records = match read_quarantine(&lh, source, raw).await {
        Ok(r) => r,
        Err(e) if e.is_user_error() => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(USER_ERROR));
        }
        Err(e) => return Err(e.into()),
    };
    println!("{:<36} {:>6} {:>7} {:<18} reason", "file", "line", "record", "column");
    for r in &records {
        let file = r.source_file.rsplit('/').next().unwrap_or(&r.source_file);
        let line = r.line.map_or("-".to_string(), |l| l.to_string());
        println!("{file:<36} {line:>6} {:>7} {:<18} {}", r.record, r.column.as_deref().unwrap_or("-"), r.reason);
        match &r.raw {
            Some(Ok(bytes)) => {
                // Raw records keep the file's bytes: show them in its declared encoding.
                let text = lakehouse::format::decode(bytes, encoding)
                    .map(|t| t.into_owned())
                    .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned());
                println!("    raw: {}", text.replace('\n', "\\n"))
            }
            Some(Err(why)) => println!("    raw: <{why}>"),
            None => {}
        }
    }
    println!(
        "{} quarantined record{} in bronze.{source}__quarantine",
        records.len(),
        if records.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}
