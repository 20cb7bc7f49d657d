//! Checks the test harness itself (Mosquitto, the MQTT probe, the fake PMS), without the daemon.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use support::fake_pms::{CannedResponse, DEFAULT_TOKEN, UNAUTHORIZED_HTML};
use support::mqtt::{mqtt_options, unique_client_id};
use support::{retained, FakePms, FakePmsConfig, Mosquitto, Probe, SOON as WAIT};

/// Each test as a whole.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A raw rumqttc publisher whose event loop runs in the background.
struct RawPublisher {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl RawPublisher {
    fn connect(port: u16) -> RawPublisher {
        let (client, mut eventloop) =
            AsyncClient::builder(mqtt_options(&unique_client_id("raw-pub"), port)).capacity(64).build();
        let task = tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    // rumqttc reconnects on the next poll: don't spin while the broker is down.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        RawPublisher { client, task }
    }

    async fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        self.client
            .publish(topic, payload.to_vec(), rumqttc::PublishOptions::new(QoS::AtLeastOnce).retain(retain))
            .await
            .expect("queue publish");
    }
}

impl Drop for RawPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn mosquitto_probe_and_retained_state() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut broker = Mosquitto::start();
        assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port()));
        let mut probe = Probe::subscribe(broker.port(), &["harness/#"]).await;
        let publisher = RawPublisher::connect(broker.port());

        publisher.publish("harness/live", b"hello", false).await;
        let msg = probe.expect_payload("harness/live", b"hello", WAIT).await;
        assert!(!msg.retain);

        publisher.publish("harness/kept", b"v1", true).await;
        publisher.publish("harness/cleared", b"x", true).await;
        publisher.publish("harness/cleared", b"", true).await;
        // The probe was subscribed already: live delivery carries retain = false even for retained publishes.
        let kept = probe.expect_payload("harness/kept", b"v1", WAIT).await;
        assert!(!kept.retain, "live delivery of a retained publish: {kept:?}");
        probe.expect_payload("harness/cleared", b"", WAIT).await;

        let state = retained(broker.port(), "harness/#").await;
        assert_eq!(state.get("harness/kept").map(Vec::as_slice), Some(&b"v1"[..]), "{state:?}");
        assert!(!state.contains_key("harness/cleared"), "{state:?}");
        assert!(!state.contains_key("harness/live"), "{state:?}");
        assert_eq!(state.len(), 1, "{state:?}");

        // Persistence is off: a restart forgets retained messages. The probe reconnects and re-subscribes.
        let port = broker.port();
        broker.restart();
        assert_eq!(broker.port(), port);
        assert!(broker.is_running());
        assert!(retained(broker.port(), "harness/#").await.is_empty());
        assert!(probe.wait_for_connections(2, WAIT).await, "the probe did not reconnect after the restart");
        publisher.publish("harness/after-restart", b"again", false).await;
        probe.expect_payload("harness/after-restart", b"again", WAIT).await;

        // The full history keeps what wait_for skipped.
        let topics: Vec<String> = probe.history().into_iter().map(|m| m.topic).collect();
        assert!(topics.contains(&"harness/live".to_owned()), "{topics:?}");
        assert!(topics.contains(&"harness/after-restart".to_owned()), "{topics:?}");
        assert!(broker.log().contains("mosquitto version"), "{}", broker.log());

        broker.stop();
        assert!(!broker.is_running());
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn probe_sees_messages_in_order_and_large_payloads() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Mosquitto::start();
        let mut probe = Probe::subscribe(broker.port(), &["order/#", "big"]).await;
        let publisher = RawPublisher::connect(broker.port());
        for i in 0..200 {
            publisher.publish("order/n", i.to_string().as_bytes(), false).await;
        }
        let big = vec![b'x'; 5 * 1024 * 1024];
        publisher.publish("big", &big, false).await;
        let mut seen = Vec::new();
        while seen.len() < 200 {
            let msg = probe.next(WAIT).await.expect("a message within WAIT");
            seen.push(msg.text());
        }
        let expected: Vec<String> = (0..200).map(|i: i32| i.to_string()).collect();
        assert_eq!(seen, expected);
        let msg = probe.expect_topic("big", WAIT).await;
        assert_eq!(msg.payload.len(), big.len());
        assert!(probe.collect_for(Duration::from_millis(100)).await.is_empty());
        // The `publish` helper waits for the broker's PubAck.
        support::publish(broker.port(), "order/helper", "via helper", true).await;
        probe.expect_payload("order/helper", "via helper", WAIT).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn mosquitto_with_password() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Mosquitto::start_with_password("bridge", "s3cret");
        let mut probe = Probe::subscribe_with_credentials(broker.port(), "bridge", "s3cret", &["auth/#"]).await;

        // Anonymous clients are refused.
        let (_client, mut eventloop) =
            AsyncClient::builder(mqtt_options(&unique_client_id("anon"), broker.port())).capacity(8).build();
        match tokio::time::timeout(WAIT, eventloop.poll()).await.expect("connect attempt") {
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                assert_eq!(code, rumqttc::ConnectReturnCode::NotAuthorized)
            }
            other => panic!("anonymous connect should be refused, got {other:?}"),
        }

        let mut options = mqtt_options(&unique_client_id("authed"), broker.port());
        options.set_credentials("bridge", "s3cret");
        let (client, mut eventloop) = AsyncClient::builder(options).capacity(8).build();
        client
            .publish("auth/ok", "yes", rumqttc::PublishOptions::new(QoS::AtLeastOnce).retain(false))
            .await
            .expect("queue publish");
        tokio::time::timeout(WAIT, async {
            loop {
                if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.expect("authed client") {
                    break;
                }
            }
        })
        .await
        .expect("PubAck");
        probe.expect_payload("auth/ok", "yes", WAIT).await;
    })
    .await
    .expect("test timed out");
}

