//! `user`: the users of the query server, with roles of the access policy and SCRAM-SHA-256 verifiers in the
//! catalog database.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use lakehouse::access::scram::{Verifier, generate_password};
use lakehouse::catalog_sync::SyncError;
use lakehouse::{KeyUse, Lakehouse};
use serde::{Deserialize, Serialize};

use super::output::print_rows;
use super::{CliError, CmdResult, open};
use crate::cli::UserCommand;

/// Passwords read from standard input are at least this long.
const MIN_PASSWORD_CHARS: usize = 12;

pub async fn run(dir: &Path, command: UserCommand) -> CmdResult {
    let (lh, _) = open(dir, &[], KeyUse::ReadOnly)?;
    let db = catalog::Catalog::open(&lakehouse::catalog_sync::catalog_url(&lh)).await.map_err(failed)?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match command {
        UserCommand::Add { name, roles, password_stdin } => {
            check_name(&name)?;
            let roles = checked_roles(&lh, &roles)?;
            let (password, generated) = password(password_stdin)?;
            let verifier = Verifier::new(&password).to_string();
            let user =
                catalog::UserRow { name: name.clone(), roles, verifier, created_at: now.clone(), updated_at: now };
            if !db.add_user(&user).await.map_err(failed)? {
                return Err(CliError::User(format!(
                    "user `{name}` exists: `lakehouse user passwd {name}` sets its password, `user roles` its roles"
                )));
            }
            println!("added user {name} with roles {}", user.roles.replace(',', ", "));
            show_once(&name, generated.then_some(password.as_str()));
        }
        UserCommand::List { format } => {
            let users = db.users().await.map_err(failed)?;
            let lines: Vec<UserLine> = users
                .iter()
                .map(|u| UserLine {
                    name: u.name.clone(),
                    roles: u
                        .roles()
                        .map(|r| {
                            if lh.project.policy.roles.contains_key(r) {
                                r.to_string()
                            } else {
                                format!("{r} (not in the policy)")
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    created_at: u.created_at.clone(),
                    updated_at: u.updated_at.clone(),
                })
                .collect();
            print_rows(&lines, format)?;
        }
        UserCommand::Passwd { name, password_stdin } => {
            let (password, generated) = password(password_stdin)?;
            let verifier = Verifier::new(&password).to_string();
            if !db.update_user(&name, None, Some(&verifier), &now).await.map_err(failed)? {
                return Err(no_such_user(&name));
            }
            println!("password of {name} changed");
            show_once(&name, generated.then_some(password.as_str()));
        }
        UserCommand::Roles { name, roles } => {
            let roles = checked_roles(&lh, &roles)?;
            if !db.update_user(&name, Some(&roles), None, &now).await.map_err(failed)? {
                return Err(no_such_user(&name));
            }
            println!("roles of {name}: {}", roles.replace(',', ", "));
        }
        UserCommand::Remove { name } => {
            if !db.remove_user(&name).await.map_err(failed)? {
                return Err(no_such_user(&name));
            }
            println!("removed user {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A line of `user list`.
#[derive(Serialize, Deserialize)]
struct UserLine {
    name: String,
    roles: String,
    created_at: String,
    updated_at: String,
}

fn failed(e: catalog::CatalogError) -> CliError {
    CliError::of(SyncError::Catalog(e))
}

fn no_such_user(name: &str) -> CliError {
    CliError::User(format!("no user `{name}` (`lakehouse user list` shows them)"))
}

/// User names follow the rule of every other name here, so they need no quoting in a connection string.
fn check_name(name: &str) -> Result<(), CliError> {
    lakehouse::manifest::names::check_identifier(name, "user name").map_err(CliError::User)
}

/// The roles, each a role of the policy, comma-separated and deduplicated.
fn checked_roles(lh: &Lakehouse, roles: &[String]) -> Result<String, CliError> {
    let mut out: Vec<&str> = Vec::new();
    for r in roles.iter().flat_map(|r| r.split(',')).map(str::trim).filter(|r| !r.is_empty()) {
        lh.project.policy.role(r).map_err(CliError::User)?;
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(out.join(","))
}

/// The password: the first line of standard input, or a generated one (the flag says which).
fn password(from_stdin: bool) -> Result<(String, bool), CliError> {
    if !from_stdin {
        return Ok((generate_password(), true));
    }
    let mut text = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| CliError::User(format!("cannot read the password from standard input: {e}")))?;
    let line = text.lines().next().unwrap_or_default().to_string();
    if line.chars().count() < MIN_PASSWORD_CHARS {
        return Err(CliError::User(format!(
            "the password read from standard input has fewer than {MIN_PASSWORD_CHARS} characters; leave out \
             --password-stdin to have one generated"
        )));
    }
    Ok((line, false))
}

fn show_once(name: &str, generated: Option<&str>) {
    if let Some(p) = generated {
        println!("password of {name} (shown once, store it now): {p}");
    }
}
