//! The handle the rest of the bridge publishes through. Producers put messages into the [`Outbox`](super::outbox::Outbox) and return;
//! they never wait for the broker. Retained state is a map (it cannot overflow); live events share one bounded
//! queue, and a reader of Plex is asked to pause while it is full and the broker is connected (no loss).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::outbox::Action;
use super::Shared;

/// Room left in a packet for the fixed header, topic length and packet id.
const PACKET_OVERHEAD: usize = 16;
/// While the broker is connected, the live queue may hold this many times `mqtt.queue_size` before the oldest
/// event is dropped: readers stop reading from Plex once it is full ([`Publisher::live_backlogged`]), so only
/// the items of the frame being read when it filled can come on top (a frame is at most
/// `plex.max_message_size`).
const CONNECTED_OVERSHOOT: usize = 4;

/// A reader paused by backpressure reads again once the live queue is below this share of its capacity
/// (hysteresis, so it reads in batches rather than one message per freed slot).
pub(super) fn room_again(capacity: usize) -> usize {
    capacity - capacity / 4
}

/// A cheap handle for the tasks that produce messages.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
    connected: watch::Receiver<bool>,
}

impl Publisher {
    /// The handle over `shared`, following the broker session in `connected`.
    pub(super) fn new(shared: Arc<Shared>, connected: watch::Receiver<bool>) -> Self {
        Publisher { shared, connected }
    }

    /// Applies the router's actions in order.
    pub fn apply(&self, actions: impl IntoIterator<Item = Action>) {
        {
            let mut outbox = self.shared.outbox();
            let episode_before = outbox.overflow_episode();
            let mut dropped = 0u64;
            let limit = if *self.connected.borrow() {
                outbox.live_capacity().saturating_mul(CONNECTED_OVERSHOOT)
            } else {
                outbox.live_capacity()
            };
            for action in actions {
                match action {
                    Action::Live { topic, payload } => {
                        if self.fits(&topic, &payload) {
                            dropped += u64::from(outbox.push_live(topic, payload, limit));
                        }
                    }
                    Action::Retain { topic, payload } => {
                        if self.fits(&topic, &payload) {
                            outbox.retain(topic, payload);
                        }
                    }
                    Action::Clear { topic } => outbox.clear(topic),
                }
            }
            let full = outbox.live_len() >= outbox.live_capacity();
            if full != self.shared.live_full.load(std::sync::atomic::Ordering::Relaxed) {
                self.shared.live_full.store(full, std::sync::atomic::Ordering::Release);
            }
            if dropped > 0 {
                crate::telemetry::telemetry().dropped(dropped);
                // One warning per overflow episode; the sender logs its total when the queue has drained.
                if episode_before == 0 {
                    tracing::warn!(
                        dropped,
                        dropped_total = outbox.dropped(),
                        "live-event queue full (broker slow or unreachable): dropping the oldest live events"
                    );
                }
            }
        }
        self.shared.wake.notify_one();
    }

    /// Whether a reader of Plex should stop reading: the broker is connected (so waiting loses nothing) and the
    /// live queue is full. While the broker is unreachable readers go on and the oldest live events are dropped
    /// (counted), because waiting could last for ever.
    pub fn live_backlogged(&self) -> bool {
        self.shared.live_full.load(std::sync::atomic::Ordering::Acquire) && *self.connected.borrow()
    }

