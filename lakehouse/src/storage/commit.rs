//! The one way data reaches a Delta table: data files are written first (no commit references them yet), then
//! published by one commit ([`commit_write`], or [`merge_on_keys`] for an upsert). Every commit of a run carries
//! its [`catalog::RunCommit`] in the commit metadata and its run number as a Delta application transaction, so a
//! crash between writing and committing leaves only unreferenced files, and two writers racing for the same run
//! number cannot both publish.

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, MetadataExt, StructType};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

/// Data files are cut at about this size.
pub const TARGET_FILE_BYTES: u64 = 256 << 20;
/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 262_144;

/// Parquet settings of every data file we write: Snappy, column-chunk statistics only (what Delta's data
/// skipping reads; page-level ones would only cost time), and dictionary encoding only for the columns of
/// `sample` (the first rows written) whose dictionary would stay within its page limit over a row group; a column
/// written plain whose values Snappy does not shrink is written uncompressed.
///
/// The writer gives up a dictionary that outgrows its limit and writes the rest of the row group plain, but it
/// has hashed every value into it until then: for a column whose values are mostly distinct (an identifier, a
/// timestamp, a pseudonym) that was a sixth of an ingest's CPU time, for a file no smaller. Compressing values that
/// do not compress (a pseudonym's 64 hex digits: Snappy saves about 3 % of them) is time for nothing too.
pub fn parquet_properties(sample: &RecordBatch) -> parquet::file::properties::WriterProperties {
    let mut props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for (field, column) in sample.schema().fields().iter().zip(sample.columns()) {
        if dictionary_overflows(column.as_ref()) {
            let path = parquet::schema::types::ColumnPath::from(field.name().as_str());
            props = props.set_column_dictionary_enabled(path.clone(), false);
            if !compresses(column.as_ref()) {
                props = props.set_column_compression(path, parquet::basic::Compression::UNCOMPRESSED);
            }
        }
    }
    props.build()
}

/// Values of a column looked at to tell whether its dictionary would overflow.
const DICTIONARY_SAMPLE: usize = 32_768;

/// Whether the dictionary of a column of strings or of 32- and 64-bit numbers (dates, timestamps) would
/// outgrow the writer's page limit within a row group, projected from the first [`DICTIONARY_SAMPLE`] values:
/// the distinct values among the first half and among all of them tell how fast new values keep coming, and
/// their size what a row group's dictionary would weigh. Columns of other types keep their dictionary.
fn dictionary_overflows(column: &dyn arrow::array::Array) -> bool {
    use arrow::array::{AsArray, PrimitiveArray};
    use arrow::datatypes::{ArrowPrimitiveType, DataType as T, ToByteSlice};
    /// (distinct values among the first half, among all, bytes of the distinct values) of the sample, values
    /// told apart by a 64-bit hash of their bytes (xxh3): a collision among 32,768 values is too rare to move
    /// the estimate, and hashing each value once into a set of hashes keeps this sample a small part of writing
    /// a file (with the standard hasher over the values themselves it was an eighth of a 1M-row ingest's CPU
    /// time). A distinct value weighs its bytes and `overhead` in the dictionary.
    fn count<V>(
        values: impl Iterator<Item = Option<V>>,
        bytes_of: impl Fn(&V) -> &[u8],
        overhead: usize,
    ) -> (usize, usize, usize) {
        let mut seen = std::collections::HashSet::with_capacity_and_hasher(
            DICTIONARY_SAMPLE,
            std::hash::BuildHasherDefault::<crate::format::unique::PreHashed>::default(),
        );
        let (mut half, mut bytes) = (0, 0);
        for (i, v) in values.take(DICTIONARY_SAMPLE).enumerate() {
            if i == DICTIONARY_SAMPLE / 2 {
                half = seen.len();
            }
            if let Some(v) = v {
                let value = bytes_of(&v);
                if seen.insert(twox_hash::XxHash3_128::oneshot(value) as u64) {
                    bytes += value.len() + overhead;
                }
            }
        }
        (half.max(1), seen.len(), bytes)
    }
    fn primitive<P: ArrowPrimitiveType>(a: &PrimitiveArray<P>) -> (usize, usize, usize) {
        count(a.iter(), |v| v.to_byte_slice(), 0)
    }
    let (half, all, bytes) = match column.data_type() {
        // A byte array's dictionary entry is its bytes and a 4-byte length.
        T::Utf8 => count(column.as_string::<i32>().iter(), |v| v.as_bytes(), 4),
        T::LargeUtf8 => count(column.as_string::<i64>().iter(), |v| v.as_bytes(), 4),
        T::Int64 => primitive(column.as_primitive::<arrow::datatypes::Int64Type>()),
        T::Int32 => primitive(column.as_primitive::<arrow::datatypes::Int32Type>()),
        T::Float64 => primitive(column.as_primitive::<arrow::datatypes::Float64Type>()),
        T::Date32 => primitive(column.as_primitive::<arrow::datatypes::Date32Type>()),
        T::Timestamp(arrow::datatypes::TimeUnit::Microsecond, _) => {
            primitive(column.as_primitive::<arrow::datatypes::TimestampMicrosecondType>())
        }
        _ => return false,
    };
    // Doubling the rows multiplied the distinct values by `growth` (2 when every value is new, 1 when none
    // is): the same growth for each doubling up to a row group.
    let rows = column.len().min(DICTIONARY_SAMPLE);
    let growth = (all as f64 / half as f64).clamp(1.0, 2.0);
    let doublings = (ROW_GROUP_ROWS as f64 / rows.max(1) as f64).log2().max(0.0);
    let projected = bytes as f64 * growth.powf(doublings);
    projected > parquet::file::properties::DEFAULT_DICTIONARY_PAGE_SIZE_LIMIT as f64
}

