//! Players: one record per Plex client (by its machineIdentifier) seen in a server's sessions, and the retained
//! state Home Assistant's per-player device reads (`<p>/<server>/players/<player>`).
//!
//! Pure, like [`crate::model::playback`]: it reads the enriched session documents and events the tracker produces and
//! returns [`PlayerOutput`]s for the state task to publish. Rules:
//! - a player appears when a session document first names it (only enriched documents do, so a player is never
//!   announced without its name);
//! - its state follows its latest session; when that session ends the state is `idle` with an empty title —
//!   never a ghost `playing` — and after a reconnect or restart [`Players::settle`] idles every player whose
//!   session the server no longer lists;
//! - the retained state carries the player's identity and when it was last seen, so the next run restores its
//!   players from the broker and expires those not seen for `players.expire_after`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::topic::player_segment;

/// What the state task publishes for players.
#[derive(Debug, Clone, PartialEq)]
pub enum PlayerOutput {
    /// The player is new, or its name/product/platform changed: (re)publish its discovery.
    Announce { player: String },
    /// Its retained state document.
    State { player: String, doc: Value },
    /// A playback event of its session (not retained).
    Event { player: String, event: Value },
    /// What it shows has new artwork at this PMS path: fetch it and publish the image.
    Artwork { player: String, thumb: String },
    /// Not seen for longer than `players.expire_after`: remove its discovery, state and artwork.
    Remove { player: String },
}

/// One player as the discovery and the state document describe it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlayerRecord {
    pub machine_identifier: String,
    pub title: String,
    pub product: String,
    pub platform: String,
    last_seen_ms: u64,
    session_key: Option<String>,
    /// A newer session that started on this player and whose details are not known yet: the end of the session
    /// shown now does not make the player idle (autoplay: the next episode is already on its way).
    next_session: Option<String>,
    state: String,
    thumb: Option<String>,
    /// What the last published state document showed (state, title, user) and when it was built: a document
    /// that changes only the progress is rebuilt at most every [`PROGRESS_REFRESH_MS`].
    shown: Option<(String, String, String)>,
    shown_at_ms: u64,
}

/// A player's state document is rebuilt for a progress change alone at most this often (the sessions' own
/// documents follow the same rule; a busy server sends far more updates than any dashboard needs).
const PROGRESS_REFRESH_MS: u64 = crate::model::playback::PROGRESS_REFRESH_MS;

impl PlayerRecord {
    /// The PMS path of the artwork it shows (or last showed).
    pub fn thumb(&self) -> Option<&str> {
        self.thumb.as_deref()
    }
}

/// The players of one server.
#[derive(Debug)]
pub struct Players {
    by_segment: BTreeMap<String, PlayerRecord>,
    /// machineIdentifier → topic segment, so the fold is done once per player, not per document.
    segments: HashMap<String, String>,
    /// `None`: players are kept for ever.
    expire_after: Option<Duration>,
    /// A record changed in a way that can move the next expiry (see [`Players::next_expiry_if_changed`]).
    expiry_changed: bool,
}

impl Players {
    /// Players not seen for `expire_after` are removed (`None` keeps them).
    pub fn new(expire_after: Option<Duration>) -> Self {
        Players { by_segment: BTreeMap::new(), segments: HashMap::new(), expire_after, expiry_changed: false }
    }

    /// The player with this topic segment.
    pub fn get(&self, player: &str) -> Option<&PlayerRecord> {
        self.by_segment.get(player)
    }

    /// A session new to the tracker started on the player with this machineIdentifier (known from the
    /// notification before the session's details): remembered, so the end of the session the player shows now,
    /// arriving later, does not make it idle for the moment until the new one is announced.
    pub fn on_session_started(&mut self, machine_identifier: &str, session_key: &str) {
        let Some(segment) = self.segments.get(machine_identifier) else { return };
        if let Some(record) = self.by_segment.get_mut(segment) {
            if record.session_key.as_deref() != Some(session_key) {
                record.next_session = Some(session_key.to_owned());
            }
        }
    }

