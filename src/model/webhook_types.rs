//! The JSON type of every field a Plex-webhook-shaped message carries (see [`super::webhook`]), and the one
//! conversion into it.
//!
//! PMS lists some numbers as strings (`"librarySectionID": "2"` in `/status/sessions`, any number on some
//! servers); Plex's webhooks send them as JSON numbers, and a consumer that decodes into typed structs
//! (telegraf's `int`, the `plex-api` crate's `u32`) rejects the whole message over one string. So every field
//! is converted here to the type Plex's webhooks give it. A field that is not in the table, or a value that is
//! not of its field's type (an id that is not a number), is left out rather than guessed.
//!
//! Where the types come from: Plex's "Webhooks" article (its example payload) and the public code that decodes
//! webhooks (telegraf's `plugins/inputs/webhooks/plex`, papertigers/plex-webhook-rust, the `plex-api` crate's
//! `Webhook`); for the item fields those do not list, Plex's API description of `/library/metadata`, because a
//! webhook's `Metadata` is the item as that endpoint describes it. The README shows this table ("Migrating from
//! Plex webhooks"); change both together. How a loosely typed scalar is read is [`crate::lenient`]'s job.

use serde_json::{Map, Value};

use crate::lenient::{value_decimal, value_flag, value_number, value_text};

/// The JSON type of a webhook field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string: names, keys, paths, GUIDs, dates (`originallyAvailableAt`).
    Text,
    /// A whole number ≥ 0: ids, counts, offsets and durations (ms), years, indexes, Unix times (s).
    Number,
    /// A number that may have a fraction: ratings.
    Decimal,
    /// `true` or `false`.
    Flag,
}

/// The objects of a webhook message whose fields come from the server. (`event`, `user` and `owner` at the top
/// are the bridge's own: a string and two booleans.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Account,
    Server,
    Player,
    Metadata,
}

use Kind::{Decimal, Flag, Number, Text};

const ACCOUNT: &[(&str, Kind)] = &[("id", Number), ("thumb", Text), ("title", Text)];

const SERVER: &[(&str, Kind)] = &[("title", Text), ("uuid", Text)];

const PLAYER: &[(&str, Kind)] = &[("local", Flag), ("publicAddress", Text), ("title", Text), ("uuid", Text)];

/// The item's fields. Not here, so never sent: tag lists and objects (not scalars), `sessionKey` (the
/// playback's, not the item's), and fields whose type in a webhook no source gives (`hasPremiumExtras`, …).
const METADATA: &[(&str, Kind)] = &[
    // Ids, keys and GUIDs: text, even where they look numeric (`ratingKey` `"217468"`), except the section id.
    ("ratingKey", Text),
    ("parentRatingKey", Text),
    ("grandparentRatingKey", Text),
    ("key", Text),
    ("parentKey", Text),
    ("grandparentKey", Text),
    ("guid", Text),
    ("parentGuid", Text),
    ("grandparentGuid", Text),
    ("primaryExtraKey", Text),
    ("librarySectionID", Number),
    ("librarySectionKey", Text),
    ("librarySectionTitle", Text),
    ("librarySectionType", Text),
    ("librarySectionUUID", Text),
    // What the item is.
    ("type", Text),
    ("subtype", Text),
    ("title", Text),
    ("titleSort", Text),
    ("originalTitle", Text),
    ("parentTitle", Text),
    ("grandparentTitle", Text),
    ("summary", Text),
    ("tagline", Text),
    ("studio", Text),
    ("contentRating", Text),
    ("chapterSource", Text),
    ("originallyAvailableAt", Text),
    ("year", Number),
    ("index", Number),
    ("parentIndex", Number),
    ("absoluteIndex", Number),
    ("duration", Number),
    ("viewOffset", Number),
    ("childCount", Number),
    ("leafCount", Number),
    ("viewedLeafCount", Number),
    ("viewCount", Number),
    ("ratingCount", Number),
    ("addedAt", Number),
    ("updatedAt", Number),
    ("lastViewedAt", Number),
    ("rating", Decimal),
    ("audienceRating", Decimal),
    ("userRating", Decimal),
    ("ratingImage", Text),
    ("audienceRatingImage", Text),
    // Images and themes: PMS paths.
    ("thumb", Text),
    ("art", Text),
    ("banner", Text),
    ("theme", Text),
    ("parentThumb", Text),
    ("grandparentThumb", Text),
    ("grandparentArt", Text),
    ("grandparentTheme", Text),
];

