//! Deserializers that accept what figment and users actually produce: numbers where strings are expected (a
//! numeric token or name), and a comma-separated string where a list is expected (`filters` from the
//! environment).
//!
//! Below both the configuration and the types it reads (`Secret`, the PMS identity), so neither depends on the other.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use std::fmt;

struct StringLike;

impl<'de> Visitor<'de> for StringLike {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_char<E: de::Error>(self, v: char) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// A string, or a scalar turned into its text.
pub fn string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    deserializer.deserialize_any(StringLike)
}

/// An optional [`string`].
pub fn opt_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    string(deserializer).map(Some)
}

struct ListLike;

impl<'de> Visitor<'de> for ListLike {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of strings or a comma-separated string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
        Ok(if v.trim().is_empty() { Vec::new() } else { v.split(',').map(|s| s.trim().to_owned()).collect() })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<Item>()? {
            out.push(item.0);
        }
        Ok(out)
    }
}

struct Item(String);

impl<'de> de::Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        string(deserializer).map(Item)
    }
}

/// An optional list given as a list or as a comma-separated string.
pub fn opt_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<String>>, D::Error> {
    deserializer.deserialize_any(ListLike).map(Some)
}
