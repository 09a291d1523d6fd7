//! Delimited text: any single-byte delimiter and quote, optional header, UTF-8 / Windows-1252 / ISO-8859-1.
//!
//! [`Splitter`] cuts the input into batches of records, each field a range of the batch's bytes (no copy), with
//! the quoting rules of RFC 4180 as the `csv` crate reads them: a quote opens a quoted field only at the field's
//! start, a doubled quote inside it is one quote, text after the closing quote belongs to the field, `\n`, `\r`
//! and `\r\n` end a record, blank lines are skipped. It also applies the project's `limits` to each record: a
//! record larger than `max_record_bytes` (only its first bytes are held), a quoted field spanning more than
//! `max_record_lines` lines, and a quote still open at the end of the file are faults of that record, located by
//! the line where it starts. The batch's values are then read column by column ([`RowEmitter::rows`]); a
//! record with the wrong number of fields, or a field that is not valid in the declared encoding, is quarantined;
//! the file goes on.

use std::borrow::Cow;
use std::io::Read;

use super::{ReadError, Records, RowEmitter, RowError, decode};
use crate::manifest::{Encoding, ReadLimits};

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
    limits: ReadLimits,
    rows: &mut RowEmitter<'_, '_>,
) -> Result<(), ReadError> {
    let mut split = Splitter::new(input, d.delimiter, d.quote, limits);
    let n_declared = rows.plan().columns.len();

    // Which field of the record feeds each declared column.
    let (positions, expected_fields) = if d.header {
        if !split.next_batch(1)? {
            return Ok(()); // empty file: no records
        }
        let header = &split.recs[0];
        if let Some(fault) = &header.fault {
            return Err(ReadError::Malformed(format!("line {}: the header: {}", header.line, fault.reason)));
        }
        let names: Vec<String> = split
            .record_fields(0)
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let f = if i == 0 { f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f) } else { f };
                decode(f, d.encoding).map(|s| s.trim().to_string()).unwrap_or_default()
            })
            .collect();
        let at = format!("line {}: the header", header.line);
        let matched = rows.match_fields(&names, &at)?;
        if !matched.missing.is_empty() {
            // The first line is not echoed: in a file without a header it is a record (names, phone numbers).
            let found = &matched.found;
            return Err(ReadError::Malformed(format!(
                "{at} lacks the declared column(s) {}; of its {} field(s), {} match declared columns{}{}",
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
        rows.note_new_fields(&matched.extra)?;
        (matched.positions, names.len())
    } else {
        ((0..n_declared).collect(), n_declared)
    };
    // A lone empty field (a line holding `""`) is not a record, unless records have one field.
    split.skip_lone_empty = expected_fields != 1;

    // The empty value is null anyway (values are trimmed); the others are compared after trimming.
    let nulls: Vec<&[u8]> = d.nulls.iter().map(|n| n.trim().as_bytes()).filter(|n| !n.is_empty()).collect();
    while split.next_batch(SPLIT_ROWS)? {
        let end = split.batch_end();
        // UTF-8 is checked once for the whole batch; a batch that is not valid UTF-8 is decoded field by field,
        // for the error that names the field.
        let text = if d.encoding == Encoding::Utf8 { simdutf8::basic::from_utf8(&split.buf[..end]).ok() } else { None };
        let batch = Batch { split: &split, text, positions: &positions, expected_fields, dialect: d, nulls: &nulls };
        rows.rows(&batch)?;
    }
    Ok(())
}

/// One batch of records, offered to [`RowEmitter::rows`].
struct Batch<'b, R> {
    split: &'b Splitter<R>,
    /// The batch's bytes, when they are UTF-8.
    text: Option<&'b str>,
    positions: &'b [usize],
    expected_fields: usize,
    dialect: &'b Dialect,
    /// Null markers other than the empty value, trimmed.
    nulls: &'b [&'b [u8]],
}

impl<R> Batch<'_, R> {
    /// Where declared column `column` of record `r` is in the batch's bytes.
    #[inline]
    fn range(&self, r: usize, column: usize) -> std::ops::Range<usize> {
        let (start, end) = self.split.fields[self.split.recs[r].first as usize + self.positions[column]];
        start as usize..end as usize
    }
}

