//! The device of the bridge itself (as zigbee2mqtt has one): its broker connection, version, dropped events and
//! how many of its Plex servers are connected.

use serde_json::{json, Value};

use super::{bridge_only, Components, Discovery};
use crate::topic::BridgeTopics;

impl Discovery {
    /// The config topic and device-based discovery message of the bridge.
    pub fn bridge_config(&self, bridge: &BridgeTopics) -> (String, Value) {
        let id = self.bridge_device_id();
        let always = bridge_only(bridge);
        let mut c = Components::new(&id, self.bridge_entity_base.clone());
        // No availability: when the bridge is gone its last will says `offline`, which is this sensor's `off`.
        c.entity(
            "broker",
            "binary_sensor",
            "Broker connection",
            &json!({}),
            json!({
                "state_topic": bridge.state(),
                "payload_on": "online",
                "payload_off": "offline",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
            }),
        );
        c.entity(
            "version",
            "sensor",
            "Version",
            &always,
            json!({
                "state_topic": bridge.info(),
                "value_template": "{{ value_json.version }}",
                "entity_category": "diagnostic",
                "icon": "mdi:information-outline",
            }),
        );
        c.entity(
            "dropped_events",
            "sensor",
            "Dropped events",
            &always,
            json!({
                "state_topic": bridge.stats(),
                "value_template": "{{ value_json.dropped_events }}",
                "state_class": "total_increasing",
                "entity_category": "diagnostic",
                "icon": "mdi:delete-alert-outline",
            }),
        );
        c.entity(
            "servers_connected",
            "sensor",
            "Plex servers connected",
            &always,
            json!({
                "state_topic": bridge.stats(),
                "value_template": "{{ value_json.servers_connected }}",
                "json_attributes_topic": bridge.stats(),
                "json_attributes_template": "{{ {'servers': value_json.servers} | tojson }}",
                "icon": "mdi:server-network",
            }),
        );
        let name = match bridge.prefix() {
            crate::config::DEFAULT_TOPIC_PREFIX => "Plex MQTT bridge".to_owned(),
            prefix => format!("Plex MQTT bridge ({prefix})"),
        };
        let device = json!({
            "identifiers": [id.clone()],
            "name": name,
            "manufacturer": "plex-mqtt-bridge",
            "model": "Plex to MQTT bridge",
            "sw_version": env!("CARGO_PKG_VERSION"),
        });
        (self.config_topic(&id), c.message(device))
    }
}
