//! Playback sessions: who watches what on which player, kept true from `playing` notifications and
//! `/status/sessions` snapshots, and the derived events automations trigger on.
//!
//! Pure: every method takes the time and returns [`Effect`]s; the server's state task turns them into MQTT
//! messages. Rules (documented in the README):
//! - a new session key in a `playing` notification is a `play`; `playing`→`paused` a `pause`; `paused`→`playing`
//!   a `resume`; `stopped` a `stop`; `buffering` is transient and produces nothing;
//! - `seek` when `viewOffset` differs from what the elapsed time explains by more than [`SEEK_TOLERANCE_MS`];
//! - `scrobble` once per session when progress first reaches the threshold;
//! - a new session's first retained document, its `play` event and its entry in the summary wait (at most the
//!   configured enrichment wait, 2 s by default) for the session's user/player/title from `/status/sessions`, so
//!   no subscriber ever sees a `null` title; if the details cannot be had in time (or the look-up fails) they go
//!   out with what is known and are completed when the details arrive;
//! - a snapshot that no longer lists a session, which has not been heard of since before the snapshot was asked
//!   for, ends it (`stop`): that is how a stop missed while disconnected is repaired;
//! - sessions discovered by a snapshot (playing before the bridge connected) get their retained document but no
//!   `play` event, so a bridge restart does not replay automations.

mod session;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::model::webhook::{playback_event_name, PlaybackSnapshot};
use crate::plex::sessions::{PlayingItem, SessionInfo};
use session::{document, document_due, due_ms, queue, send_document, summary, PlayState, Tracked};

/// A jump of `viewOffset` larger than this (beyond what the elapsed time explains) is a seek.
pub const SEEK_TOLERANCE_MS: u64 = 15_000;
/// A session not heard of for this long before a snapshot was requested, and absent from it, has ended.
const ABSENCE_GRACE_MS: u64 = 2_000;
/// A session stopped this recently is not brought back by a snapshot that still lists it (PMS may list a session
/// for a moment after its stop, and a snapshot asked for before the stop can arrive after it).
const STOPPED_MEMORY_MS: u64 = 60_000;
/// The default for how long a new session waits for its details before going out without them
/// (`plex.enrichment_wait`).
pub const ENRICHMENT_WAIT_MS: u64 = 2_000;
/// A session's retained document is re-published for a change of `viewOffset` alone (steady playback) at most
/// this often; every other change (state, item, details, an event) goes out at once, and the last progress is
/// always published within this time. Subscribers (a Home Assistant sensor, its recorder) gain nothing from
/// more, and a busy server would otherwise cost one retained message per `playing` notification.
pub const PROGRESS_REFRESH_MS: u64 = 1_000;

/// What the tracker asks the publisher to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Retained document of one session.
    Session { key: String, doc: Value },
    /// The session ended: clear its retained topic.
    ClearSession { key: String },
    /// A derived playback event (not retained).
    Event(Value),
    /// The same event for the Plex-webhook-compatible topic (only with [`Tracker::with_webhooks`], and not for
    /// `seek`); it follows its [`Effect::Event`] directly, so webhook messages keep the events' order.
    Webhook(Box<PlaybackSnapshot>),
    /// A session new to the tracker plays on the player with this machineIdentifier (from the notification, before
    /// its details are known): the player's state follows its newest session, even if the previous session's
    /// end arrives later.
    Started { key: String, player: String },
    /// The retained summary changed: the caller builds it ([`Tracker::summary`]) once for a whole batch of
    /// effects, so a frame announcing n sessions costs O(n), not n summaries of up to n sessions each.
    SummaryChanged,
}

