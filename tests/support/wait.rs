//! Timeouts, and every way a test waits.
//!
//! A test waits for something it can observe (an MQTT message, a request the fake PMS recorded, a log line, a
//! file, a port), polled with a deadline by [`until`] or [`poll`]. Only three helpers wait a fixed time, each
//! named for why: [`observe`] (a bounded window in which something must *not* happen, or over which a rate is
//! measured), [`let_time_pass`] (time itself is the precondition, e.g. a session older than a grace period) and
//! [`pace`] (spacing what a test sends: the rate is part of the scenario).

use std::future::Future;
use std::time::{Duration, Instant};

/// Generous bound for anything that should happen "soon" (CI machines are slow and shared).
pub const SOON: Duration = Duration::from_secs(10);
/// Bound for what takes round trips to a fake plex.tv or a few backoff periods (login, token renewal).
pub const SLOW: Duration = Duration::from_secs(20);
/// Home Assistant can take a while to process discovery on a loaded 2-core machine.
pub const HA_WAIT: Duration = Duration::from_secs(30);
/// How often a poll looks again.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `check` every [`POLL`] until it returns `Some`, for at most `timeout`; None on timeout.
pub async fn poll<T>(timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`poll`] for threads without a runtime (blocks the thread).
pub fn poll_blocking<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until `done` holds; panics with `what` after `timeout`.
pub async fn until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let met = poll(timeout, async || done().then_some(())).await;
    assert!(met.is_some(), "timed out after {timeout:?} waiting for {what}");
}

/// [`until`] with an asynchronous check (e.g. a request to Home Assistant).
pub async fn until_async(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let met = poll(timeout, async || done().await.then_some(())).await;
    assert!(met.is_some(), "timed out after {timeout:?} waiting for {what}");
}

/// Runs `future` to completion unless `timeout` passes first; panics with `what` then.
pub async fn within<T>(what: &str, timeout: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// A bounded observation window: gives the code under test `window` to do what it must not (reconnect, send a
/// second message, burn CPU…), or to show a rate; the test asserts what happened afterwards. This is a negative
/// check, not a wait for something to happen.
pub async fn observe(window: Duration) {
    tokio::time::sleep(window).await;
}

/// [`observe`], ending early once `holds` is false (the assertion after it then fails at once).
pub async fn observe_while(window: Duration, mut holds: impl FnMut() -> bool) {
    let deadline = Instant::now() + window;
    while Instant::now() < deadline && holds() {
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Lets `duration` of wall-clock time pass because the scenario needs it to have passed (a session older than a
/// grace period, a user who has not approved yet). Nothing observable marks it.
pub async fn let_time_pass(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// Spaces out what a test sends by `interval`: the pace is part of the scenario (a burst over ~100 ms, progress
/// many times a second).
pub async fn pace(interval: Duration) {
    tokio::time::sleep(interval).await;
}
