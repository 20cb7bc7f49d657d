//! When the state task reads `/status/sessions`, and when it tries a failed look-up again.
//!
//! `/status/sessions` is the heaviest read a Plex server serves (often a small NAS), so it is read only for what a
//! `playing` notification does not carry (rules in `docs/plex-protocol.md`, "How often the bridge reads"):
//! - at once after every (re)connect and resync;
//! - within [`COALESCE`] when something changed that only the answer completes: a new session, a change of
//!   state, item or player, a transcoder that started or ended, or a session whose events wait for details;
//! - for progress alone (steady playback), at most every [`DETAILS_REFRESH`], for bandwidth and transcode
//!   details;
//! - after a failure, on its own timer ([`Retry`]: [`RETRY_MIN`] doubling up to [`RETRY_MAX`], with jitter),
//!   whether or not a session waits; a change as above still asks sooner (coalesced like any other).
//!
//! At most one request is in flight; what asks meanwhile is served by one request after it.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::backoff::Backoff;

/// Changes within this window share one `/status/sessions` request.
pub const COALESCE: Duration = Duration::from_millis(250);
/// Progress alone (steady playback) has `/status/sessions` read at most this often per server.
pub const DETAILS_REFRESH: Duration = Duration::from_secs(10);
/// The first retry after a failed look-up comes after this (up to twice this, with jitter) …
pub const RETRY_MIN: Duration = Duration::from_secs(5);
/// … and the delay doubles with each failure in a row, up to this.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// The retry timer of one kind of look-up: a backoff, when the next try is due, and which failure was logged.
#[derive(Debug)]
pub struct Retry {
    backoff: Backoff,
    at: Option<Instant>,
    /// Why the look-up failed last, while it fails (a new reason is worth a warning, the same one is not).
    failing: Option<&'static str>,
}

/// What a failure came to: when the look-up is tried again, and whether its reason is new since it last worked.
#[derive(Debug, Clone, Copy)]
pub struct Failure {
    pub retry_in: Duration,
    /// The same moment on the wall clock, for `/healthz`.
    pub retry_at: SystemTime,
    pub new_reason: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { backoff: Backoff::new(RETRY_MIN, RETRY_MAX), at: None, failing: None }
    }
}

impl Retry {
    /// The look-up failed for `reason`: schedules the next try after the backoff.
    pub fn failed(&mut self, reason: &'static str) -> Failure {
        let retry_in = self.backoff.next_delay();
        self.at = Some(Instant::now() + retry_in);
        let new_reason = self.failing.replace(reason) != Some(reason);
        Failure { retry_in, retry_at: SystemTime::now() + retry_in, new_reason }
    }

    /// The look-up worked: the next failure starts from the shortest delay again.
    pub fn succeeded(&mut self) {
        self.backoff.reset();
        self.at = None;
        self.failing = None;
    }

    /// When the retry is due, if one is scheduled.
    pub fn due(&self) -> Option<Instant> {
        self.at
    }

    /// The look-up starts (for whatever reason): the scheduled retry is served by it.
    pub fn started(&mut self) {
        self.at = None;
    }

    /// Whether the last try failed and none has worked since.
    pub fn failing(&self) -> bool {
        self.failing.is_some()
    }
}

/// When one server's `/status/sessions` is read next (see the module documentation).
#[derive(Debug, Default)]
pub struct SessionsSchedule {
    /// When a reason other than a retry asks for it.
    asked_by: Option<Instant>,
    retry: Retry,
    in_flight: bool,
    /// When the last request started.
    last_started: Option<Instant>,
}

impl SessionsSchedule {
    /// Asks for a read at `at`, or sooner if one is due sooner: a read already due keeps a burst to one request,
    /// and a retry is brought forward.
    fn by(&mut self, at: Instant) {
        self.asked_by = Some(self.asked_by.map_or(at, |due| due.min(at)));
    }

    /// The notification session is (re)connected, or a resync is due: read now.
    pub fn now(&mut self) {
        self.by(Instant::now());
    }

    /// Something changed that a notification does not carry: read within [`COALESCE`].
    pub fn changed(&mut self) {
        self.by(Instant::now() + COALESCE);
    }

    /// Progress alone: read at most every [`DETAILS_REFRESH`]; while reads fail, the retry timer serves it.
    pub fn progressed(&mut self) {
        if self.retry.failing() {
            return;
        }
        let soonest = Instant::now() + COALESCE;
        self.by(self.last_started.map_or(soonest, |last| (last + DETAILS_REFRESH).max(soonest)));
    }

    /// When the next request is due (`None` while one is in flight or nothing asks).
    pub fn next(&self) -> Option<Instant> {
        if self.in_flight {
            return None;
        }
        match (self.asked_by, self.retry.due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The request is being made now.
    pub fn started(&mut self) {
        self.asked_by = None;
        self.retry.started();
        self.in_flight = true;
        self.last_started = Some(Instant::now());
    }

    /// It was answered.
    pub fn answered(&mut self) {
        self.in_flight = false;
        self.retry.succeeded();
    }

    /// It failed for `reason`: the retry is scheduled (something else may still ask sooner).
    pub fn failed(&mut self, reason: &'static str) -> Failure {
        self.in_flight = false;
        self.retry.failed(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(due: Option<Instant>) -> Duration {
        due.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(Duration::MAX)
    }

    #[tokio::test(start_paused = true)]
    async fn progress_is_read_at_most_every_refresh_and_changes_within_the_coalescing_window() {
        let mut s = SessionsSchedule::default();
        s.now();
        assert_eq!(after(s.next()), Duration::ZERO);
        s.started();
        s.progressed();
        assert_eq!(s.next(), None, "nothing starts while one is in flight");
        s.answered();
        assert_eq!(after(s.next()), DETAILS_REFRESH);
        tokio::time::advance(Duration::from_secs(1)).await;
        s.progressed();
        assert_eq!(after(s.next()), DETAILS_REFRESH - Duration::from_secs(1), "progress does not push it back");
        s.changed();
        assert_eq!(after(s.next()), COALESCE, "a change asks within the window");
        s.started();
        s.answered();
        tokio::time::advance(DETAILS_REFRESH).await;
        s.progressed();
        assert_eq!(after(s.next()), COALESCE, "a refresh long due comes within the window");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_retried_on_its_own_timer_with_backoff_and_a_change_asks_sooner() {
        let mut s = SessionsSchedule::default();
        s.now();
        s.started();
        let first = s.failed("connection_failed");
        assert!(first.new_reason);
        assert!((RETRY_MIN..=RETRY_MIN * 2).contains(&first.retry_in), "{first:?}");
        assert_eq!(after(s.next()), first.retry_in, "retried with nothing else asking");
        s.progressed();
        assert_eq!(after(s.next()), first.retry_in, "progress does not bring a retry forward");
        tokio::time::advance(first.retry_in).await;
        s.started();
        let second = s.failed("connection_failed");
        assert!(!second.new_reason, "the same reason is not news");
        assert!(second.retry_in >= RETRY_MIN * 2, "the delay grows: {second:?}");
        s.changed();
        assert_eq!(after(s.next()), COALESCE, "a change brings the retry forward");
        s.started();
        s.answered();
        assert_eq!(s.next(), None);
        s.started();
        let again = s.failed("http_status");
        assert!(again.new_reason && again.retry_in <= RETRY_MIN * 2, "starts over after a success: {again:?}");
    }
}