/// All sessions of one server.
#[derive(Debug)]
pub struct Tracker {
    sessions: BTreeMap<String, Tracked>,
    /// Recently stopped session keys and when they stopped.
    stopped: BTreeMap<String, u64>,
    scrobble_threshold: f64,
    /// Sessions tracked at most; new ones beyond it are left untracked (their raw notifications still flow).
    max_sessions: usize,
    /// New sessions left untracked because of `max_sessions`, in all.
    untracked: u64,
    /// How long a new session waits for its details (ms).
    enrichment_wait_ms: u64,
    /// Emit [`Effect::Webhook`]s (`webhook_compat`); off, no snapshot is ever copied.
    webhooks: bool,
}

impl Tracker {
    /// `scrobble_percent`: progress (0–100) at which `scrobble` fires; at most `max_sessions` are tracked.
    pub fn new(scrobble_percent: f64, max_sessions: usize) -> Self {
        Tracker {
            sessions: BTreeMap::new(),
            stopped: BTreeMap::new(),
            scrobble_threshold: scrobble_percent / 100.0,
            max_sessions: max_sessions.max(1),
            untracked: 0,
            enrichment_wait_ms: ENRICHMENT_WAIT_MS,
            webhooks: false,
        }
    }

    /// Whether every event also yields an [`Effect::Webhook`] (the server's `webhook_compat`).
    pub fn with_webhooks(mut self, on: bool) -> Self {
        self.webhooks = on;
        self
    }

    /// How long a new session waits for its details before its document, `play` event and summary entry go
    /// out without them.
    pub fn with_enrichment_wait(mut self, wait: Duration) -> Self {
        self.enrichment_wait_ms = wait.as_millis() as u64;
        self
    }

    /// The sessions tracked now, each with the machineIdentifier of its player once the details say it.
    pub fn session_players(&self) -> std::collections::HashMap<String, Option<String>> {
        self.sessions
            .iter()
            .map(|(key, t)| (key.clone(), t.info.as_ref().and_then(|i| i.player_machine_identifier.clone())))
            .collect()
    }

    /// New sessions not tracked so far because [`Tracker::new`]'s `max_sessions` were tracked already.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Whether a session `key` not tracked yet may be added; counts it when it may not.
    fn admits(&mut self, key: &str) -> bool {
        if self.sessions.len() < self.max_sessions || self.sessions.contains_key(key) {
            return true;
        }
        self.untracked += 1;
        false
    }

