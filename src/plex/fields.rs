//! Reading a few fields of a PMS JSON object without building a `serde_json::Value` tree.
//!
//! The state task and the router look at two to six fields of every `playing`, `activity` and `timeline` item.
//! Parsing the whole item into a `Value` allocated a map entry and a string for every key and value of it and
//! was the largest single cost per notification (see BENCHMARKS.md). [`Fields`] splits one object level into
//! its keys and raw values instead (borrowed from the item; strings are only unescaped when they contain
//! escapes) and reads the few values asked for, leniently, as PMS needs: numbers sent as strings, strings sent
//! as numbers, duplicate keys (the last one wins, as `serde_json::Value` does).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

pub use crate::lenient::{raw_text as text, whole_number};
use crate::lenient::{raw_text, MaybeBorrowed};

/// The entries of one JSON object, values still raw.
#[derive(Debug, Clone, Default)]
pub struct Fields<'a> {
    entries: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Fields<'a> {
    /// The top level of an object; `None` if `json` is not exactly one JSON object.
    pub fn parse(json: &'a [u8]) -> Option<Fields<'a>> {
        Fields::parse_str(std::str::from_utf8(json).ok()?).ok()
    }

    /// The top level of an object, with the reason when `json` is not exactly one JSON object.
    pub fn parse_str(json: &'a str) -> Result<Fields<'a>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(json);
        let entries = de.deserialize_map(EntriesVisitor)?;
        de.end()?;
        Ok(Fields { entries })
    }

    /// Every entry in document order, duplicates included.
    pub fn entries(&self) -> &[(Cow<'a, str>, &'a RawValue)] {
        &self.entries
    }

    /// The raw value of `key` (the last one, if the key repeats).
    pub fn raw(&self, key: &str) -> Option<&'a RawValue> {
        self.entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The object under `key`, one level down.
    pub fn object(&self, key: &str) -> Option<Fields<'a>> {
        let raw = self.raw(key)?;
        is_object(raw).then(|| Fields::parse_str(raw.get()).ok()).flatten()
    }

    /// A string value, or the text of a number or boolean (PMS is inconsistent about which it sends).
    pub fn text(&self, key: &str) -> Option<Cow<'a, str>> {
        raw_text(self.raw(key)?)
    }

    /// A non-negative whole number, from a number or a numeric string (fractions are truncated).
    pub fn number(&self, key: &str) -> Option<u64> {
        let raw = self.raw(key)?;
        let digits = match raw.get().as_bytes().first()? {
            b'"' => raw_text(raw)?,
            b'-' | b'0'..=b'9' => Cow::Borrowed(raw.get()),
            _ => return None,
        };
        whole_number(&digits)
    }
}

/// Whether a raw value is an object.
pub fn is_object(raw: &RawValue) -> bool {
    raw.get().as_bytes().first() == Some(&b'{')
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(MaybeBorrowed(key)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            entries.push((key, value));
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_leniently() {
        let json = br#"{"a":"x","n":"42","f":12.9,"neg":-1,"b":true,"o":{"k":"v"},"esc":"a\"b","a":"y","nul":null}"#;
        let fields = Fields::parse(json).unwrap();
        assert_eq!(fields.text("a").as_deref(), Some("y"), "the last duplicate wins");
        assert!(matches!(fields.text("a"), Some(Cow::Borrowed(_))), "no copy without escapes");
        assert_eq!(fields.text("esc").as_deref(), Some("a\"b"));
        assert_eq!(fields.text("n").as_deref(), Some("42"));
        assert_eq!(fields.text("b").as_deref(), Some("true"));
        assert_eq!(fields.text("o"), None);
        assert_eq!(fields.text("nul"), None);
        assert_eq!(fields.number("n"), Some(42));
        assert_eq!(fields.number("f"), Some(12));
        assert_eq!(fields.number("neg"), None);
        assert_eq!(fields.number("a"), None);
        assert_eq!(fields.object("o").and_then(|o| o.text("k")).as_deref(), Some("v"));
        assert!(fields.object("a").is_none());
        assert_eq!(fields.entries().len(), 9);
    }

    #[test]
    fn only_one_object_is_accepted() {
        for json in [&b"[1]"[..], b"42", b"{", b"{\"a\":1}x", b"", b"\xff"] {
            assert!(Fields::parse(json).is_none(), "{:?}", String::from_utf8_lossy(json));
        }
        let escaped_key = Fields::parse(br#"{"k\u0065y":1}"#).unwrap();
        assert_eq!(escaped_key.number("key"), Some(1));
    }
}
