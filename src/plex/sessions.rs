//! Reading `/status/sessions` (what is playing now) and `playing` notification items, leniently: PMS sends
//! numbers as strings on some servers, omits fields for some players, and `ratingKey` is not always numeric.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::Fields;
use crate::lenient::{value_flag as flag, value_number as number, value_text as text};

/// One `playing` notification item: the few fields a notification carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlayingItem {
    pub session_key: Option<String>,
    pub rating_key: Option<String>,
    pub state: String,
    pub view_offset_ms: Option<u64>,
    /// `clientIdentifier`: the player's machineIdentifier (absent for some third-party players).
    pub player: Option<String>,
}

impl PlayingItem {
    /// Reads an item; `None` if it is not a JSON object.
    pub fn parse(raw: &[u8]) -> Option<PlayingItem> {
        let fields = Fields::parse(raw)?;
        Some(PlayingItem {
            session_key: fields.text("sessionKey").map(Cow::into_owned),
            rating_key: fields.text("ratingKey").map(Cow::into_owned),
            state: fields.text("state").map(Cow::into_owned).unwrap_or_default(),
            view_offset_ms: fields.number("viewOffset"),
            player: fields.text("clientIdentifier").filter(|p| !p.is_empty()).map(Cow::into_owned),
        })
    }
}

/// One session of `/status/sessions`, in the shape the bridge publishes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionInfo {
    pub session_key: String,
    pub state: Option<String>,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub player_name: Option<String>,
    pub player_product: Option<String>,
    pub player_platform: Option<String>,
    pub player_device: Option<String>,
    pub player_machine_identifier: Option<String>,
    pub player_address: Option<String>,
    pub player_local: Option<bool>,
    pub media_type: Option<String>,
    pub title: Option<String>,
    pub grandparent_title: Option<String>,
    pub parent_index: Option<u64>,
    pub index: Option<u64>,
    pub year: Option<u64>,
    pub rating_key: Option<String>,
    pub duration_ms: Option<u64>,
    pub view_offset_ms: Option<u64>,
    pub bandwidth_kbps: Option<u64>,
    pub transcode: Option<TranscodeInfo>,
    /// The PMS path of the poster to show: the show's for an episode, the album's for a track, the item's
    /// otherwise (a path on the server, fetched with the token; never published as a URL).
    pub thumb: Option<String>,
    /// What only the Plex-webhook-compatible messages need; read only when they are on
    /// ([`parse_sessions_with`]), so servers without them pay nothing for it.
    pub webhook: Option<WebhookFields>,
}

/// The parts of a `/status/sessions` entry that only a Plex-webhook-shaped message uses (see `crate::model::webhook`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookFields {
    /// `User.thumb`: the account's avatar (a plex.tv URL, without any token).
    pub user_thumb: Option<String>,
    /// `Player.remotePublicAddress`: the player's public address as PMS sees it (what webhooks call
    /// `publicAddress`); PMS lists it only for some players.
    pub player_public_address: Option<String>,
    /// The item's scalar fields as PMS sent them (names and JSON types as sent; a message gets the webhook's
    /// types when it is built, see `crate::model::webhook_types`), see [`scalar_fields`].
    pub metadata: Map<String, Value>,
}

/// What the transcoder does for a session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TranscodeInfo {
    pub video_decision: Option<String>,
    pub audio_decision: Option<String>,
    pub hw: bool,
}

impl TranscodeInfo {
    /// Whether anything is actually transcoded (not merely copied / direct-streamed).
    pub fn is_transcoding(&self) -> bool {
        self.video_decision.as_deref() == Some("transcode") || self.audio_decision.as_deref() == Some("transcode")
    }
}

#[derive(Deserialize)]
struct Sessions {
    #[serde(rename = "MediaContainer")]
    container: SessionsContainer,
}

#[derive(Deserialize)]
struct SessionsContainer {
    #[serde(default, rename = "Metadata")]
    metadata: Vec<Value>,
}

