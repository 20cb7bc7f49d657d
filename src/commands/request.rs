//! What each verb asks of the PMS: its arguments, checked, and the fixed request they become (facts:
//! docs/plex-protocol.md, "Acting on a server"). Nothing here takes a path or query from a message: paths are fixed strings, and
//! the only values put into them come from the server's own lists (section keys, session ids, player ids) or
//! are checked numbers and names from a fixed list.

use serde_json::{Map, Value};

use crate::command_verb::Verb;
use crate::topic::player_segment;

/// Butler tasks a command may start (`POST /butler/<name>`).
pub const BUTLER_TASKS: [&str; 9] = [
    "BackupDatabase",
    "CleanOldBundles",
    "CleanOldCacheFiles",
    "DeepMediaAnalysis",
    "OptimizeDatabase",
    "RefreshLibraries",
    "RefreshLocalMedia",
    "RefreshPeriodicMetadata",
    "UpgradeMediaAnalysis",
];

/// The longest `path` a library scan accepts, and the longest `reason` for a terminated stream.
const MAX_TEXT: usize = 1024;

/// A verb's arguments, checked; what still needs the server's lists to resolve is kept as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// `library_scan`: every library, or one section (its key or title), optionally one folder.
    LibraryScan {
        section: Option<String>,
        path: Option<String>,
    },
    TerminateSession {
        session_key: String,
        reason: String,
    },
    Butler {
        task: &'static str,
    },
    /// A player verb; `seek` carries its offset.
    Player {
        offset_ms: Option<u64>,
    },
}

/// Reads and checks the arguments of `verb` from the payload object; the error is a sentence for the result.
pub fn args(verb: Verb, payload: &Map<String, Value>) -> Result<Args, String> {
    match verb {
        Verb::LibraryScan => {
            let section = match payload.get("section") {
                None | Some(Value::Null) => None,
                Some(value) => Some(text(value).ok_or("`section` must be a section id or title")?),
            };
            let path = match payload.get("path") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) if !p.is_empty() && p.len() <= MAX_TEXT => Some(p.clone()),
                Some(_) => return Err(format!("`path` must be a folder path of 1 to {MAX_TEXT} characters")),
            };
            if path.is_some() && section.is_none() {
                return Err("`path` needs a `section` (the library the folder belongs to)".into());
            }
            Ok(Args::LibraryScan { section, path })
        }
        Verb::TerminateSession => {
            let session_key = payload
                .get("session_key")
                .and_then(text)
                .ok_or("`session_key` is required (the sessionKey of the stream, as in the sessions topics)")?;
            let reason = match payload.get("reason") {
                None | Some(Value::Null) => "Stopped by the server owner".to_owned(),
                Some(Value::String(r)) if r.len() <= MAX_TEXT => r.clone(),
                Some(_) => return Err(format!("`reason` must be a text of at most {MAX_TEXT} characters")),
            };
            Ok(Args::TerminateSession { session_key, reason })
        }
        Verb::Butler => {
            let asked = payload.get("task").and_then(Value::as_str).unwrap_or_default();
            let task = BUTLER_TASKS
                .into_iter()
                .find(|t| t.eq_ignore_ascii_case(asked))
                .ok_or_else(|| format!("`task` must be one of {}", BUTLER_TASKS.join(", ")))?;
            Ok(Args::Butler { task })
        }
        Verb::Seek => {
            let offset = payload.get("offset_ms").and_then(Value::as_u64);
            offset.map(|ms| Args::Player { offset_ms: Some(ms) }).ok_or_else(|| {
                "`offset_ms` is required: the position to seek to, in milliseconds (a whole number)".into()
            })
        }
        Verb::Play | Verb::Pause | Verb::Stop | Verb::SkipNext | Verb::SkipPrevious => {
            Ok(Args::Player { offset_ms: None })
        }
    }
}

