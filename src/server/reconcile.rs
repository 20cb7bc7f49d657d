//! Retained state made true again after a (re)connect: the activities PMS reports against what the broker
//! holds, and session documents an earlier run left for sessions that no longer exist.

use bytes::Bytes;
use serde_json::json;
use serde_json::value::RawValue;

use super::activities::{RunningActivities, RunningActivity};
use super::state_task::StateTask;
use crate::mqtt::outbox::Action;
use crate::plex::fields::Fields;
use crate::topic::ServerTopics;

impl StateTask {
    /// Publishes activities PMS reports that the bridge does not hold (started while disconnected) and clears
    /// held ones PMS no longer reports (ended while disconnected), including leftovers of an earlier run; then
    /// `activities` is what the answer (asked for at `asked_at_ms`) says. What a notification told since the
    /// answer was asked for is newer and is left as it is. False when the body is not an answer.
    pub(super) fn reconcile_activities(
        &self,
        topics: &ServerTopics,
        body: &[u8],
        activities: &mut RunningActivities,
        asked_at_ms: u64,
    ) -> bool {
        let Some(container) = Fields::parse(body).and_then(|top| top.object("MediaContainer")) else {
            tracing::warn!("/activities is not a JSON MediaContainer; skipped");
            return false;
        };
        let listed: Vec<&RawValue> =
            container.raw("Activity").and_then(|list| serde_json::from_str(list.get()).ok()).unwrap_or_default();
        let mut running = Vec::new();
        let mut current = Vec::new();
        let mut actions = Vec::new();
        for raw in listed {
            let Some(activity) = Fields::parse_str(raw.get()).ok() else { continue };
            let Some(uuid) = activity.text("uuid").filter(|u| !u.is_empty()) else {
                continue;
            };
            if activities.heard_since(&uuid, asked_at_ms) {
                continue;
            }
            let topic = topics.activity(&uuid);
            if self.publisher.retained_payload(&topic).is_none() {
                let item = json!({ "event": "updated", "uuid": uuid, "Activity": raw });
                actions.push(Action::Retain { topic: topic.clone(), payload: Bytes::from(item.to_string()) });
            }
            current.push(topic);
            running.push((uuid.into_owned(), RunningActivity::read(&activity)));
        }
        current.extend(activities.heard_since_list(asked_at_ms).iter().map(|uuid| topics.activity(uuid)));
        let prefix = topics.activities_prefix();
        let mut held = self.publisher.retained_topics(&prefix);
        held.extend(self.publisher.take_stale(&prefix));
        for topic in held {
            if !current.contains(&topic) {
                actions.push(Action::Clear { topic });
            }
        }
        self.publisher.apply(actions);
        activities.replace(running, asked_at_ms);
        true
    }

    pub(super) fn publish_activities(&self, topics: &ServerTopics, activities: &RunningActivities) {
        self.publisher.retain(topics.activities_summary(), activities.summary().to_string());
    }

    /// Clears session documents an earlier run left on the broker for sessions that no longer exist.
    pub(super) fn clear_stale_sessions(&self, topics: &ServerTopics) {
        let actions: Vec<Action> = self
            .publisher
            .take_stale(&topics.sessions_prefix())
            .into_iter()
            .filter(|topic| self.publisher.retained_payload(topic).is_none())
            .map(|topic| Action::Clear { topic })
            .collect();
        self.publisher.apply(actions);
    }
}
