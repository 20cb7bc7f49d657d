//! (event name, data) → EventSource decoding → routing: never a panic, and the topic contract holds.
//!
//! Input layout: the first byte is the length of the event name (mod 64, capped by the input), the name
//! follows, the rest is the data; both go through lossy UTF-8, as the SSE parser hands them on.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use plex_mqtt_bridge::plex::notification::decode_eventsource;
use plex_mqtt_bridge::topic::ServerTopics;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    static TOPICS: OnceLock<ServerTopics> = OnceLock::new();
    let topics = TOPICS.get_or_init(common::topics);
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let split = (first as usize % 64).min(rest.len());
    let (event, payload) = rest.split_at(split);
    let event = common::text(event);
    let payload = common::text(payload);
    if let Ok(notification) = decode_eventsource(&event, &payload) {
        common::route_and_check(topics, &payload, &notification);
    }
});
