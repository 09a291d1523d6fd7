//! The one factory of DataFusion sessions, and the one way to run SQL in them.
//!
//! Every session the engine creates is a **read-only sandbox**:
//! - [`sql`] plans a statement with DDL (`CREATE [EXTERNAL] TABLE`, `CREATE VIEW`, `DROP`), DML (`INSERT`,
//!   `UPDATE`, `DELETE`), `COPY … TO` and statements (`SET`, transactions, `PREPARE`) all refused, so neither an
//!   analyst's query nor a model's SQL can write a table, a file or the session's own catalog;
//! - there is no table function that reads a path and no URL table (`SELECT * FROM '/etc/passwd'` is an
//!   unknown table): the only table functions are the pure `generate_series` and `range`;
//! - the functions that need keys (`pseudonymize`, `pseudonym_key_id`) compute only in sessions that write
//!   pseudonyms ([`Functions::Keyed`]: model runs and their reproduction). An interactive session
//!   ([`Functions::Interactive`]) refuses them at planning, so a query cannot be used to look a person up by
//!   the pseudonym of a known identifier.
//!
//! Kept in one place so a distributed engine can be plugged in here. The rest of the crate calls
//! `SessionContext::sql` nowhere (clippy's `disallowed_methods` enforces it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::{SQLOptions, SessionConfig};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::future::BoxFuture;

use crate::manifest::ProjectFile;
pub use crate::privacy::udf::Functions;
use crate::storage::{StorageError, Warehouse};

/// A new session with the `bronze`, `silver`, `gold` and `system` schemas and the privacy functions.
pub fn new_session(functions: Functions, project: &ProjectFile) -> SessionContext {
    new_session_in(functions, project, Arc::new(RuntimeEnv::default()))
}

/// [`new_session`] in a runtime shared with other sessions (its memory pool and object stores): the query
/// server's connections.
pub fn new_session_in(functions: Functions, project: &ProjectFile, runtime: Arc<RuntimeEnv>) -> SessionContext {
    let domains: Vec<String> = project.privacy.domains.iter().map(|d| d.to_string()).collect();
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    if let Some(catalog) = ctx.catalog("datafusion") {
        for layer in ["bronze", "silver", "gold", "system"] {
            let _ = catalog.register_schema(layer, Arc::new(MemorySchemaProvider::new()));
        }
    }
    crate::privacy::udf::register(&ctx, functions, &domains, project.timezone.0, project.privacy.phone_country);
    ctx
}

/// Opens one table of a [`LazySchema`] by name; `None` when there is no such table (any more).
pub type OpenTable =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Option<Arc<dyn TableProvider>>, DataFusionError>> + Send + Sync>;

/// A schema whose tables are known by name and opened only when a statement names them (DataFusion asks a
/// schema for the tables a statement references while planning it), each at most once per session: a query
/// that reads one table of the warehouse opens one Delta log, not all of them. `information_schema` and
/// `SHOW TABLES` list every name.
pub struct LazySchema {
    names: Vec<String>,
    open: OpenTable,
    opened: tokio::sync::Mutex<HashMap<String, Option<Arc<dyn TableProvider>>>>,
}

impl LazySchema {
    pub fn new(names: Vec<String>, open: OpenTable) -> Self {
        Self { names, open, opened: Default::default() }
    }

    /// Serves this schema in `ctx` as `name` (in place of the empty one [`new_session`] made, if any).
    pub fn register_in(self, ctx: &SessionContext, name: &str) {
        if let Some(catalog) = ctx.catalog("datafusion") {
            // Registering in the session's in-memory catalog cannot fail.
            let _ = catalog.register_schema(name, Arc::new(self));
        }
    }
}

impl std::fmt::Debug for LazySchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazySchema").field("names", &self.names).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl SchemaProvider for LazySchema {
    fn table_names(&self) -> Vec<String> {
        self.names.clone()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if !self.table_exist(name) {
            return Ok(None);
        }
        let mut opened = self.opened.lock().await;
        if let Some(table) = opened.get(name) {
            return Ok(table.clone());
        }
        let table = (self.open)(name.to_string()).await?;
        opened.insert(name.to_string(), table.clone());
        Ok(table)
    }

    /// Every table here is a base table: listing them (`SHOW TABLES`, `information_schema.tables`) opens none.
    async fn table_type(&self, name: &str) -> Result<Option<TableType>, DataFusionError> {
        Ok(self.table_exist(name).then_some(TableType::Base))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }
}

/// The Delta version of each table a session opened, by `layer.table` (what a statement of the session read).
pub type Opened = Arc<std::sync::Mutex<BTreeMap<String, u64>>>;

