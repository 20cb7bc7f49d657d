//! Bad input end to end (issue 7): the real daemon between a fake PMS sending garbage and a real Mosquitto.
//!
//! For every kind of bad notification the bridge must not crash, must say so in one clear log line (counted in
//! `malformed_total` where it counts), must never put `/`, `+`, `#` or NUL from Plex data into a topic, and must
//! go on with the same session: a valid notification pushed afterwards arrives on MQTT, and only an oversized
//! WebSocket frame may cost a reconnect. Each case is followed by such a "marker" notification; since live
//! messages keep their order, the marker's arrival also means everything before it has been handled.

mod support;

use std::time::Duration;

use support::fake_pms::{CannedResponse, FakePmsConfig};
use support::{retained, test_config, Bridge, FakePms, Mosquitto, Msg, Probe, TokenFile};

/// Generous bound for anything that should happen "soon" (CI machines are slow and shared).
const SOON: Duration = Duration::from_secs(10);
/// The log line of a notification that could not be decoded (src/supervisor.rs).
const SKIPPED: &str = "notification skipped";
/// Nesting depth of the "deeply nested JSON" cases.
const DEPTH: usize = 10_000;
/// The size of the oversized frame or event: far over the default `plex.max_message_size` (1 MiB).
const HUGE: usize = 50 * 1024 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    WebSocket,
    EventSource,
}

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
            Transport::EventSource => {
                FakePmsConfig { sse_ping_interval: Duration::from_secs(3600), ..FakePmsConfig::default() }
            }
        };
        let pms = FakePms::start(pms_config).await;
        setup(&pms);
        let token = TokenFile::new(&pms.token());
        let mut probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
        let name = match transport {
            Transport::WebSocket => "websocket",
            Transport::EventSource => "eventsource",
        };
        let mut config = test_config(&broker.url(), &pms.url(), token.path())
            .replace("name = \"test\"\n", &format!("name = \"test\"\ntransport = \"{name}\"\n"));
        if transport == Transport::EventSource {
            config = config
                .replace("ping_interval = \"200ms\"", "ping_interval = \"5s\"")
                .replace("idle_timeout = \"1s\"", "idle_timeout = \"15s\"");
        }
        let bridge = Bridge::start(&config);
        probe.expect_payload("plex/test/state", "connected", SOON).await;
        let open = match transport {
            Transport::WebSocket => pms.wait_for_ws_connection_count(1, SOON).await,
            Transport::EventSource => pms.wait_for_sse_connection_count(1, SOON).await,
        };
        assert!(open, "the fake PMS saw no {name} connection");
        Fixture { broker, pms, _token: token, probe, bridge, transport, markers: 0 }
    }

    /// Sends one notification as the transport carries it: a WebSocket text frame, or raw bytes of an
    /// EventSource stream (whole `event:`/`data:` blocks or any fragment).
    fn push(&self, bytes: &[u8]) {
        let reached = match self.transport {
            Transport::WebSocket => {
                self.pms.push_text(std::str::from_utf8(bytes).expect("a WebSocket text frame is UTF-8"))
            }
            Transport::EventSource => self.pms.push_sse(bytes),
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
            Transport::WebSocket => self.push(
                format!(r#"{{"NotificationContainer":{{"type":"status","size":1,"StatusNotification":[{item}]}}}}"#)
                    .as_bytes(),
            ),
            Transport::EventSource => {
                self.push_event(b"status", format!(r#"{{"StatusNotification":{item}}}"#).as_bytes())
            }
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
        if !self.probe.history().iter().any(&pred) {
            self.probe.expect(SOON, what, pred).await;
        }
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
            Transport::EventSource => assert_eq!(self.pms.sse_connections().len(), 1, "no reconnect; log:\n{logs}"),
        }
        assert!(!logs.contains("session ended"), "the session did not end; log:\n{logs}");
    }
}

fn ws_frame(kind_json: &str, array_key: &str, items: &[&str]) -> String {
    format!(
        r#"{{"NotificationContainer":{{"type":{kind_json},"size":{},"{array_key}":[{}]}}}}"#,
        items.len(),
        items.join(",")
    )
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
        ws_frame(r#""deep""#, "Deep", &[&deep_item]).as_bytes(),
        "plex/test/deep",
        &[deep_item.as_bytes()],
    )
    .await;
    let deep_playing = format!(r#"{{"sessionKey":"9","state":"playing","x":{}}}"#, nested_objects(DEPTH));
    f.expect_published(
        "10,000 nested objects inside a playing item",
        ws_frame(r#""playing""#, "PlaySessionStateNotification", &[&deep_playing]).as_bytes(),
        "plex/test/playing",
        &[deep_playing.as_bytes()],
    )
    .await;
    let deep_activity = format!(r#"{{"event":"updated","uuid":"deep-1","Activity":{}}}"#, nested_objects(DEPTH));
    f.expect_published(
        "10,000 nested objects inside an activity",
        ws_frame(r#""activity""#, "ActivityNotification", &[&deep_activity]).as_bytes(),
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
        ws_frame(r#""a\u0000b+c#d/e F""#, "Thing", &[item]).as_bytes(),
        "plex/test/a_b_c_d_e_f",
        &[item.as_bytes()],
    )
    .await;
    f.expect_published(
        "a type of nothing but wildcards",
        ws_frame(r#""+/#\u0000""#, "Thing", &[item]).as_bytes(),
        "plex/test/unknown",
        &[item.as_bytes()],
    )
    .await;
    f.expect_published(
        "a $SYS-like type",
        ws_frame(r#""$SYS/broker/#""#, "Thing", &[item]).as_bytes(),
        "plex/test/sys_broker",
        &[item.as_bytes()],
    )
    .await;

    // …and in activity uuids: the retained activity topic is folded, and cleared when the activity ends.
    let started = r#"{"event":"started","uuid":"Up/+#\u0000Load","Activity":{"uuid":"Up/+#\u0000Load","type":"library.refresh.items","title":"x","progress":1}}"#;
    f.expect_published(
        "NUL + # / in an activity uuid",
        ws_frame(r#""activity""#, "ActivityNotification", &[started]).as_bytes(),
        "plex/test/activity",
        &[started.as_bytes()],
    )
    .await;
    f.expect_seen("plex/test/activities/up_load", started).await;
    let ended = r#"{"event":"ended","uuid":"Up/+#\u0000Load","Activity":{"uuid":"Up/+#\u0000Load"}}"#;
    f.push(ws_frame(r#""activity""#, "ActivityNotification", &[ended]).as_bytes());
    f.expect_seen("plex/test/activities/up_load", "").await;

    // Numbers where strings are expected: passed through as sent.
    f.expect_published("a numeric type", ws_frame("5", "Thing", &[item]).as_bytes(), "plex/test/5", &[item.as_bytes()])
        .await;
    f.expect_published(
        "a fractional numeric type",
        ws_frame("-2.5e3", "Thing", &[item]).as_bytes(),
        "plex/test/-2_5e3",
        &[item.as_bytes()],
    )
    .await;
    let playing = r#"{"sessionKey":45,"ratingKey":217468,"viewOffset":"1000","state":"paused"}"#;
    f.expect_published(
        "a numeric sessionKey",
        ws_frame(r#""playing""#, "PlaySessionStateNotification", &[playing]).as_bytes(),
        "plex/test/playing",
        &[playing.as_bytes()],
    )
    .await;
    let numeric_uuid = r#"{"event":"updated","uuid":7,"Activity":{"uuid":7,"progress":"3"}}"#;
    f.expect_published(
        "a numeric activity uuid",
        ws_frame(r#""activity""#, "ActivityNotification", &[numeric_uuid]).as_bytes(),
        "plex/test/activity",
        &[numeric_uuid.as_bytes()],
    )
    .await;
    // A type that is neither a string nor a number cannot name a topic: skipped.
    f.expect_skipped(
        "a boolean type",
        ws_frame("true", "Thing", &[item]).as_bytes(),
        r#"{"NotificationContainer":{"type":true"#,
    )
    .await;
    f.expect_skipped(
        "an object type",
        ws_frame(r#"{"a":1}"#, "Thing", &[item]).as_bytes(),
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
        ws_frame(r#""first""#, "A", &[r#"{"n":1}"#])
            .strip_prefix(r#"{"NotificationContainer":"#)
            .unwrap()
            .strip_suffix('}')
            .unwrap(),
        ws_frame(r#""second""#, "A", &[r#"{"n":2}"#])
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
    f.expect_published("an empty array", ws_frame(r#""empty""#, "Empty", &[]).as_bytes(), "plex/test/empty", &[]).await;
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
    f.push(ws_frame(r#""activity""#, "ActivityNotification", &[started]).as_bytes());
    f.probe.expect_payload("plex/test/activity", started, SOON).await;
    // The state task has seen it once the summary lists it; the router's retained state goes out before that.
    f.expect_seen_where("the activities summary listing uuid 7", |m| {
        m.topic == "plex/test/activities" && m.text().contains(r#""uuid":"7""#)
    })
    .await;
    f.marker().await;
    let held = retained(f.broker.port(), "plex/test/activities/+", Duration::from_millis(500)).await;
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
    f.push(ws_frame(r#""activity""#, "ActivityNotification", &[ended]).as_bytes());
    f.probe.expect_payload("plex/test/activity", ended, SOON).await;
    f.expect_seen_where("the activities summary with nothing running", |m| {
        m.topic == "plex/test/activities" && m.json()["count"] == 0
    })
    .await;
    f.marker().await;
    let held = retained(f.broker.port(), "plex/test/activities/+", Duration::from_millis(500)).await;
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
        ("a type of 70,000 bytes", ws_frame(&format!("\"{long}\""), "Thing", &[item]), "aaaa", item),
        (
            "an activity uuid of 70,000 bytes",
            ws_frame(r#""activity""#, "ActivityNotification", &[&activity]),
            "activities/aaaa",
            activity.as_str(),
        ),
    ];
    for (what, frame, topic_start, expected) in cases {
        f.push(frame.as_bytes());
        // Whatever goes wrong shows within a moment: a corrupted message, or the broker connection dropped.
        tokio::time::sleep(Duration::from_secs(1)).await;
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

// ---------------------------------------------------------------------------------------------------------------
// Hostile input (issue 17): secrets in config errors and URLs, drop counting, a frame announcing thousands of
// sessions, and server-supplied strings that try to forge log lines.

/// A secret that must never be printed.
const SECRET: &str = "SECRETvalue0123456789";

/// Runs `--print-config` on `config`: the exit code and stderr (stdout must be empty on an error).
async fn config_error(config: &str) -> (Option<i32>, String) {
    let out = Bridge::run_to_exit_split(&["--print-config"], &[], Some(config), SOON).await;
    assert!(out.stdout.is_empty(), "nothing on stdout for a bad config: {}", out.stdout);
    (out.code, out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_syntax_errors_name_key_line_and_column_and_never_print_the_secret() {
    let cases = [
        (
            "an unquoted token",
            format!("[[servers]]\nurl = \"http://127.0.0.1:32400\"\ntoken = {SECRET}\n"),
            "servers[0].token",
            3,
        ),
        (
            "an unterminated token",
            format!("[[servers]]\nurl = \"http://127.0.0.1:32400\"\ntoken = \"{SECRET}\nname = \"x\"\n"),
            "servers[0].token",
            3,
        ),
        (
            "an unquoted MQTT password",
            format!("[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\nusername = \"u\"\npassword = {SECRET}\n"),
            "mqtt.password",
            4,
        ),
    ];
    for (what, config, key, line) in cases {
        let (code, stderr) = config_error(&config).await;
        assert_eq!(code, Some(78), "{what}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: one line: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")), "{what}: names the key: {stderr}");
        assert!(stderr.contains(&format!("line {line}, column")), "{what}: names line and column: {stderr}");
        assert!(stderr.contains("put the value in quotes"), "{what}: says the fix: {stderr}");
        assert!(!stderr.contains(&SECRET[..10]), "{what}: the secret is printed: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_urls_with_a_path_query_fragment_or_credentials_are_refused_without_echoing_them() {
    let urls = [
        format!("http://127.0.0.1:32400/#X-Plex-Token={SECRET}"),
        format!("http://127.0.0.1:32400/?X-Plex-Token={SECRET}"),
        format!("http://127.0.0.1:32400/{SECRET}"),
        format!("http://user:{SECRET}@127.0.0.1:32400"),
        format!("http://{SECRET}@127.0.0.1:32400/"),
    ];
    for url in urls {
        let config = format!("[[servers]]\nurl = \"{url}\"\ntoken = \"t\"\n");
        let (code, stderr) = config_error(&config).await;
        assert_eq!(code, Some(78), "{url}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{url}: one line: {stderr}");
        assert!(stderr.contains("`servers[0].url`"), "{url}: names the key: {stderr}");
        assert!(!stderr.contains(&SECRET[..10]), "{url}: the secret part is printed: {stderr}");
    }
    // Only scheme, host and port (with or without the trailing slash) are accepted.
    for url in ["http://127.0.0.1:32400", "http://127.0.0.1:32400/"] {
        let config = format!("[[servers]]\nurl = \"{url}\"\ntoken = \"t\"\n");
        let out = Bridge::run_to_exit_split(&["--print-config"], &[], Some(&config), SOON).await;
        assert_eq!(out.code, Some(0), "{url}: {}", out.stderr);
    }
}

/// A bridge on a WebSocket with its config edited by `edit` and its health endpoint on; the broker, probe and
/// fake PMS beside it.
async fn bridge_with(edit: impl FnOnce(String) -> String) -> (Mosquitto, FakePms, TokenFile, Probe, u16, Bridge) {
    let broker = Mosquitto::start();
    let pms = FakePms::start_default().await;
    let token = TokenFile::new(&pms.token());
    let probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
    let http = support::mosquitto::free_port();
    let config = format!(
        "{}\n[http]\nlisten = \"127.0.0.1:{http}\"\n",
        edit(test_config(&broker.url(), &pms.url(), token.path()))
    );
    let bridge = Bridge::start(&config);
    (broker, pms, token, probe, http, bridge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dropped_live_event_is_counted_and_an_overflow_is_logged_once() {
    let (_broker, pms, _token, mut probe, http, bridge) = bridge_with(|config| config).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    // One frame of 50,000 items. With the broker up the reader waits for room between frames, so only one
    // frame's items can come on top of a full queue; the queue takes 4 × mqtt.queue_size (40,000) then.
    let items: Vec<String> = (0..50_000).map(|i| format!(r#"{{"title":"s{i}"}}"#)).collect();
    let items: Vec<&str> = items.iter().map(String::as_str).collect();
    pms.push_text(&ws_frame("\"status\"", "StatusNotification", &items));
    // The newest 40,000 are kept and delivered, in order; the oldest 10,000 are dropped.
    let last = probe.expect_payload("plex/test/status", r#"{"title":"s49999"}"#, Duration::from_secs(60)).await;
    drop(last);
    let delivered = probe.history_on("plex/test/status").len() as f64;
    assert!(bridge.wait_for_log("live-event queue has room again", SOON).await, "{}", bridge.logs());
    let (_, metrics) = support::http::get(http, "/metrics").await;
    let dropped = support::http::metric(&metrics, "plex_mqtt_bridge_messages_dropped_total", &[]);
    assert_eq!(dropped + delivered, 50_000.0, "every event is delivered or counted as dropped: {metrics}");
    assert_eq!(dropped, 10_000.0, "{metrics}");
    let logs = bridge.logs();
    let full: Vec<&str> = logs.lines().filter(|l| l.contains("live-event queue full")).collect();
    assert_eq!(full.len(), 1, "one warning per overflow episode: {full:?}");
    assert!(full[0].contains("dropped=10000"), "the warning says how many: {}", full[0]);
    let ended: Vec<&str> = logs.lines().filter(|l| l.contains("live-event queue has room again")).collect();
    assert!(ended.len() == 1 && ended[0].contains("dropped=10000"), "the episode's total is logged: {ended:?}");
}

/// Peak resident memory of a process (`VmHWM`, KiB).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_slower_than_plex_loses_nothing_and_the_paused_link_is_not_taken_for_dead() {
    // One PUBLISH in flight at a time: the broker acknowledges, slowly (one round trip per message), while the
    // fake PMS writes 100,000 notifications as fast as it can. idle_timeout is 1 s in the test config, far
    // shorter than the pauses.
    let (_broker, pms, _token, mut probe, http, bridge) =
        bridge_with(|config| config.replace("qos = 1\n", "qos = 1\nmax_inflight = 1\n")).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    const FRAMES: usize = 50;
    const PER_FRAME: usize = 2_000;
    for frame in 0..FRAMES {
        let items: Vec<String> = (0..PER_FRAME).map(|i| format!(r#"{{"title":"f{frame}i{i}"}}"#)).collect();
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        pms.push_text(&ws_frame("\"status\"", "StatusNotification", &items));
    }
    let last = format!(r#"{{"title":"f{}i{}"}}"#, FRAMES - 1, PER_FRAME - 1);
    probe.expect_payload("plex/test/status", &last, Duration::from_secs(120)).await;
    let delivered = probe.history_on("plex/test/status").len();
    assert_eq!(delivered, FRAMES * PER_FRAME, "every notification delivered");
    let (_, metrics) = support::http::get(http, "/metrics").await;
    assert_eq!(support::http::metric(&metrics, "plex_mqtt_bridge_messages_dropped_total", &[]), 0.0, "{metrics}");
    assert_eq!(pms.ws_connections_total(), 1, "no reconnect: a reader paused for the broker is not a dead link");
    assert!(!bridge.logs().contains("live-event queue full"), "no overflow while the broker is up");
    let peak = peak_rss_kib(bridge.pid());
    assert!(peak > 0 && peak < 64 * 1024, "peak memory {peak} KiB");
}

/// A `playing` frame announcing `n` new sessions (keys 1..=n).
fn many_sessions_frame(n: usize) -> String {
    let items: Vec<String> = (1..=n)
        .map(|k| format!(r#"{{"sessionKey":"{k}","ratingKey":"{k}","key":"/library/metadata/{k}","viewOffset":0,"state":"playing"}}"#))
        .collect();
    let items: Vec<&str> = items.iter().map(String::as_str).collect();
    ws_frame("\"playing\"", "PlaySessionStateNotification", &items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_thousands_of_new_sessions_is_capped_and_never_stalls_the_bridge() {
    let (_broker, pms, _token, mut probe, http, mut bridge) =
        bridge_with(|config| config.replace("[plex]\n", "[plex]\nmax_sessions = 1000\n")).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    // /healthz is asked all the while; each answer must come (the runtime is never blocked for long). The
    // benchmark measures how fast; this bound only catches a stall.
    let poller = tokio::spawn(async move {
        let (mut answers, mut slowest) = (0, Duration::ZERO);
        let until = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < until {
            let started = std::time::Instant::now();
            let answer = tokio::time::timeout(SOON, support::http::get(http, "/healthz")).await;
            assert!(answer.is_ok_and(|(status, _)| status == 200), "/healthz did not answer 200 within {SOON:?}");
            slowest = slowest.max(started.elapsed());
            answers += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (answers, slowest)
    });
    pms.push_text(&many_sessions_frame(4_000));
    let capped = |m: &Msg| m.topic == "plex/test/sessions" && m.json()["count"] == 1000;
    if !probe.history().iter().any(capped) {
        probe.expect(Duration::from_secs(30), "a sessions summary of the 1000 tracked sessions", capped).await;
    }
    let (answers, slowest) = poller.await.expect("the health poller");
    assert!(answers > 10 && slowest < Duration::from_secs(5), "{answers} answers, slowest {slowest:?}");
    let summaries = probe.history_on("plex/test/sessions");
    let summary = summaries.last().expect("a summary").json();
    assert_eq!(summary["count"], 1000, "never more than the cap: {}", summary["count"]);
    assert_eq!(summary["sessions"].as_array().map(Vec::len), Some(1000), "the summary lists the tracked sessions");
    assert!(summaries.len() <= 3, "the summary is built once per batch, not per session: {}", summaries.len());
    let logs = bridge.logs();
    let warnings: Vec<&str> =
        logs.lines().filter(|l| l.contains("more playback sessions than plex.max_sessions")).collect();
    assert_eq!(warnings.len(), 1, "the overflow is logged once: {warnings:?}");
    assert!(warnings[0].contains("untracked=3000"), "with how many: {}", warnings[0]);
    let (_, metrics) = support::http::get(http, "/metrics").await;
    assert_eq!(support::http::metric(&metrics, "plex_mqtt_bridge_sessions_untracked_total", &[]), 3000.0);
    // Every raw notification still went out.
    let raw = |p: &mut Probe| p.history_on("plex/test/playing").len();
    if raw(&mut probe) < 4000 {
        probe.wait_for(SOON, |_| false).await;
    }
    assert_eq!(raw(&mut probe), 4000);
    assert!(bridge.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_supplied_strings_cannot_forge_log_lines_in_text_or_json() {
    let forged = "Fake\nWARN plex_mqtt_bridge: forged line\r\x1b[31mred\u{9b}";
    for format in ["text", "json"] {
        let pms_config = FakePmsConfig { friendly_name: forged.to_owned(), ..FakePmsConfig::default() };
        let broker = Mosquitto::start();
        let pms = FakePms::start(pms_config).await;
        let token = TokenFile::new(&pms.token());
        let mut probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
        // No configured name: the topic name comes from the friendlyName, which is logged.
        let config = test_config(&broker.url(), &pms.url(), token.path())
            .replace("name = \"test\"\n", "")
            .replace("format = \"text\"", &format!("format = \"{format}\""));
        let bridge = Bridge::start(&config);
        probe.expect(SOON, "connected", |m| m.topic.ends_with("/state") && m.payload == b"connected").await;
        assert!(bridge.wait_for_log("friendlyName", SOON).await, "{}", bridge.logs());
        let logs = bridge.logs();
        for line in logs.lines() {
            assert!(!line.contains("forged line") || line.contains("friendly"), "{format}: a forged line: {line:?}");
            assert!(!line.contains(['\r', '\x1b', '\u{9b}']), "{format}: a raw control character: {line:?}");
            if format == "json" {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("json: every line is one JSON object ({e}): {line:?}"));
            }
        }
        let named = logs.lines().find(|l| l.contains("friendlyName")).expect("the friendlyName line");
        assert!(named.contains("forged line"), "{format}: the name is shown, escaped: {named}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_deeply_nested_rest_responses_are_refused_at_the_cap_and_raw_events_flow() {
    let (_broker, pms, _token, mut probe, http, bridge) =
        bridge_with(|config| config.replace("[plex]\n", "[plex]\nmax_response_size = 1048576\n")).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    // 20 MB of a session list that never ends, and an activity list nested 100,000 deep.
    let mut huge = String::from(r#"{"MediaContainer":{"size":1,"Metadata":["#);
    huge.push_str(&" ".repeat(20 * 1024 * 1024));
    pms.set_canned("/status/sessions", CannedResponse::json(huge));
    pms.set_canned("/activities", CannedResponse::json(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))));
    let playing = r#"{"sessionKey":"9","ratingKey":"1","key":"/library/metadata/1","viewOffset":0,"state":"playing"}"#;
    pms.push_text(&ws_frame("\"playing\"", "PlaySessionStateNotification", &[playing]));
    probe.expect_payload("plex/test/playing", playing, SOON).await;
    assert!(
        bridge.wait_for_log("response larger than 1048576 bytes (plex.max_response_size)", SOON).await,
        "{}",
        bridge.logs()
    );
    // The play event goes out without details, and the bridge keeps bridging.
    let play = probe.expect(SOON, "play without details", |m| m.topic == "plex/test/events/playback").await.json();
    assert_eq!(play["event_type"], "play");
    pms.push_text(&ws_frame("\"status\"", "StatusNotification", &[r#"{"title":"still here"}"#]));
    probe.expect_payload("plex/test/status", r#"{"title":"still here"}"#, SOON).await;
    let (status, _) = support::http::get(http, "/healthz").await;
    assert_eq!(status, 200);
    let peak = peak_rss_kib(bridge.pid());
    assert!(peak > 0 && peak < 64 * 1024, "peak memory {peak} KiB: the 20 MB body was not buffered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_taking_over_the_bridges_client_id_causes_no_reconnect_storm() {
    let broker = Mosquitto::start();
    let pms = FakePms::start_default().await;
    let token = TokenFile::new(&pms.token());
    let config = test_config(&broker.url(), &pms.url(), token.path());
    let client_id = config
        .lines()
        .find_map(|l| l.strip_prefix("client_id = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("client_id in the test config");
    let mut probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
    let bridge = Bridge::start(&config);
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    // Another client with the same id, which (like a second bridge) reconnects at once whenever it is kicked.
    let rival = tokio::spawn(async move {
        let (_client, mut eventloop) =
            rumqttc::AsyncClient::builder(support::mqtt::mqtt_options(&client_id, broker.port())).capacity(8).build();
        let until = std::time::Instant::now() + Duration::from_secs(6);
        while std::time::Instant::now() < until {
            let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
        }
        broker
    });
    let broker = rival.await.expect("rival task");
    let connects = bridge.logs().matches("connected to the MQTT broker").count();
    // With the minimum delay (250 ms) each time, six seconds of fighting would be about 20 connections; with
    // the backoff growing (250 ms, 500 ms, 1 s, 2 s, …) it is a handful.
    assert!(connects <= 8, "{connects} connections in 6 s:\n{}", bridge.logs());
    assert!(bridge.logs().contains("mqtt.client_id"), "the likely takeover is named");
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_slow_health_clients_and_a_huge_header_do_not_disturb_the_bridging() {
    let (_broker, pms, _token, mut probe, http, bridge) = bridge_with(|config| config).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    // 2,000 connections that never send a byte (slowloris), and one with a 1 MB header.
    let mut idle = Vec::new();
    for _ in 0..2_000 {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", http)).await {
            idle.push(stream);
        }
    }
    let huge = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", http)).await.expect("connect");
        let head = format!("GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(1024 * 1024));
        let _ = stream.write_all(head.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    });
    for i in 0..100 {
        let item = format!(r#"{{"title":"during the flood {i}"}}"#);
        pms.push_text(&ws_frame("\"status\"", "StatusNotification", &[&item]));
    }
    probe.expect_payload("plex/test/status", r#"{"title":"during the flood 99"}"#, SOON).await;
    assert_eq!(probe.history_on("plex/test/status").len(), 100, "every notification bridged during the flood");
    let answer = huge.await.expect("huge-header client");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "a 1 MB header is refused: {answer:.80}");
    drop(idle);
    // Once the flood is gone the endpoint answers again (slots of idle clients are freed by their timeout).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(2), support::http::get(http, "/healthz")).await;
        if answer.is_ok_and(|(status, _)| status == 200) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "/healthz did not come back:\n{}", bridge.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pms.ws_connections_total(), 1, "the Plex session was never disturbed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plex_closing_the_socket_of_a_paused_reader_leads_to_a_normal_reconnect_and_resync() {
    let (_broker, pms, _token, mut probe, _http, _bridge) =
        bridge_with(|config| config.replace("qos = 1\n", "qos = 1\nmax_inflight = 1\n")).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    let resyncs_before = pms.count_requests("/status/sessions");
    // Far more than the queue holds: the reader pauses; then the server gives up on it.
    for frame in 0..20 {
        let items: Vec<String> = (0..2_000).map(|i| format!(r#"{{"title":"f{frame}i{i}"}}"#)).collect();
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        pms.push_text(&ws_frame("\"status\"", "StatusNotification", &items));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pms.drop_connections() >= 1);
    probe.expect_payload("plex/test/state", "disconnected", Duration::from_secs(60)).await;
    probe.expect_payload("plex/test/state", "connected", Duration::from_secs(60)).await;
    assert!(pms.wait_for_requests("/status/sessions", resyncs_before + 1, SOON).await, "resync after the reconnect");
    pms.push_text(&ws_frame("\"status\"", "StatusNotification", &[r#"{"title":"after"}"#]));
    probe.expect_payload("plex/test/status", r#"{"title":"after"}"#, Duration::from_secs(60)).await;
}

/// User + system CPU time of a process so far (clock ticks, from /proc).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 12 and 13 after the name.
    fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_health_endpoint_backs_off_instead_of_spinning() {
    let prlimit = support::mosquitto::find_binary("prlimit", &["/usr/bin", "/bin"])
        .expect("prlimit (util-linux) is needed for this test: apt-get install -y util-linux");
    let (_broker, pms, _token, mut probe, http, bridge) = bridge_with(|config| config).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    // Leave the bridge a few descriptors above what it holds now, then use them all up with connections.
    let open = std::fs::read_dir(format!("/proc/{}/fd", bridge.pid())).map(|d| d.count()).unwrap_or(0);
    let limit = open + 4;
    let status = std::process::Command::new(prlimit)
        .arg(format!("--pid={}", bridge.pid()))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit failed");
    let mut held = Vec::new();
    for _ in 0..64 {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", http)).await {
            held.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(bridge.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_ticks(bridge.pid()) - before;
    // Spinning on accept() would burn a whole core: about 200 ticks in 2 s.
    assert!(spent < 40, "the bridge spent {spent} ticks in 2 s with accept() failing:\n{}", bridge.logs());
    assert!(bridge.logs().contains("health endpoint cannot accept connections"), "{}", bridge.logs());
    // Bridging goes on meanwhile (the WebSocket is already open).
    pms.push_text(&ws_frame("\"status\"", "StatusNotification", &[r#"{"title":"still bridging"}"#]));
    probe.expect_payload("plex/test/status", r#"{"title":"still bridging"}"#, SOON).await;
    drop(held);
}
