//! The incremental SSE parser fed with arbitrary bytes split at fuzzer-chosen points: the same events, the same
//! drop count and the same last id / retry as the whole input at once (and as one byte at a time), and the size
//! limit respected.
//!
//! Input layout: byte 0 picks the limit, byte 1 the number of cuts (mod 16), then two bytes per cut (a
//! little-endian offset into the stream, mod its length + 1), then the stream itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plex_mqtt_bridge::plex::sse_parser::{SseEvent, SseParser};

/// What one parse run leaves behind.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<SseEvent>,
    oversized: u64,
    last_id: Option<String>,
    last_retry: Option<u64>,
}

fn parse(limit: usize, chunks: &[&[u8]]) -> Outcome {
    let mut parser = SseParser::new(limit);
    let mut events = Vec::new();
    for chunk in chunks {
        parser.push(chunk, &mut events);
    }
    Outcome {
        events,
        oversized: parser.oversized_dropped(),
        last_id: parser.last_event_id().map(str::to_owned),
        last_retry: parser.last_retry(),
    }
}

/// A lower bound of the input bytes `text` came from: a U+FFFD (3 bytes) may stand for a single invalid byte.
fn raw_len(text: &str) -> usize {
    text.len() - 2 * text.matches('\u{fffd}').count()
}

/// How much longer than the limit one line may be (the parser's `LINE_SLACK`: room for `data: `).
const LINE_SLACK: usize = 16;

fuzz_target!(|data: &[u8]| {
    let [selector, cuts, rest @ ..] = data else {
        return;
    };
    let limit = match selector >> 6 {
        0 => usize::from(selector & 63),
        1 => 64 + usize::from(selector & 63) * 4,
        2 => 1024,
        _ => 1 << 20,
    };
    let cut_count = usize::from(cuts % 16).min(rest.len() / 2);
    let (offsets, stream) = rest.split_at(cut_count * 2);
    let mut points: Vec<usize> = offsets
        .chunks_exact(2)
        .map(|pair| usize::from(u16::from_le_bytes([pair[0], pair[1]])) % (stream.len() + 1))
        .collect();
    points.sort_unstable();
    let mut chunks: Vec<&[u8]> = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for point in points {
        chunks.push(&stream[start..point]);
        start = point;
    }
    chunks.push(&stream[start..]);

    let whole = parse(limit, &[stream]);
    let split = parse(limit, &chunks);
    assert_eq!(whole, split, "splitting the stream changed the outcome (limit {limit}, chunks {chunks:?})");
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(whole, parse(limit, &bytes), "byte-by-byte feeding changed the outcome (limit {limit})");

    // `reset` gives a parser that behaves like a new one (its drop count goes on counting).
    let mut parser = SseParser::new(limit);
    let mut events = Vec::new();
    parser.push(stream, &mut events);
    parser.reset();
    assert_eq!(parser.last_event_id(), None);
    events.clear();
    parser.push(stream, &mut events);
    assert_eq!(events, whole.events, "a reset parser differs from a new one");
    assert_eq!(parser.oversized_dropped(), 2 * whole.oversized, "the drop count survives a reset");

    for event in &whole.events {
        // The memory bound: the data, and the event name with it, never exceed the limit (in bytes of text,
        // after invalid UTF-8 became U+FFFD); the default name `message` is not counted.
        assert!(event.data.len() <= limit, "data of {} bytes over the limit {limit}", event.data.len());
        assert!(
            event.event == "message" || event.event.len() + event.data.len() <= limit,
            "event name and data of {} bytes over the limit {limit}",
            event.event.len() + event.data.len()
        );
        assert!(!event.event.is_empty(), "an event always has a name (`message` by default)");
        if let Some(id) = &event.id {
            assert!(raw_len(id) <= limit + LINE_SLACK, "an id longer than a line may be");
            assert!(!id.contains('\0'), "an id with NUL is ignored");
        }
    }
    // A trailing blank line completes at most the one unfinished event and changes none before it.
    let mut parser = SseParser::new(limit);
    let mut events = Vec::new();
    parser.push(stream, &mut events);
    parser.push(b"\n\n", &mut events);
    assert!(events.len() <= whole.events.len() + 1, "a trailing blank line made more than one event");
    assert_eq!(events[..whole.events.len()], whole.events[..], "a trailing blank line rewrote events");
});
