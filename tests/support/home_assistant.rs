//! A real Home Assistant on 127.0.0.1, for the tests that prove discovery the way users see it.
//!
//! Two versions, both ends of the supported range ([`OLDEST`] and [`CURRENT`]), installed by
//! `tests/homeassistant/install.sh` under `HA_TEST_CACHE` (default `/var/cache/plex-mqtt-bridge`): the oldest in a
//! virtualenv on the host, the current one (it needs Python 3.14) in a virtualenv inside a Debian unstable root,
//! started there through `tests/homeassistant/in-root.sh` (chroot, with the host's /proc, /dev and /tmp mounted
//! in a mount namespace of its own, so the mounts end with the process). Each is configured without any UI step
//! by `tests/homeassistant/prepare.py` (HTTP on a free port, the MQTT integration against the test broker, an
//! owner with a long-lived token) in a directory under /tmp (the same path inside the root), started with
//! `--skip-pip` so it installs nothing at run time, and asked through its REST API. A missing installation fails
//! the test with the install command; `HA_TEST_SKIP=1` opts out.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::wait;

/// A Home Assistant version the tests run, and where it is installed.
#[derive(Clone, Copy, Debug)]
pub struct Version {
    /// Its version number, e.g. `2025.4.4`.
    pub number: &'static str,
    /// Whether it runs inside the Debian root (a Python the host lacks) rather than on the host.
    in_root: bool,
}

/// The oldest supported version that installs here (the newest that runs on the host's Python 3.13.0).
pub const OLDEST: Version = Version { number: "2025.4.4", in_root: false };
/// The current release (Python 3.14, in the Debian unstable root).
pub const CURRENT: Version = Version { number: "2026.11.0", in_root: true };

/// How long Home Assistant may take to start (about 6 s on an idle 2-core machine).
const START_LIMIT: Duration = Duration::from_secs(90);
/// How long `prepare.py` may take to write the configuration and the owner's token (it imports a few Home
/// Assistant modules and writes a few files).
const PREPARE_LIMIT: Duration = Duration::from_secs(60);
/// How long it may take to stop after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// What Home Assistant logs at every start of a test installation, whatever the bridge does: pip skipped
/// (`--skip-pip`), no fast zlib (optional speed-ups not installed), and, from 2026 on, no `ffmpeg` program (its
/// integration is set up by default, for text-to-speech; the bridge uses none of it, and Debian's ffmpeg would
/// make the test root several times bigger).
const EXPECTED_WARNINGS: &[&str] = &["Skipping pip installation", "zlib_ng and isal", "[haffmpeg."];

/// A running Home Assistant; stopped on Drop.
pub struct HomeAssistant {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    token: String,
    http: reqwest::Client,
}

/// Whether the real-Home-Assistant tests are switched off (`HA_TEST_SKIP=1`, a developer convenience; CI unsets
/// it). A skip is written to the process's stderr itself, not through `eprintln!`, which the test harness captures
/// and throws away for a test that passes: the skip shows in every `cargo test` run.
pub fn skipped(test: &str) -> bool {
    use std::io::Write;
    let skip = std::env::var("HA_TEST_SKIP").is_ok_and(|v| v == "1");
    if skip {
        let line = format!("SKIPPED {test}: HA_TEST_SKIP=1, the real Home Assistant did not run\n");
        std::io::stderr().write_all(line.as_bytes()).expect("write the skip to stderr");
    }
    skip
}

/// An entity's state (`"on"`, `"playing"`…) in a `/api/states/<entity>` answer; empty when it has none.
pub fn state_of(entity: &Value) -> &str {
    entity["state"].as_str().unwrap_or_default()
}

fn cache() -> PathBuf {
    std::env::var_os("HA_TEST_CACHE").map_or_else(|| PathBuf::from("/var/cache/plex-mqtt-bridge"), PathBuf::from)
}

impl Version {
    /// The Debian root it runs in, if it runs in one.
    fn root(self) -> Option<PathBuf> {
        self.in_root.then(|| cache().join("debian-sid"))
    }

    /// Its virtualenv, as the process that runs it sees the path.
    fn venv(self) -> PathBuf {
        if self.in_root {
            PathBuf::from(format!("/opt/homeassistant-{}", self.number))
        } else {
            cache().join(format!("homeassistant-{}", self.number))
        }
    }

    /// A command running `program` of its virtualenv (`hass`, `python`); panics with the install command when it
    /// is not installed.
    fn command(self, program: &str) -> Command {
        let venv = self.venv();
        let on_host = match self.root() {
            Some(root) => root.join(venv.strip_prefix("/").expect("absolute")),
            None => venv.clone(),
        };
        assert!(
            on_host.join("bin/hass").is_file() && on_host.join(".complete").is_file(),
            "Home Assistant {} is not installed in {}: `bash tests/run` installs it (with `bash \
             tests/homeassistant/install.sh {}`: 1-3 min, cached afterwards; HA_TEST_CACHE moves the cache); \
             HA_TEST_SKIP=1 skips these tests",
            self.number,
            on_host.display(),
            self.number,
        );
        let program = venv.join("bin").join(program);
        let Some(root) = self.root() else {
            return Command::new(program);
        };
        // Entering the root (unshare, mount, chroot) needs root.
        let uid = std::fs::metadata("/proc/self").map(|m| m.uid());
        assert!(matches!(uid, Ok(0)), "Home Assistant {} runs in a chroot: run the tests as root", self.number);
        let mut command = Command::new("bash");
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/homeassistant/in-root.sh"))
            .arg(root)
            .arg(program);
        command
    }
}

