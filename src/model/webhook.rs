//! Plex-webhook-compatible messages (`webhook_compat`): the bridge's derived events re-shaped as the JSON
//! payload Plex Pass webhooks POST, so automations written against webhooks (`payload.event`,
//! `payload.Player.title`, `payload.Metadata.title`, …) keep working when pointed at `<p>/<server>/webhook`.
//!
//! Pure: session and item data in, JSON out. The rule is Plex's shape and Plex's types with only what the bridge
//! really knows — a field that cannot be known is left out, never invented or `null`; every field has the JSON
//! type Plex's webhooks give it ([`super::webhook_types`]):
//! - `owner` is always `true` and `user` always a boolean (typed consumers require both). Plex sets `owner` when
//!   the message goes to the server owner's webhook and `user` when it goes to the webhook of the account
//!   concerned. The bridge runs with the owner's token and sees every account's playback, as the owner's webhook
//!   does, so this topic stands for the owner's webhook: `user` is `true` for the owner's own playback (account
//!   [`OWNER_ACCOUNT_ID`]) and for `library.new` (announced to the owner as a user with access), `false` for
//!   other accounts and while the account is unknown.
//! - `Account`, `Player` and most of `Metadata` come from `/status/sessions`; while its details are unknown (the
//!   look-up failed or was late) only what the `playing` notification said (`ratingKey`, `viewOffset`) is there.
//! - `library.new` has no `Account` (the owner's plex.tv account is not something the server reports) and no
//!   `Player` (no player is involved).
//! - `Player.publicAddress` is PMS's `remotePublicAddress`, which it lists only for some players.
//! - `Metadata` carries those of the item's scalar fields (see [`scalar_fields`]) that are webhook fields; tag
//!   lists (`Genre`, `Role`, …) and `Media`/`Part` (file paths) are left out. `librarySectionType` is PMS's when
//!   sent, otherwise derived from the item type where that is unambiguous (an episode lives in a `show` section).
//!
//! No token: every string containing `X-Plex-Token` is dropped, so even a server that put one in a thumb URL
//! cannot leak it to the broker; thumbs stay PMS paths (or plex.tv avatar URLs) as PMS sent them.

use serde_json::{json, Map, Value};

use super::webhook_types::{typed, Part};
use crate::plex::http::ServerIdentity;
use crate::plex::sessions::{scalar_fields, SessionInfo};

/// The id PMS gives the server owner's account (`User.id` `"1"` in `/status/sessions`; Plex's own webhook example
/// shows the owner as `Account.id` 1 with `user` and `owner` both true). Other accounts carry their plex.tv id.
pub const OWNER_ACCOUNT_ID: u64 = 1;

/// The webhook event of a derived playback event; `None` for `seek`, which Plex webhooks do not have.
pub fn playback_event_name(event: &str) -> Option<&'static str> {
    match event {
        "play" => Some("media.play"),
        "pause" => Some("media.pause"),
        "resume" => Some("media.resume"),
        "stop" => Some("media.stop"),
        "scrobble" => Some("media.scrobble"),
        _ => None,
    }
}

/// The session as the playback tracker knew it when an event happened: what a `media.*` message is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaybackSnapshot {
    /// `media.play`, … (see [`playback_event_name`]).
    pub event: &'static str,
    /// The session's details from `/status/sessions`, when known.
    pub info: Option<SessionInfo>,
    /// The item, as the `playing` notification named it (used when the details are unknown).
    pub rating_key: Option<String>,
    /// The position at the event, which moves faster than `/status/sessions` is read.
    pub view_offset_ms: u64,
}