/// Plain-encoded bytes of a column compressed to tell whether Snappy shrinks it: Snappy compresses blocks of
/// 64 KiB apart, so a few blocks tell as much as the whole.
const COMPRESSION_SAMPLE_BYTES: usize = 256 << 10;

/// Whether Snappy saves at least an eighth of the first [`COMPRESSION_SAMPLE_BYTES`] of a column of strings or of
/// fixed-width values, laid out as Parquet's plain encoding does (another column: true, it stays compressed).
fn compresses(column: &dyn arrow::array::Array) -> bool {
    use arrow::array::{AsArray, GenericStringArray, OffsetSizeTrait};
    use arrow::datatypes::DataType as T;
    /// A byte array is its 4-byte little-endian length, then its bytes.
    fn strings<O: OffsetSizeTrait>(column: &GenericStringArray<O>, plain: &mut Vec<u8>) {
        for v in column.iter().flatten() {
            plain.extend_from_slice(&(v.len() as u32).to_le_bytes());
            plain.extend_from_slice(v.as_bytes());
            if plain.len() >= COMPRESSION_SAMPLE_BYTES {
                break;
            }
        }
    }
    let mut plain = Vec::with_capacity(COMPRESSION_SAMPLE_BYTES + 64);
    match column.data_type() {
        T::Utf8 => strings(column.as_string::<i32>(), &mut plain),
        T::LargeUtf8 => strings(column.as_string::<i64>(), &mut plain),
        // A fixed-width value is its bytes.
        t => match t.primitive_width() {
            Some(width) => {
                let data = column.to_data();
                let values = data.len().min(COMPRESSION_SAMPLE_BYTES / width);
                let start = data.offset() * width;
                plain.extend_from_slice(&data.buffers()[0].as_slice()[start..start + values * width]);
            }
            None => return true,
        },
    }
    if plain.is_empty() {
        return true;
    }
    match snap::raw::Encoder::new().compress_vec(&plain) {
        Ok(compressed) => compressed.len() <= plain.len() - plain.len() / 8,
        Err(_) => true,
    }
}

