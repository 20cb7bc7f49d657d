//! A Home Assistant package with one `media_player` per Plex player: the media card (artwork, title,
//! play/pause/stop/next/previous) that MQTT discovery cannot give, since it has no `media_player` platform. The
//! package needs only core integrations and the entities the bridge announces:
//!
//! - a `template` sensor per player, its "media source": the Now playing state, the `media_*` attributes from
//!   the Now playing sensor's attributes and the picture of the Artwork image. Core's `universal` media player
//!   takes the title and the picture only from a child entity's attributes (its `attributes:` overrides cover
//!   neither in 2025.4, and only the picture in 2026.11), so the child is this sensor;
//! - a `universal` media player with that sensor as its child, its state the Now playing sensor's (`idle`,
//!   `playing`, `paused`, `buffering` are media player states too; `unavailable` while the bridge or the server
//!   is away), and a command for each player verb `[commands]` allows, which publishes to the verb's command
//!   topic: the message the bridge's own button sends, so the PMS gets exactly the request the bridge makes for
//!   that verb. With none allowed it has no commands: read-only, with no controls in Home Assistant
//!   (`supported_features` 0).
//!
//! `media_seek` is not offered: the universal platform sends it to a child media player, never to `commands`.
//!
//! Unique ids are `<player device id>_media_player` and `<player device id>_media` (the discovery's ids), so
//! Home Assistant keeps both entities, and what users changed on them, when the package is regenerated. Entity
//! ids come from the names: the source's name is the words of `<player entity base>_media`, which Home
//! Assistant turns back into exactly that id (the media player refers to it); the media player is named
//! "Plex `<server>` `<player>`", which gives `media_player.<player entity base>` for names of letters, digits and
//! spaces.

use super::player::{player_entity_base, ARTWORK, NOW_PLAYING, PLAYER_STATES};
use super::Discovery;
use crate::command_verb::Verb;
use crate::topic::{BridgeTopics, ServerName};

/// One player the bridge knows (its retained state), on an identified server (that server's retained `info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPlayer {
    /// The server's topic name.
    pub server: ServerName,
    pub server_machine_identifier: String,
    /// The player's topic level (its folded machineIdentifier).
    pub player: String,
    /// The player's own name (`Player.title`); may be empty.
    pub title: String,
}

/// The media player actions a universal media player can hand to `commands`, and the bridge verb of each.
const MEDIA_COMMANDS: [(&str, Verb); 5] = [
    ("media_play", Verb::Play),
    ("media_pause", Verb::Pause),
    ("media_stop", Verb::Stop),
    ("media_next_track", Verb::SkipNext),
    ("media_previous_track", Verb::SkipPrevious),
];

/// The media player actions offered when the `allowed` player verbs may run, with their verbs.
pub fn offered_commands(allowed: &[Verb]) -> Vec<(&'static str, Verb)> {
    MEDIA_COMMANDS.into_iter().filter(|(_, verb)| allowed.contains(verb)).collect()
}