impl Part {
    fn fields(self) -> &'static [(&'static str, Kind)] {
        match self {
            Part::Account => ACCOUNT,
            Part::Server => SERVER,
            Part::Player => PLAYER,
            Part::Metadata => METADATA,
        }
    }

    /// The type of field `name` of this part; `None` when it is not a webhook field.
    pub fn kind(self, name: &str) -> Option<Kind> {
        self.fields().iter().find(|(field, _)| *field == name).map(|(_, kind)| *kind)
    }
}

/// `value` as a `kind`; `None` when it is not one (a non-numeric string for a number, an object, …).
pub fn convert(kind: Kind, value: &Value) -> Option<Value> {
    let value = Some(value);
    match kind {
        Kind::Text => value_text(value).map(Value::from),
        Kind::Number => value_number(value).map(Value::from),
        Kind::Decimal => value_decimal(value).map(Value::from),
        Kind::Flag => value_flag(value).map(Value::from),
    }
}

/// The fields of `part` with the types webhooks give them; fields that are not the part's webhook fields, and
/// values that are not of their field's type, are left out.
pub fn typed(part: Part, fields: impl IntoIterator<Item = (String, Value)>) -> Map<String, Value> {
    fields
        .into_iter()
        .filter_map(|(name, value)| {
            let value = convert(part.kind(&name)?, &value)?;
            Some((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn typed_json(part: Part, value: Value) -> Value {
        let Value::Object(fields) = value else { panic!("an object") };
        Value::Object(typed(part, fields))
    }

    #[test]
    fn strings_from_status_sessions_become_the_webhook_types() {
        let metadata = json!({
            "librarySectionID": "2", "year": "2022", "index": 1, "parentIndex": "1", "duration": "3420000.0",
            "addedAt": " 1700000000 ", "rating": "7.9", "audienceRating": 8, "ratingKey": 217468, "title": "Pilot",
        });
        assert_eq!(
            typed_json(Part::Metadata, metadata),
            json!({
                "librarySectionID": 2, "year": 2022, "index": 1, "parentIndex": 1, "duration": 3420000,
                "addedAt": 1700000000, "rating": 7.9, "audienceRating": 8.0, "ratingKey": "217468", "title": "Pilot",
            })
        );
        assert_eq!(typed_json(Part::Account, json!({"id": "1", "title": "alice"})), json!({"id": 1, "title": "alice"}));
        assert_eq!(
            typed_json(Part::Player, json!({"local": "1", "title": "TV"})),
            json!({"local": true, "title": "TV"})
        );
    }

    #[test]
    fn unknown_fields_and_values_of_another_type_are_left_out() {
        let metadata = json!({
            "hasPremiumExtras": "1", "sessionKey": "45", "Genre": [{"tag": "Drama"}], "token": "secret",
            "librarySectionID": "two", "year": -1, "rating": "NaN", "duration": {"ms": 1}, "title": "Up",
        });
        assert_eq!(typed_json(Part::Metadata, metadata), json!({"title": "Up"}));
        assert_eq!(typed_json(Part::Account, json!({"id": "local-admin", "title": "bob"})), json!({"title": "bob"}));
        assert_eq!(typed_json(Part::Player, json!({"local": "yes", "address": "10.0.0.2"})), json!({}));
    }

    #[test]
    fn every_field_has_one_type() {
        for part in [Part::Account, Part::Server, Part::Player, Part::Metadata] {
            let mut names: Vec<&str> = part.fields().iter().map(|(name, _)| *name).collect();
            let listed = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), listed, "{part:?} lists a field twice");
        }
    }
}
