//! The state task of one server: playback sessions, library events and the resync that keeps retained state
//! true after reconnects.
//!
//! It runs beside the notification session and never blocks it: the session hands over notifications with
//! `try_send` (a full queue drops the enrichment input, never the raw event, which is already published), and
//! every REST call runs in its own task ([`super::lookups`]) whose result comes back as a message. When
//! `/status/sessions` is read, and when a failed look-up is tried again, is [`super::lookup_timing`]'s business.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::activities::{ActivityChange, RunningActivities};
use super::lookup_timing::{Failure, Retry, SessionsSchedule};
use super::lookups::{now_ms, Fetched, Lookups};
use super::player_side::PlayerSide;
use crate::config::PlayersConfig;
use crate::discovery::Discovery;
use crate::model::library::{added_event, item_from_metadata, Library, LibraryChange};
use crate::model::playback::Tracker;
use crate::model::players::Players;
use crate::mqtt::outbox::Action;
use crate::mqtt::Publisher;
use crate::plex::fields::Fields;
use crate::plex::http::{PlexHttp, ServerIdentity};
use crate::plex::notification::Notification;
use crate::plex::sessions::{parse_sessions_with, PlayingItem};
use crate::plex::PlexError;
use crate::topic::{BridgeTopics, ServerName, ServerTopics};

/// `playing` items handled between two yields to the other tasks of the runtime (see the `playing` arm).
const ITEMS_BETWEEN_YIELDS: usize = 256;
/// The look-ups whose problems `/healthz` shows, one each, under these names. Sessions and activities retry on
/// timers of their own; metadata and artwork are asked again by the next notification that needs them.
const SESSIONS: &str = "/status/sessions";
const ACTIVITIES: &str = "/activities";
const METADATA: &str = "/library/metadata";
const ARTWORK: &str = "artwork";
/// Inputs waiting for the state task; beyond this, enrichment input is dropped (and logged).
pub const QUEUE: usize = 1024;
/// The activities summary is re-published for progress, title or subtitle changes at most this often (a scan
/// reports every file it looks at); an activity that starts or ends is published at once.
pub const ACTIVITIES_REFRESH: Duration = Duration::from_millis(crate::model::playback::PROGRESS_REFRESH_MS);

/// What the session (and the supervisor) tell the state task.
#[derive(Debug)]
pub enum StateInput {
    /// A notification of a type the state task follows (`playing`, `timeline`, `activity`).
    Notification(Notification),
    /// The notification session is (re)connected: reconcile everything with the server, with topic name `name`
    /// and identity `identity` (for its players' devices).
    Connected { topics: ServerTopics, name: ServerName, identity: ServerIdentity },
}

/// Transcoder notifications: a transcode that starts or ends changes a session's details (decision, bandwidth),
/// which only `/status/sessions` tells. (`transcodeSession.update`, every few seconds, is left to the periodic
/// read for progress.)
const TRANSCODE_CHANGES: [&str; 3] = ["transcodeSession.start", "transcodeSession.end", "transcode.end"];

/// Whether the state task follows notifications of type `kind` (the forwarder hands it only those): playback,
/// activities, and the transcoder changes above.
pub fn follows(kind: &str) -> bool {
    matches!(kind, "playing" | "timeline" | "activity") || TRANSCODE_CHANGES.contains(&kind)
}

/// Everything the state task needs.
pub struct StateTask {
    pub http: PlexHttp,
    pub publisher: Publisher,
    pub scrobble_percent: f64,
    /// Sessions tracked at most (`plex.max_sessions`).
    pub max_sessions: usize,
    pub resync_interval: Duration,
    /// How long a new session waits for its details (`plex.enrichment_wait`).
    pub enrichment_wait: Duration,
    pub players: PlayersConfig,
    /// Home Assistant discovery, when enabled (for the players' devices).
    pub discovery: Option<Discovery>,
    pub bridge_topics: BridgeTopics,
    /// Player verbs allowed as commands (empty when commands are off): a button each on player devices.
    pub player_commands: Vec<crate::command_verb::Verb>,
    /// Also publish Plex-webhook-shaped messages on `<p>/<server>/webhook` (the server's `webhook_compat`).
    pub webhook_compat: bool,
    /// The server's health record (failed look-ups are shown there).
    pub health: crate::telemetry::health::ServerHealth,
}

