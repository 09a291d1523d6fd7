//! Decoding partner files into Arrow record batches with the declared schema, keeping bad records.
//!
//! Every format reader turns a file into records and hands each one to a [`RowBuilder`], which parses every
//! field into its declared type, checks `required` / `values` / `range`, replaces `pii: direct` values by their
//! keyed pseudonym, and either appends the row or returns a [`RowError`]. The reader then emits a [`BadRecord`]
//! with the file, line or record number, the raw bytes and the reason. So for every file:
//! records read = rows written + records quarantined.
//!
//! Readers stream: memory is bounded by the batch size, whatever the file size (except `json`, which reads one
//! document whole).

pub mod csv;
pub mod geojson;
pub mod json;
pub mod limits;
pub mod parquet;
pub mod unique;
pub mod value;
pub mod xlsx;

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::manifest::{
    Column, ColumnType, Compression, Encoding, Format, Normalize, OnBadRecord, OnNewField, PhoneCountry, Pii,
    ProjectFile, SourceManifest,
};
use crate::privacy::{KeyError, KeyRing, PseudonymColumn, Pseudonymizer};
use crate::storage::timestamp_type;

/// Rows per record batch handed to the writer.
pub const BATCH_ROWS: usize = 65_536;

/// How one declared column is produced.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    pub name: String,
    /// The field names (or dotted JSON paths) the column accepts in the input, in the order declared.
    pub input: Vec<String>,
    pub ty: ColumnType,
    pub required: bool,
    pub values: Option<AllowedValues>,
    pub range: Option<[f64; 2]>,
    pub time: Option<value::TimeParser>,
    pub precision: u8,
    pub scale: i8,
    /// Domain of a direct identifier to pseudonymize.
    pub pseudonymize: Option<(String, Normalize)>,
    /// JSON: a value of another JSON type is read through its text instead of being a type error.
    pub coerce: bool,
    /// `list`: how each item is read.
    pub items: Option<Box<ColumnPlan>>,
    /// `struct`: how each field is read.
    pub fields: Vec<ColumnPlan>,
}

/// The typed shape of a source's bronze table and how to fill it.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub columns: Vec<ColumnPlan>,
    pub decimal_comma: bool,
    /// Arrow schema of bronze rows: declared columns (+ `<col>_key_id` after each pseudonymized one), then metadata.
    pub schema: SchemaRef,
    /// How national phone numbers are read (`normalize: phone`).
    pub phone_country: Option<PhoneCountry>,
    /// The uniqueness constraints (`unique:`), by column position.
    pub unique: Vec<unique::UniqueConstraint>,
    /// Records are located by line (csv, ndjson) rather than by number (json, parquet).
    pub lines: bool,
    /// The child tables of `explode`.
    pub children: Vec<ChildPlan>,
}

impl TablePlan {
    pub fn new(m: &SourceManifest, project: &ProjectFile) -> Self {
        let json = matches!(m.format(), Format::Json { .. } | Format::Ndjson { .. } | Format::Geojson { .. });
        let plan_of = |(name, col): (&crate::manifest::ColumnName, &Column)| column_plan(name, col, project, json);
        let columns: Vec<ColumnPlan> = m.columns.iter().map(plan_of).collect();
        let position = |name: &str| m.columns.get_index_of(name).unwrap_or_default();
        let unique = m
            .unique_constraints()
            .into_iter()
            .map(|names| unique::UniqueConstraint {
                columns: names.iter().map(|n| position(n)).collect(),
                names: names.into_iter().map(String::from).collect(),
            })
            .collect();
        let keys: Vec<usize> = m.key_columns().iter().map(|k| position(k)).collect();
        let children = m
            .children()
            .map(|(child, e)| {
                // The record's key columns, the element's position, then the element's fields.
                let mut cols: Vec<ColumnPlan> = keys.iter().map(|&k| columns[k].clone()).collect();
                cols.push(ColumnPlan::index());
                cols.extend(e.columns.iter().map(plan_of));
                ChildPlan {
                    name: child.to_string(),
                    path: e.from.clone().unwrap_or_else(|| child.to_string()),
                    keys: keys.clone(),
                    plan: Self::of_columns(cols, false, project.privacy.phone_country, true, Vec::new()),
                }
            })
            .collect();
        let lines = matches!(m.format(), Format::Csv { .. } | Format::Ndjson { .. } | Format::Xlsx { .. });
        let decimal_comma = matches!(m.format(), Format::Csv { decimal: ',', .. });
        Self { children, ..Self::of_columns(columns, decimal_comma, project.privacy.phone_country, lines, unique) }
    }

    /// The plan of a table of these columns (without children).
    fn of_columns(
        columns: Vec<ColumnPlan>,
        decimal_comma: bool,
        phone_country: Option<PhoneCountry>,
        lines: bool,
        unique: Vec<unique::UniqueConstraint>,
    ) -> Self {
        let mut fields = Vec::new();
        for c in &columns {
            fields.push(Field::new(c.name.as_str(), c.data_type(), c.name != INDEX_COLUMN));
            if c.pseudonymize.is_some() {
                fields.push(Field::new(format!("{}_key_id", c.name), DataType::Utf8, true));
            }
        }
        fields.push(Field::new("_ingested_at", timestamp_type(), false));
        fields.push(Field::new("_run_id", DataType::Utf8, false));
        fields.push(Field::new("_source_file", DataType::Utf8, false));
        // Nullable: tables written before positions were recorded gain the column with nulls.
        fields.push(Field::new("_record", DataType::Int64, true));
        Self {
            columns,
            decimal_comma,
            schema: Arc::new(Schema::new(fields)),
            phone_country,
            unique,
            lines,
            children: Vec::new(),
        }
    }

    /// An empty index of the plan's uniqueness constraints, when it has any.
    pub fn unique_index(&self) -> Option<unique::UniqueIndex> {
        (!self.unique.is_empty()).then(|| unique::UniqueIndex::new(self.unique.clone(), self.lines))
    }

    /// The key domains of the table's pseudonymized columns (not its children's).
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().filter_map(|c| c.pseudonymize.as_ref().map(|(d, _)| d.as_str()))
    }
}

/// The column of a child table holding the element's position in its array (from 0).
pub const INDEX_COLUMN: &str = "_index";

/// A child table of `explode`: the array at `path` of each record, one row per element.
#[derive(Debug, Clone)]
pub struct ChildPlan {
    /// The table is `bronze.<source>__<name>`.
    pub name: String,
    /// Key or dotted path of the array in the record.
    pub path: String,
    /// Positions of the record's key columns, which lead the child's columns.
    pub keys: Vec<usize>,
    /// The child table: key columns, [`INDEX_COLUMN`], the element's columns.
    pub plan: TablePlan,
}

/// How a declared column is read: `json` sources want a timestamp's offset unless the column says how to read
/// local times.
fn column_plan(name: &crate::manifest::ColumnName, col: &Column, project: &ProjectFile, json: bool) -> ColumnPlan {
    let tz = col.timezone.map_or(project.timezone.0, |t| t.0);
    ColumnPlan {
        name: name.to_string(),
        input: SourceManifest::input_names(name, col),
        ty: col.ty,
        required: col.required || col.key,
        values: col.values.as_ref().map(|v| AllowedValues::new(v)),
        range: col.range,
        // A JSON feed writes instants: a local time is refused unless the column says how to read it.
        time: matches!(col.ty, ColumnType::Date | ColumnType::Timestamp).then(|| {
            value::TimeParser::new(col.format.as_deref(), tz)
                .offset_required(json && col.timezone.is_none() && col.format.is_none() && !col.coerce)
        }),
        precision: col.precision.unwrap_or(38),
        scale: col.scale.unwrap_or(0),
        pseudonymize: (col.pii == Pii::Direct && col.keep_clear.is_none())
            .then(|| col.domain.as_ref().map(|d| (d.to_string(), col.normalize)))
            .flatten(),
        coerce: col.coerce,
        // A list's items are read like a column of their type, with the list's options.
        items: (col.ty == ColumnType::List).then(|| {
            let item = Column { ty: col.items.unwrap_or(ColumnType::String), ..col.clone() };
            Box::new(ColumnPlan { required: false, ..column_plan(name, &item, project, json) })
        }),
        fields: col.fields.iter().flatten().map(|(n, f)| column_plan(n, f, project, json)).collect(),
    }
}