    /// Sessions tracked now.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Applies one `playing` notification item.
    pub fn on_playing(&mut self, item: &PlayingItem, now_ms: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(key) = item.session_key.clone().filter(|k| !k.is_empty()) else {
            return effects;
        };
        if item.state == "stopped" {
            self.stopped.retain(|_, at| *at + STOPPED_MEMORY_MS > now_ms);
            self.stopped.insert(key.clone(), now_ms);
            if let Some(mut tracked) = self.sessions.remove(&key) {
                if let Some(offset) = item.view_offset_ms {
                    tracked.view_offset_ms = offset;
                }
                tracked.updated_at_ms = now_ms;
                tracked.pending.push("stop");
                self.flush(&mut tracked, &mut effects);
            }
            effects.push(Effect::ClearSession { key });
            effects.push(Effect::SummaryChanged);
            return effects;
        }
        let Some(state) = PlayState::parse(&item.state) else {
            return effects;
        };
        self.stopped.remove(&key);
        if !self.admits(&key) {
            return effects;
        }
        if let Some(player) = item.player.as_ref().filter(|_| !self.sessions.contains_key(&key)) {
            effects.push(Effect::Started { key: key.clone(), player: player.clone() });
        }
        let tracked = self.sessions.entry(key.clone()).or_insert_with(|| Tracked {
            key: key.clone(),
            state,
            settled: None,
            rating_key: item.rating_key.clone(),
            player: item.player.clone(),
            view_offset_ms: item.view_offset_ms.unwrap_or(0),
            offset_at_ms: now_ms,
            info: None,
            started_at_ms: now_ms,
            updated_at_ms: now_ms,
            last_heard_ms: now_ms,
            first_hand: true,
            scrobbled: false,
            pending: vec!["play"],
            pending_since_ms: now_ms,
            document_sent_ms: None,
            document_stale: false,
        });
        let state_before = tracked.state;
        let rating_key_before = tracked.rating_key.clone();
        let is_new = tracked.pending.first() == Some(&"play") && tracked.settled.is_none();
        if tracked.rating_key.is_some() && item.rating_key.is_some() && tracked.rating_key != item.rating_key && !is_new
        {
            // The player moved on to another item within the same session: a new play.
            tracked.rating_key = item.rating_key.clone();
            tracked.info = None;
            tracked.scrobbled = false;
            queue(tracked, "play", now_ms);
            tracked.settled = None;
        }
        if tracked.rating_key.is_none() {
            tracked.rating_key = item.rating_key.clone();
        }
        if item.player.is_some() {
            tracked.player = item.player.clone();
        }
        if let Some(offset) = item.view_offset_ms {
            if !is_new {
                let elapsed = match tracked.state {
                    PlayState::Playing => now_ms.saturating_sub(tracked.offset_at_ms),
                    _ => 0,
                };
                let expected = tracked.view_offset_ms + elapsed;
                let jump = offset.abs_diff(expected);
                if jump > SEEK_TOLERANCE_MS && state != PlayState::Buffering {
                    queue(tracked, "seek", now_ms);
                }
            }
            tracked.view_offset_ms = offset;
            tracked.offset_at_ms = now_ms;
        }
        match (tracked.settled, state) {
            (Some(PlayState::Playing), PlayState::Paused) => queue(tracked, "pause", now_ms),
            (Some(PlayState::Paused), PlayState::Playing) => queue(tracked, "resume", now_ms),
            _ => {}
        }
        // Keep `seek` after a state change reported in the same notification.
        if let Some(seek) = tracked.pending.iter().position(|e| *e == "seek") {
            let event = tracked.pending.remove(seek);
            tracked.pending.push(event);
        }
        if state != PlayState::Buffering {
            tracked.settled = Some(state);
        }
        tracked.state = state;
        tracked.updated_at_ms = now_ms;
        tracked.last_heard_ms = now_ms;
        tracked.first_hand = true;
        // What the summary shows (count, states, titles) changes only with these; `viewOffset` alone does not.
        let summary_changed = tracked.document_sent_ms.is_none()
            || tracked.state != state_before
            || tracked.rating_key != rating_key_before;
        self.check_scrobble(&key, now_ms);
        self.emit_session(&key, &mut effects, now_ms, summary_changed);
        // A session still waiting for its details is not in the summary yet (see [`Tracker::summary`]).
        let announced = self.sessions.get(&key).is_some_and(|t| t.document_sent_ms.is_some());
        if summary_changed && announced {
            effects.push(Effect::SummaryChanged);
        }
        effects
    }

