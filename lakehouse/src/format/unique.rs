//! Uniqueness constraints (`unique: true` on a column, `unique: [a, b]` on a source).
//!
//! Each record that passed every other check has its key — the values of a constraint's columns as bronze
//! stores them (the pseudonym of a pseudonymized column) — compared with the keys seen before it: earlier in
//! the same file, in the files taken before it in the run, and (in `append` mode) already in bronze. A key seen
//! before quarantines the record with `duplicate key (first seen at <file>:<line>)`; the first occurrence stays.
//! A key with a null value is not compared (SQL's rule for `UNIQUE`).
//!
//! Keys are kept as 128-bit hashes (xxh3, seeded per run) beside where they were first seen: about 30 bytes per
//! key and constraint while the run lasts, whatever the key's length (10 million bronze rows: about 300 MB). The
//! keys of a file join the index only once the file is taken: a file that is not taken (truncated, unreadable)
//! leaves no trace, so its records cannot make later ones duplicates.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use arrow::array::{
    Array, AsArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use super::RowError;

/// One constraint: the positions of its columns in the plan, and their names.
#[derive(Debug, Clone)]
pub struct UniqueConstraint {
    pub columns: Vec<usize>,
    pub names: Vec<String>,
}

impl UniqueConstraint {
    /// The column a duplicate is reported on (a single-column constraint), or none.
    fn column(&self) -> Option<String> {
        (self.names.len() == 1).then(|| self.names[0].clone())
    }

    /// How a composite key is named in a reason: `(accident_id, vehicle_id)`.
    fn label(&self) -> String {
        format!("({})", self.names.join(", "))
    }
}

/// A key value as bronze stores it.
#[derive(Debug, Clone, Copy)]
pub enum KeyValue<'a> {
    Str(&'a str),
    I64(i64),
    F64(f64),
    Bool(bool),
    I32(i32),
    I128(i128),
}

/// Appends one value of a key to `buf`: fixed-width values as bytes, strings with their length first, so that
/// no two different keys give the same bytes.
pub fn push_key(buf: &mut Vec<u8>, v: KeyValue<'_>) {
    match v {
        KeyValue::Str(s) => {
            buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
            buf.extend_from_slice(s.as_bytes());
        }
        KeyValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        // -0.0 and 0.0 are one value.
        KeyValue::F64(x) => buf.extend_from_slice(&(if x == 0.0 { 0.0f64 } else { x }).to_bits().to_le_bytes()),
        KeyValue::Bool(x) => buf.push(u8::from(x)),
        KeyValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        KeyValue::I128(x) => buf.extend_from_slice(&x.to_le_bytes()),
    }
}

/// The value at `row` of a bronze column, or None when null (or of a type keys do not have).
fn arrow_value(array: &dyn Array, row: usize) -> Option<KeyValue<'_>> {
    if array.is_null(row) {
        return None;
    }
    let any = array.as_any();
    Some(match array.data_type() {
        DataType::Utf8 => KeyValue::Str(any.downcast_ref::<StringArray>()?.value(row)),
        DataType::Utf8View => KeyValue::Str(array.as_string_view().value(row)),
        DataType::Int64 => KeyValue::I64(any.downcast_ref::<Int64Array>()?.value(row)),
        DataType::Float64 => KeyValue::F64(any.downcast_ref::<Float64Array>()?.value(row)),
        DataType::Boolean => KeyValue::Bool(any.downcast_ref::<BooleanArray>()?.value(row)),
        DataType::Date32 => KeyValue::I32(any.downcast_ref::<Date32Array>()?.value(row)),
        DataType::Timestamp(..) => KeyValue::I64(any.downcast_ref::<TimestampMicrosecondArray>()?.value(row)),
        DataType::Decimal128(..) => KeyValue::I128(any.downcast_ref::<Decimal128Array>()?.value(row)),
        _ => return None,
    })
}

/// The hasher of sets and maps whose keys are already hashes (xxh3): it folds a key's words together and mixes
/// no further. Used here and for the sample that chooses a data file's encodings
/// (`storage::commit::dictionary_overflows`).
#[derive(Default)]
pub(crate) struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `[u64; 2]` hashes its length (ignored below), then its words as bytes.
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(w);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = self.0.rotate_left(5) ^ x;
    }
    fn write_usize(&mut self, _len: usize) {}
}

type KeyMap = HashMap<[u64; 2], Origin, BuildHasherDefault<PreHashed>>;

