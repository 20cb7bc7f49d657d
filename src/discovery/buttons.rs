//! Home Assistant `button`s for the commands a user allowed (`[commands]`): "Scan all libraries" and one
//! "Scan `<section>`" per library on the server's device, and a button per argument-free player verb on each
//! player's device. Each press publishes the command (not retained) to its command topic.
//!
//! A button whose verb is not allowed (or commands are off) is sent as its platform alone, which is how
//! device-based discovery removes one component of a device: taking a verb out of `commands.allow` removes
//! its buttons at the next announcement.

use serde_json::{json, Value};

use super::{id_segment, Components};
use crate::command_verb::Verb;
use crate::topic::ServerTopics;

/// Player verbs that need no arguments, in the order their buttons are listed.
pub const PLAYER_BUTTONS: [(Verb, &str, &str); 5] = [
    (Verb::Play, "Play", "mdi:play"),
    (Verb::Pause, "Pause", "mdi:pause"),
    (Verb::Stop, "Stop", "mdi:stop"),
    (Verb::SkipNext, "Next", "mdi:skip-next"),
    (Verb::SkipPrevious, "Previous", "mdi:skip-previous"),
];

/// What the server device offers as buttons.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerButtons {
    /// `library_scan` is allowed.
    pub scan: bool,
    /// The server's library sections (key, title), from `/library/sections` at the last connect.
    pub sections: Vec<(String, String)>,
    /// Section buttons announced before (this run, or in the config an earlier run left on the broker): any of
    /// them not offered now is removed.
    pub previous: Vec<String>,
}

const SECTION_BUTTON: &str = "button_scan_";
const SCAN_ALL: &str = "button_scan_all";

/// The section-button keys a device config offers (removed ones, sent as their platform alone, left out).
pub fn section_button_keys(config: &Value) -> Vec<String> {
    let Some(components) = config["cmps"].as_object() else { return Vec::new() };
    components
        .iter()
        .filter(|(key, c)| {
            key.starts_with(SECTION_BUTTON) && key.as_str() != SCAN_ALL && c.as_object().is_some_and(|c| c.len() > 1)
        })
        .map(|(key, _)| key.clone())
        .collect()
}

impl Components {
    /// The scan buttons of a server device (or their removal).
    pub(super) fn server_buttons(&mut self, topics: &ServerTopics, buttons: &ServerButtons, availability: &Value) {
        let topic = topics.server_command(Verb::LibraryScan.name());
        if buttons.scan {
            let all = json!({ "command_topic": topic, "payload_press": "{}", "icon": "mdi:folder-refresh" });
            self.entity(SCAN_ALL, "button", "Scan all libraries", availability, all);
            for (key, title) in &buttons.sections {
                let press = json!({ "section": key }).to_string();
                let extra =
                    json!({ "command_topic": topic, "payload_press": press, "icon": "mdi:folder-refresh-outline" });
                let name = format!("Scan {title}");
                self.entity(&format!("{SECTION_BUTTON}{}", id_segment(key)), "button", &name, availability, extra);
            }
        } else {
            self.removed(SCAN_ALL, "button");
        }
        for key in &buttons.previous {
            if !self.map.contains_key(key) {
                self.removed(key, "button");
            }
        }
    }

    /// The buttons of a player device for the allowed player verbs (the others removed).
    pub(super) fn player_buttons(
        &mut self,
        topics: &ServerTopics,
        player: &str,
        allowed: &[Verb],
        availability: &Value,
    ) {
        for (verb, name, icon) in PLAYER_BUTTONS {
            let key = format!("button_{}", verb.name());
            if allowed.contains(&verb) {
                let extra = json!({ "command_topic": topics.player_command(player, verb.name()), "payload_press": "{}", "icon": icon });
                self.entity(&key, "button", name, availability, extra);
            } else {
                self.removed(&key, "button");
            }
        }
    }
}