/// A `media.*` message.
pub fn playback(snapshot: &PlaybackSnapshot, server: Option<&ServerIdentity>) -> Value {
    let info = snapshot.info.as_ref();
    let extra = info.and_then(|i| i.webhook.as_ref());
    let account = object(
        Part::Account,
        [
            ("id", info.and_then(|i| i.user_id.clone()).map(Value::from)),
            ("thumb", extra.and_then(|e| e.user_thumb.clone()).map(Value::from)),
            ("title", info.and_then(|i| i.user_name.clone()).map(Value::from)),
        ],
    );
    let player = object(
        Part::Player,
        [
            ("local", info.and_then(|i| i.player_local).map(Value::from)),
            ("publicAddress", extra.and_then(|e| e.player_public_address.clone()).map(Value::from)),
            ("title", info.and_then(|i| i.player_name.clone()).map(Value::from)),
            ("uuid", info.and_then(|i| i.player_machine_identifier.clone()).map(Value::from)),
        ],
    );
    let own_playback = account.get("id").and_then(Value::as_u64) == Some(OWNER_ACCOUNT_ID);
    let mut payload = envelope(snapshot.event, own_playback, server);
    insert_object(&mut payload, "Account", account);
    insert_object(&mut payload, "Player", player);
    // The typed fields the bridge always reads, overlaid by the entry's own scalars as PMS sent them.
    let mut metadata = known([
        ("type", info.and_then(|i| i.media_type.clone()).map(Value::from)),
        ("title", info.and_then(|i| i.title.clone()).map(Value::from)),
        ("grandparentTitle", info.and_then(|i| i.grandparent_title.clone()).map(Value::from)),
        ("parentIndex", info.and_then(|i| i.parent_index).map(Value::from)),
        ("index", info.and_then(|i| i.index).map(Value::from)),
        ("year", info.and_then(|i| i.year).map(Value::from)),
        ("duration", info.and_then(|i| i.duration_ms).map(Value::from)),
        ("ratingKey", info.and_then(|i| i.rating_key.clone()).or_else(|| snapshot.rating_key.clone()).map(Value::from)),
    ]);
    if let Some(extra) = extra {
        metadata.extend(extra.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    metadata.insert("viewOffset".into(), Value::from(snapshot.view_offset_ms));
    insert_object(&mut payload, "Metadata", finish_metadata(metadata));
    Value::Object(payload)
}

/// A `library.new` message for an item described by a (parsed) `/library/metadata/<id>` body; `None` if the body
/// is not one (then [`library_new_from_summary`] is used).
pub fn library_new(value: &Value, server: Option<&ServerIdentity>) -> Option<Value> {
    let container = value.get("MediaContainer")?;
    let entry = container.get("Metadata")?.get(0)?;
    let mut metadata = scalar_fields(entry, &[]);
    // PMS puts the section on the container for some items and on the item for others.
    for key in ["librarySectionID", "librarySectionTitle", "librarySectionUUID"] {
        if let Some(value) = container.get(key).filter(|v| is_scalar(v)) {
            metadata.entry(key).or_insert_with(|| value.clone());
        }
    }
    Some(library_message(metadata, server))
}

/// A `library.new` message from what the timeline said about the item (the bridge's `item_added` item:
/// `rating_key`, `title`, `type`, `library_section_id`), when `/library/metadata` could not be read.
pub fn library_new_from_summary(item: &Value, server: Option<&ServerIdentity>) -> Value {
    let field = |name: &str| item.get(name).filter(|v| is_scalar(v)).cloned();
    let metadata = known([
        ("ratingKey", field("rating_key")),
        ("title", field("title")),
        ("type", field("type")),
        ("librarySectionID", field("library_section_id")),
        ("librarySectionTitle", field("library_section_title")),
    ]);
    library_message(metadata, server)
}

fn library_message(metadata: Map<String, Value>, server: Option<&ServerIdentity>) -> Value {
    let mut payload = envelope("library.new", true, server);
    insert_object(&mut payload, "Metadata", finish_metadata(metadata));
    Value::Object(payload)
}

/// `event`, `user`, `owner` and `Server`: what every message has.
fn envelope(event: &str, user: bool, server: Option<&ServerIdentity>) -> Map<String, Value> {
    let mut payload = Map::new();
    payload.insert("event".into(), json!(event));
    payload.insert("user".into(), json!(user));
    payload.insert("owner".into(), json!(true));
    let server = object(
        Part::Server,
        [
            ("title", server.map(|s| s.friendly_name.as_str()).filter(|t| !t.is_empty()).map(Value::from)),
            ("uuid", server.map(|s| s.machine_identifier.as_str()).filter(|u| !u.is_empty()).map(Value::from)),
        ],
    );
    insert_object(&mut payload, "Server", server);
    payload
}

/// Adds `librarySectionType` where it follows from the item type, then keeps the webhook fields, typed, that
/// carry no token.
fn finish_metadata(mut metadata: Map<String, Value>) -> Map<String, Value> {
    if !metadata.contains_key("librarySectionType") {
        let section = match metadata.get("type").and_then(Value::as_str) {
            Some("movie") => Some("movie"),
            Some("show" | "season" | "episode") => Some("show"),
            Some("artist" | "album" | "track") => Some("artist"),
            Some("photo") => Some("photo"),
            _ => None,
        };
        if let Some(section) = section {
            metadata.insert("librarySectionType".into(), json!(section));
        }
    }
    untainted(typed(Part::Metadata, metadata))
}

/// The object `part` of the fields that are known, typed; unknown ones are absent, not `null`.
fn object<const N: usize>(part: Part, fields: [(&str, Option<Value>); N]) -> Map<String, Value> {
    untainted(typed(part, known(fields)))
}

/// The fields whose value is known.
fn known<const N: usize>(fields: [(&str, Option<Value>); N]) -> Map<String, Value> {
    fields.into_iter().filter_map(|(key, value)| value.map(|v| (key.to_owned(), v))).collect()
}

/// Without the fields whose value carries a token (no webhook field is named like one: see the type table).
fn untainted(mut fields: Map<String, Value>) -> Map<String, Value> {
    fields.retain(|_, value| !carries_token(value));
    fields
}

/// Inserts `object` under `key` unless it is empty (nothing known: the part is left out).
fn insert_object(payload: &mut Map<String, Value>, key: &str, object: Map<String, Value>) {
    if !object.is_empty() {
        payload.insert(key.to_owned(), Value::Object(object));
    }
}

fn is_scalar(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

fn carries_token(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.to_ascii_lowercase().contains("x-plex-token"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plex::sessions::{parse_sessions_with, WebhookFields};

    fn server() -> ServerIdentity {
        ServerIdentity {
            machine_identifier: "srv-uuid".into(),
            friendly_name: "Living Room".into(),
            version: "1.41".into(),
            platform: "Linux".into(),
        }
    }

    fn snapshot(event: &'static str, info: Option<SessionInfo>) -> PlaybackSnapshot {
        PlaybackSnapshot { event, info, rating_key: Some("217468".into()), view_offset_ms: 26_530 }
    }

    #[test]
    fn seek_has_no_webhook_event() {
        let names: Vec<_> = ["play", "pause", "resume", "stop", "scrobble", "seek"].map(playback_event_name).into();
        assert_eq!(
            names,
            [
                Some("media.play"),
                Some("media.pause"),
                Some("media.resume"),
                Some("media.stop"),
                Some("media.scrobble"),
                None
            ]
        );
    }

    #[test]
    fn a_session_from_status_sessions_fills_the_webhook_shape() {
        let body = br#"{"MediaContainer":{"Metadata":[{"sessionKey":"45","ratingKey":"217468","key":"/library/metadata/217468",
            "guid":"plex://episode/5d9c","type":"episode","title":"Pilot","grandparentTitle":"Severance","parentTitle":"Season 1",
            "index":1,"parentIndex":1,"year":2022,"thumb":"/library/metadata/217468/thumb/1700000000","duration":3420000,
            "viewOffset":1000,"librarySectionID":"2","librarySectionTitle":"TV Shows","addedAt":"1700000000",
            "rating":"8.4","hasPremiumExtras":"1","User":{"id":"1","title":"alice","thumb":"https://plex.tv/users/abc/avatar?c=1"},
            "Player":{"title":"Living Room TV","machineIdentifier":"4b45c1d2","address":"192.168.1.20","remotePublicAddress":"203.0.113.7","local":true,"state":"playing"},
            "Media":[{"Part":[{"file":"/tv/Severance/S01E01.mkv"}]}]}]}}"#;
        let info = parse_sessions_with(body, true).unwrap().remove(0);
        let message = playback(&snapshot("media.play", Some(info)), Some(&server()));
        assert_eq!(
            message,
            json!({
                "event": "media.play",
                "user": true,
                "owner": true,
                "Account": {"id": 1, "thumb": "https://plex.tv/users/abc/avatar?c=1", "title": "alice"},
                "Server": {"title": "Living Room", "uuid": "srv-uuid"},
                "Player": {"local": true, "publicAddress": "203.0.113.7", "title": "Living Room TV", "uuid": "4b45c1d2"},
                "Metadata": {
                    "librarySectionType": "show", "librarySectionID": 2, "librarySectionTitle": "TV Shows",
                    "ratingKey": "217468", "key": "/library/metadata/217468", "guid": "plex://episode/5d9c",
                    "type": "episode", "title": "Pilot", "grandparentTitle": "Severance", "parentTitle": "Season 1",
                    "index": 1, "parentIndex": 1, "year": 2022, "thumb": "/library/metadata/217468/thumb/1700000000",
                    "duration": 3420000, "viewOffset": 26530, "addedAt": 1700000000, "rating": 8.4
                }
            })
        );
    }

    #[test]
    fn unknown_fields_are_absent_not_null() {
        // The look-up failed: only what the notification said.
        let bare = playback(&snapshot("media.pause", None), None);
        assert_eq!(
            bare,
            json!({"event": "media.pause", "user": false, "owner": true,
                   "Metadata": {"ratingKey": "217468", "viewOffset": 26530}})
        );
        // Details without a player address, user thumb or year.
        let info = SessionInfo {
            session_key: "7".into(),
            user_id: Some("local-bob".into()),
            user_name: Some("bob".into()),
            player_name: Some("Phone".into()),
            title: Some("Up".into()),
            media_type: Some("clip".into()),
            webhook: Some(WebhookFields::default()),
            ..SessionInfo::default()
        };
        let message = playback(&snapshot("media.stop", Some(info)), Some(&server()));
        assert_eq!(message["Account"], json!({"title": "bob"}), "an id that is not a number is left out");
        assert_eq!(message["Player"], json!({"title": "Phone"}));
        let metadata = message["Metadata"].as_object().unwrap();
        for absent in ["year", "publicAddress", "librarySectionType", "guid", "thumb"] {
            assert!(!metadata.contains_key(absent), "{absent} is unknown: {message}");
        }
        assert_eq!((&message["user"], &message["owner"]), (&json!(false), &json!(true)));
        assert!(!message.to_string().contains("null"), "no null anywhere: {message}");
    }

    #[test]
    fn user_is_true_only_for_the_owners_own_playback() {
        let played_by = |id: &str| {
            let info = SessionInfo { session_key: "7".into(), user_id: Some(id.into()), ..SessionInfo::default() };
            playback(&snapshot("media.play", Some(info)), None)
        };
        assert_eq!(played_by("1")["user"], true);
        let shared = played_by("8264091");
        assert_eq!(
            (&shared["user"], &shared["owner"], &shared["Account"]["id"]),
            (&json!(false), &json!(true), &json!(8264091))
        );
    }

    #[test]
    fn a_token_never_gets_in() {
        let info = SessionInfo {
            session_key: "7".into(),
            title: Some("Up".into()),
            webhook: Some(WebhookFields {
                user_thumb: Some("http://10.0.0.1:32400/photo?X-Plex-Token=secret".into()),
                player_public_address: None,
                metadata: [("art".to_owned(), json!("/library/metadata/1/art?x-plex-token=secret"))]
                    .into_iter()
                    .collect(),
            }),
            ..SessionInfo::default()
        };
        let message = playback(&snapshot("media.play", Some(info)), None).to_string();
        assert!(!message.contains("secret") && !message.to_lowercase().contains("token"), "{message}");
        assert!(message.contains("\"title\":\"Up\""));
    }

    #[test]
    fn library_new_from_metadata_or_from_the_timeline() {
        let body = br#"{"MediaContainer":{"size":1,"librarySectionID":1,"librarySectionTitle":"Movies","librarySectionUUID":"u-1",
            "Metadata":[{"ratingKey":"5","key":"/library/metadata/5","guid":"plex://movie/5d77","type":"movie","title":"Arrival","year":2016,
            "thumb":"/library/metadata/5/thumb/1","addedAt":1732518000,"Genre":[{"tag":"Drama"}],"Media":[{"Part":[{"file":"/m/a.mkv"}]}]}]}}"#;
        let message = library_new(&serde_json::from_slice(body).unwrap(), Some(&server())).expect("a metadata body");
        assert_eq!(
            message,
            json!({
                "event": "library.new", "user": true, "owner": true,
                "Server": {"title": "Living Room", "uuid": "srv-uuid"},
                "Metadata": {"ratingKey": "5", "key": "/library/metadata/5", "guid": "plex://movie/5d77", "type": "movie",
                             "title": "Arrival", "year": 2016, "thumb": "/library/metadata/5/thumb/1", "addedAt": 1732518000,
                             "librarySectionID": 1, "librarySectionTitle": "Movies", "librarySectionUUID": "u-1",
                             "librarySectionType": "movie"}
            })
        );
        assert_eq!(library_new(&json!({"errors": [{"code": 404}]}), None), None, "not a metadata body");
        let item = json!({"rating_key": "5", "title": "Arrival", "type": "movie", "library_section_id": "1", "library_section_title": null});
        assert_eq!(
            library_new_from_summary(&item, None),
            json!({"event": "library.new", "user": true, "owner": true,
                   "Metadata": {"ratingKey": "5", "title": "Arrival", "type": "movie", "librarySectionID": 1, "librarySectionType": "movie"}})
        );
    }
}