/// A writer of data files for the table at `url` (created by the first commit when it does not exist yet),
/// with our file size and Parquet settings (chosen from the first batch written); its files are published by
/// [`commit_write`]. `storage_options` are the warehouse's ([`super::Warehouse::storage_options`]). Called
/// within the runtime: the batches are encoded by a task of its own.
pub fn file_writer(
    url: &Url,
    schema: SchemaRef,
    partition_by: &[String],
    storage_options: std::collections::HashMap<String, String>,
) -> Result<DataFiles, DeltaTableError> {
    let partitions = (!partition_by.is_empty()).then(|| partition_by.to_vec());
    let writer = RecordBatchWriter::try_new(url.as_str(), schema, partitions, Some(storage_options))?
        .with_target_file_size(TARGET_FILE_BYTES);
    let (batches, received) = tokio::sync::mpsc::channel(QUEUED_BATCHES);
    Ok(DataFiles { encoder: Some((batches, tokio::spawn(encode(writer, received)))) })
}

/// Batches handed to a [`DataFiles`] and not encoded yet, at most: past them, `write` waits.
const QUEUED_BATCHES: usize = 2;

/// New data files of one table, not referenced by any commit until [`commit_write`] publishes them.
///
/// The batches are encoded into Parquet by a task of their own, so that the caller goes on meanwhile (parsing
/// the next records, running the query), and the files of several tables or input files are encoded on as many
/// threads as the runtime has: the writers of two input files, polled in one task, had encoded on one thread.
pub struct DataFiles {
    /// The queue to the encoder task, and the task; None once flushed, or once the encoder has failed.
    encoder: Option<(tokio::sync::mpsc::Sender<RecordBatch>, Encoder)>,
}

/// The task of [`encode`].
type Encoder = tokio::task::JoinHandle<Result<Vec<Add>, DeltaTableError>>;

/// Encodes the batches received into data files, with the Parquet settings chosen from the first; once they
/// end, closes the open file and returns the files written. Stops at the first error.
async fn encode(
    mut writer: RecordBatchWriter,
    mut batches: tokio::sync::mpsc::Receiver<RecordBatch>,
) -> Result<Vec<Add>, DeltaTableError> {
    let mut configured = false;
    while let Some(batch) = batches.recv().await {
        if !configured {
            writer = writer.with_writer_properties(parquet_properties(&batch));
            configured = true;
        }
        writer.write(batch).await?;
    }
    writer.flush().await
}

impl DataFiles {
    /// Hands `batch` to the encoder, which writes it into the open data file and starts a new one past
    /// [`TARGET_FILE_BYTES`]. An error is the encoder's, on this batch or an earlier one.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), DeltaTableError> {
        let Some((batches, _)) = &self.encoder else {
            return Err(DeltaTableError::Generic("data files written after their writer was closed".into()));
        };
        if batches.send(batch).await.is_ok() {
            return Ok(());
        }
        // The encoder stopped at an error: its outcome says which.
        match self.flush().await {
            Err(e) => Err(e),
            Ok(_) => Err(DeltaTableError::Generic("the Parquet encoder stopped".into())),
        }
    }

    /// Closes the open data file once every batch handed over is encoded; the files written, to publish. None
    /// after a write that failed: the files completed before it are referenced by no commit (VACUUM removes
    /// them). A panic of the encoder is resumed here, as if it had happened in the caller.
    pub async fn flush(&mut self) -> Result<Vec<Add>, DeltaTableError> {
        let Some((batches, encoder)) = self.encoder.take() else { return Ok(Vec::new()) };
        // Closing the queue ends the encoder's batches.
        drop(batches);
        match encoder.await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(DeltaTableError::Generic(format!("the Parquet encoder was canceled: {e}"))),
        }
    }
}

/// Dropped unflushed (the run failed or was canceled): nothing more is encoded or written.
impl Drop for DataFiles {
    fn drop(&mut self) {
        if let Some((_, encoder)) = &self.encoder {
            encoder.abort();
        }
    }
}

