//! The router: a pure function from one [`Notification`] to the MQTT messages it causes.
//!
//! Kept free of I/O so the whole topic contract (docs/topics.md) is testable without sockets; the
//! supervisor hands the result to the publisher.

use bytes::Bytes;

use crate::mqtt::outbox::Action;
use crate::plex::fields::Fields;
use crate::plex::notification::Notification;
use crate::topic::ServerTopics;

/// Maps a notification to its messages: one live message per item on `<p>/<server>/<type>`, in order, with the
/// item's bytes as PMS sent them; plus retained activity state for `activity` notifications.
pub fn route(topics: &ServerTopics, notification: &Notification) -> Vec<Action> {
    let mut actions = Vec::new();
    route_into(topics, notification, &mut actions);
    actions
}

/// [`route`] into `actions` (the forwarder reuses one buffer for every notification).
pub fn route_into(topics: &ServerTopics, notification: &Notification, actions: &mut Vec<Action>) {
    let is_activity = notification.kind == "activity";
    let mut topic = Some(topics.notification(&notification.kind));
    let last = notification.items.len().saturating_sub(1);
    for (index, item) in notification.items.iter().enumerate() {
        // The last item takes the topic itself: one notification, one topic string (most carry one item).
        let item_topic = if index == last { topic.take() } else { topic.clone() };
        actions.push(Action::Live { topic: item_topic.unwrap_or_default(), payload: item.clone() });
        if is_activity {
            if let Some(action) = activity_state(topics, item) {
                actions.push(action);
            }
        }
    }
}

/// Retained state for one activity item: its latest item while running, cleared on `ended`. Items without a
/// uuid cannot be tracked and only produce the live message. `uuid` and `event` are read leniently (a number is
/// as good as a string), like everywhere else PMS data is read.
fn activity_state(topics: &ServerTopics, item: &Bytes) -> Option<Action> {
    let fields = Fields::parse(item)?;
    let uuid = fields
        .text("uuid")
        .filter(|u| !u.is_empty())
        .or_else(|| fields.object("Activity").and_then(|a| a.text("uuid")))
        .filter(|u| !u.is_empty())?;
    let topic = topics.activity(&uuid);
    Some(match fields.text("event").as_deref() {
        Some("ended") => Action::Clear { topic },
        // A copy: the item shares its frame's buffer, which a long-lived retained payload should not keep alive.
        _ => Action::Retain { topic, payload: Bytes::copy_from_slice(item) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{BridgeTopics, ServerName};

    fn topics() -> ServerTopics {
        BridgeTopics::new("plex").server(&ServerName::configured("home").unwrap())
    }

    fn n(kind: &str, items: &[&str]) -> Notification {
        Notification { kind: kind.into(), items: items.iter().map(|i| Bytes::copy_from_slice(i.as_bytes())).collect() }
    }

    #[test]
    fn every_item_becomes_one_live_message_in_order() {
        let actions = route(&topics(), &n("transcodeSession.update", &["{\"a\":1}", "{\"b\":2}"]));
        assert_eq!(
            actions,
            [
                Action::Live { topic: "plex/home/transcodesession_update".into(), payload: Bytes::from("{\"a\":1}") },
                Action::Live { topic: "plex/home/transcodesession_update".into(), payload: Bytes::from("{\"b\":2}") },
            ]
        );
    }

    #[test]
    fn activities_are_retained_until_ended() {
        let started = r#"{"event":"started","uuid":"AB/c+d","Activity":{"progress":0}}"#;
        let actions = route(&topics(), &n("activity", &[started]));
        assert_eq!(
            actions[1],
            Action::Retain { topic: "plex/home/activities/ab_c_d".into(), payload: Bytes::from(started) }
        );
        let ended = r#"{"event":"ended","Activity":{"uuid":"AB/c+d"}}"#;
        let actions = route(&topics(), &n("activity", &[ended]));
        assert_eq!(actions[1], Action::Clear { topic: "plex/home/activities/ab_c_d".into() });
    }

    #[test]
    fn activity_items_of_unexpected_shape_still_pass_through() {
        let actions = route(&topics(), &n("activity", &["{\"uuid\":5}", "[1]", "{}", "{\"uuid\":\"\"}"]));
        assert_eq!(actions.len(), 5, "every item is live; only the numeric uuid is also tracked: {actions:?}");
        assert_eq!(
            actions[1],
            Action::Retain { topic: "plex/home/activities/5".into(), payload: Bytes::from("{\"uuid\":5}") }
        );
        assert!(actions[2..].iter().all(|a| matches!(a, Action::Live { .. })));
    }

    #[test]
    fn numeric_uuid_and_event_fields_are_read_leniently() {
        let ended = r#"{"event":"ended","uuid":7,"Activity":{"uuid":7}}"#;
        assert_eq!(
            route(&topics(), &n("activity", &[ended]))[1],
            Action::Clear { topic: "plex/home/activities/7".into() }
        );
    }
}