impl<'b, R: Read> Records<'b> for Batch<'b, R> {
    fn count(&self) -> usize {
        self.split.recs.len()
    }

    fn fault(&self, r: usize) -> Option<RowError> {
        let rec = &self.split.recs[r];
        if let Some(fault) = &rec.fault {
            return Some(RowError::record(fault.reason.clone()));
        }
        (rec.len as usize != self.expected_fields)
            .then(|| RowError::record(format!("expected {} fields, found {}", self.expected_fields, rec.len)))
    }

    #[inline]
    fn field(&self, r: usize, column: usize) -> Result<Option<Cow<'b, str>>, RowError> {
        let range = self.range(r, column);
        let bytes = &self.split.buf[range.clone()];
        if !self.nulls.is_empty() && self.nulls.contains(&bytes.trim_ascii()) {
            return Ok(None);
        }
        // Field ranges start and end at ASCII bytes (delimiters, quotes, line ends), so at character boundaries.
        match self.text.and_then(|t| t.get(range)) {
            Some(s) => Ok(Some(Cow::Borrowed(s))),
            None => decode(bytes, self.dialect.encoding).map(Some),
        }
    }

    #[inline]
    fn text(&self, r: usize, column: usize) -> Option<&'b str> {
        if !self.nulls.is_empty() {
            return None;
        }
        self.text?.get(self.range(r, column))
    }

    fn line(&self, r: usize) -> Option<u64> {
        Some(self.split.recs[r].line)
    }

    fn raw(&self, r: usize) -> Vec<u8> {
        match self.split.recs[r].fault.as_ref().and_then(|f| f.raw.clone()) {
            Some(raw) => raw,
            None => raw(&self.split.record_fields(r), self.dialect),
        }
    }
}

/// Records per batch: their bytes and fields stay in the processor's cache while they are read column by
/// column (batches of 64k records, megabytes, were read from memory once per column).
const SPLIT_ROWS: usize = 2048;
/// A batch is closed past this many bytes (or [`SPLIT_ROWS`] records), whatever the size of its records.
const BATCH_BYTES: usize = 1 << 20;
/// Bytes asked of the input at a time.
const READ_CHUNK: usize = 256 << 10;
/// Field ranges are 32-bit offsets into a batch: a record is cut at this size whatever `max_record_bytes` says.
const MAX_RECORD_BYTES: u64 = 1 << 30;

/// One record of a batch.
struct Rec {
    /// Its fields are `fields[first..first + len]`.
    first: u32,
    len: u32,
    /// The line where it starts (1-based).
    line: u64,
    /// Why it is quarantined whatever its fields hold (a limit), and its bytes when they are not its fields'.
    fault: Option<Box<Fault>>,
}

struct Fault {
    reason: String,
    raw: Option<Vec<u8>>,
}

/// How scanning one record from a position ended.
enum Scan {
    /// The record ends before `end` (past its line end, if any); `newlines` line ends are inside its quoted
    /// fields; `open` when the input ended inside a quoted field.
    Record { end: usize, newlines: u64, line_end: bool, open: bool },
    /// The record goes on past the bytes read.
    More,
}

/// See the module documentation.
pub struct Splitter<R> {
    input: R,
    delimiter: u8,
    quote: u8,
    max_record_bytes: u64,
    max_record_lines: u64,
    /// The bytes that end an unquoted field: the delimiter, `\r`, `\n`.
    stops: [bool; 256],
    /// The batch's bytes, then bytes read ahead.
    buf: Vec<u8>,
    /// Bytes of `buf` read from the input.
    filled: usize,
    /// Where the next record (or the blank lines before it) starts.
    pos: usize,
    eof: bool,
    /// The line at `pos`.
    line: u64,
    /// The batch's fields, as ranges of `buf`.
    fields: Vec<(u32, u32)>,
    recs: Vec<Rec>,
    /// Fields of the record being scanned that hold doubled quotes or text after their closing quote.
    unquote: Vec<usize>,
    /// Drop records made of one empty field.
    skip_lone_empty: bool,
}

