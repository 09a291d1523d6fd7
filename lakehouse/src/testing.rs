//! Helpers of the unit tests.

/// A small deterministic generator of random numbers for property tests (xorshift64, never 0 from a seed
/// that is not 0): the same seed gives the same cases on every run.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
