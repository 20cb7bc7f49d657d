//! The bridge's configuration file as a typed value: tests change fields, never the text. A value left `None` is
//! not written (TOML has no null), so the bridge uses its default.
//!
//! ```ignore
//! let config = test_config(&broker.url(), &pms.url(), token.path())
//!     .transport(Transport::EventSource)
//!     .plex(|p| p.max_message_size = Some(4096))
//!     .log_level("trace");
//! let bridge = Bridge::start(&config);
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

/// `plex-mqtt-bridge.toml`. Rendered by `Display`.
#[derive(Clone, Debug, Serialize)]
pub struct BridgeConfig {
    pub mqtt: Mqtt,
    pub plex: Plex,
    pub servers: Vec<Server>,
    pub logging: Logging,
    pub http: Option<Http>,
    pub homeassistant: Option<HomeAssistant>,
    pub players: Option<Players>,
    pub commands: Option<Commands>,
}

/// `[mqtt]`
#[derive(Clone, Debug, Default, Serialize)]
pub struct Mqtt {
    pub url: String,
    pub client_id: Option<String>,
    pub topic_prefix: Option<String>,
    pub qos: Option<u8>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub max_inflight: Option<u32>,
    pub queue_size: Option<u32>,
    #[serde(with = "humantime_serde::option")]
    pub reconnect_max: Option<Duration>,
}

/// `[plex]`: settings for every server.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plex {
    #[serde(with = "humantime_serde::option")]
    pub ping_interval: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    pub idle_timeout: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    pub connect_timeout: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    pub request_timeout: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    pub backoff_min: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    pub backoff_max: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    pub stable_after: Option<Duration>,
    pub max_sessions: Option<u64>,
    pub max_message_size: Option<u64>,
    pub max_response_size: Option<u64>,
    pub webhook_compat: Option<bool>,
    pub plextv_url: Option<String>,
    #[serde(with = "humantime_serde::option")]
    pub renew_before: Option<Duration>,
}

/// How the bridge reads a server's notifications (`[[servers]] transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Transport {
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "websocket")]
    WebSocket,
    #[serde(rename = "eventsource")]
    EventSource,
}

/// One `[[servers]]` entry.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Server {
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub token: Option<String>,
    pub name: Option<String>,
    pub filters: Option<Vec<String>>,
    pub transport: Option<Transport>,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: Option<bool>,
    pub webhook_compat: Option<bool>,
}

impl Server {
    /// A server at `url` whose token is in `token_file`, named `name`.
    pub fn new(url: &str, token_file: &Path, name: &str) -> Server {
        Server {
            url: url.to_owned(),
            token_file: Some(token_file.to_owned()),
            name: Some(name.to_owned()),
            ..Server::default()
        }
    }
}

/// `[logging]`
#[derive(Clone, Debug, Default, Serialize)]
pub struct Logging {
    pub level: Option<String>,
    pub format: Option<String>,
}

/// `[http]`: the health and metrics endpoint.
#[derive(Clone, Debug, Serialize)]
pub struct Http {
    pub listen: String,
}

/// `[homeassistant]`
#[derive(Clone, Debug, Serialize)]
pub struct HomeAssistant {
    pub enabled: bool,
}

/// `[players]`
#[derive(Clone, Debug, Default, Serialize)]
pub struct Players {
    #[serde(with = "humantime_serde::option")]
    pub expire_after: Option<Duration>,
}

/// `[commands]`
#[derive(Clone, Debug, Default, Serialize)]
pub struct Commands {
    pub enabled: Option<bool>,
    pub allow: Option<Vec<String>>,
    pub rate_limit: Option<u32>,
}

impl Commands {
    /// `enabled = true` with `allow` (None: the bridge's default list).
    pub fn enabled(allow: Option<&[&str]>) -> Commands {
        Commands {
            enabled: Some(true),
            allow: allow.map(|verbs| verbs.iter().map(|v| (*v).to_owned()).collect()),
            rate_limit: None,
        }
    }
}