impl ColumnPlan {
    /// The element's position in a child table.
    fn index() -> Self {
        Self {
            name: INDEX_COLUMN.to_string(),
            input: Vec::new(),
            ty: ColumnType::Int,
            required: true,
            values: None,
            range: None,
            time: None,
            precision: 38,
            scale: 0,
            pseudonymize: None,
            coerce: false,
            items: None,
            fields: Vec::new(),
        }
    }

    /// The Arrow type of the column's values.
    pub fn data_type(&self) -> DataType {
        match self.ty {
            ColumnType::String | ColumnType::Json => DataType::Utf8,
            ColumnType::Int => DataType::Int64,
            ColumnType::Double => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => timestamp_type(),
            ColumnType::Decimal => DataType::Decimal128(self.precision, self.scale),
            ColumnType::List => DataType::List(Arc::new(self.item_field())),
            ColumnType::Struct => DataType::Struct(self.fields.iter().map(ColumnPlan::field).collect()),
        }
    }

    fn field(&self) -> Field {
        Field::new(self.name.as_str(), self.data_type(), true)
    }

    fn item_field(&self) -> Field {
        let dt = self.items.as_ref().map_or(DataType::Utf8, |i| i.data_type());
        Field::new("item", dt, true)
    }
}

/// How a file's field names (CSV header, Parquet columns) feed the declared columns.
pub struct FieldMatch {
    /// For each declared column, the position of its field in the file.
    pub positions: Vec<usize>,
    /// Declared columns none of whose names the file holds (`` `a` `` or `` `a` or `b` ``).
    pub missing: Vec<String>,
    /// Names of declared columns the file holds.
    pub found: Vec<String>,
    /// The file's names that no column accepts.
    pub extra: Vec<String>,
}

impl RowEmitter<'_, '_> {
    /// Matches a file's field names (`holder`: where they are, for messages) against each column's accepted
    /// names. A file holding a column under two accepted names is malformed; a column found under another name
    /// than its first is recorded ([`FileCounts::read_as`]). Columns found under none are in `missing`.
    pub fn match_fields(&mut self, names: &[String], holder: &str) -> Result<FieldMatch, ReadError> {
        let mut m = FieldMatch { positions: Vec::new(), missing: Vec::new(), found: Vec::new(), extra: Vec::new() };
        let mut twice = Vec::new();
        let mut read_as = Vec::new();
        for col in &self.ctx.plan.columns {
            let accepted = &col.input;
            let held: Vec<(usize, &String)> =
                accepted.iter().filter_map(|a| names.iter().position(|n| n == a).map(|p| (p, a))).collect();
            let quoted = |v: &[&String]| v.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>();
            match held.as_slice() {
                [] => m.missing.push(quoted(&accepted.iter().collect::<Vec<_>>()).join(" or ")),
                [(p, name)] => {
                    if *name != &accepted[0] {
                        read_as.push((col.name.clone(), (*name).clone()));
                    }
                    m.positions.push(*p);
                    m.found.push(format!("`{name}`"));
                }
                more => {
                    let names: Vec<&String> = more.iter().map(|(_, n)| *n).collect();
                    twice.push(format!("{} (column `{}`)", quoted(&names).join(" and "), col.name));
                }
            }
        }
        if !twice.is_empty() {
            return Err(ReadError::Malformed(format!(
                "{holder} holds more than one accepted name of a column: {}; keep one",
                twice.join(", ")
            )));
        }
        for (column, name) in read_as {
            self.note_read_as(&column, &name);
        }
        let accepted = |n: &String| self.ctx.plan.columns.iter().any(|c| c.input.contains(n));
        m.extra = names.iter().filter(|n| !n.is_empty() && !accepted(n)).cloned().collect();
        Ok(m)
    }

    /// Applies `on_new_field` to the fields of the file no column declares.
    pub fn note_new_fields(&mut self, names: &[String]) -> Result<(), ReadError> {
        for name in names {
            self.note_new_field(name)?;
        }
        Ok(())
    }

    /// Applies `on_new_field` to each key of a JSON object that no column declares, `prefix` being the object's
    /// path (`properties.` for a GeoJSON feature's properties).
    pub fn note_new_keys(
        &mut self,
        obj: &serde_json::Map<String, serde_json::Value>,
        prefix: &str,
    ) -> Result<(), ReadError> {
        if self.ctx.on_new_field == OnNewField::Ignore {
            return Ok(());
        }
        for key in obj.keys() {
            let declared = if prefix.is_empty() {
                self.known.contains(key.as_str())
            } else {
                self.known.contains(format!("{prefix}{key}").as_str())
            };
            if !declared {
                self.note_new_field(&format!("{prefix}{key}"))?;
            }
        }
        Ok(())
    }

    fn note_new_field(&mut self, name: &str) -> Result<(), ReadError> {
        match self.ctx.on_new_field {
            OnNewField::Ignore => Ok(()),
            OnNewField::Fail => Err(ReadError::Malformed(format!(
                "the field `{name}` is not declared (on_new_field: fail): declare it in `columns`, or set \
                 `on_new_field: warn` to read the file without it"
            ))),
            OnNewField::Warn => {
                if !self.counts.new_fields.iter().any(|n| n == name) && self.counts.new_fields.len() < MAX_NEW_FIELDS {
                    tracing::warn!(file = %self.ctx.source_file, field = name, "a field no column declares: not read");
                    self.counts.new_fields.push(name.to_string());
                }
                Ok(())
            }
        }
    }

    /// Notes that the file holds `column` under another accepted name than its first (once per file).
    pub fn note_read_as(&mut self, column: &str, name: &str) {
        // Called per record by JSON readers: no allocation when already noted.
        let noted = |e: &String| {
            e.strip_prefix(column).and_then(|rest| rest.strip_prefix(" ← ")).is_some_and(|rest| rest == name)
        };
        if !self.counts.read_as.iter().any(noted) {
            tracing::info!(file = %self.ctx.source_file, column, field = name, "column read from an alternative name");
            self.counts.read_as.push(format!("{column} ← {name}"));
        }
    }
}

/// The allowed values of a column: a linear scan for short lists (faster than hashing), a set otherwise.
#[derive(Debug, Clone)]
pub enum AllowedValues {
    Few(Vec<String>),
    Many(HashSet<String>),
}

