//! Bytes → WebSocket frame decoding → routing: never a panic, and the topic contract holds for any input.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use plex_mqtt_bridge::plex::notification::decode_websocket;
use plex_mqtt_bridge::topic::ServerTopics;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    static TOPICS: OnceLock<ServerTopics> = OnceLock::new();
    let topics = TOPICS.get_or_init(common::topics);
    let frame = common::text(data);
    if let Ok(notification) = decode_websocket(&frame) {
        common::route_and_check(topics, &frame, &notification);
    }
});