impl StateTask {
    /// Runs until `cancel`; `inputs` come from the supervisor.
    pub async fn run(self, mut inputs: mpsc::Receiver<StateInput>, cancel: CancellationToken) {
        let mut lookups = Lookups::new(self.http.clone(), self.publisher.clone());
        let mut tracker = Tracker::new(self.scrobble_percent, self.max_sessions)
            .with_enrichment_wait(self.enrichment_wait)
            .with_webhooks(self.webhook_compat);
        let mut side = PlayerSide::new(
            Players::new(self.players.expire_after),
            self.publisher.clone(),
            self.discovery.clone(),
            self.bridge_topics.clone(),
            self.players.artwork,
            self.player_commands.clone(),
        );
        let mut library = Library::new();
        let mut activities = RunningActivities::default();
        let mut topics: Option<ServerTopics> = None;
        let mut sessions = SessionsSchedule::default();
        let mut activities_retry = Retry::default();
        // Whether the session cap's overflow has been logged since the tracker last had room.
        let mut untracked_reported = false;
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let resync = tokio::time::sleep(self.resync_interval);
        tokio::pin!(resync);
        // The timers live across iterations and are moved only when their deadline changes: this loop runs once
        // per followed notification, and a timer registered and dropped every time was a visible cost.
        let mut players_due: Option<Instant> = None;
        let fetch_timer = sleep_until(far);
        let activities_retry_timer = sleep_until(far);
        let state_timer = sleep_until(far);
        // Made once, like the timers: a new cancellation future per input registers and drops a waiter.
        let cancelled = cancel.cancelled();
        tokio::pin!(fetch_timer, activities_retry_timer, state_timer, cancelled);
        // When the activities summary held back by ACTIVITIES_REFRESH is due, and when it was last published.
        let mut activities_due: Option<Instant> = None;
        let mut activities_sent = Instant::now().checked_sub(ACTIVITIES_REFRESH).unwrap_or_else(Instant::now);
        loop {
            let fetch_due = sessions.next().unwrap_or(far);
            let activities_retry_due = activities_retry.due().unwrap_or(far);
            // No periodic tick: the task sleeps until the tracker or the activities summary has something due.
            // The deadline is absolute (now + what remains), so a steady stream of inputs cannot push it back; a
            // deadline already passed fires at once, and firing clears whatever made it due.
            let now = now_ms();
            let at = |due: u64| Instant::now() + Duration::from_millis(due.saturating_sub(now));
            let tracker_due = tracker.next_deadline_ms(now).map(at);
            // Players expire on their own clock (`players.expire_after`), not only at the next resync; when the
            // next one is due is looked up again only after a player changed (it walks every player).
            if let Some(next) = topics.as_ref().and_then(|_| side.players.next_expiry_if_changed()) {
                players_due = next.map(at);
            }
            let state_due = tracker_due.into_iter().chain(activities_due).chain(players_due).min().unwrap_or(far);
            move_timer(fetch_timer.as_mut(), fetch_due);
            move_timer(activities_retry_timer.as_mut(), activities_retry_due);
            move_timer(state_timer.as_mut(), state_due);
            tokio::select! {
                () = &mut cancelled => return,
                input = inputs.recv() => match input {
                    None => return,
                    Some(StateInput::Connected { topics: server_topics, name, identity }) => {
                        side.server = Some((name, identity));
                        self.publish_activities(&server_topics, &activities);
                        topics = Some(server_topics);
                        tracker.on_reconnect();
                        sessions.now();
                        activities_retry.started();
                        lookups.activities();
                    }
                    Some(StateInput::Notification(notification)) => {
                        let Some(topics) = &topics else { continue };
                        match notification.kind.as_str() {
                            "playing" => {
                                let untracked_before = tracker.untracked();
                                let mut effects = Vec::new();
                                let mut summary_changed = false;
                                let mut look_up = false;
                                let now = now_ms();
                                let items = notification.items.iter().filter_map(|raw| PlayingItem::parse(raw));
                                for (index, item) in items.enumerate() {
                                    look_up |= tracker.wants_look_up(&item);
                                    effects.extend(tracker.on_playing(&item, now));
                                    // A frame may announce thousands of sessions: hand over what is done and let
                                    // the other tasks (the health endpoint, the publisher) run now and then.
                                    if (index + 1) % ITEMS_BETWEEN_YIELDS == 0 {
                                        summary_changed |= self.publish_effects(topics, std::mem::take(&mut effects), &mut side);
                                        tokio::task::yield_now().await;
                                    }
                                }
                                summary_changed |= self.publish_effects(topics, effects, &mut side);
                                if summary_changed {
                                    self.publish_summary(topics, &tracker);
                                }
                                self.report_untracked(&mut untracked_reported, untracked_before, &tracker);
                                if look_up {
                                    sessions.changed();
                                } else if !tracker.is_empty() {
                                    sessions.progressed();
                                }
                            }
                            kind if TRANSCODE_CHANGES.contains(&kind) && !tracker.is_empty() => sessions.changed(),
                            "timeline" => {
                                for raw in &notification.items {
                                    match library.on_timeline(raw) {
                                        Some(LibraryChange::Added { item_id, fallback }) => {
                                            lookups.metadata(item_id, fallback);
                                        }
                                        Some(LibraryChange::Event(event)) => self.library_event(topics, event),
                                        None => {}
                                    }
                                }
                            }
                            "activity" => {
                                let now = now_ms();
                                // Each item is read once, for the running activities and the library events alike.
                                let read: Vec<(Fields<'_>, Fields<'_>)> = notification
                                    .items
                                    .iter()
                                    .filter_map(|raw| {
                                        let item = Fields::parse(raw)?;
                                        let activity = item.object("Activity")?;
                                        Some((item, activity))
                                    })
                                    .collect();
                                let change = read.iter().map(|(item, activity)| activities.apply_fields(item, activity, now)).max();
                                match change {
                                    Some(ActivityChange::StartedOrEnded) => {
                                        self.publish_activities(topics, &activities);
                                        activities_sent = Instant::now();
                                        activities_due = None;
                                    }
                                    Some(ActivityChange::Progress) if activities_due.is_none() => {
                                        activities_due = Some(activities_sent + ACTIVITIES_REFRESH);
                                    }
                                    _ => {}
                                }
                                for (item, activity) in &read {
                                    if let Some(LibraryChange::Event(event)) = library.on_activity_fields(item, activity) {
                                        self.library_event(topics, event);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                },
                () = &mut fetch_timer => {
                    sessions.started();
                    lookups.sessions();
                }
                () = &mut activities_retry_timer => {
                    activities_retry.started();
                    lookups.activities();
                }
                Some(result) = lookups.next() => {
                    let Some(topics) = &topics else { continue };
                    match result {
                        Fetched::Sessions { requested_at_ms, result } => {
                            // Only from the complete start-up read of the broker (it waits for the broker itself).
                            if !side.restored && self.publisher.stale_scan_done(Duration::ZERO).await {
                                side.restored = true;
                                side.restore(topics);
                            }
                            match result.and_then(|body| parse_sessions_with(&body, self.webhook_compat).map_err(|e| PlexError::Decode(format!("/status/sessions: {e}")))) {
                                Ok(list) => {
                                    tracing::debug!(sessions = list.len(), "read /status/sessions");
                                    sessions.answered();
                                    self.record_look_up(SESSIONS, None, None);
                                    let untracked_before = tracker.untracked();
                                    let effects = tracker.on_snapshot(list, requested_at_ms, now_ms());
                                    self.apply(topics, effects, &tracker, &mut side);
                                    let settled = side.players.settle(&tracker.session_players());
                                    side.publish(topics, settled);
                                    self.report_untracked(&mut untracked_reported, untracked_before, &tracker);
                                    self.clear_stale_sessions(topics);
                                }
                                Err(error) => {
                                    let failure = sessions.failed(error.reason());
                                    self.failed_look_up(SESSIONS, &error, failure,
                                        "raw events still flow, details follow when it answers");
                                    let effects = tracker.flush_waiting(now_ms(), true);
                                    self.apply(topics, effects, &tracker, &mut side);
                                }
                            }
                        }
                        Fetched::Activities { requested_at_ms, result } => match result {
                            Ok(body) => {
                                activities_retry.succeeded();
                                self.record_look_up(ACTIVITIES, None, None);
                                if self.reconcile_activities(topics, &body, &mut activities, requested_at_ms) {
                                    self.publish_activities(topics, &activities);
                                }
                            }
                            Err(error) => {
                                let failure = activities_retry.failed(error.reason());
                                self.failed_look_up(ACTIVITIES, &error, failure,
                                    "activities follow the notifications meanwhile");
                            }
                        },
                        Fetched::Metadata { item_id, fallback, result } => {
                            self.record_look_up(METADATA, result.as_ref().err(), None);
                            // Parsed once, for the item_added event and (webhook_compat) library.new alike.
                            let body: Option<serde_json::Value> = match result {
                                Ok(bytes) => serde_json::from_slice(&bytes).ok(),
                                Err(error) => {
                                    tracing::warn!(%error, item_id, "cannot read the new item's metadata; announcing it with what the timeline said");
                                    None
                                }
                            };
                            let parsed = body.as_ref().and_then(|body| item_from_metadata(body, &item_id));
                            let webhook = self.webhook_compat.then(|| {
                                let server = side.server.as_ref().map(|(_, identity)| identity);
                                body.as_ref()
                                    .and_then(|body| crate::model::webhook::library_new(body, server))
                                    .unwrap_or_else(|| crate::model::webhook::library_new_from_summary(&fallback, server))
                            });
                            self.library_event(topics, added_event(parsed.unwrap_or(fallback)));
                            if let Some(webhook) = webhook {
                                self.publisher.apply([Action::Live { topic: topics.webhook(), payload: Bytes::from(webhook.to_string()) }]);
                            }
                        }
                        Fetched::Artwork { player, thumb, result } => {
                            self.record_look_up(ARTWORK, result.as_ref().err(), None);
                            match result {
                                Ok(image) => side.artwork_fetched(topics, &player, &thumb, image),
                                Err(error) => tracing::warn!(%error, player, "cannot fetch the artwork of what a player shows; its image stays as it was"),
                            }
                        }
                    }
                }
                () = &mut state_timer => {
                    let now = now_ms();
                    let mut effects = tracker.flush_waiting(now, false);
                    effects.extend(tracker.refresh_documents(now));
                    if activities_due.is_some_and(|due| due <= Instant::now()) {
                        activities_due = None;
                        if let Some(topics) = &topics {
                            self.publish_activities(topics, &activities);
                            activities_sent = Instant::now();
                        }
                    }
                    if let Some(topics) = topics.as_ref().filter(|_| !effects.is_empty()) {
                        self.apply(topics, effects, &tracker, &mut side);
                    }
                    if let Some(topics) = topics.as_ref().filter(|_| players_due.is_some_and(|due| due <= Instant::now())) {
                        let expired = side.players.expire(now);
                        side.publish(topics, expired);
                        // `expire` marks the players changed: the next pass looks up the next one due.
                        players_due = None;
                    }
                }
                () = &mut resync => {
                    resync.as_mut().reset(Instant::now() + self.resync_interval);
                    if topics.is_some() {
                        sessions.now();
                        activities_retry.started();
                        lookups.activities();
                    }
                }
            }
            side.fetch_artwork(&mut lookups);
        }
    }

    /// Shows one look-up's problem in `/healthz` (with when it is tried again, if it retries on a timer), or
    /// clears it after a success.
    fn record_look_up(&self, source: &'static str, error: Option<&PlexError>, retry_at: Option<std::time::SystemTime>) {
        self.health.set_rest_problem(source, error.map(|e| (e.reason(), e.to_string())), retry_at);
    }

    /// A failed `/status/sessions` or `/activities` read: shown in `/healthz` with when it is tried again, and
    /// logged (a warning when the reason is new, so a server that stays down does not fill the log).
    fn failed_look_up(&self, path: &'static str, error: &PlexError, failure: Failure, meanwhile: &str) {
        self.record_look_up(path, Some(error), Some(failure.retry_at));
        let retry_at = crate::telemetry::health::rfc3339(failure.retry_at);
        if failure.new_reason {
            tracing::warn!(%error, retry_in = ?failure.retry_in, %retry_at, "cannot read {path}; {meanwhile}");
        } else {
            tracing::debug!(%error, retry_in = ?failure.retry_in, %retry_at, "{path} fails again");
        }
    }

    /// Counts the sessions the cap left untracked in the last batch, and logs the first batch of an overflow
    /// episode (which lasts until the tracker has room again, so batches in between do not log it anew).
    fn report_untracked(&self, reported: &mut bool, before: u64, tracker: &Tracker) {
        let untracked = tracker.untracked() - before;
        if untracked == 0 {
            if tracker.len() < self.max_sessions {
                *reported = false;
            }
            return;
        }
        crate::telemetry::telemetry().sessions_untracked(untracked);
        if !*reported {
            *reported = true;
            tracing::warn!(
                untracked,
                tracked = tracker.len(),
                limit = self.max_sessions,
                "more playback sessions than plex.max_sessions: the new ones are forwarded raw only (no retained \
                 session document, summary entry or playback events)"
            );
        }
    }

    fn library_event(&self, topics: &ServerTopics, event: Value) {
        self.publisher
            .apply([Action::Live { topic: topics.events("library"), payload: Bytes::from(event.to_string()) }]);
    }
}

/// Moves `timer` to `deadline` unless it is there already (within a millisecond: the deadlines are recomputed
/// from the clock on every pass).
fn move_timer(timer: std::pin::Pin<&mut tokio::time::Sleep>, deadline: Instant) {
    let current = timer.deadline();
    let apart = if current > deadline { current - deadline } else { deadline - current };
    // A timer that fired is moved to any later deadline, however close: else it would fire again at once.
    if apart > Duration::from_millis(1) || (timer.is_elapsed() && deadline > current) {
        timer.reset(deadline);
    }
}
