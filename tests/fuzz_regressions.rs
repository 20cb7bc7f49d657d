//! The fuzz targets' invariants (fuzz/fuzz_targets/, issue 7) replayed on stable Rust, on a fixed set of inputs:
//! tricky shapes the fuzzers' corpora hold, and the findings of the fuzzing campaign. `cargo test` runs these
//! without cargo-fuzz; `fuzz/README.md` says how to add a minimized crash here.

use bytes::Bytes;
use plex_mqtt_bridge::plex::notification::{decode_eventsource, decode_websocket, Notification};
use plex_mqtt_bridge::plex::sse_parser::{SseEvent, SseParser};
use plex_mqtt_bridge::topic::{BridgeTopics, ServerName, ServerTopics};
use plex_mqtt_bridge::{model::router::route, mqtt::outbox::Action};
use serde_json::value::RawValue;

const PREFIX: &str = "home/plex";
const SERVER: &str = "living-room";

fn topics() -> ServerTopics {
    BridgeTopics::new(PREFIX).server(&ServerName::configured(SERVER).expect("a valid server name"))
}

fn folded(segment: &str) -> bool {
    !segment.is_empty()
        && !segment.starts_with('_')
        && !segment.ends_with('_')
        && segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The `decode_route` / `decode_eventsource` invariants: every topic under the prefix and folded, no `+`, `#`
/// or NUL, one live message per item in order, every payload a byte-for-byte substring of the input.
fn check_route(input: &str, notification: &Notification) -> Vec<Action> {
    let base = format!("{PREFIX}/{SERVER}/");
    let actions = route(&topics(), notification);
    let mut live = Vec::new();
    for action in &actions {
        let topic = match action {
            Action::Live { topic, .. } | Action::Retain { topic, .. } | Action::Clear { topic } => topic,
        };
        assert!(!topic.contains(['+', '#', '\0']), "wildcard or NUL in {topic:?}");
        let rest = topic.strip_prefix(&base).unwrap_or_else(|| panic!("{topic:?} is not under {base:?}"));
        match action {
            Action::Live { payload, .. } => {
                assert!(folded(rest), "unfolded level in {topic:?}");
                let text = std::str::from_utf8(payload).expect("UTF-8 payload");
                assert!(input.contains(text), "payload {text:?} is not a substring of the input");
                assert!(serde_json::from_str::<&RawValue>(text).is_ok(), "payload {text:?} is not one JSON value");
                live.push(payload.clone());
            }
            Action::Retain { .. } | Action::Clear { .. } => {
                let uuid = rest.strip_prefix("activities/").unwrap_or_else(|| panic!("retained {topic:?}"));
                assert!(folded(uuid), "unfolded uuid level in {topic:?}");
            }
        }
    }
    assert_eq!(live, notification.items, "one live message per item, in order, byte for byte");
    actions
}

/// Frames whose decoding or routing once looked risky: deep nesting, duplicate keys, numbers for strings,
/// wildcards and NUL in types and uuids, scalars and objects where arrays are expected, the legacy envelope.
const FRAMES: &[&str] = &[
    r#"{"NotificationContainer":{"type":"a\u0000b+c#d/e","size":1,"T":[{"q":"\ud83d\ude00"}]}}"#,
    r#"{"NotificationContainer":{"type":"+/#","X":[{}]}}"#,
    r#"{"NotificationContainer":{"type":5,"size":1,"X":[{"a":1}],"X":[{"b":2}]}}"#,
    r#"{"NotificationContainer":{"type":-0.5e-3,"X":[{}]}}"#,
    r#"{"NotificationContainer":{"type":"a","type":"b","X":[{"k":1,"k":2}]}}"#,
    r#"{"NotificationContainer":{"type":"x"},"NotificationContainer":{"type":"y","Y":[{}]}}"#,
    r#"{"NotificationContainer":{"type":"list","S":[1,"two",null,[3],{"o":{}}]}}"#,
    r#"{"NotificationContainer":{"type":"obj","size":"1","Meta":{"x":1},"List":[]}}"#,
    r#"{"_elementType":"NotificationContainer","type":"playing","size":1,"_children":[{"sessionKey":"1"}]}"#,
    r#"{"_elementType":"NotificationContainer","type":7,"_children":{"one":"object"}}"#,
    r#"{"type":"activity","size":1,"ActivityNotification":[{"event":"started","uuid":"x"}]}"#,
    r#"{"NotificationContainer":{"type":"activity","A":[{"event":"ended","Activity":{"uuid":"AB/c+d#\u0000"}}]}}"#,
    r#"{"NotificationContainer":{"type":"activity","A":[{"event":"started","uuid":"","Activity":{"uuid":"+"}}]}}"#,
    r#"{"NotificationContainer":{"type":"activity","A":[{"uuid":["a"]},{"uuid":null},{"Activity":7},"s",3]}}"#,
    "{\"NotificationContainer\":{\"type\":\"\u{fffd}\u{feff}\u{202e}\",\"X\":[{}]}}",
    " \t\n{\"NotificationContainer\" : { \"type\" : \"spaced\" , \"X\" : [ { } , { \"a\" : [ ] } ] } }\n ",
];

#[test]
fn websocket_frames_keep_the_topic_contract() {
    for frame in FRAMES {
        let notification = decode_websocket(frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
        check_route(frame, &notification);
    }
    // Every prefix of every frame: errors or notifications, never a panic, never a broken contract.
    for frame in FRAMES {
        for end in (0..frame.len()).filter(|&i| frame.is_char_boundary(i)) {
            if let Ok(notification) = decode_websocket(&frame[..end]) {
                check_route(&frame[..end], &notification);
            }
        }
    }
}

#[test]
fn deep_nesting_is_an_error_or_a_verbatim_item_never_a_stack_overflow() {
    for depth in [127, 128, 129, 10_000, 100_000] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        for frame in [
            arrays.clone(),
            objects.clone(),
            format!(r#"{{"NotificationContainer":{arrays}}}"#),
            format!(r#"{{"NotificationContainer":{objects}}}"#),
            format!(r#"{{"NotificationContainer":{{"type":"activity","A":[{{"uuid":"u","x":{arrays}}}]}}}}"#),
            format!(r#"{{"NotificationContainer":{{"type":"activity","A":[{{"uuid":"u","Activity":{objects}}}]}}}}"#),
            "[".repeat(depth),
        ] {
            if let Ok(notification) = decode_websocket(&frame) {
                check_route(&frame, &notification);
            }
            if let Ok(notification) = decode_eventsource("activity", &frame) {
                check_route(&frame, &notification);
            }
        }
    }
}

#[test]
fn eventsource_data_keeps_the_topic_contract() {
    let cases: &[(&str, &str)] = &[
        ("a\0b+c#d/e F", r#"{"Thing":{"k":1}}"#),
        ("+/#", r#"{"Thing":[{"k":1},{"k":2}]}"#),
        ("activity", r#"{"ActivityNotification":{"event":"started","uuid":"Up/+#\u0000Load"}}"#),
        ("status", r#"{"NotificationContainer":{"type":5,"size":3,"X":[{"k":4}]}}"#),
        ("status", r#"{"NotificationContainer":{"X":[{"k":5}]}}"#),
        ("dup", r#"{"Thing":{"n":1,"n":1},"Thing":{"n":2}}"#),
        ("ping", "{}"),
        ("", r#"{"X":{}}"#),
        ("sta\u{fffd}tus", "{\"S\":{\"t\":\"caf\u{fffd}\"}}"),
    ];
    for (event, data) in cases {
        let notification = decode_eventsource(event, data).unwrap_or_else(|e| panic!("{event:?} {data}: {e}"));
        check_route(data, &notification);
    }
}

fn parse(limit: usize, chunks: &[&[u8]]) -> (Vec<SseEvent>, u64) {
    let mut parser = SseParser::new(limit);
    let mut events = Vec::new();
    for chunk in chunks {
        parser.push(chunk, &mut events);
    }
    (events, parser.oversized_dropped())
}

/// The `sse_parser` invariants on streams with line ends, BOMs, invalid UTF-8 and limits in awkward places,
/// split at every point.
#[test]
fn sse_streams_split_anywhere_give_the_same_events_within_the_limit() {
    let streams: &[&[u8]] = &[
        b"\xef\xbb\xbfevent: ping\r\ndata: {}\r\n\r\n",
        b"\xef\xbbdata: not a bom\n\n",
        b"data: a\r\rdata: b\r\n\r\ndata: c\n\r\n",
        b"data: \xff\xfe\xfd\xfc\xfb\n\nevent: ok\ndata: 1\n\n",
        b"event: \xff\xff\xff\xff\ndata: \xff\xff\xff\n\ndata: 2\n\n",
        b"data: 0123456789\ndata: 0123456789\n\nevent: ok\ndata: 3\n\n",
        b"id: 7\nretry: 99999999999999999999999\ndata: x\n\nid: a\0b\ndata: y\n\n",
        b"data\ndata:\ndata: \n\n:comment only\n\n\n\n",
        b"event: only-a-name\n\nevent:\ndata: default name\n\n",
    ];
    for stream in streams {
        for limit in [0, 1, 5, 6, 7, 8, 10, 12, 16, 64, 1 << 20] {
            let whole = parse(limit, &[stream]);
            let singles: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(parse(limit, &singles), whole, "byte by byte, limit {limit}: {stream:?}");
            for at in 0..=stream.len() {
                let (a, b) = stream.split_at(at);
                assert_eq!(parse(limit, &[a, b]), whole, "split at {at}, limit {limit}: {stream:?}");
            }
            for event in &whole.0 {
                assert!(event.data.len() <= limit, "data over the limit {limit}: {event:?}");
                assert!(
                    event.event == "message" || event.event.len() + event.data.len() <= limit,
                    "name and data over the limit {limit}: {event:?}"
                );
            }
        }
    }
}

/// Finding of the fuzzing campaign (issue 7): `router::activity_state` reads `uuid` (and `Activity.uuid`) as
/// strings only, so an activity whose uuid PMS sends as a number gets no retained `activities/<uuid>` topic and,
/// worse, its `ended` clears nothing — while the state task (`server_state::RunningActivities`, and the resync
/// from `/activities`) reads the same uuid leniently as "7". A numeric field elsewhere in the item (here
/// `Activity.uuid`) even discards a perfectly good string `uuid`.
#[test]
fn activity_uuids_sent_as_numbers_get_retained_state_like_strings() {
    let activity =
        |item: &str| Notification { kind: "activity".into(), items: vec![Bytes::copy_from_slice(item.as_bytes())] };
    let topic = |uuid: &str| format!("{PREFIX}/{SERVER}/activities/{uuid}");

    let started = r#"{"event":"started","uuid":7,"Activity":{"uuid":7,"progress":0}}"#;
    let actions = check_route(started, &activity(started));
    assert!(
        actions.contains(&Action::Retain { topic: topic("7"), payload: Bytes::from(started) }),
        "a numeric uuid is retained at activities/7: {actions:?}"
    );

    let ended = r#"{"event":"ended","uuid":7,"Activity":{"uuid":7}}"#;
    let actions = check_route(ended, &activity(ended));
    assert!(actions.contains(&Action::Clear { topic: topic("7") }), "its end clears activities/7: {actions:?}");

    let mixed = r#"{"event":"updated","uuid":"0f3c","Activity":{"uuid":12345,"progress":"50"}}"#;
    let actions = check_route(mixed, &activity(mixed));
    assert!(
        actions.contains(&Action::Retain { topic: topic("0f3c"), payload: Bytes::from(mixed) }),
        "a string uuid is used even when Activity.uuid is a number: {actions:?}"
    );
}