    /// Applies a `/status/sessions` snapshot that was requested at `requested_at_ms`.
    pub fn on_snapshot(&mut self, sessions: Vec<SessionInfo>, requested_at_ms: u64, now_ms: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let listed: HashSet<String> = sessions.iter().map(|s| s.session_key.clone()).collect();
        self.stopped.retain(|_, at| *at + STOPPED_MEMORY_MS > now_ms);
        for info in sessions {
            let key = info.session_key.clone();
            if self.stopped.contains_key(&key) || !self.admits(&key) {
                continue;
            }
            let tracked = self.sessions.entry(key.clone()).or_insert_with(|| Tracked {
                key: key.clone(),
                state: info.state.as_deref().and_then(PlayState::parse).unwrap_or(PlayState::Playing),
                settled: info.state.as_deref().and_then(PlayState::parse).filter(|s| *s != PlayState::Buffering),
                rating_key: info.rating_key.clone(),
                player: info.player_machine_identifier.clone(),
                view_offset_ms: info.view_offset_ms.unwrap_or(0),
                offset_at_ms: now_ms,
                info: None,
                started_at_ms: now_ms,
                updated_at_ms: now_ms,
                last_heard_ms: now_ms,
                first_hand: false,
                // Already past the threshold when discovered: it was (or will be) scrobbled without us.
                scrobbled: false,
                pending: Vec::new(),
                pending_since_ms: now_ms,
                document_sent_ms: None,
                document_stale: false,
            });
            if !tracked.first_hand {
                if let Some(state) = info.state.as_deref().and_then(PlayState::parse) {
                    tracked.state = state;
                    if state != PlayState::Buffering {
                        tracked.settled = Some(state);
                    }
                }
                if let Some(offset) = info.view_offset_ms {
                    tracked.view_offset_ms = offset;
                    tracked.offset_at_ms = now_ms;
                }
            }
            tracked.info = Some(info);
            tracked.updated_at_ms = now_ms;
            self.check_scrobble(&key, now_ms);
            if let Some(mut tracked) = self.sessions.remove(&key) {
                self.flush(&mut tracked, &mut effects);
                self.sessions.insert(key.clone(), tracked);
            }
            self.emit_session(&key, &mut effects, now_ms, true);
        }
        let gone: Vec<String> = self
            .sessions
            .values()
            .filter(|t| !listed.contains(&t.key) && t.last_heard_ms + ABSENCE_GRACE_MS <= requested_at_ms)
            .map(|t| t.key.clone())
            .collect();
        for key in gone {
            if let Some(mut tracked) = self.sessions.remove(&key) {
                tracked.updated_at_ms = now_ms;
                tracked.pending.push("stop");
                self.flush(&mut tracked, &mut effects);
                effects.push(Effect::ClearSession { key });
            }
        }
        effects.push(Effect::SummaryChanged);
        effects
    }

    /// The notification session reconnected: notifications may have been missed, so the next snapshot's states
    /// are adopted and sessions it does not list are ended.
    pub fn on_reconnect(&mut self) {
        for tracked in self.sessions.values_mut() {
            tracked.first_hand = false;
            tracked.last_heard_ms = 0;
        }
    }

    /// Sends events (and first documents) that waited too long for details (or all of them, after a failed
    /// look-up), with what is known.
    pub fn flush_waiting(&mut self, now_ms: u64, all: bool) -> Vec<Effect> {
        let mut effects = Vec::new();
        let wait = self.enrichment_wait_ms;
        let keys: Vec<String> = self
            .sessions
            .values()
            .filter(|t| !t.pending.is_empty() && (all || due_ms(t.pending_since_ms, wait, now_ms) <= now_ms))
            .map(|t| t.key.clone())
            .collect();
        let mut first_documents = false;
        for key in keys {
            if let Some(mut tracked) = self.sessions.remove(&key) {
                self.flush(&mut tracked, &mut effects);
                if tracked.document_sent_ms.is_none() {
                    send_document(&mut tracked, &mut effects, now_ms);
                    first_documents = true;
                }
                self.sessions.insert(key, tracked);
            }
        }
        if first_documents {
            effects.push(Effect::SummaryChanged);
        }
        effects
    }

    /// Publishes the documents whose progress-only changes were held back for [`PROGRESS_REFRESH_MS`] and are
    /// due now.
    pub fn refresh_documents(&mut self, now_ms: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        for tracked in self.sessions.values_mut() {
            if tracked.document_stale && document_due(tracked, now_ms) {
                send_document(tracked, &mut effects, now_ms);
            }
        }
        effects
    }

    /// When [`Tracker::flush_waiting`] or [`Tracker::refresh_documents`] next has something to do (ms since the
    /// epoch), so the state task sleeps until then instead of polling.
    pub fn next_deadline_ms(&self, now_ms: u64) -> Option<u64> {
        self.sessions
            .values()
            .flat_map(|t| {
                let refresh = t
                    .document_stale
                    .then(|| t.document_sent_ms.map_or(0, |at| due_ms(at, PROGRESS_REFRESH_MS, now_ms)));
                let events =
                    (!t.pending.is_empty()).then(|| due_ms(t.pending_since_ms, self.enrichment_wait_ms, now_ms));
                [refresh, events]
            })
            .flatten()
            .min()
    }

