//! Add-on mode (`--addon`) end to end: the options the Supervisor writes, the broker it names (a fake Supervisor
//! that speaks its API and refuses a token it did not issue), a real Mosquitto that wants the service's password,
//! a fake PMS and, for the first start's login, a fake plex.tv.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::fake_plextv::FakePlexTv;
use support::fake_supervisor::{mosquitto_service, FakeSupervisor, SUPERVISOR_TOKEN};
use support::{Bridge, FakePms, Mosquitto, Probe};

const SOON: Duration = Duration::from_secs(20);
const USER: &str = "addons";
const PASSWORD: &str = "s3cret-mqtt-password";
const URL_ENV: &str = "PLEX_MQTT_BRIDGE_SUPERVISOR_URL";

/// `/data` of an add-on: `options.json` and, if given, the token file the first start's login would write.
struct Data {
    dir: tempfile::TempDir,
}

impl Data {
    fn new(options: Value, token: Option<&str>) -> Data {
        let dir = tempfile::Builder::new().prefix("addon-data-").tempdir().expect("tempdir");
        std::fs::write(dir.path().join("options.json"), options.to_string()).expect("write options.json");
        if let Some(token) = token {
            std::fs::write(dir.path().join("plex_token"), token).expect("write the token file");
        }
        Data { dir }
    }