    /// The session the player shows ended: the player is idle, unless a newer session is already on it (then it
    /// shows that one as soon as its details are known, and nothing in between). True when it went idle.
    fn session_ended(record: &mut PlayerRecord) -> bool {
        record.session_key = record.next_session.take();
        if record.session_key.is_some() {
            return false;
        }
        record.state.clear();
        record.state.push_str("idle");
        true
    }

    /// The retained session document of a session (enriched or not) was published.
    pub fn on_session(&mut self, doc: &Value, now_ms: u64) -> Vec<PlayerOutput> {
        self.expiry_changed = true;
        // Called for every session document (a busy server: thousands a second), so the path where nothing a
        // subscriber sees changed compares borrowed text and allocates nothing.
        let mut out = Vec::new();
        let Some(machine_identifier) = doc["player"]["machine_identifier"].as_str().filter(|m| !m.is_empty()) else {
            return out;
        };
        let player = match self.segments.get(machine_identifier) {
            Some(segment) => segment.clone(),
            None => {
                let segment = player_segment(machine_identifier);
                self.segments.insert(machine_identifier.to_owned(), segment.clone());
                segment
            }
        };
        fn text(v: &Value) -> &str {
            v.as_str().unwrap_or_default()
        }
        let (name, product, platform) =
            (text(&doc["player"]["name"]), text(&doc["player"]["product"]), text(&doc["player"]["platform"]));
        let new = !self.by_segment.contains_key(&player);
        let record = self.by_segment.entry(player.clone()).or_insert_with(|| PlayerRecord {
            machine_identifier: machine_identifier.to_owned(),
            ..PlayerRecord::default()
        });
        if new || record.title != name || record.product != product || record.platform != platform {
            (record.title, record.product, record.platform) =
                (name.to_owned(), product.to_owned(), platform.to_owned());
            out.push(PlayerOutput::Announce { player: player.clone() });
        }
        record.last_seen_ms = now_ms;
        let session_key = doc["session_key"].as_str();
        if doc["state"] == "stopped" {
            // A newer session that ends before it was ever shown is not on its way any more.
            if record.next_session.is_some() && record.next_session.as_deref() == session_key {
                record.next_session = None;
            }
            // Only the session the player shows now makes it idle: the late stop of an earlier one does not, and
            // neither does it while a newer session is on its way.
            if record.session_key.is_some() && record.session_key.as_deref() != session_key {
                return out;
            }
            if !Self::session_ended(record) {
                return out;
            }
        } else {
            if record.session_key.as_deref() != session_key {
                record.session_key = session_key.map(str::to_owned);
            }
            if record.next_session.as_deref() == session_key {
                record.next_session = None;
            }
            let state = text(&doc["state"]);
            if record.state != state {
                state.clone_into(&mut record.state);
            }
        }
        let thumb = doc["media"]["thumb"].as_str().filter(|t| !t.is_empty());
        if let Some(thumb) = thumb.filter(|t| record.thumb.as_deref() != Some(*t) && record.state != "idle") {
            record.thumb = Some(thumb.to_owned());
            out.push(PlayerOutput::Artwork { player: player.clone(), thumb: thumb.to_owned() });
        }
        let (title, user) = (text(&doc["media"]["display_title"]), text(&doc["user"]["name"]));
        let unchanged = record.shown.as_ref().is_some_and(|(s, t, u)| *s == record.state && t == title && u == user);
        if unchanged && now_ms < record.shown_at_ms.saturating_add(PROGRESS_REFRESH_MS) {
            return out;
        }
        record.shown = Some((record.state.clone(), title.to_owned(), user.to_owned()));
        record.shown_at_ms = now_ms;
        let doc = if record.state == "idle" { idle_document(record) } else { state_document(record, doc) };
        out.push(PlayerOutput::State { player, doc });
        out
    }

    /// A playback event: the player's state first (so an automation reading it sees the new state), then the
    /// event on the player's own topic.
    pub fn on_event(&mut self, event: &Value, now_ms: u64) -> Vec<PlayerOutput> {
        let mut session = event["session"].clone();
        if event["event_type"] == "stop" {
            session["state"] = json!("stopped");
        }
        let mut out = self.on_session(&session, now_ms);
        let player = session["player"]["machine_identifier"].as_str().filter(|m| !m.is_empty()).map(player_segment);
        if let Some(player) = player.filter(|p| self.by_segment.contains_key(p)) {
            out.push(PlayerOutput::Event { player, event: event.clone() });
        }
        out
    }

