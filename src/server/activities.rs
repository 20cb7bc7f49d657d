//! The activities running on a server now (scans, refreshes, …), kept from `activity` notifications and
//! `/activities`, for the retained summary at `<p>/<server>/activities` (what the "Library activity" and
//! "Library scan" entities show).

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
}

impl RunningActivities {
    /// Applies one `ActivityNotification` item.
    pub fn apply(&mut self, raw: &[u8]) -> ActivityChange {
        let Some(item) = Fields::parse(raw) else { return ActivityChange::Nothing };
        let Some(activity) = item.object("Activity") else { return ActivityChange::Nothing };
        let Some(uuid) = item.text("uuid").or_else(|| activity.text("uuid")).filter(|u| !u.is_empty()) else {
            return ActivityChange::Nothing;
        };
        if item.text("event").as_deref() == Some("ended") {
            return match self.by_uuid.remove(uuid.as_ref()) {
                Some(_) => ActivityChange::StartedOrEnded,
                None => ActivityChange::Nothing,
            };
        }
        let running = RunningActivity::read(&activity);
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

    /// Replaces the set with what `/activities` reports.
    pub fn replace(&mut self, running: Vec<(String, RunningActivity)>) {
        self.by_uuid = running.into_iter().collect();
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