/// A string, or a number's text (ids come both ways).
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The player proxy's command name for a player verb.
pub fn player_command(verb: Verb) -> &'static str {
    match verb {
        Verb::Play => "play",
        Verb::Pause => "pause",
        Verb::Stop => "stop",
        Verb::SkipNext => "skipNext",
        Verb::SkipPrevious => "skipPrevious",
        _ => "seekTo",
    }
}

/// One library section from `/library/sections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub key: String,
    pub title: String,
}

/// The sections of a `/library/sections` body (`MediaContainer.Directory[]`).
pub fn sections(body: &[u8]) -> Vec<Section> {
    list(body, "Directory")
        .iter()
        .filter_map(|d| Some(Section { key: d.get("key").and_then(text)?, title: d.get("title").and_then(text)? }))
        .collect()
}

/// The section a `library_scan` names: by key, else by title (case-insensitive).
pub fn find_section<'a>(sections: &'a [Section], wanted: &str) -> Option<&'a Section> {
    sections.iter().find(|s| s.key == wanted).or_else(|| sections.iter().find(|s| s.title.eq_ignore_ascii_case(wanted)))
}

/// The `Session.id` of the stream with this `sessionKey` in a `/status/sessions` body.
pub fn session_id(body: &[u8], session_key: &str) -> Option<String> {
    list(body, "Metadata")
        .iter()
        .find(|m| m.get("sessionKey").and_then(text).as_deref() == Some(session_key))
        .and_then(|m| m.get("Session")?.get("id").and_then(text))
}

/// The machineIdentifier of the player whose topic level is `segment`, among the players of a
/// `/status/sessions` body.
pub fn player_id(body: &[u8], segment: &str) -> Option<String> {
    list(body, "Metadata")
        .iter()
        .filter_map(|m| m.get("Player")?.get("machineIdentifier").and_then(text))
        .find(|id| player_segment(id) == segment)
}

/// `MediaContainer.<key>[]` of a PMS body, empty when it is not there.
fn list(body: &[u8], key: &str) -> Vec<Value> {
    let Ok(mut root) = serde_json::from_slice::<Value>(body) else { return Vec::new() };
    match root.get_mut("MediaContainer").and_then(|c| c.get_mut(key)).map(Value::take) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn arguments_are_checked_per_verb() {
        assert_eq!(
            args(Verb::LibraryScan, &object(json!({"section": 2, "path": "/m/a"}))),
            Ok(Args::LibraryScan { section: Some("2".into()), path: Some("/m/a".into()) })
        );
        assert!(args(Verb::LibraryScan, &object(json!({"path": "/m"}))).is_err(), "a path needs its section");
        assert!(args(Verb::Butler, &object(json!({"task": "rm -rf"}))).is_err());
        assert_eq!(
            args(Verb::Butler, &object(json!({"task": "backupdatabase"}))),
            Ok(Args::Butler { task: "BackupDatabase" })
        );
        assert!(args(Verb::Seek, &object(json!({"offset_ms": -1}))).is_err());
        assert!(args(Verb::TerminateSession, &object(json!({}))).is_err());
    }

    #[test]
    fn server_lists_resolve_sections_sessions_and_players() {
        let sections_body =
            br#"{"MediaContainer":{"Directory":[{"key":"1","title":"Films"},{"key":"2","title":"TV"}]}}"#;
        let list = sections(sections_body);
        assert_eq!(find_section(&list, "films").map(|s| s.key.as_str()), Some("1"));
        assert_eq!(find_section(&list, "2").map(|s| s.title.as_str()), Some("TV"));
        assert!(find_section(&list, "Music").is_none());
        let sessions = br#"{"MediaContainer":{"Metadata":[{"sessionKey":"41","Session":{"id":"abc"},"Player":{"machineIdentifier":"TV-One"}}]}}"#;
        assert_eq!(session_id(sessions, "41").as_deref(), Some("abc"));
        assert_eq!(session_id(sessions, "42"), None);
        assert_eq!(player_id(sessions, "tv-one").as_deref(), Some("TV-One"));
        assert_eq!(player_id(b"not json", "tv-one"), None);
    }
}