    /// Whether `item` (before [`Tracker::on_playing`] applies it) tells of something only `/status/sessions`
    /// completes: a new session (one that will be tracked), a change of state (playing ↔ paused; `buffering` is
    /// transient), item or player, or a session whose events wait for its details. Progress alone and `stopped`
    /// (the notification says all there is) do not.
    pub fn wants_look_up(&self, item: &PlayingItem) -> bool {
        let Some(key) = item.session_key.as_deref().filter(|k| !k.is_empty()) else {
            return false;
        };
        let Some(state) = PlayState::parse(&item.state) else {
            return false;
        };
        let Some(tracked) = self.sessions.get(key) else {
            return self.sessions.len() < self.max_sessions;
        };
        let changed = |now: &Option<String>, before: &Option<String>| now.is_some() && now != before;
        (state != PlayState::Buffering && tracked.settled != Some(state))
            || changed(&item.rating_key, &tracked.rating_key)
            || changed(&item.player, &tracked.player)
            || (tracked.info.is_none() && !tracked.pending.is_empty())
    }

    /// The retained summary document.
    pub fn summary(&self) -> Value {
        summary(self.sessions.values())
    }

    fn check_scrobble(&mut self, key: &str, now_ms: u64) {
        let threshold = self.scrobble_threshold;
        if let Some(t) = self.sessions.get_mut(key) {
            let duration = t.info.as_ref().and_then(|i| i.duration_ms).unwrap_or(0);
            if !t.scrobbled && duration > 0 && t.view_offset_ms as f64 >= duration as f64 * threshold {
                t.scrobbled = true;
                queue(t, "scrobble", now_ms);
            }
        }
    }

    /// Sends the session's waiting events (once its details are known) and its document: at once when
    /// `changed` or an event went out, otherwise (progress only) at most every [`PROGRESS_REFRESH_MS`].
    fn emit_session(&mut self, key: &str, effects: &mut Vec<Effect>, now_ms: u64, changed: bool) {
        if let Some(mut tracked) = self.sessions.remove(key) {
            let mut changed = changed;
            if tracked.info.is_some() && !tracked.pending.is_empty() {
                self.flush(&mut tracked, effects);
                changed = true;
            }
            let waiting_for_details = tracked.info.is_none() && tracked.document_sent_ms.is_none();
            if waiting_for_details && !tracked.pending.is_empty() && self.enrichment_wait_ms > 0 {
                // Held until the details arrive or the wait is over ([`Tracker::flush_waiting`]).
                self.sessions.insert(key.to_owned(), tracked);
                return;
            }
            if changed || !tracked.pending.is_empty() || document_due(&tracked, now_ms) {
                send_document(&mut tracked, effects, now_ms);
            } else {
                tracked.document_stale = true;
            }
            self.sessions.insert(key.to_owned(), tracked);
        }
    }

