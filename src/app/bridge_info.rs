//! `<p>/bridge/info` (which servers this bridge serves, its version, when it started) and `<p>/bridge/stats`
//! (dropped events and each configured server's connection state — what the bridge device in Home Assistant
//! shows, and what the provisional device of a server that has never answered reads its "Connected" from).
//!
//! Both are read from the health registry, which owns the servers' states and names: a change there wakes this
//! task. Both documents list every server, so they are published at most every [`MIN_INTERVAL`]: a reconnect
//! storm of n servers costs a few documents a second instead of n (each of O(n) bytes and, for the stats, an
//! attribute update of the "Plex servers connected" entity in Home Assistant, which still shows the count and
//! every server's state, at most half a second late).

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::mqtt::Publisher;
use crate::telemetry::health::HealthSnapshot;
use crate::telemetry::telemetry;
use crate::topic::BridgeTopics;

/// How often the stats document is looked at for a new dropped-events count (it is published only on change).
const STATS_REFRESH: Duration = Duration::from_secs(5);
/// After the documents were published, changes wait this long and go out together.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Keeps the retained `bridge/info` and `bridge/stats` documents current.
pub struct BridgeInfo {
    publisher: Publisher,
    topics: BridgeTopics,
    started_at: String,
}

impl BridgeInfo {
    /// Publishes both documents for what the registry knows now (the configured servers, names still unknown).
    pub fn new(publisher: Publisher, topics: BridgeTopics) -> Self {
        let started_at = crate::telemetry::health::rfc3339(std::time::SystemTime::now());
        let info = BridgeInfo { publisher, topics, started_at };
        info.publish(&telemetry().health().snapshot());
        info
    }

    /// Re-publishes the documents after changes of the registry (at once after a quiet [`MIN_INTERVAL`], else
    /// at its end, all of them in one), and the stats every 5 s so the dropped-events count stays current, until
    /// `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        let mut changes = telemetry().health().changes();
        let mut tick = tokio::time::interval(STATS_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = changes.changed() => if changed.is_err() { return },
                () = stop.cancelled() => return,
            }
            // Unchanged payloads are not sent again (the outbox compares them).
            self.publish(&telemetry().health().snapshot());
            // The watch remembers a change made meanwhile, so it is published right after this pause.
            tokio::select! {
                () = tokio::time::sleep(MIN_INTERVAL) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    fn publish(&self, health: &HealthSnapshot) {
        let names: Vec<&str> = health.servers.iter().filter_map(|s| s.name.as_deref()).collect();
        let info = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "servers": names,
            "started_at": self.started_at,
        });
        self.publisher.retain(self.topics.info(), info.to_string());
        let servers: Vec<_> =
            health.servers.iter().map(|s| json!({ "key": s.key, "name": s.name, "state": s.state.as_str() })).collect();
        let stats = json!({
            "dropped_events": self.publisher.dropped(),
            "servers_connected": health.connected(),
            "servers_configured": servers.len(),
            "servers": servers,
        });
        self.publisher.retain(self.topics.stats(), stats.to_string());
    }
}
