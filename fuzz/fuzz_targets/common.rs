//! Invariants shared by the targets that decode and route a notification.

use plex_mqtt_bridge::plex::notification::Notification;
use plex_mqtt_bridge::{model::router::route, mqtt::outbox::Action};
use plex_mqtt_bridge::topic::{BridgeTopics, ServerName, ServerTopics};
use serde_json::value::RawValue;

/// A prefix with two levels, so "starts with the prefix" also covers a `/` inside it.
pub const PREFIX: &str = "home/plex";
/// The server's topic level.
pub const SERVER: &str = "living-room";

/// The topics of the one server every target routes for.
pub fn topics() -> ServerTopics {
    BridgeTopics::new(PREFIX).server(&ServerName::configured(SERVER).expect("a valid server name"))
}

/// Input text as a decoder sees it: the bytes themselves when they are UTF-8 (what a WebSocket text frame
/// always is), the lossy conversion otherwise (what the SSE parser hands on).
pub fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// One folded topic level: non-empty, only `[a-z0-9_-]`, no leading or trailing `_`.
fn assert_folded_segment(segment: &str, topic: &str) {
    assert!(!segment.is_empty(), "empty topic level in {topic:?}");
    assert!(
        segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'),
        "unfolded topic level {segment:?} in {topic:?}"
    );
    assert!(!segment.starts_with('_') && !segment.ends_with('_'), "untrimmed topic level in {topic:?}");
}

/// Routes `notification` (decoded from `input`) and checks every invariant of the topic contract.
pub fn route_and_check(topics: &ServerTopics, input: &str, notification: &Notification) {
    let base = format!("{PREFIX}/{SERVER}/");
    for item in &notification.items {
        let item = std::str::from_utf8(item).expect("an item is UTF-8 (it is a slice of the input)");
        assert!(input.contains(item), "item {item:?} is not a byte-for-byte substring of the input");
        assert!(serde_json::from_str::<&RawValue>(item).is_ok(), "item {item:?} is not one JSON value");
    }
    let actions = route(topics, notification);
    let mut live = Vec::new();
    for action in &actions {
        let topic = match action {
            Action::Live { topic, .. } | Action::Retain { topic, .. } | Action::Clear { topic } => topic,
        };
        assert!(!topic.contains(['+', '#', '\0']), "wildcard or NUL in topic {topic:?}");
        assert!(topic.starts_with(PREFIX), "topic {topic:?} does not start with the prefix {PREFIX:?}");
        let rest = topic.strip_prefix(&base).unwrap_or_else(|| panic!("topic {topic:?} is not under {base:?}"));
        match action {
            Action::Live { payload, .. } => {
                assert_folded_segment(rest, topic);
                let payload = std::str::from_utf8(payload).expect("a live payload is UTF-8");
                assert!(input.contains(payload), "live payload {payload:?} is not a substring of the input");
                live.push(payload);
            }
            Action::Retain { payload, .. } => {
                assert_eq!(notification.kind, "activity", "only activities are retained by the router");
                let uuid = rest.strip_prefix("activities/").unwrap_or_else(|| panic!("retained {topic:?}"));
                assert_folded_segment(uuid, topic);
                assert!(notification.items.contains(payload), "a retained payload is one of the items");
            }
            Action::Clear { .. } => {
                assert_eq!(notification.kind, "activity", "only activities are cleared by the router");
                let uuid = rest.strip_prefix("activities/").unwrap_or_else(|| panic!("cleared {topic:?}"));
                assert_folded_segment(uuid, topic);
            }
        }
    }
    let items: Vec<&str> = notification.items.iter().map(|i| std::str::from_utf8(i).unwrap()).collect();
    assert_eq!(live, items, "one live message per item, in order, byte for byte");
}
