//! `<p>/bridge/info` (which servers this bridge serves, its version, when it started) and `<p>/bridge/stats`
//! (dropped events and each configured server's connection state — what the bridge device in Home Assistant
//! shows, and what the provisional device of a server that has never answered reads its "Connected" from).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::mqtt::Publisher;
use crate::topic::BridgeTopics;

/// How often the stats document is looked at for a new dropped-events count (it is published only on change).
const STATS_REFRESH: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct ServerEntry {
    /// Where it is configured (`servers[0]`).
    key: String,
    /// Its topic name, once known.
    name: Option<String>,
    state: &'static str,
}

/// Keeps the retained `bridge/info` and `bridge/stats` documents current.
#[derive(Clone)]
pub struct BridgeInfo {
    servers: Arc<Mutex<Vec<ServerEntry>>>,
    publisher: Publisher,
    topics: BridgeTopics,
    started_at: String,
}

impl BridgeInfo {
    /// Publishes both documents for the configured servers (by their config keys; names still unknown).
    pub fn new(publisher: Publisher, topics: BridgeTopics, server_keys: Vec<String>) -> Self {
        let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let servers = server_keys.into_iter().map(|key| ServerEntry { key, name: None, state: "connecting" }).collect();
        let info = BridgeInfo { servers: Arc::new(Mutex::new(servers)), publisher, topics, started_at };
        info.publish_info();
        info.publish_stats();
        info
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, Vec<ServerEntry>> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the topic name of server `index` (configured or learnt from the server).
    pub fn set_server(&self, index: usize, name: &str) {
        if let Some(entry) = self.servers().get_mut(index) {
            entry.name = Some(name.to_owned());
        }
        self.publish_info();
        self.publish_stats();
    }

    /// Records the connection state of server `index` (the value of its `<p>/<server>/state`).
    pub fn set_state(&self, index: usize, state: &'static str) {
        if let Some(entry) = self.servers().get_mut(index) {
            entry.state = state;
        }
        self.publish_stats();
    }

    /// Re-publishes the stats while `stop` has not fired, so the dropped-events count stays current.
    pub async fn refresh(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(STATS_REFRESH);
        loop {
            tokio::select! {
                _ = tick.tick() => self.publish_stats(),
                () = stop.cancelled() => return,
            }
        }
    }

    fn publish_info(&self) {
        let servers: Vec<String> = self.servers().iter().filter_map(|s| s.name.clone()).collect();
        let info = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "servers": servers,
            "started_at": self.started_at,
        });
        self.publisher.retain(self.topics.info(), info.to_string());
    }

    fn publish_stats(&self) {
        let (servers, connected) = {
            let servers = self.servers();
            let list: Vec<_> =
                servers.iter().map(|s| json!({ "key": s.key, "name": s.name, "state": s.state })).collect();
            (list, servers.iter().filter(|s| s.state == "connected").count())
        };
        let stats = json!({
            "dropped_events": self.publisher.dropped(),
            "servers_connected": connected,
            "servers_configured": servers.len(),
            "servers": servers,
        });
        self.publisher.retain(self.topics.stats(), stats.to_string());
    }
}
