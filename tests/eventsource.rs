//! The EventSource transport end to end, and its equivalence with the WebSocket transport: the same
//! notifications must produce the same MQTT messages whichever transport carried them.

mod support;

use std::time::{Duration, Instant};

use support::config::Plex;
use support::fake_pms::{FakePmsConfig, SSE_PATH};
use support::fixture::Fixture;
use support::samples::{every_type, is_raw_notification_topic};
use support::wait::{self, SOON};
use support::{retained, Msg, Transport};

/// A bridge with `transport` set (None: the default, auto) and `[plex]` changed by `plex`, against a fake PMS
/// built from `pms`.
async fn launch(pms: FakePmsConfig, transport: Option<Transport>, plex: impl FnOnce(&mut Plex)) -> Fixture {
    Fixture::launch(pms, |config| config.server(|s| s.transport = transport).plex(plex)).await
}

async fn connected(pms: FakePmsConfig, transport: Option<Transport>) -> Fixture {
    let mut f = launch(pms, transport, |_| {}).await;
    f.probe.expect_payload("plex/test/state", "connected", SOON).await;
    f
}

async fn info(f: &Fixture) -> serde_json::Value {
    let held = retained(f.broker.port(), "plex/test/info").await;
    serde_json::from_slice(held.get("plex/test/info").expect("info is retained")).expect("info is JSON")
}

/// The raw notification topics, as `(topic, payload)` in arrival order: every message on them is a live event.
/// Server state and info (which names the transport), session documents and derived events (which carry
/// timestamps) and activity state (compared separately, below) are left out.
fn live_items(msgs: &[Msg]) -> Vec<(String, String)> {
    msgs.iter().filter(|m| is_raw_notification_topic(&m.topic, "test")).map(|m| (m.topic.clone(), m.text())).collect()
}

