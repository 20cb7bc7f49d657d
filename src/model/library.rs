//! Library events from timeline and activity notifications: `item_added`, `item_deleted`, `scan_started`,
//! `scan_finished`. Pure, like the playback tracker; the state task fetches item details when asked to.
//!
//! Rules (docs/plex-protocol.md, "Reading items leniently"): only timeline entries of `com.plexapp.plugins.library` are library
//! items; state 0 with `metadataState` `created` and a positive `sectionID` queues a new item; state 5 without
//! `metadataState` for such an item means it is processed (`item_added`, once); state 9 with `metadataState`
//! `deleted` means it was removed. Scans are activities of type `library.update.section`.

use std::borrow::Cow;
use std::collections::VecDeque;

use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::lenient::{value_number as number, value_text};
use crate::plex::fields::{text, Fields};

const LIBRARY_IDENTIFIER: &str = "com.plexapp.plugins.library";
/// New items remembered while they are processed; a bound so a huge import cannot grow memory without end.
const MAX_PENDING_ITEMS: usize = 10_000;

/// What a timeline entry or activity means for the library.
#[derive(Debug, Clone, PartialEq)]
pub enum LibraryChange {
    /// A new item finished processing: fetch `/library/metadata/<item_id>` and announce it.
    Added { item_id: String, fallback: Value },
    /// A derived event, ready to publish.
    Event(Value),
}

/// Items created since the bridge connected that are not processed yet.
#[derive(Debug, Default)]
pub struct Library {
    created: VecDeque<String>,
}

impl Library {
    /// A library with nothing pending.
    pub fn new() -> Self {
        Library::default()
    }

    /// Applies one timeline entry.
    pub fn on_timeline(&mut self, raw: &[u8]) -> Option<LibraryChange> {
        let entry = Fields::parse(raw)?;
        if entry.text("identifier").as_deref() != Some(LIBRARY_IDENTIFIER) {
            return None;
        }
        let item_id = entry.text("itemID").filter(|id| !id.is_empty())?;
        let state = entry.number("state");
        let metadata_state = entry.text("metadataState");
        let section = entry.text("sectionID").and_then(|s| s.parse::<i64>().ok());
        match (state, metadata_state.as_deref()) {
            (Some(0), Some("created")) if section.is_some_and(|s| s > 0) => {
                if !self.created.iter().any(|id| *id == item_id) {
                    if self.created.len() >= MAX_PENDING_ITEMS {
                        self.created.pop_front();
                    }
                    self.created.push_back(item_id.into_owned());
                }
                None
            }
            (Some(5), None) => {
                let position = self.created.iter().position(|id| *id == item_id)?;
                self.created.remove(position);
                Some(LibraryChange::Added { item_id: item_id.to_string(), fallback: item_summary(&entry, &item_id) })
            }
            (Some(9), Some("deleted")) => {
                self.created.retain(|id| *id != item_id);
                Some(LibraryChange::Event(json!({
                    "event_type": "item_deleted",
                    "item": item_summary(&entry, &item_id),
                })))
            }
            _ => None,
        }
    }

    /// Applies one raw activity item (the tests' way in; see [`Library::on_activity_fields`]).
    #[cfg(test)]
    pub fn on_activity(&self, raw: &[u8]) -> Option<LibraryChange> {
        let item = Fields::parse(raw)?;
        self.on_activity_fields(&item, &item.object("Activity")?)
    }

    /// Applies one activity item, already read (`item`, and its `Activity` object): the start and end of
    /// library scans.
    pub fn on_activity_fields(&self, item: &Fields<'_>, activity: &Fields<'_>) -> Option<LibraryChange> {
        if activity.text("type").as_deref() != Some("library.update.section") {
            return None;
        }
        let event_type = match item.text("event").as_deref() {
            Some("started") => "scan_started",
            Some("ended") => "scan_finished",
            _ => return None,
        };
        Some(LibraryChange::Event(json!({
            "event_type": event_type,
            "activity": {
                "uuid": activity.text("uuid").or_else(|| item.text("uuid")),
                "title": activity.text("title"),
                "subtitle": activity.text("subtitle"),
                "library_section_id": activity.object("Context").and_then(|c| c.text("librarySectionID").map(Cow::into_owned)),
            },
        })))
    }
}

/// What a timeline entry says about an item (used when `/library/metadata` cannot be read).
fn item_summary(entry: &Fields<'_>, item_id: &str) -> Value {
    json!({
        "rating_key": item_id,
        "title": entry.text("title"),
        "type": type_name(entry.raw("type")),
        "library_section_id": entry.text("sectionID"),
        "library_section_title": Value::Null,
    })
}

