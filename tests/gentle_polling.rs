//! How often the bridge reads `/status/sessions` (issue 29), end to end against the fake PMS and a real Mosquitto:
//! a failed read is tried again on its own timer with backoff (also with nothing waiting for it), and steady
//! playback costs a read every ~10 s rather than one per notification, while a change still has its details
//! read at once.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_pms::{CannedResponse, FakePmsConfig};
use support::fixture::Fixture;
use support::frames::Play;
use support::http::wait_healthz;
use support::mosquitto::free_port;
use support::wait::{self, SOON};
use support::{FakePms, Msg};

const SESSIONS: &str = "/status/sessions";
/// The bridge's first retry after a failure comes within twice its shortest delay (5 s, with jitter).
const RETRY_WITHIN: Duration = Duration::from_secs(10);
/// `plex.enrichment_wait`'s default.
const ENRICHMENT_WAIT: Duration = Duration::from_secs(2);

/// `/status/sessions` listing session 45 on player `player-45` in `state`, using `bandwidth` kbps.
fn sessions_body(state: &str, bandwidth: u64) -> String {
    json!({"MediaContainer": {"size": 1, "Metadata": [{
        "sessionKey": "45", "ratingKey": "9045", "type": "movie", "title": "Arrival", "year": 2016,
        "duration": 6_960_000, "viewOffset": 0,
        "User": {"id": "1", "title": "alice"},
        "Player": {"title": "Living Room TV", "product": "Plex for LG", "platform": "webOS",
                   "machineIdentifier": "player-45", "address": "192.168.1.20", "local": true, "state": state},
        "Session": {"id": "s45", "bandwidth": bandwidth, "location": "lan"}
    }]}})
    .to_string()
}

fn empty(pms: &FakePms) {
    pms.set_canned(SESSIONS, CannedResponse::json(r#"{"MediaContainer":{"size":0}}"#));
    pms.set_canned("/activities", CannedResponse::json(r#"{"MediaContainer":{"size":0}}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connect_time_read_is_retried_within_its_backoff_with_no_session_waiting() {
    let http = free_port();
    let f = Fixture::connected_with(
        FakePmsConfig::default(),
        |pms| {
            empty(pms);
            pms.set_canned(SESSIONS, CannedResponse { status: 503, ..CannedResponse::json("") });
        },
        |c| c.http(http),
    )
    .await;
    assert!(f.pms.wait_for_requests(SESSIONS, 1, SOON).await, "the read after connecting");
    let failed_at = f.pms.requests_to(SESSIONS)[0].at;
    // That answer was decided when the request was recorded; the next one is answered.
    empty(&f.pms);

    // The log and /healthz say when it is tried again.
    assert!(f.bridge.wait_for_log("cannot read /status/sessions", SOON).await, "{}", f.bridge.logs());
    let warning = f.bridge.logs().lines().find(|l| l.contains("cannot read /status/sessions")).unwrap_or("").to_owned();
    assert!(warning.contains("retry_in=") && warning.contains("retry_at="), "{warning}");
    wait_healthz(http, SOON, "the failed read and when it is retried", |doc| {
        let problem = &doc["servers"]["test"]["rest_problem"];
        problem["reason"] == "http_status" && problem["retry_at"].is_string()
    })
    .await;

    // No notification comes, no session waits: the retry comes on its own timer.
    assert!(
        f.pms.wait_for_requests(SESSIONS, 2, RETRY_WITHIN + SOON).await,
        "no retry of the failed read:\n{}",
        f.bridge.logs()
    );
    let retried_after = f.pms.requests_to(SESSIONS)[1].at - failed_at;
    assert!(retried_after <= RETRY_WITHIN + Duration::from_millis(500), "retried only after {retried_after:?}");
    wait_healthz(http, SOON, "the problem cleared by the answered retry", |doc| {
        doc["servers"]["test"]["rest_problem"].is_null()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steadily_playing_session_costs_few_reads_and_a_change_still_shows_within_the_enrichment_wait() {
    let mut f = Fixture::connected_with(
        FakePmsConfig::default(),
        |pms| {
            empty(pms);
            pms.set_canned(SESSIONS, CannedResponse::json(sessions_body("playing", 8_000)));
        },
        |c| c,
    )
    .await;
    assert!(f.pms.wait_for_requests(SESSIONS, 1, SOON).await, "the read after connecting");
    let before = f.pms.count_requests(SESSIONS);

    // One notification a second for 60 s, the offset following the clock: steady playback.
    let play = |state: &str, offset: u64| Play::new("45").rating_key("9045").state(state).at(offset).frame();
    let started = Instant::now();
    for second in 0..60u64 {
        f.pms.push_text(&play("playing", second * 1_000));
        wait::pace(Duration::from_secs(second + 1).saturating_sub(started.elapsed())).await;
    }
    let reads = f.pms.count_requests(SESSIONS) - before;
    assert!(reads <= 8, "60 s of steady playback cost {reads} reads of /status/sessions");
    let enriched = |m: &Msg| m.topic == "plex/test/sessions/45" && !m.is_empty() && m.json()["user"]["name"] == "alice";
    f.probe.expect_seen(SOON, "the session's details", enriched).await;

    // A pause is a change the notification does not carry all of: its details are read at once and shown
    // within the enrichment wait.
    f.pms.set_canned(SESSIONS, CannedResponse::json(sessions_body("paused", 3_000)));
    f.pms.push_text(&play("paused", 60_000));
    let paused = |m: &Msg| {
        m.topic == "plex/test/sessions/45" && !m.is_empty() && {
            let doc = m.json();
            doc["state"] == "paused" && doc["bandwidth_kbps"] == 3_000
        }
    };
    f.probe.expect(ENRICHMENT_WAIT, "the paused session with its new details", paused).await;
    let pause = f.probe.expect_seen(SOON, "the pause event", |m: &Msg| {
        m.topic == "plex/test/events/playback" && m.json()["event_type"] == "pause"
    });
    assert_eq!(pause.await.json()["session"]["user"]["name"], "alice");
}
