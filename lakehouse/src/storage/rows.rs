//! Small tables as typed rows: one serde struct per table (the file ledger, the quarantine, the run log, the
//! catalog's tables), converted to and from Arrow record batches by `serde_arrow` against the table's declared
//! schema, and one reader of query results as structs ([`from_frame`], [`read_table`]). Field names are column
//! names.

use std::sync::Arc;

use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::{DataFrame, Expr, SessionContext, ident};
use deltalake::DeltaTable;
use futures::TryStreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_arrow::schema::{SchemaLike, TracingOptions};

#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("table: {0}")]
    Table(#[from] deltalake::DeltaTableError),
    #[error("rows do not match the table's columns: {0}")]
    Convert(#[from] serde_arrow::Error),
}

/// Rows as one record batch of `schema` (an empty batch of that schema for no rows).
pub fn to_batch<T: Serialize>(schema: &SchemaRef, rows: &[T]) -> Result<RecordBatch, RowsError> {
    if rows.is_empty() {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    Ok(serde_arrow::to_record_batch(schema.fields(), &rows)?)
}

/// The Arrow schema of a row type, traced from its fields (strings as `Utf8`, `Option` as nullable).
pub fn schema_of<T: DeserializeOwned>() -> Result<SchemaRef, RowsError> {
    let options = TracingOptions::default().strings_as_large_utf8(false).enums_without_data_as_strings(true);
    let fields = Vec::<FieldRef>::from_type::<T>(options)?;
    Ok(Arc::new(Schema::new(fields)))
}

/// The rows of record batches (extra columns are ignored).
pub fn from_batches<T: DeserializeOwned>(batches: &[RecordBatch]) -> Result<Vec<T>, RowsError> {
    let mut out = Vec::new();
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        out.extend(serde_arrow::from_record_batch::<Vec<T>>(b)?);
    }
    Ok(out)
}

/// The rows of a query's result; its column names are the struct's field names (other columns are ignored).
pub async fn from_frame<T: DeserializeOwned>(df: DataFrame) -> Result<Vec<T>, RowsError> {
    let batches: Vec<RecordBatch> = df.execute_stream().await?.try_collect().await?;
    from_batches(&batches)
}

/// The rows of a Delta table that pass `filter` (all when `None`), sorted by the `order_by` columns.
pub async fn read_table<T: DeserializeOwned>(
    table: &DeltaTable,
    filter: Option<Expr>,
    order_by: &[&str],
) -> Result<Vec<T>, RowsError> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let mut df = ctx.read_table(table.table_provider().await?)?;
    if let Some(filter) = filter {
        df = df.filter(filter)?;
    }
    if !order_by.is_empty() {
        df = df.sort(order_by.iter().map(|c| ident(*c).sort(true, false)).collect())?;
    }
    from_frame(df).await
}

/// How many rows of a Delta table pass `filter` (all when `None`).
pub async fn count_table(table: &DeltaTable, filter: Option<Expr>) -> Result<u64, RowsError> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let mut df = ctx.read_table(table.table_provider().await?)?;
    if let Some(filter) = filter {
        df = df.filter(filter)?;
    }
    Ok(df.count().await? as u64)
}

/// A Delta table of typed rows written by the platform itself (`system.runs`, `system.queries`): appended in
/// one commit per call, created on first use, read back as rows.
pub struct RowTable {
    pub layer: &'static str,
    pub name: &'static str,
    /// The table's description, set when it is created.
    pub description: &'static str,
    pub schema: fn() -> SchemaRef,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Delta properties of the row tables. They take a commit per command that runs anything (`system.runs`) or
/// per query served (`system.queries`), and every command opens `system.runs`: opening a table replays the
/// commits after its last checkpoint, which Delta writes every 100 commits by default. A no-op `lakehouse run`
/// on the example took 0.22 s just after a checkpoint and 0.37 s just before the next; with one every 10
/// commits, 0.22 s throughout (the run that writes a checkpoint, about 15 ms more).
pub const ROW_TABLE_PROPERTIES: &[(&str, &str)] = &[("delta.checkpointInterval", "10")];

impl RowTable {
    /// Where the table is (or will be) in `warehouse`.
    pub fn url(&self, warehouse: &super::Warehouse) -> url::Url {
        warehouse.table_url(self.layer, self.name)
    }

