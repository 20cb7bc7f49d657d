//! The activities running on a server now (scans, refreshes, …), kept from `activity` notifications and
//! `/activities`, for the retained summary at `<p>/<server>/activities` (what the "Library activity" and
//! "Library scan" entities show).
//!
//! A `/activities` answer is a picture of the moment it was asked for: what a notification said of an activity
//! after that moment is newer and wins (a scan that started, or ended, while the answer was on its way).

use std::borrow::Cow;

use serde_json::{json, Value};

use crate::plex::fields::Fields;

/// What one activity item changed in [`RunningActivities`] (ordered: the largest change of a notification counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ActivityChange {
    Nothing,
    /// Progress, title or subtitle of a running activity.
    Progress,
    /// An activity started or ended.
    StartedOrEnded,
}

/// What the summary shows of one running activity.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningActivity {
    kind: Option<String>,
    title: Option<String>,
    subtitle: Option<String>,
    /// As PMS sent it (a number, normally).
    progress: Value,
}

impl RunningActivity {
    pub fn read(activity: &Fields<'_>) -> RunningActivity {
        RunningActivity {
            kind: activity.text("type").map(Cow::into_owned),
            title: activity.text("title").map(Cow::into_owned),
            subtitle: activity.text("subtitle").map(Cow::into_owned),
            progress: activity.raw("progress").and_then(|p| serde_json::from_str(p.get()).ok()).unwrap_or(Value::Null),
        }
    }
}

/// The activities running now, for the retained summary at `<p>/<server>/activities` (what the "Library
/// activity" and "Library scan" entities show).
#[derive(Debug, Default)]
pub struct RunningActivities {
    by_uuid: std::collections::BTreeMap<String, RunningActivity>,
    /// When a notification last told of each activity (ms; started, updated or ended), so an older `/activities`
    /// answer cannot undo it. Forgotten once an answer asked for later has arrived.
    heard_ms: std::collections::HashMap<String, u64>,
}

impl RunningActivities {
    /// Applies one raw `ActivityNotification` item that arrived at `now_ms` (the tests' way in; the state task
    /// reads each item once and calls [`RunningActivities::apply_fields`]).
    #[cfg(test)]
    pub fn apply(&mut self, raw: &[u8], now_ms: u64) -> ActivityChange {
        let Some(item) = Fields::parse(raw) else { return ActivityChange::Nothing };
        let Some(activity) = item.object("Activity") else { return ActivityChange::Nothing };
        self.apply_fields(&item, &activity, now_ms)
    }

    /// Applies one `ActivityNotification` item that arrived at `now_ms`, already read (`item`, and its
    /// `Activity` object).
    pub fn apply_fields(&mut self, item: &Fields<'_>, activity: &Fields<'_>, now_ms: u64) -> ActivityChange {
        let Some(uuid) = item.text("uuid").or_else(|| activity.text("uuid")).filter(|u| !u.is_empty()) else {
            return ActivityChange::Nothing;
        };
        self.heard_ms.insert(uuid.clone().into_owned(), now_ms);
        if item.text("event").as_deref() == Some("ended") {
            return match self.by_uuid.remove(uuid.as_ref()) {
                Some(_) => ActivityChange::StartedOrEnded,
                None => ActivityChange::Nothing,
            };
        }
        let running = RunningActivity::read(activity);
        match self.by_uuid.get_mut(uuid.as_ref()) {
            Some(known) if *known == running => ActivityChange::Nothing,
            Some(known) => {
                *known = running;
                ActivityChange::Progress
            }
            None => {
                self.by_uuid.insert(uuid.into_owned(), running);
                ActivityChange::StartedOrEnded
            }
        }
    }

    /// Whether a notification told of `uuid` at or after `asked_at_ms` (then it is newer than an `/activities`
    /// answer asked for then).
    pub fn heard_since(&self, uuid: &str, asked_at_ms: u64) -> bool {
        self.heard_ms.get(uuid).is_some_and(|at| *at >= asked_at_ms)
    }

