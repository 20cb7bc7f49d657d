//! Home Assistant MQTT discovery: a device per Plex server, a device per Plex player (linked to its server), and
//! a device for the bridge itself, each announced with one retained device-based discovery message
//! (`<discovery_prefix>/device/<device id>/config`) whose components are the entities and device triggers.
//!
//! Ids are keyed on what identifies a thing, never on how it is reached: a server's device id is
//! `plexmqtt_<node>_<machineIdentifier>` and a player's `<server device id>_player_<player machineIdentifier>`,
//! where `<node>` is a hash of the bridge's topic prefix (two bridges with different prefixes coexist). So the
//! same server at a new URL keeps its device, its entities and the names, areas and customisations users gave
//! them. `unique_id`s are `<device id>_<entity key>`.
//!
//! Entity ids: each component carries `object_id` (what Home Assistant before 2025.10 uses; newer versions
//! ignore it when `default_entity_id` is present) and `default_entity_id` (2025.10 and later), both giving
//! `<platform>.plex_<server>_<key>` for server entities and `<platform>.plex_<server>_<player>_<key>` for
//! player entities. Device-based discovery needs Home Assistant 2024.11 or newer ([`MIN_HOME_ASSISTANT`]).

mod bridge;
mod buttons;
mod media_player;
mod ownership;
mod player;
mod server;

use serde_json::{json, Map, Value};

pub use buttons::{section_button_keys, ServerButtons, PLAYER_BUTTONS};
pub use media_player::{offered_commands, KnownPlayer};
pub use ownership::KnownServers;
pub use player::PlayerDevice;
pub use server::{connected_object_id, ServerDevice};

use crate::topic::{fold_segment, BridgeTopics, DiscoveryTopics, ServerTopics};

/// The oldest Home Assistant release with everything this discovery uses (device-based discovery).
pub const MIN_HOME_ASSISTANT: &str = "2024.11";
/// Event types of the `Playback` event entities (server and player) — the `event_type`s of
/// `<p>/<server>/events/playback` and `<p>/<server>/players/<player>/events`.
pub const PLAYBACK_EVENTS: [&str; 6] = ["play", "pause", "resume", "stop", "seek", "scrobble"];
/// Event types of the `Library` event entity.
pub const LIBRARY_EVENTS: [&str; 4] = ["item_added", "item_deleted", "scan_started", "scan_finished"];
/// Device triggers of every player (a subset of [`PLAYBACK_EVENTS`]: a seek is rarely what an automation wants).
pub const PLAYER_TRIGGERS: [&str; 5] = ["play", "pause", "resume", "stop", "scrobble"];
/// Device triggers of every server.
pub const SERVER_TRIGGERS: [&str; 2] = ["item_added", "scan_finished"];

/// The discovery settings of this bridge.
#[derive(Debug, Clone)]
pub struct Discovery {
    topics: DiscoveryTopics,
    /// `plex_mqtt_bridge` for the default topic prefix, `plex_mqtt_bridge_<prefix>` for another: the bridge
    /// device's entity ids, so that a second bridge (another prefix) gets ids of its own, never `…_2`.
    bridge_entity_base: String,
    /// `plexmqtt_<hash of the topic prefix>`: the start of every device id of this bridge.
    node: String,
}

impl Discovery {
    /// `discovery_prefix` is Home Assistant's (normally `homeassistant`); `topic_prefix` the bridge's.
    pub fn new(discovery_prefix: &str, topic_prefix: &str) -> Self {
        Discovery {
            topics: DiscoveryTopics::new(discovery_prefix),
            bridge_entity_base: match topic_prefix {
                crate::config::DEFAULT_TOPIC_PREFIX => "plex_mqtt_bridge".to_owned(),
                other => format!("plex_mqtt_bridge_{}", slug(other)),
            },
            node: format!("plexmqtt_{:08x}", fnv32(topic_prefix)),
        }
    }

    /// Where Home Assistant announces itself (`online` after it starts).
    pub fn status_topic(&self) -> String {
        self.topics.status()
    }