/// Where a key was first seen: a file (index into [`UniqueIndex::files`]) and a line or record number (0 when
/// unknown: bronze rows written before positions were recorded).
#[derive(Debug, Clone, Copy)]
struct Origin {
    file: u32,
    at: u32,
    at_high: u32,
}

impl Origin {
    fn new(file: u32, at: u64) -> Self {
        Self { file, at: at as u32, at_high: (at >> 32) as u32 }
    }
    fn at(self) -> u64 {
        u64::from(self.at_high) << 32 | u64::from(self.at)
    }
}

/// The keys seen by a run, per constraint.
pub struct UniqueIndex {
    constraints: Vec<UniqueConstraint>,
    seed: u64,
    /// Positions are lines (csv, ndjson) rather than record numbers (json, parquet).
    lines: bool,
    files: Vec<String>,
    file_ids: HashMap<String, u32>,
    seen: Vec<KeyMap>,
    /// The keys of the file being read, added to `seen` when it is taken.
    pending: Vec<KeyMap>,
    current: u32,
    buf: Vec<u8>,
    hashes: Vec<Option<[u64; 2]>>,
}

impl UniqueIndex {
    pub fn new(constraints: Vec<UniqueConstraint>, lines: bool) -> Self {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let n = constraints.len();
        Self {
            constraints,
            seed,
            lines,
            files: Vec::new(),
            file_ids: HashMap::new(),
            seen: (0..n).map(|_| KeyMap::default()).collect(),
            pending: (0..n).map(|_| KeyMap::default()).collect(),
            current: 0,
            buf: Vec::with_capacity(64),
            hashes: Vec::with_capacity(n),
        }
    }

    pub fn constraints(&self) -> &[UniqueConstraint] {
        &self.constraints
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.seen.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn file_id(&mut self, file: &str) -> u32 {
        if let Some(&id) = self.file_ids.get(file) {
            return id;
        }
        let id = self.files.len() as u32;
        self.files.push(file.to_string());
        self.file_ids.insert(file.to_string(), id);
        id
    }

    fn hash(&self) -> [u64; 2] {
        let h = twox_hash::XxHash3_128::oneshot_with_seed(self.seed, &self.buf);
        [h as u64, (h >> 64) as u64]
    }

    /// Adds the keys of bronze rows: `batch` holds the constraints' columns (by name), `_source_file` and
    /// `_record`. The first occurrence of a key is kept.
    pub fn add_existing(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let column = |name: &str| batch.column_by_name(name).ok_or_else(|| format!("bronze has no column `{name}`"));
        let files = column("_source_file")?;
        let records = batch.column_by_name("_record").and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned());
        let mut per_constraint = Vec::new();
        for c in &self.constraints {
            per_constraint.push(c.names.iter().map(|n| column(n)).collect::<Result<Vec<_>, _>>()?);
        }
        let files = arrow::compute::cast(files, &DataType::Utf8).map_err(|e| format!("`_source_file`: {e}"))?;
        let files = files.as_string_opt::<i32>().ok_or("`_source_file` is not a string column")?;
        for row in 0..batch.num_rows() {
            let file = self.file_id(files.value(row));
            let at = records.as_ref().filter(|r| r.is_valid(row)).map_or(0, |r| r.value(row).max(0) as u64);
            for (k, cols) in per_constraint.iter().enumerate() {
                self.buf.clear();
                let mut null = false;
                for col in cols {
                    match arrow_value(col.as_ref(), row) {
                        Some(v) => push_key(&mut self.buf, v),
                        None => null = true,
                    }
                }
                if !null {
                    let h = self.hash();
                    self.seen[k].entry(h).or_insert(Origin::new(file, at));
                }
            }
        }
        Ok(())
    }

    /// Starts a file: its keys are pending until [`Self::end_file`].
    pub fn begin_file(&mut self, file: &str) {
        self.current = self.file_id(file);
        self.pending.iter_mut().for_each(HashMap::clear);
    }

    /// Ends the current file: its keys join the index when it is taken, and are forgotten otherwise.
    pub fn end_file(&mut self, taken: bool) {
        for (seen, pending) in self.seen.iter_mut().zip(&mut self.pending) {
            if taken {
                seen.extend(pending.drain());
            } else {
                pending.clear();
            }
        }
    }

