//! Decoding PMS notifications into one transport-neutral [`Notification`].
//!
//! Real payloads vary between PMS versions and transports (see `shared/plex-protocol.md`), so decoding is
//! lenient about the envelope and strict about one thing only: every item is kept as the exact bytes PMS sent,
//! because subscribers are promised "the JSON object exactly as PMS sent it". Items are sliced out of the frame
//! with [`RawValue`] and never re-serialised, which also keeps the hot path cheap.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::fields::{text, Fields};

/// One notification: its type (`playing`, `activity`, … or anything new) and its items, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The container's `type` exactly as PMS sent it (folding for topics happens in the router).
    pub kind: String,
    /// Each item's raw JSON text, byte for byte.
    pub items: Vec<Bytes>,
}

/// Why a frame could not be turned into a notification. The session goes on either way.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or JSON nested deeper than the decoder allows.
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Valid JSON, but not an object with a notification inside.
    #[error("unexpected shape: {0}")]
    Shape(&'static str),
}

const CONTAINER_KEY: &str = "NotificationContainer";

/// Decodes one WebSocket text frame: `{"NotificationContainer":{"type":…,"size":…,"<ArrayKey>":[…]}}`.
///
/// Also accepted: the container without its envelope, and the pre-1.3 `_elementType`/`_children` envelope.
pub fn decode_websocket(frame: &str) -> Result<Notification, DecodeError> {
    decode_websocket_shared(frame, &Bytes::copy_from_slice(frame.as_bytes()))
}

/// [`decode_websocket`] for a frame already held in `buffer` (the same bytes as `frame`): every item shares
/// the buffer instead of being copied out of it (so an item kept for long, like retained state, should be
/// copied by whoever keeps it, or it keeps the whole frame alive).
pub fn decode_websocket_shared(frame: &str, buffer: &Bytes) -> Result<Notification, DecodeError> {
    let cut = Cutter { text: frame, buffer };
    let top = Fields::parse_str(frame)?;
    if let Some(container) = top.raw(CONTAINER_KEY) {
        return decode_container(&cut, container.get(), None);
    }
    if let Some(element_type) = top.raw("_elementType") {
        if string_value(element_type).as_deref() == Some(CONTAINER_KEY) {
            return decode_legacy(&cut, &top);
        }
    }
    if top.raw("type").is_some() {
        return decode_container(&cut, frame, None);
    }
    Err(DecodeError::Shape("no NotificationContainer object"))
}

/// Decodes one EventSource event: `event: <type>` with `data: {"<ArrayKey>": {…}}` (one object), the same with
/// an array, or a whole WebSocket envelope. `event` is the SSE event name, used as the type unless the data
/// carries its own.
pub fn decode_eventsource(event: &str, data: &str) -> Result<Notification, DecodeError> {
    let buffer = Bytes::copy_from_slice(data.as_bytes());
    let cut = Cutter { text: data, buffer: &buffer };
    let top = Fields::parse_str(data)?;
    if let Some(container) = top.raw(CONTAINER_KEY) {
        return decode_container(&cut, container.get(), Some(event));
    }
    let mut items = Vec::new();
    for (_, value) in top.entries() {
        push_items(&cut, value, &mut items)?;
    }
    // An empty array is an empty notification, as on the WebSocket; only data without any object or array
    // under a key is not a notification at all.
    let holds_items = top.entries().iter().any(|(_, v)| matches!(v.get().as_bytes().first(), Some(b'[' | b'{')));
    if !holds_items && !top.entries().is_empty() {
        return Err(DecodeError::Shape("no object or array of items in the event data"));
    }
    Ok(Notification { kind: event.to_owned(), items })
}

/// Cuts items out of the buffer that holds the decoded text, so they share it.
struct Cutter<'a> {
    text: &'a str,
    buffer: &'a Bytes,
}

impl Cutter<'_> {
    /// The bytes of `part`, a slice of `self.text` (anything else is copied, so this cannot panic).
    fn cut(&self, part: &str) -> Bytes {
        let offset = (part.as_ptr() as usize).wrapping_sub(self.text.as_ptr() as usize);
        let end = offset.checked_add(part.len());
        match end {
            Some(end) if self.buffer.len() == self.text.len() && end <= self.text.len() => {
                self.buffer.slice(offset..end)
            }
            _ => Bytes::copy_from_slice(part.as_bytes()),
        }
    }
}

fn decode_container(
    cut: &Cutter<'_>,
    container: &str,
    fallback_kind: Option<&str>,
) -> Result<Notification, DecodeError> {
    let entries = Fields::parse_str(container)?;
    let kind = match entries.raw("type").and_then(string_value) {
        Some(kind) => kind.into_owned(),
        None => match fallback_kind {
            Some(kind) => kind.to_owned(),
            None => return Err(DecodeError::Shape("NotificationContainer has no `type`")),
        },
    };
    let mut items = Vec::new();
    for (key, value) in entries.entries() {
        if key != "type" && key != "size" {
            push_items(cut, value, &mut items)?;
        }
    }
    Ok(Notification { kind, items })
}