    fn flush(&self, tracked: &mut Tracked, effects: &mut Vec<Effect>) {
        if tracked.pending.is_empty() {
            return;
        }
        let doc = document(tracked);
        for event in tracked.pending.drain(..) {
            let mut session = doc.clone();
            if event == "stop" {
                session["state"] = json!("stopped");
            }
            effects.push(Effect::Event(json!({ "event_type": event, "action": event, "session": session })));
            if let Some(name) = playback_event_name(event).filter(|_| self.webhooks) {
                effects.push(Effect::Webhook(Box::new(PlaybackSnapshot {
                    event: name,
                    info: tracked.info.clone(),
                    rating_key: tracked.rating_key.clone(),
                    view_offset_ms: tracked.view_offset_ms,
                })));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(state: &str, offset: u64) -> PlayingItem {
        PlayingItem {
            session_key: Some("7".into()),
            rating_key: Some("100".into()),
            state: state.into(),
            view_offset_ms: Some(offset),
            player: Some("tv".into()),
        }
    }

    fn info(state: &str) -> SessionInfo {
        SessionInfo {
            session_key: "7".into(),
            state: Some(state.into()),
            user_name: Some("alice".into()),
            player_name: Some("TV".into()),
            title: Some("Arrival".into()),
            duration_ms: Some(100_000),
            ..SessionInfo::default()
        }
    }

    fn events(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Event(v) => Some(v["event_type"].as_str().unwrap_or_default().to_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn play_waits_for_details_then_transitions_follow() {
        let mut t = Tracker::new(90.0, 1000);
        let first = t.on_playing(&item("playing", 0), 1_000);
        assert!(events(&first).is_empty(), "play waits for the session details");
        let enriched = t.on_snapshot(vec![info("playing")], 1_000, 1_300);
        assert_eq!(events(&enriched), ["play"]);
        let Effect::Event(play) = enriched.iter().find(|e| matches!(e, Effect::Event(_))).unwrap() else { panic!() };
        assert_eq!(play["session"]["user"]["name"], "alice");
        assert_eq!(events(&t.on_playing(&item("buffering", 1_000), 2_000)), Vec::<String>::new());
        assert_eq!(events(&t.on_playing(&item("playing", 2_000), 3_000)), Vec::<String>::new());
        assert_eq!(events(&t.on_playing(&item("paused", 3_000), 4_000)), ["pause"]);
        assert_eq!(events(&t.on_playing(&item("paused", 3_000), 14_000)), Vec::<String>::new());
        assert_eq!(events(&t.on_playing(&item("playing", 3_000), 15_000)), ["resume"]);
        assert_eq!(events(&t.on_playing(&item("playing", 60_000), 16_000)), ["seek"]);
        assert_eq!(events(&t.on_playing(&item("playing", 91_000), 17_000)), ["seek", "scrobble"]);
        assert_eq!(events(&t.on_playing(&item("playing", 95_000), 21_000)), Vec::<String>::new(), "one scrobble");
        let stop = t.on_playing(&item("stopped", 95_000), 22_000);
        assert_eq!(events(&stop), ["stop"]);
        assert!(stop.contains(&Effect::ClearSession { key: "7".into() }));
        assert!(t.is_empty());
        assert_eq!(t.summary()["count"], 0);
    }

    #[test]
    fn a_snapshot_does_not_bring_back_a_session_that_just_stopped() {
        let mut t = Tracker::new(90.0, 1000);
        t.on_playing(&item("playing", 0), 0);
        t.on_snapshot(vec![info("playing")], 0, 10);
        t.on_playing(&item("stopped", 0), 1_000);
        let late = t.on_snapshot(vec![info("playing")], 900, 1_100);
        assert!(events(&late).is_empty());
        assert!(t.is_empty(), "no ghost session");
        // A new playing notification for the key is a new session.
        t.on_playing(&item("playing", 0), 2_000);
        assert_eq!(events(&t.on_snapshot(vec![info("playing")], 2_000, 2_100)), ["play"]);
    }

    #[test]
    fn normal_progress_is_not_a_seek() {
        let mut t = Tracker::new(90.0, 1000);
        t.on_playing(&item("playing", 0), 0);
        t.on_snapshot(vec![info("playing")], 0, 10);
        assert!(events(&t.on_playing(&item("playing", 10_000), 10_000)).is_empty());
        assert!(events(&t.on_playing(&item("playing", 20_500), 20_000)).is_empty());
    }

    #[test]
    fn a_session_missing_from_a_later_snapshot_is_stopped() {
        let mut t = Tracker::new(90.0, 1000);
        t.on_playing(&item("playing", 0), 0);
        t.on_snapshot(vec![info("playing")], 0, 10);
        let effects = t.on_snapshot(Vec::new(), 60_000, 60_100);
        assert_eq!(events(&effects), ["stop"]);
        assert!(effects.contains(&Effect::ClearSession { key: "7".into() }));
        // But not one heard of just now (the snapshot may predate it).
        t.on_playing(&item("playing", 0), 70_000);
        assert!(events(&t.on_snapshot(Vec::new(), 69_500, 70_100)).is_empty());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn discovered_sessions_get_a_document_but_no_play_event() {
        let mut t = Tracker::new(90.0, 1000);
        let effects = t.on_snapshot(vec![info("paused")], 0, 5);
        assert!(events(&effects).is_empty());
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::Session { key, doc } if key == "7" && doc["state"] == "paused")));
        assert_eq!(events(&t.on_playing(&item("playing", 0), 10)), ["resume"]);
    }

    fn documents(effects: &[Effect]) -> Vec<(String, u64)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Session { doc, .. } => {
                    Some((doc["state"].as_str().unwrap_or_default().to_owned(), doc["view_offset_ms"].as_u64()?))
                }
                _ => None,
            })
            .collect()
    }