    /// Checks a record at `at` (line or record number) of the current file. `key(k, buf)` appends the values
    /// of constraint `k` to `buf` and returns false when one is null. The record's keys are added only when
    /// none was seen before.
    pub fn check(
        &mut self,
        at: u64,
        mut key: impl FnMut(&UniqueConstraint, &mut Vec<u8>) -> bool,
    ) -> Result<(), RowError> {
        self.hashes.clear();
        for k in 0..self.constraints.len() {
            self.buf.clear();
            let h = key(&self.constraints[k], &mut self.buf).then(|| self.hash());
            if let Some(h) = h
                && let Some(origin) = self.seen[k].get(&h).or_else(|| self.pending[k].get(&h))
            {
                return Err(self.duplicate(k, *origin));
            }
            self.hashes.push(h);
        }
        let origin = Origin::new(self.current, at);
        for (pending, h) in self.pending.iter_mut().zip(&self.hashes) {
            if let Some(h) = h {
                pending.insert(*h, origin);
            }
        }
        Ok(())
    }

    fn duplicate(&self, k: usize, origin: Origin) -> RowError {
        let c = &self.constraints[k];
        let file = &self.files[origin.file as usize];
        let at = match (origin.at(), self.lines) {
            (0, _) => file.clone(),
            (n, true) => format!("{file}:{n}"),
            (n, false) => format!("{file}, record {n}"),
        };
        let reason = match c.column() {
            Some(_) => format!("duplicate key (first seen at {at})"),
            None => format!("duplicate key {} (first seen at {at})", c.label()),
        };
        RowError { column: c.column(), reason }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn index() -> UniqueIndex {
        let id = UniqueConstraint { columns: vec![0], names: vec!["id".into()] };
        let pair = UniqueConstraint { columns: vec![1, 2], names: vec!["a".into(), "b".into()] };
        UniqueIndex::new(vec![id, pair], true)
    }

    fn key<'a>(id: Option<&'a str>, a: i64, b: &'a str) -> impl FnMut(&UniqueConstraint, &mut Vec<u8>) -> bool {
        move |c, buf| match c.names.len() {
            1 => id.map(|id| push_key(buf, KeyValue::Str(id))).is_some(),
            _ => {
                push_key(buf, KeyValue::I64(a));
                push_key(buf, KeyValue::Str(b));
                true
            }
        }
    }

    #[test]
    fn the_first_occurrence_stays_and_later_ones_name_it() {
        let mut ix = index();
        ix.begin_file("a.csv");
        assert!(ix.check(2, key(Some("x"), 1, "p")).is_ok());
        let e = ix.check(5, key(Some("x"), 2, "q")).unwrap_err();
        assert_eq!((e.column.as_deref(), e.reason.as_str()), (Some("id"), "duplicate key (first seen at a.csv:2)"));
        let e = ix.check(6, key(Some("y"), 1, "p")).unwrap_err();
        assert_eq!((e.column, e.reason.as_str()), (None, "duplicate key (a, b) (first seen at a.csv:2)"));
        // A rejected record registered nothing: `y` is new.
        assert!(ix.check(7, key(Some("y"), 3, "p")).is_ok());
        // Nulls are not compared; a string's length is part of its key.
        assert!(ix.check(8, key(None, 4, "p")).is_ok());
        assert!(ix.check(9, key(None, 4, "pp")).is_ok());
        ix.end_file(true);
        ix.begin_file("b.csv");
        let e = ix.check(2, key(Some("y"), 9, "z")).unwrap_err();
        assert_eq!(e.reason, "duplicate key (first seen at a.csv:7)");
        ix.end_file(false);
        ix.begin_file("c.csv");
        assert!(ix.check(2, key(Some("z"), 9, "z")).is_ok(), "b.csv was not taken: its keys are forgotten");
    }

    #[test]
    fn bronze_keys_are_compared_as_stored() {
        let mut ix = index();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
            Field::new("_source_file", DataType::Utf8, false),
            Field::new("_record", DataType::Int64, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![Some("x"), None])),
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec!["p", "q"])),
            Arc::new(StringArray::from(vec!["old.csv", "older.csv"])),
            Arc::new(Int64Array::from(vec![Some(12), None])),
        ];
        ix.add_existing(&RecordBatch::try_new(schema, cols).unwrap()).unwrap();
        assert_eq!(ix.len(), 3);
        ix.begin_file("new.csv");
        assert_eq!(ix.check(2, key(Some("x"), 0, "")).unwrap_err().reason, "duplicate key (first seen at old.csv:12)");
        assert_eq!(
            ix.check(3, key(None, 2, "q")).unwrap_err().reason,
            "duplicate key (a, b) (first seen at older.csv)"
        );
    }
}
