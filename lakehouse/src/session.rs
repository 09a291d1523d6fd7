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

use std::sync::Arc;

use datafusion::catalog::MemorySchemaProvider;
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionConfig};
use datafusion::prelude::{DataFrame, SessionContext};

use crate::manifest::ProjectFile;
pub use crate::privacy::udf::Functions;

/// A new session with the `bronze`, `silver`, `gold` and `system` schemas and the privacy functions.
pub fn new_session(functions: Functions, project: &ProjectFile) -> SessionContext {
    let domains: Vec<String> = project.privacy.domains.iter().map(|d| d.to_string()).collect();
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    if let Some(catalog) = ctx.catalog("datafusion") {
        for layer in ["bronze", "silver", "gold", "system"] {
            let _ = catalog.register_schema(layer, Arc::new(MemorySchemaProvider::new()));
        }
    }
    crate::privacy::udf::register(&ctx, functions, &domains, project.timezone.0, project.privacy.phone_country);
    ctx
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