/// The header every REST request of the bridge carries (PMS answers XML without it).
const JSON: (&str, &str) = ("Accept", "application/json");

/// A raw GET with `Connection: close`; returns (status, head, body) after checking Content-Length.
async fn http_get(pms: &FakePms, target: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(pms.addr()).await.expect("connect to the fake PMS");
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n", pms.addr());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("send request");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("the fake PMS closes after responding")
        .expect("read response");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8(raw[..split].to_vec()).expect("ASCII head");
    let body = raw[split + 4..].to_vec();
    let status: u16 = head[9..12].parse().expect("status code");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .expect("numeric Content-Length");
    assert_eq!(length, body.len(), "Content-Length of {target}");
    assert!(head.contains("\r\nConnection: close"), "{head}");
    (status, head, body)
}

#[tokio::test]
async fn fake_pms_http_routes() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let pms = FakePms::start_default().await;
        assert_eq!(pms.url(), format!("http://127.0.0.1:{}", pms.port()));
        let cfg = pms.config();

        let (status, head, body) = http_get(&pms, "/identity", &[JSON]).await;
        assert_eq!(status, 200);
        assert!(head.contains("Content-Type: application/json"), "{head}");
        let expected = format!(
            r#"{{"MediaContainer":{{"size":0,"claimed":true,"machineIdentifier":"{}","version":"{}"}}}}"#,
            cfg.machine_identifier, cfg.version
        );
        assert_eq!(String::from_utf8(body).expect("UTF-8"), expected);

        let (status, head, body) = http_get(&pms, "/", &[JSON]).await;
        assert_eq!(status, 401);
        assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
        assert_eq!(body, UNAUTHORIZED_HTML.as_bytes());

        let (status, _, body) = http_get(&pms, "/", &[("X-Plex-Token", DEFAULT_TOKEN), JSON]).await;
        assert_eq!(status, 200);
        let root: serde_json::Value = serde_json::from_slice(&body).expect("JSON root");
        assert_eq!(root["MediaContainer"]["friendlyName"], cfg.friendly_name.as_str());
        assert_eq!(root["MediaContainer"]["machineIdentifier"], cfg.machine_identifier.as_str());
        assert_eq!(root["MediaContainer"]["platform"], "Linux");

        let (status, _, _) = http_get(&pms, &format!("/?X-Plex-Token={DEFAULT_TOKEN}"), &[JSON]).await;
        assert_eq!(status, 200);
        pms.set_token("rotated+token");
        let (status, _, _) = http_get(&pms, &format!("/?X-Plex-Token={DEFAULT_TOKEN}"), &[JSON]).await;
        assert_eq!(status, 401);
        let (status, _, _) = http_get(&pms, "/?X-Plex-Token=rotated%2Btoken", &[JSON]).await;
        assert_eq!(status, 200);

        let (status, _, _) = http_get(&pms, "/status/sessions", &[("X-Plex-Token", "rotated+token"), JSON]).await;
        assert_eq!(status, 404);
        pms.set_canned(
            "/status/sessions",
            CannedResponse {
                status: 200,
                content_type: "application/json".into(),
                body: br#"{"MediaContainer":{"size":0}}"#.to_vec(),
                needs_token: true,
                delay: Duration::ZERO,
            },
        );
        let (status, _, body) = http_get(&pms, "/status/sessions", &[("X-Plex-Token", "rotated+token"), JSON]).await;
        assert_eq!((status, body.as_slice()), (200, &br#"{"MediaContainer":{"size":0}}"#[..]));
        let (status, _, _) = http_get(&pms, "/status/sessions", &[JSON]).await;
        assert_eq!(status, 401);

        // A REST request that does not ask for JSON gets XML from a real PMS: the fake refuses it (400) and
        // records why; the JSON answers above were not refused.
        assert_eq!(pms.rejections(), Vec::<String>::new());
        let (status, _, _) = http_get(&pms, "/status/sessions", &[("X-Plex-Token", "rotated+token")]).await;
        assert_eq!(status, 400);
        let (status, _, _) = http_get(&pms, "/identity", &[("Accept", "application/xml")]).await;
        assert_eq!(status, 400);
        let (status, _, _) = http_get(&pms, "/?X-Plex-Token=rotated%2Btoken", &[]).await;
        assert_eq!(status, 400);
        assert_eq!(
            pms.take_rejections(),
            [
                "GET /status/sessions without Accept: application/json",
                "GET /identity without Accept: application/json",
                "GET /?X-Plex-Token=rotated%2Btoken without Accept: application/json",
            ]
        );

        let (status, _, _) = http_get(&pms, "/nope?a=b%20c&d=e+f&flag", &[("X-Custom", "Value")]).await;
        assert_eq!(status, 404);
        let req = pms.requests().into_iter().find(|r| r.path == "/nope").expect("recorded /nope");
        assert_eq!(req.method, "GET");
        assert_eq!(req.target, "/nope?a=b%20c&d=e+f&flag");
        assert_eq!(
            req.query,
            vec![
                ("a".to_owned(), "b c".to_owned()),
                ("d".to_owned(), "e f".to_owned()),
                ("flag".to_owned(), String::new())
            ]
        );
        assert_eq!(req.header("x-custom"), Some("Value"));
        assert_eq!(req.status, 404);
        assert_eq!(pms.count_requests("/"), 6);
        assert!(pms.wait_for_requests("/identity", 1, WAIT).await);
    })
    .await
    .expect("test timed out");
}

