//! `plex-mqtt-bridge login` end to end against a fake plex.tv that verifies every signed request, and a fake PMS.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::fake_plextv::FakePlexTv;
use support::mosquitto::free_port;
use support::wait::{self, SLOW};
use support::{Bridge, FakePms, Mosquitto, Probe};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// The PIN polls plex.tv received so far.
fn pin_polls(plextv: &FakePlexTv) -> usize {
    plextv.requests().into_iter().filter(|r| r.path.starts_with("/api/v2/pins/")).count()
}

/// plex.tv lists the fake PMS under its machineIdentifier: first an HTTPS address that does not answer (it is
/// preferred, so login must fall back), a relay (never taken), then the plain local address; and a shared server.
fn resources(pms: &FakePms) -> serde_json::Value {
    let closed = free_port();
    json!([
        {"name": "Friend's server", "provides": "server", "clientIdentifier": "friend", "owned": false,
         "connections": [{"uri": "http://127.0.0.1:1", "local": true, "relay": false, "protocol": "http"}]},
        {"name": "Living Room TV", "provides": "client,player", "clientIdentifier": "tv", "owned": true, "connections": []},
        {"name": "Test Server", "provides": "server", "clientIdentifier": pms.config().machine_identifier, "owned": true,
         "connections": [
            {"uri": "https://127.0.0.1:1", "local": false, "relay": true, "protocol": "https"},
            {"uri": format!("https://127.0.0.1:{closed}"), "local": true, "relay": false, "protocol": "https"},
            {"uri": pms.url(), "local": true, "relay": false, "protocol": "http"}
         ]}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_writes_a_private_token_and_a_config_block_that_runs() {
    let pms = FakePms::start_default().await;
    let plextv = FakePlexTv::start().await;
    plextv.on_issue(pms.token_acceptor());
    plextv.set_resources(resources(&pms));
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("state/plex/plex_token");
    let config_file = dir.path().join("bridge.toml");
    let args = [
        "login",
        "--plextv-url",
        &plextv.url(),
        "--token-file",
        token_file.to_str().expect("utf-8 path"),
        "--write-config",
        config_file.to_str().expect("utf-8 path"),
    ];
    let mut login = Bridge::start_with(&args, &[], None);
    wait::until("the PIN", SLOW, || plextv.pin_count() == 1).await;
    assert!(login.wait_for_log("plex.tv/link", SLOW).await, "{}", login.logs());
    // The user has not approved yet: the bridge keeps polling (each poll signed, each nonce used once).
    wait::until("a second PIN poll", SLOW, || pin_polls(&plextv) >= 2).await;
    assert!(login.is_running(), "{}", login.logs());
    plextv.approve_pins();
    let status = login.wait_exit(SLOW).await.expect("login exits");
    let output = login.logs();
    assert!(status.success(), "{output}");
    assert!(plextv.rejections().is_empty(), "the fake plex.tv refused: {:?}", plextv.rejections());

    let issued = plextv.issued();
    assert_eq!(issued.len(), 1, "one Plex JWT for the approved PIN");
    let token = std::fs::read_to_string(&token_file).expect("token file");
    assert_eq!(token.trim(), issued[0]);
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(token_file.parent().expect("parent")), 0o700);
    let key_file = dir.path().join("state/plex/plex_token.key");
    assert_eq!(mode(&key_file), 0o600);
    let key_text = std::fs::read_to_string(&key_file).expect("key file");
    let private_key: serde_json::Value = serde_json::from_str(&key_text).expect("key file is JSON");
    let private_key = private_key["private_key"].as_str().expect("private key").to_owned();
    assert!(!output.contains(&issued[0]) && !output.contains(&private_key), "nothing secret printed:\n{output}");
    // Every poll carried a fresh signed device JWT; the PIN carried the public key.
    let polls = pin_polls(&plextv);
    assert!(polls >= 2, "polled until approved: {polls}");

    let block = std::fs::read_to_string(&config_file).expect("config block");
    assert!(block.contains(&format!("url = \"{}\"", pms.url())), "{block}\n{output}");
    assert!(block.contains(&format!("token_file = \"{}\"", token_file.display())), "{block}");
    assert!(block.contains("name = \"test_server\""), "{block}");
    assert!(output.contains("owned  Test Server") && output.contains("shared Friend's server"), "{output}");

    // The block is ready: the bridge runs with it (plus a broker) and connects with the Plex JWT.
    let broker = Mosquitto::start();
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"login-test\"\n[plex]\nplextv_url = \"{}\"\n\n{block}",
        broker.url(),
        plextv.url()
    );
    let mut states = Probe::subscribe(broker.port(), &["plex/test_server/state"]).await;
    let _bridge = Bridge::start(&config);
    let connected = states.wait_for(SLOW, |m| m.payload == b"connected").await;
    assert!(connected.is_some(), "the written config connects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_pin_ends_with_a_clear_message_and_exit_code_2() {
    let plextv = FakePlexTv::start().await;
    plextv.set_pin_lifetime(Duration::from_secs(2));
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("plex_token");
    let args = ["login", "--plextv-url", &plextv.url(), "--token-file", token_file.to_str().expect("utf-8")];
    let (code, output) = Bridge::run_to_exit(&args, &[], None, SLOW).await;
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("PIN expired") && output.contains("run login again"), "{output}");
    assert!(!token_file.exists(), "nothing written");
    assert!(plextv.rejections().is_empty(), "{:?}", plextv.rejections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refuses_plain_http_plextv_off_loopback() {
    let args = ["login", "--plextv-url", "http://plex.example:80", "--token-file", "/tmp/never-written"];
    let (code, output) = Bridge::run_to_exit(&args, &[], None, SLOW).await;
    assert_eq!(code, Some(78), "{output}");
    assert!(output.contains("https://"), "{output}");
}

/// The fake plex.tv is only worth something if it refuses what plex.tv would: a forged signature, a reused or
/// unknown nonce, another client's identifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_plextv_refuses_what_plextv_would() {
    use plex_mqtt_bridge::plextv::device_key::DeviceKey;
    let plextv = FakePlexTv::start().await;
    let key = DeviceKey::generate("device-a").expect("key");
    let jwk = key.public_jwk();
    plextv.issue_for("device-a", &jwk.kid, &jwk.x, Duration::from_secs(3600));
    plex_mqtt_bridge::tls::install_crypto_provider();
    let client = reqwest::Client::new();
    let call = |path: &'static str, client_id: &'static str, body: Option<serde_json::Value>| {
        let mut request = if body.is_some() {
            client.post(format!("{}{path}", plextv.url()))
        } else {
            client.get(format!("{}{path}", plextv.url()))
        };
        request = request.header("X-Plex-Client-Identifier", client_id).header("Accept", "application/json");
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let body = response.bytes().await.unwrap_or_default();
            (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default())
        }
    };
    let nonce = |n: &serde_json::Value| n["nonce"].as_str().expect("nonce").to_owned();
    let (_, n1) = call("/api/v2/auth/nonce", "device-a", None).await;
    let good = key.client_jwt(&nonce(&n1)).expect("sign");
    assert_eq!(call("/api/v2/auth/token", "device-a", Some(json!({"jwt": good}))).await.0, 200);
    assert_eq!(call("/api/v2/auth/token", "device-a", Some(json!({"jwt": good}))).await.0, 401, "nonce reused");
    let unknown = key.client_jwt("never-issued").expect("sign");
    assert_eq!(call("/api/v2/auth/token", "device-a", Some(json!({"jwt": unknown}))).await.0, 401);
    // Another key claiming the registered kid.
    let (_, n2) = call("/api/v2/auth/nonce", "device-a", None).await;
    let forged = DeviceKey::generate("device-a").expect("key").client_jwt(&nonce(&n2)).expect("sign");
    let forged = {
        let mut parts: Vec<String> = forged.split('.').map(str::to_owned).collect();
        parts[0] = good.split('.').next().expect("header").to_owned();
        parts.join(".")
    };
    assert_eq!(call("/api/v2/auth/token", "device-a", Some(json!({"jwt": forged}))).await.0, 401, "bad signature");
    // The right key and nonce from another client identifier.
    let (_, n3) = call("/api/v2/auth/nonce", "device-b", None).await;
    let other = key.client_jwt(&nonce(&n3)).expect("sign");
    assert_eq!(call("/api/v2/auth/token", "device-b", Some(json!({"jwt": other}))).await.0, 401, "iss mismatch");
    let rejections = plextv.rejections();
    assert_eq!(rejections.len(), 4, "{rejections:?}");
}