/// Serves the tables of `layers` of the warehouse in `ctx` as `layer.table`, each opened when a statement
/// first names it ([`LazySchema`]) and its version noted in `opened`; quarantine tables and those not `visible`
/// (by `layer.table`) are left out. `pinned` reads a `layer.table` at a version (time travel); the pinned names
/// that are no table of these layers are returned, for the caller to refuse.
pub async fn serve_layers(
    ctx: &SessionContext,
    warehouse: &Warehouse,
    layers: &[&str],
    pinned: &BTreeMap<String, u64>,
    visible: &(dyn Fn(&str) -> bool + Sync),
    opened: &Opened,
) -> Result<Vec<String>, StorageError> {
    let listed = futures::future::try_join_all(layers.iter().map(|l| warehouse.list_tables(l))).await?;
    let mut known = Vec::new();
    for (layer, names) in layers.iter().zip(listed) {
        // Quarantined records are for the roles that repair ingestion (`lakehouse quarantine`).
        let names: Vec<String> =
            names.into_iter().filter(|n| !n.ends_with("__quarantine") && visible(&format!("{layer}.{n}"))).collect();
        known.extend(names.iter().map(|n| format!("{layer}.{n}")));
        let (warehouse, layer_name, env) = (warehouse.clone(), layer.to_string(), ctx.runtime_env());
        let (pinned, opened) = (pinned.clone(), opened.clone());
        let open: OpenTable = Arc::new(move |name: String| {
            let (warehouse, env, opened) = (warehouse.clone(), env.clone(), opened.clone());
            let target = format!("{layer_name}.{name}");
            let url = warehouse.table_url(&layer_name, &name);
            let version = pinned.get(&target).copied();
            Box::pin(async move {
                let external = |e: StorageError| DataFusionError::External(Box::new(e));
                let Some(mut table) = warehouse.open(&url).await.map_err(external)? else { return Ok(None) };
                if let Some(v) = version {
                    table
                        .load_version(v)
                        .await
                        .map_err(|e| DataFusionError::Plan(format!("{target} has no version {v}: {e}")))?;
                }
                opened.lock().expect("opened tables").insert(target, table.version().unwrap_or(0));
                // The table's object store, registered in the runtime this session shares.
                let state = SessionStateBuilder::new().with_runtime_env(env).build();
                table.update_datafusion_session(&state).map_err(|e| DataFusionError::External(Box::new(e)))?;
                let provider = table.table_provider().await.map_err(|e| DataFusionError::External(Box::new(e)))?;
                Ok(Some(provider))
            })
        });
        LazySchema::new(names, open).register_in(ctx, layer);
    }
    Ok(pinned.keys().filter(|t| !known.contains(t)).cloned().collect())
}

/// The options of every statement: no DDL, DML, `COPY` or statements.
pub fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// Plans one SQL statement in the read-only sandbox. A refused statement is a planning error such as
/// `Error during planning: DML not supported: Insert Into`, which [`refusal`] turns into a sentence.
#[allow(clippy::disallowed_methods)]
pub async fn sql(ctx: &SessionContext, sql: &str) -> Result<DataFrame, DataFusionError> {
    ctx.sql_with_options(sql, read_only()).await.map_err(|e| match refusal(&e) {
        Some(why) => DataFusionError::Plan(why),
        None => e,
    })
}

/// The sentence for a statement the sandbox refuses, or `None` for any other error.
pub fn refusal(e: &DataFusionError) -> Option<String> {
    let text = e.find_root().to_string();
    let kind = ["DDL not supported: ", "DML not supported: ", "Statement not supported: "]
        .iter()
        .find_map(|p| text.split_once(p).map(|(_, what)| what.trim().to_string()))?;
    Some(format!(
        "`{kind}` is refused: SQL here is read-only (SELECT, WITH, VALUES, EXPLAIN); no DDL, DML, COPY or \
         session statements"
    ))
}

