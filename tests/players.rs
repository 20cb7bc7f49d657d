//! Players as Home Assistant users see them (issue 26): a player's state follows its newest session whatever
//! order the end of the previous one and the start of the next arrive in (autoplay), and a player not seen for
//! `players.expire_after` is removed on that clock, not at the next resync.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::fake_pms::{CannedResponse, FakePmsConfig};
use support::fixture::Fixture;
use support::frames::Play;
use support::wait::SOON;
use support::Msg;

const PLAYER: &str = "plex/test/players/tv-1";

/// `/status/sessions` listing `sessions` (key, title), all on the player `tv-1`.
fn sessions_on_tv(sessions: &[(&str, &str)]) -> CannedResponse {
    let metadata: Vec<Value> = sessions
        .iter()
        .map(|(key, title)| {
            json!({
                "sessionKey": key, "ratingKey": format!("9{key}"), "type": "episode", "title": title,
                "grandparentTitle": "Severance", "parentIndex": 1, "index": key.parse::<u64>().unwrap_or(1),
                "duration": 3_000_000, "viewOffset": 0,
                "User": {"id": "1", "title": "alice"},
                "Player": {"title": "Living Room TV", "product": "Plex for LG", "platform": "webOS",
                           "machineIdentifier": "tv-1", "state": "playing", "local": true},
                "Session": {"id": format!("s{key}"), "bandwidth": 8000, "location": "lan"},
            })
        })
        .collect();
    CannedResponse::json(json!({"MediaContainer": {"size": metadata.len(), "Metadata": metadata}}).to_string())
}

async fn start(edit: impl FnOnce(support::BridgeConfig) -> support::BridgeConfig) -> Fixture {
    let setup = |pms: &support::FakePms| pms.set_canned("/status/sessions", sessions_on_tv(&[]));
    let f = Fixture::connected_with(FakePmsConfig::default(), setup, edit).await;
    assert!(f.pms.wait_for_requests("/status/sessions", 1, SOON).await, "the resync after connecting");
    f
}

fn state_of(m: &Msg) -> (String, String) {
    let doc = m.json();
    (doc["state"].as_str().unwrap_or_default().to_owned(), doc["title"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoplay_never_shows_the_player_idle_between_two_episodes() {
    let mut f = start(|c| c).await;
    f.pms.set_canned("/status/sessions", sessions_on_tv(&[("1", "Episode 1")]));
    f.pms.push_text(&Play::new("1").player("tv-1").frame());
    f.probe
        .expect_seen(SOON, "episode 1 on the player", |m| {
            m.topic == PLAYER && !m.is_empty() && state_of(m).0 == "playing" && state_of(m).1.contains("Episode 1")
        })
        .await;
    let seen_before = f.probe.history_on(PLAYER).len();
    // Autoplay: the next episode's session starts on the same player, and the previous session's `stopped`
    // arrives while the next one's details are still being looked up (within the enrichment wait).
    f.pms.set_canned("/status/sessions", sessions_on_tv(&[("2", "Episode 2")]));
    f.pms.push_text(&Play::new("2").player("tv-1").frame());
    f.pms.push_text(&Play::new("1").player("tv-1").state("stopped").at(3_000_000).frame());
    f.probe
        .expect_seen(SOON, "episode 2 on the player", |m| {
            m.topic == PLAYER && !m.is_empty() && state_of(m).1.contains("Episode 2")
        })
        .await;
    let between: Vec<(String, String)> =
        f.probe.history_on(PLAYER).iter().skip(seen_before).filter(|m| !m.is_empty()).map(state_of).collect();
    assert!(
        between.iter().all(|(state, _)| state != "idle"),
        "the player went idle between the two episodes: {between:?}"
    );
    assert_eq!(between.last().map(|(state, _)| state.as_str()), Some("playing"), "{between:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_player_expires_on_its_own_clock() {
    let expire_after = Duration::from_secs(2);
    let mut f = start(|c| c.players_expire_after(expire_after)).await;
    f.pms.set_canned("/status/sessions", sessions_on_tv(&[("1", "Episode 1")]));
    f.pms.push_text(&Play::new("1").player("tv-1").frame());
    f.probe
        .expect_seen(SOON, "the player plays", |m| m.topic == PLAYER && !m.is_empty() && state_of(m).0 == "playing")
        .await;
    f.pms.set_canned("/status/sessions", sessions_on_tv(&[]));
    f.pms.push_text(&Play::new("1").player("tv-1").state("stopped").at(1000).frame());
    f.probe
        .expect_seen(SOON, "the player idle", |m| m.topic == PLAYER && !m.is_empty() && state_of(m).0 == "idle")
        .await;
    let idle_at = Instant::now();
    // The resync runs every 5 minutes by default: the player must go long before that.
    f.probe.expect_seen(SOON, "the player's state removed", |m| m.topic == PLAYER && m.is_empty()).await;
    let took = idle_at.elapsed();
    assert!(took >= expire_after - Duration::from_millis(300), "not before it expired: {took:?}");
    assert!(took < expire_after + Duration::from_secs(2), "on its own clock: {took:?}");
}
