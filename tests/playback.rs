//! Playback sessions, derived events, library events and the resync that keeps retained state true, against
//! the fake PMS (`/status/sessions`, `/activities`, `/library/metadata/<id>`) and a real Mosquitto.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::config::Plex;
use support::fake_pms::{CannedResponse, FakePmsConfig};
use support::fixture::Fixture;
use support::frames::{activity_item, frame, playing, timeline};
use support::wait::{self, SLOW, SOON};
use support::{publish, retained, test_config, Bridge, FakePms, Mosquitto, Msg, Probe, TokenFile};

/// What `/status/sessions` lists: (session key, user, player, title, state, duration, transcode?).
fn sessions_body(sessions: &[(&str, &str, &str, &str, &str, u64, bool)]) -> String {
    let metadata: Vec<Value> = sessions
        .iter()
        .map(|(key, user, player, title, state, duration, transcode)| {
            let mut entry = json!({
                "sessionKey": key, "ratingKey": format!("9{key}"), "type": "movie", "title": title, "year": 2016,
                "duration": duration, "viewOffset": 0,
                "User": {"id": "1", "title": user},
                "Player": {"title": player, "product": "Plex for LG", "platform": "webOS", "device": "OLED",
                           "machineIdentifier": format!("player-{key}"), "address": "192.168.1.20", "local": true, "state": state},
                "Session": {"id": format!("s{key}"), "bandwidth": 8000, "location": "lan"},
            });
            if *transcode {
                entry["TranscodeSession"] = json!({"videoDecision": "transcode", "audioDecision": "copy", "transcodeHwRequested": true});
            }
            entry
        })
        .collect();
    json!({"MediaContainer": {"size": metadata.len(), "Metadata": metadata}}).to_string()
}

fn set_sessions(pms: &FakePms, sessions: &[(&str, &str, &str, &str, &str, u64, bool)]) {
    pms.set_canned("/status/sessions", CannedResponse::json(sessions_body(sessions)));
}

fn set_activities(pms: &FakePms, activities: &[Value]) {
    let body = json!({"MediaContainer": {"size": activities.len(), "Activity": activities}});
    pms.set_canned("/activities", CannedResponse::json(body.to_string()));
}

async fn start(pms_setup: impl FnOnce(&FakePms), plex: impl FnOnce(&mut Plex)) -> Fixture {
    let setup = |pms: &FakePms| {
        set_sessions(pms, &[]);
        set_activities(pms, &[]);
    };
    let f = Fixture::connected_with(FakePmsConfig::default(), setup, |c| c.plex(plex)).await;
    // The resync right after connecting finds nothing playing (its answer is decided once the request is
    // recorded); what `pms_setup` serves from then on belongs to the sessions the test starts with notifications
    // (a session already listed at connect time is one that was playing before the bridge came, which by design
    // gets no `play`).
    assert!(f.pms.wait_for_requests("/status/sessions", 1, SOON).await, "the resync after connecting");
    pms_setup(&f.pms);
    f
}

/// Waits until the retained `topic` was cleared (an empty message on it).
async fn expect_cleared(probe: &mut Probe, topic: &str) {
    probe.expect_seen(SOON, &format!("{topic} cleared"), |m| m.topic == topic && m.is_empty()).await;
}

async fn next_event(probe: &mut Probe, kind: &str) -> Value {
    let topic = format!("plex/test/events/{kind}");
    probe.expect(SOON, &topic, |m: &Msg| m.topic == topic).await.json()
}