fn ws_request(
    pms: &FakePms,
    path_and_query: &str,
    token: Option<&str>,
    client_id: bool,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = format!("ws://{}{path_and_query}", pms.addr()).into_client_request().expect("a valid ws URL");
    let headers = request.headers_mut();
    if let Some(token) = token {
        headers.insert("X-Plex-Token", HeaderValue::from_str(token).expect("token header"));
    }
    if client_id {
        headers.insert("X-Plex-Client-Identifier", HeaderValue::from_static("harness-selftest"));
    }
    headers.insert("X-Plex-Product", HeaderValue::from_static("harness"));
    request
}

async fn ws_connect(
    pms: &FakePms,
    path_and_query: &str,
    token: Option<&str>,
    client_id: bool,
) -> Result<WebSocketStream<TcpStream>, WsError> {
    let stream = TcpStream::connect(pms.addr()).await.expect("connect to the fake PMS");
    let request = ws_request(pms, path_and_query, token, client_id);
    tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("WebSocket handshake within WAIT")
        .map(|(ws, _response)| ws)
}

fn http_status(result: Result<WebSocketStream<TcpStream>, WsError>) -> (u16, Vec<u8>) {
    match result {
        Err(WsError::Http(response)) => (response.status().as_u16(), response.body().clone().unwrap_or_default()),
        Err(e) => panic!("expected an HTTP error response, got {e}"),
        Ok(_) => panic!("expected an HTTP error response, got an upgrade"),
    }
}