/// What a write commit does to the table's data files.
pub enum Write {
    /// Adds files to the table (none: a commit that only records a run, its metadata and application
    /// transaction).
    Append(Vec<Add>),
    /// Replaces every current file by these; with the new schema when the table's changes (the table keeps its
    /// other metadata: description, partitioning, properties).
    Overwrite { adds: Vec<Add>, schema: Option<SchemaRef> },
}

/// Publishes a write in one commit on the table's loaded version; returns the version committed. A concurrent
/// writer's commit is a conflict ([`is_conflict`]), never retried into a different result.
pub async fn commit_write(table: &DeltaTable, write: Write, props: CommitProperties) -> Result<u64, DeltaTableError> {
    let snapshot = table.snapshot()?;
    let partition_by = snapshot.metadata().partition_columns().to_vec();
    let mut actions: Vec<Action> = Vec::new();
    let mode = match write {
        Write::Append(adds) => {
            actions.extend(adds.into_iter().map(Action::Add));
            SaveMode::Append
        }
        Write::Overwrite { adds, schema } => {
            actions.extend(snapshot.log_data().iter().map(|f| Action::Remove(f.remove_action(true))));
            if let Some(schema) = schema {
                let delta_schema: StructType = schema.as_ref().try_into_kernel()?;
                actions.push(Action::Metadata(snapshot.metadata().clone().with_schema(&delta_schema)?));
            }
            actions.extend(adds.into_iter().map(Action::Add));
            SaveMode::Overwrite
        }
    };
    let op = DeltaOperation::Write {
        mode,
        partition_by: (!partition_by.is_empty()).then_some(partition_by),
        predicate: None,
    };
    Ok(CommitBuilder::from(props).with_actions(actions).build(Some(snapshot), table.log_store(), op).await?.version())
}

/// Writes `batch` into new files of the table and appends them in one commit; returns the version.
pub async fn append_batch(
    table: &DeltaTable,
    batch: RecordBatch,
    props: CommitProperties,
) -> Result<u64, DeltaTableError> {
    let mut writer = RecordBatchWriter::for_table(table)?
        .with_target_file_size(TARGET_FILE_BYTES)
        .with_writer_properties(parquet_properties(&batch));
    writer.write(batch).await?;
    let adds = writer.flush().await?;
    commit_write(table, Write::Append(adds), props).await
}

/// Merges `source` into `table` on the `keys` columns: rows with a matching key replace the table's row (every
/// column), the others are inserted; one commit with `props`. A merge that changes nothing makes no commit, so
/// an empty commit then records the run (its metadata and application transaction) anyway. Returns the version.
pub async fn merge_on_keys(
    table: &DeltaTable,
    source: datafusion::prelude::DataFrame,
    keys: &[String],
    props: CommitProperties,
) -> Result<u64, DeltaTableError> {
    let q = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
    let before = table.version().unwrap_or(0);
    let predicate = keys.iter().map(|k| format!("t.{c} = s.{c}", c = q(k))).collect::<Vec<_>>().join(" AND ");
    let columns: Vec<String> = table.snapshot()?.schema().fields().map(|f| q(f.name())).collect();
    let (merged, _metrics) = table
        .clone()
        .merge(source, predicate)
        .with_source_alias("s")
        .with_target_alias("t")
        .with_commit_properties(props.clone())
        .when_matched_update(|u| columns.iter().fold(u, |u, c| u.update(c.clone(), format!("s.{c}"))))?
        .when_not_matched_insert(|i| columns.iter().fold(i, |i, c| i.set(c.clone(), format!("s.{c}"))))?
        .await?;
    match merged.version() {
        Some(v) if v > before => Ok(v),
        _ => commit_write(table, Write::Append(Vec::new()), props).await,
    }
}

/// A commit that lost a race with another writer of the same table (the same run number, or files the other
/// commit removed).
pub fn is_conflict(e: &DeltaTableError) -> bool {
    matches!(e, DeltaTableError::Transaction { source: TransactionError::CommitConflict(_) })
        || matches!(e, DeltaTableError::VersionAlreadyExists(_))
}

