//! The core bridge end to end: the real daemon binary between a fake PMS (WebSocket, real wire format) and a real
//! Mosquitto, observed only through MQTT topics, the fake server's records and the process itself.

mod support;

use std::time::{Duration, Instant};

use support::fake_pms::FakePmsConfig;
use support::fixture::Fixture;
use support::frames::activity;
use support::samples::{every_type, fold, is_raw_notification_topic};
use support::wait::{self, SOON};
use support::{retained, test_config, Bridge, BridgeConfig, FakePms, Mosquitto, Msg, Probe, TokenFile};

async fn start_with(pms: FakePmsConfig, edit: impl FnOnce(BridgeConfig) -> BridgeConfig) -> Fixture {
    let f = Fixture::connected_with(pms, |_| {}, edit).await;
    assert!(f.pms.wait_for_ws_connection_count(1, SOON).await, "the fake PMS saw no WebSocket");
    f
}

async fn start() -> Fixture {
    start_with(FakePmsConfig::default(), |c| c).await
}

/// The live, non-empty messages on the raw notification topics, as `(topic, payload)` in arrival order.
fn live_items(msgs: &[Msg]) -> Vec<(String, String)> {
    msgs.iter()
        .filter(|m| !m.retain && !m.payload.is_empty())
        // Only the raw notification topics: not the retained state and derived events beside them.
        .filter(|m| is_raw_notification_topic(&m.topic, "test"))
        .map(|m| (m.topic.clone(), m.text()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notification_type_arrives_byte_for_byte_and_in_order() {
    let mut f = start().await;
    let samples = every_type();
    let expected: Vec<(String, String)> =
        samples.iter().flat_map(|s| s.items.iter().map(move |item| (s.topic("test"), (*item).to_owned()))).collect();
    for sample in &samples {
        assert_eq!(f.pms.push_text(&sample.ws_frame()), 1);
    }
    let deadline = Instant::now() + SOON;
    let mut got = Vec::new();
    while got.len() < expected.len() && Instant::now() < deadline {
        if let Some(msg) = f.probe.next(Duration::from_millis(200)).await {
            got.extend(live_items(&[msg]));
        }
    }
    assert_eq!(got, expected, "every item of every frame, on the folded type topic, unchanged, in order");
    assert_eq!(f.pms.ws_connections_total(), 1, "no reconnect was needed");
    // A sample of the folding, spelled out for the reader.
    assert_eq!(fold("transcodeSession.update"), "transcodesession_update");
    assert!(f.probe.history_on("plex/test/transcodesession_update").len() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_carries_token_header_client_headers_and_filters() {
    let f = start().await;
    assert_eq!(f.pms.last_filters(), Some(Some("-log".to_owned())), "filters passed through");
    let upgrade = f.pms.requests_to("/:/websockets/notifications");
    let upgrade = upgrade.last().expect("an upgrade request");
    assert_eq!(upgrade.header("x-plex-token"), Some(f.pms.token().as_str()));
    assert_eq!(upgrade.query_param("X-Plex-Token"), None, "the token never travels in the URL");
    assert!(upgrade.header("x-plex-client-identifier").is_some_and(|id| !id.is_empty()));
    assert_eq!(upgrade.header("x-plex-product"), Some("plex-mqtt-bridge"));
    assert!(upgrade.header("x-plex-version").is_some());
    let identity = f.pms.requests_to("/");
    assert!(identity
        .iter()
        .all(|r| r.header("x-plex-client-identifier") == upgrade.header("x-plex-client-identifier")));
    // The retained info document names the server and never the token.
    let info = retained(f.broker.port(), "plex/test/info").await;
    let info: serde_json::Value = serde_json::from_slice(&info["plex/test/info"]).expect("info is JSON");
    assert_eq!(info["friendly_name"], "Fake Plex");
    assert_eq!(info["transport"], "websocket");
    assert_eq!(info["url"], f.pms.url());
    assert!(!info.to_string().contains(&f.pms.token()));
    let bridge_info = retained(f.broker.port(), "plex/bridge/info").await;
    let bridge_info: serde_json::Value = serde_json::from_slice(&bridge_info["plex/bridge/info"]).expect("JSON");
    assert_eq!(bridge_info["servers"], serde_json::json!(["test"]));
    assert!(bridge_info["started_at"].as_str().is_some_and(|s| s.ends_with('Z')));
}

/// The scan this file's activity tests follow.
const SCAN: &str = "A1b2-C3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_is_retained_while_running_and_cleared_when_it_ends() {
    let mut f = start().await;
    let topic = "plex/test/activities/a1b2-c3";
    f.pms.push_text(&activity(SCAN, "started", 0));
    f.pms.push_text(&activity(SCAN, "updated", 42));
    f.probe.expect(SOON, "activity progress 42", |m| m.topic == topic && m.text().contains("\"progress\":42")).await;
    let now = retained(f.broker.port(), "plex/test/activities/+").await;
    let held = String::from_utf8(now.get(topic).cloned().unwrap_or_default()).unwrap_or_default();
    assert!(held.contains("\"event\":\"updated\"") && held.contains("\"progress\":42"), "latest progress: {held}");
    f.pms.push_text(&activity(SCAN, "ended", 100));
    f.probe.expect(SOON, "activity cleared", |m| m.topic == topic && m.payload.is_empty()).await;
    let after = retained(f.broker.port(), "plex/test/activities/+").await;
    assert!(after.is_empty(), "a fresh subscriber sees no activity: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_reconnects_and_later_events_arrive() {
    let mut f = start().await;
    // The resync after connecting opens REST connections of its own; let them finish, so only the
    // notification socket is dropped.
    assert!(f.pms.wait_for_requests("/status/sessions", 1, SOON).await);
    assert!(f.pms.wait_for_requests("/activities", 1, SOON).await);
    assert!(f.pms.wait_for_http_idle(SOON).await, "the REST connections of the resync closed");
    assert_eq!(f.pms.drop_connections(), 1);
    f.probe.expect_payload("plex/test/state", "disconnected", SOON).await;
    f.probe.expect_payload("plex/test/state", "connected", SOON).await;
    assert!(f.pms.wait_for_ws_connection_count(1, SOON).await);
    assert_eq!(f.pms.ws_connections_total(), 2);
    let sample = &every_type()[0];
    f.pms.push_text(&sample.ws_frame());
    f.probe.expect_payload("plex/test/playing", sample.items[0], SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_token_shows_unauthorized_and_a_fixed_token_file_reconnects_without_restart() {
    let mut f = Fixture::launch(FakePmsConfig::default(), |c| c).await;
    f.token.set("an-old-revoked-token");
    // The bridge may have read the good token already; make sure it is rejected from now on.
    f.pms.set_token("the-new-token");
    f.pms.drop_connections();
    f.probe.expect_payload("plex/test/state", "unauthorized", SOON).await;
    // It keeps retrying slowly (backoff_max = 1s here) and stays up: the rate over a 2.5 s window.
    wait::observe(Duration::from_millis(2500)).await;
    assert!(f.bridge.is_running(), "a rejected token is not a reason to exit");
    let rejected = f.pms.requests().iter().filter(|r| r.status == 401).count();
    assert!(
        (2..=5).contains(&rejected),
        "retries at the backoff cap, not a storm: {rejected} rejected requests in 2.5 s"
    );
    let logs = f.bridge.logs();
    assert_eq!(logs.matches("token rejected by the Plex server").count(), 1, "logged once per outage:\n{logs}");
    f.token.set("the-new-token\n");
    f.probe.expect_payload("plex/test/state", "connected", SOON).await;
    assert!(f.bridge.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_server_is_detected_within_the_idle_timeout() {
    let mut f = start().await;
    let pings_before = f.pms.pings_received();
    wait::until("a ping from the bridge", SOON, || f.pms.pings_received() > pings_before).await;
    assert!(f.pms.pings_received() > pings_before, "the bridge pings the server");
    let stalled_at = Instant::now();
    f.pms.stall(true);
    f.probe.expect_payload("plex/test/state", "disconnected", SOON).await;
    let detected = stalled_at.elapsed();
    // idle_timeout is 1 s in the test config; allow scheduling slack but not a second idle period.
    assert!(detected < Duration::from_millis(1800), "stall detected after {detected:?}");
    f.probe.expect_payload("plex/test/state", "connected", SOON).await;
    assert!(f.pms.ws_connections_total() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_gets_all_retained_state_back() {
    let mut f = start().await;
    f.pms.push_text(&activity(SCAN, "updated", 7));
    f.probe.expect(SOON, "activity", |m| m.topic == "plex/test/activities/a1b2-c3").await;
    f.broker.restart();
    assert!(f.probe.wait_for_connections(2, SOON).await, "probe reconnected to the restarted broker");
    let wanted =
        ["plex/bridge/state", "plex/bridge/info", "plex/test/state", "plex/test/info", "plex/test/activities/a1b2-c3"];
    let deadline = Instant::now() + SOON;
    let mut now = retained(f.broker.port(), "plex/#").await;
    while !wanted.iter().all(|t| now.contains_key(*t)) && Instant::now() < deadline {
        now = retained(f.broker.port(), "plex/#").await;
    }
    for topic in wanted {
        assert!(now.contains_key(topic), "{topic} is retained again after the broker restart: {:?}", now.keys());
    }
    assert_eq!(now["plex/bridge/state"], b"online");
    assert_eq!(now["plex/test/state"], b"connected");
    assert!(String::from_utf8_lossy(&now["plex/test/activities/a1b2-c3"]).contains("\"progress\":7"));
    // Live events flow again too.
    let sample = &every_type()[3];
    f.pms.push_text(&sample.ws_frame());
    f.probe.expect_payload("plex/test/status", sample.items[0], SOON).await;
    // A restart is not taken for another client with the same client id (the session had lasted seconds only).
    let logs = f.bridge.logs();
    assert!(!logs.contains("mqtt.client_id"), "a broker restart named a wrong cause:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_with_the_same_id_is_named_from_evidence() {
    let client_id = format!("shared-id-{}", std::process::id());
    let id = client_id.clone();
    let f = start_with(FakePmsConfig::default(), move |c| c.mqtt(|m| m.client_id = Some(id))).await;
    // Another client with the same id keeps connecting: each time it takes the session over, and each time the
    // bridge takes it back.
    let port = f.broker.port();
    let thief = tokio::spawn(async move {
        loop {
            let options = support::mqtt::mqtt_options(&client_id, port);
            let (_client, mut eventloop) = rumqttc::AsyncClient::builder(options).capacity(8).build();
            while eventloop.poll().await.is_ok() {}
        }
    });
    let named = f.bridge.wait_for_log("the broker keeps closing the connection", support::SLOW).await;
    thief.abort();
    let logs = f.bridge.logs();
    assert!(named, "no takeover named:\n{logs}");
    assert!(logs.contains("same mqtt.client_id"), "{logs}");
    assert_eq!(logs.matches("the broker keeps closing the connection").count(), 1, "named once:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_skipped_and_the_session_goes_on() {
    let mut f = start().await;
    f.pms.push_text("{\"NotificationContainer\":{\"type\":\"playing\",");
    f.pms.push_binary(&[0x00, 0xff, 0x10]);
    f.pms.push_text("[1,2,3]");
    f.pms.push_text("{\"NotificationContainer\":{\"size\":1,\"X\":[{}]}}");
    f.pms.push_text("{\"NotificationContainer\":{\"type\":\"status\",\"size\":3,\"StatusNotification\":[]}}");
    f.pms.push_text("{\"NotificationContainer\":{\"type\":\"brand+new/type#\",\"size\":1,\"Thing\":[{\"a\":1}]}}");
    let sample = &every_type()[0];
    f.pms.push_text(&sample.ws_frame());
    f.probe.expect_payload("plex/test/brand_new_type", "{\"a\":1}", SOON).await;
    f.probe.expect_payload("plex/test/playing", sample.items[0], SOON).await;
    assert_eq!(f.pms.ws_connections_total(), 1, "bad frames do not cost the session");
    assert!(f.bridge.is_running());
    let logs = f.bridge.logs();
    assert!(logs.matches("notification skipped").count() >= 3, "each bad frame is logged:\n{logs}");
    assert!(logs.contains("binary WebSocket frame ignored"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_publishes_offline_and_exits_zero_within_two_seconds() {
    let mut f = start().await;
    let asked = Instant::now();
    f.bridge.sigterm();
    let status = f.bridge.wait_exit(Duration::from_secs(5)).await.expect("the bridge exits");
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "{}", f.bridge.logs());
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    let now = retained(f.broker.port(), "plex/#").await;
    assert_eq!(now.get("plex/bridge/state").map(Vec::as_slice), Some(&b"offline"[..]));
    assert_eq!(now.get("plex/test/state").map(Vec::as_slice), Some(&b"disconnected"[..]));
    assert!(f.pms.wait_for_ws_connection_count(0, SOON).await, "the session was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_bridge_is_marked_offline_by_its_last_will() {
    let mut f = start().await;
    f.bridge.kill();
    // Mosquitto publishes the will when it notices the broken connection (at once for a closed socket).
    f.probe.expect_payload("plex/bridge/state", "offline", SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn singular_websocket_path_is_used_when_the_plural_one_is_missing() {
    let config = FakePmsConfig { plural_ws: false, singular_ws: true, ..FakePmsConfig::default() };
    let mut f = start_with(config, |c| c).await;
    let connections = f.pms.ws_connections();
    assert_eq!(connections.last().map(|c| c.path.as_str()), Some("/:/websocket/notifications"));
    f.pms.drop_connections();
    f.probe.expect_payload("plex/test/state", "disconnected", SOON).await;
    f.probe.expect_payload("plex/test/state", "connected", SOON).await;
    assert_eq!(f.pms.count_requests("/:/websockets/notifications"), 1, "the working path is remembered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_defaults_to_the_folded_friendly_name() {
    let config = FakePmsConfig { friendly_name: "Wohnzimmer Plex (4K)".into(), ..FakePmsConfig::default() };
    let mut f = Fixture::launch(config, |c| c.server_name(None)).await;
    f.probe.expect_payload("plex/wohnzimmer_plex_4k/state", "connected", SOON).await;
    let sample = &every_type()[4];
    f.pms.push_text(&sample.ws_frame());
    f.probe.expect_payload("plex/wohnzimmer_plex_4k/reachability", sample.items[0], SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs_even_at_trace_level() {
    const USER: &str = "bridge";
    const PASSWORD: &str = "Mqtt-Secret-7rT2";
    let broker = Mosquitto::start_with_password(USER, PASSWORD);
    let pms = FakePms::start_default().await;
    let token = TokenFile::new(&pms.token());
    let mut probe = Probe::subscribe_with_credentials(broker.port(), USER, PASSWORD, &["plex/#"]).await;
    let config = test_config(&broker.url(), &pms.url(), token.path())
        .mqtt(|m| {
            m.username = Some(USER.to_owned());
            m.password = Some(PASSWORD.to_owned());
        })
        .log_level("trace");
    let mut bridge = Bridge::start(&config);
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    for sample in every_type() {
        pms.push_text(&sample.ws_frame());
    }
    probe.expect_topic("plex/test/somefutureevent", SOON).await;
    pms.drop_connections();
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    pms.set_token("Rotated-Tok-99");
    pms.drop_connections();
    probe.expect_payload("plex/test/state", "unauthorized", SOON).await;
    bridge.sigterm();
    assert_eq!(bridge.wait_exit(SOON).await.and_then(|s| s.code()), Some(0));
    let logs = bridge.logs();
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "the test ran with verbose logs:\n{logs}");
    assert!(!logs.contains(&pms.token()) && !logs.contains("Rotated-Tok-99"), "token in logs:\n{logs}");
    assert!(!logs.contains(PASSWORD), "MQTT password in logs:\n{logs}");
    assert!(pms.requests().iter().all(|r| !r.target.contains(&pms.token())), "token in a request URL");
}
