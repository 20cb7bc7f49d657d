//! Home Assistant MQTT discovery: one device per Plex server, announced with a single retained device-based
//! discovery message (`<discovery_prefix>/device/<id>/config`) whose components are the entities.
//!
//! The device id is derived from the configuration (the topic prefix and the server URL), not from anything
//! the server says, so that at start-up — before any server answers — the bridge knows which of the configs it
//! finds on the broker are its own and which belong to servers no longer configured (those it removes).
//! `unique_id`s are `<device id>_<entity>`: stable across restarts, and distinct for two bridges with
//! different topic prefixes.

use serde_json::{json, Value};

use crate::plex::http::ServerIdentity;
use crate::topic::{BridgeTopics, ServerName, ServerTopics};

/// Event types of the `Playback` event entity (the `event_type`s of `<p>/<server>/events/playback`).
pub const PLAYBACK_EVENTS: [&str; 6] = ["play", "pause", "resume", "stop", "seek", "scrobble"];
/// Event types of the `Library` event entity.
pub const LIBRARY_EVENTS: [&str; 4] = ["item_added", "item_deleted", "scan_started", "scan_finished"];

/// The discovery settings of this bridge.
#[derive(Debug, Clone)]
pub struct Discovery {
    discovery_prefix: String,
    topic_prefix: String,
}

impl Discovery {
    /// `discovery_prefix` is Home Assistant's (normally `homeassistant`); `topic_prefix` the bridge's.
    pub fn new(discovery_prefix: &str, topic_prefix: &str) -> Self {
        Discovery { discovery_prefix: discovery_prefix.to_owned(), topic_prefix: topic_prefix.to_owned() }
    }

    /// Where Home Assistant announces itself (`online` after it starts).
    pub fn status_topic(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }

    /// Every device config topic of Home Assistant (for the start-up read of what is there).
    pub fn config_filter(&self) -> String {
        format!("{}/device/+/config", self.discovery_prefix)
    }

    /// The start of every config topic this bridge owns.
    pub fn own_config_prefix(&self) -> String {
        format!("{}/device/plexmqtt_{:08x}_", self.discovery_prefix, fnv32(&self.topic_prefix))
    }

    /// The device id of the server configured with `server_url`.
    pub fn device_id(&self, server_url: &str) -> String {
        format!("plexmqtt_{:08x}_{:08x}", fnv32(&self.topic_prefix), fnv32(server_url))
    }

    /// The config topic of the server configured with `server_url`.
    pub fn config_topic(&self, server_url: &str) -> String {
        format!("{}/device/{}/config", self.discovery_prefix, self.device_id(server_url))
    }

