//! Reconnect delays: exponential with jitter, capped, restartable.
//!
//! Built on `backon` (maintained; the `backoff` crate is unmaintained, RUSTSEC-2025-0012). Only its delay
//! iterator is used: the supervisors decide themselves when to wait, reset or give the cap.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// An endless sequence of growing, jittered delays between `min` and `max`.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// The first delay is between `min` and `2 × min` (jitter), each next one doubles, none exceeds `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Backoff { builder, delays: builder.build(), max }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max).min(self.max)
    }

    /// The cap, used for retries that should be slow on purpose (a rejected token).
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Starts over from the shortest delay, after a connection proved stable.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_capped_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200), "{first:?}");
        let later: Vec<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(later.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(later[10] >= Duration::from_millis(800), "{later:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(200));
    }
}
