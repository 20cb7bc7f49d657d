//! The bridge's own per-notification work, in process and without I/O: decoding a WebSocket frame into its
//! items ([`decode_websocket_shared`]) and routing it to MQTT actions ([`route`]), for each of the four item
//! kinds of the pipeline benchmark's mix (the same frames, `tests/loadgen`).
//!
//! Run with `cargo bench --bench decode` (a few seconds after the build). Prints nanoseconds per frame (the
//! median of [`ROUNDS`] rounds, each over every frame once). The pipeline benchmark measures the whole daemon
//! (sockets, MQTT client, state tasks); this one isolates the part a profile showed to be the JSON scanning,
//! so a change to it can be judged without the pipeline's run-to-run noise. Figures: BENCHMARKS.md.

#![cfg_attr(test, allow(dead_code))]

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/loadgen/mod.rs"]
mod loadgen;

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use plex_mqtt_bridge::model::router::route;
use plex_mqtt_bridge::plex::notification::decode_websocket_shared;
use plex_mqtt_bridge::topic::{BridgeTopics, ServerName};

/// Frames per kind.
const FRAMES: u64 = 20_000;
/// Rounds over all frames; the median round is reported.
const ROUNDS: usize = 15;

fn main() {
    let topics = BridgeTopics::new("plex").server(&ServerName::configured(loadgen::SERVER).expect("a valid name"));
    println!("plex-mqtt-bridge: decode + route per WebSocket frame (one item each), median of {ROUNDS} rounds");
    for kind in loadgen::KINDS {
        let frames: Vec<(String, Bytes)> = (0..FRAMES * 4)
            .filter(|seq| loadgen::Kind::of(*seq) == kind)
            .map(|seq| {
                let frame = loadgen::item(seq, 1_000_000_000_000 + seq, 1_000_000 + seq).ws_frame();
                let buffer = Bytes::copy_from_slice(frame.as_bytes());
                (frame, buffer)
            })
            .collect();
        let bytes = frames.first().map(|(f, _)| f.len()).unwrap_or(0);
        let mut decode_ns = Vec::with_capacity(ROUNDS);
        let mut total_ns = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for (frame, buffer) in &frames {
                black_box(decode_websocket_shared(frame, buffer).expect("a valid frame"));
            }
            decode_ns.push(start.elapsed().as_nanos() as f64 / frames.len() as f64);
            let start = Instant::now();
            for (frame, buffer) in &frames {
                let notification = decode_websocket_shared(frame, buffer).expect("a valid frame");
                black_box(route(&topics, &notification));
            }
            total_ns.push(start.elapsed().as_nanos() as f64 / frames.len() as f64);
        }
        println!(
            "  {:<24} {bytes:>4} B   decode {:>6.0} ns   decode + route {:>6.0} ns",
            kind.plex_type(),
            median(&mut decode_ns),
            median(&mut total_ns)
        );
    }
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
