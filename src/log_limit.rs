//! Log lines that outsiders can cause — a flood of bad commands, malformed frames from a broken server — are
//! rate-limited: the first of an episode is logged at its level, the others only at `debug` (where a user who
//! asks for every detail still gets each one), and the count of those is logged when the episode ends. Nobody
//! can fill the log at will at the usual levels, and nothing is hidden: the count says how many there were.

use std::time::{Duration, Instant};

/// How long an episode lasts at least: one line per cause and window, plus the count of the rest.
pub const EPISODE: Duration = Duration::from_secs(10);

/// The occurrences of one kind of log line.
#[derive(Debug)]
pub struct LogLimiter {
    window: Duration,
    /// When the episode under way began (its first occurrence was logged).
    started: Option<Instant>,
    /// Occurrences not logged in the episode under way.
    suppressed: u64,
}

/// What to do with one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    /// Log it; `earlier` occurrences of the previous episode were not logged (say so when not 0).
    Log { earlier: u64 },
    /// Only counted.
    Counted,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(EPISODE)
    }
}

impl LogLimiter {
    pub const fn new(window: Duration) -> Self {
        LogLimiter { window, started: None, suppressed: 0 }
    }

    /// One occurrence at `now`.
    pub fn hit(&mut self, now: Instant) -> Hit {
        match self.started {
            Some(started) if now.duration_since(started) < self.window => {
                self.suppressed += 1;
                Hit::Counted
            }
            _ => {
                self.started = Some(now);
                Hit::Log { earlier: std::mem::take(&mut self.suppressed) }
            }
        }
    }

    /// Whether occurrences of the episode under way were only counted (an [`LogLimiter::end`] would report them).
    pub fn has_counted(&self) -> bool {
        self.suppressed > 0
    }

    /// Ends the episode under way (at a quiet moment: the input stopped, the session ended): the number of
    /// occurrences it did not log, if any.
    pub fn end(&mut self) -> Option<u64> {
        self.started = None;
        Some(std::mem::take(&mut self.suppressed)).filter(|n| *n > 0)
    }
}

/// Logs at `$level` (`warn`, `info`) through the [`LogLimiter`] `$limiter`: the first of an episode at that level
/// (with `not_logged_before`, the count of the previous episode's others), the others at `debug`.
#[macro_export]
macro_rules! log_limited {
    ($limiter:expr, $level:ident, $($arg:tt)+) => {
        match $limiter.hit(std::time::Instant::now()) {
            $crate::log_limit::Hit::Log { earlier: 0 } => tracing::$level!($($arg)+),
            $crate::log_limit::Hit::Log { earlier } => tracing::$level!(not_logged_before = earlier, $($arg)+),
            $crate::log_limit::Hit::Counted => tracing::debug!($($arg)+),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_episode_and_the_count_of_the_rest() {
        let mut limit = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.hit(t0), Hit::Log { earlier: 0 });
        for i in 1..100 {
            assert_eq!(limit.hit(t0 + Duration::from_millis(i)), Hit::Counted);
        }
        assert_eq!(limit.hit(t0 + Duration::from_secs(11)), Hit::Log { earlier: 99 });
        limit.hit(t0 + Duration::from_secs(12));
        assert_eq!(limit.end(), Some(1));
        assert_eq!(limit.end(), None);
        assert_eq!(limit.hit(t0 + Duration::from_secs(13)), Hit::Log { earlier: 0 }, "a new episode after the end");
    }
}