    /// Every device config topic of Home Assistant (for the start-up read of what is there).
    pub fn config_filter(&self) -> String {
        self.topics.device_config_filter()
    }

    /// The start of every config topic this bridge owns.
    pub fn own_config_prefix(&self) -> String {
        self.topics.device_config_prefix(&format!("{}_", self.node))
    }

    /// The config topic of a device.
    pub fn config_topic(&self, device_id: &str) -> String {
        self.topics.device_config(device_id)
    }

    /// The device id of the server with this machineIdentifier.
    pub fn server_device_id(&self, machine_identifier: &str) -> String {
        format!("{}_{}", self.node, id_segment(machine_identifier))
    }

    /// The device id announced for a configured server whose identity is not known yet (it has never answered
    /// this bridge, and no earlier run left its `info`): replaced by the real one once it answers.
    pub fn provisional_device_id(&self, server_url: &str) -> String {
        format!("{}_unidentified_{:08x}", self.node, fnv32(server_url))
    }

    /// The device id of a player (by its folded machineIdentifier) as seen by one server.
    pub fn player_device_id(&self, server_machine_identifier: &str, player: &str) -> String {
        format!("{}_player_{}", self.server_device_id(server_machine_identifier), id_segment(player))
    }

    /// The config topic under which versions with URL-keyed ids announced the server configured with `url`.
    pub fn legacy_server_config_topic(&self, server_url: &str) -> String {
        self.config_topic(&format!("{}_{:08x}", self.node, fnv32(server_url)))
    }

    /// The device id of the bridge itself.
    pub fn bridge_device_id(&self) -> String {
        format!("{}_bridge", self.node)
    }

    /// Whether `config_topic` is the server device `server_device_id` or one of its players.
    pub fn belongs_to_server(&self, config_topic: &str, server_device_id: &str) -> bool {
        self.topics.device_of_config(config_topic).is_some_and(|device| {
            device == server_device_id
                || device.strip_prefix(server_device_id).is_some_and(|rest| rest.starts_with("_player_"))
        })
    }
}

/// The `o` (origin) block: which software announced the device, and where to read about it.
fn origin() -> Value {
    json!({
        "name": "plex-mqtt-bridge",
        "sw": env!("CARGO_PKG_VERSION"),
        "url": env!("CARGO_PKG_REPOSITORY"),
    })
}

/// Available while the bridge is online.
fn bridge_available(bridge: &BridgeTopics) -> Value {
    json!({ "topic": bridge.state(), "payload_available": "online", "payload_not_available": "offline" })
}

