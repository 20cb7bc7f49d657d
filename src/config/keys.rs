//! The key lists the loader needs, read off the raw structs instead of kept by hand, so a new field is known
//! everywhere the moment it is declared:
//!
//! - the sections (`RawConfig`'s fields), which environment names are split by;
//! - the keys of a `[[servers]]` table, which serde cannot check itself (see `servers::check_keys`);
//! - the keys whose type is not text (numbers, booleans, lists), whose environment values are read as TOML;
//! - the keys that take a list or one comma-separated text, whose environment values are read as TOML lists
//!   when they are one.
//!
//! Field names come from serde: a derived `Deserialize` hands its field list to `deserialize_struct`. Types are
//! found by offering each key the text `"0"` and seeing whether serde refuses it as the wrong type. Walking every
//! key needs the whole tree, `[plex]`'s flattened server keys included, which only a serialized default gives;
//! that is why the raw structs also derive `Serialize`.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use figment::error::{Actual, Kind};
use figment::providers::Serialized;
use figment::Figment;
use serde::de::{DeserializeOwned, Visitor};

use super::RawConfig;

/// `T`'s field names in declaration order, as serde's derive lists them; empty for a type that is no plain
/// struct (one with a `#[serde(flatten)]` field deserializes as a map and names no fields).
pub(super) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The recorder always stops with an error once it has the names; there is no value to keep.
    let _ = T::deserialize(FieldRecorder(&mut fields));
    fields
}

/// The sections of the configuration (`mqtt`, `plex`, `servers`, …).
pub(super) fn sections() -> &'static [&'static str] {
    field_names::<RawConfig>()
}

/// The names of the keys whose value is not text (`qos`, `enabled`, `allow`, `servers`, …). An environment value
/// for one of these is parsed as TOML; every other value stays the exact text, so a numeric token or password
/// keeps its leading zeros. A name counts in every section, as environment names are matched by their last part.
pub(super) fn typed_keys() -> &'static BTreeSet<String> {
    static TYPED: OnceLock<BTreeSet<String>> = OnceLock::new();
    TYPED.get_or_init(|| {
        all_keys().iter().filter(|key| refuses_text(key)).map(|key| last_part(key).to_owned()).collect()
    })
}

/// The names of the keys that take a list or one comma-separated text (`filters`, `commands.allow`): an
/// environment value for one is read as TOML when it is a TOML list (`["pause", "play"]`) and kept as text
/// otherwise (`pause,play`).
pub(super) fn list_keys() -> &'static BTreeSet<String> {
    static LISTS: OnceLock<BTreeSet<String>> = OnceLock::new();
    LISTS.get_or_init(|| {
        all_keys()
            .iter()
            .filter(|key| !refuses_text(key) && takes_a_list(key))
            .map(|key| last_part(key).to_owned())
            .collect()
    })
}

/// Every key as a dotted path (`mqtt.url`, `plex.token`), and a section that is a list (`servers`) as itself.
fn all_keys() -> Vec<String> {
    let Ok(serde_json::Value::Object(sections)) = serde_json::to_value(RawConfig::default()) else {
        return Vec::new();
    };
    sections
        .into_iter()
        .flat_map(|(section, value)| match value {
            serde_json::Value::Object(keys) => keys.into_iter().map(|(key, _)| format!("{section}.{key}")).collect(),
            _ => vec![section],
        })
        .collect()
}

/// Whether `key` takes something other than text: serde refuses the text `"0"` there as the wrong type (a
/// duration or a path takes it, or fails for another reason).
fn refuses_text(key: &str) -> bool {
    let probe = Figment::from(Serialized::default(key, "0")).extract::<RawConfig>();
    matches!(probe, Err(error) if matches!(error.kind, Kind::InvalidType(Actual::Str(_), _)))
}

/// Whether `key` takes a list of text: serde does not refuse `["0"]` there as the wrong type.
fn takes_a_list(key: &str) -> bool {
    let probe = Figment::from(Serialized::default(key, ["0"])).extract::<RawConfig>();
    !matches!(probe, Err(error) if matches!(error.kind, Kind::InvalidType(..)))
}

fn last_part(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// A deserializer that notes the field list a struct asks for, then stops.
struct FieldRecorder<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldRecorder<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit unit_struct
        newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn sections_are_raw_configs_fields_in_order() {
        let expected = ["mqtt", "plex", "servers", "logging", "homeassistant", "http", "players", "commands"];
        assert_eq!(sections(), expected);
    }

    /// Numbers, booleans and lists are typed; text, durations, paths, secrets and `filters` (a list that also
    /// takes one comma-separated string) are not, and neither is a section's own name.
    #[test]
    fn typed_keys_are_those_that_refuse_text() {
        let typed = typed_keys();
        for key in ["qos", "max_inflight", "scrobble_threshold", "enabled", "insecure_skip_verify", "servers"] {
            assert!(typed.contains(key), "{key} should be typed: {typed:?}");
        }
        for key in ["url", "token", "password", "client_id", "keep_alive", "filters", "allow", "token_file", "mqtt"] {
            assert!(!typed.contains(key), "{key} should stay text: {typed:?}");
        }
    }

    /// `filters` and `allow` take a list or one comma-separated text; no other key does (a secret or a URL that
    /// starts with `[` stays text).
    #[test]
    fn list_keys_are_the_lenient_lists() {
        assert_eq!(list_keys().iter().map(String::as_str).collect::<Vec<_>>(), ["allow", "filters"]);
    }

    /// The environment decides by a key's last name alone, which only works while no name is text in one section
    /// and typed in another.
    #[test]
    fn no_key_name_is_text_in_one_section_and_typed_in_another() {
        let mut kinds: BTreeMap<String, BTreeSet<(bool, bool)>> = BTreeMap::new();
        for key in all_keys() {
            kinds.entry(last_part(&key).to_owned()).or_default().insert((refuses_text(&key), takes_a_list(&key)));
        }
        let mixed: Vec<_> = kinds.iter().filter(|(_, kinds)| kinds.len() > 1).map(|(name, _)| name).collect();
        assert!(mixed.is_empty(), "these names are text in one section and typed in another: {mixed:?}");
    }

    #[test]
    fn plex_holds_the_single_server_shorthand() {
        let keys = all_keys();
        for key in ["plex.url", "plex.token", "plex.insecure_skip_verify", "plex.renew_before", "commands.allow"] {
            assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
        }
    }
}