/// A client id no other bridge of this test process uses.
fn unique_client_id(kind: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!("{kind}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The config most tests run with: fast timings, one server named `test` without `log` notifications, debug
/// logs as text.
pub fn test_config(mqtt_url: &str, pms_url: &str, token_file: &Path) -> BridgeConfig {
    let mut config = BridgeConfig::defaults(mqtt_url, pms_url, token_file);
    config.mqtt.client_id = Some(unique_client_id("bridge-under-test"));
    config.plex = Plex {
        ping_interval: Some(Duration::from_millis(200)),
        idle_timeout: Some(Duration::from_secs(1)),
        connect_timeout: Some(Duration::from_secs(2)),
        backoff_min: Some(Duration::from_millis(100)),
        backoff_max: Some(Duration::from_secs(1)),
        stable_after: Some(Duration::from_secs(2)),
        ..Plex::default()
    };
    config.servers[0].filters = Some(vec!["-log".to_owned()]);
    config.log_level("debug").log_format("text")
}

impl BridgeConfig {
    /// The bridge's own defaults for everything but the broker (prefix `plex`, QoS 1) and one server named
    /// `test`: what a user who wrote the least would run.
    pub fn defaults(mqtt_url: &str, pms_url: &str, token_file: &Path) -> BridgeConfig {
        BridgeConfig {
            mqtt: Mqtt {
                url: mqtt_url.to_owned(),
                topic_prefix: Some("plex".to_owned()),
                qos: Some(1),
                ..Mqtt::default()
            },
            plex: Plex::default(),
            servers: vec![Server::new(pms_url, token_file, "test")],
            logging: Logging::default(),
            http: None,
            homeassistant: None,
            players: None,
            commands: None,
        }
    }

    /// Changes `[mqtt]`.
    pub fn mqtt(mut self, edit: impl FnOnce(&mut Mqtt)) -> Self {
        edit(&mut self.mqtt);
        self
    }

    /// Changes `[plex]`.
    pub fn plex(mut self, edit: impl FnOnce(&mut Plex)) -> Self {
        edit(&mut self.plex);
        self
    }

    /// Changes the first `[[servers]]` entry.
    pub fn server(mut self, edit: impl FnOnce(&mut Server)) -> Self {
        edit(&mut self.servers[0]);
        self
    }

    /// Adds a `[[servers]]` entry.
    pub fn add_server(mut self, server: Server) -> Self {
        self.servers.push(server);
        self
    }

    /// The first server's transport.
    pub fn transport(self, transport: Transport) -> Self {
        self.server(|s| s.transport = Some(transport))
    }

    /// The first server's name (`None`: no name, the bridge takes the server's friendlyName).
    pub fn server_name(self, name: Option<&str>) -> Self {
        self.server(|s| s.name = name.map(str::to_owned))
    }

    /// `[logging] level`
    pub fn log_level(mut self, level: &str) -> Self {
        self.logging.level = Some(level.to_owned());
        self
    }

    /// `[logging] format`
    pub fn log_format(mut self, format: &str) -> Self {
        self.logging.format = Some(format.to_owned());
        self
    }

    /// The health endpoint on 127.0.0.1:`port`.
    pub fn http(mut self, port: u16) -> Self {
        self.http = Some(Http { listen: format!("127.0.0.1:{port}") });
        self
    }

    /// `[homeassistant] enabled`
    pub fn homeassistant(mut self, enabled: bool) -> Self {
        self.homeassistant = Some(HomeAssistant { enabled });
        self
    }

    /// `[players] expire_after`
    pub fn players_expire_after(mut self, after: Duration) -> Self {
        self.players = Some(Players { expire_after: Some(after) });
        self
    }

    /// `[commands]`
    pub fn commands(mut self, commands: Commands) -> Self {
        self.commands = Some(commands);
        self
    }

    /// The TOML text (what `Display` writes).
    pub fn render(&self) -> String {
        toml::to_string(self).expect("the test config serializes to TOML")
    }
}

/// What a bridge can be started with: a [`BridgeConfig`], or config text written by hand.
pub trait ConfigText {
    fn config_text(&self) -> String;
}

impl ConfigText for BridgeConfig {
    fn config_text(&self) -> String {
        self.render()
    }
}

impl ConfigText for str {
    fn config_text(&self) -> String {
        self.to_owned()
    }
}

impl ConfigText for String {
    fn config_text(&self) -> String {
        self.clone()
    }
}

impl fmt::Display for BridgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}
