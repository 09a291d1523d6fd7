//! `lakehouse plan`: what the working tree changes compared with a git ref, for reviewers and the DPO.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use lakehouse::manifest::{Project, load_approvals};
use lakehouse::review::review;

use super::{CliError, CmdResult};
use crate::cli::PlanFormat;

/// Exit status when privacy-relevant changes have no DPO approval.
const NOT_APPROVED: u8 = 3;

pub async fn run(dir: &Path, base: &str, against_lake: bool, format: PlanFormat, preview: bool) -> CmdResult {
    let head = super::load_project(dir)?;
    let approvals = load_approvals(dir).map_err(|diags| {
        eprintln!("{diags}");
        CliError::Reported
    })?;
    if against_lake {
        let lh =
            lakehouse::Lakehouse::open(head, lakehouse::KeyUse::Write).map_err(|e| CliError::User(e.to_string()))?;
        let mut r = lakehouse::review::against_lake(&lh, &approvals).await;
        if preview {
            lakehouse::review::preview(&lh, &mut r).await;
        }
        return print(&r, format);
    }
    let checkout = tempfile::tempdir().map_err(|e| CliError::Internal(e.into()))?;
    let base_dir = extract(dir, base, checkout.path())?;
    let base_project = Project::load(&base_dir).map_err(|e| {
        CliError::User(format!(
            "the project as of `{base}` does not load ({e}); compare with a ref where it is valid (--base)"
        ))
    })?;
    let mut r = review(&base_project, &head, base, &approvals);
    if preview {
        let lh =
            lakehouse::Lakehouse::open(head, lakehouse::KeyUse::Write).map_err(|e| CliError::User(e.to_string()))?;
        lakehouse::review::preview(&lh, &mut r).await;
    }
    print(&r, format)
}

fn print(r: &lakehouse::review::Review, format: PlanFormat) -> CmdResult {
    match format {
        PlanFormat::Json => {
            println!("{}", serde_json::to_string_pretty(r).map_err(|e| CliError::Internal(e.into()))?)
        }
        PlanFormat::Text => print!("{}", r.render(false)),
        PlanFormat::Md => print!("{}", r.render(true)),
    }
    Ok(if r.needs_approval() { ExitCode::from(NOT_APPROVED) } else { ExitCode::SUCCESS })
}

/// Extracts the project directory as of `base` (`git archive`) under `into`; returns where it is.
fn extract(dir: &Path, base: &str, into: &Path) -> Result<std::path::PathBuf, CliError> {
    let git =
        |args: &[&str]| -> Result<String, CliError> {
            let out =
                Command::new("git").arg("-C").arg(dir).args(args).output().map_err(|e| {
                    CliError::User(format!("cannot run git: {e} (lakehouse plan compares with a git ref)"))
                })?;
            if !out.status.success() {
                return Err(CliError::User(format!(
                    "git {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
    let prefix = git(&["rev-parse", "--show-prefix"])?;
    git(&["rev-parse", "--verify", "--quiet", &format!("{base}^{{commit}}")])
        .map_err(|_| CliError::User(format!("--base: `{base}` is not a commit of this repository")))?;
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["archive", "--format=tar", base])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CliError::User(format!("cannot run git: {e}")))?;
    let stdout = archive.stdout.take().ok_or_else(|| CliError::Internal(anyhow::anyhow!("git archive: no output")))?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .stdin(stdout)
        .output()
        .map_err(|e| CliError::User(format!("cannot run tar: {e}")))?;
    let git_out = archive.wait_with_output().map_err(|e| CliError::Internal(e.into()))?;
    if !git_out.status.success() || !tar.status.success() {
        return Err(CliError::User(format!(
            "extracting `{base}`: {}{}",
            String::from_utf8_lossy(&git_out.stderr).trim(),
            String::from_utf8_lossy(&tar.stderr).trim()
        )));
    }
    Ok(into.join(prefix))
}
