//! Malformed notifications end to end (issue 7): the real daemon between a fake PMS sending garbage and a real
//! Mosquitto.
//!
//! For every kind of bad notification the bridge must not crash, must say so in one clear log line (counted in
//! `malformed_total` where it counts), must never put `/`, `+`, `#` or NUL from Plex data into a topic, and must
//! go on with the same session: a valid notification pushed afterwards arrives on MQTT, and only an oversized
//! WebSocket frame may cost a reconnect. Each case is followed by such a "marker" notification; since live
//! messages keep their order, the marker's arrival also means everything before it has been handled.

mod support;

use std::time::Duration;

use support::fake_pms::{CannedResponse, FakePmsConfig};
use support::frames::{frame, frame_typed};
use support::wait::SOON;
use support::{retained, test_config, Bridge, FakePms, Mosquitto, Msg, Probe, TokenFile, Transport};

/// The log line of a notification that could not be decoded (src/supervisor.rs).
const SKIPPED: &str = "notification skipped";
/// Nesting depth of the "deeply nested JSON" cases.
const DEPTH: usize = 10_000;
/// The size of the oversized frame or event: far over the default `plex.max_message_size` (1 MiB).
const HUGE: usize = 50 * 1024 * 1024;

/// A bridge on one transport with everything around it, and the count of markers pushed so far.
struct Fixture {
    broker: Mosquitto,
    pms: FakePms,
    _token: TokenFile,
    probe: Probe,
    bridge: Bridge,
    transport: Transport,
    markers: usize,
}

impl Fixture {
    /// Broker, fake PMS, probe on `plex/#` and a connected bridge with `transport` and the default limits.
    async fn start(transport: Transport) -> Fixture {
        Self::start_with(transport, |_| {}).await
    }

    /// Like [`Fixture::start`], with `setup` applied to the fake PMS before the bridge starts.
    async fn start_with(transport: Transport, setup: impl FnOnce(&FakePms)) -> Fixture {
        let broker = Mosquitto::start();
        // The fake's own `event: ping` blocks are written between the test's pushes, so they could land inside
        // an event the test sends in pieces: over EventSource the fake does not ping, and the bridge's
        // liveness window (2 × ping_interval) is made longer than any pause of these tests instead.
        let pms_config = match transport {
            Transport::WebSocket => FakePmsConfig::default(),
            _ => FakePmsConfig { sse_ping_interval: Duration::from_secs(3600), ..FakePmsConfig::default() },
        };
        let pms = FakePms::start(pms_config).await;
        setup(&pms);
        let token = TokenFile::new(&pms.token());
        let mut probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
        let mut config = test_config(&broker.url(), &pms.url(), token.path()).transport(transport);
        if transport == Transport::EventSource {
            config = config.plex(|p| {
                p.ping_interval = Some(Duration::from_secs(5));
                p.idle_timeout = Some(Duration::from_secs(15));
            });
        }
        let bridge = Bridge::start(&config);
        probe.expect_payload("plex/test/state", "connected", SOON).await;
        let open = match transport {
            Transport::WebSocket => pms.wait_for_ws_connection_count(1, SOON).await,
            _ => pms.wait_for_sse_connection_count(1, SOON).await,
        };
        assert!(open, "the fake PMS saw no {transport:?} connection");
        Fixture { broker, pms, _token: token, probe, bridge, transport, markers: 0 }
    }

    /// Sends one notification as the transport carries it: a WebSocket text frame, or raw bytes of an
    /// EventSource stream (whole `event:`/`data:` blocks or any fragment).
    fn push(&self, bytes: &[u8]) {
        let reached = match self.transport {
            Transport::WebSocket => {
                self.pms.push_text(std::str::from_utf8(bytes).expect("a WebSocket text frame is UTF-8"))
            }
            _ => self.pms.push_sse(bytes),
        };
        assert_eq!(reached, 1, "the push reached the bridge's one connection");
    }

    /// An SSE block `event: <event>` / `data: <data>` (pushed as raw bytes, so both may hold anything).
    fn push_event(&self, event: &[u8], data: &[u8]) {
        assert_eq!(self.transport, Transport::EventSource);
        let mut block = Vec::new();
        block.extend_from_slice(b"event: ");
        block.extend_from_slice(event);
        block.extend_from_slice(b"\ndata: ");
        block.extend_from_slice(data);
        block.extend_from_slice(b"\n\n");
        self.push(&block);
    }