impl<R: Read> Splitter<R> {
    pub fn new(input: R, delimiter: u8, quote: u8, limits: ReadLimits) -> Self {
        let mut stops = [false; 256];
        for b in [delimiter, b'\r', b'\n'] {
            stops[b as usize] = true;
        }
        Self {
            input,
            delimiter,
            quote,
            max_record_bytes: limits.max_record_bytes.clamp(1, MAX_RECORD_BYTES),
            max_record_lines: limits.max_record_lines.max(1),
            stops,
            buf: Vec::new(),
            filled: 0,
            pos: 0,
            eof: false,
            line: 1,
            fields: Vec::new(),
            recs: Vec::new(),
            unquote: Vec::new(),
            skip_lone_empty: false,
        }
    }

    /// Reads the next batch of at most `max` records; false when the input has no more.
    pub fn next_batch(&mut self, max: usize) -> std::io::Result<bool> {
        // The previous batch's bytes are dropped; what was read ahead moves to the front.
        self.buf.copy_within(self.pos..self.filled, 0);
        self.filled -= self.pos;
        self.pos = 0;
        self.recs.clear();
        self.fields.clear();
        while self.recs.len() < max && self.pos < BATCH_BYTES {
            if !self.skip_blank_lines()? {
                break;
            }
            self.record()?;
        }
        Ok(!self.recs.is_empty())
    }

    /// The end of the last record of the batch in `buf`.
    pub fn batch_end(&self) -> usize {
        self.pos.min(self.filled)
    }

    /// The fields of record `r` of the batch.
    pub fn record_fields(&self, r: usize) -> Vec<&[u8]> {
        let rec = &self.recs[r];
        let fields = &self.fields[rec.first as usize..(rec.first + rec.len) as usize];
        fields.iter().map(|&(s, e)| &self.buf[s as usize..e as usize]).collect()
    }

