//! Bounds on untrusted input, applied to the byte stream before a parser sees it.
//!
//! - [`Decompressed`] stops a compressed file whose decompressed size or ratio passes the limits (a
//!   decompression bomb): the file is not taken.
//! - [`CsvGuard`] follows the CSV quoting rules of the `csv` crate (a quote opens a field only at its start, a
//!   doubled quote is a quote) and flags, by the line where it starts, a record larger than
//!   `max_record_bytes`, a quoted field spanning more than `max_record_lines` lines, and a file that ends inside
//!   a quoted field (a quote never closed). Past `max_record_bytes` it forwards only the bytes that shape the
//!   record (quotes, delimiters, line ends), so the parser holds a bounded record and line numbers stay right;
//!   the CSV reader quarantines each flagged record with its reason.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::manifest::ReadLimits;

/// The error a reader returns when a file passes a limit (carried in an `io::Error`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LimitExceeded(pub String);

impl LimitExceeded {
    fn io(message: String) -> std::io::Error {
        std::io::Error::other(Self(message))
    }

    /// The limit message inside an I/O error, if it is one.
    pub fn find(e: &std::io::Error) -> Option<String> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<Self>()).map(|l| l.0.clone())
    }
}

/// Counts the bytes a decoder consumes (the compressed side of [`Decompressed`]), exactly, as a `BufRead`.
pub struct Counting<R> {
    inner: std::io::BufReader<R>,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: Read> std::io::BufRead for Counting<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        self.inner.consume(n);
    }
}

/// A decompressed stream that fails once it passes `max_decompressed_bytes`, or `max_ratio` times the
/// compressed bytes read (checked past the first MiB, so tiny files with high ratios pass).
pub struct Decompressed<R> {
    inner: R,
    compressed: Arc<AtomicU64>,
    out: u64,
    limits: ReadLimits,
}

impl<R: Read> Decompressed<R> {
    /// Wraps a compressed input: `decoder` builds the decompressing reader over the counting one.
    pub fn new<C: Read>(input: C, limits: ReadLimits, decoder: impl FnOnce(Counting<C>) -> R) -> Self {
        let compressed = Arc::new(AtomicU64::new(0));
        let inner =
            decoder(Counting { inner: std::io::BufReader::with_capacity(1 << 16, input), count: compressed.clone() });
        Self { inner, compressed, out: 0, limits }
    }
}

impl<R: Read> Read for Decompressed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        if self.out > self.limits.max_decompressed_bytes {
            return Err(LimitExceeded::io(format!(
                "the file decompresses to more than {} bytes (limits.max_decompressed_bytes)",
                self.limits.max_decompressed_bytes
            )));
        }
        let compressed = self.compressed.load(Ordering::Relaxed).max(1);
        if self.out > 1 << 20 && self.out / compressed > self.limits.max_ratio {
            return Err(LimitExceeded::io(format!(
                "the file decompresses more than {} times its compressed size (limits.max_ratio): a decompression \
                 bomb?",
                self.limits.max_ratio
            )));
        }
        Ok(n)
    }
}

/// Records the CSV reader must quarantine, by the line where they start, with the reason.
#[derive(Debug, Default)]
pub struct Flags {
    lines: Mutex<BTreeMap<u64, String>>,
    /// How many lines are flagged: asked for every record, without the lock while there are none.
    pending: AtomicUsize,
}