/// A DataFusion error in one line, fit to be logged and stored: the root cause without its context chain.
///
/// Planning errors (SQL, schema, configuration) speak of the SQL the engineer wrote and are kept as they are.
/// Errors raised while computing (casts, arithmetic, parsing, anything from Arrow or an external source) may
/// quote the data that caused them, as in `Cannot cast string '06 12 34 56 78' to value of Int64 type`: their
/// quoted spans and numbers of three digits or more are replaced by `…`, so no data value reaches a log, the
/// run log, the catalog or a lineage event.
pub fn error_text(e: &DataFusionError) -> String {
    let root = e.find_root();
    let text = root.to_string();
    let line = text.lines().next().unwrap_or_default();
    match root {
        DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::SQL(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => line.to_string(),
        _ => without_values(line),
    }
}

/// `text` with its single-quoted spans (`'…'`, how DataFusion and Arrow quote values) and its runs of three or
/// more digits replaced by `…`. Double quotes are kept: they wrap nested error messages (`CastError("…")`),
/// whose values are single-quoted in turn.
pub fn without_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                // A quote that closes later on the line hides what it holds.
                let rest: String = chars.clone().collect();
                match rest.find(c) {
                    Some(end) => {
                        out.push_str("'…'");
                        for _ in 0..rest[..end].chars().count() + 1 {
                            chars.next();
                        }
                    }
                    None => out.push(c),
                }
            }
            d if d.is_ascii_digit() => {
                let mut run = String::from(d);
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_digit() || ((n == ' ' || n == '.' || n == '-') && run.len() < 40) {
                        run.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                let trailing: String = run.chars().rev().take_while(|c| !c.is_ascii_digit()).collect();
                let digits = run.chars().filter(char::is_ascii_digit).count();
                if digits >= 3 {
                    out.push('…');
                } else {
                    out.push_str(run.trim_end_matches(|c: char| !c.is_ascii_digit()));
                }
                out.extend(trailing.chars().rev());
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn err(ctx: &SessionContext, q: &str) -> String {
        match sql(ctx, q).await {
            Ok(df) => match df.collect().await {
                Ok(_) => panic!("`{q}` was accepted"),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn writes_and_files_are_refused() {
        let ctx = new_session(Functions::Interactive, &ProjectFile::with_domains(&["police"]));
        sql(&ctx, "SELECT 1").await.unwrap().collect().await.unwrap();
        for q in [
            "CREATE TABLE t AS SELECT 1",
            "CREATE EXTERNAL TABLE k (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
            "CREATE VIEW v AS SELECT 1",
            "COPY (SELECT 1) TO '/tmp/lakehouse-copy-test.csv'",
            "SET datafusion.execution.batch_size = 1",
            "DROP TABLE IF EXISTS t",
        ] {
            let e = err(&ctx, q).await;
            assert!(e.contains("is refused: SQL here is read-only"), "{q}: {e}");
        }
        assert!(!std::path::Path::new("/tmp/lakehouse-copy-test.csv").exists());
        // Files are not tables.
        let e = err(&ctx, "SELECT * FROM '/etc/passwd'").await;
        assert!(e.contains("not found") || e.contains("table"), "{e}");
        // The only table functions are pure.
        let mut functions: Vec<String> = ctx.state().table_functions().keys().cloned().collect();
        functions.sort();
        assert_eq!(functions, ["generate_series", "range"]);
    }

    #[test]
    fn values_are_removed_from_runtime_errors() {
        assert_eq!(
            without_values("Cast error: Cannot cast string '06 12 34 56 78' to value of Int64 type"),
            "Cast error: Cannot cast string '…' to value of Int64 type"
        );
        assert_eq!(without_values("Overflow happened on: 0612345678 * 10"), "Overflow happened on: … * 10");
        assert_eq!(without_values("tel 06 12 34 56 78, age 42"), "tel …, age 42");
        assert_eq!(without_values("it's"), "it's");
        assert_eq!(
            without_values(
                r#"ArrowError(CastError("Cannot cast string 'Tags sur la façade' to value of Int64 type"), None)"#
            ),
            r#"ArrowError(CastError("Cannot cast string '…' to value of Int64 type"), None)"#
        );
        let e = DataFusionError::ArrowError(
            Box::new(arrow::error::ArrowError::CastError("Cannot cast string 'Dupont' to value of Int64 type".into())),
            None,
        );
        assert!(!error_text(&e).contains("Dupont"), "{}", error_text(&e));
        let plan = DataFusionError::Plan("pseudonymize: unknown domain 'fire'".into());
        assert_eq!(error_text(&plan), "Error during planning: pseudonymize: unknown domain 'fire'");
    }

    #[tokio::test]
    async fn interactive_sessions_have_no_keyed_functions() {
        let ctx = new_session(Functions::Interactive, &ProjectFile::with_domains(&["police"]));
        for q in ["SELECT pseudonymize('0601020304', 'police', 'digits')", "SELECT pseudonym_key_id('police')"] {
            let e = err(&ctx, q).await;
            assert!(e.contains("not available in interactive SQL"), "{q}: {e}");
        }
    }
}
