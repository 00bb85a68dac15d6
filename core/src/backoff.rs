//! Exponential backoff, the one formula every retry loop of quaestor uses: members restarted
//! by the supervisor, the sidecar's worker, etcd reconnects and registrations, the balancer's
//! probes of a silent worker.

use std::time::Duration;

/// `initial` after the first failure, doubling with each failure in a row, at most `max`;
/// optionally spread by ± `jitter` (a fraction of the delay) so that many retrying clients do
/// not come back in step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub jitter: f64,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            jitter: 0.0,
        }
    }

    /// The same, spread by ± `jitter` (0.5: from half to one and a half times the delay).
    pub const fn with_jitter(self, jitter: f64) -> Self {
        Backoff { jitter, ..self }
    }

    /// The delay after `failures` failures in a row (1 or more; 0 counts as 1), without
    /// jitter: `initial` × 2^(failures − 1), at most `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// [`Backoff::delay`] spread by the jitter.
    pub fn jittered(&self, failures: u32) -> Duration {
        let spread = self.jitter.clamp(0.0, 1.0);
        self.delay(failures)
            .mul_f64(1.0 - spread + 2.0 * spread * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_without_overflow() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let delays: Vec<u128> = (0..=8).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(
            delays,
            [500, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        assert_eq!(b.delay(u32::MAX), b.max);
    }

    #[test]
    fn jitter_stays_within_its_spread() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8)).with_jitter(0.25);
        for _ in 0..1000 {
            let d = b.jittered(3).as_secs_f64();
            assert!((3.0..=5.0).contains(&d), "{d}");
        }
        assert_eq!(b.with_jitter(0.0).jittered(2), Duration::from_secs(2));
    }
}
