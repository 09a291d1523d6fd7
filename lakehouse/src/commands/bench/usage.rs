//! What a process used, as the kernel counts it: CPU time (user + system, every thread) and peak resident
//! memory. Read from `/proc/self` (Linux); elsewhere there is nothing to report.
//!
//! A `lakehouse` process started with [`ENV`] set to a file path appends its own figures to that file as one
//! JSON line when it exits: that is how `lakehouse bench job` measures each step it runs as a child process
//! (a parent cannot read a child's peak memory once it has exited, and `getrusage` needs `unsafe`).

use std::path::Path;

/// The environment variable naming the file a process reports its usage to at exit.
pub const ENV: &str = "LAKEHOUSE_USAGE_FILE";

/// CPU time and peak memory of one process.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub user_secs: f64,
    pub system_secs: f64,
    pub peak_rss_bytes: u64,
}

impl Usage {
    /// This process's usage so far; `None` without `/proc`.
    pub fn own() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count fields after it. utime and
        // stime are fields 14 and 15, in clock ticks of 1/100 s (USER_HZ, fixed by the kernel's ABI).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).map(|t| t as f64 / 100.0);
        Some(Self { user_secs: ticks(11)?, system_secs: ticks(12)?, peak_rss_bytes: peak_rss()? })
    }

    pub fn cpu_secs(&self) -> f64 {
        self.user_secs + self.system_secs
    }

    /// The last usage line of a file that a process wrote with [`report`].
    pub fn read(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(text.lines().last()?).ok()
    }
}

/// Peak resident set size of this process (`VmHWM`).
pub fn peak_rss() -> Option<u64> {
    peak_rss_of("self")
}

/// Peak resident set size of process `pid` (`self`, or a number) since it started or since
/// [`reset_peak_rss`].
pub fn peak_rss_of(pid: &str) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

/// Resident set size of process `pid` now.
pub fn rss_of(pid: &str) -> Option<u64> {
    status_bytes(pid, "VmRSS:")
}

/// A size in kB of `/proc/PID/status`, in bytes.
fn status_bytes(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Starts the peak resident set size of process `pid` over from its current size (Linux 4.0+: `5` written
/// to `/proc/PID/clear_refs`), to measure one phase of its work; false where that cannot be done.
pub fn reset_peak_rss(pid: &str) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// At exit: appends this process's usage to the file named by [`ENV`], when it is set. A failure to write is
/// reported on stderr and does not change the exit code.
pub fn report() {
    let Some(path) = std::env::var_os(ENV) else { return };
    let Some(usage) = Usage::own() else { return };
    let line = serde_json::to_string(&usage).unwrap_or_default() + "\n";
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    if let Err(e) = written {
        eprintln!("warning: cannot write the usage report to {}: {e}", Path::new(&path).display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_usage_counts_work_done() {
        let Some(before) = Usage::own() else { return };
        // Burn some CPU and touch 64 MiB.
        let mut v = vec![1u8; 64 << 20];
        let mut acc = 0u64;
        for _ in 0..3 {
            for (i, b) in v.iter_mut().enumerate() {
                *b = b.wrapping_add(i as u8);
                acc = acc.wrapping_add(u64::from(*b));
            }
        }
        std::hint::black_box(acc);
        let after = Usage::own().unwrap();
        assert!(after.cpu_secs() > before.cpu_secs(), "{before:?} -> {after:?}");
        assert!(after.peak_rss_bytes >= 64 << 20, "{after:?}");
    }
}
