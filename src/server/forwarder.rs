//! The hot path of one server: every message its notification session reads is decoded, routed to its topics and
//! handed to the publisher here, and the kinds the state task follows are passed on to it. A notification goes
//! transport → forwarder → router → publisher and never returns to the supervisor.
//!
//! The forwarder is also the session's read gate: the session waits while the publisher's live queue is full with
//! the broker connected, or the state task's queue is full, so a notification is read when it can be handled,
//! never dropped for being early.

use tokio::sync::mpsc;

use super::state_task::{follows, StateInput};
use crate::log_limit::LogLimiter;
use crate::model::router::route_into;
use crate::mqtt::outbox::Action;
use crate::mqtt::Publisher;
use crate::plex::{Forward, Incoming};
use crate::telemetry::{telemetry, NotificationCounts};
use crate::topic::ServerTopics;

/// One server's forwarder; it lives across reconnects, so its counts are the server's.
pub struct Forwarder {
    publisher: Publisher,
    state_inputs: mpsc::Sender<StateInput>,
    /// The server's topics and notification counters, once its topic name is known.
    named: Option<(ServerTopics, NotificationCounts)>,
    /// Messages that could not be decoded.
    malformed: u64,
    /// Notifications the state task had no room for (forwarded raw only).
    state_dropped: u64,
    /// The server decides how many malformed messages come: one log line per episode.
    malformed_log: LogLimiter,
    /// The messages of the notification at hand (one buffer for all of them).
    actions: Vec<Action>,
}

impl Forwarder {
    pub fn new(publisher: Publisher, state_inputs: mpsc::Sender<StateInput>) -> Self {
        Forwarder {
            publisher,
            state_inputs,
            named: None,
            malformed: 0,
            state_dropped: 0,
            malformed_log: LogLimiter::default(),
            actions: Vec::new(),
        }
    }

    /// The server's topic name is known (or changed): publish under `topics`, count in `counts`.
    pub fn name(&mut self, topics: ServerTopics, counts: NotificationCounts) {
        self.named = Some((topics, counts));
    }

    /// The session ended: the count of malformed messages not logged, if any.
    pub fn session_ended(&mut self) {
        if let Some(not_logged) = self.malformed_log.end() {
            tracing::warn!(
                not_logged,
                malformed_total = self.malformed,
                "more notifications were skipped as malformed"
            );
        }
    }

    /// Tells the state task that the session is (re)connected, before the session is read.
    pub fn connected(&self, input: StateInput) {
        let _ = self.state_inputs.try_send(input);
    }

    /// Hands a notification of a followed kind to the state task without waiting (the raw event is published
    /// already); a full queue costs only the enrichment, counted and logged.
    fn hand_to_state_task(&mut self, input: StateInput) {
        if let Err(error) = self.state_inputs.try_send(input) {
            self.state_dropped += 1;
            telemetry().untracked();
            if self.state_dropped.is_power_of_two() {
                tracing::warn!(%error, dropped_total = self.state_dropped,
                    "session/library tracking is behind; a notification was forwarded raw only");
            }
        }
    }
}

impl Forward for Forwarder {
    fn forward(&mut self, incoming: Incoming<'_>) {
        let Some((topics, counts)) = &mut self.named else { return };
        match incoming.decode() {
            Ok(notification) => {
                counts.count(&notification.kind);
                route_into(topics, &notification, &mut self.actions);
                self.publisher.apply(self.actions.drain(..));
                if follows(notification.kind.as_str()) {
                    self.hand_to_state_task(StateInput::Notification(notification));
                }
            }
            Err(error) => {
                self.malformed += 1;
                let text = incoming.text();
                crate::log_limited!(self.malformed_log, warn, %error, bytes = text.len(), start = %preview(text),
                    malformed_total = self.malformed, "notification skipped");
            }
        }
    }

    fn blocked(&self) -> bool {
        self.state_inputs.capacity() == 0 || self.publisher.live_backlogged()
    }

    async fn ready(&self) {
        self.publisher.live_room().await;
        // The forwarder is the only sender, so room reserved here is still there when it sends.
        let _ = self.state_inputs.reserve().await;
    }
}

/// The first characters of a bad frame, for the log line (frames carry no secrets).
fn preview(text: &str) -> String {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].escape_debug().to_string()
}
