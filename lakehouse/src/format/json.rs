//! JSON records: NDJSON (one object per line, streamed) and a JSON document holding an array of records.
//!
//! A declared column's input name may be a dotted path into nested objects (`location.lat`). A value must have
//! its column's JSON type (a number for `int`, a string for `string`…); a column with `coerce: true` reads any
//! scalar through its JSON text (`"12"` fits an `int` column), and objects and arrays as JSON text in string
//! columns.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read};

use serde_json::{Map, Value};

use super::{ColumnPlan, ReadError, RowEmitter, RowError};
use crate::manifest::ColumnType;

/// Largest JSON document read whole (use NDJSON beyond this).
const MAX_DOCUMENT_BYTES: u64 = 1 << 30;

pub fn read_ndjson(
    input: Box<dyn Read + Send>,
    limits: crate::manifest::ReadLimits,
    rows: &mut RowEmitter<'_, '_>,
) -> Result<(), ReadError> {
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let mut line = Vec::new();
    let mut line_no = 0u64;
    let max = limits.max_record_bytes;
    loop {
        line.clear();
        let (read, whole) = read_line_bounded(&mut reader, &mut line, max)?;
        if read == 0 {
            break;
        }
        line_no += 1;
        if !whole {
            let reason = format!(
                "the line is longer than {max} bytes (limits.max_record_bytes); its first {max} bytes are kept"
            );
            rows.bad(Some(line_no), RowError::record(reason), std::mem::take(&mut line))?;
            continue;
        }
        let text = trim_line(&line);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(obj)) => {
                rows.note_new_keys(&obj, "")?;
                record(&obj, Some(line_no), || text.to_vec(), rows)?
            }
            Ok(_) => rows.bad(Some(line_no), RowError::record("the line is not a JSON object"), text.to_vec())?,
            Err(e) => rows.bad(Some(line_no), RowError::record(json_error(&e, Some(line_no))), text.to_vec())?,
        }
    }
    Ok(())
}

/// Reads up to and including the next `\n`, keeping at most `max` bytes of it in `line`. Returns the bytes read
/// and whether the whole line fit.
fn read_line_bounded(reader: &mut impl BufRead, line: &mut Vec<u8>, max: u64) -> std::io::Result<(usize, bool)> {
    let mut total = 0usize;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            let whole = line.len() as u64 <= max;
            line.truncate(max as usize);
            return Ok((total, whole));
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = (max as usize).saturating_add(1).saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        total += n;
        reader.consume(n);
        if done {
            let whole = line.len() as u64 <= max || (line.len() as u64 == max + 1 && line.ends_with(b"\n"));
            if !whole {
                line.truncate(max as usize);
            }
            return Ok((total, whole));
        }
    }
}

pub fn read_document(input: Box<dyn Read + Send>, path: &str, rows: &mut RowEmitter<'_, '_>) -> Result<(), ReadError> {
    let Some(doc) = read_whole(input, "JSON", "export NDJSON (`format.kind: ndjson`) instead")? else {
        return Ok(()); // empty file: no records
    };
    let items = records_at(&doc, path).map_err(ReadError::Malformed)?;
    for item in items {
        let raw = || serde_json::to_vec(item).unwrap_or_default();
        match item {
            Value::Object(obj) => {
                rows.note_new_keys(obj, "")?;
                record(obj, None, raw, rows)?
            }
            _ => rows.bad(None, RowError::record("the record is not a JSON object"), raw())?,
        }
    }
    Ok(())
}

