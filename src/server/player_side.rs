//! What the state task publishes for a server's players: their Home Assistant devices, retained state, events
//! and artwork, and the players an earlier run left on the broker.

use bytes::Bytes;
use serde_json::Value;

use super::lookups::{now_ms, Lookups};
use crate::command_verb::Verb;
use crate::discovery::{Discovery, PlayerDevice};
use crate::model::players::{PlayerOutput, Players};
use crate::mqtt::outbox::Action;
use crate::mqtt::Publisher;
use crate::plex::http::ServerIdentity;
use crate::topic::{BridgeTopics, ServerName, ServerTopics};

/// The players of one server and what their devices are announced with.
pub struct PlayerSide {
    pub players: Players,
    /// The server's topic name and identity, from the last `Connected`.
    pub server: Option<(ServerName, ServerIdentity)>,
    /// The players an earlier run left on the broker were taken over (done once, with the first snapshot).
    pub restored: bool,
    /// Artwork to fetch: (player, PMS path).
    artwork_wanted: Vec<(String, String)>,
    publisher: Publisher,
    /// Home Assistant discovery, when enabled.
    discovery: Option<Discovery>,
    bridge_topics: BridgeTopics,
    /// `players.artwork`: fetch and publish what a player shows.
    artwork: bool,
    /// Player verbs allowed as commands (empty when commands are off): a button each on player devices.
    commands: Vec<Verb>,
}

impl PlayerSide {
    pub fn new(
        players: Players,
        publisher: Publisher,
        discovery: Option<Discovery>,
        bridge_topics: BridgeTopics,
        artwork: bool,
        commands: Vec<Verb>,
    ) -> Self {
        PlayerSide {
            players,
            server: None,
            restored: false,
            artwork_wanted: Vec::new(),
            publisher,
            discovery,
            bridge_topics,
            artwork,
            commands,
        }
    }

    /// Publishes what changed for the players: discovery, retained state, events; artwork is queued for
    /// fetching ([`Self::fetch_artwork`]).
    pub fn publish(&mut self, topics: &ServerTopics, outputs: Vec<PlayerOutput>) {
        if outputs.is_empty() {
            return;
        }
        let mut actions = Vec::with_capacity(outputs.len());
        for output in outputs {
            match output {
                PlayerOutput::Announce { player } => actions.extend(self.discovery_config(topics, &player)),
                PlayerOutput::State { player, doc } => {
                    actions
                        .push(Action::Retain { topic: topics.player(&player), payload: Bytes::from(doc.to_string()) });
                }
                PlayerOutput::Event { player, event } => {
                    actions.push(Action::Live {
                        topic: topics.player_events(&player),
                        payload: Bytes::from(event.to_string()),
                    });
                }
                PlayerOutput::Artwork { player, thumb } => {
                    if self.artwork {
                        self.artwork_wanted.push((player, thumb));
                    }
                }
                PlayerOutput::Remove { player } => {
                    tracing::info!(player, "player not seen for players.expire_after; removing its device and state");
                    if let (Some(discovery), Some((_, identity))) = (&self.discovery, &self.server) {
                        let device = discovery.player_device_id(&identity.machine_identifier, &player);
                        actions.push(Action::Clear { topic: discovery.config_topic(&device) });
                    }
                    actions.push(Action::Clear { topic: topics.player(&player) });
                    actions.push(Action::Clear { topic: topics.player_artwork(&player) });
                }
            }
        }
        self.publisher.apply(actions);
    }

    /// The discovery config of one player (nothing when discovery is off or the server is not identified).
    fn discovery_config(&self, topics: &ServerTopics, player: &str) -> Option<Action> {
        let (discovery, (name, identity)) = (self.discovery.as_ref()?, self.server.as_ref()?);
        let record = self.players.get(player)?;
        let device = PlayerDevice {
            server_machine_identifier: &identity.machine_identifier,
            server_name: name,
            topics,
            player,
            title: &record.title,
            product: &record.product,
            platform: &record.platform,
            commands: &self.commands,
        };
        let (topic, config) = discovery.player_config(&device, &self.bridge_topics);
        Some(Action::Retain { topic, payload: Bytes::from(config.to_string()) })
    }

    /// Takes over the players an earlier run left on the broker (their retained state), and expires old ones.
    pub fn restore(&mut self, topics: &ServerTopics) {
        let prefix = topics.players_prefix();
        let now = now_ms();
        let mut outputs = Vec::new();
        for (topic, payload) in self.publisher.take_stale_payloads(&prefix) {
            let Some(player) = topic.strip_prefix(&prefix).filter(|p| !p.contains('/')) else { continue };
            let doc: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            outputs.extend(self.players.restore(player, &doc, now));
        }
        if !outputs.is_empty() {
            tracing::debug!(players = outputs.len(), "players of an earlier run taken over");
        }
        self.publish(topics, outputs);
    }

    /// Starts the artwork fetches queued by [`Self::publish`].
    pub fn fetch_artwork(&mut self, lookups: &mut Lookups) {
        for (player, thumb) in self.artwork_wanted.drain(..) {
            lookups.artwork(player, thumb);
        }
    }

    /// A fetched poster, published if the player still shows what it was fetched for.
    pub fn artwork_fetched(&self, topics: &ServerTopics, player: &str, thumb: &str, image: Bytes) {
        if self.players.get(player).is_some_and(|p| p.thumb() == Some(thumb)) {
            self.publisher.apply([Action::Retain { topic: topics.player_artwork(player), payload: image }]);
        }
    }
}
