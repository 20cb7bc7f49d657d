//! The device of one Plex server: its connection, sessions, library activity and events, and the device
//! triggers `item_added` / `scan_finished`.

use serde_json::{json, Value};

use super::{bridge_and_server, bridge_only, slug, Components, Discovery, LIBRARY_EVENTS, PLAYBACK_EVENTS};
use super::{ServerButtons, SERVER_TRIGGERS};
use crate::plex::http::ServerIdentity;
use crate::topic::{BridgeTopics, ServerName, ServerTopics};

/// The key of a server device's "Connected" entity.
const CONNECTED: &str = "connected";

/// What the announcement of one server is built from.
pub struct ServerDevice<'a> {
    /// The configured URL (for the device's `configuration_url`; never part of an id).
    pub url: &'a str,
    pub name: &'a ServerName,
    pub identity: &'a ServerIdentity,
    pub topics: &'a ServerTopics,
    /// Buttons for the allowed commands (`[commands]`).
    pub buttons: &'a ServerButtons,
    /// The entity id (without the platform) the provisional device's "Connected" had, when this announcement
    /// replaces one: kept, so what users built on it goes on working (Home Assistant then remembers it).
    pub keep_connected_id: Option<&'a str>,
}

impl Discovery {
    /// The config topic and device-based discovery message of an identified server.
    pub fn server_config(&self, server: &ServerDevice<'_>, bridge: &BridgeTopics) -> (String, Value) {
        let id = self.server_device_id(&server.identity.machine_identifier);
        let topics = server.topics;
        let both = bridge_and_server(bridge, topics);
        let always = bridge_only(bridge);
        let mut c = Components::new(&id, server_entity_base(server.name.as_str()));
        c.entity_with_id(
            CONNECTED,
            server.keep_connected_id,
            "binary_sensor",
            "Connected",
            &always,
            json!({
                "state_topic": topics.state(),
                "value_template": "{{ 'ON' if value == 'connected' else 'OFF' }}",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
            }),
        );
        c.entity(
            "active_sessions",
            "sensor",
            "Active sessions",
            &both,
            json!({
                "state_topic": topics.sessions_summary(),
                "value_template": "{{ value_json.count }}",
                "json_attributes_topic": topics.sessions_summary(),
                "state_class": "measurement",
                "icon": "mdi:play-network",
            }),
        );
        c.entity(
            "transcoding_sessions",
            "sensor",
            "Transcoding sessions",
            &both,
            json!({
                "state_topic": topics.sessions_summary(),
                "value_template": "{{ value_json.transcoding }}",
                "state_class": "measurement",
                "icon": "mdi:cog-transfer",
            }),
        );
        c.entity(
            "total_bandwidth",
            "sensor",
            "Total bandwidth",
            &both,
            json!({
                "state_topic": topics.sessions_summary(),
                "value_template": "{{ value_json.total_bandwidth_kbps }}",
                "unit_of_measurement": "kbit/s",
                "device_class": "data_rate",
                "state_class": "measurement",
                "icon": "mdi:speedometer",
            }),
        );
        c.entity(
            "library_activity",
            "sensor",
            "Library activity",
            &both,
            json!({
                "state_topic": topics.activities_summary(),
                "value_template": "{{ value_json.title if value_json.count > 0 else 'idle' }}",
                "json_attributes_topic": topics.activities_summary(),
                "icon": "mdi:bookshelf",
            }),
        );
        c.entity(
            "library_scan",
            "binary_sensor",
            "Library scan",
            &both,
            json!({
                "state_topic": topics.activities_summary(),
                "value_template": "{{ 'ON' if value_json.scanning else 'OFF' }}",
                "device_class": "running",
            }),
        );
        c.entity(
            "playback",
            "event",
            "Playback",
            &both,
            json!({
                "state_topic": topics.events("playback"),
                "event_types": PLAYBACK_EVENTS,
                "icon": "mdi:play-circle-outline",
            }),
        );
        c.entity(
            "library",
            "event",
            "Library",
            &both,
            json!({
                "state_topic": topics.events("library"),
                "event_types": LIBRARY_EVENTS,
                "icon": "mdi:filmstrip-box-multiple",
            }),
        );
        c.entity(
            "version",
            "sensor",
            "Plex version",
            &always,
            json!({
                "state_topic": topics.info(),
                "value_template": "{{ value_json.version }}",
                "entity_category": "diagnostic",
                "icon": "mdi:information-outline",
            }),
        );
        for subtype in SERVER_TRIGGERS {
            c.trigger("library", subtype, &topics.events("library"));
        }
        c.server_buttons(topics, server.buttons, &both);
        let identity = server.identity;
        let name = if identity.friendly_name.is_empty() { server.name.as_str() } else { &identity.friendly_name };
        let device = json!({
            "identifiers": [format!("plex_{}", identity.machine_identifier)],
            "name": name,
            "manufacturer": "Plex",
            "model": "Plex Media Server",
            "sw_version": identity.version,
            "configuration_url": format!("{}/web", server.url.trim_end_matches('/')),
        });
        (self.config_topic(&id), c.message(device))
    }