/// The Now playing states, as a Jinja list: the source is available in these.
fn states_list() -> String {
    let quoted: Vec<String> = PLAYER_STATES.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it): safe for any text from Plex.
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Text for a YAML comment: one line, whatever the player's name holds.
fn comment(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The `[a-z0-9]` words of an entity id part: Home Assistant turns a name made of them, joined by spaces,
/// into exactly these words joined by `_`.
fn words(object_id: &str) -> Vec<&str> {
    object_id.split(['_', '-']).filter(|w| !w.is_empty()).collect()
}

/// The entity ids and names of one player's two package entities.
struct PlayerEntities {
    now_playing: String,
    artwork: String,
    source_name: String,
    source: String,
    device: String,
}

impl Discovery {
    /// The package (YAML) for `players`, with commands for the `allowed` player verbs of `bridge`'s topics.
    pub fn media_player_package(&self, bridge: &BridgeTopics, players: &[KnownPlayer], allowed: &[Verb]) -> String {
        let commands = offered_commands(allowed);
        let mut out = header(bridge, players.len(), &commands);
        out.push_str("template:\n  - sensor:\n");
        for player in players {
            out.push_str(&self.media_source(player));
        }
        out.push_str("media_player:\n");
        for player in players {
            out.push_str(&self.universal(bridge, player, &commands));
        }
        out
    }

    fn entities(&self, player: &KnownPlayer) -> PlayerEntities {
        let base = player_entity_base(&player.server, &player.title, &player.player);
        let source_words = words(&base).into_iter().chain(["media"]).collect::<Vec<_>>();
        PlayerEntities {
            now_playing: format!("sensor.{base}_{NOW_PLAYING}"),
            artwork: format!("image.{base}_{ARTWORK}"),
            source_name: source_words.join(" "),
            source: format!("sensor.{}", source_words.join("_")),
            device: self.player_device_id(&player.server_machine_identifier, &player.player),
        }
    }

    /// The template sensor a player's media player takes its title and picture from.
    fn media_source(&self, player: &KnownPlayer) -> String {
        let e = self.entities(player);
        let np = &e.now_playing;
        let when = |kind: &str, attribute: &str| {
            format!("{{{{ state_attr('{np}', '{attribute}') if is_state_attr('{np}', 'media_type', '{kind}') else none }}}}")
        };
        let attributes = [
            ("media_title", format!("{{{{ state_attr('{np}', 'title') }}}}")),
            (
                "media_content_type",
                format!(
                    "{{{{ {{'movie': 'movie', 'episode': 'episode', 'track': 'music'}}.get(state_attr('{np}', 'media_type')) }}}}"
                ),
            ),
            ("media_series_title", when("episode", "show")),
            ("media_season", when("episode", "season")),
            ("media_episode", when("episode", "episode")),
            ("media_artist", when("track", "show")),
            (
                "media_duration",
                format!(
                    "{{{{ (state_attr('{np}', 'duration_ms') / 1000) | round if state_attr('{np}', 'duration_ms') is number else none }}}}"
                ),
            ),
        ];
        let mut out = format!(
            "      # {} ({} on {}): what its media player shows.\n",
            comment(display_name(player)),
            player.player,
            player.server
        );
        out.push_str(&format!("      - name: {}\n", quoted(&e.source_name)));
        out.push_str(&format!("        unique_id: {}\n", quoted(&format!("{}_media", e.device))));
        out.push_str("        icon: \"mdi:plex\"\n");
        out.push_str(&format!("        state: {}\n", quoted(&format!("{{{{ states('{np}') }}}}"))));
        let available = format!("{{{{ states('{np}') in {} }}}}", states_list());
        out.push_str(&format!("        availability: {}\n", quoted(&available)));
        out.push_str("        attributes:\n");
        for (key, template) in attributes {
            out.push_str(&format!("          {key}: {}\n", quoted(&template)));
        }
        // Never null: Home Assistant 2026 logs an error for a picture that renders to none.
        let picture = format!("{{{{ state_attr('{0}', 'entity_picture') if has_value('{0}') else '' }}}}", e.artwork);
        out.push_str(&format!("        picture: {}\n", quoted(&picture)));
        out
    }

    /// The universal media player of one player.
    fn universal(&self, bridge: &BridgeTopics, player: &KnownPlayer, commands: &[(&str, Verb)]) -> String {
        let e = self.entities(player);
        let name = format!("Plex {} {}", player.server, display_name(player));
        let mut out = format!("  - platform: universal\n    name: {}\n", quoted(&name));
        out.push_str(&format!("    unique_id: {}\n", quoted(&format!("{}_media_player", e.device))));
        out.push_str(&format!("    children:\n      - {}\n", quoted(&e.source)));
        // The state override is read whenever the media player is written (a `state_template` would be unknown
        // after a reload until the player next changes); `unavailable` while the bridge or server is away.
        out.push_str(&format!("    attributes:\n      state: {}\n", quoted(&e.now_playing)));
        if commands.is_empty() {
            out.push_str("    # Read-only: no player command is allowed (see the top of this file).\n");
            return out;
        }
        let topics = bridge.server(&player.server);
        out.push_str("    commands:\n");
        for (action, verb) in commands {
            let topic = topics.player_command(&player.player, verb.name());
            out.push_str(&format!(
                "      {action}:\n        action: mqtt.publish\n        data:\n          topic: {}\n          payload: \"{{}}\"\n          qos: 1\n          retain: false\n",
                quoted(&topic)
            ));
        }
        out
    }
}

/// The player's name, or its topic level when it has none.
fn display_name(player: &KnownPlayer) -> &str {
    if player.title.trim().is_empty() {
        &player.player
    } else {
        &player.title
    }
}

/// What the file is, how to install it, and what its media players can do.
fn header(bridge: &BridgeTopics, players: usize, commands: &[(&str, Verb)]) -> String {
    let mut out = format!(
        "# Home Assistant package: a media player per Plex player, written by `plex-mqtt-bridge homeassistant-package`\n\
         # (version {}) from the {players} player(s) the bridge knows under `{}/`. It needs nothing but core Home\n\
         # Assistant (the template and universal integrations) and the entities the bridge announces by MQTT discovery.\n\
         #\n\
         # Install: save it in the `packages` folder beside configuration.yaml, which needs\n\
         #   homeassistant:\n\
         #     packages: !include_dir_named packages\n\
         # then restart Home Assistant. Write it again when players come or go (or [commands] changes), then restart,\n\
         # or run the actions universal.reload and then template.reload (Developer tools > YAML lists both).\n\
         #\n",
        env!("CARGO_PKG_VERSION"),
        bridge.prefix(),
    );
    if commands.is_empty() {
        out.push_str(
            "# Commands: none. The bridge's [commands] section is off or allows no player verb (play, pause, stop,\n\
             # skip_next, skip_previous), so these media players are read-only: state, title and artwork, no controls.\n\
             # Enable [commands], allow the verbs, restart the bridge and write this file again to control players.\n",
        );
    } else {
        let list: Vec<String> = commands.iter().map(|(action, verb)| format!("{action} -> {verb}")).collect();
        out.push_str(&format!(
            "# Commands: {}.\n\
             # Each publishes `{{}}` to the player's command topic, as the bridge's button does; the bridge makes the\n\
             # request and answers on <prefix>/<server>/command/result.\n",
            list.join(", ")
        ));
    }
    out.push_str(
        "# Seek is not offered: the universal media player sends media_seek only to a child media player.\n\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use yaml_rust2::{Yaml, YamlLoader};

    fn player(title: &str) -> KnownPlayer {
        KnownPlayer {
            server: ServerName::configured("home").unwrap(),
            server_machine_identifier: "abc".into(),
            player: "tv-4b45".into(),
            title: title.into(),
        }
    }

    fn package(players: &[KnownPlayer], allowed: &[Verb]) -> Yaml {
        let d = Discovery::new("homeassistant", "plex");
        let text = d.media_player_package(&BridgeTopics::new("plex"), players, allowed);
        YamlLoader::load_from_str(&text).expect("the package is YAML").remove(0)
    }

    #[test]
    fn a_media_player_per_player_built_on_the_discovery_ids() {
        let d = Discovery::new("homeassistant", "plex");
        let yaml = package(&[player("Living Room TV"), player("")], &[Verb::Pause, Verb::Seek, Verb::SkipNext]);
        let source = &yaml["template"][0]["sensor"][0];
        assert_eq!(source["name"].as_str(), Some("plex home living room tv media"));
        let device = d.player_device_id("abc", "tv-4b45");
        assert_eq!(source["unique_id"].as_str(), Some(format!("{device}_media").as_str()));
        let np = "sensor.plex_home_living_room_tv_now_playing";
        assert_eq!(source["state"].as_str(), Some(format!("{{{{ states('{np}') }}}}").as_str()));
        assert!(source["attributes"]["media_title"].as_str().is_some_and(|t| t.contains(np)));
        assert!(source["picture"].as_str().is_some_and(|t| t.contains("'image.plex_home_living_room_tv_artwork'")));
        let tv = &yaml["media_player"][0];
        assert_eq!(tv["platform"].as_str(), Some("universal"));
        assert_eq!(tv["name"].as_str(), Some("Plex home Living Room TV"));
        assert_eq!(tv["unique_id"].as_str(), Some(format!("{device}_media_player").as_str()));
        assert_eq!(tv["children"][0].as_str(), Some("sensor.plex_home_living_room_tv_media"));
        assert_eq!(tv["attributes"]["state"].as_str(), Some(np));
        let pause = &tv["commands"]["media_pause"];
        assert_eq!(pause["action"].as_str(), Some("mqtt.publish"));
        assert_eq!(pause["data"]["topic"].as_str(), Some("plex/home/players/tv-4b45/command/pause"));
        assert_eq!(pause["data"]["payload"].as_str(), Some("{}"));
        assert_eq!(pause["data"]["retain"].as_bool(), Some(false));
        assert_eq!(
            tv["commands"]["media_next_track"]["data"]["topic"].as_str(),
            Some("plex/home/players/tv-4b45/command/skip_next")
        );
        let offered: Vec<&str> = tv["commands"].as_hash().unwrap().keys().filter_map(Yaml::as_str).collect();
        assert_eq!(offered, ["media_pause", "media_next_track"], "only allowed verbs, never seek");
        // A player without a name is named after its topic level.
        assert_eq!(yaml["media_player"][1]["name"].as_str(), Some("Plex home tv-4b45"));
        assert_eq!(yaml["template"][0]["sensor"][1]["name"].as_str(), Some("plex home tv 4b45 media"));
        assert_eq!(yaml["media_player"][1]["children"][0].as_str(), Some("sensor.plex_home_tv_4b45_media"));
    }

    #[test]
    fn without_allowed_player_verbs_the_media_players_are_read_only_and_say_so() {
        let d = Discovery::new("homeassistant", "plex");
        let text = d.media_player_package(&BridgeTopics::new("plex"), &[player("TV")], &[Verb::LibraryScan]);
        let yaml = YamlLoader::load_from_str(&text).unwrap().remove(0);
        assert!(yaml["media_player"][0]["commands"].is_badvalue(), "no commands at all");
        assert!(text.contains("# Commands: none."), "{text}");
        assert!(text.contains("read-only"), "{text}");
    }

    #[test]
    fn names_from_plex_cannot_break_the_yaml() {
        let hostile = "Bob's \"TV\"\n{{ states('x') }}: #1";
        let yaml = package(&[player(hostile)], &[]);
        let tv = &yaml["media_player"][0];
        assert_eq!(tv["name"].as_str(), Some(format!("Plex home {hostile}").as_str()));
        let source = &yaml["template"][0]["sensor"][0];
        let name = source["name"].as_str().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == ' '), "{name}");
        assert_eq!(tv["children"][0].as_str(), Some(format!("sensor.{}", name.replace(' ', "_")).as_str()));
    }
}
