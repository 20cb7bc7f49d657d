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

/// A TLS file that reads as PEM but would fail the first connection (a CA block rustls refuses, a key of no
/// usable type, a key that is not the client certificate's) is a configuration error naming the key: exit 78,
/// not a daemon that starts and then exits 1.
#[test]
fn tls_files_that_cannot_work_are_config_errors() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_ca = dir.path().join("bad-ca.pem");
    std::fs::write(&bad_ca, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").expect("write");
    let bad_key = dir.path().join("bad.key");
    std::fs::write(&bad_key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").expect("write");
    let server = "[[servers]]\nurl = \"http://127.0.0.1:32400\"\ntoken = \"t\"\n";
    let mqtt = |ca: &Path, cert: &Path, key: &Path| {
        format!(
            "[mqtt]\nurl = \"mqtts://127.0.0.1:8883\"\nca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n{server}",
            ca.display().to_string(),
            cert.display().to_string(),
            key.display().to_string()
        )
    };
    let print_config = |config: &str| {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).expect("write config");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_plex-mqtt-bridge"));
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("PLEX_MQTT_BRIDGE_")) {
            command.env_remove(name);
        }
        let output = command.arg("--config").arg(&path).arg("--print-config").output().expect("run the bridge");
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let fine = print_config(&mqtt(&pki.ca_cert, &pki.client_cert, &pki.client_key));
    assert_eq!(fine.0, Some(0), "{}", fine.1);
    let https_server = |ca: &Path| {
        format!(
            "[[servers]]\nurl = \"https://127.0.0.1:32400\"\ntoken = \"t\"\nca_file = {:?}\n",
            ca.display().to_string()
        )
    };
    for (config, key) in [
        (mqtt(&pki.ca_cert, &pki.client_cert, &pki.server_key), "mqtt.client_key"),
        (mqtt(&pki.ca_cert, &pki.client_cert, &bad_key), "mqtt.client_key"),
        (mqtt(&bad_ca, &pki.client_cert, &pki.client_key), "mqtt.ca_file"),
        (mqtt(&pki.ca_cert, &bad_ca, &pki.client_key), "mqtt.client_cert"),
        (https_server(&bad_ca), "servers[0].ca_file"),
    ] {
        let (code, stderr) = print_config(&config);
        assert_eq!(code, Some(78), "{key}: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")) && stderr.contains("point it at"), "{key}: {stderr}");
    }
}
