//! Logins: who may try how often.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures counted from one address within this window.
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures from one address answered at once; each further one doubles the wait, from 1 second.
const FREE_FAILURES: u32 = 3;
/// The longest wait before a login from an address is answered.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// Addresses remembered at most (the oldest are forgotten first).
const MAX_ADDRESSES: usize = 10_000;

/// Slows down the logins of an address that keeps failing: password guessing from one address gets a few
/// tries per minute at most, while a user who mistyped once notices nothing.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// How long to wait before answering a login from `ip`.
    pub fn delay(&self, ip: IpAddr) -> Duration {
        let failures = self.failures.lock().expect("throttle lock");
        match failures.get(&ip) {
            Some((n, last)) if last.elapsed() < WINDOW && *n >= FREE_FAILURES => {
                let doublings = (n - FREE_FAILURES).min(5);
                (Duration::from_secs(1) * 2u32.pow(doublings)).min(MAX_DELAY)
            }
            _ => Duration::ZERO,
        }
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().expect("throttle lock");
        if failures.len() >= MAX_ADDRESSES {
            failures.retain(|_, (_, last)| last.elapsed() < WINDOW);
        }
        if failures.len() >= MAX_ADDRESSES
            && let Some(oldest) = failures.iter().min_by_key(|(_, (_, last))| *last).map(|(ip, _)| *ip)
        {
            failures.remove(&oldest);
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            entry.0 = 0;
        }
        *entry = (entry.0 + 1, Instant::now());
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.failures.lock().expect("throttle lock").remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_from_one_address_wait_longer_and_longer() {
        let t = Throttle::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut delays = Vec::new();
        for _ in 0..10 {
            delays.push(t.delay(a).as_secs());
            t.failed(a);
        }
        assert_eq!(delays, [0, 0, 0, 1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(t.delay(b), Duration::ZERO, "another address is not slowed down");
        t.succeeded(a);
        assert_eq!(t.delay(a), Duration::ZERO, "a login resets the count");
    }
}
