//! `<p>/bridge/info`: which servers this bridge serves, its version, and when it started.

use std::sync::{Arc, Mutex};

use crate::mqtt::Publisher;

/// Keeps the retained `bridge/info` document current as server names become known.
#[derive(Clone)]
pub struct BridgeInfo {
    inner: Arc<Mutex<Vec<Option<String>>>>,
    publisher: Publisher,
    topic: String,
    started_at: String,
}

impl BridgeInfo {
    /// Publishes the document for `servers` configured servers (names still unknown) at once.
    pub fn new(publisher: Publisher, topic: String, servers: usize) -> Self {
        let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let info = BridgeInfo { inner: Arc::new(Mutex::new(vec![None; servers])), publisher, topic, started_at };
        info.publish();
        info
    }

    /// Records the topic name of server `index` (configured or learnt from the server).
    pub fn set_server(&self, index: usize, name: &str) {
        {
            let mut names = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = names.get_mut(index) {
                *slot = Some(name.to_owned());
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let servers: Vec<String> =
            self.inner.lock().unwrap_or_else(|p| p.into_inner()).iter().flatten().cloned().collect();
        let info = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "servers": servers,
            "started_at": self.started_at,
        });
        self.publisher.retain(self.topic.clone(), info.to_string());
    }
}
