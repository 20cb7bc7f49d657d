//! A player's session as the tests against a real Home Assistant play it: the entry of the fake PMS's
//! `/status/sessions` and the `playing` notification that announces it.

use serde_json::{json, Value};

use super::fake_pms::{CannedResponse, FakePms, FakePmsConfig};
use super::frames::Play;

/// One movie playing on one player.
#[derive(Clone, Copy, Debug)]
pub struct Playing {
    pub key: &'static str,
    /// The player's machineIdentifier, as Plex sends it.
    pub player: &'static str,
    pub player_title: &'static str,
    pub rating_key: &'static str,
    pub title: &'static str,
    /// The poster's PMS path.
    pub thumb: &'static str,
    /// `playing`, `paused`, `buffering` or `stopped`.
    pub state: &'static str,
}

impl Playing {
    /// The same session in another state.
    pub fn in_state(self, state: &'static str) -> Playing {
        Playing { state, ..self }
    }

    /// Its `playing` notification.
    pub fn notification(&self) -> String {
        Play::new(self.key).player(self.player).rating_key(self.rating_key).state(self.state).at(60_000).frame()
    }
}

/// `/status/sessions` listing `list`.
pub fn sessions_body(list: &[Playing]) -> CannedResponse {
    let metadata: Vec<Value> = list
        .iter()
        .map(|p| {
            json!({
                "sessionKey": p.key, "ratingKey": p.rating_key, "type": "movie", "title": p.title, "year": 2016,
                "duration": 6_960_000, "viewOffset": 60_000, "thumb": p.thumb,
                "User": {"id": "1", "title": "alice"},
                "Player": {"title": p.player_title, "product": "Plex for LG", "platform": "webOS",
                           "machineIdentifier": p.player, "address": "192.168.1.20", "local": true, "state": p.state},
                "Session": {"id": format!("s{}", p.key), "bandwidth": 8000, "location": "lan"},
            })
        })
        .collect();
    CannedResponse::json(json!({"MediaContainer": {"size": metadata.len(), "Metadata": metadata}}).to_string())
}

/// A fake PMS on which nothing plays and nothing runs yet (`/status/sessions` and `/activities` empty).
pub async fn quiet_pms() -> FakePms {
    let pms = FakePms::start(FakePmsConfig::default()).await;
    pms.set_canned("/status/sessions", sessions_body(&[]));
    pms.set_canned("/activities", CannedResponse::json(r#"{"MediaContainer":{"size":0}}"#));
    pms
}
