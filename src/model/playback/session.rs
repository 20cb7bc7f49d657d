//! One tracked session and the documents built from it: its retained document and the servers' summary.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{Effect, PROGRESS_REFRESH_MS};
use crate::plex::sessions::SessionInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PlayState {
    Playing,
    Paused,
    Buffering,
}

impl PlayState {
    pub(super) fn parse(state: &str) -> Option<PlayState> {
        match state {
            "playing" => Some(PlayState::Playing),
            "paused" => Some(PlayState::Paused),
            "buffering" => Some(PlayState::Buffering),
            _ => None,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            PlayState::Playing => "playing",
            PlayState::Paused => "paused",
            PlayState::Buffering => "buffering",
        }
    }
}

/// One tracked session.
#[derive(Debug, Clone)]
pub(super) struct Tracked {
    pub(super) key: String,
    pub(super) state: PlayState,
    /// The last of playing/paused, so buffering in between does not count as a change.
    pub(super) settled: Option<PlayState>,
    pub(super) rating_key: Option<String>,
    /// The player the last notification named (`clientIdentifier`).
    pub(super) player: Option<String>,
    pub(super) view_offset_ms: u64,
    pub(super) offset_at_ms: u64,
    pub(super) info: Option<SessionInfo>,
    pub(super) started_at_ms: u64,
    pub(super) updated_at_ms: u64,
    pub(super) last_heard_ms: u64,
    /// A notification was seen for it on the current connection, so its state is known first-hand; snapshots
    /// then only add details. After a reconnect (or for a discovered session) the snapshot's state is adopted.
    pub(super) first_hand: bool,
    pub(super) scrobbled: bool,
    pub(super) pending: Vec<&'static str>,
    pub(super) pending_since_ms: u64,
    /// When the retained document was last published, and whether it has changed since (progress only).
    pub(super) document_sent_ms: Option<u64>,
    pub(super) document_stale: bool,
}

/// The retained summary document of these sessions.
pub(super) fn summary<'a>(sessions: impl Iterator<Item = &'a Tracked>) -> Value {
    let mut playing = 0;
    let mut paused = 0;
    let mut buffering = 0;
    let mut transcoding = 0;
    let mut bandwidth = 0u64;
    let mut list = Vec::new();
    // Sessions still waiting for their details are left out until their first document goes out.
    for t in sessions.filter(|t| t.document_sent_ms.is_some()) {
        match t.state {
            PlayState::Playing => playing += 1,
            PlayState::Paused => paused += 1,
            PlayState::Buffering => buffering += 1,
        }
        let info = t.info.as_ref();
        if info.and_then(|i| i.transcode.as_ref()).is_some_and(|tc| tc.is_transcoding()) {
            transcoding += 1;
        }
        bandwidth += info.and_then(|i| i.bandwidth_kbps).unwrap_or(0);
        list.push(json!({
            "session_key": t.key,
            "user": info.and_then(|i| i.user_name.clone()),
            "player": info.and_then(|i| i.player_name.clone()),
            "title": info.map(display_title),
            "state": t.state.as_str(),
        }));
    }
    let count = list.len();
    json!({
        "count": count,
        "playing": playing,
        "paused": paused,
        "buffering": buffering,
        "transcoding": transcoding,
        "direct_play": count - transcoding,
        "total_bandwidth_kbps": bandwidth,
        "sessions": list,
    })
}

pub(super) fn document_due(tracked: &Tracked, now_ms: u64) -> bool {
    tracked.document_sent_ms.is_none_or(|at| due_ms(at, PROGRESS_REFRESH_MS, now_ms) <= now_ms)
}

/// When something that started at `since` is due after `wait` (ms since the epoch). The times are wall-clock
/// (they go into documents), so a clock stepped back past `since` makes it due now rather than after the step.
pub(super) fn due_ms(since: u64, wait: u64, now_ms: u64) -> u64 {
    if since > now_ms {
        now_ms
    } else {
        since + wait
    }
}

pub(super) fn send_document(tracked: &mut Tracked, effects: &mut Vec<Effect>, now_ms: u64) {
    effects.push(Effect::Session { key: tracked.key.clone(), doc: document(tracked) });
    tracked.document_sent_ms = Some(now_ms);
    tracked.document_stale = false;
}

pub(super) fn queue(tracked: &mut Tracked, event: &'static str, now_ms: u64) {
    if tracked.pending.is_empty() {
        tracked.pending_since_ms = now_ms;
    }
    tracked.pending.push(event);
}

/// "Show – S1E2 – Title" for episodes, the title otherwise.
pub(super) fn display_title(info: &SessionInfo) -> String {
    let title = info.title.clone().unwrap_or_default();
    match (&info.grandparent_title, info.parent_index, info.index) {
        (Some(show), Some(season), Some(episode)) => {
            format!("{show} – S{season}E{episode} – {title}")
        }
        (Some(show), _, _) => format!("{show} – {title}"),
        _ => title,
    }
}

pub(super) fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The retained document of one session.
pub(super) fn document(t: &Tracked) -> Value {
    let info = t.info.as_ref();
    let duration = info.and_then(|i| i.duration_ms);
    let progress = duration
        .filter(|d| *d > 0)
        .map(|d| ((t.view_offset_ms as f64 / d as f64) * 1000.0).round() / 10.0)
        .map(|p| p.min(100.0));
    json!({
        "session_key": t.key,
        "state": t.state.as_str(),
        "user": info.map(|i| json!({ "id": i.user_id, "name": i.user_name })),
        "player": info.map(|i| json!({
            "name": i.player_name,
            "product": i.player_product,
            "platform": i.player_platform,
            "device": i.player_device,
            "machine_identifier": i.player_machine_identifier,
            "address": i.player_address,
            "local": i.player_local,
        })),
        "media": json!({
            "type": info.and_then(|i| i.media_type.clone()),
            "title": info.and_then(|i| i.title.clone()),
            "grandparent_title": info.and_then(|i| i.grandparent_title.clone()),
            "parent_index": info.and_then(|i| i.parent_index),
            "index": info.and_then(|i| i.index),
            "year": info.and_then(|i| i.year),
            "rating_key": info.and_then(|i| i.rating_key.clone()).or_else(|| t.rating_key.clone()),
            "duration_ms": duration,
            "display_title": info.map(display_title),
            "thumb": info.and_then(|i| i.thumb.clone()),
        }),
        "view_offset_ms": t.view_offset_ms,
        "progress_percent": progress,
        "transcode": info.and_then(|i| i.transcode.as_ref()).map(|tc| json!({
            "video_decision": tc.video_decision,
            "audio_decision": tc.audio_decision,
            "hw": tc.hw,
        })),
        "bandwidth_kbps": info.and_then(|i| i.bandwidth_kbps),
        "started_at": rfc3339(t.started_at_ms),
        "updated_at": rfc3339(t.updated_at_ms),
    })
}