    /// The device-based discovery message for one server.
    pub fn device_config(
        &self,
        server_url: &str,
        name: &ServerName,
        identity: &ServerIdentity,
        bridge: &BridgeTopics,
        server: &ServerTopics,
    ) -> Value {
        let id = self.device_id(server_url);
        let bridge_available = json!({
            "topic": bridge.state(),
            "payload_available": "online",
            "payload_not_available": "offline",
        });
        let server_available = json!({
            "topic": server.state(),
            "value_template": "{{ 'online' if value == 'connected' else 'offline' }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        });
        let both = json!({
            "availability": [bridge_available.clone(), server_available],
            "availability_mode": "all",
        });
        let entity = |key: &str, platform: &str, title: &str, extra: Value, availability: &Value| {
            let mut component = json!({
                "p": platform,
                "name": title,
                "unique_id": format!("{id}_{key}"),
                "default_entity_id": format!("{platform}.plex_{}_{key}", name.as_str().replace('-', "_")),
            });
            merge(&mut component, availability);
            merge(&mut component, &extra);
            (key.to_owned(), component)
        };
        let bridge_only = json!({ "availability": [bridge_available], "availability_mode": "all" });
        let components: serde_json::Map<String, Value> = [
            entity(
                "connected",
                "binary_sensor",
                "Connected",
                json!({
                    "state_topic": server.state(),
                    "value_template": "{{ 'ON' if value == 'connected' else 'OFF' }}",
                    "device_class": "connectivity",
                    "entity_category": "diagnostic",
                }),
                &bridge_only,
            ),
            entity(
                "active_sessions",
                "sensor",
                "Active sessions",
                json!({
                    "state_topic": server.sessions_summary(),
                    "value_template": "{{ value_json.count }}",
                    "json_attributes_topic": server.sessions_summary(),
                    "state_class": "measurement",
                    "icon": "mdi:play-network",
                }),
                &both,
            ),
            entity(
                "transcoding_sessions",
                "sensor",
                "Transcoding sessions",
                json!({
                    "state_topic": server.sessions_summary(),
                    "value_template": "{{ value_json.transcoding }}",
                    "state_class": "measurement",
                    "icon": "mdi:cog-transfer",
                }),
                &both,
            ),
            entity(
                "total_bandwidth",
                "sensor",
                "Total bandwidth",
                json!({
                    "state_topic": server.sessions_summary(),
                    "value_template": "{{ value_json.total_bandwidth_kbps }}",
                    "unit_of_measurement": "kbit/s",
                    "device_class": "data_rate",
                    "state_class": "measurement",
                }),
                &both,
            ),
            entity(
                "library_activity",
                "sensor",
                "Library activity",
                json!({
                    "state_topic": server.activities_summary(),
                    "value_template": "{{ value_json.title if value_json.count > 0 else 'idle' }}",
                    "json_attributes_topic": server.activities_summary(),
                    "icon": "mdi:bookshelf",
                }),
                &both,
            ),
            entity(
                "library_scan",
                "binary_sensor",
                "Library scan",
                json!({
                    "state_topic": server.activities_summary(),
                    "value_template": "{{ 'ON' if value_json.scanning else 'OFF' }}",
                    "device_class": "running",
                }),
                &both,
            ),
            entity(
                "playback",
                "event",
                "Playback",
                json!({ "state_topic": server.events("playback"), "event_types": PLAYBACK_EVENTS }),
                &both,
            ),
            entity(
                "library",
                "event",
                "Library",
                json!({ "state_topic": server.events("library"), "event_types": LIBRARY_EVENTS }),
                &both,
            ),
            entity(
                "version",
                "sensor",
                "Plex version",
                json!({
                    "state_topic": server.info(),
                    "value_template": "{{ value_json.version }}",
                    "entity_category": "diagnostic",
                    "icon": "mdi:information-outline",
                }),
                &bridge_only,
            ),
        ]
        .into_iter()
        .collect();
        json!({
            "dev": {
                "identifiers": [format!("plex_{}", identity.machine_identifier)],
                "name": if identity.friendly_name.is_empty() { name.as_str() } else { identity.friendly_name.as_str() },
                "manufacturer": "Plex",
                "model": "Plex Media Server",
                "sw_version": identity.version,
                "configuration_url": format!("{}/web", server_url.trim_end_matches('/')),
            },
            "o": { "name": "plex-mqtt-bridge", "sw": env!("CARGO_PKG_VERSION") },
            "cmps": components,
            "qos": 1,
        })
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

    fn identity() -> ServerIdentity {
        ServerIdentity {
            machine_identifier: "abc".into(),
            friendly_name: "Living Room".into(),
            version: "1.41".into(),
            platform: "Linux".into(),
        }
    }

    #[test]
    fn ids_are_stable_and_distinct_per_prefix_and_server() {
        let a = Discovery::new("homeassistant", "plex");
        let b = Discovery::new("homeassistant", "plex2");
        assert_eq!(a.device_id("http://x:32400/"), a.device_id("http://x:32400/"));
        assert_ne!(a.device_id("http://x:32400/"), a.device_id("http://y:32400/"));
        assert_ne!(a.device_id("http://x:32400/"), b.device_id("http://x:32400/"));
        assert!(a.config_topic("http://x:32400/").starts_with(&a.own_config_prefix()));
        assert!(!b.config_topic("http://x:32400/").starts_with(&a.own_config_prefix()));
    }

    #[test]
    fn config_has_device_origin_and_valid_components() {
        let d = Discovery::new("homeassistant", "plex");
        let bridge = BridgeTopics::new("plex");
        let name = ServerName::configured("living-room").unwrap();
        let config = d.device_config("http://x:32400/", &name, &identity(), &bridge, &bridge.server(&name));
        assert_eq!(config["dev"]["identifiers"][0], "plex_abc");
        assert_eq!(config["dev"]["configuration_url"], "http://x:32400/web");
        assert_eq!(config["o"]["name"], "plex-mqtt-bridge");
        let components = config["cmps"].as_object().unwrap();
        assert_eq!(components.len(), 9);
        for (key, c) in components {
            assert!(c["unique_id"].as_str().unwrap().ends_with(key.as_str()));
            assert!(c["state_topic"].as_str().unwrap().starts_with("plex/living-room/"));
            assert!(c["availability"].as_array().is_some_and(|a| !a.is_empty()));
            if c["p"] == "event" {
                assert!(c["event_types"].as_array().is_some_and(|t| !t.is_empty()));
            }
        }
        assert_eq!(components["playback"]["default_entity_id"], "event.plex_living_room_playback");
    }
}