    /// Appends `rows` in one commit (creating the table on first use, with [`ROW_TABLE_PROPERTIES`], which a
    /// table created before them gains on its next append).
    pub async fn append<T: Serialize>(&self, warehouse: &super::Warehouse, rows: &[T]) -> Result<(), BoxError> {
        let schema = (self.schema)();
        let url = self.url(warehouse);
        let table = warehouse.open_or_create(&url, &schema, self.description, &[], ROW_TABLE_PROPERTIES).await?;
        // Setting them is a metadata commit, which a concurrent append can make fail: the rows still go in (the
        // next append sets them).
        let table = match super::keep_properties(table.clone(), ROW_TABLE_PROPERTIES, "checkpoint interval").await {
            Ok(updated) => updated,
            Err(e) => {
                tracing::info!(table = %url, error = %e, "checkpoint interval not set this time");
                table
            }
        };
        super::append_batch(&table, to_batch(&schema, rows)?, Default::default()).await?;
        Ok(())
    }

    /// Rewrites the table into few files and removes the files no version needs any more (past the table's
    /// deleted-file retention, 7 days by default): each append is a small file, and a table appended to every
    /// few seconds would otherwise be read from thousands of them. Nothing to do before the first append.
    pub async fn compact(&self, warehouse: &super::Warehouse) -> Result<(), BoxError> {
        let url = self.url(warehouse);
        let Some(table) = warehouse.open(&url).await? else { return Ok(()) };
        let table_name = format!("{}.{}", self.layer, self.name);
        let (table, metrics) = table.optimize().await?;
        tracing::info!(table = %table_name, files_removed = metrics.num_files_removed,
            files_added = metrics.num_files_added, "compacted");
        let (_, vacuumed) = table.vacuum().await?;
        tracing::info!(table = %table_name, files_deleted = vacuumed.files_deleted.len(), "vacuumed");
        Ok(())
    }

    /// The rows that pass `filter` (all when `None`), sorted by `order_by`; none before the first append.
    pub async fn read<T: DeserializeOwned>(
        &self,
        warehouse: &super::Warehouse,
        filter: Option<Expr>,
        order_by: &[&str],
    ) -> Result<Vec<T>, BoxError> {
        let url = self.url(warehouse);
        let Some(table) = warehouse.open(&url).await? else { return Ok(Vec::new()) };
        Ok(read_table(&table, filter, order_by).await?)
    }
}

/// The one value of a one-row query `SELECT count(*) AS n …` (0 for no row).
pub async fn count(df: DataFrame) -> Result<u64, RowsError> {
    #[derive(serde::Deserialize)]
    struct Count {
        n: i64,
    }
    Ok(from_frame::<Count>(df).await?.first().map_or(0, |c| c.n.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Row {
        name: String,
        at: DateTime<Utc>,
        n: Option<u64>,
        #[serde(with = "super::bytes")]
        raw: Vec<u8>,
        #[serde(rename = "kind")]
        state: State,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum State {
        UpToDate,
        Failed,
    }

    fn schema() -> SchemaRef {
        use arrow::datatypes::{DataType, Field, TimeUnit};
        Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
            Field::new("n", DataType::Int64, true),
            Field::new("raw", DataType::Binary, false),
            Field::new("kind", DataType::Utf8, false),
        ]))
    }

    #[test]
    fn rows_round_trip_through_a_batch() {
        let at = DateTime::from_timestamp_micros(1_764_470_000_123_456).unwrap();
        let rows = vec![
            Row { name: "a".into(), at, n: Some(3), raw: vec![0, 1, 255], state: State::UpToDate },
            Row { name: "b".into(), at, n: None, raw: vec![], state: State::Failed },
        ];
        let batch = to_batch(&schema(), &rows).unwrap();
        assert_eq!(batch.schema(), schema());
        let kinds = arrow::compute::cast(batch.column(4), &arrow::datatypes::DataType::Utf8).unwrap();
        assert_eq!(arrow::array::AsArray::as_string::<i32>(&kinds).value(0), "up_to_date");
        assert_eq!(from_batches::<Row>(&[batch]).unwrap(), rows);
        assert_eq!(to_batch::<Row>(&schema(), &[]).unwrap().num_rows(), 0);
    }

    /// A local warehouse at `<temporary directory>/w`.
    fn warehouse() -> (tempfile::TempDir, crate::storage::Warehouse) {
        let dir = tempfile::tempdir().unwrap();
        let wh = crate::storage::Warehouse::new(
            dir.path(),
            "file://./w",
            &Default::default(),
            crate::manifest::Retention::Forever,
        )
        .unwrap();
        (dir, wh)
    }

    /// Appends land in a file each; compaction leaves one file with every row.
    #[tokio::test]
    async fn compaction_keeps_every_row_in_one_file() {
        let (_dir, wh) = warehouse();
        let t = RowTable { layer: "system", name: "t", description: "test", schema };
        t.compact(&wh).await.unwrap(); // no table yet: nothing to do
        let at = DateTime::from_timestamp_micros(1_764_470_000_000_000).unwrap();
        for i in 0..3 {
            let row = Row { name: format!("r{i}"), at, n: Some(i), raw: vec![], state: State::Failed };
            t.append(&wh, &[row]).await.unwrap();
        }
        let files = |table: &DeltaTable| table.snapshot().unwrap().log_data().iter().count();
        let before = wh.open(&t.url(&wh)).await.unwrap().unwrap();
        assert_eq!(files(&before), 3);
        t.compact(&wh).await.unwrap();
        let after = wh.open(&t.url(&wh)).await.unwrap().unwrap();
        assert_eq!(files(&after), 1);
        let rows: Vec<Row> = t.read(&wh, None, &["name"]).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["r0", "r1", "r2"]);
    }