    /// Reads more of the input after `filled`; false at its end.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.buf.len() - self.filled < READ_CHUNK {
            self.buf.resize(self.filled + READ_CHUNK, 0);
        }
        // Until the room is full (decompressors and pipes hand out a few kB at a time).
        let before = self.filled;
        while self.filled < self.buf.len() {
            match self.input.read(&mut self.buf[self.filled..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.filled > before)
    }

    /// Skips line ends before a record; false at the end of the input.
    fn skip_blank_lines(&mut self) -> std::io::Result<bool> {
        loop {
            while self.pos < self.filled {
                match self.buf[self.pos] {
                    b'\n' => self.line += 1,
                    b'\r' => {}
                    _ => return Ok(true),
                }
                self.pos += 1;
            }
            if !self.fill()? {
                return Ok(false);
            }
        }
    }

    /// Reads the record at `pos` (not a line end) into the batch.
    fn record(&mut self) -> std::io::Result<()> {
        let start = self.pos;
        let first = self.fields.len();
        loop {
            match self.scan(start) {
                Scan::Record { end, newlines, line_end, open } => {
                    // Its length without the line end.
                    let len = (end - start - usize::from(line_end)) as u64;
                    let fault = if open {
                        let last = self.line + newlines - u64::from(self.buf[end - 1] == b'\n');
                        Some(self.never_closed(last))
                    } else if len > self.max_record_bytes {
                        Some(self.too_large(start))
                    } else if newlines >= self.max_record_lines {
                        Some(self.too_many_lines())
                    } else {
                        None
                    };
                    let line = self.line;
                    self.line += newlines + u64::from(line_end && self.buf[end - 1] == b'\n');
                    self.pos = end;
                    match fault {
                        // Only its first bytes are kept.
                        Some(fault) if fault.raw.is_some() => {
                            self.fields.truncate(first);
                            self.push(first, line, Some(fault));
                        }
                        // Its fields are its raw text in the quarantine (with the lines a quote swallowed).
                        fault => {
                            self.unquote_fields();
                            let lone_empty =
                                self.fields.len() == first + 1 && self.fields[first].0 == self.fields[first].1;
                            if fault.is_none() && lone_empty && self.skip_lone_empty {
                                self.fields.truncate(first);
                            } else {
                                self.push(first, line, fault);
                            }
                        }
                    }
                    return Ok(());
                }
                Scan::More => {
                    self.fields.truncate(first);
                    if (self.filled - start) as u64 > self.max_record_bytes {
                        return self.skip_large(start);
                    }
                    // Read at least as much again as the record holds so far: a long record is scanned again a
                    // bounded number of times.
                    let want = self.filled + (self.filled - start).max(READ_CHUNK);
                    if self.buf.len() < want {
                        self.buf.resize(want, 0);
                    }
                    self.fill()?;
                }
            }
        }
    }

    fn push(&mut self, first: usize, line: u64, fault: Option<Fault>) {
        let len = self.fields.len() - first;
        self.recs.push(Rec { first: first as u32, len: len as u32, line, fault: fault.map(Box::new) });
    }

    fn never_closed(&self, last_line: u64) -> Fault {
        Fault {
            reason: format!(
                "a quoted field opened in this record is never closed: the file ends inside it (lines {}–{last_line}); \
                 the record and the lines after it are quarantined together",
                self.line
            ),
            raw: None,
        }
    }

    fn too_many_lines(&self) -> Fault {
        Fault {
            reason: format!(
                "a quoted field spans more than {} lines (limits.max_record_lines): a quote that is never closed?",
                self.max_record_lines
            ),
            raw: None,
        }
    }

    /// The fault of a record over `max_record_bytes` starting at `start`, with its first bytes.
    fn too_large(&self, start: usize) -> Fault {
        let max = self.max_record_bytes;
        Fault {
            reason: format!(
                "the record is larger than {max} bytes (limits.max_record_bytes); its first {max} bytes are kept"
            ),
            raw: Some(self.buf[start..start + max as usize].to_vec()),
        }
    }

    /// Scans the record starting at `start`, appending its fields (ranges of `buf`) to `fields`.
    #[inline]
    fn scan(&mut self, start: usize) -> Scan {
        self.unquote.clear();
        let (delimiter, quote) = (self.delimiter, self.quote);
        let buf = &self.buf[..self.filled];
        let n = buf.len();
        let mut i = start;
        let mut newlines = 0;
        loop {
            let field_start = i;
            let mut open = false;
            let mut range = (i, i);
            if i < n && buf[i] == quote {
                // A quoted field: up to the quote that is not doubled.
                let content = i + 1;
                let mut j = content;
                let mut escaped = false;
                let close = loop {
                    match memchr::memchr2(quote, b'\n', &buf[j..]) {
                        None if self.eof => {
                            open = true;
                            break n;
                        }
                        None => return Scan::More,
                        Some(p) if buf[j + p] == b'\n' => {
                            newlines += 1;
                            j += p + 1;
                        }
                        Some(p) => {
                            let q = j + p;
                            match buf.get(q + 1) {
                                Some(&b) if b == quote => {
                                    escaped = true;
                                    j = q + 2;
                                }
                                None if !self.eof => return Scan::More,
                                _ => break q,
                            }
                        }
                    }
                };
                i = if open { n } else { close + 1 };
                // Text after the closing quote belongs to the field (the quotes in it are text).
                let after = i;
                i += buf[i..].iter().position(|&b| self.stops[b as usize]).unwrap_or(n - i);
                if escaped || i > after {
                    self.unquote.push(self.fields.len());
                    range = (field_start, i);
                } else {
                    range = (content, close.min(n));
                }
            } else {
                i += buf[i..].iter().position(|&b| self.stops[b as usize]).unwrap_or(n - i);
                range.1 = i;
            }
            if i == n && !self.eof {
                return Scan::More;
            }
            self.fields.push((range.0 as u32, range.1 as u32));
            if i == n {
                return Scan::Record { end: n, newlines, line_end: false, open };
            }
            let b = buf[i];
            i += 1;
            if b != delimiter {
                return Scan::Record { end: i, newlines, line_end: true, open: false };
            }
        }
    }

    /// Replaces the quoted fields noted in `unquote` by their text (in place: the text is never longer), the
    /// bytes left over blanked so that the batch stays valid UTF-8.
    fn unquote_fields(&mut self) {
        let quote = self.quote;
        for &f in &self.unquote {
            let (start, end) = (self.fields[f].0 as usize, self.fields[f].1 as usize);
            let (mut r, mut w, mut quoted) = (start + 1, start, true);
            while r < end {
                let b = self.buf[r];
                r += 1;
                if quoted && b == quote {
                    if r < end && self.buf[r] == quote {
                        r += 1;
                    } else {
                        quoted = false;
                        continue;
                    }
                }
                self.buf[w] = b;
                w += 1;
            }
            self.buf[w..end].fill(b' ');
            self.fields[f].1 = w as u32;
        }
    }

    /// A record passing `max_record_bytes` before it ends: its first bytes are kept; the rest is read through
    /// (following its quotes, counting its lines) and dropped. Its fault is its size, or a quote never closed.
    fn skip_large(&mut self, start: usize) -> std::io::Result<()> {
        let mut fault = self.too_large(start);
        let line = self.line;
        let (mut quoted, mut after_quote, mut at_field_start) = (false, false, true);
        let mut newlines = 0u64;
        let mut i = start;
        loop {
            while i < self.filled {
                let b = self.buf[i];
                i += 1;
                if quoted {
                    if b == self.quote {
                        quoted = false;
                        after_quote = true;
                    } else if b == b'\n' {
                        newlines += 1;
                    }
                    continue;
                }
                if after_quote && b == self.quote {
                    // A doubled quote: still inside the quoted field.
                    quoted = true;
                    after_quote = false;
                    continue;
                }
                after_quote = false;
                if at_field_start && b == self.quote {
                    quoted = true;
                    at_field_start = false;
                } else if b == self.delimiter {
                    at_field_start = true;
                } else if b == b'\n' || b == b'\r' {
                    self.line += newlines + u64::from(b == b'\n');
                    self.pos = i;
                    self.finish_skipped(start, line, fault);
                    return Ok(());
                } else {
                    at_field_start = false;
                }
            }
            // Nothing of the record is held past its first bytes: read on over what was scanned.
            let last = self.buf[self.filled - 1];
            self.filled = start;
            i = start;
            if !self.fill()? {
                if quoted {
                    let last_line = line + newlines - u64::from(last == b'\n');
                    fault = Fault { raw: fault.raw, ..self.never_closed(last_line) };
                }
                self.line = line + newlines;
                self.pos = self.filled;
                self.finish_skipped(start, line, fault);
                return Ok(());
            }
        }
    }

    /// Records the skipped record at `start` (its bytes are gone: the batch's bytes end there).
    fn finish_skipped(&mut self, start: usize, line: u64, fault: Fault) {
        let first = self.fields.len();
        self.push(first, line, Some(fault));
        // What follows the record moves down to `start`, where the batch's bytes now end.
        self.buf.copy_within(self.pos..self.filled, start);
        self.filled -= self.pos - start;
        self.pos = start;
    }
}

