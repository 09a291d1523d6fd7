use std::process::ExitCode;

pub fn run() -> super::CmdResult {
    println!("{}", serde_json::to_string_pretty(&lakehouse::manifest::source_json_schema())?);
    Ok(ExitCode::SUCCESS)
}