impl HomeAssistant {
    /// Starts Home Assistant with its MQTT integration on the broker at 127.0.0.1:`mqtt_port` and
    /// `automations` (YAML) as its automations, and waits until its API answers.
    pub async fn start(version: Version, mqtt_port: u16, automations: &str) -> HomeAssistant {
        Self::start_with_packages(version, mqtt_port, automations, &[]).await
    }

    /// [`HomeAssistant::start`] with `packages` (file name, YAML) in its `packages` folder from the start (an
    /// integration that only a package configures is set up only if the package is there at start).
    pub async fn start_with_packages(
        version: Version,
        mqtt_port: u16,
        automations: &str,
        packages: &[(&str, &str)],
    ) -> HomeAssistant {
        // Under /tmp whatever TMPDIR says: the Debian root sees the host's /tmp at the same path.
        let dir = tempfile::Builder::new().prefix("homeassistant-test-").tempdir_in("/tmp").expect("tempdir");
        std::fs::write(dir.path().join("automations.yaml"), automations).expect("write automations.yaml");
        let port = super::mosquitto::free_port();
        // The script goes in on stdin: the root does not see this checkout.
        let prepare = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/homeassistant/prepare.py");
        // Its output goes to files (no pipe to drain while waiting), and it gets PREPARE_LIMIT to finish.
        let (out_path, err_path) = (dir.path().join("prepare.out"), dir.path().join("prepare.err"));
        let mut prepare_run = version
            .command("python")
            .arg("-")
            .arg(dir.path())
            .arg(port.to_string())
            .arg(mqtt_port.to_string())
            .arg(version.number)
            .stdin(File::open(&prepare).expect("open prepare.py"))
            .stdout(File::create(&out_path).expect("create prepare.out"))
            .stderr(File::create(&err_path).expect("create prepare.err"))
            .spawn()
            .expect("run prepare.py");
        let finished = wait::poll(PREPARE_LIMIT, async || prepare_run.try_wait().expect("wait for prepare.py")).await;
        let errors = || std::fs::read_to_string(&err_path).unwrap_or_else(|e| format!("<no prepare.err: {e}>"));
        let Some(status) = finished else {
            // Errors mean it exited meanwhile; wait() reaps it either way.
            let _ = prepare_run.kill();
            let _ = prepare_run.wait();
            panic!("prepare.py did not finish within {PREPARE_LIMIT:?}: {}", errors());
        };
        assert!(status.success(), "prepare.py failed ({status}): {}", errors());
        let token = std::fs::read_to_string(&out_path).expect("read the token prepare.py printed").trim().to_owned();
        for (name, yaml) in packages {
            std::fs::write(dir.path().join("packages").join(name), yaml).expect("write a package");
        }
        let console = File::create(dir.path().join("console.log")).expect("console.log");
        // In the root, the process started is Home Assistant itself (in-root.sh execs it), so Drop's SIGTERM
        // reaches it, and the root's mounts end with it.
        let child = version
            .command("hass")
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
        let (status, text) = self.post_answer(path, body).await?;
        (200..300).contains(&status).then_some(text)
    }

    /// `POST path` with a JSON body; the status and text of any answer (e.g. why an action was refused).
    pub async fn post_answer(&self, path: &str, body: &Value) -> Option<(u16, String)> {
        let response = self
            .http
            .post(format!("http://127.0.0.1:{}{path}", self.port))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
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

    /// Replaces (or adds) the package `name` in the `packages` folder; reload what it configures to apply it.
    pub fn set_package(&self, name: &str, yaml: &str) {
        std::fs::write(self.dir.path().join("packages").join(name), yaml).expect("write a package");
    }

    /// The bytes an image entity serves (`/api/image_proxy/<entity_id>`).
    pub async fn image(&self, entity_id: &str) -> Option<Vec<u8>> {
        self.bytes(&format!("/api/image_proxy/{entity_id}")).await
    }

    /// The body of `GET path` (e.g. an `entity_picture` URL), if it is a 200.
    pub async fn bytes(&self, path: &str) -> Option<Vec<u8>> {
        let response = self.get_ok(path).await?;
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

    /// Lines of the log at WARNING or above, except those every test start has ([`EXPECTED_WARNINGS`]).
    pub fn warnings(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" WARNING ") || l.contains(" ERROR ") || l.contains(" CRITICAL "))
            .filter(|l| !EXPECTED_WARNINGS.iter().any(|expected| l.contains(expected)))
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
