//! Running it as operators do: the health and metrics endpoint, the `health` and `check` commands, and the
//! systemd notification protocol.

mod support;

use std::time::Instant;

use tokio::net::UnixDatagram;

use support::fake_pms::FakePmsConfig;
use support::http::{get, metric};
use support::mosquitto::free_port;
use support::tls::TestPki;
use support::wait::SOON;
use support::{test_config, Bridge, BridgeConfig, FakePms, Mosquitto, Probe, TokenFile};

async fn wait_status(port: u16, want: u16) -> String {
    support::http::wait_status(port, "/healthz", want, SOON).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_the_plex_session_and_metrics_move() {
    let broker = Mosquitto::start();
    let pms = FakePms::start_default().await;
    let pms_port = pms.port();
    let token = TokenFile::new(&pms.token());
    let http = free_port();
    let config = test_config(&broker.url(), &pms.url(), token.path()).http(http);
    let mut probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
    let bridge = Bridge::start(&config);
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    let body = wait_status(http, 200).await;
    let doc: serde_json::Value = serde_json::from_str(&body).expect("healthz JSON");
    assert_eq!(doc["broker"], "connected");
    assert_eq!(doc["servers"]["test"]["state"], "connected");

    let (_, before) = get(http, "/metrics").await;
    pms.push_text(&support::samples::every_type()[3].ws_frame());
    probe.expect_topic("plex/test/status", SOON).await;
    let (status, after) = get(http, "/metrics").await;
    assert_eq!(status, 200);
    let received = |text: &str| metric(text, "plex_mqtt_bridge_notifications_received_total", &["type=\"status\""]);
    assert_eq!(received(&after), received(&before) + 1.0, "{after}");
    assert!(metric(&after, "plex_mqtt_bridge_messages_published_total", &[]) > 0.0);
    assert!(after.contains("plex_mqtt_bridge_rest_request_duration_seconds_bucket"), "REST latency histogram");
    assert_eq!(metric(&after, "plex_mqtt_bridge_connected", &["leg=\"mqtt\""]), 1.0);

    // The server goes away: 503, a reconnect counted, the command says unhealthy.
    pms.shutdown();
    let body = wait_status(http, 503).await;
    assert!(body.contains("\"state\":\"disconnected\""), "{body}");
    let (_, metrics) = get(http, "/metrics").await;
    assert!(metric(&metrics, "plex_mqtt_bridge_reconnects_total", &["leg=\"plex\""]) >= 1.0, "{metrics}");
    // `health` reads only the endpoint's address (the server is one that does not answer).
    let health_config =
        BridgeConfig::defaults(&broker.url(), "http://127.0.0.1:1", token.path()).http(http).to_string();
    let (code, output) = Bridge::run_to_exit(&["health"], &[], Some(&health_config), SOON).await;
    assert_eq!(code, Some(1), "{output}");

    // It comes back on the same port: 200 again.
    let _pms = FakePms::start(FakePmsConfig { port: pms_port, ..FakePmsConfig::default() }).await;
    wait_status(http, 200).await;
    let (code, output) = Bridge::run_to_exit(&["health"], &[], Some(&health_config), SOON).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("\"status\":\"ok\""), "{output}");
    drop(bridge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_failure_with_its_fix() {
    let broker = Mosquitto::start();
    let pms = FakePms::start_default().await;
    let good = TokenFile::new(&pms.token());
    let good_config = test_config(&broker.url(), &pms.url(), good.path()).to_string();
    let (code, output) = Bridge::run_to_exit(&["check"], &[], Some(&good_config), SOON).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("ok   plex") && output.contains("token accepted"), "{output}");
    assert!(output.contains("ok   mqtt"), "{output}");

    let wrong = TokenFile::new("not-the-token");
    let unreachable = format!("mqtt://127.0.0.1:{}", free_port());
    let wrong_config = test_config(&unreachable, &pms.url(), wrong.path()).to_string();
    let (code, output) = Bridge::run_to_exit(&["check"], &[], Some(&wrong_config), SOON).await;
    assert_eq!(code, Some(1), "{output}");
    let plex_line = output.lines().find(|l| l.starts_with("FAIL plex")).unwrap_or_else(|| panic!("{output}"));
    assert!(plex_line.contains("token rejected") && plex_line.contains("fix:"), "{plex_line}");
    let mqtt_line = output.lines().find(|l| l.starts_with("FAIL mqtt")).unwrap_or_else(|| panic!("{output}"));
    assert!(mqtt_line.contains("fix:"), "{mqtt_line}");
    assert!(!output.contains("not-the-token"), "the token is never printed");

    let pki = TestPki::new();
    let other = TestPki::new();
    let tls_port = free_port();
    let tls_broker = Mosquitto::start_with_extra_config(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
        pki.ca_cert.display(),
        pki.server_cert.display(),
        pki.server_key.display()
    ));
    let bad_ca = test_config(&format!("mqtts://127.0.0.1:{tls_port}"), &pms.url(), good.path())
        .mqtt(|m| m.ca_file = Some(other.ca_cert.clone()))
        .to_string();
    let (code, output) = Bridge::run_to_exit(&["check"], &[], Some(&bad_ca), SOON).await;
    assert_eq!(code, Some(1), "{output}");
    let mqtt_line = output.lines().find(|l| l.starts_with("FAIL mqtt")).unwrap_or_else(|| panic!("{output}"));
    assert!(mqtt_line.contains("TLS") && mqtt_line.contains("ca_file"), "{mqtt_line}");
    drop(tls_broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_gets_ready_after_the_broker_connection_then_watchdog_pings() {
    let broker = Mosquitto::start();
    let pms = FakePms::start_default().await;
    let token = TokenFile::new(&pms.token());
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let envs = [("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8 path")), ("WATCHDOG_USEC", "400000")];
    let mut probe = Probe::subscribe(broker.port(), &["plex/bridge/state"]).await;
    let config = test_config(&broker.url(), &pms.url(), token.path());
    let client_id = config.mqtt.client_id.clone().expect("test_config names the bridge's MQTT client");
    // Mosquitto logs a client's connection before it sends the CONNACK, so a bridge that waited for the CONNACK
    // before READY=1 has its connection in the broker's log by then; one that sent READY=1 early has not.
    let connected_line = format!(" as {client_id} ");
    let _bridge = Bridge::start_with(&[], &envs, Some(&config.to_string()));
    let mut messages: Vec<String> = Vec::new();
    let mut log_at_ready: Option<String> = None;
    let deadline = Instant::now() + SOON;
    let mut buf = [0u8; 1024];
    while messages.iter().filter(|m| m.as_str() == "WATCHDOG=1").count() < 3 {
        let Ok(received) = tokio::time::timeout_at(deadline.into(), socket.recv(&mut buf)).await else {
            panic!("fewer than 3 WATCHDOG=1 within {SOON:?}: {messages:?}");
        };
        let n = received.expect("read the notify socket");
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message == "READY=1" && log_at_ready.is_none() {
            log_at_ready = Some(broker.log());
        }
        messages.push(message);
    }
    let ready = messages.iter().position(|m| m == "READY=1").unwrap_or_else(|| panic!("no READY=1: {messages:?}"));
    assert!(messages[ready..].iter().filter(|m| m.as_str() == "WATCHDOG=1").count() >= 3, "{messages:?}");
    assert!(messages.iter().any(|m| m.starts_with("STATUS=broker connected")), "{messages:?}");
    // READY came after the broker connection: the broker had accepted the bridge's connection by then.
    let log_at_ready = log_at_ready.expect("READY=1 was seen");
    assert!(
        log_at_ready.lines().any(|l| l.contains("New client connected") && l.contains(&connected_line)),
        "READY=1 before the broker accepted {client_id}; broker log at READY:\n{log_at_ready}"
    );
    // And the connection it reported is the one that announces the bridge.
    probe.expect_seen(SOON, "plex/bridge/state = online", |m| m.text() == "online").await;
}