    fn has_summary(effects: &[Effect]) -> bool {
        effects.iter().any(|e| matches!(e, Effect::SummaryChanged))
    }

    #[test]
    fn progress_alone_is_published_at_most_once_per_interval_and_never_lost() {
        let mut t = Tracker::new(90.0, 1000);
        t.on_playing(&item("playing", 0), 0);
        t.on_snapshot(vec![info("playing")], 0, 10);
        assert_eq!(t.next_deadline_ms(20), None, "nothing waits");
        let held = t.on_playing(&item("playing", 300), 300);
        assert!(documents(&held).is_empty() && !has_summary(&held), "{held:?}");
        assert_eq!(t.next_deadline_ms(300), Some(10 + PROGRESS_REFRESH_MS));
        assert!(t.refresh_documents(500).is_empty(), "not due yet");
        assert_eq!(documents(&t.refresh_documents(10 + PROGRESS_REFRESH_MS)), [("playing".into(), 300)]);
        assert_eq!(t.next_deadline_ms(1_010), None);
        // Within the interval of that refresh, held again; once it has passed, progress goes out at once.
        assert!(documents(&t.on_playing(&item("playing", 1_300), 1_300)).is_empty());
        assert_eq!(documents(&t.on_playing(&item("playing", 2_010), 2_010)), [("playing".into(), 2_010)]);
        // A state change goes out at once, with the summary, however recent the last document.
        let paused = t.on_playing(&item("paused", 2_100), 2_100);
        assert_eq!(documents(&paused), [("paused".into(), 2_100)]);
        assert!(has_summary(&paused));
        assert_eq!(events(&paused), ["pause"]);
        let unchanged = t.on_playing(&item("paused", 2_100), 2_200);
        assert!(!has_summary(&unchanged), "the summary is not rebuilt when nothing it shows changed");
    }

    #[test]
    fn a_clock_stepped_back_does_not_hold_documents_back() {
        let mut t = Tracker::new(90.0, 1000);
        t.on_playing(&item("playing", 0), 10_000);
        t.on_snapshot(vec![info("playing")], 10_000, 10_000);
        // The wall clock is stepped back by 5 s (NTP after boot): held progress is due at once, not in 5 s.
        let after_step = t.on_playing(&item("playing", 500), 5_000);
        assert_eq!(documents(&after_step), [("playing".into(), 500)]);
        t.on_playing(&item("playing", 600), 5_100);
        assert_eq!(t.next_deadline_ms(5_100), Some(5_000 + PROGRESS_REFRESH_MS));
        assert_eq!(t.next_deadline_ms(4_000), Some(4_000), "stepped back again: due now");
        assert_eq!(documents(&t.refresh_documents(4_000)), [("playing".into(), 600)]);
    }