/// The item as `/library/metadata/<id>` describes it.
pub fn item_from_metadata(value: &Value, item_id: &str) -> Option<Value> {
    let meta = value.get("MediaContainer")?.get("Metadata")?.get(0)?;
    let container = value.get("MediaContainer");
    Some(json!({
        "rating_key": value_text(meta.get("ratingKey")).unwrap_or_else(|| item_id.to_owned()),
        "title": value_text(meta.get("title")),
        "type": value_text(meta.get("type")),
        "library_section_id": value_text(meta.get("librarySectionID")).or_else(|| value_text(container.and_then(|c| c.get("librarySectionID")))),
        "library_section_title": value_text(meta.get("librarySectionTitle")).or_else(|| value_text(container.and_then(|c| c.get("librarySectionTitle")))),
        "grandparent_title": value_text(meta.get("grandparentTitle")),
        "parent_index": number(meta.get("parentIndex")),
        "index": number(meta.get("index")),
        "year": number(meta.get("year")),
    }))
}

/// The `item_added` event for an item.
pub fn added_event(item: Value) -> Value {
    json!({ "event_type": "item_added", "item": item })
}

/// Plex's numeric metadata types by name; anything else as sent.
fn type_name(value: Option<&RawValue>) -> Value {
    let number = value.and_then(text).and_then(|t| t.parse::<i64>().ok());
    let name = match number {
        Some(1) => "movie",
        Some(2) => "show",
        Some(3) => "season",
        Some(4) => "episode",
        Some(8) => "artist",
        Some(9) => "album",
        Some(10) => "track",
        Some(12) => "clip",
        Some(15) => "playlist",
        Some(18) => "collection",
        _ => return value.and_then(|v| serde_json::from_str(v.get()).ok()).unwrap_or(Value::Null),
    };
    json!(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_then_processed_is_one_item_added() {
        let mut lib = Library::new();
        let created = br#"{"identifier":"com.plexapp.plugins.library","sectionID":"1","itemID":"5","type":1,"title":"Arrival","state":0,"metadataState":"created"}"#;
        let progress = br#"{"identifier":"com.plexapp.plugins.library","sectionID":"1","itemID":"5","type":1,"state":4,"metadataState":"processing"}"#;
        let done = br#"{"identifier":"com.plexapp.plugins.library","sectionID":1,"itemID":5,"type":1,"title":"Arrival","state":5}"#;
        assert_eq!(lib.on_timeline(created), None);
        assert_eq!(lib.on_timeline(progress), None);
        assert!(matches!(lib.on_timeline(done), Some(LibraryChange::Added { item_id, .. }) if item_id == "5"));
        assert_eq!(lib.on_timeline(done), None, "announced once");
    }

    #[test]
    fn items_not_created_since_connect_and_other_providers_are_ignored() {
        let mut lib = Library::new();
        assert_eq!(
            lib.on_timeline(br#"{"identifier":"com.plexapp.plugins.library","sectionID":"1","itemID":"9","state":5}"#),
            None
        );
        assert_eq!(lib.on_timeline(br#"{"identifier":"tv.plex.providers.epg.cloud","sectionID":"1","itemID":"9","state":0,"metadataState":"created"}"#), None);
        assert_eq!(lib.on_timeline(b"not json"), None);
    }

    #[test]
    fn deletions_and_scans_are_events() {
        let mut lib = Library::new();
        let deleted = lib.on_timeline(br#"{"identifier":"com.plexapp.plugins.library","sectionID":"1","itemID":"9","type":4,"state":9,"metadataState":"deleted"}"#);
        let Some(LibraryChange::Event(event)) = deleted else { panic!("{deleted:?}") };
        assert_eq!(event["event_type"], "item_deleted");
        assert_eq!(event["item"]["type"], "episode");
        let scan = br#"{"event":"started","uuid":"u","Activity":{"uuid":"u","type":"library.update.section","title":"Scanning","Context":{"librarySectionID":"2"}}}"#;
        let Some(LibraryChange::Event(event)) = lib.on_activity(scan) else { panic!() };
        assert_eq!(event["event_type"], "scan_started");
        assert_eq!(event["activity"]["library_section_id"], "2");
        let other = br#"{"event":"started","uuid":"u","Activity":{"type":"media.generate.bif"}}"#;
        assert_eq!(lib.on_activity(other), None);
    }

    #[test]
    fn metadata_gives_title_and_section() {
        let body = br#"{"MediaContainer":{"size":1,"librarySectionID":3,"librarySectionTitle":"Movies","Metadata":[{"ratingKey":"5","type":"movie","title":"Arrival","year":2016}]}}"#;
        let item = item_from_metadata(&serde_json::from_slice(body).unwrap(), "5").unwrap();
        assert_eq!(item["title"], "Arrival");
        assert_eq!(item["library_section_title"], "Movies");
        assert_eq!(item["library_section_id"], "3");
    }
}