    /// Pushes a valid `status` notification and waits for it: proof that the session goes on and that
    /// everything pushed before it has been handled.
    async fn marker(&mut self) {
        self.markers += 1;
        let item = format!(r#"{{"title":"marker {}"}}"#, self.markers);
        match self.transport {
            Transport::WebSocket => self.push(support::frames::status(&[&item]).as_bytes()),
            _ => self.push_event(b"status", format!(r#"{{"StatusNotification":{item}}}"#).as_bytes()),
        }
        self.probe.expect_payload("plex/test/status", &item, SOON).await;
    }

    /// Waits for `payload` on `topic`, also among the messages already taken (retained state may overtake the
    /// live messages and markers it was published with).
    async fn expect_seen(&mut self, topic: &str, payload: &str) {
        let what = format!("{topic} = {payload:?}");
        self.expect_seen_where(&what, |m| m.topic == topic && m.payload == payload.as_bytes()).await;
    }

    /// Like [`Fixture::expect_seen`] with any condition.
    async fn expect_seen_where(&mut self, what: &str, pred: impl Fn(&Msg) -> bool) {
        self.probe.expect_seen(SOON, what, pred).await;
    }

    /// The bridge's "notification skipped" log lines so far.
    fn skipped_lines(&self) -> Vec<String> {
        self.bridge.logs().lines().filter(|l| l.contains(SKIPPED)).map(str::to_owned).collect()
    }

    /// Pushes `bytes`, then a marker, and asserts that exactly one new "notification skipped" line was logged,
    /// that it shows the start of the input, and that `malformed_total` counts it.
    async fn expect_skipped(&mut self, what: &str, bytes: &[u8], shown_start: &str) {
        let before = self.skipped_lines().len();
        self.push(bytes);
        self.marker().await;
        self.assert_one_more_skip(what, before, shown_start);
    }

    /// Like [`Fixture::expect_skipped`] for an SSE block.
    async fn expect_event_skipped(&mut self, what: &str, event: &[u8], data: &[u8], shown_start: &str) {
        let before = self.skipped_lines().len();
        self.push_event(event, data);
        self.marker().await;
        self.assert_one_more_skip(what, before, shown_start);
    }

    fn assert_one_more_skip(&mut self, what: &str, before: usize, shown_start: &str) {
        let lines = self.skipped_lines();
        let logs = self.bridge.logs();
        assert_eq!(lines.len(), before + 1, "{what}: one `{SKIPPED}` line expected; log:\n{logs}");
        let line = lines.last().expect("one line");
        assert!(
            line.contains(&format!("malformed_total={}", lines.len())),
            "{what}: the skip is counted in malformed_total ({} so far): {line}",
            lines.len()
        );
        let preview = shown_start.escape_debug().to_string();
        assert!(line.contains(&preview), "{what}: the log line shows the start {preview:?} of the input: {line}");
        assert!(line.contains("error="), "{what}: the log line says why: {line}");
        assert!(self.bridge.is_running(), "{what}: the bridge died; log:\n{logs}");
    }

    /// Pushes `bytes`, then a marker; asserts that no skip was logged and that the messages on `topic` since
    /// the push are exactly `payloads`.
    async fn expect_published(&mut self, what: &str, bytes: &[u8], topic: &str, payloads: &[&[u8]]) {
        let (skips, seen) = (self.skipped_lines().len(), self.probe.history_on(topic).len());
        self.push(bytes);
        self.marker().await;
        self.assert_published(what, skips, seen, topic, payloads);
    }

    /// Like [`Fixture::expect_published`] for an SSE block.
    async fn expect_event_published(&mut self, what: &str, event: &[u8], data: &[u8], topic: &str, payloads: &[&[u8]]) {
        let (skips, seen) = (self.skipped_lines().len(), self.probe.history_on(topic).len());
        self.push_event(event, data);
        self.marker().await;
        self.assert_published(what, skips, seen, topic, payloads);
    }

    fn assert_published(&mut self, what: &str, skips: usize, seen: usize, topic: &str, payloads: &[&[u8]]) {
        let got: Vec<Vec<u8>> = self.probe.history_on(topic)[seen..].iter().map(|m| m.payload.clone()).collect();
        let want: Vec<Vec<u8>> = payloads.iter().map(|p| p.to_vec()).collect();
        assert!(
            got == want,
            "{what}: on {topic} expected {:?}, got {:?}",
            want.iter().map(|p| String::from_utf8_lossy(p).chars().take(200).collect::<String>()).collect::<Vec<_>>(),
            got.iter().map(|p| String::from_utf8_lossy(p).chars().take(200).collect::<String>()).collect::<Vec<_>>()
        );
        assert_eq!(self.skipped_lines().len(), skips, "{what}: nothing was skipped; log:\n{}", self.bridge.logs());
        assert!(self.bridge.is_running(), "{what}: the bridge died; log:\n{}", self.bridge.logs());
    }

    /// The topic contract over everything received: under `plex/`, no wildcard, no NUL, no empty level.
    fn assert_topics_clean(&self) {
        for msg in self.probe.history() {
            let topic = &msg.topic;
            assert!(topic.starts_with("plex/"), "topic outside the prefix: {topic:?}");
            assert!(!topic.contains(['+', '#', '\0']), "wildcard or NUL in topic {topic:?}");
            assert!(!topic.split('/').any(str::is_empty), "empty topic level in {topic:?}");
        }
    }

    /// The session never ended: one connection of the transport in all, and no reconnect logged.
    fn assert_same_session(&self) {
        let logs = self.bridge.logs();
        match self.transport {
            Transport::WebSocket => assert_eq!(self.pms.ws_connections_total(), 1, "no reconnect; log:\n{logs}"),
            _ => assert_eq!(self.pms.sse_connections().len(), 1, "no reconnect; log:\n{logs}"),
        }
        assert!(!logs.contains("session ended"), "the session did not end; log:\n{logs}");
    }
}

fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn nested_objects(depth: usize) -> String {
    format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_bad_frames_are_skipped_or_folded_and_the_session_goes_on() {
    let mut f = Fixture::start(Transport::WebSocket).await;

    // Truncated JSON, at several points.
    let truncated = r#"{"NotificationContainer":{"type":"playing","size":1,"PlaySessionStateNotification":[{"sessionKey":"45","sta"#;
    f.expect_skipped("truncated inside an item", truncated.as_bytes(), r#"{"NotificationContainer":{"type":"playing""#)
        .await;
    f.expect_skipped(
        "truncated after the envelope key",
        br#"{"NotificationContainer":"#,
        r#"{"NotificationContainer":"#,
    )
    .await;
    f.expect_skipped("a lone brace", b"{", "{").await;

    // Deeply nested JSON (10,000 levels) where the container should be, and as the whole frame.
    let deep_container = format!(r#"{{"NotificationContainer":{}}}"#, nested_arrays(DEPTH));
    f.expect_skipped(
        "10,000 nested arrays as the container",
        deep_container.as_bytes(),
        r#"{"NotificationContainer":[[["#,
    )
    .await;
    f.expect_skipped("10,000 nested objects as the frame", nested_objects(DEPTH).as_bytes(), r#"{"a":{"a":"#).await;
    f.expect_skipped("10,000 unclosed arrays", "[".repeat(DEPTH).as_bytes(), "[[[[").await;
    // …and inside an item of a valid notification: items are forwarded as sent, never re-parsed in full.
    let deep_item = format!(r#"{{"x":{}}}"#, nested_arrays(DEPTH));
    f.expect_published(
        "10,000 nested arrays inside an item",
        frame("deep", "Deep", &[&deep_item]).as_bytes(),
        "plex/test/deep",
        &[deep_item.as_bytes()],
    )
    .await;
    let deep_playing = format!(r#"{{"sessionKey":"9","state":"playing","x":{}}}"#, nested_objects(DEPTH));
    f.expect_published(
        "10,000 nested objects inside a playing item",
        frame("playing", "PlaySessionStateNotification", &[&deep_playing]).as_bytes(),
        "plex/test/playing",
        &[deep_playing.as_bytes()],
    )
    .await;
    let deep_activity = format!(r#"{{"event":"updated","uuid":"deep-1","Activity":{}}}"#, nested_objects(DEPTH));
    f.expect_published(
        "10,000 nested objects inside an activity",
        frame("activity", "ActivityNotification", &[&deep_activity]).as_bytes(),
        "plex/test/activity",
        &[deep_activity.as_bytes()],
    )
    .await;

    // Invalid UTF-8 as a binary frame: ignored (PMS sends text frames), logged, the session goes on.
    let skips = f.skipped_lines().len();
    assert_eq!(f.pms.push_binary(b"\xff\xfe{\"NotificationContainer\":\xc3\x28\x00}"), 1);
    f.marker().await;
    assert!(f.bridge.logs().contains("binary WebSocket frame ignored"), "log:\n{}", f.bridge.logs());
    assert_eq!(f.skipped_lines().len(), skips, "a binary frame is ignored, not counted as malformed");

    // NUL, `+`, `#` and `/` in notification types are folded away.
    let item = r#"{"k":1}"#;
    f.expect_published(
        "NUL + # / in the type",
        frame_typed(r#""a\u0000b+c#d/e F""#, "Thing", &[item]).as_bytes(),
        "plex/test/a_b_c_d_e_f",
        &[item.as_bytes()],
    )
    .await;
    f.expect_published(
        "a type of nothing but wildcards",
        frame_typed(r#""+/#\u0000""#, "Thing", &[item]).as_bytes(),
        "plex/test/unknown",
        &[item.as_bytes()],
    )
    .await;
    f.expect_published(
        "a $SYS-like type",
        frame_typed(r#""$SYS/broker/#""#, "Thing", &[item]).as_bytes(),
        "plex/test/sys_broker",
        &[item.as_bytes()],
    )
    .await;

    // …and in activity uuids: the retained activity topic is folded, and cleared when the activity ends.
    let started = r#"{"event":"started","uuid":"Up/+#\u0000Load","Activity":{"uuid":"Up/+#\u0000Load","type":"library.refresh.items","title":"x","progress":1}}"#;
    f.expect_published(
        "NUL + # / in an activity uuid",
        frame("activity", "ActivityNotification", &[started]).as_bytes(),
        "plex/test/activity",
        &[started.as_bytes()],
    )
    .await;
    f.expect_seen("plex/test/activities/up_load", started).await;
    let ended = r#"{"event":"ended","uuid":"Up/+#\u0000Load","Activity":{"uuid":"Up/+#\u0000Load"}}"#;
    f.push(frame("activity", "ActivityNotification", &[ended]).as_bytes());
    f.expect_seen("plex/test/activities/up_load", "").await;

    // Numbers where strings are expected: passed through as sent.
    f.expect_published(
        "a numeric type",
        frame_typed("5", "Thing", &[item]).as_bytes(),
        "plex/test/5",
        &[item.as_bytes()],
    )
    .await;
    f.expect_published(
        "a fractional numeric type",
        frame_typed("-2.5e3", "Thing", &[item]).as_bytes(),
        "plex/test/-2_5e3",
        &[item.as_bytes()],
    )
    .await;
    let playing = r#"{"sessionKey":45,"ratingKey":217468,"viewOffset":"1000","state":"paused"}"#;
    f.expect_published(
        "a numeric sessionKey",
        frame("playing", "PlaySessionStateNotification", &[playing]).as_bytes(),
        "plex/test/playing",
        &[playing.as_bytes()],
    )
    .await;
    let numeric_uuid = r#"{"event":"updated","uuid":7,"Activity":{"uuid":7,"progress":"3"}}"#;
    f.expect_published(
        "a numeric activity uuid",
        frame("activity", "ActivityNotification", &[numeric_uuid]).as_bytes(),
        "plex/test/activity",
        &[numeric_uuid.as_bytes()],
    )
    .await;
    // A type that is neither a string nor a number cannot name a topic: skipped.
    f.expect_skipped(
        "a boolean type",
        frame_typed("true", "Thing", &[item]).as_bytes(),
        r#"{"NotificationContainer":{"type":true"#,
    )
    .await;
    f.expect_skipped(
        "an object type",
        frame_typed(r#"{"a":1}"#, "Thing", &[item]).as_bytes(),
        r#"{"NotificationContainer":{"type":{"#,
    )
    .await;

    // Duplicate keys: the last `type` (and the last container) wins; every array is forwarded, items verbatim.
    let dup_item = r#"{"reachability":true,"reachability":false}"#;
    let dup_type = format!(
        r#"{{"NotificationContainer":{{"type":"status","size":1,"type":"reachability","ReachabilityNotification":[{dup_item}]}}}}"#
    );
    f.expect_published("duplicate `type` keys", dup_type.as_bytes(), "plex/test/reachability", &[dup_item.as_bytes()])
        .await;
    let dup_container = format!(
        r#"{{"NotificationContainer":{},"NotificationContainer":{}}}"#,
        frame("first", "A", &[r#"{"n":1}"#])
            .strip_prefix(r#"{"NotificationContainer":"#)
            .unwrap()
            .strip_suffix('}')
            .unwrap(),
        frame("second", "A", &[r#"{"n":2}"#])
            .strip_prefix(r#"{"NotificationContainer":"#)
            .unwrap()
            .strip_suffix('}')
            .unwrap(),
    );
    f.expect_published("duplicate containers", dup_container.as_bytes(), "plex/test/second", &[br#"{"n":2}"#]).await;
    assert!(f.probe.history_on("plex/test/first").is_empty(), "the first of two containers is not used");
    let dup_arrays = r#"{"NotificationContainer":{"type":"dup","size":1,"X":[{"n":1}],"X":[{"n":2}]}}"#;
    f.expect_published("duplicate array keys", dup_arrays.as_bytes(), "plex/test/dup", &[br#"{"n":1}"#, br#"{"n":2}"#])
        .await;

    // Empty arrays: nothing to publish, nothing wrong.
    f.expect_published("an empty array", frame("empty", "Empty", &[]).as_bytes(), "plex/test/empty", &[]).await;
    f.expect_published(
        "an empty array with size 3",
        br#"{"NotificationContainer":{"type":"empty","size":3,"Empty":[]}}"#,
        "plex/test/empty",
        &[],
    )
    .await;

    // `size` disagreeing with the array: the array is what counts.
    f.expect_published(
        "size 0 with two items",
        br#"{"NotificationContainer":{"type":"sized","size":0,"S":[{"i":1},{"i":2}]}}"#,
        "plex/test/sized",
        &[br#"{"i":1}"#, br#"{"i":2}"#],
    )
    .await;
    f.expect_published(
        "size 99 with one item",
        br#"{"NotificationContainer":{"type":"sized","size":99,"S":[{"i":3}]}}"#,
        "plex/test/sized",
        &[br#"{"i":3}"#],
    )
    .await;
    f.expect_published(
        "a string size",
        br#"{"NotificationContainer":{"type":"sized","size":"two","S":[{"i":4}]}}"#,
        "plex/test/sized",
        &[br#"{"i":4}"#],
    )
    .await;

    f.assert_topics_clean();
    f.assert_same_session();
    assert!(f.bridge.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_oversized_frame_ends_the_session_and_the_bridge_reconnects() {
    let mut f = Fixture::start(Transport::WebSocket).await;
    f.marker().await;
    let huge = format!(
        r#"{{"NotificationContainer":{{"type":"status","size":1,"StatusNotification":[{{"title":"{}"}}]}}}}"#,
        "x".repeat(HUGE)
    );
    f.push(huge.as_bytes());
    drop(huge);
    f.probe.expect_payload("plex/test/state", "disconnected", SOON).await;
    f.probe.expect_payload("plex/test/state", "connected", SOON).await;
    assert!(f.pms.wait_for_ws_connections_total(2, SOON).await, "the bridge reconnected");
    assert!(f.pms.wait_for_ws_connection_count(1, SOON).await);
    // Later frames are delivered on the new session.
    f.marker().await;
    assert!(f.bridge.is_running(), "the bridge survives a 50 MB frame");
    let logs = f.bridge.logs();
    let ended = logs
        .lines()
        .find(|l| l.contains("Plex notification session ended; reconnecting"))
        .unwrap_or_else(|| panic!("the end of the session is logged; log:\n{logs}"));
    assert!(ended.contains("Message too long"), "the log line names the cause: {ended}");
    assert!(ended.contains("retry_in="), "the log line says when it retries: {ended}");
    assert_eq!(f.pms.ws_connections_total(), 2, "exactly one reconnect");
    assert!(
        f.probe.history().iter().all(|m: &Msg| m.payload.len() < 1024 * 1024),
        "nothing over the limit was published"
    );
    f.assert_topics_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_bad_events_are_skipped_or_folded_and_the_stream_goes_on() {
    let mut f = Fixture::start(Transport::EventSource).await;

    // Truncated JSON.
    f.expect_event_skipped(
        "truncated data",
        b"playing",
        br#"{"PlaySessionStateNotification":{"sessionKey":"45","sta"#,
        r#"{"PlaySessionStateNotification":{"sessionKey":"45""#,
    )
    .await;
    // An event cut off by the stream before its blank line, completed by the next chunk: nothing is lost.
    f.push(b"event: status\ndata: {\"StatusNotification\":{\"title\":\"spl");
    f.push("it é\"}}\n\n".as_bytes());
    f.probe.expect_payload("plex/test/status", r#"{"title":"split é"}"#, SOON).await;

    // Deeply nested JSON (10,000 levels).
    f.expect_event_skipped("10,000 nested arrays as the data", b"status", nested_arrays(DEPTH).as_bytes(), "[[[[")
        .await;
    let deep_envelope = format!(r#"{{"NotificationContainer":{}}}"#, nested_arrays(DEPTH));
    f.expect_event_skipped(
        "10,000 nested arrays as the container",
        b"status",
        deep_envelope.as_bytes(),
        r#"{"NotificationContainer":[[["#,
    )
    .await;
    // A container without `type` takes the event name, and each object in it is an item: here one item of
    // 10,000 nested objects, forwarded as sent.
    let deep_objects = nested_objects(DEPTH);
    f.expect_event_published(
        "10,000 nested objects as a container's only entry",
        b"deep",
        format!(r#"{{"NotificationContainer":{deep_objects}}}"#).as_bytes(),
        "plex/test/deep",
        &[deep_objects.strip_prefix(r#"{"a":"#).and_then(|s| s.strip_suffix('}')).unwrap().as_bytes()],
    )
    .await;
    let deep_item = format!(r#"{{"x":{}}}"#, nested_arrays(DEPTH));
    f.expect_event_published(
        "10,000 nested arrays inside an item",
        b"deep",
        format!(r#"{{"Deep":{deep_item}}}"#).as_bytes(),
        "plex/test/deep",
        &[deep_item.as_bytes()],
    )
    .await;

    // Invalid UTF-8 as raw bytes in the stream: replaced by U+FFFD (JSON is UTF-8), never fatal.
    f.expect_event_published(
        "invalid UTF-8 inside a JSON string",
        b"utf8",
        b"{\"StatusNotification\":{\"title\":\"caf\xe9 \xff\xfe\"}}",
        "plex/test/utf8",
        &["{\"title\":\"caf\u{fffd} \u{fffd}\u{fffd}\"}".as_bytes()],
    )
    .await;
    f.expect_event_skipped(
        "invalid UTF-8 outside a string",
        b"status",
        b"\xff\xfe{\"StatusNotification\":{}}",
        "\u{fffd}\u{fffd}{\"StatusNotification\"",
    )
    .await;
    f.expect_event_published(
        "invalid UTF-8 in the event name",
        b"sta\xfftus\xc3",
        br#"{"Thing":{"k":1}}"#,
        "plex/test/sta_tus",
        &[br#"{"k":1}"#],
    )
    .await;

    // NUL, `+`, `#` and `/` in the event name (raw: SSE is not JSON) and in activity uuids.
    f.expect_event_published(
        "NUL + # / in the event name",
        b"a\0b+c#d/e F",
        br#"{"Thing":{"k":2}}"#,
        "plex/test/a_b_c_d_e_f",
        &[br#"{"k":2}"#],
    )
    .await;
    f.expect_event_published(
        "an event name of wildcards",
        b"+/#",
        br#"{"Thing":{"k":3}}"#,
        "plex/test/unknown",
        &[br#"{"k":3}"#],
    )
    .await;
    let started = r#"{"event":"started","uuid":"Up/+#\u0000Load","Activity":{"uuid":"Up/+#\u0000Load","title":"x","progress":1}}"#;
    f.expect_event_published(
        "NUL + # / in an activity uuid",
        b"activity",
        format!(r#"{{"ActivityNotification":{started}}}"#).as_bytes(),
        "plex/test/activity",
        &[started.as_bytes()],
    )
    .await;
    f.expect_seen("plex/test/activities/up_load", started).await;
    let ended = r#"{"event":"ended","uuid":"Up/+#\u0000Load","Activity":{"uuid":"Up/+#\u0000Load"}}"#;
    f.push_event(b"activity", format!(r#"{{"ActivityNotification":[{ended}]}}"#).as_bytes());
    f.expect_seen("plex/test/activities/up_load", "").await;

    // Numbers where strings are expected.
    f.expect_event_published(
        "a numeric type in an envelope",
        b"status",
        br#"{"NotificationContainer":{"type":5,"size":1,"Thing":[{"k":4}]}}"#,
        "plex/test/5",
        &[br#"{"k":4}"#],
    )
    .await;
    let playing = r#"{"sessionKey":45,"ratingKey":217468,"state":"paused"}"#;
    f.expect_event_published(
        "a numeric sessionKey",
        b"playing",
        format!(r#"{{"PlaySessionStateNotification":{playing}}}"#).as_bytes(),
        "plex/test/playing",
        &[playing.as_bytes()],
    )
    .await;
    let numeric_uuid = r#"{"event":"updated","uuid":7,"Activity":{"uuid":7}}"#;
    f.expect_event_published(
        "a numeric activity uuid",
        b"activity",
        format!(r#"{{"ActivityNotification":{numeric_uuid}}}"#).as_bytes(),
        "plex/test/activity",
        &[numeric_uuid.as_bytes()],
    )
    .await;
    f.expect_event_skipped("data that is a number", b"status", b"5", "5").await;

    // Duplicate keys: every item is forwarded, in order, verbatim.
    f.expect_event_published(
        "duplicate item keys",
        b"dup",
        br#"{"Thing":{"n":1,"n":1},"Thing":{"n":2}}"#,
        "plex/test/dup",
        &[br#"{"n":1,"n":1}"#, br#"{"n":2}"#],
    )
    .await;
    f.expect_event_published(
        "duplicate `type` keys in an envelope",
        b"status",
        br#"{"NotificationContainer":{"type":"first","type":"last","A":[{"n":3}]}}"#,
        "plex/test/last",
        &[br#"{"n":3}"#],
    )
    .await;

    // Empty arrays publish nothing (whether the bridge also logs them as skipped is not part of the contract).
    let seen = f.probe.history_on("plex/test/empty").len();
    f.push_event(b"empty", br#"{"Empty":[]}"#);
    f.push_event(b"empty", br#"{"NotificationContainer":{"type":"empty","size":2,"Empty":[]}}"#);
    f.marker().await;
    assert_eq!(f.probe.history_on("plex/test/empty").len(), seen, "an empty array publishes nothing");

    // `size` disagreeing with the array.
    f.expect_event_published(
        "size 3 with one item",
        b"sized",
        br#"{"NotificationContainer":{"type":"sized","size":3,"S":[{"i":1}]}}"#,
        "plex/test/sized",
        &[br#"{"i":1}"#],
    )
    .await;

    // Every skip so far was counted, and the last line carries the total.
    let lines = f.skipped_lines();
    let last = lines.last().expect("skips were logged");
    assert!(last.contains(&format!("malformed_total={}", lines.len())), "{last}");
    f.assert_topics_clean();
    f.assert_same_session();
    assert!(f.bridge.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_oversized_event_is_dropped_counted_and_the_stream_goes_on() {
    let mut f = Fixture::start(Transport::EventSource).await;
    f.marker().await;
    // 50 MB of one event, in 1 MiB pieces as a network would deliver it.
    let huge =
        format!(r#"event: status{}data: {{"StatusNotification":{{"title":"{}"}}}}{}"#, "\n", "x".repeat(HUGE), "\n\n");
    for piece in huge.as_bytes().chunks(1024 * 1024) {
        f.push(piece);
    }
    drop(huge);
    f.marker().await;
    // A 50 MB line of garbage without any line end, then the rest of the stream.
    let garbage = vec![0xffu8; HUGE];
    f.push(&garbage);
    drop(garbage);
    f.push(b"\n\n");
    f.marker().await;
    let logs = f.bridge.logs();
    let dropped: Vec<&str> = logs.lines().filter(|l| l.contains("over plex.max_message_size dropped")).collect();
    assert_eq!(dropped.len(), 2, "each oversized event is logged once; log:\n{logs}");
    assert!(dropped[1].contains("total=2"), "and counted: {}", dropped[1]);
    assert!(f.bridge.is_running(), "the bridge survives 50 MB events");
    assert!(
        f.probe.history().iter().all(|m: &Msg| m.payload.len() < 1024 * 1024),
        "nothing over the limit was published"
    );
    f.assert_same_session();
    f.assert_topics_clean();
}

/// An activity whose uuid PMS sent as a number. The README promises that values PMS sends as numbers on one server
/// and strings on another are handled alike, and the bridge's own `activities` summary (src/server_state.rs) lists
/// this one as uuid "7": its retained `activities/7` topic must exist too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_activity_uuid_is_retained_like_a_string_one() {
    let mut f = Fixture::start(Transport::WebSocket).await;
    let started = r#"{"event":"started","uuid":7,"Activity":{"uuid":7,"type":"library.refresh.items","title":"Refreshing","progress":0}}"#;
    f.push(frame("activity", "ActivityNotification", &[started]).as_bytes());
    f.probe.expect_payload("plex/test/activity", started, SOON).await;
    // The state task has seen it once the summary lists it; the router's retained state goes out before that.
    f.expect_seen_where("the activities summary listing uuid 7", |m| {
        m.topic == "plex/test/activities" && m.text().contains(r#""uuid":"7""#)
    })
    .await;
    f.marker().await;
    let held = retained(f.broker.port(), "plex/test/activities/+").await;
    assert_eq!(
        held.get("plex/test/activities/7").map(|p| String::from_utf8_lossy(p).into_owned()).as_deref(),
        Some(started),
        "a running activity with a numeric uuid is retained at activities/7 like any other (retained: {:?})",
        held.keys().collect::<Vec<_>>()
    );
}

/// The same numeric uuid reported by `/activities` at connect time is retained by the resync (which reads uuids
/// leniently); the `ended` notification for it must then clear that topic, or a ghost "running" activity stays
/// on the broker while the summary already says nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_activity_uuid_ended_clears_the_activity_the_resync_retained() {
    let activities = r#"{"MediaContainer":{"size":1,"Activity":[{"uuid":7,"type":"library.refresh.items","cancellable":false,"userID":1,"title":"Refreshing","progress":10}]}}"#;
    let mut f = Fixture::start_with(Transport::WebSocket, |pms| {
        pms.set_canned("/activities", CannedResponse::json(activities));
    })
    .await;
    f.expect_seen_where("activities/7 retained by the resync", |m| {
        m.topic == "plex/test/activities/7" && !m.payload.is_empty()
    })
    .await;
    let ended = r#"{"event":"ended","uuid":7,"Activity":{"uuid":7,"type":"library.refresh.items","title":"Refreshing","progress":100}}"#;
    f.push(frame("activity", "ActivityNotification", &[ended]).as_bytes());
    f.probe.expect_payload("plex/test/activity", ended, SOON).await;
    f.expect_seen_where("the activities summary with nothing running", |m| {
        m.topic == "plex/test/activities" && m.json()["count"] == 0
    })
    .await;
    f.marker().await;
    let held = retained(f.broker.port(), "plex/test/activities/+").await;
    assert!(
        !held.contains_key("plex/test/activities/7"),
        "the ended activity 7 is still retained (a ghost): {:?}",
        held.iter().map(|(t, p)| format!("{t} = {}", String::from_utf8_lossy(p))).collect::<Vec<_>>()
    );
}

/// MQTT limits a topic to 65,535 bytes (its length is a 16-bit field). A notification type or an activity uuid
/// longer than that (well within `plex.max_message_size`) must not corrupt the bridge's MQTT session: whatever
/// the bridge does with it (shorten, skip), every PUBLISH it sends is well-formed, the broker connection stays up,
/// and later notifications arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_type_and_uuid_do_not_corrupt_the_mqtt_session() {
    let mut f = Fixture::start(Transport::WebSocket).await;
    let long = "a".repeat(70_000);
    let item = r#"{"k":1}"#;
    let activity = format!(r#"{{"event":"started","uuid":"{long}","Activity":{{"uuid":"{long}","title":"x"}}}}"#);
    let cases = [
        ("a type of 70,000 bytes", frame(&long, "Thing", &[item]), "aaaa", item),
        (
            "an activity uuid of 70,000 bytes",
            frame("activity", "ActivityNotification", &[&activity]),
            "activities/aaaa",
            activity.as_str(),
        ),
    ];
    for (what, frame, topic_start, expected) in cases {
        f.push(frame.as_bytes());
        // Whatever goes wrong shows by the time the next notification is through: a corrupted message, or the
        // broker connection dropped (the marker then comes after the reconnect).
        f.marker().await;
        for msg in f.probe.history() {
            if msg.topic.strip_prefix("plex/test/").is_some_and(|rest| rest.starts_with(topic_start)) {
                assert!(
                    msg.payload == expected.as_bytes(),
                    "{what}: a corrupted PUBLISH reached subscribers: topic of {} bytes, payload of {} bytes \
                     starting {:?} (sent: {} bytes)",
                    msg.topic.len(),
                    msg.payload.len(),
                    msg.text().chars().take(40).collect::<String>(),
                    expected.len()
                );
            }
        }
        let logs = f.bridge.logs();
        let lost: Vec<&str> = logs.lines().filter(|l| l.contains("MQTT broker connection lost")).collect();
        assert!(lost.is_empty(), "{what}: the broker connection must survive: {lost:#?}");
        f.marker().await;
    }
    assert!(f.bridge.is_running());
    f.assert_same_session();
}
