//! Delimited text: any single-byte delimiter and quote, optional header, UTF-8 / Windows-1252 / ISO-8859-1.
//!
//! Fields are split on bytes (delimiter and quote are ASCII, so this is safe in every supported encoding) and
//! decoded one by one. A record with the wrong number of fields, or a field that is not valid in the declared
//! encoding, is quarantined; the file goes on.

use std::borrow::Cow;
use std::io::Read;

use super::{ReadError, RowEmitter, RowError, decode};
use crate::manifest::Encoding;

pub struct Dialect {
    pub delimiter: u8,
    pub quote: u8,
    pub header: bool,
    pub encoding: Encoding,
    pub nulls: Vec<String>,
}

pub fn read(
    input: Box<dyn Read + Send>,
    d: &Dialect,
    limits: crate::manifest::ReadLimits,
    rows: &mut RowEmitter<'_, '_>,
) -> Result<(), ReadError> {
    let crlf = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    // Oversized records, overlong quoted fields and a quote never closed are flagged by their first line.
    let (guarded, flags) = super::limits::CsvGuard::new(input, d.delimiter, d.quote, limits);
    let input = LineEndingProbe { inner: Box::new(guarded), last: 0, found: crlf.clone() };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(d.delimiter)
        .quote(d.quote)
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(input);
    let mut record = csv::ByteRecord::new();
    let n_declared = rows.plan().columns.len();

    // Which field of the record feeds each declared column.
    let (positions, expected_fields) = if d.header {
        if !read_record(&mut reader, &mut record)? {
            return Ok(()); // empty file: no records
        }
        let names: Vec<String> = record
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let f = if i == 0 { f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f) } else { f };
                decode(f, d.encoding).map(|s| s.trim().to_string()).unwrap_or_default()
            })
            .collect();
        let matched = rows.match_fields(&names, "line 1: the header")?;
        if !matched.missing.is_empty() {
            // The first line is not echoed: in a file without a header it is a record (names, phone numbers).
            let found = &matched.found;
            return Err(ReadError::Malformed(format!(
                "line 1: the header lacks the declared column(s) {}; of its {} field(s), {} match declared columns{}{}",
                matched.missing.join(", "),
                names.len(),
                found.len(),
                if found.is_empty() { String::new() } else { format!(" ({})", found.join(", ")) },
                if found.is_empty() {
                    " (if the file has no header line, set `header: false` in the manifest's format)"
                } else {
                    " (the other fields are not shown: they may be data)"
                }
            )));
        }
        let positions = matched.positions;
        (positions, names.len())
    } else {
        ((0..n_declared).collect(), n_declared)
    };

    let nulls: Vec<&[u8]> = d.nulls.iter().map(|n| n.as_bytes()).collect();
    let is_null = |f: &[u8]| {
        let f = trim(f);
        nulls.contains(&f)
    };
    while read_record(&mut reader, &mut record)? {
        // With `\r\n` line ends the csv crate counts a record's `\n` only when it reads the next record, so
        // record positions are one line short: correct them.
        let lag = u64::from(crlf.load(std::sync::atomic::Ordering::Relaxed) == CRLF);
        let line = record.position().map(|p| p.line() + lag);
        if let Some(reason) = line.and_then(|l| flags.take(l)) {
            rows.bad(line, RowError::record(reason), raw(&record, d))?;
            continue;
        }
        if record.len() != expected_fields {
            // A lone empty line parses as one empty field: not a record.
            if record.len() == 1 && record[0].is_empty() {
                continue;
            }
            let error = RowError::record(format!("expected {expected_fields} fields, found {}", record.len()));
            rows.bad(line, error, raw(&record, d))?;
            continue;
        }
        let rec = &record;
        // UTF-8 is checked once for the whole record (every field's bytes, one after the other), not field by
        // field; a field whose bytes do not make text on their own (or a record that is not UTF-8) is decoded
        // alone, for the error that names it.
        let whole = if d.encoding == Encoding::Utf8 { std::str::from_utf8(rec.as_slice()).ok() } else { None };
        rows.row(
            |i| {
                let p = positions[i];
                if let Some(f) = whole.zip(rec.range(p)).and_then(|(text, range)| text.get(range)) {
                    return Ok(if is_null(f.as_bytes()) { None } else { Some(Cow::Borrowed(f)) });
                }
                let f = &rec[p];
                if is_null(f) { Ok(None) } else { decode(f, d.encoding).map(Some) }
            },
            line,
            || raw(rec, d),
        )?;
    }
    Ok(())
}

const CRLF: u8 = 2;

/// Notes whether the first line of the input ends with `\r\n` (2) or `\n` (1).
struct LineEndingProbe {
    inner: Box<dyn Read + Send>,
    last: u8,
    found: std::sync::Arc<std::sync::atomic::AtomicU8>,
}

impl Read for LineEndingProbe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.found.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            for &b in &buf[..n] {
                if b == b'\n' {
                    self.found.store(if self.last == b'\r' { CRLF } else { 1 }, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                self.last = b;
            }
        }
        Ok(n)
    }
}

fn read_record<R: Read>(reader: &mut csv::Reader<R>, record: &mut csv::ByteRecord) -> Result<bool, ReadError> {
    reader.read_byte_record(record).map_err(|e| match e.into_kind() {
        csv::ErrorKind::Io(io) => ReadError::Io(io),
        other => ReadError::Malformed(format!("{other:?}")),
    })
}

fn trim(f: &[u8]) -> &[u8] {
    let start = f.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(f.len());
    let end = f.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &f[start..end]
}

/// The record re-serialized with the file's dialect (the original bytes, quoted where needed).
fn raw(record: &csv::ByteRecord, d: &Dialect) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in record.iter().enumerate() {
        if i > 0 {
            out.push(d.delimiter);
        }
        if f.iter().any(|&b| b == d.delimiter || b == d.quote || b == b'\n' || b == b'\r') {
            out.push(d.quote);
            for &b in f {
                if b == d.quote {
                    out.push(b);
                }
                out.push(b);
            }
            out.push(d.quote);
        } else {
            out.extend_from_slice(f);
        }
    }
    out
}