    /// The activities notifications told of at or after `asked_at_ms`.
    pub fn heard_since_list(&self, asked_at_ms: u64) -> Vec<String> {
        self.heard_ms.iter().filter(|(_, at)| **at >= asked_at_ms).map(|(uuid, _)| uuid.clone()).collect()
    }

    /// Replaces the set with what `/activities` reported when asked at `asked_at_ms`, except for the activities
    /// a notification told of since: for those, the notification stands.
    pub fn replace(&mut self, listed: Vec<(String, RunningActivity)>, asked_at_ms: u64) {
        let newer: Vec<(String, RunningActivity)> = std::mem::take(&mut self.by_uuid)
            .into_iter()
            .filter(|(uuid, _)| self.heard_since(uuid, asked_at_ms))
            .collect();
        self.by_uuid = listed.into_iter().filter(|(uuid, _)| !self.heard_since(uuid, asked_at_ms)).collect();
        self.by_uuid.extend(newer);
        self.heard_ms.retain(|_, at| *at >= asked_at_ms);
    }

    pub fn summary(&self) -> Value {
        let list: Vec<Value> = self
            .by_uuid
            .iter()
            .map(|(uuid, a)| {
                json!({
                    "uuid": uuid,
                    "type": a.kind,
                    "title": a.title,
                    "subtitle": a.subtitle,
                    "progress": a.progress,
                })
            })
            .collect();
        let scanning = self.by_uuid.values().any(|a| a.kind.as_deref() == Some("library.update.section"));
        let first = list.first();
        json!({
            "count": list.len(),
            "scanning": scanning,
            "title": first.map(|a| a["title"].clone()).unwrap_or(Value::Null),
            "subtitle": first.map(|a| a["subtitle"].clone()).unwrap_or(Value::Null),
            "progress": first.map(|a| a["progress"].clone()).unwrap_or(Value::Null),
            "activities": list,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(event: &str, uuid: &str, title: &str) -> Vec<u8> {
        json!({ "event": event, "uuid": uuid, "Activity": { "uuid": uuid, "type": "library.update.section",
            "title": title, "progress": 10 } })
        .to_string()
        .into_bytes()
    }

    fn listed(uuid: &str, title: &str) -> (String, RunningActivity) {
        (
            uuid.to_owned(),
            RunningActivity { kind: None, title: Some(title.to_owned()), subtitle: None, progress: Value::Null },
        )
    }

    #[test]
    fn start_progress_and_end_are_told_apart() {
        let mut running = RunningActivities::default();
        assert_eq!(running.apply(&item("started", "a", "Scanning"), 1), ActivityChange::StartedOrEnded);
        assert_eq!(running.apply(&item("updated", "a", "Scanning"), 2), ActivityChange::Nothing);
        assert_eq!(running.apply(&item("updated", "a", "Scanning Movies"), 3), ActivityChange::Progress);
        assert_eq!(running.summary()["scanning"], true);
        assert_eq!(running.apply(&item("ended", "a", "Scanning Movies"), 4), ActivityChange::StartedOrEnded);
        assert_eq!(running.summary()["count"], 0);
    }

    #[test]
    fn an_older_activities_answer_does_not_undo_newer_notifications() {
        let mut running = RunningActivities::default();
        running.apply(&item("started", "old", "Refreshing"), 1);
        // Asked at 10; meanwhile "new" started and "old" ended (both told at 11), and the answer still lists
        // "old" but not "new".
        running.apply(&item("started", "new", "Scanning Movies"), 11);
        running.apply(&item("ended", "old", "Refreshing"), 11);
        running.replace(vec![listed("old", "Refreshing"), listed("gone-while-away", "Analysing")], 10);
        let titles: Vec<Value> =
            running.summary()["activities"].as_array().unwrap().iter().map(|a| a["title"].clone()).collect();
        assert_eq!(titles, [json!("Analysing"), json!("Scanning Movies")]);
        assert!(running.heard_since("new", 10) && !running.heard_since("gone-while-away", 10));
        // A later answer is the truth again.
        running.replace(vec![], 20);
        assert_eq!(running.summary()["count"], 0);
    }
}
