//! Per-object exponential backoff for failed reconciliations.
//!
//! kube-runtime's `error_policy` returns a fixed [`Action`](kube::runtime::controller::Action); this
//! keeps a failure count per object so that a flapping API server is retried at 5 s, 10 s, 20 s …
//! up to the cap, while other objects are unaffected. A success resets the object's count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Failure counts per object key (`namespace/name`).
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Delays `base * 2^(n-1)` for the n-th consecutive failure, capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, failures: Mutex::new(HashMap::new()) }
    }

    /// Records a failure of `key` and returns how long to wait before the next attempt.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 1u32.checked_shl(n.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Forgets `key`'s failures after a success.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_object_up_to_the_cap_and_resets() {
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
        let delays: Vec<u64> = (0..6).map(|_| b.failed("ns/a").as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 60, 60]);
        assert_eq!(b.failed("ns/b").as_secs(), 5, "other objects keep their own count");
        b.succeeded("ns/a");
        assert_eq!(b.failed("ns/a").as_secs(), 5);
        for _ in 0..100 {
            b.failed("ns/c");
        }
        assert_eq!(b.failed("ns/c").as_secs(), 60, "no overflow after many failures");
    }
}
