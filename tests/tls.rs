//! TLS on both legs: `mqtts://` to a Mosquitto with a test CA (and with mutual TLS), and an `https://` PMS,
//! with the CA option, without it, and with the explicit opt-out.

mod support;

use std::path::Path;
use std::time::Duration;

use support::config::Mqtt;
use support::tls::{HttpsFront, TestPki};
use support::wait::SOON;
use support::{test_config, Bridge, BridgeConfig, FakePms, Mosquitto, Probe, TokenFile};

/// A broker with a plain listener (for the probe), a TLS listener and a mutual-TLS listener.
fn tls_broker(pki: &TestPki) -> (Mosquitto, u16, u16) {
    let tls_port = support::mosquitto::free_port();
    let mtls_port = support::mosquitto::free_port();
    let files = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n",
        pki.ca_cert.display(),
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let extra = format!(
        "listener {tls_port} 127.0.0.1\n{files}\nlistener {mtls_port} 127.0.0.1\n{files}require_certificate true\n"
    );
    (Mosquitto::start_with_extra_config(&extra), tls_port, mtls_port)
}

/// The test config on the broker at `url`, with the CA `ca_file` and `tls` for the other TLS settings.
fn mqtts_config(
    url: &str,
    pms: &FakePms,
    token: &TokenFile,
    ca_file: &Path,
    tls: impl FnOnce(&mut Mqtt),
) -> BridgeConfig {
    test_config(url, &pms.url(), token.path()).mqtt(|m| {
        m.ca_file = Some(ca_file.to_owned());
        tls(m);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_the_right_ca_and_with_a_client_certificate() {
    let pki = TestPki::new();
    let (broker, tls_port, mtls_port) = tls_broker(&pki);
    let pms = FakePms::start_default().await;
    let token = TokenFile::new(&pms.token());
    let mut probe = Probe::subscribe(broker.port(), &["plex/#"]).await;

    let config = mqtts_config(&format!("mqtts://127.0.0.1:{tls_port}"), &pms, &token, &pki.ca_cert, |_| {});
    let mut bridge = Bridge::start(&config);
    probe.expect_payload("plex/bridge/state", "online", SOON).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    bridge.sigterm();
    assert_eq!(bridge.wait_exit(SOON).await.and_then(|s| s.code()), Some(0));
    probe.expect_payload("plex/bridge/state", "offline", SOON).await;

    let mutual = mqtts_config(&format!("mqtts://127.0.0.1:{mtls_port}"), &pms, &token, &pki.ca_cert, |m| {
        m.client_cert = Some(pki.client_cert.clone());
        m.client_key = Some(pki.client_key.clone());
    });
    let _bridge = Bridge::start(&mutual);
    probe.expect_payload("plex/bridge/state", "online", SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_a_wrong_ca_or_without_a_client_certificate_is_refused_clearly() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let (broker, tls_port, mtls_port) = tls_broker(&pki);
    let pms = FakePms::start_default().await;
    let token = TokenFile::new(&pms.token());
    let mut probe = Probe::subscribe(broker.port(), &["plex/bridge/state"]).await;

    let wrong_ca = mqtts_config(&format!("mqtts://127.0.0.1:{tls_port}"), &pms, &token, &other.ca_cert, |_| {});
    let bridge = Bridge::start(&wrong_ca);
    assert!(bridge.wait_for_log("MQTT TLS connection failed", SOON).await, "{}", bridge.logs());
    let logs = bridge.logs();
    assert!(logs.contains("ca_file"), "the error points at the fix:\n{logs}");
    assert!(probe.wait_for(Duration::from_millis(1500), |m| m.text() == "online").await.is_none(), "never online");
    drop(bridge);

    let no_client_cert = mqtts_config(&format!("mqtts://127.0.0.1:{mtls_port}"), &pms, &token, &pki.ca_cert, |_| {});
    let bridge = Bridge::start(&no_client_cert);
    // Mosquitto ends the handshake (TLS 1.3: right after it) without a client certificate.
    let refused = bridge.wait_for_log("MQTT TLS connection failed", SOON).await
        || bridge.wait_for_log("MQTT broker connection lost", SOON).await;
    assert!(refused, "{}", bridge.logs());
    assert!(probe.wait_for(Duration::from_millis(1500), |m| m.text() == "online").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_plex_needs_the_ca_option_or_the_explicit_opt_out() {
    let pki = TestPki::new();
    let broker = Mosquitto::start();
    let pms = FakePms::start_default().await;
    let front = HttpsFront::start(&pki, pms.port()).await;
    let token = TokenFile::new(&pms.token());
    let https = format!("https://127.0.0.1:{}", front.port);
    let mut probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
    let base = test_config(&broker.url(), &https, token.path());

    // Without a CA the certificate is unknown: a clear error, no connection.
    let bridge = Bridge::start(&base);
    assert!(bridge.wait_for_log("cannot connect to the Plex server", SOON).await, "{}", bridge.logs());
    let logs = bridge.logs();
    assert!(logs.contains("certificate") || logs.contains("UnknownIssuer"), "names the certificate problem:\n{logs}");
    assert!(probe
        .wait_for(Duration::from_millis(1000), |m| m.topic == "plex/test/state" && m.text() == "connected")
        .await
        .is_none());
    drop(bridge);

    // With the CA: connected over https and wss.
    let with_ca = base.clone().server(|s| s.ca_file = Some(pki.ca_cert.clone()));
    let mut bridge = Bridge::start(&with_ca);
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    let sample = &support::samples::every_type()[3];
    pms.push_text(&sample.ws_frame());
    probe.expect_payload("plex/test/status", sample.items[0], SOON).await;
    bridge.sigterm();
    assert_eq!(bridge.wait_exit(SOON).await.and_then(|s| s.code()), Some(0));
    probe.expect_payload("plex/test/state", "disconnected", SOON).await;

    // The opt-out works too, and says loudly what it gives up.
    let insecure = base.server(|s| s.insecure_skip_verify = Some(true));
    let bridge = Bridge::start(&insecure);
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    assert!(bridge.logs().contains("TLS certificate checks are OFF"), "{}", bridge.logs());
}