    /// A session's retained document was cleared (it ended): its player goes idle.
    pub fn on_session_cleared(&mut self, session_key: &str, now_ms: u64) -> Vec<PlayerOutput> {
        self.expiry_changed = true;
        let mut out = Vec::new();
        for (player, record) in &mut self.by_segment {
            if record.next_session.as_deref() == Some(session_key) {
                record.next_session = None;
            }
            if record.session_key.as_deref() == Some(session_key) && Self::session_ended(record) {
                record.last_seen_ms = now_ms;
                record.shown = None;
                out.push(PlayerOutput::State { player: player.clone(), doc: idle_document(record) });
            }
        }
        out
    }

    /// After a `/status/sessions` snapshot: every player whose session is not among `active` (session key →
    /// machineIdentifier of its player, when known) is idle — also when its old session key now belongs to
    /// another player (PMS reuses keys after a restart) — unless the newer session that started on it is active.
    pub fn settle(&mut self, active: &HashMap<String, Option<String>>) -> Vec<PlayerOutput> {
        self.expiry_changed = true;
        let mut out = Vec::new();
        for (player, record) in &mut self.by_segment {
            let on_this_player = |key: &String| {
                active.get(key).is_some_and(|on| {
                    on.as_deref().is_none_or(|machine_identifier| machine_identifier == record.machine_identifier)
                })
            };
            let playing = record.session_key.as_ref().is_some_and(on_this_player);
            let next_active = record.next_session.as_ref().is_some_and(on_this_player);
            if !next_active {
                record.next_session = None;
            }
            if !playing && next_active {
                record.session_key = record.next_session.take();
                continue;
            }
            if !playing && record.state != "idle" {
                record.session_key = None;
                record.state = "idle".to_owned();
                record.shown = None;
                out.push(PlayerOutput::State { player: player.clone(), doc: idle_document(record) });
            }
        }
        out
    }

    /// Whether `doc`, retained on the state topic of `player`, is a player state this bridge wrote: its player's
    /// machineIdentifier folds to that topic level.
    pub fn is_own_state(player: &str, doc: &Value) -> bool {
        doc["player"]["machine_identifier"].as_str().is_some_and(|id| !id.is_empty() && player_segment(id) == player)
    }

    /// Takes over a player from the retained state an earlier run left (`doc`), unless it has expired since.
    pub fn restore(&mut self, player: &str, doc: &Value, now_ms: u64) -> Vec<PlayerOutput> {
        self.expiry_changed = true;
        if self.by_segment.contains_key(player) {
            return Vec::new(); // seen in this run already: what it says now wins
        }
        if !Self::is_own_state(player, doc) {
            return vec![PlayerOutput::Remove { player: player.to_owned() }];
        }
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let record = PlayerRecord {
            machine_identifier: text(&doc["player"]["machine_identifier"]),
            title: text(&doc["player"]["name"]),
            product: text(&doc["player"]["product"]),
            platform: text(&doc["player"]["platform"]),
            // A time in the future (a clock stepped back, or a document not written by this bridge) counts as now.
            last_seen_ms: doc["last_seen_ms"].as_u64().unwrap_or(now_ms).min(now_ms),
            session_key: doc["attributes"]["session_key"].as_str().map(str::to_owned),
            next_session: None,
            state: text(&doc["state"]),
            thumb: None,
            shown: None,
            shown_at_ms: 0,
        };
        if self.expired(&record, now_ms) {
            return vec![PlayerOutput::Remove { player: player.to_owned() }];
        }
        let mut out = vec![PlayerOutput::Announce { player: player.to_owned() }];
        if record.state == "idle" || record.state.is_empty() {
            // Held by this run from now on (a playing one is settled by the next snapshot).
            out.push(PlayerOutput::State { player: player.to_owned(), doc: idle_document(&record) });
        }
        self.by_segment.insert(player.to_owned(), record);
        out
    }

