//! A real Home Assistant on 127.0.0.1, for the tests that prove discovery the way users see it.
//!
//! It runs from the virtualenv `tests/homeassistant/install.sh` makes (`HA_TEST_VENV`, default
//! `/var/cache/plex-mqtt-bridge/homeassistant-2025.4.4`), configured without any UI step by
//! `tests/homeassistant/prepare.py` (HTTP on a free port, the MQTT integration against the test broker, an owner
//! with a long-lived token), started with `--skip-pip` so it installs nothing at run time, and asked through its
//! REST API. A missing installation fails the test with the install command; `HA_TEST_SKIP=1` opts out.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::wait;

/// The Home Assistant version the tests are written against (the newest that installs on Python 3.13.0).
pub const VERSION: &str = "2025.4.4";
/// How long Home Assistant may take to start (about 6 s on an idle 2-core machine).
const START_LIMIT: Duration = Duration::from_secs(90);
/// How long it may take to stop after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A running Home Assistant; stopped on Drop.
pub struct HomeAssistant {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    token: String,
    http: reqwest::Client,
}

/// Whether the real-Home-Assistant tests are switched off (`HA_TEST_SKIP=1`); says so on stderr.
pub fn skipped(test: &str) -> bool {
    let skip = std::env::var("HA_TEST_SKIP").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("{test}: skipped, HA_TEST_SKIP=1");
    }
    skip
}

fn venv() -> PathBuf {
    let venv = std::env::var_os("HA_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/var/cache/plex-mqtt-bridge/homeassistant-{VERSION}")));
    assert!(
        venv.join("bin/hass").is_file() && venv.join(".complete").is_file(),
        "Home Assistant {VERSION} is not installed in {}: `bash tests/run` installs it (with \
         tests/homeassistant/install.sh: about 3 min, cached afterwards), or set HA_TEST_VENV to its virtualenv \
         (HA_TEST_SKIP=1 skips these tests)",
        venv.display()
    );
    venv
}

impl HomeAssistant {
    /// Starts Home Assistant with its MQTT integration on the broker at 127.0.0.1:`mqtt_port` and
    /// `automations` (YAML) as its automations, and waits until its API answers.
    pub async fn start(mqtt_port: u16, automations: &str) -> HomeAssistant {
        let venv = venv();
        let dir = tempfile::Builder::new().prefix("homeassistant-test-").tempdir().expect("tempdir");
        std::fs::write(dir.path().join("automations.yaml"), automations).expect("write automations.yaml");
        let port = super::mosquitto::free_port();
        let prepare = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/homeassistant/prepare.py");
        let out = Command::new(venv.join("bin/python"))
            .arg(&prepare)
            .arg(dir.path())
            .arg(port.to_string())
            .arg(mqtt_port.to_string())
            .output()
            .expect("run prepare.py");
        assert!(out.status.success(), "prepare.py failed: {}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).expect("token").trim().to_owned();
        let console = File::create(dir.path().join("console.log")).expect("console.log");
        let child = Command::new(venv.join("bin/hass"))
            .arg("-c")
            .arg(dir.path())
            .arg("--skip-pip")
            .stdin(Stdio::null())
            .stdout(Stdio::from(console.try_clone().expect("clone")))
            .stderr(Stdio::from(console))
            .spawn()
            .expect("start hass");
        plex_mqtt_bridge::tls::install_crypto_provider();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
        let mut ha = HomeAssistant { child, dir, port, token, http };
        let answered = wait::poll(START_LIMIT, async || {
            if let Ok(Some(status)) = ha.child.try_wait() {
                panic!("Home Assistant exited ({status}):\n{}", ha.console());
            }
            ha.get("/api/").await
        })
        .await;
        assert!(answered.is_some(), "Home Assistant did not start:\n{}", ha.console());
        ha
    }

    /// `GET path` on the REST API as JSON; None unless 200.
    pub async fn get(&self, path: &str) -> Option<Value> {
        serde_json::from_str(&self.get_ok(path).await?.text().await.ok()?).ok()
    }

    /// `GET path` with the access token; the response if it is a 200.
    async fn get_ok(&self, path: &str) -> Option<reqwest::Response> {
        let response = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        response.status().is_success().then_some(response)
    }

    /// `POST path` with a JSON body; the response text, None unless 200.
    pub async fn post(&self, path: &str, body: &Value) -> Option<String> {
        let response = self
            .http
            .post(format!("http://127.0.0.1:{}{path}", self.port))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    /// Renders a template (`POST /api/template`), e.g. `{{ device_id('sensor.x') }}`.
    pub async fn template(&self, template: &str) -> String {
        self.post("/api/template", &serde_json::json!({ "template": template })).await.unwrap_or_default()
    }

    /// Calls a service (`POST /api/services/<domain>/<service>`).
    pub async fn call(&self, domain: &str, service: &str, data: &Value) {
        let done = self.post(&format!("/api/services/{domain}/{service}"), data).await;
        assert!(done.is_some(), "{domain}.{service} failed");
    }

    /// Replaces `automations.yaml` and reloads the automations.
    pub async fn set_automations(&self, yaml: &str) {
        std::fs::write(self.dir.path().join("automations.yaml"), yaml).expect("write automations.yaml");
        self.call("automation", "reload", &serde_json::json!({})).await;
    }

    /// The bytes an image entity serves (`/api/image_proxy/<entity_id>`).
    pub async fn image(&self, entity_id: &str) -> Option<Vec<u8>> {
        let response = self.get_ok(&format!("/api/image_proxy/{entity_id}")).await?;
        response.bytes().await.ok().map(|b| b.to_vec())
    }

    /// `/api/states` as text (to search it, e.g. for a token).
    pub async fn states_text(&self) -> String {
        self.get("/api/states").await.map(|v| v.to_string()).unwrap_or_default()
    }

    /// Every entity's state object.
    pub async fn states(&self) -> Vec<Value> {
        self.get("/api/states").await.and_then(|v| v.as_array().cloned()).unwrap_or_default()
    }

    /// The state object of `entity_id`, if it exists.
    pub async fn state(&self, entity_id: &str) -> Option<Value> {
        self.get(&format!("/api/states/{entity_id}")).await
    }

    /// Waits until `entity_id` exists and its state object satisfies `pred`; panics after `timeout` with what
    /// was there.
    pub async fn wait_state(&self, entity_id: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = None;
        let matched = wait::poll(timeout, async || {
            last = self.state(entity_id).await;
            last.clone().filter(|s| pred(s))
        })
        .await;
        if let Some(state) = matched {
            return state;
        }
        let ids: Vec<String> =
            self.states().await.iter().filter_map(|s| s["entity_id"].as_str().map(str::to_owned)).collect();
        panic!("{entity_id} never matched; last: {last:?}\nentities: {ids:?}\nlog:\n{}", self.log());
    }

    /// `home-assistant.log` so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("home-assistant.log")).unwrap_or_default()
    }

    /// Lines of the log at WARNING or above, except the two every test start has (pip skipped, no fast zlib).
    pub fn warnings(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" WARNING ") || l.contains(" ERROR ") || l.contains(" CRITICAL "))
            .filter(|l| !l.contains("Skipping pip installation") && !l.contains("zlib_ng and isal"))
            .map(str::to_owned)
            .collect()
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }
}

impl Drop for HomeAssistant {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- home-assistant.log -----\n{}\n----- end -----", self.log());
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        if wait::poll_blocking(STOP_LIMIT, || self.child.try_wait().ok().flatten()).is_some() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
