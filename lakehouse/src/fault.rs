//! Fault injection for the tests of crash safety and concurrency: `LAKEHOUSE_FAULT=<point>` arms one point.
//!
//! Compiled only with the cargo feature `fault-injection`, which the tests crate enables; in any other build
//! [`armed`] is `false` and the hooks vanish, so no environment variable can make a production process abort.

/// Whether `LAKEHOUSE_FAULT` names this point.
#[cfg(feature = "fault-injection")]
pub fn armed(point: &str) -> bool {
    std::env::var("LAKEHOUSE_FAULT").is_ok_and(|v| v == point)
}

/// Without the `fault-injection` feature no point is ever armed.
#[cfg(not(feature = "fault-injection"))]
pub fn armed(_point: &str) -> bool {
    false
}

/// Aborts the process at `point` when it is armed (a crash at the worst moment).
pub fn abort_at(point: &str) {
    if armed(point) {
        tracing::error!(point, "LAKEHOUSE_FAULT: aborting the process");
        std::process::abort();
    }
}