/// A JSON string's value, or a number's text (PMS is inconsistent about which it sends); not a boolean.
fn string_value(value: &RawValue) -> Option<Cow<'_, str>> {
    match value.get().as_bytes().first() {
        Some(b'"' | b'-' | b'0'..=b'9') => text(value),
        _ => None,
    }
}

fn decode_legacy(cut: &Cutter<'_>, top: &Fields<'_>) -> Result<Notification, DecodeError> {
    let kind = top
        .raw("type")
        .and_then(string_value)
        .ok_or(DecodeError::Shape("legacy NotificationContainer has no `type`"))?
        .into_owned();
    let mut items = Vec::new();
    if let Some(children) = top.raw("_children") {
        push_items(cut, children, &mut items)?;
    }
    Ok(Notification { kind, items })
}

/// Adds the items a value holds: each element of an array (whatever it is: the bridge forwards what PMS sent),
/// or the value itself when it is an object. A scalar under a key (e.g. a stray `"title"`) is not an item.
fn push_items(cut: &Cutter<'_>, value: &RawValue, items: &mut Vec<Bytes>) -> Result<(), DecodeError> {
    let text = value.get();
    match text.as_bytes().first() {
        Some(b'[') => {
            let elements: Vec<&RawValue> = serde_json::from_str(text)?;
            items.extend(elements.into_iter().map(|item| cut.cut(item.get())));
        }
        Some(b'{') => items.push(cut.cut(text)),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: &Notification) -> Vec<&str> {
        n.items.iter().map(|b| std::str::from_utf8(b).unwrap()).collect()
    }

    #[test]
    fn websocket_frame_keeps_items_byte_for_byte() {
        let frame = r#"{"NotificationContainer":{"type":"activity","size":2,"ActivityNotification":[{"event":"updated", "uuid":"a","Activity":{"progress":42}},{"uuid":"b"}]}}"#;
        let n = decode_websocket(frame).unwrap();
        assert_eq!(n.kind, "activity");
        assert_eq!(items(&n), [r#"{"event":"updated", "uuid":"a","Activity":{"progress":42}}"#, r#"{"uuid":"b"}"#]);
    }

    #[test]
    fn unknown_types_and_keys_pass_through() {
        let frame = r#"{"NotificationContainer":{"type":"update.statechange","size":1,"Whatever":[{"x":1}]}}"#;
        let n = decode_websocket(frame).unwrap();
        assert_eq!(n.kind, "update.statechange");
        assert_eq!(items(&n), [r#"{"x":1}"#]);
    }

    #[test]
    fn size_disagreeing_and_empty_arrays_are_fine() {
        let n = decode_websocket(r#"{"NotificationContainer":{"type":"status","size":5,"StatusNotification":[]}}"#)
            .unwrap();
        assert!(n.items.is_empty());
    }

    #[test]
    fn duplicate_keys_do_not_fail() {
        let n = decode_websocket(r#"{"NotificationContainer":{"type":"a","type":"b","X":[{"k":1,"k":2}]}}"#).unwrap();
        assert_eq!(n.kind, "b");
        assert_eq!(items(&n), [r#"{"k":1,"k":2}"#]);
    }

    #[test]
    fn legacy_envelope_is_understood() {
        let frame = r#"{"_elementType":"NotificationContainer","type":"playing","size":1,"_children":[{"_elementType":"PlaySessionStateNotification","sessionKey":"1"}]}"#;
        let n = decode_websocket(frame).unwrap();
        assert_eq!(n.kind, "playing");
        assert_eq!(items(&n), [r#"{"_elementType":"PlaySessionStateNotification","sessionKey":"1"}"#]);
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        for frame in ["", "{", "[1,2]", "42", r#"{"foo":1}"#, r#"{"NotificationContainer":{"size":1}}"#, "{\"a\":1}x"] {
            assert!(decode_websocket(frame).is_err(), "{frame:?} should be rejected");
        }
        let deep = "[".repeat(10_000);
        assert!(decode_websocket(&format!("{{\"NotificationContainer\":{deep}")).is_err());
    }

    #[test]
    fn eventsource_forms_match_the_websocket_form() {
        let item = r#"{"sessionKey":"45","state":"paused"}"#;
        let ws = decode_websocket(&format!(
            r#"{{"NotificationContainer":{{"type":"playing","size":1,"PlaySessionStateNotification":[{item}]}}}}"#
        ))
        .unwrap();
        let single = decode_eventsource("playing", &format!(r#"{{"PlaySessionStateNotification":{item}}}"#)).unwrap();
        let array = decode_eventsource("playing", &format!(r#"{{"PlaySessionStateNotification":[{item}]}}"#)).unwrap();
        let envelope = decode_eventsource(
            "playing",
            &format!(r#"{{"NotificationContainer":{{"type":"playing","PlaySessionStateNotification":[{item}]}}}}"#),
        )
        .unwrap();
        assert_eq!(ws, single);
        assert_eq!(ws, array);
        assert_eq!(ws, envelope);
        assert!(decode_eventsource("ping", "{}").unwrap().items.is_empty());
    }
}