impl AllowedValues {
    fn new(values: &[String]) -> Self {
        if values.len() <= 16 { Self::Few(values.to_vec()) } else { Self::Many(values.iter().cloned().collect()) }
    }
    pub fn contains(&self, v: &str) -> bool {
        match self {
            Self::Few(list) => list.iter().any(|x| x == v),
            Self::Many(set) => set.contains(v),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Self::Few(list) => list.len(),
            Self::Many(set) => set.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a record was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The declared column at fault, if one is.
    pub column: Option<String>,
    /// What is wrong; never contains the value.
    pub reason: String,
}

impl RowError {
    pub fn record(reason: impl Into<String>) -> Self {
        Self { column: None, reason: reason.into() }
    }
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "column `{c}`: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// A record that did not make it into bronze.
#[derive(Debug, Clone)]
pub struct BadRecord {
    /// 1-based line where the record starts, for line-oriented formats.
    pub line: Option<u64>,
    /// 1-based ordinal of the record in its file.
    pub record: u64,
    pub error: RowError,
    /// The record's original bytes (re-serialized with the same dialect for CSV, JSON text for JSON/Parquet).
    pub raw: Vec<u8>,
    /// The pseudonyms of the record's direct identifiers that could be read (space-separated), so that an
    /// erasure finds the record without a clear index; `None` when the record could not be split into fields.
    pub subjects: Option<String>,
}

/// Where a reader sends its output. Returning `Err` stops the reader (the error is passed back up).
pub trait RecordSink {
    fn batch(&mut self, batch: RecordBatch) -> Result<(), ReadError>;
    /// Rows of child table `child` (`explode`), in the order of [`TablePlan::children`].
    fn child(&mut self, child: usize, batch: RecordBatch) -> Result<(), ReadError>;
    fn bad(&mut self, bad: BadRecord) -> Result<(), ReadError>;
}

/// A problem with a whole file (it is not taken) or a stop requested by the sink.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    /// The file passes one of the project's `limits` (decompressed size or ratio).
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Malformed(String),
    #[error("bad record at {location}: {error} (on_bad_record: fail)")]
    BadRecordFail { location: String, error: RowError },
    #[error("the run was stopped")]
    Stopped,
}

/// Counts of one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileCounts {
    pub read: u64,
    pub written: u64,
    pub quarantined: u64,
    /// Columns read under another accepted name than their first (`accident_id ← Accident_Id`).
    pub read_as: Vec<String>,
    /// Fields no column declares (`on_new_field: warn`), at most [`MAX_NEW_FIELDS`].
    pub new_fields: Vec<String>,
}

/// New fields named per file, at most.
pub const MAX_NEW_FIELDS: usize = 100;

/// The context a reader needs: plan, keys, metadata values, bad-record policy.
pub struct ReadContext {
    pub plan: Arc<TablePlan>,
    pub keys: Arc<KeyRing>,
    pub run_id: String,
    pub ingested_at_micros: i64,
    pub source_file: String,
    pub on_bad_record: OnBadRecord,
    pub on_new_field: OnNewField,
    pub limits: crate::manifest::ReadLimits,
    /// The keys seen so far by the run, when the source declares `unique` (files are then read one at a time).
    pub unique: Option<Arc<Mutex<unique::UniqueIndex>>>,
}

/// Reads one file of the given format into the sink: its counts, and its content hash
/// ([`crate::connector::content_hash`]) taken as it is read. A file over one of the project's `limits` is
/// [`ReadError::Limit`] (not taken); a record over one is quarantined.
pub fn read_file(
    format: &Format,
    file_name: &str,
    input: std::fs::File,
    ctx: &ReadContext,
    sink: &mut dyn RecordSink,
) -> Result<(FileCounts, String), ReadError> {
    let mut rows = RowEmitter::new(ctx, sink)?;
    let limits = ctx.limits;
    let mut hash = crate::connector::ContentHash::new(input)?;
    let result = match format {
        Format::Csv { delimiter, quote, header, encoding, null_values, compression, .. } => {
            let input = decompress(hash.reader()?, *compression, file_name, limits);
            let dialect = csv::Dialect {
                delimiter: *delimiter as u8,
                quote: *quote as u8,
                header: *header,
                encoding: *encoding,
                nulls: null_values.clone(),
            };
            csv::read(input, &dialect, limits, &mut rows)
        }
        Format::Ndjson { compression } => {
            json::read_ndjson(decompress(hash.reader()?, *compression, file_name, limits), limits, &mut rows)
        }
        Format::Json { records, compression } => {
            json::read_document(decompress(hash.reader()?, *compression, file_name, limits), records, &mut rows)
        }
        Format::Geojson { compression } => {
            geojson::read(decompress(hash.reader()?, *compression, file_name, limits), &mut rows)
        }
        Format::Parquet => parquet::read(hash.file()?, &mut rows),
        Format::Xlsx { sheet, header_row } => xlsx::read(hash.file()?, sheet.as_ref(), *header_row, limits, &mut rows),
    };
    match result {
        Err(ReadError::Io(e)) => match limits::LimitExceeded::find(&e) {
            Some(message) => Err(ReadError::Limit(message)),
            None => Err(ReadError::Io(e)),
        },
        Err(e) => Err(e),
        Ok(()) => {
            let counts = rows.finish()?;
            Ok((counts, hash.finish()?))
        }
    }
}

fn decompress(
    input: Box<dyn Read + Send>,
    compression: Compression,
    name: &str,
    limits: crate::manifest::ReadLimits,
) -> Box<dyn Read + Send> {
    let gz = match compression {
        Compression::Gzip => true,
        Compression::None => false,
        Compression::Auto => name.ends_with(".gz") || name.ends_with(".gzip"),
    };
    if gz { Box::new(limits::Decompressed::new(input, limits, flate2::bufread::MultiGzDecoder::new)) } else { input }
}

/// Decodes field bytes in the declared encoding.
pub fn decode(bytes: &[u8], encoding: Encoding) -> Result<Cow<'_, str>, RowError> {
    match encoding {
        Encoding::Utf8 => std::str::from_utf8(bytes).map(Cow::Borrowed).map_err(|e| {
            RowError::record(format!(
                "invalid UTF-8 at byte {} of a field; if the partner exports another encoding, set `format.encoding`",
                e.valid_up_to()
            ))
        }),
        Encoding::Windows1252 => Ok(encoding_rs::WINDOWS_1252.decode_without_bom_handling(bytes).0),
        Encoding::Iso88591 => Ok(if bytes.is_ascii() {
            Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default())
        } else {
            Cow::Owned(bytes.iter().map(|&b| b as char).collect())
        }),
    }
}

/// The arrays of one record that feed child tables (`explode`), by child.
pub trait Elements<'a> {
    /// How many elements the array of child `child` holds.
    fn len(&self, child: usize) -> usize;
    /// The text of column `col` (one of the element's) of element `element`.
    fn field(&self, child: usize, element: usize, col: &ColumnPlan) -> Result<Option<Cow<'a, str>>, RowError>;
}

/// A record without arrays.
struct NoElements;

impl<'a> Elements<'a> for NoElements {
    fn len(&self, _: usize) -> usize {
        0
    }
    fn field(&self, _: usize, _: usize, _: &ColumnPlan) -> Result<Option<Cow<'a, str>>, RowError> {
        Ok(None)
    }
}

/// Records offered a batch at a time ([`RowEmitter::rows`]), their values read column by column.
pub trait Records<'a> {
    /// How many records the batch holds.
    fn count(&self) -> usize;
    /// Why record `r` is quarantined whatever its values (its shape, a limit), if it is.
    fn fault(&self, r: usize) -> Option<RowError>;
    /// The text of declared column `column` of record `r` (None for null/absent); only asked of records
    /// without a fault.
    fn field(&self, r: usize, column: usize) -> Result<Option<Cow<'a, str>>, RowError>;
    /// [`Self::field`] when it is the input's text as it stands (no decoding, no null marker to compare: an
    /// empty text is null); `None` when `field` must be asked.
    fn text(&self, _r: usize, _column: usize) -> Option<&'a str> {
        None
    }
    /// The line where record `r` starts, for line-oriented formats.
    fn line(&self, r: usize) -> Option<u64>;
    /// The original bytes of record `r`, for the quarantine.
    fn raw(&self, r: usize) -> Vec<u8>;
}

/// The fields of element `e` of a child table: the record's key columns, the position, the element's own.
fn child_fields<'a, 'f>(
    child: &'f ChildPlan,
    e: usize,
    c: usize,
    record: &'f mut impl FnMut(usize) -> Result<Option<Cow<'a, str>>, RowError>,
    elements: &'f dyn Elements<'a>,
) -> impl FnMut(usize) -> Result<Option<Cow<'a, str>>, RowError> + 'f {
    let keys = child.keys.len();
    move |i| match i.cmp(&keys) {
        std::cmp::Ordering::Less => record(child.keys[i]),
        std::cmp::Ordering::Equal => Ok(Some(Cow::Owned(e.to_string()))),
        std::cmp::Ordering::Greater => elements.field(c, e, &child.plan.columns[i]),
    }
}

/// Builds batches row by row, and sends full batches and bad records to the sink.
pub struct RowEmitter<'s, 'c> {
    ctx: &'c ReadContext,
    sink: &'s mut dyn RecordSink,
    builder: RowBuilder,
    /// The rows of the child tables (`explode`).
    children: Vec<RowBuilder>,
    /// Held for the whole file: files of a source with `unique` are read one at a time.
    unique: Option<MutexGuard<'c, unique::UniqueIndex>>,
    /// Rows of `builder` found bad after they were built ([`Self::rows`]), left out when it is sent.
    dropped: Vec<usize>,
    counts: FileCounts,
    progress: Progress,
    /// The JSON paths the columns and `explode` read, and each of their prefixes (`location` of
    /// `location.lat`): a record's key among them is declared.
    known: HashSet<String>,
    /// The pseudonymized columns (by index) and their pseudonymizers: a quarantined record keeps the pseudonyms
    /// of its identifiers ([`BadRecord::subjects`]).
    subject_columns: Vec<(usize, Pseudonymizer)>,
}

