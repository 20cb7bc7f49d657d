//! The start-up scan: what an earlier run left retained on the broker, read once on the first session.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, QoS};

use super::Shared;
use crate::topic::BridgeTopics;

/// The start-up read of retained topics an earlier run may have left (sessions, activities, players, server
/// `info`, discovery configs): subscribe, collect what the broker delivers as retained, unsubscribe. Each
/// server's resync then clears what is no longer true; a server that cannot be reached takes its last identity
/// from its `info`.
pub(super) struct StaleScan {
    client: AsyncClient,
    /// `<p>/`: the bridge's own topics.
    own_topics: String,
    /// The start of the bridge's own discovery configs (other integrations' configs are only listed).
    own_configs: String,
    filters: Vec<String>,
    state: ScanState,
    pub(super) deadline: Option<tokio::time::Instant>,
}

#[derive(PartialEq, Eq)]
enum ScanState {
    NotStarted,
    Subscribing,
    Collecting,
    Done,
}

/// How long retained messages may take to arrive after the subscription is confirmed.
const SCAN_SETTLE: Duration = Duration::from_millis(700);
/// The scan gives up after this long without confirmation (the broker may refuse the subscription).
const SCAN_LIMIT: Duration = Duration::from_secs(3);

impl StaleScan {
    pub(super) fn new(client: AsyncClient, topics: &BridgeTopics, discovery_filter: &str, own_configs: &str) -> Self {
        let mut filters = topics.leftover_filters().to_vec();
        filters.push(discovery_filter.to_owned());
        StaleScan {
            client,
            own_topics: topics.own_topics(),
            own_configs: own_configs.to_owned(),
            filters,
            state: ScanState::NotStarted,
            deadline: None,
        }
    }

    fn active(&self) -> bool {
        matches!(self.state, ScanState::Subscribing | ScanState::Collecting)
    }

    /// Keeps a retained message that arrived while the scan runs. Payloads are kept only for the bridge's own
    /// topics and configs (other integrations' configs are only ever listed, never read).
    pub(super) fn collect(&self, topic: &str, publish: &rumqttc::Publish, shared: &Shared) {
        if !publish.retain || publish.payload.is_empty() || !self.active() {
            return;
        }
        let own = topic.starts_with(&self.own_topics) || topic.starts_with(&self.own_configs);
        let payload = if own { publish.payload.clone() } else { Bytes::new() };
        shared.stale.lock().unwrap_or_else(|p| p.into_inner()).insert(topic.to_owned(), payload);
    }

    /// On the first broker session only.
    pub(super) fn begin(&mut self) {
        if self.state != ScanState::NotStarted {
            return;
        }
        let filters = self.filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        if self.client.try_subscribe_many(filters).is_err() {
            tracing::debug!("could not ask for leftover retained topics");
        }
        self.state = ScanState::Subscribing;
        self.deadline = Some(tokio::time::Instant::now() + SCAN_LIMIT);
    }

    pub(super) fn subscribed(&mut self) {
        if self.state != ScanState::Subscribing {
            return;
        }
        // All filters went in one SUBSCRIBE, sent before any other: the first SUBACK is ours.
        self.state = ScanState::Collecting;
        self.deadline = Some(tokio::time::Instant::now() + SCAN_SETTLE);
    }

    pub(super) fn finish(&mut self, shared: &Shared) {
        self.deadline = None;
        if self.active() {
            for filter in &self.filters {
                let _ = self.client.try_unsubscribe(filter.clone());
            }
        }
        self.state = ScanState::Done;
        let found = shared.stale.lock().unwrap_or_else(|p| p.into_inner()).len();
        tracing::debug!(found, "read leftover retained session/activity topics");
        shared.scan_done.send_replace(true);
    }
}
