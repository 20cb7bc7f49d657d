//! The device of one Plex player (a client, by its machineIdentifier) as seen by one server: "Now playing",
//! "Title", "User", the "Playback" event, the "Artwork" image, and a device trigger per playback transition.

use serde_json::{json, Value};

use super::{bridge_and_server, slug, Components, Discovery, PLAYBACK_EVENTS, PLAYER_TRIGGERS};
use crate::topic::{BridgeTopics, ServerName, ServerTopics};

/// What the announcement of one player is built from.
pub struct PlayerDevice<'a> {
    /// The machineIdentifier of the server the player plays from (its device is the player's `via_device`).
    pub server_machine_identifier: &'a str,
    pub server_name: &'a ServerName,
    pub topics: &'a ServerTopics,
    /// The player's topic segment ([`crate::topic::player_segment`]).
    pub player: &'a str,
    /// The player's own name (`Player.title`), its product and platform.
    pub title: &'a str,
    pub product: &'a str,
    pub platform: &'a str,
    /// The player verbs `commands.allow` allows (none when commands are off): one button each.
    pub commands: &'a [crate::command_verb::Verb],
}

/// The `states` of the "Now playing" sensor.
pub const PLAYER_STATES: [&str; 4] = ["idle", "playing", "paused", "buffering"];

/// Keys of the player entities other configurations build on (the media player package): entity ids are
/// `<platform>.<player entity base>_<key>`, unique ids `<player device id>_<key>`.
pub(super) const NOW_PLAYING: &str = "now_playing";
const TITLE: &str = "title";
pub(super) const ARTWORK: &str = "artwork";

/// `plex_<server>_<player>`, the start of a player's entity ids: its name, or its topic segment when the name
/// folds to nothing.
pub(super) fn player_entity_base(server_name: &ServerName, title: &str, player: &str) -> String {
    let title_slug = match slug(title) {
        empty if empty.is_empty() => slug(player),
        text => text,
    };
    format!("{}_{title_slug}", super::server::server_entity_base(server_name.as_str()))
}

impl Discovery {
    /// The config topic and device-based discovery message of one player.
    pub fn player_config(&self, player: &PlayerDevice<'_>, bridge: &BridgeTopics) -> (String, Value) {
        let id = self.player_device_id(player.server_machine_identifier, player.player);
        let topics = player.topics;
        let state = topics.player(player.player);
        let events = topics.player_events(player.player);
        let both = bridge_and_server(bridge, topics);
        let mut c = Components::new(&id, player_entity_base(player.server_name, player.title, player.player));
        c.entity(
            NOW_PLAYING,
            "sensor",
            "Now playing",
            &both,
            json!({
                "state_topic": state,
                "value_template": "{{ value_json.state }}",
                "json_attributes_topic": state,
                "json_attributes_template": "{{ value_json.attributes | tojson }}",
                "device_class": "enum",
                "options": PLAYER_STATES,
                "icon": "mdi:play-box-outline",
            }),
        );
        c.entity(
            TITLE,
            "sensor",
            "Title",
            &both,
            json!({ "state_topic": state, "value_template": "{{ value_json.title }}", "icon": "mdi:movie-open" }),
        );
        c.entity(
            "user",
            "sensor",
            "User",
            &both,
            json!({ "state_topic": state, "value_template": "{{ value_json.user }}", "icon": "mdi:account" }),
        );
        c.entity(
            "playback",
            "event",
            "Playback",
            &both,
            json!({ "state_topic": events, "event_types": PLAYBACK_EVENTS, "icon": "mdi:play-circle-outline" }),
        );
        c.entity(
            ARTWORK,
            "image",
            "Artwork",
            &both,
            json!({ "image_topic": topics.player_artwork(player.player), "content_type": "image/jpeg" }),
        );
        for subtype in PLAYER_TRIGGERS {
            c.trigger("playback", subtype, &events);
        }
        c.player_buttons(topics, player.player, player.commands, &both);
        let name = if player.title.is_empty() { player.player } else { player.title };
        let device = json!({
            "identifiers": [id.clone()],
            "name": name,
            "manufacturer": if player.product.is_empty() { "Plex" } else { player.product },
            "model": if player.platform.is_empty() { "Plex player" } else { player.platform },
            "via_device": format!("plex_{}", player.server_machine_identifier),
        });
        (self.config_topic(&id), c.message(device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn player_config_links_to_its_server_and_never_carries_a_url() {
        let d = Discovery::new("homeassistant", "plex");
        let bridge = BridgeTopics::new("plex");
        let name = ServerName::configured("home").unwrap();
        let topics = bridge.server(&name);
        let player = PlayerDevice {
            server_machine_identifier: "abc",
            server_name: &name,
            topics: &topics,
            player: "tv1",
            title: "Living Room TV",
            product: "Plex for LG",
            platform: "webOS",
            commands: &[],
        };
        let (topic, config) = d.player_config(&player, &bridge);
        assert_eq!(topic, d.config_topic(&d.player_device_id("abc", "tv1")));
        assert_eq!(config["dev"]["via_device"], "plex_abc");
        assert_eq!(config["dev"]["name"], "Living Room TV");
        let cmps = &config["cmps"];
        assert_eq!(cmps["now_playing"]["default_entity_id"], "sensor.plex_home_living_room_tv_now_playing");
        assert_eq!(cmps["artwork"]["image_topic"], "plex/home/players/tv1/artwork");
        assert_eq!(cmps["button_pause"], serde_json::json!({"p": "button"}), "no command allowed: buttons removed");
        let commands = [crate::command_verb::Verb::Pause, crate::command_verb::Verb::Stop];
        let (_, with_buttons) = d.player_config(&PlayerDevice { commands: &commands, ..player }, &bridge);
        let pause = &with_buttons["cmps"]["button_pause"];
        assert_eq!(pause["p"], "button");
        assert_eq!(pause["command_topic"], "plex/home/players/tv1/command/pause");
        assert_eq!(pause["payload_press"], "{}");
        assert_eq!(with_buttons["cmps"]["button_stop"]["name"], "Stop");
        assert_eq!(with_buttons["cmps"]["button_play"], serde_json::json!({"p": "button"}), "play is not allowed");
        assert_eq!(cmps["trigger_play"]["payload"], "play");
        assert_eq!(cmps["trigger_play"]["topic"], "plex/home/players/tv1/events");
        let mut without_origin = config.clone();
        without_origin["o"] = Value::Null;
        assert!(!without_origin.to_string().contains("://"), "no URL in a player's announcement");
    }
}