    /// Removes the players not seen for longer than `expire_after` (none are playing: a playing player is seen).
    pub fn expire(&mut self, now_ms: u64) -> Vec<PlayerOutput> {
        self.expiry_changed = true;
        let expired: Vec<String> = self
            .by_segment
            .iter()
            .filter(|(_, record)| record.session_key.is_none() && self.expired(record, now_ms))
            .map(|(player, _)| player.clone())
            .collect();
        expired
            .into_iter()
            .map(|player| {
                self.by_segment.remove(&player);
                self.segments.retain(|_, segment| *segment != player);
                PlayerOutput::Remove { player }
            })
            .collect()
    }

    /// [`Players::next_expiry_ms`] when something changed that can move it since the last call (`None`: nothing
    /// did), so a caller that runs once per notification walks the players only when it matters.
    pub fn next_expiry_if_changed(&mut self) -> Option<Option<u64>> {
        std::mem::take(&mut self.expiry_changed).then(|| self.next_expiry_ms())
    }

    /// When the next player expires (ms), if any can: the caller wakes then to call [`Players::expire`].
    pub fn next_expiry_ms(&self) -> Option<u64> {
        let after = self.expire_after?.as_millis() as u64;
        self.by_segment
            .values()
            .filter(|record| record.session_key.is_none())
            .map(|record| record.last_seen_ms.saturating_add(after).saturating_add(1))
            .min()
    }

    fn expired(&self, record: &PlayerRecord, now_ms: u64) -> bool {
        self.expire_after.is_some_and(|after| record.last_seen_ms.saturating_add(after.as_millis() as u64) < now_ms)
    }
}

fn identity(record: &PlayerRecord) -> Value {
    json!({
        "machine_identifier": record.machine_identifier,
        "name": record.title,
        "product": record.product,
        "platform": record.platform,
    })
}

/// RFC 3339; a time humantime cannot format (past the year 9999) gives an empty text, never a panic.
fn last_seen(record: &PlayerRecord) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    let at = UNIX_EPOCH + Duration::from_millis(record.last_seen_ms);
    if write!(text, "{}", humantime::format_rfc3339_seconds(at)).is_err() {
        text.clear();
    }
    text
}

fn idle_document(record: &PlayerRecord) -> Value {
    json!({
        "state": "idle",
        "title": "",
        "user": "",
        "attributes": {},
        "player": identity(record),
        "last_seen": last_seen(record),
        "last_seen_ms": record.last_seen_ms,
    })
}

