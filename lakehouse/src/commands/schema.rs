use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&lakehouse::manifest::source_json_schema())?);
    Ok(ExitCode::SUCCESS)
}
