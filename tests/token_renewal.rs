//! Plex JWT renewal in the running daemon, against a fake plex.tv that verifies every signed request and a fake
//! PMS that accepts exactly the tokens plex.tv issued (and those it is told to).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use plex_mqtt_bridge::plextv::device_key::DeviceKey;
use support::fake_plextv::FakePlexTv;
use support::http::{healthz, metric, wait_healthz};
use support::mosquitto::free_port;
use support::wait::{self, SLOW};
use support::{test_config, Bridge, BridgeConfig, FakePms, Mosquitto, Probe};

/// A bridge whose token file holds a Plex JWT from the fake plex.tv, with the device key beside it.
struct Setup {
    broker: Mosquitto,
    pms: FakePms,
    plextv: FakePlexTv,
    dir: tempfile::TempDir,
    token_file: PathBuf,
    key_file: PathBuf,
    first_token: String,
    private_key: String,
    http: u16,
}

impl Setup {
    async fn new(lifetime: Duration) -> Setup {
        let broker = Mosquitto::start();
        let pms = FakePms::start_default().await;
        let plextv = FakePlexTv::start().await;
        plextv.on_issue(pms.token_acceptor());
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("plex_token");
        let key_file = dir.path().join("plex_token.key");
        let key = DeviceKey::generate("bridge-device-1").expect("device key");
        key.save(&key_file).expect("save the key");
        let jwk = key.public_jwk();
        let first_token = plextv.issue_for("bridge-device-1", &jwk.kid, &jwk.x, lifetime);
        std::fs::write(&token_file, &first_token).expect("token file");
        let key_json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&key_file).expect("key file")).expect("key JSON");
        let private_key = key_json["private_key"].as_str().expect("private key").to_owned();
        Setup { broker, pms, plextv, dir, token_file, key_file, first_token, private_key, http: free_port() }
    }

    fn config(&self, renew_before: Duration) -> BridgeConfig {
        test_config(&self.broker.url(), &self.pms.url(), &self.token_file)
            .plex(|p| {
                p.plextv_url = Some(self.plextv.url());
                p.renew_before = Some(renew_before);
            })
            .log_level("trace")
            .http(self.http)
    }

    fn token_now(&self) -> String {
        std::fs::read_to_string(&self.token_file).unwrap_or_default().trim().to_owned()
    }

    async fn wait_for_token_change(&self) -> String {
        self.wait_for_token_change_within(SLOW).await
    }

    async fn wait_for_token_change_within(&self, timeout: Duration) -> String {
        let changed = wait::poll(timeout, async || {
            let now = self.token_now();
            (now != self.first_token && !now.is_empty()).then_some(now)
        })
        .await;
        changed.unwrap_or_else(|| {
            panic!(
                "the token file was not renewed; plex.tv: {:?}",
                self.plextv.requests().iter().map(|r| (r.path.clone(), r.status)).collect::<Vec<_>>()
            )
        })
    }

    /// Nothing secret in the logs (trace level) or in `--print-config`.
    async fn assert_no_secrets(&self, logs: &str, config: &BridgeConfig) {
        let printed = Bridge::run_to_exit_split(&["--print-config"], &[], Some(&config.to_string()), SLOW).await;
        for text in [logs, printed.stdout.as_str(), printed.stderr.as_str()] {
            for token in self.plextv.issued() {
                assert!(!text.contains(&token), "a Plex JWT leaked:\n{text}");
            }
            assert!(!text.contains(&self.private_key), "the private key leaked:\n{text}");
            assert!(!text.contains(&self.first_token[..40]), "a token prefix leaked");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_near_its_expiry_is_renewed_without_dropping_the_session() {
    let setup = Setup::new(Duration::from_secs(2 * 3600)).await;
    // The new token, too, has less than renew_before left: renewed once, not in a loop.
    setup.plextv.set_jwt_lifetime(Duration::from_secs(2 * 3600));
    let config = setup.config(Duration::from_secs(24 * 3600));
    let mut states = Probe::subscribe(setup.broker.port(), &["plex/test/state"]).await;
    let bridge = Bridge::start(&config);
    assert!(states.wait_for(SLOW, |m| m.payload == b"connected").await.is_some(), "{}", bridge.logs());
    let renewed = setup.wait_for_token_change().await;
    assert_eq!(Some(&renewed), setup.plextv.issued().last(), "the file holds the token plex.tv issued");
    assert!(setup.plextv.rejections().is_empty(), "{:?}", setup.plextv.rejections());
    assert!(bridge.wait_for_log("Plex token renewed", SLOW).await, "{}", bridge.logs());
    // The new token was checked against the server before it was written.
    let checked = setup.pms.requests().iter().any(|r| r.path == "/status/sessions" && r.token() == Some(&renewed));
    assert!(checked, "the new token was tried on /status/sessions");
    // The session went on: one WebSocket connection, no state change (a bounded negative check).
    wait::observe_while(Duration::from_millis(1500), || setup.pms.ws_connections_total() == 1).await;
    assert_eq!(setup.pms.ws_connections_total(), 1, "no reconnect: {}", bridge.logs());
    assert_eq!(setup.plextv.exchanges(), 1, "a new token inside renew_before is not renewed again at once");
    assert!(states.collect_for(Duration::from_millis(200)).await.iter().all(|m| m.payload == b"connected"));
    let health = healthz(setup.http).await;
    let token = &health["servers"]["test"]["token"];
    assert_eq!(token["kind"], "jwt", "{health}");
    assert_eq!(token["renewable"], true, "{health}");
    assert!(token["problem"].is_null(), "{health}");
    let (_, metrics) = support::http::get(setup.http, "/metrics").await;
    assert_eq!(metric(&metrics, "plex_mqtt_bridge_token_renewals_total", &["result=\"ok\""]), 1.0, "{metrics}");
    // Later REST calls read the new file.
    setup.pms.forget_extra_tokens();
    setup.pms.also_accept(&renewed);
    setup.assert_no_secrets(&bridge.logs(), &config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_renewal_keeps_the_old_token_and_shows_it() {
    let setup = Setup::new(Duration::from_secs(2 * 3600)).await;
    setup.plextv.fail_exchange(Some(503));
    let config = setup.config(Duration::from_secs(24 * 3600));
    let mut bridge = Bridge::start(&config);
    wait_healthz(setup.http, SLOW, "token_expiring while connected", |h| {
        h["servers"]["test"]["token"]["problem"]["reason"] == "token_expiring"
            && h["servers"]["test"]["state"] == "connected"
    })
    .await;
    let health = healthz(setup.http).await;
    assert_eq!(health["servers"]["test"]["state"], "connected", "the old token still works: {health}");
    assert!(health["servers"]["test"]["token"]["problem"]["error"].as_str().is_some_and(|e| e.contains("503")));
    assert_eq!(setup.token_now(), setup.first_token, "the old token stays in place");
    assert!(bridge.wait_for_log("cannot renew the Plex token", SLOW).await);
    let (_, metrics) = support::http::get(setup.http, "/metrics").await;
    assert!(metric(&metrics, "plex_mqtt_bridge_token_renewals_total", &["result=\"failed\""]) >= 1.0, "{metrics}");
    assert!(bridge.is_running());
    // plex.tv comes back: the next retry (10-20 s after the first failure) renews.
    setup.plextv.fail_exchange(None);
    let renewed = setup.wait_for_token_change_within(Duration::from_secs(40)).await;
    assert_eq!(Some(&renewed), setup.plextv.issued().last());
    wait_healthz(setup.http, SLOW, "the problem cleared", |h| h["servers"]["test"]["token"]["problem"].is_null()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_triggers_renewal_and_reconnects_with_the_new_one() {
    // A week left: nothing is due, until the server refuses the token.
    let setup = Setup::new(Duration::from_secs(7 * 24 * 3600)).await;
    let config = setup.config(Duration::from_secs(24 * 3600));
    let mut states = Probe::subscribe(setup.broker.port(), &["plex/test/state"]).await;
    let bridge = Bridge::start(&config);
    assert!(states.wait_for(SLOW, |m| m.payload == b"connected").await.is_some(), "{}", bridge.logs());
    // Bounded negative check: nothing is renewed while a week is left.
    wait::observe_while(Duration::from_millis(500), || setup.token_now() == setup.first_token).await;
    assert_eq!(setup.token_now(), setup.first_token, "not renewed while a week is left");
    // The server revokes the token (e.g. the device was signed out) and drops the session.
    setup.pms.forget_extra_tokens();
    setup.pms.drop_connections();
    let renewed = setup.wait_for_token_change().await;
    assert_eq!(Some(&renewed), setup.plextv.issued().last());
    assert!(states.wait_for(SLOW, |m| m.payload == b"connected").await.is_some(), "{}", bridge.logs());
    let upgraded = setup.pms.requests().iter().any(|r| r.status == 101 && r.token() == Some(&renewed));
    assert!(upgraded, "the new session uses the renewed token");
    assert!(setup.plextv.rejections().is_empty(), "{:?}", setup.plextv.rejections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_failed_after_a_401_is_retried_on_its_own_clock() {
    // A week left, and the server retries a rejected token only every minute (the default backoff cap): the
    // renewal after the 401 fails, and must be retried after its backoff (10-20 s), not at the next 401.
    let setup = Setup::new(Duration::from_secs(7 * 24 * 3600)).await;
    let config = setup.config(Duration::from_secs(24 * 3600)).plex(|p| p.backoff_max = Some(Duration::from_secs(60)));
    let mut states = Probe::subscribe(setup.broker.port(), &["plex/test/state"]).await;
    let bridge = Bridge::start(&config);
    assert!(states.wait_for(SLOW, |m| m.payload == b"connected").await.is_some(), "{}", bridge.logs());
    setup.plextv.fail_exchange(Some(503));
    setup.pms.forget_extra_tokens();
    setup.pms.drop_connections();
    assert!(states.wait_for(SLOW, |m| m.payload == b"unauthorized").await.is_some(), "{}", bridge.logs());
    wait_healthz(setup.http, SLOW, "the failed renewal and when it is tried again", |h| {
        h["servers"]["test"]["token"]["retry_at"].is_string()
    })
    .await;
    let failed = healthz(setup.http).await;
    assert_eq!(failed["servers"]["test"]["token"]["problem"]["reason"], "renewal_failed", "{failed}");
    let failed_at = std::time::Instant::now();
    setup.plextv.fail_exchange(None);
    let renewed = setup.wait_for_token_change_within(Duration::from_secs(35)).await;
    let took = failed_at.elapsed();
    assert!(took < Duration::from_secs(30), "retried after its backoff, not at the next 401: {took:?}");
    assert_eq!(Some(&renewed), setup.plextv.issued().last());
    // The supervisor tries the renewed token at once (it does not wait out its minute).
    assert!(
        states.wait_for(Duration::from_secs(10), |m| m.payload == b"connected").await.is_some(),
        "{}",
        bridge.logs()
    );
    let health = healthz(setup.http).await;
    assert!(health["servers"]["test"]["token"]["retry_at"].is_null(), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_key_file_is_a_clear_error_not_a_crash() {
    let setup = Setup::new(Duration::from_secs(2 * 3600)).await;
    // Another valid key under the registered key id.
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&setup.key_file).expect("key")).expect("JSON");
    let other = DeviceKey::generate("bridge-device-1").expect("key");
    let other_path = setup.dir.path().join("other.key");
    other.save(&other_path).expect("save");
    let other_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&other_path).expect("key")).expect("JSON");
    file["private_key"] = other_json["private_key"].clone();
    std::fs::write(&setup.key_file, file.to_string()).expect("tamper");
    let config = setup.config(Duration::from_secs(24 * 3600));
    let mut bridge = Bridge::start(&config);
    wait_healthz(setup.http, SLOW, "the key problem", |h| {
        h["servers"]["test"]["token"]["problem"]["error"].as_str().is_some_and(|e| e.contains("device key file"))
    })
    .await;
    assert!(bridge.wait_for_log("was changed (its key id does not match its key)", SLOW).await, "{}", bridge.logs());
    assert_eq!(setup.token_now(), setup.first_token);
    assert_eq!(setup.plextv.exchanges(), 0, "nothing signed with a key that is not the registered one");
    assert!(bridge.is_running());
    // `check` says the same, and the token's kind and expiry.
    let (code, output) = Bridge::run_to_exit(&["check"], &[], Some(&config.to_string()), SLOW).await;
    assert!(output.contains("Plex JWT, expires") && output.contains("NOT renewable"), "{code:?} {output}");
    assert!(!output.contains(&setup.first_token), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_token_works_as_before_and_check_says_so() {
    let broker = Mosquitto::start();
    let pms = FakePms::start_default().await;
    let token = support::TokenFile::new(&pms.token());
    let config = test_config(&broker.url(), &pms.url(), token.path());
    let (code, output) = Bridge::run_to_exit(&["check"], &[], Some(&config.to_string()), SLOW).await;
    assert!(output.contains("legacy token"), "{code:?} {output}");
    let mut states = Probe::subscribe(broker.port(), &["plex/test/state"]).await;
    let bridge = Bridge::start(&config);
    assert!(states.wait_for(SLOW, |m| m.payload == b"connected").await.is_some(), "{}", bridge.logs());
    assert!(!bridge.logs().contains("renew"), "{}", bridge.logs());
}

/// A JWT-shaped token that expired an hour ago (its signature is never checked by `check`'s description).
fn expired_jwt() -> String {
    use base64::Engine as _;
    let b64 = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() - 3600;
    format!(
        "{}.{}.{}",
        b64(r#"{"alg":"EdDSA","typ":"JWT"}"#),
        b64(&format!(r#"{{"exp":{exp},"iss":"plex.tv"}}"#)),
        b64("sig")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_describes_a_token_the_server_refuses_and_fits_the_fix_to_its_kind() {
    let broker = Mosquitto::start();
    let pms = FakePms::start_default().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("plex_token");
    std::fs::write(&token_file, expired_jwt()).expect("token file");
    let config = test_config(&broker.url(), &pms.url(), &token_file);
    let (code, output) = Bridge::run_to_exit(&["check"], &[], Some(&config.to_string()), SLOW).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("token rejected (HTTP 401)"), "{output}");
    assert!(output.contains("Plex JWT, EXPIRED at "), "kind and expiry: {output}");
    assert!(output.contains("NOT renewable: no device key"), "{output}");
    assert!(output.contains("fix: run plex-mqtt-bridge login"), "{output}");
    assert!(!output.contains("server owner's X-Plex-Token"), "not the legacy advice: {output}");
    // With the device key beside it, the advice is the renewal.
    DeviceKey::generate("bridge-device-1").expect("key").save(&dir.path().join("plex_token.key")).expect("save");
    let (_, output) = Bridge::run_to_exit(&["check"], &[], Some(&config.to_string()), SLOW).await;
    assert!(output.contains("renewed with the device key"), "{output}");
    assert!(output.contains("renews an expired Plex JWT with its device key"), "{output}");
    // A legacy token the server refuses keeps the owner's-token advice.
    std::fs::write(&token_file, "not-the-owners-token").expect("token file");
    let (_, output) = Bridge::run_to_exit(&["check"], &[], Some(&config.to_string()), SLOW).await;
    assert!(output.contains("legacy token") && output.contains("server owner's X-Plex-Token"), "{output}");
}