    fn webhooks(effects: &[Effect]) -> Vec<&'static str> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Webhook(snapshot) => Some(snapshot.event),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn webhook_snapshots_follow_their_events_only_when_asked_for() {
        let mut off = Tracker::new(90.0, 1000);
        off.on_playing(&item("playing", 0), 0);
        assert!(webhooks(&off.on_snapshot(vec![info("playing")], 0, 10)).is_empty(), "off by default");

        let mut t = Tracker::new(90.0, 1000).with_webhooks(true);
        t.on_playing(&item("playing", 0), 0);
        let play = t.on_snapshot(vec![info("playing")], 0, 10);
        assert_eq!(webhooks(&play), ["media.play"]);
        let position = |effects: &[Effect], f: fn(&Effect) -> bool| effects.iter().position(f);
        assert_eq!(
            position(&play, |e| matches!(e, Effect::Event(_))).map(|i| i + 1),
            position(&play, |e| matches!(e, Effect::Webhook(_))),
            "right after its event"
        );
        let Some(Effect::Webhook(snapshot)) = play.iter().find(|e| matches!(e, Effect::Webhook(_))) else { panic!() };
        assert_eq!(snapshot.info.as_ref().and_then(|i| i.title.as_deref()), Some("Arrival"));
        assert_eq!(webhooks(&t.on_playing(&item("paused", 1_000), 1_000)), ["media.pause"]);
        assert_eq!(webhooks(&t.on_playing(&item("playing", 1_000), 2_000)), ["media.resume"]);
        assert!(webhooks(&t.on_playing(&item("playing", 60_000), 3_000)).is_empty(), "no webhook for seek");
        assert_eq!(webhooks(&t.on_playing(&item("playing", 95_000), 4_000)), ["media.scrobble"]);
        assert_eq!(webhooks(&t.on_playing(&item("stopped", 95_000), 5_000)), ["media.stop"]);
    }

    #[test]
    fn events_go_out_without_details_when_the_look_up_fails() {
        let mut t = Tracker::new(90.0, 1000);
        t.on_playing(&item("playing", 0), 0);
        assert!(t.flush_waiting(1_000, false).is_empty());
        assert_eq!(events(&t.flush_waiting(ENRICHMENT_WAIT_MS, false)), ["play"]);
        t.on_playing(&item("paused", 0), ENRICHMENT_WAIT_MS + 1);
        assert_eq!(events(&t.flush_waiting(ENRICHMENT_WAIT_MS + 2, true)), ["pause"]);
    }

    #[test]
    fn only_what_a_notification_does_not_carry_wants_a_look_up() {
        let mut t = Tracker::new(90.0, 1);
        assert!(t.wants_look_up(&item("playing", 0)), "a new session");
        t.on_playing(&item("playing", 0), 0);
        assert!(t.wants_look_up(&item("playing", 1_000)), "its play still waits for details");
        t.on_snapshot(vec![info("playing")], 0, 10);
        assert!(!t.wants_look_up(&item("playing", 1_000)), "progress alone");
        assert!(!t.wants_look_up(&item("buffering", 1_000)), "buffering is transient");
        assert!(!t.wants_look_up(&item("stopped", 1_000)), "a stop says all there is");
        assert!(t.wants_look_up(&item("paused", 1_000)), "a state change");
        let other_item = PlayingItem { rating_key: Some("101".into()), ..item("playing", 0) };
        assert!(t.wants_look_up(&other_item), "another item");
        let other_player = PlayingItem { player: Some("phone".into()), ..item("playing", 1_000) };
        assert!(t.wants_look_up(&other_player), "another player");
        let unnamed = PlayingItem { player: None, ..item("playing", 1_000) };
        assert!(!t.wants_look_up(&unnamed), "a notification without clientIdentifier changes no player");
        let beyond_the_cap = PlayingItem { session_key: Some("8".into()), ..item("playing", 0) };
        assert!(!t.wants_look_up(&beyond_the_cap), "a session the cap leaves untracked gains nothing from it");
    }
}