/// A document read whole, at most [`MAX_DOCUMENT_BYTES`] (`what` names its format in messages, `instead` says
/// what to do with a larger one); `None` for an empty file.
pub(super) fn read_whole(input: Box<dyn Read + Send>, what: &str, instead: &str) -> Result<Option<Value>, ReadError> {
    let mut bytes = Vec::new();
    input.take(MAX_DOCUMENT_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(ReadError::Malformed(format!("{what} document larger than 1 GiB; {instead}")));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let doc = serde_json::from_slice(&bytes)
        .map_err(|e| ReadError::Malformed(format!("not a {what} document: {}", json_error(&e, None))))?;
    Ok(Some(doc))
}

/// The value at a dotted path of a document (empty: the document itself); `Err` names the first segment missing.
pub(crate) fn walk<'a, 'p>(doc: &'a Value, path: &'p str) -> Result<&'a Value, &'p str> {
    if path.is_empty() {
        return Ok(doc);
    }
    path.split('.').try_fold(doc, |node, seg| node.get(seg).ok_or(seg))
}

/// The array of records at `path` (`format.records`), or why there is none. The `http` connector checks each page
/// with it, so a page it keeps is one the reader reads.
pub(crate) fn records_at<'a>(doc: &'a Value, path: &str) -> Result<&'a Vec<Value>, String> {
    let node = walk(doc, path).map_err(|seg| format!("no `{seg}` in the document (format.records is `{path}`)"))?;
    match node {
        Value::Array(items) => Ok(items),
        _ => Err(format!("`{}` is not an array of records", if path.is_empty() { "the document" } else { path })),
    }
}

pub(super) fn record(
    obj: &Map<String, Value>,
    line: Option<u64>,
    raw: impl FnOnce() -> Vec<u8>,
    rows: &mut RowEmitter<'_, '_>,
) -> Result<(), ReadError> {
    let plan = rows.plan();
    // Columns read under another accepted name than their first, noted for the ledger.
    let mut renamed: Vec<(usize, usize)> = Vec::new();
    let mut fields = |i: usize| {
        let (text, used) = field_named(obj, &plan.columns[i])?;
        if used > 0 {
            renamed.push((i, used));
        }
        Ok(text)
    };
    let result = if plan.children.is_empty() {
        rows.row(&mut fields, line, raw)
    } else {
        record_with_children(obj, plan, &mut fields, line, raw, rows)
    };
    for (i, used) in renamed {
        rows.note_read_as(&plan.columns[i].name, &plan.columns[i].input[used]);
    }
    result
}

fn record_with_children<'a>(
    obj: &'a Map<String, Value>,
    plan: &super::TablePlan,
    fields: impl FnMut(usize) -> Result<Option<Cow<'a, str>>, RowError>,
    line: Option<u64>,
    raw: impl FnOnce() -> Vec<u8>,
    rows: &mut RowEmitter<'_, '_>,
) -> Result<(), ReadError> {
    // The arrays of `explode`: absent or null is none; anything else than an array is a type error.
    let mut arrays = Vec::with_capacity(plan.children.len());
    for child in &plan.children {
        match lookup(obj, &child.path) {
            Ok(None | Some(Value::Null)) => arrays.push(&[][..]),
            Ok(Some(Value::Array(items))) => arrays.push(items.as_slice()),
            Ok(Some(other)) => {
                let reason = format!("expected an array, found {}", kind(other));
                return rows.bad(line, RowError { column: Some(child.path.clone()), reason }, raw());
            }
            Err(reason) => return rows.bad(line, RowError { column: Some(child.path.clone()), reason }, raw()),
        }
    }
    let elements = Arrays(arrays);
    rows.row_nested(fields, &elements, line, raw)
}

/// The arrays of one record, one per child table.
struct Arrays<'a>(Vec<&'a [Value]>);

impl<'a> super::Elements<'a> for Arrays<'a> {
    fn len(&self, child: usize) -> usize {
        self.0[child].len()
    }

    /// An element's field: the element itself for `from: .`, else a key or path of the element, an object.
    fn field(&self, child: usize, element: usize, col: &ColumnPlan) -> Result<Option<Cow<'a, str>>, RowError> {
        let v = &self.0[child][element];
        if col.input.iter().any(|n| n == ".") {
            return typed_text(v, col);
        }
        match v {
            Value::Object(obj) => field(obj, col),
            Value::Null => Ok(None),
            other => Err(RowError {
                column: Some(col.name.clone()),
                reason: format!("expected an object, found {} (`from: .` reads the element itself)", kind(other)),
            }),
        }
    }
}

/// The text of a declared column's value, which must have the column's JSON type: a string for string, date and
/// timestamp columns, a number for int, double and decimal, a boolean for bool (any scalar, and objects and
/// arrays as JSON text, with `coerce: true`); any value for json. Null and absent are no value.
pub(super) fn field<'a>(obj: &'a Map<String, Value>, col: &ColumnPlan) -> Result<Option<Cow<'a, str>>, RowError> {
    field_named(obj, col).map(|(text, _)| text)
}