    /// A row table is checkpointed every 10 commits, not Delta's 100: one created before the property gains it
    /// on its next append, and its rows are all read back across the checkpoint.
    #[tokio::test]
    async fn row_tables_are_checkpointed_every_ten_commits() {
        let (dir, wh) = warehouse();
        let t = RowTable { layer: "system", name: "c", description: "test", schema };
        // As an older version created it: without the property.
        let old = wh.open_or_create(&t.url(&wh), &schema(), "test", &[], &[]).await.unwrap();
        assert!(!crate::storage::properties(&old).unwrap().contains_key("delta.checkpointInterval"));
        let at = DateTime::from_timestamp_micros(1_764_470_000_000_000).unwrap();
        for i in 0..12 {
            let row = Row { name: format!("r{i:02}"), at, n: Some(i), raw: vec![], state: State::UpToDate };
            t.append(&wh, &[row]).await.unwrap();
        }
        let table = wh.open(&t.url(&wh)).await.unwrap().unwrap();
        assert_eq!(crate::storage::properties(&table).unwrap()["delta.checkpointInterval"], "10");
        // Version 0 the creation, 1 the property, 2..=13 the appends: one checkpoint among them (Delta's default
        // would write its first at version 100).
        assert_eq!(table.version(), Some(13));
        let log = dir.path().join("w/system/c/_delta_log");
        let checkpoints: Vec<String> = std::fs::read_dir(&log)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".checkpoint."))
            .collect();
        assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
        let rows: Vec<Row> = t.read(&wh, None, &["name"]).await.unwrap();
        assert_eq!(rows.len(), 12);
        assert_eq!(rows[11].name, "r11");
    }

    #[test]
    fn traced_schemas_have_types_even_without_rows() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct T {
            a: String,
            b: Option<i64>,
            c: bool,
        }
        let s = schema_of::<T>().unwrap();
        let types: Vec<String> =
            s.fields().iter().map(|f| format!("{} {} {}", f.name(), f.data_type(), f.is_nullable())).collect();
        assert_eq!(types, ["a Utf8 false", "b Int64 true", "c Boolean false"]);
    }
}

/// `#[serde(with = "crate::storage::rows::bytes")]` on a `Vec<u8>` field: written and read as a Binary column
/// (plain serde would make it a list of integers).
pub mod bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}
