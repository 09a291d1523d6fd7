//! `sql`: analysts' queries over every table of the warehouse.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use datafusion::error::DataFusionError;
use lakehouse::{KeyUse, Lakehouse};

use super::output::{OutputFormat, print_batches};
use super::{CliError, CmdResult, open};

pub async fn run(
    dir: &Path,
    query: Option<String>,
    file: Option<PathBuf>,
    format: OutputFormat,
    at: &[String],
    as_role: Option<&str>,
) -> CmdResult {
    let sql = match (query, file) {
        (Some(q), None) => q,
        (None, Some(f)) => {
            std::fs::read_to_string(&f).map_err(|e| CliError::User(format!("cannot read {}: {e}", f.display())))?
        }
        _ => return Err(CliError::User("give the query as an argument or with -f FILE (one of them)".into())),
    };
    let mut versions = std::collections::BTreeMap::new();
    for a in at {
        match a.split_once('=').map(|(t, v)| (t.trim(), v.trim().parse::<u64>())) {
            Some((t, Ok(v))) if t.contains('.') => {
                versions.insert(t.to_string(), v);
            }
            _ => {
                return Err(CliError::User(format!(
                    "--at `{a}` is not TABLE=VERSION (e.g. --at gold.fire_response_times=3)"
                )));
            }
        }
    }
    // Only what the query needs: the project (not its models' plans, unless a role's policy is checked), each
    // table it names, the catalog database only when it reads `catalog.*`.
    let (lh, _) = open(dir, &[], KeyUse::ReadOnly)?;
    let lh = Arc::new(lh);
    let ctx = lakehouse::session::new_session(lakehouse::session::Functions::Interactive, &lh.project.file);
    let (ctx, identity) = match as_role {
        None => (ctx, None),
        Some(role) => {
            let identity = identity(&lh, role).await?;
            if !versions.is_empty() {
                return Err(CliError::User(
                    "--at cannot be used with --as: a role reads the current version of each table, under the \
                     current policy"
                        .into(),
                ));
            }
            (lakehouse::access::enforce::governed(&ctx, identity.clone(), None), Some(identity))
        }
    };
    // A role never reads bronze; it sees only the tables it is granted (listings included).
    let layers: &[&str] =
        if identity.is_some() { &["silver", "gold", "system"] } else { &["bronze", "silver", "gold", "system"] };
    let visible = |table: &str| identity.as_ref().is_none_or(|i| i.serves(table));
    let unknown =
        lakehouse::session::serve_layers(&ctx, &lh.warehouse, layers, &versions, &visible, &Default::default())
            .await
            .map_err(CliError::of)?;
    if let Some(t) = unknown.first() {
        return Err(CliError::User(format!("--at names `{t}`, which is not a table of the warehouse")));
    }
    lakehouse::catalog_sync::serve_catalog(&ctx, lh, &visible);
    let batches = match lakehouse::session::sql(&ctx, &sql).await {
        Ok(df) => df.collect().await,
        Err(e) => Err(e),
    };
    let batches = batches.map_err(sql_error)?;
    print_batches(&batches, format)?;
    Ok(ExitCode::SUCCESS)
}

/// `--as ROLE`: the role of the access policy, checked against the tables it may serve.
async fn identity(lh: &Lakehouse, role: &str) -> Result<lakehouse::access::Identity, CliError> {
    let role = lh.project.policy.role(role).map_err(CliError::User)?.clone();
    super::check_enforceable(&lh.project).await?;
    Ok(lakehouse::access::Identity { user: role.name.clone(), roles: vec![role] })
}

/// A failed statement: a table that could not be opened is the storage error it is (a store that is down is
/// not a SQL problem); anything else is the statement's, in one line without data values.
fn sql_error(e: DataFusionError) -> CliError {
    if let DataFusionError::External(inner) = e.find_root()
        && let Some(storage) = inner.downcast_ref::<lakehouse::storage::StorageError>()
    {
        return if storage.is_user_error() {
            CliError::User(storage.to_string())
        } else {
            CliError::Internal(anyhow::anyhow!(storage.to_string()))
        };
    }
    CliError::User(format!("SQL: {}", lakehouse::session::error_text(&e)))
}
