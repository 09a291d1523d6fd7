//! JSON records: NDJSON (one object per line, streamed) and a JSON document holding an array of records.
//!
//! A declared column's input name may be a dotted path into nested objects (`location.lat`). Numbers and
//! booleans are read through their JSON text, so `"12"` and `12` both fit an `int` column; objects and arrays
//! land as JSON text in string columns.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read};

use serde_json::{Map, Value};

use super::{ReadError, RowEmitter, RowError};

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
            Ok(Value::Object(obj)) => record(&obj, Some(line_no), || text.to_vec(), rows)?,
            Ok(_) => rows.bad(Some(line_no), RowError::record("the line is not a JSON object"), text.to_vec())?,
            Err(e) => rows.bad(Some(line_no), RowError::record(json_error(&e)), text.to_vec())?,
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
    let mut bytes = Vec::new();
    input.take(MAX_DOCUMENT_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(ReadError::Malformed(
            "JSON document larger than 1 GiB; export NDJSON (`format.kind: ndjson`) instead".into(),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(()); // empty file: no records
    }
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ReadError::Malformed(format!("not a JSON document: {}", json_error(&e))))?;
    let mut node = &doc;
    if !path.is_empty() {
        for seg in path.split('.') {
            node = node.get(seg).ok_or_else(|| {
                ReadError::Malformed(format!("no `{seg}` in the document (format.records is `{path}`)"))
            })?;
        }
    }
    let Value::Array(items) = node else {
        return Err(ReadError::Malformed(format!(
            "`{}` is not an array of records",
            if path.is_empty() { "the document" } else { path }
        )));
    };
    for item in items {
        let raw = || serde_json::to_vec(item).unwrap_or_default();
        match item {
            Value::Object(obj) => record(obj, None, raw, rows)?,
            _ => rows.bad(None, RowError::record("the record is not a JSON object"), raw())?,
        }
    }
    Ok(())
}

fn record(
    obj: &Map<String, Value>,
    line: Option<u64>,
    raw: impl FnOnce() -> Vec<u8>,
    rows: &mut RowEmitter<'_, '_>,
) -> Result<(), ReadError> {
    let inputs = rows.plan().inputs.clone();
    rows.row(|i| Ok(lookup(obj, &inputs[i]).and_then(text)), line, raw)
}

fn lookup<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = obj.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut node = obj.get(parts.next()?)?;
    for p in parts {
        node = node.get(p)?;
    }
    Some(node)
}

fn text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        other => Some(Cow::Owned(other.to_string())),
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

/// Describes a JSON error by kind and position, without quoting the input.
fn json_error(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected JSON value",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}