/// What one transport produced: the live items in order, and the retained activity state a fresh subscriber
/// sees at the end. (Retained state is compared by its final value: the publisher sends only the latest value
/// of a topic that changed twice before the broker took the first, by design.)
async fn run_every_type(transport: Transport) -> (Vec<(String, String)>, std::collections::BTreeMap<String, Vec<u8>>) {
    let mut f = connected(FakePmsConfig::default(), Some(transport)).await;
    for sample in every_type() {
        let reached = match transport {
            Transport::WebSocket => f.pms.push_text(&sample.ws_frame()),
            _ => f.pms.push_sse(sample.sse_events().as_bytes()),
        };
        assert_eq!(reached, 1, "pushed over {transport:?}");
    }
    // The unknown type is last: when it arrives, everything before it has too. The activity's retained state
    // (its topic and the summary) goes out beside the live messages; wait until both were published.
    f.probe.expect_topic("plex/test/somefutureevent", SOON).await;
    let activity = "plex/test/activities/0f3c2a9e-5b1d-4c6e-9a7b-2d8e4f6a1b3c";
    f.probe.expect_seen(SOON, activity, |m| m.topic == activity).await;
    f.probe
        .expect_seen(SOON, "the summary with the activity", |m| {
            m.topic == "plex/test/activities" && m.json()["count"] == 1
        })
        .await;
    let activities = retained(f.broker.port(), "plex/test/activities/#").await;
    (live_items(&f.probe.history()), activities)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_transports_produce_identical_mqtt_messages() {
    let (ws_live, ws_state) = run_every_type(Transport::WebSocket).await;
    let (sse_live, sse_state) = run_every_type(Transport::EventSource).await;
    let items: usize = every_type().iter().map(|s| s.items.len()).sum();
    assert_eq!(ws_live.len(), items, "one message per item");
    // Topic by topic, byte by byte, in the same order.
    assert_eq!(ws_live, sse_live);
    assert_eq!(ws_state.len(), 2, "the activity and the activities summary: {:?}", ws_state.keys());
    assert_eq!(ws_state, sse_state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_request_carries_token_headers_and_filters() {
    let f = connected(FakePmsConfig::default(), Some(Transport::EventSource)).await;
    let request = f.pms.requests_to(SSE_PATH).pop().expect("the stream was requested");
    assert_eq!(request.header("accept"), Some("text/event-stream"));
    assert_eq!(request.header("x-plex-token"), Some(f.pms.token().as_str()));
    assert_eq!(request.query_param("X-Plex-Token"), None);
    assert!(request.header("x-plex-client-identifier").is_some());
    assert_eq!(request.query_param("filters"), Some("-log"));
    assert_eq!(info(&f).await["transport"], "eventsource");
    assert_eq!(f.pms.ws_connections_total(), 0, "eventsource means no WebSocket attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_prefers_websocket_and_falls_back_to_eventsource() {
    let both = connected(FakePmsConfig::default(), None).await;
    assert_eq!(info(&both).await["transport"], "websocket");
    assert_eq!(both.pms.sse_connection_count(), 0);
    drop(both);

    let no_websocket = FakePmsConfig { plural_ws: false, singular_ws: false, ..FakePmsConfig::default() };
    let mut f = connected(no_websocket, None).await;
    assert_eq!(info(&f).await["transport"], "eventsource");
    assert!(f.pms.wait_for_sse_connection_count(1, SOON).await);
    assert!(f.bridge.logs().contains("using EventSource"), "the fallback is logged:\n{}", f.bridge.logs());
    let sample = &every_type()[3];
    f.pms.push_sse(sample.sse_events().as_bytes());
    f.probe.expect_payload("plex/test/status", sample.items[0], SOON).await;
    // After a reconnect it goes straight to EventSource (the refusal is remembered).
    let ws_attempts = f.pms.count_requests("/:/websockets/notifications");
    f.pms.drop_connections();
    f.probe.expect_payload("plex/test/state", "disconnected", SOON).await;
    f.probe.expect_payload("plex/test/state", "connected", SOON).await;
    assert_eq!(f.pms.count_requests("/:/websockets/notifications"), ws_attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_reconnects_within_two_ping_intervals() {
    let mut f = connected(FakePmsConfig::default(), Some(Transport::EventSource)).await;
    assert!(f.pms.wait_for_sse_connection_count(1, SOON).await);
    // The fake pings every 100 ms, so a healthy stream survives the bridge's 2 × 200 ms limit: no reconnect
    // within 800 ms.
    wait::observe_while(Duration::from_millis(800), || f.pms.sse_connections().len() == 1).await;
    assert_eq!(f.pms.sse_connections().len(), 1, "pings keep a quiet stream alive");
    let stalled_at = Instant::now();
    f.pms.stall(true);
    f.probe.expect_payload("plex/test/state", "disconnected", SOON).await;
    let detected = stalled_at.elapsed();
    assert!(detected < Duration::from_millis(1000), "2 × ping_interval is 400 ms; detected after {detected:?}");
    f.probe.expect_payload("plex/test/state", "connected", SOON).await;
    assert!(f.pms.sse_connections().len() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stream_reconnects_and_events_flow_again() {
    let mut f = connected(FakePmsConfig::default(), Some(Transport::EventSource)).await;
    f.pms.drop_connections();
    f.probe.expect_payload("plex/test/state", "disconnected", SOON).await;
    f.probe.expect_payload("plex/test/state", "connected", SOON).await;
    assert!(f.pms.wait_for_sse_connection_count(1, SOON).await);
    let sample = &every_type()[4];
    f.pms.push_sse(sample.sse_events().as_bytes());
    f.probe.expect_payload("plex/test/reachability", sample.items[0], SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_token_on_eventsource_is_unauthorized_until_fixed() {
    let mut f = launch(FakePmsConfig::default(), Some(Transport::EventSource), |_| {}).await;
    f.probe.expect_payload("plex/test/state", "connected", SOON).await;
    f.pms.set_token("new-token");
    f.pms.drop_connections();
    f.probe.expect_payload("plex/test/state", "unauthorized", SOON).await;
    assert!(f.bridge.is_running());
    f.token.set("new-token");
    f.probe.expect_payload("plex/test/state", "connected", SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_event_is_dropped_and_the_stream_goes_on() {
    let mut f =
        launch(FakePmsConfig::default(), Some(Transport::EventSource), |p| p.max_message_size = Some(4096)).await;
    f.probe.expect_payload("plex/test/state", "connected", SOON).await;
    let huge = format!("event: status\ndata: {{\"StatusNotification\":{{\"title\":\"{}\"}}}}\n\n", "x".repeat(20_000));
    // Sent in pieces, as a network would.
    for piece in huge.as_bytes().chunks(3000) {
        f.pms.push_sse(piece);
    }
    let sample = &every_type()[3];
    f.pms.push_sse(sample.sse_events().as_bytes());
    f.probe.expect_payload("plex/test/status", sample.items[0], SOON).await;
    assert_eq!(f.pms.sse_connections().len(), 1, "no reconnect was needed");
    assert!(f.probe.history_on("plex/test/status").len() == 1, "the huge event was not published");
    assert!(f.bridge.logs().contains("over plex.max_message_size dropped"), "{}", f.bridge.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_and_cr_line_ends_and_comments_are_understood() {
    let mut f = connected(FakePmsConfig::default(), Some(Transport::EventSource)).await;
    let item = r#"{"reachability":false}"#;
    let crlf =
        format!(": keep-alive comment\r\nevent: reachability\r\ndata: {{\"ReachabilityNotification\":{item}}}\r\n\r\n");
    f.pms.push_sse(crlf.as_bytes());
    f.probe.expect_payload("plex/test/reachability", item, SOON).await;
    let cr = format!("event: reachability\rdata: {{\"ReachabilityNotification\":[{item}]}}\r\r");
    f.pms.push_sse(cr.as_bytes());
    f.probe.expect(SOON, "second reachability", |m| m.topic == "plex/test/reachability").await;
    assert_eq!(f.probe.history_on("plex/test/reachability").len(), 2);
}