/// The player's state while a session plays on it, from the session's document.
fn state_document(record: &PlayerRecord, session: &Value) -> Value {
    let media = &session["media"];
    let transcode = &session["transcode"];
    let decision = if transcode.is_null() {
        "direct play"
    } else if transcode["video_decision"] == "transcode" || transcode["audio_decision"] == "transcode" {
        "transcode"
    } else {
        "direct stream"
    };
    let title = media["display_title"].as_str().or(media["title"].as_str()).unwrap_or_default();
    let user = session["user"]["name"].as_str().unwrap_or_default();
    json!({
        "state": record.state,
        "title": title,
        "user": user,
        "attributes": {
            "user": user,
            "media_type": media["type"],
            "title": media["title"],
            "show": media["grandparent_title"],
            "season": media["parent_index"],
            "episode": media["index"],
            "year": media["year"],
            "progress_percent": session["progress_percent"],
            "position_ms": session["view_offset_ms"],
            "duration_ms": media["duration_ms"],
            "transcode_decision": decision,
            "bandwidth_kbps": session["bandwidth_kbps"],
            "local": session["player"]["local"],
            "session_key": session["session_key"],
        },
        "player": identity(record),
        "last_seen": last_seen(record),
        "last_seen_ms": record.last_seen_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(key: &str, player: &str, state: &str, title: &str, thumb: &str) -> Value {
        json!({
            "session_key": key,
            "state": state,
            "user": { "name": "alice" },
            "player": { "machine_identifier": player, "name": format!("TV {player}"), "product": "Plex for LG", "platform": "webOS", "local": true },
            "media": { "type": "movie", "title": title, "display_title": title, "thumb": thumb, "duration_ms": 1000 },
            "view_offset_ms": 10,
            "progress_percent": 1.0,
        })
    }

    fn states(out: &[PlayerOutput]) -> Vec<(String, String)> {
        out.iter()
            .filter_map(|o| match o {
                PlayerOutput::State { player, doc } => Some((player.clone(), doc["state"].as_str()?.to_owned())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_player_is_announced_follows_its_session_and_goes_idle() {
        let mut players = Players::new(None);
        let out = players.on_session(&session("1", "TV-1", "playing", "Arrival", "/t/1"), 1_000);
        assert!(out.contains(&PlayerOutput::Announce { player: "tv-1".into() }));
        assert!(out.contains(&PlayerOutput::Artwork { player: "tv-1".into(), thumb: "/t/1".into() }));
        assert_eq!(states(&out), [("tv-1".to_owned(), "playing".to_owned())]);
        let again = players.on_session(&session("1", "TV-1", "paused", "Arrival", "/t/1"), 2_000);
        assert_eq!(again.len(), 1, "same player, same artwork: only the state");
        let cleared = players.on_session_cleared("1", 3_000);
        let PlayerOutput::State { doc, .. } = &cleared[0] else { panic!("{cleared:?}") };
        assert_eq!((doc["state"].as_str(), doc["title"].as_str()), (Some("idle"), Some("")));
    }

    #[test]
    fn a_late_stop_of_an_earlier_session_leaves_the_current_one_and_reused_keys_do_not_keep_a_ghost() {
        let mut players = Players::new(None);
        players.on_session(&session("1", "p", "playing", "A", ""), 1_000);
        players.on_session(&session("2", "p", "paused", "B", ""), 2_000);
        let stop_of_1 = json!({ "event_type": "stop", "session": session("1", "p", "playing", "A", "") });
        assert!(states(&players.on_event(&stop_of_1, 3_000)).is_empty(), "session 1 is not what p shows");
        assert_eq!(players.get("p").map(|r| r.state.as_str()), Some("paused"));
        // After a PMS restart key "2" belongs to another player: p is idle.
        let active: HashMap<String, Option<String>> = [("2".to_owned(), Some("q".to_owned()))].into();
        assert_eq!(states(&players.settle(&active)), [("p".to_owned(), "idle".to_owned())]);
    }

    #[test]
    fn autoplay_the_end_of_the_previous_session_after_the_next_one_started_leaves_no_idle_moment() {
        let mut players = Players::new(None);
        players.on_session(&session("1", "TV-1", "playing", "Episode 1", ""), 1_000);
        // Episode 2's session starts on the same player; its details are still being looked up …
        players.on_session_started("TV-1", "2");
        // … when episode 1's stop (and its cleared document) arrives: no idle in between.
        let stop = json!({ "event_type": "stop", "session": session("1", "TV-1", "playing", "Episode 1", "") });
        assert!(states(&players.on_event(&stop, 2_000)).is_empty(), "no idle while the next session is on its way");
        assert!(states(&players.on_session_cleared("1", 2_000)).is_empty());
        let active: HashMap<String, Option<String>> = [("2".to_owned(), None)].into();
        assert!(states(&players.settle(&active)).is_empty(), "a snapshot that predates its details either");
        let next = players.on_session(&session("2", "TV-1", "playing", "Episode 2", ""), 2_250);
        assert_eq!(states(&next), [("tv-1".to_owned(), "playing".to_owned())]);
        // The other order (the stop first, then the next session) is an honest idle in between.
        let stop = json!({ "event_type": "stop", "session": session("2", "TV-1", "playing", "Episode 2", "") });
        assert_eq!(states(&players.on_event(&stop, 3_000)), [("tv-1".to_owned(), "idle".to_owned())]);
        // A next session that ends before it was shown does not hold the player either.
        players.on_session(&session("5", "TV-1", "playing", "Episode 5", ""), 4_500);
        players.on_session_started("TV-1", "6");
        assert!(players.on_session_cleared("6", 4_600).is_empty());
        let stop = json!({ "event_type": "stop", "session": session("5", "TV-1", "playing", "Episode 5", "") });
        assert_eq!(states(&players.on_event(&stop, 4_700)), [("tv-1".to_owned(), "idle".to_owned())]);
        // A next session that never shows up does not hold the player for ever: the next snapshot settles it.
        players.on_session(&session("3", "TV-1", "playing", "Episode 3", ""), 4_000);
        players.on_session_started("TV-1", "4");
        players.on_event(&json!({ "event_type": "stop", "session": session("3", "TV-1", "playing", "E3", "") }), 5_000);
        assert_eq!(states(&players.settle(&HashMap::new())), [("tv-1".to_owned(), "idle".to_owned())]);
    }

    #[test]
    fn hostile_restored_documents_neither_panic_nor_overwrite() {
        let mut players = Players::new(Some(Duration::from_secs(10)));
        let far_future =
            json!({ "state": "idle", "player": { "machine_identifier": "a" }, "last_seen_ms": 300_000_000_000_000u64 });
        let out = players.restore("a", &far_future, 5_000);
        assert!(matches!(out.last(), Some(PlayerOutput::State { .. })));
        assert!(players.expire(16_000).len() == 1, "counted as seen now, so it expires in time");
        let mut players = Players::new(None);
        players.on_session(&session("1", "a", "playing", "A", ""), 1_000);
        assert!(players.restore("a", &far_future, 2_000).is_empty(), "this run's state wins");
        let nameless = json!({ "session_key": "9", "state": "playing", "player": { "machine_identifier": "n" } });
        assert!(players.on_session(&nameless, 1_000).contains(&PlayerOutput::Announce { player: "n".into() }));
    }

    #[test]
    fn progress_alone_rebuilds_the_state_at_most_every_second_and_events_always_go_out() {
        let mut players = Players::new(None);
        players.on_session(&session("1", "p", "playing", "A", ""), 1_000);
        assert!(states(&players.on_session(&session("1", "p", "playing", "A", ""), 1_200)).is_empty());
        assert_eq!(states(&players.on_session(&session("1", "p", "playing", "A", ""), 2_100)).len(), 1);
        let seek = json!({ "event_type": "seek", "session": session("1", "p", "playing", "A", "") });
        let out = players.on_event(&seek, 2_200);
        assert!(out.iter().any(|o| matches!(o, PlayerOutput::Event { .. })), "{out:?}");
    }

    #[test]
    fn settle_idles_players_whose_session_is_gone_and_expiry_removes_old_ones() {
        let mut players = Players::new(Some(Duration::from_secs(10)));
        players.on_session(&session("1", "a", "playing", "A", ""), 1_000);
        players.on_session(&session("2", "b", "playing", "B", ""), 1_000);
        let active: HashMap<String, Option<String>> = [("2".to_owned(), Some("b".to_owned()))].into();
        assert_eq!(states(&players.settle(&active)), [("a".to_owned(), "idle".to_owned())]);
        assert_eq!(players.next_expiry_ms(), Some(11_001), "a expires on its own clock; b plays");
        assert!(players.expire(5_000).is_empty());
        assert!(players.expire(11_000).is_empty());
        assert_eq!(players.expire(11_001), [PlayerOutput::Remove { player: "a".into() }]);
        assert_eq!(players.next_expiry_ms(), None);
        players.on_session(&session("1", "a", "playing", "A", ""), 1_000);
        players.on_session_cleared("1", 1_000);
        assert_eq!(players.expire(20_000), [PlayerOutput::Remove { player: "a".into() }], "b still plays");
        let PlayerOutput::State { doc, .. } = &players.on_session(&session("2", "b", "playing", "B", ""), 30_000)[0]
        else {
            panic!()
        };
        let mut restored = Players::new(Some(Duration::from_secs(10)));
        assert_eq!(restored.restore("b", doc, 35_000)[0], PlayerOutput::Announce { player: "b".into() });
        assert_eq!(restored.get("b").map(|r| r.title.as_str()), Some("TV b"));
        let mut later = Players::new(Some(Duration::from_secs(10)));
        assert_eq!(later.restore("b", doc, 50_000), [PlayerOutput::Remove { player: "b".into() }]);
    }
}