/// Parses a `/status/sessions` body. Entries without a session key cannot be tracked and are skipped.
pub fn parse_sessions(body: &[u8]) -> Result<Vec<SessionInfo>, serde_json::Error> {
    parse_sessions_with(body, false)
}

/// [`parse_sessions`], also keeping each entry's [`WebhookFields`] when `webhook_fields`.
pub fn parse_sessions_with(body: &[u8], webhook_fields: bool) -> Result<Vec<SessionInfo>, serde_json::Error> {
    let sessions: Sessions = serde_json::from_slice(body)?;
    Ok(sessions
        .container
        .metadata
        .iter()
        .filter_map(|entry| {
            let mut info = session_info(entry)?;
            if webhook_fields {
                info.webhook = Some(WebhookFields {
                    user_thumb: text(entry.get("User").and_then(|u| u.get("thumb"))),
                    player_public_address: text(entry.get("Player").and_then(|p| p.get("remotePublicAddress"))),
                    // `sessionKey` names the playback, not the item: /library/metadata has no such field.
                    metadata: scalar_fields(entry, &["sessionKey"]),
                });
            }
            Some(info)
        })
        .collect())
}

/// The scalar fields (strings, numbers, booleans) of a metadata entry as PMS sent them, without `skip`: the
/// item's own description (`ratingKey`, `guid`, `title`, `year`, `thumb`, …). Objects and lists (`Media`, `Part`
/// with file paths, `Genre`, `Role`, the session's `User`/`Player`/`Session`) are not items' scalar fields and
/// are left out.
pub fn scalar_fields(entry: &Value, skip: &[&str]) -> Map<String, Value> {
    let Some(object) = entry.as_object() else { return Map::new() };
    object
        .iter()
        .filter(|(key, value)| {
            matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) && !skip.contains(&key.as_str())
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

fn session_info(entry: &Value) -> Option<SessionInfo> {
    let session_key = text(entry.get("sessionKey")).filter(|k| !k.is_empty())?;
    let user = entry.get("User");
    let player = entry.get("Player");
    let session = entry.get("Session");
    let transcode = entry.get("TranscodeSession").filter(|t| t.is_object()).map(|t| TranscodeInfo {
        video_decision: text(t.get("videoDecision")),
        audio_decision: text(t.get("audioDecision")),
        hw: ["transcodeHwRequested", "transcodeHwDecoding", "transcodeHwEncoding", "transcodeHwFullPipeline"]
            .iter()
            .any(|k| {
                flag(t.get(*k)).unwrap_or(false) || t.get(*k).is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            }),
    });
    Some(SessionInfo {
        session_key,
        state: text(player.and_then(|p| p.get("state"))),
        user_id: text(user.and_then(|u| u.get("id"))),
        user_name: text(user.and_then(|u| u.get("title"))),
        player_name: text(player.and_then(|p| p.get("title"))),
        player_product: text(player.and_then(|p| p.get("product"))),
        player_platform: text(player.and_then(|p| p.get("platform"))),
        player_device: text(player.and_then(|p| p.get("device"))),
        player_machine_identifier: text(player.and_then(|p| p.get("machineIdentifier"))),
        player_address: text(player.and_then(|p| p.get("address"))),
        player_local: flag(player.and_then(|p| p.get("local"))),
        media_type: text(entry.get("type")),
        title: text(entry.get("title")),
        grandparent_title: text(entry.get("grandparentTitle")),
        parent_index: number(entry.get("parentIndex")),
        index: number(entry.get("index")),
        year: number(entry.get("year")),
        rating_key: text(entry.get("ratingKey")),
        duration_ms: number(entry.get("duration")),
        view_offset_ms: number(entry.get("viewOffset")),
        bandwidth_kbps: number(session.and_then(|s| s.get("bandwidth"))),
        transcode,
        thumb: poster(entry),
        webhook: None,
    })
}

/// The poster path of a session's item (see [`SessionInfo::thumb`]); only server paths (`/…`) are kept.
fn poster(entry: &Value) -> Option<String> {
    let preferred = match entry.get("type").and_then(Value::as_str) {
        Some("episode") => text(entry.get("grandparentThumb")),
        Some("track") => text(entry.get("parentThumb")),
        _ => None,
    };
    preferred.or_else(|| text(entry.get("thumb"))).filter(|path| path.starts_with('/') && !path.starts_with("//"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_parse_leniently() {
        let body = br#"{"MediaContainer":{"size":2,"Metadata":[
            {"sessionKey":"45","ratingKey":"217468","type":"movie","title":"Arrival","year":2016,"duration":"6960000","viewOffset":26530,
             "User":{"id":"1","title":"alice"},"Player":{"title":"Living Room TV","product":"Plex for LG","platform":"webOS","device":"OLED","machineIdentifier":"tv1","address":"192.168.1.20","local":true,"state":"playing"},
             "Session":{"id":"s1","bandwidth":12000,"location":"lan"},
             "TranscodeSession":{"videoDecision":"transcode","audioDecision":"copy","transcodeHwRequested":true}},
            {"sessionKey":46,"type":"episode","title":"Pilot","grandparentTitle":"Show","parentIndex":"1","index":1,"Player":{"state":"paused","local":"0"}},
            {"title":"no key"}]}}"#;
        let sessions = parse_sessions(body).unwrap();
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions[0].duration_ms, Some(6_960_000));
        assert_eq!(sessions[0].user_name.as_deref(), Some("alice"));
        assert!(sessions[0].transcode.as_ref().is_some_and(|t| t.is_transcoding() && t.hw));
        assert_eq!(sessions[1].session_key, "46");
        assert_eq!(sessions[1].parent_index, Some(1));
        assert_eq!(sessions[1].player_local, Some(false));
        assert!(parse_sessions(b"{\"MediaContainer\":{\"size\":0}}").unwrap().is_empty());
        assert!(parse_sessions(b"<xml/>").is_err());
    }

    #[test]
    fn webhook_fields_are_read_only_when_asked_for() {
        let body = br#"{"MediaContainer":{"Metadata":[{"sessionKey":"45","ratingKey":"5","guid":"plex://movie/1","key":"/library/metadata/5","title":"Arrival","year":2016,"librarySectionID":"1",
            "User":{"id":"1","title":"alice","thumb":"https://plex.tv/users/abc/avatar?c=1"},
            "Player":{"title":"TV","machineIdentifier":"tv1","remotePublicAddress":"203.0.113.7"},
            "Media":[{"Part":[{"file":"/movies/Arrival.mkv"}]}],"Genre":[{"tag":"Drama"}]}]}}"#;
        assert_eq!(parse_sessions(body).unwrap()[0].webhook, None);
        let with = parse_sessions_with(body, true).unwrap();
        let fields = with[0].webhook.as_ref().expect("webhook fields");
        assert_eq!(fields.user_thumb.as_deref(), Some("https://plex.tv/users/abc/avatar?c=1"));
        assert_eq!(fields.player_public_address.as_deref(), Some("203.0.113.7"));
        let mut keys: Vec<&str> = fields.metadata.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["guid", "key", "librarySectionID", "ratingKey", "title", "year"],
            "scalars only, no sessionKey"
        );
        assert_eq!(fields.metadata["year"], 2016, "types as sent");
    }

    #[test]
    fn playing_items_parse_with_string_or_number_fields() {
        let item = PlayingItem::parse(br#"{"sessionKey":45,"ratingKey":"com.gracenote.onconnect://episode/EP1","viewOffset":"1200","state":"paused"}"#).unwrap();
        assert_eq!(item.session_key.as_deref(), Some("45"));
        assert_eq!(item.rating_key.as_deref(), Some("com.gracenote.onconnect://episode/EP1"));
        assert_eq!(item.view_offset_ms, Some(1200));
        assert!(PlayingItem::parse(b"[1]").is_none());
    }
}