const PLURAL: &str = "/:/websockets/notifications";

#[tokio::test]
async fn fake_pms_websocket() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let pms = FakePms::start_default().await;
        assert_eq!(pms.last_filters(), None);

        let mut ws = ws_connect(&pms, &format!("{PLURAL}?filters=-log"), Some(DEFAULT_TOKEN), true)
            .await
            .expect("upgrade with a good token");
        assert!(pms.wait_for_ws_connections_total(1, WAIT).await);
        assert_eq!(pms.ws_connection_count(), 1);
        assert_eq!(pms.last_filters(), Some(Some("-log".to_owned())));

        let frame = r#"{"NotificationContainer":{"type":"activity","size":1,"ActivityNotification":[{"event":"updated","uuid":"0f3c","Activity":{"title":"Scanning «Movies» 🎬","progress":42}}]}}"#;
        assert_eq!(pms.push_text(frame), 1);
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a frame") {
            Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), frame),
            other => panic!("expected the text frame, got {other:?}"),
        }
        let binary = [0u8, 1, 2, 255, 254, b'{'];
        assert_eq!(pms.push_binary(&binary), 1);
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a frame") {
            Some(Ok(Message::Binary(bytes))) => assert_eq!(&bytes[..], &binary[..]),
            other => panic!("expected the binary frame, got {other:?}"),
        }

        // Pings are answered with the same payload.
        ws.send(Message::Ping(b"ping-1".to_vec().into())).await.expect("send ping");
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a pong") {
            Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"ping-1"),
            other => panic!("expected a pong, got {other:?}"),
        }
        assert_eq!(pms.pings_received(), 1);

        // Stalled: no pong, no frames; released: both arrive.
        assert_eq!(pms.stall(true), 1);
        ws.send(Message::Ping(b"ping-2".to_vec().into())).await.expect("send ping");
        pms.push_text("queued while stalled");
        assert!(
            tokio::time::timeout(Duration::from_millis(600), ws.next()).await.is_err(),
            "a stalled connection must not answer"
        );
        pms.stall(false);
        let mut got = Vec::new();
        while got.len() < 2 {
            match tokio::time::timeout(WAIT, ws.next()).await.expect("frames after the stall") {
                Some(Ok(m)) => got.push(m),
                other => panic!("expected frames after the stall, got {other:?}"),
            }
        }
        assert!(got.contains(&Message::text("queued while stalled")), "{got:?}");
        assert!(got.contains(&Message::Pong(b"ping-2".to_vec().into())), "{got:?}");

        // A second connection: token in the query, no filters; then `filters=` (empty).
        let mut ws2 = ws_connect(&pms, &format!("{PLURAL}?X-Plex-Token={DEFAULT_TOKEN}"), None, true)
            .await
            .expect("upgrade with the token in the query");
        assert!(pms.wait_for_ws_connections_total(2, WAIT).await);
        assert_eq!(pms.last_filters(), Some(None));
        let ws3 = ws_connect(&pms, &format!("{PLURAL}?filters="), Some(DEFAULT_TOKEN), true)
            .await
            .expect("upgrade with empty filters");
        assert!(pms.wait_for_ws_connections_total(3, WAIT).await);
        assert_eq!(pms.last_filters(), Some(Some(String::new())));
        drop(ws3);
        assert!(pms.wait_for_ws_connection_count(2, WAIT).await, "a closed client is no longer counted");
        assert_eq!(pms.ws_connections_total(), 3);

        // Abrupt close: no Close frame, the stream just ends.
        assert_eq!(pms.drop_connections(), 2);
        for ws in [&mut ws, &mut ws2] {
            match tokio::time::timeout(WAIT, ws.next()).await.expect("the end of the stream") {
                None | Some(Err(_)) => {}
                Some(Ok(m)) => panic!("expected the connection to drop without a frame, got {m:?}"),
            }
        }
        assert!(pms.wait_for_ws_connection_count(0, WAIT).await);

        // Rejections.
        let (status, body) = http_status(ws_connect(&pms, PLURAL, Some("wrong"), true).await);
        assert_eq!((status, body.as_slice()), (401, UNAUTHORIZED_HTML.as_bytes()));
        let (status, _) = http_status(ws_connect(&pms, PLURAL, None, true).await);
        assert_eq!(status, 401);
        let (status, _) = http_status(ws_connect(&pms, PLURAL, Some(DEFAULT_TOKEN), false).await);
        assert_eq!(status, 400);
        let (status, _) = http_status(ws_connect(&pms, "/:/websocket/notifications", Some(DEFAULT_TOKEN), true).await);
        assert_eq!(status, 404);
        assert_eq!(pms.ws_connections_total(), 3);

        let upgrades = pms.requests_to(PLURAL);
        assert_eq!(upgrades.iter().filter(|r| r.status == 101).count(), 3);
        assert_eq!(upgrades[0].header("x-plex-product"), Some("harness"));
        assert_eq!(upgrades[0].token(), Some(DEFAULT_TOKEN));
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn fake_pms_singular_path_and_hung_server() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let pms =
            FakePms::start(FakePmsConfig { plural_ws: false, singular_ws: true, ..FakePmsConfig::default() }).await;
        let (status, _) = http_status(ws_connect(&pms, PLURAL, Some(DEFAULT_TOKEN), true).await);
        assert_eq!(status, 404);
        let mut ws = ws_connect(&pms, "/:/websocket/notifications?filters=playing,activity", Some(DEFAULT_TOKEN), true)
            .await
            .expect("upgrade on the singular path");
        assert_eq!(pms.last_filters(), Some(Some("playing,activity".to_owned())));
        assert_eq!(pms.ws_connections()[0].path, "/:/websocket/notifications");
        pms.push_text("hi");
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a frame") {
            Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), "hi"),
            other => panic!("expected the text frame, got {other:?}"),
        }

        // A hung server accepts TCP but never answers.
        pms.stall_new_connections(true);
        let stream = TcpStream::connect(pms.addr()).await.expect("TCP connect to a hung server");
        let request = ws_request(&pms, "/:/websocket/notifications", Some(DEFAULT_TOKEN), true);
        let handshake = tokio_tungstenite::client_async(request, stream);
        tokio::pin!(handshake);
        assert!(tokio::time::timeout(Duration::from_millis(500), &mut handshake).await.is_err());
        pms.stall_new_connections(false);
        let held = tokio::time::timeout(WAIT, handshake).await.expect("released handshake");
        assert!(held.is_ok(), "{held:?}");
        assert_eq!(pms.ws_connection_count(), 2);

        // Dropping the server closes every connection.
        drop(pms);
        match tokio::time::timeout(WAIT, ws.next()).await.expect("the end of the stream") {
            None | Some(Err(_)) => {}
            Some(Ok(m)) => panic!("expected the connection to drop, got {m:?}"),
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn fake_pms_close_frames_and_restart_on_the_same_port() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let pms = FakePms::start_default().await;
        let mut ws = ws_connect(&pms, PLURAL, Some(DEFAULT_TOKEN), true).await.expect("upgrade");
        ws.close(None).await.expect("send a Close frame");
        // The server answers the Close handshake, then the stream ends.
        while let Some(Ok(_)) = tokio::time::timeout(WAIT, ws.next()).await.expect("close handshake") {}
        assert!(pms.wait_for_ws_connection_count(0, WAIT).await);
        assert_eq!(pms.closes_received(), 1);

        let mut ws = ws_connect(&pms, PLURAL, Some(DEFAULT_TOKEN), true).await.expect("upgrade");
        let port = pms.port();
        pms.shutdown();
        match tokio::time::timeout(WAIT, ws.next()).await.expect("the end of the stream") {
            None | Some(Err(_)) => {}
            Some(Ok(m)) => panic!("expected the connection to drop, got {m:?}"),
        }
        assert!(TcpStream::connect(pms.addr()).await.is_err(), "a stopped server refuses connections");
        assert_eq!(pms.requests().len(), 2, "requests stay readable after shutdown");

        let restarted = FakePms::start(FakePmsConfig { port, ..FakePmsConfig::default() }).await;
        assert_eq!(restarted.port(), port);
        let (status, _, _) = http_get(&restarted, "/identity", &[JSON]).await;
        assert_eq!(status, 200);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn fake_plextv_refuses_a_body_that_is_not_json() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        plex_mqtt_bridge::tls::install_crypto_provider();
        let plextv = support::fake_plextv::FakePlexTv::start().await;
        let http = reqwest::Client::new();
        let pin = |body: &'static str| {
            http.post(format!("{}/api/v2/pins", plextv.url()))
                .header("X-Plex-Client-Identifier", "selftest")
                .header("Accept", "application/json")
                .header("Content-Type", "application/json")
                .body(body)
                .send()
        };
        let refused = pin("strong=true").await.expect("an answer");
        assert_eq!(refused.status().as_u16(), 400);
        assert_eq!(plextv.pin_count(), 0, "no PIN for a body that is not JSON");
        assert_eq!(
            plextv.rejections(),
            ["POST /api/v2/pins: the body is not JSON (expected value at line 1 column 1)"]
        );
        let created = pin(r#"{"strong":true}"#).await.expect("an answer");
        assert_eq!(created.status().as_u16(), 201);
        assert_eq!(plextv.pin_count(), 1);
        assert_eq!(plextv.rejections().len(), 1, "{:?}", plextv.rejections());
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn retained_returns_every_stored_message_without_a_fixed_wait() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Mosquitto::start();
        let mut probe = Probe::subscribe(broker.port(), &["bulk/#"]).await;
        let publisher = RawPublisher::connect(broker.port());
        // Many stored messages, at both QoS levels, each with some weight: the marker must still come last.
        const TOPICS: usize = 2_000;
        for i in 0..TOPICS {
            let qos = if i % 2 == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
            let payload = format!("{i:0>1024}");
            let options = rumqttc::PublishOptions::new(qos).retain(true);
            publisher.client.publish(format!("bulk/{i}"), payload, options).await.expect("queue publish");
        }
        // One connection publishes in order: once the last is forwarded, the broker has stored them all.
        probe.expect_topic(&format!("bulk/{}", TOPICS - 1), WAIT).await;
        let held = retained(broker.port(), "bulk/#").await;
        assert_eq!(held.len(), TOPICS, "missing: {:?}", (0..TOPICS).find(|i| !held.contains_key(&format!("bulk/{i}"))));
        assert_eq!(held["bulk/1999"], format!("{:0>1024}", 1999).into_bytes());
        // The marker is nobody else's business: a subscriber of the queried filter never sees it.
        assert!(probe.history().iter().all(|m| m.topic.starts_with("bulk/")), "{:?}", probe.history().last());
    })
    .await
    .expect("test timed out");
}