impl<'s, 'c> RowEmitter<'s, 'c> {
    fn new(ctx: &'c ReadContext, sink: &'s mut dyn RecordSink) -> Result<Self, ReadError> {
        let malformed = |e: KeyError| ReadError::Malformed(e.to_string());
        let builder = RowBuilder::new(&ctx.plan, &ctx.keys).map_err(malformed)?;
        let children = ctx
            .plan
            .children
            .iter()
            .map(|c| RowBuilder::new(&c.plan, &ctx.keys))
            .collect::<Result<Vec<_>, _>>()
            .map_err(malformed)?;
        let unique = ctx.unique.as_ref().map(|u| {
            // A reader that panicked leaves the lock poisoned; its file's keys were forgotten (`end_file`).
            let mut index = u.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            index.begin_file(&ctx.source_file);
            index
        });
        let mut subject_columns = Vec::new();
        for (i, c) in ctx.plan.columns.iter().enumerate() {
            if let Some((domain, normalize)) = &c.pseudonymize {
                let key = ctx.keys.get(domain).map_err(malformed)?;
                subject_columns.push((i, Pseudonymizer::new(key, *normalize, ctx.plan.phone_country)));
            }
        }
        Ok(Self {
            ctx,
            sink,
            builder,
            children,
            unique,
            subject_columns,
            dropped: Vec::new(),
            counts: FileCounts::default(),
            progress: Progress::new(&ctx.source_file),
            known: known_paths(&ctx.plan),
        })
    }

