//! What the playback tracker's effects become on MQTT: session documents, playback events, webhook-shaped
//! messages, the sessions summary, and what they change for the players.

use bytes::Bytes;

use super::lookups::now_ms;
use super::player_side::PlayerSide;
use super::state_task::StateTask;
use crate::model::playback::{Effect, Tracker};
use crate::mqtt::outbox::Action;
use crate::topic::ServerTopics;

impl StateTask {
    /// Publishes the tracker's effects in order, then the sessions summary if any of them changed it.
    pub(super) fn apply(&self, topics: &ServerTopics, effects: Vec<Effect>, tracker: &Tracker, side: &mut PlayerSide) {
        if self.publish_effects(topics, effects, side) {
            self.publish_summary(topics, tracker);
        }
    }

    /// Publishes the effects in order except the summary, and what they change for the players; returns whether
    /// one of them changed the summary, so the caller builds it once for a whole batch
    /// ([`Self::publish_summary`]).
    pub(super) fn publish_effects(&self, topics: &ServerTopics, effects: Vec<Effect>, side: &mut PlayerSide) -> bool {
        let mut summary_changed = false;
        let now = now_ms();
        let mut players = Vec::new();
        let actions: Vec<Action> = effects
            .into_iter()
            .filter_map(|effect| match effect {
                Effect::Session { key, doc } => {
                    players.extend(side.players.on_session(&doc, now));
                    Some(Action::Retain { topic: topics.session(&key), payload: Bytes::from(doc.to_string()) })
                }
                Effect::ClearSession { key } => {
                    players.extend(side.players.on_session_cleared(&key, now));
                    Some(Action::Clear { topic: topics.session(&key) })
                }
                Effect::Event(event) => {
                    players.extend(side.players.on_event(&event, now));
                    Some(Action::Live { topic: topics.events("playback"), payload: Bytes::from(event.to_string()) })
                }
                Effect::Webhook(snapshot) => {
                    let server = side.server.as_ref().map(|(_, identity)| identity);
                    let payload = crate::model::webhook::playback(&snapshot, server).to_string();
                    Some(Action::Live { topic: topics.webhook(), payload: Bytes::from(payload) })
                }
                Effect::Started { key, player } => {
                    side.players.on_session_started(&player, &key);
                    None
                }
                Effect::SummaryChanged => {
                    summary_changed = true;
                    None
                }
            })
            .collect();
        self.publisher.apply(actions);
        side.publish(topics, players);
        summary_changed
    }

    /// The retained sessions summary, built from the tracker now.
    pub(super) fn publish_summary(&self, topics: &ServerTopics, tracker: &Tracker) {
        self.publisher.retain(topics.sessions_summary(), tracker.summary().to_string());
    }
}
