//! Which discovery configs on the broker are this bridge's and still wanted. At start-up the bridge reads the
//! retained configs; once every configured server's device id is known (from the server, or from the identity
//! an earlier run left in its retained `info`), the bridge's own configs that belong to none of them — servers
//! no longer configured, provisional devices of servers identified since — are removed. A server that has never
//! been identified keeps the clean-up waiting, because its old config cannot be told apart from a stale one.

use std::time::Duration;

use tokio::sync::watch;

use super::Discovery;
use crate::mqtt::outbox::Action;
use crate::mqtt::Publisher;

/// The device ids of the configured servers, as they become known.
#[derive(Clone)]
pub struct KnownServers {
    ids: watch::Sender<Vec<Option<String>>>,
}

impl KnownServers {
    /// For `servers` configured servers, none known yet.
    pub fn new(servers: usize) -> Self {
        KnownServers { ids: watch::channel(vec![None; servers]).0 }
    }

    /// Server `index` has device id `device_id`.
    pub fn set(&self, index: usize, device_id: String) {
        self.ids.send_if_modified(|ids| match ids.get_mut(index) {
            Some(slot) if slot.as_deref() != Some(device_id.as_str()) => {
                *slot = Some(device_id);
                true
            }
            _ => false,
        });
    }

    /// Removes the bridge's stale configs once every server is known (`discovery` off: all of its configs, as
    /// soon as the broker's retained topics have been read).
    pub async fn remove_stale(self, publisher: Publisher, discovery: Discovery, enabled: bool) {
        // Nothing is removed from a partial picture: wait for the whole start-up read, however long the broker
        // takes to be reached.
        while !publisher.stale_scan_done(Duration::from_secs(3600)).await {}
        let own_prefix = discovery.own_config_prefix();
        let known: Vec<String> = if enabled {
            let mut ids = self.ids.subscribe();
            let known = match ids.wait_for(|ids| ids.iter().all(Option::is_some)).await {
                Ok(ids) => ids.iter().flatten().cloned().collect(),
                Err(_) => return,
            };
            known
        } else {
            Vec::new()
        };
        let bridge = discovery.config_topic(&discovery.bridge_device_id());
        let stale: Vec<Action> = publisher
            .take_stale(&own_prefix)
            .into_iter()
            .filter(|topic| {
                !(enabled && (*topic == bridge || known.iter().any(|id| discovery.belongs_to_server(topic, id))))
            })
            .filter(|topic| publisher.retained_payload(topic).is_none())
            .map(|topic| Action::Clear { topic })
            .collect();
        if !stale.is_empty() {
            tracing::info!(count = stale.len(), "removing Home Assistant devices this bridge no longer serves");
            publisher.apply(stale);
        }
    }
}
