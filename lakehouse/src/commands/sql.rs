//! `sql`: analysts' queries over every table of the warehouse.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lakehouse::KeyUse;

use super::output::{OutputFormat, print_batches};
use super::{CliError, CmdResult, open_planned};

pub async fn run(
    dir: &Path,
    query: Option<String>,
    file: Option<PathBuf>,
    format: OutputFormat,
    at: &[String],
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
    let (lh, plan, _) = open_planned(dir, &[], KeyUse::ReadOnly).await?;
    let ctx = lakehouse::session::new_session(lakehouse::session::Functions::Interactive, &lh.project.file);
    for layer in ["bronze", "silver", "gold", "system"] {
        for name in lh.warehouse.list_tables(layer).await.map_err(CliError::of)? {
            // Quarantined records are for the roles that repair ingestion: `lakehouse quarantine`.
            if name.ends_with("__quarantine") {
                continue;
            }
            let target = format!("{layer}.{name}");
            let url = lh.warehouse.table_url(layer, &name);
            let Some(mut table) = lh.warehouse.open(&url).await.map_err(CliError::of)? else { continue };
            if let Some(v) = versions.remove(&target)
                && let Err(e) = table.load_version(v).await
            {
                return Err(CliError::User(format!("{target} has no version {v}: {e}")));
            }
            table.update_datafusion_session(&ctx.state())?;
            ctx.register_table(target.as_str(), table.table_provider().await?)?;
        }
    }
    // The catalog's tables: `catalog.tables`, `columns`, `runs`, `attempts`, `lineage`, `column_lineage`.
    if let Some(catalog) = ctx.catalog("datafusion") {
        let _ =
            catalog.register_schema("catalog", std::sync::Arc::new(datafusion::catalog::MemorySchemaProvider::new()));
    }
    // The catalog database (filled from the lake when it is still empty).
    let db = catalog::Catalog::open(&lakehouse::catalog_sync::catalog_url(&lh)).await?;
    let mut snapshot = db.dump().await?;
    if snapshot.tables.is_empty() {
        lakehouse::catalog_sync::sync_catalog(&lh, &plan).await.map_err(CliError::of)?;
        snapshot = db.dump().await?;
    }
    let views = lakehouse::catalog_sync::catalog_batches(&snapshot)?;
    for (name, batch) in views {
        let mem = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        ctx.register_table(name, std::sync::Arc::new(mem))?;
    }
    if let Some(t) = versions.keys().next() {
        return Err(CliError::User(format!("--at names `{t}`, which is not a table of the warehouse")));
    }
    let batches = match lakehouse::session::sql(&ctx, &sql).await {
        Ok(df) => df.collect().await,
        Err(e) => Err(e),
    };
    let batches = batches.map_err(|e| CliError::User(format!("SQL: {}", lakehouse::session::error_text(&e))))?;
    print_batches(&batches, format)?;
    Ok(ExitCode::SUCCESS)
}
