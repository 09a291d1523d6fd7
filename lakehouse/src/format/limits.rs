//! Bounds on untrusted input.
//!
//! - [`Decompressed`] stops a compressed file whose decompressed size or ratio passes the limits (a
//!   decompression bomb): the file is not taken.
//! - The record limits (`max_record_bytes`, `max_record_lines`) are applied by the readers themselves, as they
//!   find records: [`super::csv::Splitter`], and the NDJSON reader.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
