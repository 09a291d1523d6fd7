//! `sql`: analysts' queries over every table of the warehouse.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lakehouse::Lakehouse;

use super::USER_ERROR;
use crate::cli::SqlFormat;

pub async fn run(
    dir: &Path,
    query: Option<String>,
    file: Option<PathBuf>,
    format: SqlFormat,
    at: &[String],
) -> anyhow::Result<ExitCode> {
    let sql = match (query, file) {
        (Some(q), None) => q,
        (None, Some(f)) => match std::fs::read_to_string(&f) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", f.display());
                return Ok(ExitCode::from(USER_ERROR));
            }
        },
        _ => {
            eprintln!("error: give the query as an argument or with -f FILE (one of them)");
            return Ok(ExitCode::from(USER_ERROR));
        }
    };
    let mut versions = std::collections::BTreeMap::new();
    for a in at {
        match a.split_once('=').map(|(t, v)| (t.trim(), v.trim().parse::<u64>())) {
            Some((t, Ok(v))) if t.contains('.') => {
                versions.insert(t.to_string(), v);
            }
            _ => {
                eprintln!("error: --at `{a}` is not TABLE=VERSION (e.g. --at gold.fire_response_times=3)");
                return Ok(ExitCode::from(USER_ERROR));
            }
        }
    }
    let (project, plan, _) = match super::load_with_plan(dir, &[]).await? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let lh = match Lakehouse::open(project, lakehouse::KeyUse::ReadOnly) {
        Ok(lh) => lh,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(USER_ERROR));
        }
    };
    let domains: Vec<String> = lh.project.file.privacy.domains.iter().map(|d| d.to_string()).collect();
    let ctx = lakehouse::session::new_session(
        lakehouse::session::Functions::Interactive,
        &domains,
        lh.project.file.timezone.0,
    );
    for layer in ["bronze", "silver", "gold", "system"] {
        for name in lh.warehouse.list_tables(layer).await? {
            // Quarantined records are for the roles that repair ingestion: `lakehouse quarantine`.
            if name.ends_with("__quarantine") {
                continue;
            }
            let target = format!("{layer}.{name}");
            let url = lh.warehouse.table_url(layer, &name);
            let Some(mut table) = lh.warehouse.open(&url).await? else { continue };
            if let Some(v) = versions.remove(&target)
                && let Err(e) = table.load_version(v).await
            {
                eprintln!("error: {target} has no version {v}: {e}");
                return Ok(ExitCode::from(USER_ERROR));
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
    let db = catalog::Catalog::open(&lakehouse::audit::catalog_url(&lh)).await?;
    let mut snapshot = db.dump().await?;
    if snapshot.tables.is_empty() {
        lakehouse::audit::sync_catalog(&lh, &plan).await?;
        snapshot = db.dump().await?;
    }
    let views = lakehouse::audit::catalog_batches(&snapshot)?;
    for (name, batch) in views {
        let mem = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        ctx.register_table(name, std::sync::Arc::new(mem))?;
    }
    if let Some(t) = versions.keys().next() {
        eprintln!("error: --at names `{t}`, which is not a table of the warehouse");
        return Ok(ExitCode::from(USER_ERROR));
    }
    let batches = match lakehouse::session::sql(&ctx, &sql).await {
        Ok(df) => df.collect().await,
        Err(e) => Err(e),
    };
    let batches = match batches {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: SQL: {}", lakehouse::session::error_text(&e));
            return Ok(ExitCode::from(USER_ERROR));
        }
    };
    let mut out = Vec::new();
    match format {
        SqlFormat::Table => {
            out.extend(arrow::util::pretty::pretty_format_batches(&batches)?.to_string().into_bytes());
            out.push(b'\n');
        }
        SqlFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            for b in &batches {
                w.write(b)?;
            }
        }
        SqlFormat::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            let refs: Vec<&arrow::array::RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            out.push(b'\n');
        }
    }
    use std::io::Write;
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}