async fn retained_json(f: &Fixture, topic: &str) -> Option<Value> {
    let held = retained(f.broker.port(), topic).await;
    held.get(topic).map(|payload| serde_json::from_slice(payload).expect("retained JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_pause_resume_seek_stop_yield_exactly_those_events_with_details() {
    let mut f = start(
        |pms| set_sessions(pms, &[("45", "alice", "Living Room TV", "Arrival", "playing", 100_000, false)]),
        |_| {},
    )
    .await;
    f.pms.push_text(&playing("45", "playing", 0));
    let play = next_event(&mut f.probe, "playback").await;
    assert_eq!(play["event_type"], "play");
    assert_eq!(play["session"]["user"]["name"], "alice");
    assert_eq!(play["session"]["player"]["name"], "Living Room TV");
    assert_eq!(play["session"]["media"]["title"], "Arrival");
    let summary = retained_json(&f, "plex/test/sessions").await.expect("summary");
    assert_eq!(summary["count"], 1);
    assert_eq!(summary["playing"], 1);

    f.pms.push_text(&playing("45", "paused", 1_000));
    assert_eq!(next_event(&mut f.probe, "playback").await["event_type"], "pause");
    let doc = retained_json(&f, "plex/test/sessions/45").await.expect("session document");
    assert_eq!(doc["state"], "paused");
    assert_eq!(doc["view_offset_ms"], 1_000);
    assert_eq!(doc["user"]["name"], "alice");

    f.pms.push_text(&playing("45", "buffering", 1_000));
    f.pms.push_text(&playing("45", "playing", 1_000));
    let resume = next_event(&mut f.probe, "playback").await;
    assert_eq!(resume["event_type"], "resume", "buffering is transient: {resume}");
    f.pms.push_text(&playing("45", "playing", 60_000));
    let seek = next_event(&mut f.probe, "playback").await;
    assert_eq!(seek["event_type"], "seek");
    assert_eq!(seek["session"]["view_offset_ms"], 60_000);

    set_sessions(&f.pms, &[]);
    f.pms.push_text(&playing("45", "stopped", 61_000));
    let stop = next_event(&mut f.probe, "playback").await;
    assert_eq!(stop["event_type"], "stop");
    assert_eq!(stop["session"]["media"]["title"], "Arrival");
    expect_cleared(&mut f.probe, "plex/test/sessions/45").await;
    assert_eq!(retained_json(&f, "plex/test/sessions/45").await, None, "the session topic is cleared");
    assert_eq!(retained_json(&f, "plex/test/sessions").await.expect("summary")["count"], 0);
    let kinds: Vec<String> = f
        .probe
        .history_on("plex/test/events/playback")
        .iter()
        .map(|m| m.json()["event_type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds, ["play", "pause", "resume", "seek", "stop"], "exactly these, in order");
    assert!(f.probe.history_on("plex/test/events/playback").iter().all(|m| !m.retain));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrobble_fires_once_when_progress_crosses_the_threshold() {
    let mut f = start(|pms| set_sessions(pms, &[("7", "bob", "Phone", "Up", "playing", 100_000, false)]), |_| {}).await;
    f.pms.push_text(&playing("7", "playing", 80_000));
    assert_eq!(next_event(&mut f.probe, "playback").await["event_type"], "play");
    for offset in [89_000, 90_500, 92_000, 95_000] {
        f.pms.push_text(&playing("7", "playing", offset));
        wait::pace(Duration::from_millis(50)).await;
    }
    let scrobble = |m: &Msg| m.topic == "plex/test/events/playback" && m.json()["event_type"] == "scrobble";
    f.probe.expect_seen(SOON, "the scrobble", scrobble).await;
    // Bounded negative check: no second scrobble follows.
    wait::observe_while(Duration::from_millis(800), || f.probe.history().iter().filter(|m| scrobble(m)).count() == 1)
        .await;
    let scrobbles =
        f.probe.history_on("plex/test/events/playback").iter().filter(|m| m.json()["event_type"] == "scrobble").count();
    assert_eq!(scrobbles, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_stay_apart_and_bursts_share_requests() {
    let mut f = start(
        |pms| {
            set_sessions(
                pms,
                &[
                    ("1", "alice", "Living Room TV", "Arrival", "playing", 100_000, true),
                    ("2", "bob", "Bedroom", "Heat", "playing", 100_000, false),
                ],
            )
        },
        |_| {},
    )
    .await;
    let before = f.pms.count_requests("/status/sessions");
    for i in 0..50u64 {
        let key = if i % 2 == 0 { "1" } else { "2" };
        f.pms.push_text(&playing(key, "playing", i * 10));
        wait::pace(Duration::from_millis(2)).await;
    }
    next_event(&mut f.probe, "playback").await;
    next_event(&mut f.probe, "playback").await;
    // Bounded negative check: the burst causes no further look-ups afterwards.
    wait::observe(Duration::from_millis(800)).await;
    let requests = f.pms.count_requests("/status/sessions") - before;
    assert!((1..=4).contains(&requests), "50 notifications in ~100 ms caused {requests} /status/sessions requests");
    let one = retained_json(&f, "plex/test/sessions/1").await.expect("session 1");
    let two = retained_json(&f, "plex/test/sessions/2").await.expect("session 2");
    assert_eq!((one["user"]["name"].clone(), one["player"]["name"].clone()), (json!("alice"), json!("Living Room TV")));
    assert_eq!((two["user"]["name"].clone(), two["player"]["name"].clone()), (json!("bob"), json!("Bedroom")));
    assert_eq!(one["transcode"]["video_decision"], "transcode");
    assert_eq!(two["transcode"], Value::Null);
    let summary = retained_json(&f, "plex/test/sessions").await.expect("summary");
    assert_eq!(
        (summary["count"].clone(), summary["transcoding"].clone(), summary["direct_play"].clone()),
        (json!(2), json!(1), json!(1))
    );
    assert_eq!(summary["total_bandwidth_kbps"], 16_000);
    let plays =
        f.probe.history_on("plex/test/events/playback").iter().filter(|m| m.json()["event_type"] == "play").count();
    assert_eq!(plays, 2, "one play per session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_missed_while_disconnected_is_repaired_after_reconnect() {
    let mut f =
        start(|pms| set_sessions(pms, &[("3", "carol", "Kitchen", "Jaws", "playing", 100_000, false)]), |_| {}).await;
    f.pms.push_text(&playing("3", "playing", 0));
    assert_eq!(next_event(&mut f.probe, "playback").await["event_type"], "play");
    assert!(retained_json(&f, "plex/test/sessions/3").await.is_some());
    // While the bridge is cut off, the session ends.
    wait::let_time_pass(Duration::from_millis(2_100)).await; // older than the absence grace
    set_sessions(&f.pms, &[]);
    f.pms.drop_connections();
    f.probe.expect_payload("plex/test/state", "connected", SOON).await;
    let stop = next_event(&mut f.probe, "playback").await;
    assert_eq!(stop["event_type"], "stop");
    expect_cleared(&mut f.probe, "plex/test/sessions/3").await;
    assert_eq!(retained_json(&f, "plex/test/sessions/3").await, None);
    assert_eq!(retained_json(&f, "plex/test/sessions").await.expect("summary")["count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_an_earlier_run_are_cleared_on_start() {
    let broker = Mosquitto::start();
    publish(broker.port(), "plex/test/activities/old-scan", r#"{"event":"updated","uuid":"old-scan"}"#, true).await;
    publish(broker.port(), "plex/test/sessions/99", r#"{"session_key":"99","state":"playing"}"#, true).await;
    publish(broker.port(), "plex/other/sessions/5", r#"{"session_key":"5"}"#, true).await;
    let pms = FakePms::start(FakePmsConfig::default()).await;
    set_sessions(&pms, &[]);
    let running = json!({"uuid": "live-scan", "type": "library.update.section", "cancellable": false, "userID": 1,
                         "title": "Scanning", "subtitle": "", "progress": 10, "Context": {"librarySectionID": "1"}});
    set_activities(&pms, &[running]);
    let token = TokenFile::new(&pms.token());
    let mut probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
    let _bridge = Bridge::start(&test_config(&broker.url(), &pms.url(), token.path()));
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    // Both clears, in whichever order they come.
    let cleared = |probe: &Probe, topic: &str| probe.history_on(topic).iter().any(|m| m.payload.is_empty());
    let both = || cleared(&probe, "plex/test/activities/old-scan") && cleared(&probe, "plex/test/sessions/99");
    let done = wait::poll(SOON, async || both().then_some(())).await;
    assert!(done.is_some(), "stale topics not cleared: {:?}", probe.history());
    let held = retained(broker.port(), "plex/#").await;
    assert!(!held.contains_key("plex/test/activities/old-scan"));
    assert!(!held.contains_key("plex/test/sessions/99"));
    assert!(held.contains_key("plex/other/sessions/5"), "another server's topics are not ours to clear");
    let live: Value = serde_json::from_slice(&held["plex/test/activities/live-scan"]).expect("JSON");
    assert_eq!(live["Activity"]["title"], "Scanning", "a running activity found by the resync is retained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_or_hanging_status_sessions_never_blocks_raw_events() {
    let mut f = start(
        |pms| {
            let mut failing = CannedResponse::json("{}");
            failing.status = 500;
            pms.set_canned("/status/sessions", failing);
        },
        |p| p.request_timeout = Some(Duration::from_secs(1)),
    )
    .await;
    f.pms.push_text(&playing("8", "playing", 0));
    f.probe.expect(SOON, "raw playing", |m| m.topic == "plex/test/playing").await;
    // The event goes out without details once the look-up failed.
    let play = next_event(&mut f.probe, "playback").await;
    assert_eq!(play["event_type"], "play");
    // Now it hangs: raw events still flow at once.
    let mut hanging = CannedResponse::json(sessions_body(&[("8", "dave", "Den", "Alien", "playing", 100_000, false)]));
    hanging.delay = Duration::from_secs(30);
    f.pms.set_canned("/status/sessions", hanging);
    for offset in [1_000, 2_000, 3_000] {
        f.pms.push_text(&playing("8", "playing", offset));
        f.probe
            .expect(Duration::from_secs(2), "raw playing while REST hangs", |m| {
                m.topic == "plex/test/playing" && m.text().contains(&format!("\"viewOffset\":{offset}"))
            })
            .await;
    }
    // It answers again: the enrichment recovers.
    f.pms.set_canned(
        "/status/sessions",
        CannedResponse::json(sessions_body(&[("8", "dave", "Den", "Alien", "playing", 100_000, false)])),
    );
    let enriched = |m: &Msg| m.topic == "plex/test/sessions/8" && !m.is_empty() && m.json()["user"]["name"] == "dave";
    // Progress alone does not ask a failing server again: the enrichment recovers with the retry of the failed
    // read, on its own timer (5-10 s after it; docs/plex-protocol.md), so this waits longer than SOON.
    let recovered = wait::poll(SLOW, async || {
        f.pms.push_text(&playing("8", "playing", 4_000));
        f.probe.wait_for(Duration::from_millis(500), enriched).await?;
        retained_json(&f, "plex/test/sessions/8").await.filter(|d| d["user"]["name"] == "dave")
    })
    .await;
    assert!(recovered.is_some(), "enrichment did not recover:\n{}", f.bridge.logs());
    assert_eq!(f.bridge.logs().matches("cannot read /status/sessions").count(), 1, "logged once per failure burst");
}

/// The library scan of this file's tests.
fn scan(event: &str) -> String {
    support::frames::activity("scan-1", event, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_item_added_and_scan_events() {
    let metadata = json!({"MediaContainer": {"size": 1, "librarySectionID": 1, "librarySectionTitle": "Movies",
        "Metadata": [{"ratingKey": "5", "type": "movie", "title": "Arrival", "year": 2016, "librarySectionID": 1}]}});
    let mut f =
        start(|pms| pms.set_canned("/library/metadata/5", CannedResponse::json(metadata.to_string())), |_| {}).await;
    f.pms.push_text(&scan("started"));
    let started = next_event(&mut f.probe, "library").await;
    assert_eq!(started["event_type"], "scan_started");
    f.pms.push_text(&timeline(0, Some("created")));
    f.pms.push_text(&timeline(1, Some("processing")));
    f.pms.push_text(&timeline(5, None));
    let added = next_event(&mut f.probe, "library").await;
    assert_eq!(added["event_type"], "item_added");
    assert_eq!(added["item"]["title"], "Arrival");
    assert_eq!(added["item"]["type"], "movie");
    assert_eq!(added["item"]["library_section_title"], "Movies");
    f.pms.push_text(&timeline(5, None));
    f.pms.push_text(&scan("ended"));
    let finished = next_event(&mut f.probe, "library").await;
    assert_eq!(finished["event_type"], "scan_finished");
    f.pms.push_text(&timeline(9, Some("deleted")));
    let deleted = next_event(&mut f.probe, "library").await;
    assert_eq!(deleted["event_type"], "item_deleted");
    let added_count = f
        .probe
        .history_on("plex/test/events/library")
        .iter()
        .filter(|m| m.json()["event_type"] == "item_added")
        .count();
    assert_eq!(added_count, 1, "one item_added per item");
    assert_eq!(f.pms.count_requests("/library/metadata/5"), 1);
}

/// A scan reporting progress on each file.
fn activity_progress(event: &str, progress: u64) -> String {
    frame("activity", "ActivityNotification", &[&activity_item("scan-9", event, progress, &format!("file {progress}"))])
}

/// A busy server reports progress many times a second: the retained session document and activities summary
/// follow it at most about once per second (state changes at once), and always end on the latest value; the
/// live topics still carry every notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_progress_is_republished_at_most_once_a_second_and_ends_on_the_latest() {
    let mut f =
        start(|pms| set_sessions(pms, &[("45", "alice", "TV", "Arrival", "playing", 10_000_000, false)]), |_| {}).await;
    f.pms.push_text(&playing("45", "playing", 0));
    assert_eq!(next_event(&mut f.probe, "playback").await["event_type"], "play");
    f.pms.push_text(&activity_progress("started", 0));
    f.probe.expect(SOON, "the activity started", |m: &Msg| m.topic == "plex/test/activities/scan-9").await;
    f.probe.expect(SOON, "the activities summary", |m: &Msg| m.topic == "plex/test/activities").await;
    let documents_before = f.probe.history_on("plex/test/sessions/45").len();
    let summaries_before = f.probe.history_on("plex/test/activities").len();

    // 20 updates of each in 0.4 s.
    for i in 1..=20u64 {
        f.pms.push_text(&playing("45", "playing", i * 20));
        f.pms.push_text(&activity_progress("updated", i));
        wait::pace(Duration::from_millis(20)).await;
    }
    let last_document = f
        .probe
        .expect(SOON, "the session document with the last offset", |m: &Msg| {
            m.topic == "plex/test/sessions/45" && m.json()["view_offset_ms"] == 400
        })
        .await;
    assert_eq!(last_document.json()["state"], "playing");
    // Seen or still to come: waiting for the session document above may have taken it already.
    f.probe
        .expect_seen(SOON, "the activities summary with the last progress", |m: &Msg| {
            m.topic == "plex/test/activities" && m.json()["progress"] == 20
        })
        .await;
    // Bounded negative check: what the throttle still sends within 1.2 s (at most one more of each).
    wait::observe(Duration::from_millis(1_200)).await;
    let documents = f.probe.history_on("plex/test/sessions/45").len() - documents_before;
    let summaries = f.probe.history_on("plex/test/activities").len() - summaries_before;
    assert!((1..=3).contains(&documents), "20 progress-only updates in 0.4 s gave {documents} session documents");
    assert!((1..=3).contains(&summaries), "20 activity updates in 0.4 s gave {summaries} summaries");
    assert_eq!(f.probe.history_on("plex/test/playing").len(), 21, "every notification is forwarded live");
    assert_eq!(f.probe.history_on("plex/test/activity").len(), 21);
    assert_eq!(retained_json(&f, "plex/test/activities/scan-9").await.expect("activity")["Activity"]["progress"], 20);

    // A state change is not held back.
    f.pms.push_text(&playing("45", "paused", 420));
    assert_eq!(next_event(&mut f.probe, "playback").await["event_type"], "pause");
    let paused = f.probe.history_on("plex/test/sessions/45").last().map(Msg::json).expect("document");
    assert_eq!(paused["state"], "paused", "the document went out with the event");
    f.pms.push_text(&activity_progress("ended", 20));
    f.probe
        .expect(SOON, "the summary without the activity", |m: &Msg| {
            m.topic == "plex/test/activities" && m.json()["count"] == 0
        })
        .await;
}