    /// `--addon=<dir>/options.json`.
    fn arg(&self) -> String {
        format!("--addon={}", self.dir.path().join("options.json").display())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// What the Supervisor gives the add-on's process, pointing at the fake.
fn supervisor_env(supervisor: &FakeSupervisor, token: &str) -> Vec<(&'static str, String)> {
    vec![("SUPERVISOR_TOKEN", token.to_owned()), (URL_ENV, supervisor.url())]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_connects_to_the_broker_the_supervisor_names() {
    let broker = Mosquitto::start_with_password(USER, PASSWORD);
    let pms = FakePms::start_default().await;
    let supervisor = FakeSupervisor::start(Some(mosquitto_service(broker.port(), USER, PASSWORD))).await;
    let data =
        Data::new(json!({"server_url": pms.url(), "server_name": "test", "log_level": "debug"}), Some(&pms.token()));
    let mut probe = Probe::subscribe_with_credentials(broker.port(), USER, PASSWORD, &["plex/#"]).await;
    let env = supervisor_env(&supervisor, SUPERVISOR_TOKEN);
    let bridge = Bridge::start_with(&[&data.arg()], &env_refs(&env), None);
    probe.expect_payload("plex/bridge/state", "online", SOON).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    let requests = supervisor.requests();
    assert_eq!(requests.len(), 1, "one look-up at start");
    assert_eq!(requests[0].header("authorization"), Some(format!("Bearer {SUPERVISOR_TOKEN}").as_str()));
    assert_eq!(requests[0].status, 200);
    let logs = bridge.logs();
    assert!(logs.contains("mqtt://127.0.0.1:") && logs.contains("core_mosquitto"), "the log names the broker:\n{logs}");
    for secret in [PASSWORD, SUPERVISOR_TOKEN, pms.token().as_str()] {
        assert!(!logs.contains(secret), "a secret reached the log:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_supervisor_refuses_is_a_setup_error() {
    let supervisor = FakeSupervisor::start(Some(mosquitto_service(1883, USER, PASSWORD))).await;
    let data = Data::new(json!({"server_url": "http://127.0.0.1:32400"}), Some("plex-token"));
    let wrong = "not-the-supervisor-token-4567";
    let env = supervisor_env(&supervisor, wrong);
    let started = Instant::now();
    let out = Bridge::run_to_exit_split(&[&data.arg()], &env_refs(&env), None, SOON).await;
    assert_eq!(out.code, Some(78), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "a refusal is not retried");
    assert!(out.stderr.contains("the Supervisor refused the add-on's token (HTTP 403)"), "{}", out.stderr);
    assert!(out.stderr.contains("fix: restart the add-on"), "{}", out.stderr);
    assert!(!out.stderr.contains(wrong) && !out.stdout.contains(wrong), "the token was printed: {out:?}");
    let statuses: Vec<_> = supervisor.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [403]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_says_what_is_missing() {
    let data = Data::new(json!({"server_url": "http://127.0.0.1:32400"}), Some("plex-token"));
    let not_granted = FakeSupervisor::start(Some(mosquitto_service(1883, USER, PASSWORD))).await;
    not_granted.set_granted(false);
    let env = supervisor_env(&not_granted, SUPERVISOR_TOKEN);
    let out = Bridge::run_to_exit_split(&[&data.arg(), "check"], &env_refs(&env), None, SOON).await;
    assert_eq!(out.code, Some(78), "{out:?}");
    assert!(out.stderr.contains("does not let this add-on read the MQTT service"), "{}", out.stderr);
    assert!(out.stderr.contains("services: [\"mqtt:need\"]"), "{}", out.stderr);

    let no_broker = FakeSupervisor::start(None).await;
    let env = supervisor_env(&no_broker, SUPERVISOR_TOKEN);
    let out = Bridge::run_to_exit_split(&[&data.arg()], &env_refs(&env), None, SOON).await;
    assert_eq!(out.code, Some(78), "{out:?}");
    assert!(out.stderr.contains("the Supervisor knows no MQTT broker (\"Service not enabled\")"), "{}", out.stderr);
    assert!(out.stderr.contains("Mosquitto broker add-on"), "{}", out.stderr);

    let out = Bridge::run_to_exit_split(&[&data.arg(), "--print-config"], &[], None, SOON).await;
    assert_eq!(out.code, Some(78), "without SUPERVISOR_TOKEN: {out:?}");
    assert!(out.stderr.contains("SUPERVISOR_TOKEN is not set"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_map_onto_the_configuration() {
    let supervisor = FakeSupervisor::start(Some(mosquitto_service(1883, USER, PASSWORD))).await;
    let options = json!({
        "server_url": "http://192.168.1.10:32400", "server_name": "living_room", "topic_prefix": "home/plex",
        "discovery_prefix": "ha", "commands_enabled": true, "commands_allow": ["library_scan", "pause"],
        "log_level": "debug", "mqtt_url": "", "force_login": false
    });
    let data = Data::new(options, Some("plex-token-0123"));
    let env = supervisor_env(&supervisor, SUPERVISOR_TOKEN);
    let out = Bridge::run_to_exit_split(&[&data.arg(), "--print-config"], &env_refs(&env), None, SOON).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let printed: toml::Table = out.stdout.parse().unwrap_or_else(|e| panic!("not TOML ({e}):\n{}", out.stdout));
    let at = |path: &str| {
        path.split('.').try_fold(toml::Value::Table(printed.clone()), |value, part| match part.parse::<usize>() {
            Ok(index) => value.get(index).cloned(),
            Err(_) => value.get(part).cloned(),
        })
    };
    let text = |path: &str| at(path).and_then(|v| v.as_str().map(str::to_owned));
    assert_eq!(text("mqtt.url").as_deref(), Some("mqtt://127.0.0.1:1883"), "the Supervisor's broker");
    assert_eq!(text("mqtt.username").as_deref(), Some(USER));
    assert_eq!(text("mqtt.password").as_deref(), Some("***"));
    assert_eq!(text("mqtt.topic_prefix").as_deref(), Some("home/plex"));
    assert_eq!(text("servers.0.url").as_deref(), Some("http://192.168.1.10:32400/"));
    assert_eq!(text("servers.0.name").as_deref(), Some("living_room"));
    assert_eq!(text("servers.0.token_file"), Some(data.path("plex_token").display().to_string()));
    assert_eq!(text("homeassistant.discovery_prefix").as_deref(), Some("ha"));
    assert_eq!(at("commands.enabled").and_then(|v| v.as_bool()), Some(true));
    assert_eq!(at("commands.allow").map(|v| v.to_string()).as_deref(), Some(r#"["library_scan", "pause"]"#));
    assert_eq!(text("logging.level").as_deref(), Some("debug"));
    for secret in [PASSWORD, SUPERVISOR_TOKEN, "plex-token-0123"] {
        assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret), "{secret} was printed: {out:?}");
    }

    // A broker named in the options wins, and the Supervisor is not asked.
    let named = Data::new(
        json!({"server_url": "http://192.168.1.10:32400", "mqtt_url": "mqtt://broker.lan:1884",
               "mqtt_username": "me", "mqtt_password": "own-password-789"}),
        Some("plex-token-0123"),
    );
    let out = Bridge::run_to_exit_split(&[&named.arg(), "--print-config"], &env_refs(&env), None, SOON).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("url = \"mqtt://broker.lan:1884\"") && out.stdout.contains("username = \"me\""));
    assert!(out.stdout.contains("password = \"***\"") && !out.stdout.contains("own-password-789"), "{}", out.stdout);
    assert_eq!(supervisor.requests().len(), 1, "only the first run asked the Supervisor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_option_is_named_as_on_the_configuration_page() {
    let cases = [
        (
            json!({"server_url": "http://x:32400", "mqtt_url": "mqtt://h", "commands_allow": ["nope"]}),
            "`commands_allow`",
        ),
        (json!({"server_url": "ftp://x", "mqtt_url": "mqtt://h"}), "`server_url`"),
        (
            json!({"server_url": "http://x:32400", "mqtt_url": "mqtt://h", "commands_enabled": "maybe"}),
            "`commands_enabled`",
        ),
        (
            json!({"server_url": "http://x:32400", "serverurl": "http://y"}),
            "`serverurl` is not an option of this add-on",
        ),
    ];
    for (options, expected) in cases {
        let data = Data::new(options.clone(), Some("plex-token"));
        let out = Bridge::run_to_exit_split(&[&data.arg(), "--print-config"], &[], None, SOON).await;
        assert_eq!(out.code, Some(78), "{options}: {out:?}");
        assert!(out.stderr.contains(expected), "{options}: expected {expected} in {}", out.stderr);
    }
    // No token yet and not the daemon: the fix is to start the add-on, which logs in.
    let data = Data::new(json!({"server_url": "http://x:32400", "mqtt_url": "mqtt://h"}), None);
    let out = Bridge::run_to_exit_split(&[&data.arg(), "--print-config"], &[], None, SOON).await;
    assert_eq!(out.code, Some(78), "{out:?}");
    assert!(out.stderr.contains("logs in to Plex at its first start"), "{}", out.stderr);
}

/// The first start has no token: the bridge logs in (the code is in its log, where an add-on user looks), writes
/// the token and the device key into `/data` (0600) and goes on to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_logs_in_and_runs() {
    let broker = Mosquitto::start_with_password(USER, PASSWORD);
    let pms = FakePms::start_default().await;
    let plextv = FakePlexTv::start().await;
    plextv.on_issue(pms.token_acceptor());
    let supervisor = FakeSupervisor::start(Some(mosquitto_service(broker.port(), USER, PASSWORD))).await;
    let data = Data::new(json!({"server_url": pms.url(), "server_name": "test"}), None);
    let mut probe = Probe::subscribe_with_credentials(broker.port(), USER, PASSWORD, &["plex/#"]).await;
    let mut env = supervisor_env(&supervisor, SUPERVISOR_TOKEN);
    env.push(("PLEX_MQTT_BRIDGE_PLEX_PLEXTV_URL", plextv.url()));
    let bridge = Bridge::start_with(&[&data.arg()], &env_refs(&env), None);
    assert!(bridge.wait_for_log("https://plex.tv/link", SOON).await, "no login code in the log:\n{}", bridge.logs());
    assert_eq!(plextv.approve_pins(), 1);
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    for file in ["plex_token", "plex_token.key"] {
        let mode = std::fs::metadata(data.path(file)).expect(file).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    let token = std::fs::read_to_string(data.path("plex_token")).expect("token");
    assert!(!bridge.logs().contains(token.trim()), "the token reached the log");
    assert!(plextv.rejections().is_empty(), "{:?}", plextv.rejections());
}