    /// The config topic and message for a configured server that has never answered (no identity known): a
    /// device with its connection state only, so "Connected: off" can be alerted on from the first start.
    /// `index` is its position in the configuration (its entry in `<p>/bridge/stats`).
    pub fn provisional_server_config(
        &self,
        url: &str,
        display_name: &str,
        index: usize,
        bridge: &BridgeTopics,
    ) -> (String, Value) {
        let id = self.provisional_device_id(url);
        let mut c = Components::new(&id, server_entity_base(display_name));
        c.entity(
            CONNECTED,
            "binary_sensor",
            "Connected",
            &bridge_only(bridge),
            json!({
                "state_topic": bridge.stats(),
                "value_template": format!(
                    "{{{{ 'ON' if value_json.servers[{index}].state == 'connected' else 'OFF' }}}}"
                ),
                "device_class": "connectivity",
                "entity_category": "diagnostic",
            }),
        );
        let device = json!({
            "identifiers": [id.clone()],
            "name": display_name,
            "manufacturer": "Plex",
            "model": "Plex Media Server (not reached yet)",
            "configuration_url": format!("{}/web", url.trim_end_matches('/')),
        });
        (self.config_topic(&id), c.message(device))
    }
}

/// `plex_<server>`, the start of the entity ids of a server's device (provisional or not) and of its players'.
pub(super) fn server_entity_base(server_name: &str) -> String {
    format!("plex_{}", slug(server_name))
}

/// The entity id (without the platform) of the "Connected" in a server device's discovery `config`: what the
/// device that replaces it keeps ([`ServerDevice::keep_connected_id`]).
pub fn connected_object_id(config: &Value) -> Option<&str> {
    config["cmps"][CONNECTED]["object_id"].as_str()
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
    fn server_config_has_device_origin_components_and_triggers() {
        let d = Discovery::new("homeassistant", "plex");
        let bridge = BridgeTopics::new("plex");
        let name = ServerName::configured("living-room").unwrap();
        let topics = bridge.server(&name);
        let no_buttons = ServerButtons::default();
        let server = ServerDevice {
            url: "http://x:32400/",
            name: &name,
            identity: &identity(),
            topics: &topics,
            buttons: &no_buttons,
            keep_connected_id: None,
        };
        let (topic, config) = d.server_config(&server, &bridge);
        assert_eq!(topic, d.config_topic(&d.server_device_id("abc")));
        assert_eq!(config["dev"]["identifiers"][0], "plex_abc");
        assert_eq!(config["dev"]["configuration_url"], "http://x:32400/web");
        assert_eq!(config["o"]["name"], "plex-mqtt-bridge");
        let components = config["cmps"].as_object().unwrap();
        let entities: Vec<_> =
            components.values().filter(|c| c["p"] != "device_automation" && c["p"] != "button").collect();
        assert_eq!(entities.len(), 9);
        for c in entities {
            assert!(c["state_topic"].as_str().unwrap().starts_with("plex/living-room/"));
            assert!(c["availability"].as_array().is_some_and(|a| !a.is_empty()));
        }
        assert_eq!(components["playback"]["object_id"], "plex_living_room_playback");
        assert_eq!(components["playback"]["default_entity_id"], "event.plex_living_room_playback");
        assert_eq!(components["trigger_scan_finished"]["topic"], "plex/living-room/events/library");
        // A new URL changes nothing but the configuration link.
        let moved = ServerDevice { url: "http://localhost:32400/", ..server };
        let (moved_topic, moved_config) = d.server_config(&moved, &bridge);
        assert_eq!(moved_topic, topic);
        assert_eq!(moved_config["cmps"], config["cmps"]);
        // Scan buttons: removed while scans are not allowed; one for everything and one per section when they are.
        assert_eq!(components["button_scan_all"], json!({"p": "button"}));
        let buttons = ServerButtons {
            scan: true,
            sections: vec![("1".into(), "Films".into())],
            previous: vec!["button_scan_9".into()],
        };
        let (_, with_buttons) = d.server_config(&ServerDevice { buttons: &buttons, ..server }, &bridge);
        let cmps = &with_buttons["cmps"];
        assert_eq!(cmps["button_scan_all"]["command_topic"], "plex/living-room/command/library_scan");
        assert_eq!(cmps["button_scan_all"]["name"], "Scan all libraries");
        assert_eq!(cmps["button_scan_1"]["name"], "Scan Films");
        assert_eq!(cmps["button_scan_1"]["payload_press"], r#"{"section":"1"}"#);
        assert_eq!(cmps["button_scan_9"], json!({"p": "button"}), "a library gone: its button removed");
        assert_eq!(super::super::section_button_keys(&with_buttons), ["button_scan_1"]);
        // Replacing a provisional device, its "Connected" keeps the entity id users built on.
        let (_, provisional) = d.provisional_server_config("http://192.168.1.10:32400", "192.168.1.10", 0, &bridge);
        let kept = connected_object_id(&provisional);
        let (_, replacing) = d.server_config(&ServerDevice { keep_connected_id: kept, ..server }, &bridge);
        assert_eq!(replacing["cmps"]["connected"]["default_entity_id"], "binary_sensor.plex_192_168_1_10_connected");
        assert_eq!(replacing["cmps"]["connected"]["object_id"], "plex_192_168_1_10_connected");
        assert_eq!(replacing["cmps"]["connected"]["unique_id"], config["cmps"]["connected"]["unique_id"]);
    }
}