    /// The plan of the table (borrowed from the read, not from the emitter: readers use it while offering rows).
    pub fn plan(&self) -> &'c TablePlan {
        &self.ctx.plan
    }

    /// Offers one record: `field(i)` gives the text of declared column `i` (None for null/absent).
    pub fn row<'a>(
        &mut self,
        fields: impl FnMut(usize) -> Result<Option<Cow<'a, str>>, RowError>,
        line: Option<u64>,
        raw: impl FnOnce() -> Vec<u8>,
    ) -> Result<(), ReadError> {
        self.row_nested(fields, &NoElements, line, raw)
    }

    /// Offers one record with the arrays of its child tables (`explode`). The record lands whole — its row and
    /// one row per element of each array — or is quarantined whole, with the first fault (an element's:
    /// `contacts[2].value: …`).
    pub fn row_nested<'a>(
        &mut self,
        mut fields: impl FnMut(usize) -> Result<Option<Cow<'a, str>>, RowError>,
        elements: &dyn Elements<'a>,
        line: Option<u64>,
        raw: impl FnOnce() -> Vec<u8>,
    ) -> Result<(), ReadError> {
        self.counts.read += 1;
        let at = line.unwrap_or(self.counts.read);
        let ctx: &'c ReadContext = self.ctx;
        let plan = &ctx.plan;
        let mut checked = self.builder.parse(plan, &mut fields);
        // Every element is checked before anything is appended (and before the key is taken as seen).
        for (c, child) in plan.children.iter().enumerate() {
            for e in 0..elements.len(c) {
                if checked.is_err() {
                    break;
                }
                checked = self.children[c]
                    .parse(&child.plan, child_fields(child, e, c, &mut fields, elements))
                    .map_err(|err| RowError {
                        column: Some(format!("{}[{e}].{}", child.path, err.column.as_deref().unwrap_or("?"))),
                        reason: err.reason,
                    });
            }
        }
        let checked = checked.and_then(|()| match &mut self.unique {
            Some(index) => index.check(at, |c, buf| self.builder.key(c, buf)),
            None => Ok(()),
        });
        if let Err(error) = checked {
            let subjects = Some(self.subjects(&mut fields));
            self.quarantine(self.counts.read, line, error, raw(), subjects)?;
            self.progress.tick(self.counts.read);
            return Ok(());
        }
        self.builder.append(at);
        for (c, child) in plan.children.iter().enumerate() {
            for e in 0..elements.len(c) {
                // Checked above: parsing again cannot fail.
                if self.children[c].parse(&child.plan, child_fields(child, e, c, &mut fields, elements)).is_ok() {
                    self.children[c].append(at);
                }
            }
            if self.children[c].len() >= BATCH_ROWS {
                self.flush_child(c)?;
            }
        }
        self.counts.written += 1;
        if self.builder.len() >= BATCH_ROWS {
            self.flush()?;
        }
        self.progress.tick(self.counts.read);
        Ok(())
    }

    /// Offers a batch of records (a few thousand: their bytes stay in the processor's cache while each column
    /// is read). Their values are parsed column by column, straight into the arrays of the batch being built,
    /// and the records found bad are quarantined and their rows left out when it is sent: the same rows, faults
    /// and quarantine as offering each record to [`Self::row`], which is what happens when the table has child
    /// tables or uniqueness constraints (checked record by record, in order).
    pub fn rows<'a>(&mut self, records: &impl Records<'a>) -> Result<(), ReadError> {
        let n = records.count();
        if self.unique.is_some() || !self.ctx.plan.children.is_empty() {
            for r in 0..n {
                match records.fault(r) {
                    Some(error) => self.bad(records.line(r), error, records.raw(r))?,
                    None => self.row(|i| records.field(r, i), records.line(r), || records.raw(r))?,
                }
            }
            return Ok(());
        }
        let first = self.counts.read;
        let mut errors: Vec<Option<RowError>> = (0..n).map(|r| records.fault(r)).collect();
        let at = |r: usize| records.line(r).unwrap_or(first + r as u64 + 1);
        let row0 = self.builder.len();
        self.builder.fill(&self.ctx.plan, &mut errors, records, at);
        self.counts.read += n as u64;
        for (r, error) in errors.into_iter().enumerate() {
            if let Some(error) = error {
                self.dropped.push(row0 + r);
                // A record with a fault of its own (its shape) was not split into fields.
                let subjects = records.fault(r).is_none().then(|| self.subjects(&mut |i| records.field(r, i)));
                self.quarantine(first + r as u64 + 1, records.line(r), error, records.raw(r), subjects)?;
            } else {
                self.counts.written += 1;
            }
        }
        if self.builder.len() >= BATCH_ROWS {
            self.flush()?;
        }
        self.progress.tick(self.counts.read);
        Ok(())
    }

    /// Counts and quarantines a record that could not even be split into fields.
    pub fn bad(&mut self, line: Option<u64>, error: RowError, raw: Vec<u8>) -> Result<(), ReadError> {
        self.counts.read += 1;
        self.quarantine(self.counts.read, line, error, raw, None)
    }

    /// The pseudonyms of a refused record's direct identifiers that read as such, space-separated.
    fn subjects<'a>(&mut self, fields: &mut impl FnMut(usize) -> Result<Option<Cow<'a, str>>, RowError>) -> String {
        let mut out = String::new();
        let mut hex = String::new();
        for (i, p) in &mut self.subject_columns {
            if let Ok(Some(v)) = fields(*i)
                && p.pseudonym_into(&v, &mut hex)
            {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(&hex);
            }
        }
        out
    }

    /// Quarantines record number `record` of the file, found at `line`.
    fn quarantine(
        &mut self,
        record: u64,
        line: Option<u64>,
        error: RowError,
        raw: Vec<u8>,
        subjects: Option<String>,
    ) -> Result<(), ReadError> {
        if self.ctx.on_bad_record == OnBadRecord::Fail {
            let location = match line {
                Some(l) => format!("{} line {l}", self.ctx.source_file),
                None => format!("{} record {record}", self.ctx.source_file),
            };
            return Err(ReadError::BadRecordFail { location, error });
        }
        self.counts.quarantined += 1;
        self.sink.bad(BadRecord { line, record, error, raw, subjects })
    }

    /// Sends the rows built so far, without those of `dropped`.
    fn flush(&mut self) -> Result<(), ReadError> {
        if !self.builder.is_empty() {
            let malformed = |e: arrow::error::ArrowError| ReadError::Malformed(e.to_string());
            let rows = self.builder.len();
            let mut batch = self.builder.finish(&self.ctx.plan.schema, self.ctx).map_err(malformed)?;
            if !self.dropped.is_empty() {
                let mut keep = vec![true; rows];
                for r in self.dropped.drain(..) {
                    keep[r] = false;
                }
                batch = arrow::compute::filter_record_batch(&batch, &keep.into()).map_err(malformed)?;
            }
            if batch.num_rows() > 0 {
                self.sink.batch(batch)?;
            }
        }
        Ok(())
    }

    fn flush_child(&mut self, c: usize) -> Result<(), ReadError> {
        if !self.children[c].is_empty() {
            let schema = &self.ctx.plan.children[c].plan.schema;
            let batch = self.children[c].finish(schema, self.ctx).map_err(|e| ReadError::Malformed(e.to_string()))?;
            self.sink.child(c, batch)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<FileCounts, ReadError> {
        self.flush()?;
        for c in 0..self.children.len() {
            self.flush_child(c)?;
        }
        self.progress.done(&self.counts);
        Ok(self.counts)
    }
}

/// Every path the plan reads in a JSON record, with its prefixes.
fn known_paths(plan: &TablePlan) -> HashSet<String> {
    let mut known = HashSet::new();
    let paths = plan.columns.iter().flat_map(|c| c.input.iter()).chain(plan.children.iter().map(|c| &c.path));
    for path in paths {
        known.insert(path.clone());
        for (i, _) in path.match_indices('.') {
            known.insert(path[..i].to_string());
        }
    }
    known
}

struct Progress {
    file: String,
    started: std::time::Instant,
    last: std::time::Instant,
    /// The clock is looked at again once this many records are read.
    next: u64,
}

impl Progress {
    fn new(file: &str) -> Self {
        let now = std::time::Instant::now();
        Self { file: file.to_string(), started: now, last: now, next: 65_536 }
    }
    fn tick(&mut self, read: u64) {
        if read < self.next {
            return;
        }
        self.next = read + 65_536;
        if self.last.elapsed().as_secs() >= 5 {
            self.last = std::time::Instant::now();
            let rate = read as f64 / self.started.elapsed().as_secs_f64();
            tracing::info!(file = %self.file, records = read, rate = format!("{rate:.0}/s"), "reading");
        }
    }
    fn done(&self, c: &FileCounts) {
        tracing::debug!(file = %self.file, read = c.read, written = c.written, quarantined = c.quarantined,
            secs = self.started.elapsed().as_secs_f64(), "file read");
    }
}

enum ColBuilder {
    Str(StringBuilder),
    Int(Int64Builder),
    Double(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Dec(Decimal128Builder, u8, i8),
    /// A direct identifier, pseudonymized at landing (and its key id column).
    Pseudo(Box<PseudonymColumn>),
    /// `list`: the end offset of each row's items, whether each row has a list, and the items.
    List {
        item: Arc<Field>,
        offsets: Vec<i32>,
        valid: Vec<bool>,
        items: Box<ColBuilder>,
    },
    /// `struct`: whether each row has one, and its fields.
    Struct {
        fields: arrow::datatypes::Fields,
        valid: Vec<bool>,
        values: Vec<ColBuilder>,
    },
}

impl ColBuilder {
    /// The builder of a column's values (not pseudonymized).
    fn of(c: &ColumnPlan) -> Self {
        match c.ty {
            ColumnType::String | ColumnType::Json => Self::Str(StringBuilder::new()),
            ColumnType::Int => Self::Int(Int64Builder::new()),
            ColumnType::Double => Self::Double(Float64Builder::new()),
            ColumnType::Bool => Self::Bool(BooleanBuilder::new()),
            ColumnType::Date => Self::Date(Date32Builder::new()),
            ColumnType::Timestamp => Self::Ts(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
            ColumnType::Decimal => Self::Dec(
                Decimal128Builder::new().with_precision_and_scale(c.precision, c.scale).unwrap_or_default(),
                c.precision,
                c.scale,
            ),
            ColumnType::List => Self::List {
                item: Arc::new(c.item_field()),
                offsets: vec![0],
                valid: Vec::new(),
                items: Box::new(c.items.as_deref().map_or(Self::Str(StringBuilder::new()), Self::of)),
            },
            ColumnType::Struct => Self::Struct {
                fields: c.fields.iter().map(ColumnPlan::field).collect(),
                valid: Vec::new(),
                values: c.fields.iter().map(Self::of).collect(),
            },
        }
    }

    /// Appends one value (`text` for text cells; `nested` for list items and struct fields).
    fn append(&mut self, cell: Cell, text: &str, nested: &[(Cell, String)]) {
        match (self, cell) {
            (Self::Pseudo(p), Cell::Str) => p.append(Some(text)),
            (Self::Pseudo(p), _) => p.append(None),
            (Self::Str(b), Cell::Str) => b.append_value(text),
            (Self::Int(b), Cell::Int(x)) => b.append_value(x),
            (Self::Double(b), Cell::Double(x)) => b.append_value(x),
            (Self::Bool(b), Cell::Bool(x)) => b.append_value(x),
            (Self::Date(b), Cell::Date(x)) => b.append_value(x),
            (Self::Ts(b), Cell::Ts(x)) => b.append_value(x),
            (Self::Dec(b, ..), Cell::Dec(x)) => b.append_value(x),
            (Self::List { offsets, valid, items, .. }, Cell::Nested) => {
                for (c, t) in nested {
                    items.append(*c, t, &[]);
                }
                let end = offsets.last().copied().unwrap_or(0) + nested.len() as i32;
                offsets.push(end);
                valid.push(true);
            }
            (Self::List { offsets, valid, .. }, _) => {
                offsets.push(offsets.last().copied().unwrap_or(0));
                valid.push(false);
            }
            (Self::Struct { valid, values, .. }, Cell::Nested) => {
                for (b, (c, t)) in values.iter_mut().zip(nested) {
                    b.append(*c, t, &[]);
                }
                valid.push(true);
            }
            (Self::Struct { valid, values, .. }, _) => {
                for b in values.iter_mut() {
                    b.append(Cell::Null, "", &[]);
                }
                valid.push(false);
            }
            (Self::Str(b), _) => b.append_null(),
            (Self::Int(b), _) => b.append_null(),
            (Self::Double(b), _) => b.append_null(),
            (Self::Bool(b), _) => b.append_null(),
            (Self::Date(b), _) => b.append_null(),
            (Self::Ts(b), _) => b.append_null(),
            (Self::Dec(b, ..), _) => b.append_null(),
        }
    }

    /// Appends column `c` (number `i` of the records) of a batch of records (see [`RowBuilder::fill`]); `bufs` are
    /// the row builder's buffers for the column's text and items, and for checks.
    fn fill<'a>(
        &mut self,
        (c, i): (&ColumnPlan, usize),
        plan: &TablePlan,
        errors: &mut [Option<RowError>],
        records: &impl Records<'a>,
        (text, items, scratch): (&mut String, &mut Vec<(Cell, String)>, &mut String),
    ) {
        let field = (records, i);
        match self {
            // Text goes straight from the input into the array.
            Self::Str(b) if c.ty == ColumnType::String => each_value(c, errors, field, |v| {
                match v {
                    Some(s) => {
                        allowed(c, s)?;
                        b.append_value(s);
                    }
                    None => b.append_null(),
                }
                Ok(())
            }),
            // An identifier goes from the input to its pseudonym, normalized once.
            Self::Pseudo(p) if c.ty == ColumnType::String => each_value(c, errors, field, |v| match v {
                Some(s) => {
                    allowed(c, s)?;
                    p.push(s)
                }
                None => {
                    p.append(None);
                    Ok(())
                }
            }),
            // Numbers, dates and times go straight from their text into the array, without a `Cell`.
            Self::Int(b) => primitive(b, c, errors, field, |s| int(c, s)),
            Self::Double(b) => primitive(b, c, errors, field, |s| double(c, s, plan.decimal_comma)),
            Self::Date(b) => primitive(b, c, errors, field, |s| date(c, s)),
            Self::Ts(b) => primitive(b, c, errors, field, |s| timestamp(c, s)),
            Self::Dec(b, ..) => primitive(b, c, errors, field, |s| decimal(c, s, plan.decimal_comma)),
            _ => each_value(c, errors, field, |v| {
                match v {
                    Some(s) => {
                        let cell = value(c, plan, s, text, items, scratch)?;
                        self.append(cell, text, items);
                    }
                    None => self.append(Cell::Null, "", &[]),
                }
                Ok(())
            }),
        }
    }

    /// The arrays of the values appended since the last call (two for a pseudonymized column); the builder
    /// restarts with the capacity the batch used, so the next batch does not regrow its buffers from zero
    /// (reallocation and page faults were a measurable part of parsing).
    fn finish(&mut self, rows: usize, out: &mut Vec<ArrayRef>) -> Result<(), arrow::error::ArrowError> {
        use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
        match self {
            Self::Str(b) => out.push(finish_strings(b)),
            Self::Int(b) => out.push(Arc::new(std::mem::replace(b, Int64Builder::with_capacity(rows)).finish())),
            Self::Double(b) => out.push(Arc::new(std::mem::replace(b, Float64Builder::with_capacity(rows)).finish())),
            Self::Bool(b) => out.push(Arc::new(b.finish())),
            Self::Date(b) => out.push(Arc::new(std::mem::replace(b, Date32Builder::with_capacity(rows)).finish())),
            Self::Ts(b) => {
                let next = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
                out.push(Arc::new(std::mem::replace(b, next).finish().with_timezone("UTC")))
            }
            Self::Dec(b, p, s) => out.push(Arc::new(b.finish().with_precision_and_scale(*p, *s)?)),
            Self::Pseudo(p) => out.extend(p.finish(rows)),
            Self::List { item, offsets, valid, items } => {
                let mut values = Vec::with_capacity(1);
                items.finish(rows, &mut values)?;
                let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                let nulls = NullBuffer::from(std::mem::take(valid));
                let values = values.pop().ok_or_else(|| arrow::error::ArrowError::ComputeError("no items".into()))?;
                out.push(Arc::new(arrow::array::ListArray::try_new(item.clone(), offsets, values, Some(nulls))?));
            }
            Self::Struct { fields, valid, values } => {
                let mut arrays = Vec::with_capacity(values.len());
                for b in values.iter_mut() {
                    b.finish(rows, &mut arrays)?;
                }
                let nulls = NullBuffer::from(std::mem::take(valid));
                out.push(Arc::new(arrow::array::StructArray::try_new(fields.clone(), arrays, Some(nulls))?));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Cell {
    Null,
    Str,
    Int(i64),
    Double(f64),
    Bool(bool),
    Date(i32),
    Ts(i64),
    Dec(i128),
    /// A list or struct: its values are the column's `nested` cells.
    Nested,
}

/// Accumulates typed rows for one batch.
pub struct RowBuilder {
    cols: Vec<ColBuilder>,
    cells: Vec<Cell>,
    texts: Vec<String>,
    /// The items of a list, the fields of a struct, per column.
    nested: Vec<Vec<(Cell, String)>>,
    /// Room for checking an identifier's normalized form.
    scratch: String,
    /// Where each row is in its file (`_record`).
    records: Int64Builder,
    len: usize,
}

impl RowBuilder {
    pub fn new(plan: &TablePlan, keys: &KeyRing) -> Result<Self, KeyError> {
        let mut cols = Vec::with_capacity(plan.columns.len());
        for c in &plan.columns {
            cols.push(match &c.pseudonymize {
                Some((domain, normalize)) => {
                    let key = keys.get(domain)?;
                    ColBuilder::Pseudo(Box::new(PseudonymColumn::new(key, *normalize, plan.phone_country)))
                }
                None => ColBuilder::of(c),
            });
        }
        let n = plan.columns.len();
        Ok(Self {
            cols,
            cells: vec![Cell::Null; n],
            texts: vec![String::new(); n],
            nested: vec![Vec::new(); n],
            scratch: String::new(),
            records: Int64Builder::with_capacity(BATCH_ROWS),
            len: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Parses and checks every field of a row, to be appended by [`Self::append`]; on error nothing is kept.
    pub fn parse<'a>(
        &mut self,
        plan: &TablePlan,
        mut field: impl FnMut(usize) -> Result<Option<Cow<'a, str>>, RowError>,
    ) -> Result<(), RowError> {
        for (i, c) in plan.columns.iter().enumerate() {
            let err = |reason: String| RowError { column: Some(c.name.clone()), reason };
            let text = field(i).map_err(|e| RowError { column: e.column.or_else(|| Some(c.name.clone())), ..e })?;
            let text = text.as_deref().map(trim).filter(|s| !s.is_empty());
            let Some(s) = text else {
                if c.required {
                    return Err(err("required but missing".into()));
                }
                self.cells[i] = Cell::Null;
                continue;
            };
            self.cells[i] =
                value(c, plan, s, &mut self.texts[i], &mut self.nested[i], &mut self.scratch).map_err(err)?;
        }
        Ok(())
    }

    /// Parses a batch of records column by column, straight into the column builders, record `r` found at
    /// `at(r)` (line or record number). A record whose entry of `errors` is set is not read; a record found bad
    /// gets its first fault in the order of the columns (as [`Self::parse`] gives it). Every record gets a row
    /// (bad ones with nulls where they were not read): the caller takes the bad ones out of the finished batch.
    pub fn fill<'a>(
        &mut self,
        plan: &TablePlan,
        errors: &mut [Option<RowError>],
        records: &impl Records<'a>,
        at: impl Fn(usize) -> u64,
    ) {
        for (i, c) in plan.columns.iter().enumerate() {
            let bufs = (&mut self.texts[i], &mut self.nested[i], &mut self.scratch);
            self.cols[i].fill((c, i), plan, errors, records, bufs);
        }
        for r in 0..errors.len() {
            self.records.append_value(i64::try_from(at(r)).unwrap_or(i64::MAX));
        }
        self.len += errors.len();
    }

    /// The key of constraint `c` for the row just parsed, as bronze stores it (a pseudonymized column by its
    /// pseudonym), appended to `buf`; false when one of its values is null.
    pub fn key(&mut self, c: &unique::UniqueConstraint, buf: &mut Vec<u8>) -> bool {
        use unique::KeyValue as K;
        for &i in &c.columns {
            let v = match (self.cells[i], &mut self.cols[i]) {
                (Cell::Null, _) => return false,
                (Cell::Str, ColBuilder::Pseudo(p)) => match p.token(&self.texts[i]) {
                    Some(token) => K::Str(token),
                    None => return false,
                },
                (Cell::Str, _) => K::Str(&self.texts[i]),
                (Cell::Int(x) | Cell::Ts(x), _) => K::I64(x),
                (Cell::Double(x), _) => K::F64(x),
                (Cell::Bool(x), _) => K::Bool(x),
                (Cell::Date(x), _) => K::I32(x),
                (Cell::Dec(x), _) => K::I128(x),
                // Keys are scalar (validated): a list or struct is never compared.
                (Cell::Nested, _) => return false,
            };
            unique::push_key(buf, v);
        }
        true
    }

    /// Appends the row last parsed, found at `at` (line, or record number) in its file.
    pub fn append(&mut self, at: u64) {
        self.records.append_value(i64::try_from(at).unwrap_or(i64::MAX));
        for (i, b) in self.cols.iter_mut().enumerate() {
            b.append(self.cells[i], &self.texts[i], &self.nested[i]);
        }
        self.len += 1;
    }

    /// Finishes the batch with the metadata columns, leaving the builder empty.
    pub fn finish(&mut self, schema: &SchemaRef, ctx: &ReadContext) -> Result<RecordBatch, arrow::error::ArrowError> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        let rows = BATCH_ROWS;
        for b in &mut self.cols {
            b.finish(rows, &mut arrays)?;
        }
        let n = self.len;
        self.len = 0;
        arrays.push(Arc::new(
            arrow::array::TimestampMicrosecondArray::from(vec![ctx.ingested_at_micros; n]).with_timezone("UTC"),
        ));
        arrays.push(constant_string(&ctx.run_id, n, None));
        arrays.push(constant_string(&ctx.source_file, n, None));
        arrays.push(Arc::new(std::mem::replace(&mut self.records, Int64Builder::with_capacity(rows)).finish()));
        RecordBatch::try_new(schema.clone(), arrays)
    }
}

/// `s` without leading and trailing white space (Unicode's, as `str::trim`), at once when it starts and ends
/// with a visible ASCII character, as most values do.
#[inline]
fn trim(s: &str) -> &str {
    let visible = |b: Option<&u8>| b.is_some_and(u8::is_ascii_graphic);
    if visible(s.as_bytes().first()) && visible(s.as_bytes().last()) { s } else { s.trim() }
}

/// One value of column `c` (trimmed, not empty), parsed and checked: its cell, with its text in `text` (text
/// columns) or its items or fields in `items` (lists, structs). An identifier that normalizes before
/// pseudonymization must be one (a phone number, an e-mail address): the message says what is wrong, never the
/// value.
fn value(
    c: &ColumnPlan,
    plan: &TablePlan,
    s: &str,
    text: &mut String,
    items: &mut Vec<(Cell, String)>,
    scratch: &mut String,
) -> Result<Cell, String> {
    let cell = match c.ty {
        ColumnType::List | ColumnType::Struct => {
            nested(c, s, plan.decimal_comma, items)?;
            Cell::Nested
        }
        _ => scalar(c, s, plan.decimal_comma, text)?,
    };
    match c.pseudonymize.as_ref().map(|(_, n)| n) {
        Some(Normalize::Phone) => crate::privacy::normalize::phone(s, plan.phone_country.as_ref(), scratch)?,
        Some(Normalize::Email) => crate::privacy::normalize::email(s, scratch)?,
        _ => {}
    }
    Ok(cell)
}

/// Fills `errors` (see [`RowBuilder::fill`]) and the column through `put`, which appends a value (`None`:
/// null) or, with an error, nothing; the values are column `column` of `records`.
#[inline]
fn each_value<'a>(
    c: &ColumnPlan,
    errors: &mut [Option<RowError>],
    (records, column): (&impl Records<'a>, usize),
    mut put: impl FnMut(Option<&str>) -> Result<(), String>,
) {
    for (r, error) in errors.iter_mut().enumerate() {
        if error.is_some() {
            let _ = put(None);
            continue;
        }
        let decoded;
        let text = match records.text(r, column) {
            Some(s) => Some(s),
            None => match records.field(r, column) {
                Ok(text) => {
                    decoded = text;
                    decoded.as_deref()
                }
                Err(e) => {
                    let _ = put(None);
                    *error = Some(RowError { column: e.column.or_else(|| Some(c.name.clone())), ..e });
                    continue;
                }
            },
        };
        let outcome = match text.map(trim).filter(|s| !s.is_empty()) {
            None if c.required => Err("required but missing".to_string()),
            s => put(s),
        };
        if let Err(reason) = outcome {
            let _ = put(None);
            *error = Some(RowError { column: Some(c.name.clone()), reason });
        }
    }
}

/// Whether a text value is one of the column's allowed values, if it has a list.
#[inline]
fn allowed(c: &ColumnPlan, s: &str) -> Result<(), String> {
    match &c.values {
        Some(values) if !values.contains(s) => Err(format!("not one of the {} allowed values", values.len())),
        _ => Ok(()),
    }
}

/// One value of a scalar column, parsed and checked (allowed values, range); a text value is left in `text`.
#[inline]
fn scalar(c: &ColumnPlan, s: &str, decimal_comma: bool, text: &mut String) -> Result<Cell, String> {
    let cell = match c.ty {
        ColumnType::String => {
            allowed(c, s)?;
            text.clear();
            text.push_str(s);
            Cell::Str
        }
        ColumnType::Json => {
            // Kept as compact JSON text, whatever the spacing of the input.
            let v: serde_json::Value =
                serde_json::from_str(s).map_err(|e| format!("not valid JSON (column {} of the value)", e.column()))?;
            text.clear();
            text.push_str(&v.to_string());
            Cell::Str
        }
        ColumnType::Int => Cell::Int(int(c, s)?),
        ColumnType::Double => Cell::Double(double(c, s, decimal_comma)?),
        ColumnType::Bool => Cell::Bool(value::parse_bool(s)?),
        ColumnType::Date => Cell::Date(date(c, s)?),
        ColumnType::Timestamp => Cell::Ts(timestamp(c, s)?),
        ColumnType::Decimal => Cell::Dec(decimal(c, s, decimal_comma)?),
        ColumnType::List | ColumnType::Struct => return Err("a list or struct is not a scalar value".into()),
    };
    Ok(cell)
}

/// Fills a column of numbers, dates or times (see [`ColBuilder::fill`]) with `parse`.
#[inline]
fn primitive<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    b: &mut arrow::array::PrimitiveBuilder<T>,
    c: &ColumnPlan,
    errors: &mut [Option<RowError>],
    field: (&impl Records<'a>, usize),
    parse: impl Fn(&str) -> Result<T::Native, String>,
) {
    each_value(c, errors, field, |v| {
        match v {
            Some(s) => b.append_value(parse(s)?),
            None => b.append_null(),
        }
        Ok(())
    })
}

/// A number within the column's `range`, if it declares one.
#[inline]
fn in_range(c: &ColumnPlan, v: f64) -> Result<(), String> {
    match c.range {
        Some([lo, hi]) if v < lo || v > hi => Err(format!("out of range [{lo}, {hi}]")),
        _ => Ok(()),
    }
}

#[inline]
fn int(c: &ColumnPlan, s: &str) -> Result<i64, String> {
    let v = value::parse_int(s)?;
    in_range(c, v as f64)?;
    Ok(v)
}

#[inline]
fn double(c: &ColumnPlan, s: &str, decimal_comma: bool) -> Result<f64, String> {
    let v = value::parse_double(s, decimal_comma)?;
    in_range(c, v)?;
    Ok(v)
}

#[inline]
fn decimal(c: &ColumnPlan, s: &str, decimal_comma: bool) -> Result<i128, String> {
    let v = value::parse_decimal(s, c.precision, c.scale, decimal_comma)?;
    in_range(c, v as f64 / 10f64.powi(i32::from(c.scale)))?;
    Ok(v)
}

#[inline]
fn date(c: &ColumnPlan, s: &str) -> Result<i32, String> {
    c.time.as_ref().map_or(Ok(0), |t| t.parse_date(s))
}

#[inline]
fn timestamp(c: &ColumnPlan, s: &str) -> Result<i64, String> {
    c.time.as_ref().map_or(Ok(0), |t| t.parse_timestamp(s))
}

/// The values of a list (a JSON array: its items) or of a struct (a JSON object: its fields), each of its JSON
/// type, parsed and checked like a column of its own; a fault names the item or the field.
fn nested(c: &ColumnPlan, s: &str, decimal_comma: bool, out: &mut Vec<(Cell, String)>) -> Result<(), String> {
    out.clear();
    let v: serde_json::Value =
        serde_json::from_str(s).map_err(|e| format!("not valid JSON (column {} of the value)", e.column()))?;
    let mut one = |plan: &ColumnPlan, text: Option<Cow<'_, str>>, at: &dyn std::fmt::Display| {
        let text = text.as_deref().map(trim).filter(|t| !t.is_empty());
        let cell = match text {
            None if plan.required => return Err(format!("{at}: required but missing")),
            None => (Cell::Null, String::new()),
            Some(t) => {
                let mut buf = String::new();
                let cell = scalar(plan, t, decimal_comma, &mut buf).map_err(|r| format!("{at}: {r}"))?;
                (cell, buf)
            }
        };
        out.push(cell);
        Ok(())
    };
    match (&v, c.ty, c.items.as_deref()) {
        (serde_json::Value::Array(items), ColumnType::List, Some(item)) => {
            for (k, x) in items.iter().enumerate() {
                let text = json::typed_text(x, item).map_err(|e| format!("item {k}: {}", e.reason))?;
                one(item, text, &format_args!("item {k}"))?;
            }
        }
        (serde_json::Value::Object(obj), ColumnType::Struct, _) => {
            for f in &c.fields {
                let text = json::field(obj, f).map_err(|e| format!("{}: {}", f.name, e.reason))?;
                one(f, text, &f.name)?;
            }
        }
        (other, ty, _) => {
            let what = if ty == ColumnType::List { "a list (a JSON array)" } else { "a struct (a JSON object)" };
            return Err(format!("expected {what}, found {}", json::kind(other)));
        }
    }
    Ok(())
}

fn finish_strings(b: &mut StringBuilder) -> ArrayRef {
    let array = b.finish();
    let bytes = array.value_data().len();
    *b = StringBuilder::with_capacity(BATCH_ROWS, bytes + bytes / 8);
    Arc::new(array)
}

/// `n` rows of `value`, null where `nulls` says (the metadata columns, a pseudonym's key ids): one buffer of the
/// repeated text rather than `n` appends.
pub(crate) fn constant_string(value: &str, n: usize, nulls: Option<arrow::buffer::NullBuffer>) -> ArrayRef {
    let offsets = arrow::buffer::OffsetBuffer::from_lengths(std::iter::repeat_n(value.len(), n));
    let values = arrow::buffer::Buffer::from(value.repeat(n).into_bytes());
    Arc::new(arrow::array::StringArray::new(offsets, values, nulls))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a reader sent.
    #[derive(Default)]
    struct Capture {
        batches: Vec<RecordBatch>,
        bad: Vec<(Option<u64>, u64, RowError, Vec<u8>)>,
    }

    impl RecordSink for Capture {
        fn batch(&mut self, batch: RecordBatch) -> Result<(), ReadError> {
            self.batches.push(batch);
            Ok(())
        }
        fn child(&mut self, _: usize, _: RecordBatch) -> Result<(), ReadError> {
            Ok(())
        }
        fn bad(&mut self, b: BadRecord) -> Result<(), ReadError> {
            self.bad.push((b.line, b.record, b.error, b.raw));
            Ok(())
        }
    }

    /// Records as texts, some with a fault of their shape.
    struct Texts<'t> {
        fields: &'t [Vec<Option<String>>],
        faults: &'t [Option<RowError>],
        /// The records of this batch.
        range: std::ops::Range<usize>,
    }

    impl<'a> Records<'a> for Texts<'_> {
        fn count(&self) -> usize {
            self.range.len()
        }
        fn fault(&self, r: usize) -> Option<RowError> {
            self.faults[self.range.start + r].clone()
        }
        fn field(&self, r: usize, column: usize) -> Result<Option<Cow<'a, str>>, RowError> {
            Ok(self.fields[self.range.start + r][column].clone().map(Cow::Owned))
        }
        fn line(&self, r: usize) -> Option<u64> {
            Some(2 * (self.range.start + r) as u64 + 3)
        }
        fn raw(&self, r: usize) -> Vec<u8> {
            format!("{:?}", self.fields[self.range.start + r]).into_bytes()
        }
    }

    /// Random records of every kind of column, good and bad values (types, ranges, allowed values, required,
    /// identifiers to pseudonymize that do not normalize, JSON, lists), offered in batches of random sizes
    /// across a batch boundary: read column by column ([`RowEmitter::rows`]) they give the same rows, the same
    /// quarantined records with the same faults, and the same counts as offered record by record.
    #[test]
    fn rows_read_by_column_are_those_read_by_record() {
        let manifest = "version: 1\nname: t\ndescription: t\nowner: ddsp\nschedule: \"* * * * *\"\n\
            connector: { kind: files, location: drop }\nformat: { kind: csv, delimiter: \";\", decimal: \",\" }\n\
            columns:\n  id: { type: string, required: true }\n  at: { type: timestamp, format: \"%d/%m/%Y %H:%M\" }\n\
            \x20 n: { type: int, range: [0, 1000] }\n  x: { type: double, range: [-90, 90] }\n\
            \x20 amount: { type: decimal, precision: 10, scale: 2 }\n  ok: { type: bool }\n\
            \x20 kind: { type: string, values: [a, b, c] }\n\
            \x20 who: { type: string, pii: direct, domain: police, normalize: email }\n\
            \x20 doc: { type: json }\n  tags: { type: list, items: int }\nretention: 1 year\n";
        let m = crate::manifest::parse_source(std::path::Path::new("t.yaml"), manifest).unwrap();
        let plan = Arc::new(TablePlan::new(&m, &ProjectFile::with_domains(&["police"])));
        let key = "police t 0000000000000000000000000000000000000000000000000000000000000001";
        let ctx = ReadContext {
            plan: plan.clone(),
            keys: Arc::new(KeyRing::parse(key, "t").unwrap()),
            run_id: "r".into(),
            ingested_at_micros: 0,
            source_file: "f".into(),
            on_bad_record: OnBadRecord::Quarantine,
            on_new_field: OnNewField::Warn,
            limits: crate::manifest::ReadLimits::default(),
            unique: None,
        };
        let pools: [&[&str]; 10] = [
            &["A1", "", "  B2 ", "x"],
            &["01/02/2024 10:30", "31/02/2024 10:00", "x", " 05/06/2023 08:15 ", ""],
            &["5", "-3", "2000", "abc", " 42 ", ""],
            &["1,5", "-91", "abc", "45,25"],
            &["12,34", "1,234", "x", "7"],
            &["true", "non", "maybe"],
            &["a", "d", "c "],
            &["ana@example.fr", "nope", " Bob@Example.org "],
            &["{\"a\": 1}", "{bad", "[1, 2]"],
            &["[1,2]", "[1,\"x\"]", "x", "[]"],
        ];
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let n = BATCH_ROWS + 4000;
        let fields: Vec<Vec<Option<String>>> = (0..n)
            .map(|_| {
                pools
                    .iter()
                    .map(|pool| match next() % 20 {
                        // Mostly the first (good) value, so that many records land.
                        0..=16 => Some(pool[0].to_string()),
                        17 => None,
                        _ => Some(pool[next() as usize % pool.len()].to_string()),
                    })
                    .collect()
            })
            .collect();
        let faults: Vec<Option<RowError>> = (0..n)
            .map(|_| next().is_multiple_of(50).then(|| RowError::record("expected 10 fields, found 9")))
            .collect();

        let mut by_column = Capture::default();
        let counts_by_column = {
            let mut e = RowEmitter::new(&ctx, &mut by_column).unwrap();
            let mut start = 0;
            while start < n {
                let end = (start + 1 + next() as usize % 3000).min(n);
                e.rows(&Texts { fields: &fields, faults: &faults, range: start..end }).unwrap();
                start = end;
            }
            e.finish().unwrap()
        };
        let mut by_record = Capture::default();
        let counts_by_record = {
            let mut e = RowEmitter::new(&ctx, &mut by_record).unwrap();
            let all = Texts { fields: &fields, faults: &faults, range: 0..n };
            for r in 0..n {
                match all.fault(r) {
                    Some(error) => e.bad(all.line(r), error, all.raw(r)).unwrap(),
                    None => e.row(|i| all.field(r, i), all.line(r), || all.raw(r)).unwrap(),
                }
            }
            e.finish().unwrap()
        };
        assert_eq!(counts_by_column, counts_by_record);
        assert!(counts_by_record.written > 1000 && counts_by_record.quarantined > 1000, "{counts_by_record:?}");
        assert_eq!(by_column.bad, by_record.bad);
        let all = |c: &Capture| arrow::compute::concat_batches(&plan.schema, &c.batches).unwrap();
        assert_eq!(all(&by_column), all(&by_record));
    }

    #[test]
    fn trim_is_str_trim() {
        for s in ["", " ", "a", " a", "a ", "\u{a0}12 rue\u{a0}", "\t x\r", "é", " é ", "x\u{2003}", "\u{feff}y", "a b"]
        {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
    }
}