/// [`field`], with the position in `col.input` of the name the record holds it under (0 when absent).
fn field_named<'a>(obj: &'a Map<String, Value>, col: &ColumnPlan) -> Result<(Option<Cow<'a, str>>, usize), RowError> {
    let type_error = |reason: String| RowError { column: Some(col.name.clone()), reason };
    let mut held = Vec::new();
    for (k, name) in col.input.iter().enumerate() {
        if let Some(v) = lookup(obj, name).map_err(type_error)?.filter(|v| !v.is_null()) {
            held.push((k, name, v));
        }
    }
    match held.as_slice() {
        [] => Ok((None, 0)),
        [(k, _, v)] => Ok((typed_text(v, col)?, *k)),
        [(_, a, _), (_, b, _), ..] => {
            Err(type_error(format!("the record holds more than one accepted name of the column: `{a}` and `{b}`")))
        }
    }
}

/// A value's text, if it has the column's JSON type.
pub(super) fn typed_text<'a>(v: &'a Value, col: &ColumnPlan) -> Result<Option<Cow<'a, str>>, RowError> {
    let expected = match col.ty {
        ColumnType::Json => return Ok((!v.is_null()).then(|| Cow::Owned(v.to_string()))),
        // Checked item by item, field by field, when the row is parsed.
        ColumnType::List | ColumnType::Struct => return Ok((!v.is_null()).then(|| Cow::Owned(v.to_string()))),
        ColumnType::String | ColumnType::Date | ColumnType::Timestamp => "a string",
        ColumnType::Int | ColumnType::Double | ColumnType::Decimal => "a number",
        ColumnType::Bool => "a boolean",
    };
    match v {
        Value::Null => Ok(None),
        Value::String(s) if expected == "a string" || col.coerce => Ok(Some(Cow::Borrowed(s))),
        Value::Number(n) if expected == "a number" || col.coerce => Ok(Some(Cow::Owned(n.to_string()))),
        Value::Bool(b) if expected == "a boolean" || col.coerce => {
            Ok(Some(Cow::Borrowed(if *b { "true" } else { "false" })))
        }
        Value::Array(_) | Value::Object(_) if col.coerce && col.ty == ColumnType::String => {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        other => {
            let hint = if col.coerce { "" } else { " (`coerce: true` reads it through its text)" };
            let hint = if matches!(other, Value::Array(_) | Value::Object(_)) { "" } else { hint };
            Err(RowError {
                column: Some(col.name.clone()),
                reason: format!("expected {expected}, found {}{hint}", kind(other)),
            })
        }
    }
}

/// The value at a key, or at a dotted path through objects (`victim.name`); a path that meets something other
/// than an object on the way is an error naming where (`victim: expected an object, found a string`).
pub(crate) fn lookup<'a>(obj: &'a Map<String, Value>, path: &str) -> Result<Option<&'a Value>, String> {
    if let Some(v) = obj.get(path) {
        return Ok(Some(v));
    }
    let mut parts = path.split('.');
    let Some(first) = parts.next() else { return Ok(None) };
    let Some(mut node) = obj.get(first) else { return Ok(None) };
    let mut walked = first.len();
    for p in parts {
        node = match node {
            Value::Object(m) => match m.get(p) {
                Some(n) => n,
                None => return Ok(None),
            },
            Value::Null => return Ok(None),
            other => return Err(format!("{}: expected an object, found {}", &path[..walked], kind(other))),
        };
        walked += 1 + p.len();
    }
    Ok(Some(node))
}

/// A JSON value's kind, for messages (never its content).
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let Some((&last, rest)) = l.split_last() {
        if last == b'\n' || last == b'\r' {
            l = rest;
        } else {
            break;
        }
    }
    l
}

/// Describes a JSON error by kind and position in the file, without quoting the input: `file_line` is the
/// file line of a one-line record (NDJSON), whose own line 1 it is.
pub(crate) fn json_error(e: &serde_json::Error, file_line: Option<u64>) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected JSON value",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    let line = file_line.unwrap_or(e.line() as u64);
    format!("{kind} at line {line} column {}", e.column())
}
