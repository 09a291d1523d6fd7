use std::path::Path;
use std::process::ExitCode;

pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let project = match super::load_project(dir)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    println!(
        "{}: ok, {} source{}",
        project.dir.join(lakehouse::manifest::PROJECT_FILE).display(),
        project.sources.len(),
        if project.sources.len() == 1 { "" } else { "s" }
    );
    for s in &project.sources {
        println!("  {:<28} {}  ({})", s.manifest.name, s.path.display(), s.manifest.schedule.as_str());
    }
    Ok(ExitCode::SUCCESS)
}