/// Availability for entities that show what a server reports: the bridge online *and* the server connected.
fn bridge_and_server(bridge: &BridgeTopics, server: &ServerTopics) -> Value {
    json!({
        "availability": [
            bridge_available(bridge),
            {
                "topic": server.state(),
                "value_template": "{{ 'online' if value == 'connected' else 'offline' }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            },
        ],
        "availability_mode": "all",
    })
}

/// Availability for entities that stay meaningful while the server is away (its connection state, version).
fn bridge_only(bridge: &BridgeTopics) -> Value {
    json!({ "availability": [bridge_available(bridge)], "availability_mode": "all" })
}

/// The components (`cmps`) of one device, built with consistent unique ids and entity ids.
struct Components {
    /// `<device id>`: unique ids are `<device id>_<key>`.
    device_id: String,
    /// `plex_<server>[_<player>]`: entity ids are `<platform>.<this>_<key>`.
    entity_base: String,
    map: Map<String, Value>,
}

impl Components {
    fn new(device_id: &str, entity_base: String) -> Self {
        Components { device_id: device_id.to_owned(), entity_base, map: Map::new() }
    }

    /// An entity: `key` names it within the device; `extra` holds its platform options.
    fn entity(&mut self, key: &str, platform: &str, name: &str, availability: &Value, extra: Value) {
        self.entity_with_id(key, None, platform, name, availability, extra);
    }

    /// [`Components::entity`] with the entity id (without the platform) given, where one must be kept.
    fn entity_with_id(
        &mut self,
        key: &str,
        object_id: Option<&str>,
        platform: &str,
        name: &str,
        availability: &Value,
        extra: Value,
    ) {
        let object_id = object_id.map_or_else(|| format!("{}_{key}", self.entity_base), str::to_owned);
        let mut component = json!({
            "p": platform,
            "name": name,
            "unique_id": format!("{}_{key}", self.device_id),
            "object_id": object_id,
            "default_entity_id": format!("{platform}.{object_id}"),
        });
        merge(&mut component, availability);
        merge(&mut component, &extra);
        self.map.insert(key.to_owned(), component);
    }

    /// A device trigger that fires when a JSON message on `topic` has `event_type` = `subtype`.
    fn trigger(&mut self, kind: &str, subtype: &str, topic: &str) {
        self.map.insert(
            format!("trigger_{subtype}"),
            json!({
                "p": "device_automation",
                "automation_type": "trigger",
                "type": kind,
                "subtype": subtype,
                "topic": topic,
                "value_template": "{{ value_json.event_type }}",
                "payload": subtype,
            }),
        );
    }

    /// The whole discovery message.
    /// A component sent as its platform alone: device-based discovery removes it from the device.
    fn removed(&mut self, key: &str, platform: &str) {
        self.map.insert(key.to_owned(), json!({ "p": platform }));
    }

    fn message(self, device: Value) -> Value {
        json!({ "dev": device, "o": origin(), "cmps": self.map, "qos": 1 })
    }
}

/// Entity-id text: Home Assistant allows `[a-z0-9_]`, with no `__` and no `_` at either end (a name like
/// "Room - TV" folds to `room_-_tv`, whose dash would otherwise leave `room___tv`).
fn slug(text: &str) -> String {
    // Folding the folded text again collapses and trims the `_` the dashes became (it is short and ASCII by
    // then, so the second fold neither cuts nor hashes).
    fold_segment(&fold_segment(text).replace('-', "_"))
}

/// An id part for device ids and config topics (`[a-zA-Z0-9_-]`, case kept: machineIdentifiers are
/// case-sensitive).
fn id_segment(text: &str) -> String {
    let folded: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if folded.is_empty() {
        "unknown".to_owned()
    } else {
        folded
    }
}

fn merge(into: &mut Value, from: &Value) {
    if let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) {
        for (key, value) in from {
            into.insert(key.clone(), value.clone());
        }
    }
}

/// FNV-1a, 32 bits: short, stable across Rust versions and platforms (unlike `DefaultHasher`).
fn fnv32(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_keyed_on_identity_and_distinct_per_prefix() {
        let a = Discovery::new("homeassistant", "plex");
        let b = Discovery::new("homeassistant", "plex2");
        assert_eq!(a.server_device_id("abc"), a.server_device_id("abc"));
        assert_ne!(a.server_device_id("abc"), a.server_device_id("abd"));
        assert_ne!(a.server_device_id("abc"), b.server_device_id("abc"));
        let server = a.server_device_id("abc");
        let player = a.player_device_id("abc", "tv1");
        assert!(a.config_topic(&server).starts_with(&a.own_config_prefix()));
        assert!(a.config_topic(&player).starts_with(&a.own_config_prefix()));
        assert!(!b.config_topic(&b.server_device_id("abc")).starts_with(&a.own_config_prefix()));
        assert!(a.belongs_to_server(&a.config_topic(&server), &server));
        assert!(a.belongs_to_server(&a.config_topic(&player), &server));
        assert!(!a.belongs_to_server(&a.config_topic(&a.server_device_id("abcd")), &server));
        assert!(!a.belongs_to_server(&a.config_topic(&a.bridge_device_id()), &server));
        assert_eq!(id_segment("Ab:c/d"), "Ab_c_d");
        assert_eq!(slug("Room - TV"), "room_tv", "Home Assistant refuses `__` in an entity id");
        assert_eq!(slug("-Living-Room-"), "living_room");
    }
}
