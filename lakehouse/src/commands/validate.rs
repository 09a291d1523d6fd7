use std::path::Path;
use std::process::ExitCode;

use super::CmdResult;

pub async fn run(dir: &Path, vars: &[String]) -> CmdResult {
    let (project, plan, _) = super::load_with_plan(dir, vars).await?;
    super::check_policy(&project, &plan).await?;
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    println!(
        "{}: ok, {}, {}",
        project.dir.join(lakehouse::manifest::PROJECT_FILE).display(),
        plural(project.sources.len(), "source"),
        plural(plan.models.len(), "model")
    );
    if !project.policy.roles.is_empty() {
        println!("  access: {}", plural(project.policy.roles.len(), "role"));
    }
    for s in &project.sources {
        println!(
            "  {:<28} {}  ({})",
            format!("bronze.{}", s.manifest.name),
            s.path.display(),
            s.manifest.schedule.as_str()
        );
    }
    for target in &plan.order {
        let m = &plan.models[target];
        let inputs: Vec<&str> = m.rendered.inputs.iter().map(String::as_str).collect();
        println!("  {:<28} {}  ← {}", target, m.loaded.path.display(), inputs.join(", "));
    }
    for note in &project.notes {
        println!("note: {note}");
    }
    for note in &plan.notes {
        println!("note: {note}");
    }
    Ok(ExitCode::SUCCESS)
}
