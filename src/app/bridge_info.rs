//! `<p>/bridge/info` (which servers this bridge serves, its version, when it started) and `<p>/bridge/stats`
//! (dropped events and each configured server's connection state — what the bridge device in Home Assistant
//! shows, and what the provisional device of a server that has never answered reads its "Connected" from).
//!
//! Both are read from the health registry, which owns the servers' states and names: a change there wakes this
//! task, so a burst of changes (a reconnect storm) costs one document, not one per change.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::mqtt::Publisher;
use crate::telemetry::health::HealthSnapshot;
use crate::telemetry::telemetry;
use crate::topic::BridgeTopics;

/// How often the stats document is looked at for a new dropped-events count (it is published only on change).
const STATS_REFRESH: Duration = Duration::from_secs(5);

/// Keeps the retained `bridge/info` and `bridge/stats` documents current.
pub struct BridgeInfo {
    publisher: Publisher,
    topics: BridgeTopics,
    started_at: String,
}

impl BridgeInfo {
    /// Publishes both documents for what the registry knows now (the configured servers, names still unknown).
    pub fn new(publisher: Publisher, topics: BridgeTopics) -> Self {
        let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let info = BridgeInfo { publisher, topics, started_at };
        info.publish(&telemetry().health().snapshot());
        info
    }

    /// Re-publishes the documents after every change of the registry, and the stats every 5 s so
    /// the dropped-events count stays current, until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        let mut changes = telemetry().health().changes();
        let mut tick = tokio::time::interval(STATS_REFRESH);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = changes.changed() => if changed.is_err() { return },
                () = stop.cancelled() => return,
            }
            // Unchanged payloads are not sent again (the outbox compares them).
            self.publish(&telemetry().health().snapshot());
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