    /// Waits until the live queue has room again (below three quarters of its capacity) or the broker
    /// connection is lost.
    pub async fn live_room(&self) {
        let mut connected = self.connected.clone();
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            self.shared.room_wanted.store(true, std::sync::atomic::Ordering::Release);
            {
                let outbox = self.shared.outbox();
                if !*connected.borrow_and_update() || outbox.live_len() < room_again(outbox.live_capacity()) {
                    return;
                }
            }
            tokio::select! {
                () = &mut room => {}
                changed = connected.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Queues an answer to an outsider (a command's result or refusal) in the answer lane, which never takes a
    /// Plex event's place (see [`super::answers`]). `always` for the result of a command that ran; a refusal that
    /// finds the lane full is not queued, and `false` tells the caller to count it into a coalesced notice.
    pub fn answer(&self, topic: String, payload: impl Into<Bytes>, always: bool) -> bool {
        let payload = payload.into();
        if !self.fits(&topic, &payload) {
            return false;
        }
        let queued = self.shared.outbox().push_answer(topic, payload, always);
        if queued {
            self.shared.wake.notify_one();
        }
        queued
    }

    /// Whether a refusal would find room in the answer lane now.
    pub fn answer_room(&self) -> bool {
        self.shared.outbox().answer_room()
    }

    /// Sets one retained topic.
    pub fn retain(&self, topic: String, payload: impl Into<Bytes>) {
        self.apply([Action::Retain { topic, payload: payload.into() }]);
    }

    /// Clears one retained topic.
    pub fn clear(&self, topic: String) {
        self.apply([Action::Clear { topic }]);
    }

    /// The payload the bridge holds for a retained topic now (`None` if unset or cleared).
    pub fn retained_payload(&self, topic: &str) -> Option<Bytes> {
        self.shared.outbox().retained_payload(topic).cloned()
    }

    /// Takes the retained topics under `prefix` that an earlier run left on the broker (read at start-up).
    pub fn take_stale(&self, prefix: &str) -> Vec<String> {
        self.take_stale_payloads(prefix).into_iter().map(|(topic, _)| topic).collect()
    }

    /// Like [`Publisher::take_stale`], with what an earlier run had published there.
    pub fn take_stale_payloads(&self, prefix: &str) -> Vec<(String, Bytes)> {
        let mut stale = self.shared.stale.lock().unwrap_or_else(|p| p.into_inner());
        let taken: Vec<String> =
            stale.range(prefix.to_owned()..).map(|(t, _)| t).take_while(|t| t.starts_with(prefix)).cloned().collect();
        taken.into_iter().filter_map(|topic| stale.remove_entry(&topic)).collect()
    }

    /// The leftover retained payload of one topic, if an earlier run left one, left in place.
    pub fn stale_payload(&self, topic: &str) -> Option<Bytes> {
        self.shared.stale.lock().unwrap_or_else(|p| p.into_inner()).get(topic).cloned()
    }

    /// The leftover retained payloads whose topic `wanted` accepts, left in place.
    pub fn stale_payloads(&self, wanted: impl Fn(&str) -> bool) -> Vec<(String, Bytes)> {
        let stale = self.shared.stale.lock().unwrap_or_else(|p| p.into_inner());
        stale.iter().filter(|(topic, _)| wanted(topic)).map(|(t, p)| (t.clone(), p.clone())).collect()
    }

    /// Waits (at most `limit`) until the start-up read of leftover retained topics is complete; returns whether
    /// it is (it starts only once the broker is reached, so a caller that must not act on a partial picture
    /// tries again later when this says `false`).
    pub async fn stale_scan_done(&self, limit: Duration) -> bool {
        let mut done = self.shared.scan_done.subscribe();
        tokio::time::timeout(limit, done.wait_for(|d| *d)).await.is_ok_and(|r| r.is_ok())
    }

    /// Retained topics this bridge currently holds under `prefix`.
    pub fn retained_topics(&self, prefix: &str) -> Vec<String> {
        self.shared.outbox().retained_topics(prefix)
    }

    /// Whether the broker session is up now, as a watch (for readiness and health reporting).
    pub fn broker_connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Live events dropped so far (queue overflow and events lost with a broker connection).
    pub fn dropped(&self) -> u64 {
        self.shared.outbox().dropped()
    }

    fn fits(&self, topic: &str, payload: &Bytes) -> bool {
        // MQTT topics are at most 65,535 bytes; rumqttc would silently truncate the length field of a longer one.
        let fits = topic.len() <= usize::from(u16::MAX)
            && topic.len() + payload.len() + PACKET_OVERHEAD <= self.shared.max_packet_size;
        if !fits {
            crate::telemetry::telemetry().dropped(1);
            tracing::warn!(
                topic,
                bytes = payload.len(),
                limit = self.shared.max_packet_size,
                "message larger than mqtt.max_packet_size dropped"
            );
        }
        fits
    }
}