impl Flags {
    fn lines(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, String>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flag(&self, line: u64, reason: String) {
        let mut lines = self.lines();
        lines.entry(line).or_insert(reason);
        self.pending.store(lines.len(), Ordering::Relaxed);
    }

    /// Flags with this reason even if the record was flagged already (a more precise one).
    fn replace(&self, line: u64, reason: String) {
        let mut lines = self.lines();
        lines.insert(line, reason);
        self.pending.store(lines.len(), Ordering::Relaxed);
    }

    /// The reason to quarantine the record starting at `line`, if any.
    pub fn take(&self, line: u64) -> Option<String> {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut lines = self.lines();
        let reason = lines.remove(&line);
        self.pending.store(lines.len(), Ordering::Relaxed);
        reason
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: a doubled quote, or the field's end.
    QuoteInQuoted,
}

/// See the module documentation.
pub struct CsvGuard<R> {
    inner: R,
    delimiter: u8,
    quote: u8,
    limits: ReadLimits,
    flags: Arc<Flags>,
    state: State,
    line: u64,
    record_start: u64,
    record_bytes: u64,
    record_lines: u64,
    /// Bytes forwarded after the record passed `max_record_bytes` (line ends, quotes, delimiters).
    forwarded_over: u64,
    /// The last byte read (whether the file ends with a line end).
    last: u8,
    /// Tests: every byte through the state machine, to check the runs give the same result.
    #[cfg(test)]
    bytewise: bool,
}

impl<R: Read> CsvGuard<R> {
    pub fn new(inner: R, delimiter: u8, quote: u8, limits: ReadLimits) -> (Self, Arc<Flags>) {
        let flags = Arc::new(Flags::default());
        let guard = Self {
            inner,
            delimiter,
            quote,
            limits,
            flags: flags.clone(),
            state: State::FieldStart,
            line: 1,
            record_start: 1,
            record_bytes: 0,
            record_lines: 0,
            forwarded_over: 0,
            last: 0,
            #[cfg(test)]
            bytewise: false,
        };
        (guard, flags)
    }

    fn end_record(&mut self) {
        self.record_start = self.line;
        self.record_bytes = 0;
        self.record_lines = 0;
        self.forwarded_over = 0;
        self.state = State::FieldStart;
    }
}

impl<R: Read> Read for CsvGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            // The bytes are checked in place: what passes is moved down over what is dropped (past
            // `max_record_bytes`), so `out <= i` always.
            let n = self.inner.read(buf)?;
            if n == 0 {
                if self.state == State::Quoted {
                    let last_line = if self.last == b'\n' { self.line - 1 } else { self.line };
                    self.flags.replace(
                        self.record_start,
                        format!(
                            "a quoted field opened in this record is never closed: the file ends inside it (lines \
                             {}–{last_line}); the record and the lines after it are quarantined together",
                            self.record_start
                        ),
                    );
                }
                return Ok(0);
            }
            let max_bytes = self.limits.max_record_bytes;
            let mut out = 0;
            let mut i = 0;
            while i < n {
                let b = buf[i];
                // A run ends outside quotes at a quote or a line end, inside quotes at a quote or `\n` (lines are
                // counted). It leaves the state as the state machine would byte by byte: inside quotes, quoted;
                // elsewhere, at a field's start if it ends with a delimiter, else in an unquoted field. While the
                // record stays in the limit it passes at once.
                #[cfg(test)]
                let bytewise = self.bytewise;
                #[cfg(not(test))]
                let bytewise = false;
                let end = match self.state {
                    State::Quoted => memchr::memchr2(self.quote, b'\n', &buf[i..n]),
                    State::FieldStart | State::Unquoted => memchr::memchr3(self.quote, b'\n', b'\r', &buf[i..n]),
                    State::QuoteInQuoted => Some(0),
                }
                .map_or(n, |p| i + p);
                if end > i && !bytewise {
                    let len = end - i;
                    if self.record_bytes + len as u64 <= max_bytes {
                        if out != i {
                            buf.copy_within(i..end, out);
                        }
                        out += len;
                        self.record_bytes += len as u64;
                        self.last = buf[end - 1];
                        if self.state != State::Quoted {
                            self.state = if self.last == self.delimiter { State::FieldStart } else { State::Unquoted };
                        }
                        i = end;
                        continue;
                    }
                }
                i += 1;
                self.last = b;
                let structural = b == self.quote || b == self.delimiter || b == b'\n' || b == b'\r';
                self.record_bytes += 1;
                self.state = match (self.state, b) {
                    (State::Quoted, q) if q == self.quote => State::QuoteInQuoted,
                    (State::Quoted, _) => State::Quoted,
                    (State::QuoteInQuoted, q) if q == self.quote => State::Quoted,
                    (State::FieldStart, q) if q == self.quote => State::Quoted,
                    (_, d) if d == self.delimiter => State::FieldStart,
                    (_, b'\n' | b'\r') => State::FieldStart,
                    _ => State::Unquoted,
                };
                if b == b'\n' {
                    self.line += 1;
                    if self.state == State::Quoted {
                        self.record_lines += 1;
                        if self.record_lines == self.limits.max_record_lines {
                            self.flags.flag(
                                self.record_start,
                                format!(
                                    "a quoted field spans more than {} lines (limits.max_record_lines): a quote that \
                                     is never closed?",
                                    self.limits.max_record_lines
                                ),
                            );
                        }
                    }
                }
                let over = self.record_bytes > max_bytes;
                if over && self.record_bytes == max_bytes + 1 {
                    self.flags.flag(
                        self.record_start,
                        format!(
                            "the record is larger than {max_bytes} bytes (limits.max_record_bytes); its first \
                             {max_bytes} bytes are kept"
                        ),
                    );
                }
                if !over || structural {
                    if over {
                        self.forwarded_over += 1;
                        if self.forwarded_over > max_bytes {
                            return Err(LimitExceeded::io(format!(
                                "a record starting at line {} holds more than {max_bytes} line ends, quotes and \
                                 delimiters past limits.max_record_bytes",
                                self.record_start
                            )));
                        }
                    }
                    buf[out] = b;
                    out += 1;
                }
                if b == b'\n' && self.state == State::FieldStart {
                    self.end_record();
                }
            }
            if out > 0 {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(text: &str, limits: ReadLimits) -> (String, Vec<(u64, String)>) {
        let (mut g, flags) = CsvGuard::new(text.as_bytes(), b';', b'"', limits);
        let mut out = String::new();
        g.read_to_string(&mut out).unwrap();
        let flagged = flags.lines().iter().map(|(l, r)| (*l, r.clone())).collect();
        (out, flagged)
    }

    /// Reads `text` in chunks of `chunk` bytes, by runs or byte by byte.
    fn guarded(text: &[u8], limits: ReadLimits, bytewise: bool, chunk: usize) -> (Vec<u8>, Vec<(u64, String)>) {
        struct Chunks<'a>(&'a [u8], usize);
        impl Read for Chunks<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let (mut g, flags) = CsvGuard::new(Chunks(text, chunk), b';', b'"', limits);
        g.bytewise = bytewise;
        let mut out = Vec::new();
        let _ = g.read_to_end(&mut out);
        let flagged = flags.lines().iter().map(|(l, r)| (*l, r.clone())).collect();
        (out, flagged)
    }

    /// Copying runs of ordinary bytes at once gives the same bytes and the same flags as the state machine byte
    /// by byte, on random CSV-like input with small limits (records over them, quotes never closed, CRLF).
    #[test]
    fn runs_match_the_byte_by_byte_state_machine() {
        let alphabet = b"ab;\"\n\r x";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..2000 {
            let len = (next() % 300) as usize;
            let text: Vec<u8> = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            let limits = ReadLimits {
                max_record_bytes: 1 + next() % 40,
                max_record_lines: 1 + next() % 4,
                ..ReadLimits::default()
            };
            let chunk = 1 + (next() % 64) as usize;
            assert_eq!(
                guarded(&text, limits, false, chunk),
                guarded(&text, limits, true, chunk),
                "case {case}: {:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn well_formed_csv_passes_unchanged() {
        let text = "a;b\n1;\"x\ny\"\n2;\"say \"\"hi\"\"\"\n3;5\" screen\n";
        let (out, flagged) = guard(text, ReadLimits::default());
        assert_eq!(out, text);
        assert!(flagged.is_empty(), "{flagged:?}");
    }

    #[test]
    fn an_unclosed_quote_is_flagged_at_its_record() {
        let text = "a;b\n1;ok\n2;\"oops\n3;x\n4;y\n";
        let (_, flagged) = guard(text, ReadLimits::default());
        assert_eq!(flagged.len(), 1);
        assert_eq!(flagged[0].0, 3);
        assert!(flagged[0].1.contains("never closed") && flagged[0].1.contains("lines 3–5"), "{}", flagged[0].1);
    }

    #[test]
    fn long_quoted_fields_and_large_records_are_flagged_and_cut() {
        let limits = ReadLimits { max_record_bytes: 16, max_record_lines: 3, ..ReadLimits::default() };
        let text = format!("a;b\n1;\"l1\nl2\nl3\nl4\"\n2;{}\n3;ok\n", "x".repeat(100));
        let (out, flagged) = guard(&text, limits);
        assert_eq!(flagged.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [2, 6]);
        assert!(flagged[0].1.contains("more than 3 lines"));
        assert!(flagged[1].1.contains("larger than 16 bytes"));
        // Line ends are kept: the record after the cut one is still on line 7.
        assert_eq!(out.lines().count(), text.lines().count());
        assert!(out.ends_with("\n3;ok\n") && out.len() < 60, "{out}");
    }
}