/// The record re-serialized with the file's dialect (the original bytes, quoted where needed).
fn raw(fields: &[&[u8]], d: &Dialect) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(d.delimiter);
        }
        if f.iter().any(|&b| b == d.delimiter || b == d.quote || b == b'\n' || b == b'\r') {
            out.push(d.quote);
            for &b in *f {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An input handed out `chunk` bytes at a time.
    struct Chunks<'a>(&'a [u8], usize);

    impl Read for Chunks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// (line, fields, fault) of every record, read in batches of `batch` records.
    type Split = Vec<(u64, Vec<Vec<u8>>, Option<String>)>;

    fn split(text: &[u8], limits: ReadLimits, chunk: usize, batch: usize) -> Split {
        let mut s = Splitter::new(Chunks(text, chunk), b';', b'"', limits);
        let mut out = Vec::new();
        while s.next_batch(batch).unwrap() {
            assert!(std::str::from_utf8(text).is_err() || std::str::from_utf8(&s.buf[..s.batch_end()]).is_ok());
            for r in 0..s.recs.len() {
                let fields = s.record_fields(r).into_iter().map(<[u8]>::to_vec).collect();
                let fault = s.recs[r].fault.as_ref().map(|f| f.reason.clone());
                out.push((s.recs[r].line, fields, fault));
            }
        }
        out
    }

    fn strings(records: &Split) -> Vec<(u64, Vec<String>)> {
        records
            .iter()
            .map(|(line, fields, _)| (*line, fields.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect()))
            .collect()
    }

    /// On random CSV-like input (quotes in every position, doubled quotes, text after closing quotes, `\r`,
    /// `\r\n`, blank lines, multi-byte characters), read in random chunks and batches, the fields are the `csv`
    /// crate's, record for record.
    #[test]
    fn fields_are_those_of_the_csv_crate() {
        let alphabet: [&[u8]; 10] = [b"a", b"b", b";", b"\"", b"\"\"", b"\n", b"\r", b"\r\n", b" ", "é".as_bytes()];
        let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1du64);
        for case in 0..5000 {
            let len = (next() % 200) as usize;
            let text: Vec<u8> =
                (0..len).flat_map(|_| alphabet[(next() % alphabet.len() as u64) as usize].to_vec()).collect();
            let chunk = 1 + (next() % 70) as usize;
            let batch = 1 + (next() % 5) as usize;
            let ours = split(&text, ReadLimits::default(), chunk, batch);
            let mut reader = ::csv::ReaderBuilder::new()
                .delimiter(b';')
                .has_headers(false)
                .flexible(true)
                .from_reader(text.as_slice());
            let theirs: Vec<Vec<Vec<u8>>> =
                reader.byte_records().map(|r| r.unwrap().iter().map(<[u8]>::to_vec).collect()).collect();
            assert_eq!(ours.len(), theirs.len(), "case {case}: {:?}", String::from_utf8_lossy(&text));
            for (i, ((_, fields, fault), expected)) in ours.iter().zip(&theirs).enumerate() {
                match fault {
                    // A quote open at the end of the input: the last record, its fields not kept.
                    Some(reason) => assert!(reason.contains("never closed") && i == ours.len() - 1, "case {case}"),
                    None => assert_eq!(fields, expected, "case {case}: {:?}", String::from_utf8_lossy(&text)),
                }
            }
        }
    }

    /// Where a batch lends a field as text ([`Records::text`]), it is the text [`Records::field`] gives; with
    /// null markers declared, or in a batch that is not UTF-8, it lends nothing.
    #[test]
    fn a_field_lent_as_text_is_the_field() {
        let alphabet: [&[u8]; 9] = [b"a", b"1", b";", b"\"", b"\"\"", b"\n", b" ", "é".as_bytes(), b"\xff"];
        let mut next = crate::testing::xorshift(0x1234_5678_9abc_def1);
        let dialect = Dialect { delimiter: b';', quote: b'"', header: false, encoding: Encoding::Utf8, nulls: vec![] };
        let (positions, mut lent) = ([1, 0], 0);
        for case in 0..2000 {
            let len = (next() % 300) as usize;
            // A byte that is not UTF-8 (the last of the alphabet) in one input of five.
            let letters = if case % 5 == 0 { alphabet.len() } else { alphabet.len() - 1 } as u64;
            let text: Vec<u8> = (0..len).flat_map(|_| alphabet[(next() % letters) as usize].to_vec()).collect();
            let nulls: &[&[u8]] = if case % 4 == 0 { &[b"NA"] } else { &[] };
            let mut s = Splitter::new(text.as_slice(), b';', b'"', ReadLimits::default());
            while s.next_batch(1 + (next() % 7) as usize).unwrap() {
                let utf8 = simdutf8::basic::from_utf8(&s.buf[..s.batch_end()]).ok();
                let batch = Batch {
                    split: &s,
                    text: utf8,
                    positions: &positions,
                    expected_fields: 2,
                    dialect: &dialect,
                    nulls,
                };
                for r in (0..batch.count()).filter(|&r| batch.fault(r).is_none()) {
                    for c in 0..2 {
                        if let Some(t) = batch.text(r, c) {
                            assert!(nulls.is_empty() && utf8.is_some(), "case {case}");
                            assert_eq!(batch.field(r, c).unwrap().as_deref(), Some(t), "case {case}");
                            lent += 1;
                        }
                    }
                }
            }
        }
        assert!(lent > 1000, "{lent} fields lent");
    }

    /// Records are located by the line where they start, after blank lines, `\r\n` line ends and line breaks
    /// inside quoted fields.
    #[test]
    fn records_are_located_by_their_first_line() {
        let text = b"a;b\r\n1;2\r\n\r\n3;\"x\ny\"\n\n4;\"5 \"\"x\"\"\" y\n5";
        let got = strings(&split(text, ReadLimits::default(), 3, 2));
        let want = [(1, ["a", "b"]), (2, ["1", "2"]), (4, ["3", "x\ny"]), (7, ["4", "5 \"x\" y"]), (8, ["5", ""])];
        assert_eq!(got.len(), 5, "{got:?}");
        for ((line, fields), (l, f)) in got.iter().zip(want) {
            assert_eq!(*line, l);
            assert_eq!(fields[0], f[0]);
            if f[1].is_empty() {
                assert_eq!(fields.len(), 1);
            } else {
                assert_eq!(fields[1], f[1]);
            }
        }
    }

    /// The record keeps what the quote swallowed, for the quarantine.
    #[test]
    fn an_unclosed_quote_is_a_fault_of_its_record() {
        let text = b"a;b\n1;ok\n2;\"oops\n3;x\n4;y\n";
        let got = split(text, ReadLimits::default(), 1 << 20, 100);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].0, 3);
        let reason = got[2].2.as_deref().unwrap();
        assert!(reason.contains("never closed") && reason.contains("lines 3–5"), "{reason}");
        assert_eq!(got[2].1, [b"2".to_vec(), b"oops\n3;x\n4;y\n".to_vec()]);
    }

    /// Small limits: a quoted field over `max_record_lines` and a record over `max_record_bytes` (within the
    /// bytes read, and far past them, with quoted line breaks) are faults of their record, which keeps its first
    /// bytes; the records after them are read, at the right lines.
    #[test]
    fn records_over_the_limits_are_faults_and_the_next_ones_are_read() {
        let limits = ReadLimits { max_record_bytes: 16, max_record_lines: 3, ..ReadLimits::default() };
        let long = "x".repeat(100);
        let huge: String = (0..200_000).map(|i| format!("\"q{i}\nr\";")).collect();
        let text = format!("a;b\n1;\"l1\nl2\nl3\nl4\"\n2;{long}\n3;ok\n4;{huge}\n5;ok");
        for chunk in [7, 4096, 1 << 20] {
            let got = split(text.as_bytes(), limits, chunk, 3);
            let located: Vec<(u64, bool)> = got.iter().map(|(l, _, f)| (*l, f.is_some())).collect();
            assert_eq!(located, [(1, false), (2, true), (6, true), (7, false), (8, true), (200_009, false)], "{chunk}");
            assert!(got[1].2.as_deref().unwrap().contains("more than 3 lines"));
            assert!(got[2].2.as_deref().unwrap().contains("larger than 16 bytes"));
            assert!(got[4].2.as_deref().unwrap().contains("larger than 16 bytes"));
            assert_eq!(got[5].1, [b"5".to_vec(), b"ok".to_vec()]);
        }
        let mut s = Splitter::new(text.as_bytes(), b';', b'"', limits);
        while s.next_batch(100).unwrap() {
            if let Some(f) = s.recs.iter().filter_map(|r| r.fault.as_ref()).find(|f| f.raw.is_some()) {
                assert_eq!(f.raw.as_deref(), Some(format!("2;{}", &long[..14]).as_bytes()));
            }
        }
    }

    /// A quote opened in a record far larger than `max_record_bytes` and never closed: one record, its fault
    /// says so, with the lines it swallowed.
    #[test]
    fn a_large_record_open_to_the_end_is_never_closed() {
        let limits = ReadLimits { max_record_bytes: 100, max_record_lines: 1_000_000, ..ReadLimits::default() };
        let rest: String = (0..50_000).map(|i| format!("r{i};x\n")).collect();
        let text = format!("a;b\n1;\"{rest}");
        let got = split(text.as_bytes(), limits, 1 << 16, 10);
        assert_eq!(got.len(), 2);
        let reason = got[1].2.as_deref().unwrap();
        assert!(reason.contains("never closed") && reason.contains("lines 2–50001"), "{reason}");
    }
}
