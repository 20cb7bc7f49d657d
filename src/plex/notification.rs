//! Decoding PMS notifications into one transport-neutral [`Notification`].
//!
//! Real payloads vary between PMS versions and transports (docs/plex-protocol.md, "WebSocket frames" and "EventSource events"), so decoding is
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
    if let Some(standard) = single_pass::decode(frame)? {
        let items = standard.items.into_iter().map(|item| cut.cut(item.get())).collect();
        return Ok(Notification { kind: standard.kind, items });
    }
    decode_websocket_general(&cut, frame)
}

/// Every frame shape PMS versions send (see [`decode_websocket`]), a few scans of the frame.
fn decode_websocket_general(cut: &Cutter<'_>, frame: &str) -> Result<Notification, DecodeError> {
    let top = Fields::parse_str(frame)?;
    if let Some(container) = top.raw(CONTAINER_KEY) {
        return decode_container(cut, container.get(), None);
    }
    if let Some(element_type) = top.raw("_elementType") {
        if string_value(element_type).as_deref() == Some(CONTAINER_KEY) {
            return decode_legacy(cut, &top);
        }
    }
    if top.raw("type").is_some() {
        return decode_container(cut, frame, None);
    }
    Err(DecodeError::Shape("no NotificationContainer object"))
}

/// The common WebSocket frame in one pass over its bytes: `{"NotificationContainer":{"type":…,"<Key>":[…]}}`.
///
/// The general decoder below reads the envelope, then the container, then each array, each a full scan of every
/// item (a profile of the pipeline benchmark put JSON scanning first among the bridge's costs). This one walks
/// the frame once with serde visitors and slices the items out as it passes them. It answers only for frames
/// whose container is an object with a string or number `type` and whose other values are arrays or scalars;
/// anything else valid (the legacy envelope, a container without envelope, an object in place of an array, no
/// `type`) returns `None`, and the general decoder takes the frame, so both give the same result.
mod single_pass {
    use std::fmt;

    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::value::RawValue;

    use super::{string_value, CONTAINER_KEY};
    use crate::lenient::MaybeBorrowed;

    /// A frame of the common shape: its type and its items, borrowed from the frame.
    pub struct Standard<'a> {
        pub kind: String,
        pub items: Vec<&'a RawValue>,
    }

    /// `Ok(None)`: valid JSON of another shape. `Err`: not JSON (the general decoder would say the same).
    pub fn decode(frame: &str) -> Result<Option<Standard<'_>>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(frame);
        let standard = de.deserialize_any(Envelope)?;
        de.end()?;
        Ok(standard)
    }

    /// Skips what a visitor does not want, whatever it is.
    fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }

    /// Implements the scalar visits of a visitor as returning `$value` (a scalar is not of the shape looked
    /// for, or adds nothing; serde has consumed it already).
    macro_rules! scalars_are {
        ($value:expr) => {
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok($value)
            }
        };
    }

    /// The top level: the value of its (last) `NotificationContainer` key.
    struct Envelope;

    impl<'de> Visitor<'de> for Envelope {
        type Value = Option<Standard<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            // The last container wins, as in the general decoder; `None` if it is not of the common shape.
            let mut found = None;
            while let Some(MaybeBorrowed(key)) = map.next_key()? {
                if key == CONTAINER_KEY {
                    found = map.next_value_seed(Container)?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            skip_seq(seq).map(|()| None)
        }
        scalars_are!(None);
    }

    /// The container object: `type` and the items of every array under another key.
    struct Container;

    impl<'de> DeserializeSeed<'de> for Container {
        type Value = Option<Standard<'de>>;
        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Container {
        type Value = Option<Standard<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a NotificationContainer object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut kind = None;
            let mut items = Vec::new();
            let mut other_shape = false;
            while let Some(MaybeBorrowed(key)) = map.next_key()? {
                match key.as_ref() {
                    "type" => kind = string_value(map.next_value::<&'de RawValue>()?).map(|k| k.into_owned()),
                    "size" => {
                        map.next_value::<IgnoredAny>()?;
                    }
                    _ => other_shape |= !map.next_value_seed(Items(&mut items))?,
                }
            }
            Ok(kind.filter(|_| !other_shape).map(|kind| Standard { kind, items }))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            skip_seq(seq).map(|()| None)
        }
        scalars_are!(None);
    }

    /// A value under a container key: an array adds its elements to the items, a scalar adds nothing. `false`
    /// for an object (its bytes, the item, cannot be sliced out here).
    struct Items<'v, 'de>(&'v mut Vec<&'de RawValue>);

    impl<'de> DeserializeSeed<'de> for Items<'_, 'de> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Items<'_, 'de> {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of items")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                self.0.push(item);
            }
            Ok(true)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
            skip_map(map).map(|()| false)
        }
        scalars_are!(true);
    }
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

    /// The single pass and the general decoder agree on every frame: the common shape, each shape the single
    /// pass hands over, and every prefix of them (invalid JSON: both refuse).
    #[test]
    fn single_pass_and_general_decoder_agree() {
        let frames = [
            r#"{"NotificationContainer":{"type":"playing","size":1,"PlaySessionStateNotification":[{"sessionKey":"1","a":[1,{"b":"}"}]}]}}"#,
            r#"{"NotificationContainer":{"size":2,"type":12,"A":[{"x":1}],"B":[[1],"s",null],"size":"x"}}"#,
            r#"{"NotificationContainer":{"type":"a","type":true,"X":[{}]}}"#,
            r#"{"NotificationContainer":{"type":"a","X":{"single":"object"}}}"#,
            r#"{"NotificationContainer":{"X":[{}]}}"#,
            r#"{"NotificationContainer":[1],"NotificationContainer":{"type":"last","X":[{"k":"v"}]}}"#,
            r#"{"NotificationContainer":{"type":"first","X":[{}]},"NotificationContainer":5}"#,
            r#"{"NotificationContainer":{"type":"esc","size":[{"not":"an item"}],"X":[{"k":"A"}]}}"#,
            r#"{"other":1,"NotificationContainer":{"type":"a","title":"stray","X":[]}}"#,
            r#"{"_elementType":"NotificationContainer","type":"playing","_children":[{"k":1}]}"#,
            r#"{"type":"timeline","size":1,"TimelineEntry":[{"k":1}]}"#,
            r#"[{"NotificationContainer":{"type":"a","X":[{}]}}]"#,
            r#""NotificationContainer""#,
            r#"{}"#,
        ];
        let agree = |frame: &str| {
            let buffer = Bytes::copy_from_slice(frame.as_bytes());
            let general = decode_websocket_general(&Cutter { text: frame, buffer: &buffer }, frame);
            match (decode_websocket_shared(frame, &buffer), general) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{frame}"),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{frame}: single pass {a:?}, general {b:?}"),
            }
        };
        let answered: Vec<bool> = frames.iter().map(|f| single_pass::decode(f).is_ok_and(|s| s.is_some())).collect();
        assert_eq!(
            answered,
            [true, true, false, false, false, true, false, true, true, false, false, false, false, false],
            "which frames the single pass answers itself"
        );
        for frame in frames {
            agree(frame);
            for end in 0..frame.len() {
                if frame.is_char_boundary(end) {
                    agree(&frame[..end]);
                }
            }
        }
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