/// The run metadata ([`catalog::RunCommit`]) of the commit that wrote `version` of the table, read from that
/// commit's log entry; `None` for commits not made by a run (the table's creation).
pub async fn run_at(table: &DeltaTable, version: u64) -> Option<catalog::RunCommit> {
    let bytes = table.log_store().read_commit_entry(version).await.ok()??;
    for line in bytes.split(|b| *b == b'\n') {
        let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        if let Some(run) = action.get("commitInfo").and_then(|c| c.get(catalog::RUN_COMMIT_KEY)) {
            return serde_json::from_value(run.clone()).ok();
        }
    }
    None
}

/// The run of the commit that made the table's loaded version.
pub async fn run_of(table: &DeltaTable) -> Option<catalog::RunCommit> {
    run_at(table, table.version()?).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use parquet::schema::types::ColumnPath;

    use super::*;

    #[test]
    fn dictionary_encoding_only_for_the_columns_whose_dictionary_stays_small() {
        let n = 65_536;
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("id", Arc::new((0..n).map(|i| Some(format!("INC-{i:08}"))).collect::<StringArray>())),
            ("kind", Arc::new((0..n).map(|i| Some(["vol", "rixe", "tapage"][i % 3])).collect::<StringArray>())),
            // A few distinct values among many nulls.
            ("note", Arc::new((0..n).map(|i| (i % 100 == 0).then_some("x")).collect::<StringArray>())),
            ("record", Arc::new((0..n as i64).map(Some).collect::<Int64Array>())),
            ("severity", Arc::new((0..n as i64).map(|i| Some(i % 5)).collect::<Int64Array>())),
            // Positions to 5 decimals in a city: mostly distinct among the first rows, but 25,000 values in
            // all, which a dictionary holds (200 kB).
            (
                "lat",
                Arc::new((0..n).map(|i| Some(43.15 + ((i * 7919) % 25_000) as f64 * 1e-5)).collect::<Float64Array>()),
            ),
            ("empty", Arc::new(StringArray::from(vec![None::<&str>; n]))),
        ];
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let props = parquet_properties(&batch);
        let dictionary = |c: &str| props.dictionary_enabled(&ColumnPath::from(c));
        assert!(!dictionary("id") && !dictionary("record"));
        assert!(dictionary("kind") && dictionary("note") && dictionary("severity") && dictionary("lat"));
        assert!(dictionary("empty"));
    }

    #[test]
    fn columns_written_plain_are_compressed_only_when_snappy_shrinks_them() {
        use sha2::Digest;
        let n = 65_536;
        let digest = |i: usize| sha2::Sha256::digest(i.to_le_bytes());
        let columns: Vec<(&str, ArrayRef)> = vec![
            // Pseudonyms: 64 hex digits of a hash.
            ("token", Arc::new((0..n).map(|i| Some(hex::encode(digest(i)))).collect::<StringArray>())),
            ("id", Arc::new((0..n).map(|i| Some(format!("INC-{i:08}"))).collect::<StringArray>())),
            ("record", Arc::new((0..n as i64).map(Some).collect::<Int64Array>())),
            (
                "random",
                Arc::new(
                    (0..n)
                        .map(|i| Some(i64::from_le_bytes(digest(i)[..8].try_into().unwrap())))
                        .collect::<Int64Array>(),
                ),
            ),
            ("kind", Arc::new((0..n).map(|i| Some(["vol", "rixe", "tapage"][i % 3])).collect::<StringArray>())),
        ];
        // A slice, as a batch can be: the sample starts at its offset.
        let batch = RecordBatch::try_from_iter(columns).unwrap().slice(1_000, 40_000);
        let props = parquet_properties(&batch);
        let compression = |c: &str| props.compression(&ColumnPath::from(c));
        use parquet::basic::Compression::{SNAPPY, UNCOMPRESSED};
        assert_eq!(compression("token"), UNCOMPRESSED);
        assert_eq!(compression("random"), UNCOMPRESSED);
        assert_eq!(compression("id"), SNAPPY);
        assert_eq!(compression("record"), SNAPPY);
        assert_eq!(compression("kind"), SNAPPY);
    }
}
