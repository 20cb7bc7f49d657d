//! Configuration: built-in defaults < TOML file < environment (`PLEX_MQTT_BRIDGE_…`) < command-line flags,
//! layered with figment, then validated into typed settings with one precise error per problem.
//!
//! Every error names the key (as the user wrote it: `servers[1].name`, `mqtt.url`, or the environment variable)
//! and says how to fix it, and the process exits with 78 (EX_CONFIG). Secrets are [`Secret`]s, so printing the
//! effective config (`--print-config`) shows `***` in their place.

mod commands;
mod syntax;

pub use commands::CommandsConfig;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use reqwest::Url;
use rumqttc::QoS;
use serde::{Deserialize, Serialize};

use crate::lenient;
use crate::secret::Secret;
use crate::tls::TlsOptions;
use crate::topic::{topic_text_problem, ServerName};

/// The prefix of every environment variable the bridge reads.
pub const ENV_PREFIX: &str = "PLEX_MQTT_BRIDGE_";

/// A configuration problem: which key, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{key}` {problem}; {fix}")]
pub struct ConfigError {
    /// The key as the user wrote it (`mqtt.url`, `servers[0].token`, `PLEX_MQTT_BRIDGE_MQTT__QOS`, `--config`).
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        ConfigError { key: key.into(), problem: problem.into(), fix: fix.into() }
    }
}

/// Where the settings come from, besides defaults and the environment.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// `--config PATH`.
    pub file: Option<PathBuf>,
    /// Command-line overrides as `(dotted key, value)` pairs, e.g. `("mqtt.url", "mqtt://…")`.
    pub overrides: Vec<(String, String)>,
    /// The environment, as `(name, value)` pairs; normally `std::env::vars()`.
    pub env: Vec<(String, String)>,
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub mqtt: MqttConfig,
    pub plex: PlexConfig,
    pub servers: Vec<ServerConfig>,
    pub logging: LoggingConfig,
    pub homeassistant: HomeAssistantConfig,
    pub http: HttpConfig,
    pub players: PlayersConfig,
    pub commands: CommandsConfig,
}

/// Plex players (clients): their retained state and Home Assistant devices.
#[derive(Debug, Clone, Serialize)]
pub struct PlayersConfig {
    /// A player not seen for this long loses its device and retained state; `None` (`0` in the file) keeps
    /// players for ever.
    #[serde(with = "humantime_serde")]
    pub expire_after: Option<Duration>,
    /// Fetch the poster of what a player shows and publish it for the "Artwork" image entity.
    pub artwork: bool,
}

/// The optional health and metrics endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct HttpConfig {
    /// Where `/healthz` and `/metrics` are served; off when `None`.
    pub listen: Option<std::net::SocketAddr>,
}

/// Home Assistant MQTT discovery.
#[derive(Debug, Clone, Serialize)]
pub struct HomeAssistantConfig {
    /// Announce entities (and remove them again when disabled or when a server leaves the config).
    pub enabled: bool,
    /// Home Assistant's discovery prefix (its MQTT integration setting; `homeassistant` unless changed).
    pub discovery_prefix: String,
}

/// The broker connection.
#[derive(Debug, Clone, Serialize)]
pub struct MqttConfig {
    /// The broker URL without credentials (safe to print).
    pub url: String,
    #[serde(skip)]
    pub host: String,
    #[serde(skip)]
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub client_id: String,
    pub topic_prefix: String,
    #[serde(serialize_with = "serialize_qos")]
    pub qos: QoS,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Live events held while the broker is unreachable or slow; the oldest are dropped beyond this.
    pub queue_size: usize,
    /// Largest MQTT packet sent or accepted, in bytes.
    pub max_packet_size: usize,
    /// QoS 1/2 messages sent but not yet acknowledged, at most. rumqttc's default (100) caps throughput at
    /// 100 messages per broker round trip, and round trips grow with the broker's load, so the broker, not the
    /// window, should set the pace; memory stays bounded by this plus `queue_size` messages.
    pub max_inflight: u16,
    /// Longest wait between broker reconnection attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// TLS settings for `mqtts://` (`None` for plain `mqtt://`).
    #[serde(flatten, serialize_with = "serialize_tls")]
    pub tls: Option<TlsOptions>,
}

/// How the bridge talks to every Plex server.
#[derive(Debug, Clone, Serialize)]
pub struct PlexConfig {
    /// `X-Plex-Client-Identifier`: stable per installation (see [`default_client_identifier`]).
    pub client_identifier: String,
    /// `X-Plex-Device-Name`, shown in Plex's list of devices.
    pub device_name: String,
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    #[serde(with = "humantime_serde")]
    pub stable_after: Duration,
    /// Largest notification accepted from PMS, in bytes; larger ones are dropped and counted.
    pub max_message_size: usize,
    /// How often sessions and activities are reconciled with the server even without a reconnect.
    #[serde(with = "humantime_serde")]
    pub resync_interval: Duration,
    /// Progress (percent) at which a session is scrobbled.
    pub scrobble_threshold: f64,
    /// Playback sessions tracked per server at most; further new sessions are forwarded raw only (counted,
    /// logged), so no frame, however many sessions it announces, can stall the bridge.
    pub max_sessions: usize,
    /// How long a new session's first retained document, its `play` event and the summary wait for the
    /// session's details from `/status/sessions`; after that they go out with what is known (completed later).
    #[serde(with = "humantime_serde")]
    pub enrichment_wait: Duration,
    /// Largest REST response read from PMS (`/status/sessions`, `/activities`, metadata), in bytes.
    pub max_response_size: usize,
    /// Also publish Plex-webhook-shaped messages on `<p>/<server>/webhook` for servers that do not say
    /// otherwise (`[[servers]] webhook_compat` wins), so automations written for Plex webhooks port unchanged.
    pub webhook_compat: bool,
    /// plex.tv's base URL for token renewal (`https://clients.plex.tv`; a loopback `http://` URL for tests).
    #[serde(serialize_with = "serialize_display")]
    pub plextv_url: Url,
    /// A Plex JWT is renewed when less than this of its life is left.
    #[serde(with = "humantime_serde")]
    pub renew_before: Duration,
    /// The device key that renews a Plex JWT; `None`: `<token_file>.key` beside each server's token file.
    pub device_key_file: Option<PathBuf>,
}

impl PlexConfig {
    /// The device key file for a server whose token is in `token_file`.
    pub fn device_key_for(&self, token_file: &Path) -> PathBuf {
        match &self.device_key_file {
            Some(path) => resolve_credential(path),
            None => default_device_key_file(token_file),
        }
    }
}

/// plex.tv's base URL for the token endpoints.
pub const DEFAULT_PLEXTV_URL: &str = "https://clients.plex.tv";

/// plex.tv carries the account token, so its URL must be `https://`, or `http://` on a loopback address (a
/// test's fake plex.tv): a typo cannot send the token in clear text.
pub fn plextv_url_allowed(url: &Url) -> bool {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    url.scheme() == "https" || (url.scheme() == "http" && loopback)
}

/// `<token_file>.key`: where `login` puts the device key unless told otherwise.
pub fn default_device_key_file(token_file: &Path) -> PathBuf {
    let mut name = token_file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".key");
    token_file.with_file_name(name)
}

/// One Plex Media Server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    /// Base URL (`http://host:32400`), without credentials.
    #[serde(serialize_with = "serialize_display")]
    pub url: Url,
    /// The token, inline or from a file that is re-read before every connection attempt.
    #[serde(flatten)]
    pub token: TokenSource,
    /// The topic name, if configured; otherwise derived from the server's friendlyName.
    pub name: Option<String>,
    /// `filters` query parameter entries; `None` sends no parameter (the server's default, `-log`).
    pub filters: Option<Vec<String>>,
    /// Which notification transport to use.
    pub transport: Transport,
    /// Publish Plex-webhook-shaped messages on `<p>/<server>/webhook`: this server's own setting, else
    /// `plex.webhook_compat`.
    pub webhook_compat: bool,
    /// TLS settings for `https://` servers.
    #[serde(flatten)]
    pub tls: TlsOptions,
    /// Where the key lives, for messages (`servers[0]` or `plex`).
    #[serde(skip)]
    pub key: String,
}

impl ServerConfig {
    /// The rustls configuration for an `https://` server (`None` for `http://`), shared by its REST calls and
    /// its notification socket.
    pub fn tls_config(&self) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, crate::tls::TlsError> {
        if self.url.scheme() == "https" {
            crate::tls::client_config(&self.tls).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// The notification transport of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// WebSocket first; EventSource when the upgrade is refused (remembered until restart).
    Auto,
    /// Only WebSocket.
    WebSocket,
    /// Only EventSource (SSE).
    EventSource,
}

impl Transport {
    /// The name used in the config and in `<server>/info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::WebSocket => "websocket",
            Transport::EventSource => "eventsource",
        }
    }
}

/// Where a token comes from.
#[derive(Debug, Clone, Serialize)]
pub enum TokenSource {
    #[serde(rename = "token")]
    Inline(Secret),
    #[serde(rename = "token_file")]
    File(PathBuf),
}

impl TokenSource {
    /// The token now. A file is read every time, so a rotated token is picked up without a restart.
    pub fn read(&self) -> std::io::Result<Secret> {
        match self {
            TokenSource::Inline(secret) => Ok(secret.clone()),
            TokenSource::File(path) => Ok(Secret::new(std::fs::read_to_string(resolve_credential(path))?)),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Serialize)]
pub struct LoggingConfig {
    /// An env-filter directive such as `info` or `plex_mqtt_bridge=debug`.
    pub level: String,
    pub format: LogFormat,
}

/// Human-readable lines or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

// ---------------------------------------------------------------------------------------------------------------
// What the user writes.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    mqtt: RawMqtt,
    #[serde(default)]
    plex: RawPlex,
    #[serde(default)]
    servers: Vec<RawServer>,
    #[serde(default)]
    logging: RawLogging,
    #[serde(default)]
    homeassistant: RawHomeAssistant,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    players: RawPlayers,
    #[serde(default)]
    commands: commands::RawCommands,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlayers {
    #[serde(default, with = "humantime_serde")]
    expire_after: Option<Duration>,
    #[serde(default)]
    artwork: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    url: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    username: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    client_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    topic_prefix: Option<String>,
    #[serde(default)]
    qos: Option<u8>,
    #[serde(default, with = "humantime_serde")]
    keep_alive: Option<Duration>,
    #[serde(default)]
    queue_size: Option<usize>,
    #[serde(default)]
    max_packet_size: Option<usize>,
    #[serde(default)]
    max_inflight: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    reconnect_max: Option<Duration>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    client_cert: Option<PathBuf>,
    #[serde(default)]
    client_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlex {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    client_identifier: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    device_name: Option<String>,
    #[serde(default, with = "humantime_serde")]
    ping_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    backoff_min: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    backoff_max: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    stable_after: Option<Duration>,
    #[serde(default)]
    max_message_size: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    resync_interval: Option<Duration>,
    #[serde(default)]
    scrobble_threshold: Option<f64>,
    #[serde(default)]
    max_sessions: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    enrichment_wait: Option<Duration>,
    #[serde(default)]
    max_response_size: Option<usize>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    plextv_url: Option<String>,
    #[serde(default, with = "humantime_serde")]
    renew_before: Option<Duration>,
    #[serde(default)]
    device_key_file: Option<PathBuf>,
    /// The default of every server's `webhook_compat` (also the single-server shorthand's, which has no own).
    #[serde(default)]
    webhook_compat: Option<bool>,
    /// Single-server shorthand (`PLEX_MQTT_BRIDGE_PLEX_URL` …), so a Compose file needs no config file.
    #[serde(flatten)]
    server: RawServer,
}

#[derive(Debug, Default, Deserialize)]
struct RawServer {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    url: Option<String>,
    #[serde(default)]
    token: Option<Secret>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_list")]
    filters: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    transport: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: Option<bool>,
    #[serde(default)]
    webhook_compat: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHomeAssistant {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    discovery_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    level: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    format: Option<String>,
}

/// Keys a `[[servers]]` table accepts (`RawServer` cannot deny unknown fields itself because it is flattened
/// into `[plex]`).
const SERVER_KEYS: &[&str] = &[
    "url",
    "token",
    "token_file",
    "name",
    "filters",
    "transport",
    "ca_file",
    "insecure_skip_verify",
    "webhook_compat",
];

// ---------------------------------------------------------------------------------------------------------------
// Loading.

/// Loads and validates the configuration from all sources.
pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = &sources.file {
        if !path.is_file() {
            return Err(ConfigError::new(
                "--config",
                format!("names {}, which is not a readable file", path.display()),
                "pass the path of an existing TOML file (see config/plex-mqtt-bridge.toml)",
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "--config",
                format!("names {}, which cannot be read ({e})", path.display()),
                "pass the path of a readable UTF-8 TOML file (see config/plex-mqtt-bridge.toml)",
            )
        })?;
        syntax::check(path, &text)?;
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(EnvProvider::new(&sources.env));
    for (key, value) in &sources.overrides {
        figment = figment.merge(Override { key: key.clone(), value: value.clone() });
    }
    let raw: RawConfig = figment.extract().map_err(|e| from_figment(&e))?;
    check_server_keys(&figment)?;
    validate(raw)
}

/// Turns figment's error into ours, naming the key as the user wrote it.
fn from_figment(error: &figment::Error) -> ConfigError {
    use figment::error::Kind;
    let mut path: Vec<String> = error.path.clone();
    if let Kind::UnknownField(field, _) = &error.kind {
        if path.last() != Some(field) {
            path.push(field.clone());
        }
    }
    let key = match (&error.metadata, &error.profile) {
        (Some(md), Some(profile)) if md.name == ENV_METADATA_NAME && !path.is_empty() => md.interpolate(profile, &path),
        _ => dotted(&path),
    };
    let source = error
        .metadata
        .as_ref()
        .map(|md| match &md.source {
            Some(source) => format!(" (from {source})"),
            None => format!(" (from {})", md.name),
        })
        .unwrap_or_default();
    match &error.kind {
        Kind::UnknownField(_, expected) => ConfigError::new(
            key,
            format!("is not a known setting{source}"),
            format!("remove it or correct its spelling; known keys here: {}", expected.join(", ")),
        ),
        Kind::InvalidType(actual, expected) => ConfigError::new(
            key,
            format!("has the wrong type: found {actual}, expected {expected}{source}"),
            "change the value to the expected type (durations are strings such as \"30s\" or \"500ms\")",
        ),
        other if path.is_empty() => ConfigError::new(
            error.metadata.as_ref().and_then(|md| md.source.as_ref()).map_or("configuration".into(), |s| s.to_string()),
            format!("cannot be read: {}", other.to_string().trim()),
            "fix the syntax at the position shown (the file must be TOML)",
        ),
        other => ConfigError::new(key, format!("is invalid: {other}{source}"), "correct the value"),
    }
}

/// `servers.0.token` → `servers[0].token`.
fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

fn check_server_keys(figment: &Figment) -> Result<(), ConfigError> {
    let Ok(servers) = figment.find_value("servers") else {
        return Ok(());
    };
    let Some(list) = servers.as_array() else {
        return Ok(());
    };
    for (index, server) in list.iter().enumerate() {
        if let Some(dict) = server.as_dict() {
            if let Some(unknown) = dict.keys().find(|k| !SERVER_KEYS.contains(&k.as_str())) {
                return Err(ConfigError::new(
                    format!("servers[{index}].{unknown}"),
                    "is not a known setting",
                    format!("remove it or correct its spelling; known keys here: {}", SERVER_KEYS.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

const ENV_METADATA_NAME: &str = "environment variable";

/// The environment as a figment provider. Section and key are joined by `__` or, for convenience, by a single
/// `_` right after the section name: `PLEX_MQTT_BRIDGE_MQTT__URL` and `PLEX_MQTT_BRIDGE_MQTT_URL` both set
/// `mqtt.url`. Values stay strings (a numeric token or password keeps its leading zeros) except for keys whose
/// type is a number, a list or a table.
struct EnvProvider {
    vars: Vec<(String, String)>,
}

const SECTIONS: &[&str] = &["mqtt", "plex", "servers", "logging", "homeassistant", "http", "players", "commands"];
const PARSED_KEYS: &[&str] = &[
    "qos",
    "queue_size",
    "max_packet_size",
    "max_inflight",
    "max_message_size",
    "scrobble_threshold",
    "max_sessions",
    "max_response_size",
    "enabled",
    "artwork",
    "insecure_skip_verify",
    "webhook_compat",
    "servers",
    "allow",
    "rate_limit",
];

impl EnvProvider {
    fn new(env: &[(String, String)]) -> Self {
        let vars = env
            .iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix(ENV_PREFIX)?;
                Some((env_key(rest)?, value.clone()))
            })
            .collect();
        EnvProvider { vars }
    }
}

/// `MQTT__URL` / `MQTT_URL` → `mqtt.url`; `SERVERS` → `servers`.
fn env_key(rest: &str) -> Option<String> {
    let lower = rest.to_ascii_lowercase();
    if lower.is_empty() {
        return None;
    }
    if lower.contains("__") {
        return Some(lower.replace("__", "."));
    }
    for section in SECTIONS {
        if lower == *section {
            return Some(lower);
        }
        if let Some(key) = lower.strip_prefix(section).and_then(|k| k.strip_prefix('_')) {
            return Some(format!("{section}.{key}"));
        }
    }
    Some(lower)
}

impl Provider for EnvProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_METADATA_NAME)
            .interpolater(|_, keys| format!("{ENV_PREFIX}{}", keys.join("__").to_ascii_uppercase()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, raw) in &self.vars {
            let last = key.rsplit('.').next().unwrap_or(key);
            let value = if PARSED_KEYS.contains(&last) {
                raw.parse::<Value>().unwrap_or_else(|_| Value::from(raw.clone()))
            } else {
                Value::from(raw.clone())
            };
            if let Some(nested) = figment::util::nest(key, value).into_dict() {
                dict = merge_dicts(dict, nested);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

fn merge_dicts(mut into: Dict, from: Dict) -> Dict {
    for (key, value) in from {
        let merged = match (into.remove(&key), value) {
            (Some(Value::Dict(_, a)), Value::Dict(tag, b)) => Value::Dict(tag, merge_dicts(a, b)),
            (_, value) => value,
        };
        into.insert(key, merged);
    }
    into
}

/// One command-line override.
struct Override {
    key: String,
    value: String,
}

impl Provider for Override {
    fn metadata(&self) -> Metadata {
        Metadata::named("command-line flag")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict = figment::util::nest(&self.key, Value::from(self.value.clone())).into_dict().unwrap_or_default();
        Ok(Profile::Default.collect(dict))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Validation.

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mqtt = validate_mqtt(raw.mqtt)?;
    let plex = validate_plex(&raw.plex, &mqtt)?;
    let mut servers = Vec::new();
    if raw.plex.server.url.is_some() || raw.plex.server.token.is_some() || raw.plex.server.token_file.is_some() {
        servers.push(validate_server(raw.plex.server, "plex".to_owned(), plex.webhook_compat)?);
    }
    for (index, server) in raw.servers.into_iter().enumerate() {
        servers.push(validate_server(server, format!("servers[{index}]"), plex.webhook_compat)?);
    }
    if servers.is_empty() {
        return Err(ConfigError::new(
            "servers",
            "is empty: no Plex server is configured",
            "add a [[servers]] table with `url` and `token` (or `token_file`), or set PLEX_MQTT_BRIDGE_PLEX_URL \
             and PLEX_MQTT_BRIDGE_PLEX_TOKEN",
        ));
    }
    let mut names = HashSet::new();
    for server in &servers {
        if let Some(name) = &server.name {
            if !names.insert(name.clone()) {
                return Err(ConfigError::new(
                    format!("{}.name", server.key),
                    format!("repeats the name {name:?} of another server"),
                    "give every server its own `name` (it is their topic segment)",
                ));
            }
        }
    }
    let logging = validate_logging(raw.logging)?;
    let discovery_prefix = raw.homeassistant.discovery_prefix.unwrap_or_else(|| "homeassistant".to_owned());
    if let Some(problem) = topic_text_problem(&discovery_prefix, true) {
        return Err(ConfigError::new(
            "homeassistant.discovery_prefix",
            problem,
            "use Home Assistant's discovery prefix, normally \"homeassistant\"",
        ));
    }
    let homeassistant = HomeAssistantConfig { enabled: raw.homeassistant.enabled.unwrap_or(true), discovery_prefix };
    let listen = match raw.http.listen.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        None => None,
        Some(text) => Some(text.parse::<std::net::SocketAddr>().map_err(|_| {
            ConfigError::new(
                "http.listen",
                format!("is {text:?}, not an IP address and port"),
                "write it as \"127.0.0.1:9184\" (or \"0.0.0.0:9184\" to serve other hosts)",
            )
        })?),
    };
    let expire_after = raw.players.expire_after.unwrap_or(Duration::from_secs(30 * 86_400));
    let players = PlayersConfig {
        expire_after: (!expire_after.is_zero()).then_some(expire_after),
        artwork: raw.players.artwork.unwrap_or(true),
    };
    let commands = commands::validate(raw.commands)?;
    Ok(Config { mqtt, plex, servers, logging, homeassistant, http: HttpConfig { listen }, players, commands })
}

fn validate_mqtt(raw: RawMqtt) -> Result<MqttConfig, ConfigError> {
    let url_text = raw.url.unwrap_or_else(|| "mqtt://127.0.0.1:1883".to_owned());
    let url = Url::parse(&url_text).map_err(|e| {
        ConfigError::new(
            "mqtt.url",
            format!("is not a URL ({e})"),
            "write it as mqtt://HOST:PORT, e.g. mqtt://127.0.0.1:1883",
        )
    })?;
    match url.scheme() {
        "mqtt" | "tcp" => {}
        "mqtts" | "ssl" => {}
        other => {
            return Err(ConfigError::new(
                "mqtt.url",
                format!("has the scheme {other:?}"),
                "use mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS",
            ))
        }
    }
    if let Some(part) = extra_url_part(&url, true) {
        return Err(ConfigError::new(
            "mqtt.url",
            format!("has {part}, which the bridge does not accept (it would show in logs)"),
            "write it as mqtt://HOST:PORT (credentials as mqtt://USER:PASSWORD@HOST:PORT or in mqtt.username / \
             mqtt.password)",
        ));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ConfigError::new("mqtt.url", "has no host", "write it as mqtt://HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let secure = matches!(url.scheme(), "mqtts" | "ssl");
    let port = url.port().unwrap_or(if secure { 8883 } else { 1883 });
    let tls = TlsOptions {
        ca_file: raw.ca_file.clone(),
        client_cert: raw.client_cert.clone(),
        client_key: raw.client_key.clone(),
        insecure_skip_verify: false,
    };
    if !secure && tls != TlsOptions::default() {
        return Err(ConfigError::new(
            "mqtt.ca_file",
            "(or client_cert / client_key) is set but mqtt.url is not mqtts://",
            "use an mqtts:// URL, or remove the TLS settings",
        ));
    }
    if tls.client_cert.is_some() != tls.client_key.is_some() {
        return Err(ConfigError::new(
            if tls.client_cert.is_some() { "mqtt.client_key" } else { "mqtt.client_cert" },
            "is missing: mutual TLS needs both the client certificate and its key",
            "set both mqtt.client_cert and mqtt.client_key (PEM files)",
        ));
    }
    check_tls_files(&tls, "mqtt")?;
    let url_username = (!url.username().is_empty()).then(|| percent_decode(url.username()));
    let url_password = url.password().map(|p| Secret::new(percent_decode(p)));
    let username = raw.username.filter(|u| !u.is_empty()).or(url_username);
    let password = match (raw.password.filter(|p| !p.is_empty()), raw.password_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "mqtt.password",
                "and `mqtt.password_file` are both set",
                "keep only one of them",
            ))
        }
        (Some(password), None) => Some(password),
        (None, Some(path)) => Some(read_secret_file(&path, "mqtt.password_file")?),
        (None, None) => url_password,
    };
    if password.is_some() && username.is_none() {
        return Err(ConfigError::new(
            "mqtt.username",
            "is missing although a password is set",
            "set `mqtt.username` (MQTT sends a password only together with a user name)",
        ));
    }
    let client_id = raw.client_id.unwrap_or_else(|| "plex-mqtt-bridge".to_owned());
    if client_id.is_empty() || client_id.len() > 65535 {
        return Err(ConfigError::new("mqtt.client_id", "is empty", "set a client id such as \"plex-mqtt-bridge\""));
    }
    let topic_prefix = raw.topic_prefix.unwrap_or_else(|| "plex".to_owned());
    if let Some(problem) = topic_text_problem(&topic_prefix, true) {
        return Err(ConfigError::new(
            "mqtt.topic_prefix",
            problem,
            "use letters, digits, `-`, `_` and `/` between levels, e.g. \"plex\" or \"home/plex\"",
        ));
    }
    let qos = match raw.qos.unwrap_or(1) {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        other => return Err(ConfigError::new("mqtt.qos", format!("is {other}"), "use 0, 1 or 2")),
    };
    let keep_alive = raw.keep_alive.unwrap_or(Duration::from_secs(30));
    if keep_alive < Duration::from_secs(1) {
        return Err(ConfigError::new("mqtt.keep_alive", "is shorter than 1s", "use at least \"5s\" (default \"30s\")"));
    }
    let queue_size = raw.queue_size.unwrap_or(10_000);
    if queue_size == 0 {
        return Err(ConfigError::new("mqtt.queue_size", "is 0", "use at least 1 (default 10000)"));
    }
    let max_packet_size = raw.max_packet_size.unwrap_or(4 * 1024 * 1024);
    if max_packet_size < 1024 {
        return Err(ConfigError::new("mqtt.max_packet_size", "is below 1024 bytes", "use the default 4194304 or more"));
    }
    let max_inflight = match raw.max_inflight.unwrap_or(10_000) {
        inflight @ 1..=65_535 => inflight as u16,
        other => {
            return Err(ConfigError::new("mqtt.max_inflight", format!("is {other}"), "use 1 to 65535 (default 10000)"))
        }
    };
    let reconnect_max = positive(raw.reconnect_max, Duration::from_secs(30), "mqtt.reconnect_max")?;
    Ok(MqttConfig {
        url: printable_mqtt_url(&url),
        host,
        port,
        username,
        password,
        client_id,
        topic_prefix,
        qos,
        keep_alive,
        queue_size,
        max_packet_size,
        max_inflight,
        reconnect_max,
        tls: secure.then_some(tls),
    })
}

fn validate_plex(raw: &RawPlex, mqtt: &MqttConfig) -> Result<PlexConfig, ConfigError> {
    let client_identifier = match &raw.client_identifier {
        Some(id) if id.trim().is_empty() => {
            return Err(ConfigError::new(
                "plex.client_identifier",
                "is empty",
                "remove it to use the stable default, or set any fixed string",
            ))
        }
        Some(id) => id.trim().to_owned(),
        None => default_client_identifier(&mqtt.client_id, &mqtt.topic_prefix),
    };
    let ping_interval = positive(raw.ping_interval, Duration::from_secs(10), "plex.ping_interval")?;
    let idle_timeout = positive(raw.idle_timeout, Duration::from_secs(30), "plex.idle_timeout")?;
    if idle_timeout <= ping_interval {
        return Err(ConfigError::new(
            "plex.idle_timeout",
            format!("({}) is not longer than plex.ping_interval ({})", human(idle_timeout), human(ping_interval)),
            "make idle_timeout at least twice the ping interval (defaults: \"30s\" and \"10s\")",
        ));
    }
    let backoff_min = positive(raw.backoff_min, Duration::from_millis(500), "plex.backoff_min")?;
    let backoff_max = positive(raw.backoff_max, Duration::from_secs(60), "plex.backoff_max")?;
    if backoff_min > backoff_max {
        return Err(ConfigError::new(
            "plex.backoff_min",
            "is larger than plex.backoff_max",
            "make backoff_min ≤ backoff_max (defaults: \"500ms\" and \"60s\")",
        ));
    }
    let max_message_size = raw.max_message_size.unwrap_or(1024 * 1024);
    if max_message_size < 1024 {
        return Err(ConfigError::new("plex.max_message_size", "is below 1024 bytes", "use the default 1048576"));
    }
    if max_message_size + 1024 > mqtt.max_packet_size {
        return Err(ConfigError::new(
            "plex.max_message_size",
            "is not smaller than mqtt.max_packet_size",
            "raise mqtt.max_packet_size or lower plex.max_message_size, so every accepted notification fits",
        ));
    }
    let scrobble_threshold = raw.scrobble_threshold.unwrap_or(90.0);
    if !(1.0..=100.0).contains(&scrobble_threshold) {
        return Err(ConfigError::new(
            "plex.scrobble_threshold",
            format!("is {scrobble_threshold}"),
            "use a percentage between 1 and 100 (default 90)",
        ));
    }
    let enrichment_wait = raw.enrichment_wait.unwrap_or(Duration::from_secs(2));
    if enrichment_wait > Duration::from_secs(60) {
        return Err(ConfigError::new(
            "plex.enrichment_wait",
            format!("is {}", humantime::format_duration(enrichment_wait)),
            "use at most 60s (default 2s; 0s publishes at once, without the details)",
        ));
    }
    let max_response_size = raw.max_response_size.unwrap_or(8 * 1024 * 1024);
    if max_response_size < 64 * 1024 {
        return Err(ConfigError::new(
            "plex.max_response_size",
            format!("is {max_response_size} bytes"),
            "use at least 65536 (default 8388608: /status/sessions of a busy server is a few hundred kB)",
        ));
    }
    let max_sessions = raw.max_sessions.unwrap_or(1000);
    if max_sessions == 0 {
        return Err(ConfigError::new("plex.max_sessions", "is 0", "use at least 1 (default 1000)"));
    }
    let plextv_url = match &raw.plextv_url {
        None => Url::parse(DEFAULT_PLEXTV_URL)
            .map_err(|e| ConfigError::new("plex.plextv_url", e.to_string(), "report this bug"))?,
        Some(text) => {
            let url = Url::parse(text.trim()).map_err(|_| {
                ConfigError::new("plex.plextv_url", "is not a URL", "remove it to use https://clients.plex.tv")
            })?;
            plextv_url_allowed(&url).then_some(()).ok_or_else(|| {
                ConfigError::new(
                    "plex.plextv_url",
                    "is not https:// (plain http is allowed on loopback only)",
                    "remove it to use https://clients.plex.tv",
                )
            })?;
            url
        }
    };
    let renew_before = raw.renew_before.unwrap_or(Duration::from_secs(24 * 3600));
    if renew_before < Duration::from_secs(60) {
        return Err(ConfigError::new(
            "plex.renew_before",
            format!("is {}", humantime::format_duration(renew_before)),
            "use at least 1m (default 24h: a Plex JWT lives about 7 days)",
        ));
    }
    Ok(PlexConfig {
        client_identifier,
        device_name: raw.device_name.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| "plex-mqtt-bridge".into()),
        ping_interval,
        idle_timeout,
        connect_timeout: positive(raw.connect_timeout, Duration::from_secs(10), "plex.connect_timeout")?,
        request_timeout: positive(raw.request_timeout, Duration::from_secs(10), "plex.request_timeout")?,
        backoff_min,
        backoff_max,
        stable_after: positive(raw.stable_after, Duration::from_secs(30), "plex.stable_after")?,
        max_message_size,
        resync_interval: positive(raw.resync_interval, Duration::from_secs(300), "plex.resync_interval")?,
        scrobble_threshold,
        max_sessions,
        enrichment_wait,
        max_response_size,
        plextv_url,
        renew_before,
        device_key_file: raw.device_key_file.clone(),
        webhook_compat: raw.webhook_compat.unwrap_or(false),
    })
}

/// `webhook_compat` is `plex.webhook_compat`, used when the server does not set its own.
fn validate_server(raw: RawServer, key: String, webhook_compat: bool) -> Result<ServerConfig, ConfigError> {
    let url_text = raw.url.ok_or_else(|| {
        ConfigError::new(
            format!("{key}.url"),
            "is missing",
            "set the server's address, e.g. url = \"http://192.168.1.10:32400\"",
        )
    })?;
    let url = Url::parse(url_text.trim()).map_err(|e| {
        ConfigError::new(
            format!("{key}.url"),
            format!("is not a URL ({e})"),
            "write it as http://HOST:32400 (or https://…)",
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(
            format!("{key}.url"),
            format!("must be an http:// or https:// URL with a host, not {:?}", url.scheme()),
            "write it as http://HOST:32400",
        ));
    }
    if let Some(part) = extra_url_part(&url, false) {
        // The part itself is not shown: `#X-Plex-Token=…`, `?X-Plex-Token=…` or `user:pass@` are secrets, and
        // whatever is in the URL would reach every log line, `<p>/<server>/info` and Home Assistant.
        return Err(ConfigError::new(
            format!("{key}.url"),
            format!("has {part}, which the bridge does not accept (it would show in logs and on MQTT)"),
            "give only scheme, host and port, e.g. url = \"http://192.168.1.10:32400\"; put the token in `token` or \
             `token_file`",
        ));
    }
    let token = match (raw.token.filter(|t| !t.is_empty()), raw.token_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(format!("{key}.token"), "and `token_file` are both set", "keep only one"))
        }
        (Some(token), None) => TokenSource::Inline(token),
        (None, Some(path)) => {
            read_secret_file(&path, &format!("{key}.token_file"))?;
            TokenSource::File(path)
        }
        (None, None) => {
            return Err(ConfigError::new(
                format!("{key}.token"),
                "is missing",
                "set `token` or `token_file` to the server owner's X-Plex-Token (env: PLEX_MQTT_BRIDGE_PLEX_TOKEN \
                 or PLEX_MQTT_BRIDGE_PLEX_TOKEN_FILE)",
            ))
        }
    };
    if let Some(name) = &raw.name {
        if ServerName::configured(name).is_none() {
            let problem = topic_text_problem(name, false).unwrap_or("is not a valid topic segment");
            return Err(ConfigError::new(
                format!("{key}.name"),
                problem,
                "use a single topic level without `/`, `+`, `#` or NUL, e.g. \"living-room\"",
            ));
        }
    }
    let filters = match raw.filters {
        None => None,
        Some(list) => {
            let mut clean = Vec::new();
            for entry in list {
                let entry = entry.trim().to_owned();
                if entry.is_empty() {
                    continue;
                }
                if entry.contains([',', '&', '=', '#', ' ']) {
                    return Err(ConfigError::new(
                        format!("{key}.filters"),
                        format!("has the entry {entry:?}"),
                        "list notification types such as \"playing\" or exclusions such as \"-log\", one per entry",
                    ));
                }
                clean.push(entry);
            }
            Some(clean)
        }
    };
    let transport = match raw.transport.as_deref().map(str::trim) {
        None | Some("auto") => Transport::Auto,
        Some("websocket") => Transport::WebSocket,
        Some("eventsource") => Transport::EventSource,
        Some(other) => {
            return Err(ConfigError::new(
                format!("{key}.transport"),
                format!("is {other:?}"),
                "use \"auto\" (default), \"websocket\" or \"eventsource\"",
            ))
        }
    };
    let tls = TlsOptions {
        ca_file: raw.ca_file,
        client_cert: None,
        client_key: None,
        insecure_skip_verify: raw.insecure_skip_verify.unwrap_or(false),
    };
    if url.scheme() != "https" && tls != TlsOptions::default() {
        return Err(ConfigError::new(
            format!("{key}.ca_file"),
            "(or insecure_skip_verify) is set but the server URL is not https://",
            "use an https:// URL, or remove the TLS settings",
        ));
    }
    if tls.insecure_skip_verify && tls.ca_file.is_some() {
        return Err(ConfigError::new(
            format!("{key}.insecure_skip_verify"),
            "and ca_file are both set",
            "keep only one: ca_file to trust a certificate, or insecure_skip_verify to check none",
        ));
    }
    check_tls_files(&tls, &key)?;
    let webhook_compat = raw.webhook_compat.unwrap_or(webhook_compat);
    Ok(ServerConfig { url, token, name: raw.name, filters, transport, webhook_compat, tls, key })
}

/// Every TLS file must be readable and hold what it should, so a typo is a config error, not a reconnect loop.
fn check_tls_files(tls: &TlsOptions, section: &str) -> Result<(), ConfigError> {
    let fix = "point it at a readable PEM file";
    if let Some(path) = &tls.ca_file {
        crate::tls::read_certs(path).map_err(|e| ConfigError::new(format!("{section}.ca_file"), e.to_string(), fix))?;
    }
    if let Some(path) = &tls.client_cert {
        crate::tls::read_certs(path)
            .map_err(|e| ConfigError::new(format!("{section}.client_cert"), e.to_string(), fix))?;
    }
    if let Some(path) = &tls.client_key {
        crate::tls::read_key(path)
            .map_err(|e| ConfigError::new(format!("{section}.client_key"), e.to_string(), fix))?;
    }
    Ok(())
}

fn serialize_tls<S: serde::Serializer>(tls: &Option<TlsOptions>, serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(None)?;
    if let Some(tls) = tls {
        if let Some(ca) = &tls.ca_file {
            map.serialize_entry("ca_file", ca)?;
        }
        if let Some(cert) = &tls.client_cert {
            map.serialize_entry("client_cert", cert)?;
        }
        if let Some(key) = &tls.client_key {
            map.serialize_entry("client_key", key)?;
        }
    }
    map.end()
}

fn validate_logging(raw: RawLogging) -> Result<LoggingConfig, ConfigError> {
    let level = raw.level.unwrap_or_else(|| "info".to_owned());
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&level) {
        return Err(ConfigError::new(
            "logging.level",
            format!("is not a valid filter ({e})"),
            "use error, warn, info, debug or trace, optionally per module (plex_mqtt_bridge=debug)",
        ));
    }
    let format = match raw.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => return Err(ConfigError::new("logging.format", format!("is {other:?}"), "use \"text\" or \"json\"")),
    };
    Ok(LoggingConfig { level, format })
}

fn positive(value: Option<Duration>, default: Duration, key: &str) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(d) if d.is_zero() => {
            Err(ConfigError::new(key, "is zero", format!("use a positive duration (default \"{}\")", human(default))))
        }
        Some(d) => Ok(d),
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Reads a secret from a file (Docker/systemd secrets); a relative path is looked up in
/// `$CREDENTIALS_DIRECTORY` first (systemd `LoadCredential=`).
fn read_secret_file(path: &Path, key: &str) -> Result<Secret, ConfigError> {
    let resolved = resolve_credential(path);
    let text = std::fs::read_to_string(&resolved).map_err(|e| {
        ConfigError::new(
            key,
            format!("cannot be read ({}: {e})", resolved.display()),
            "point it at a readable file that holds only the secret",
        )
    })?;
    let secret = Secret::new(text);
    if secret.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("names an empty file ({})", resolved.display()),
            "put the secret in it",
        ));
    }
    Ok(secret)
}

/// A relative secret path is resolved in systemd's `$CREDENTIALS_DIRECTORY` when that holds it.
pub fn resolve_credential(path: &Path) -> PathBuf {
    if path.is_relative() {
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let candidate = Path::new(&dir).join(path);
            if candidate.exists() {
                return candidate;
            }
        }
    }
    path.to_owned()
}

/// The default `X-Plex-Client-Identifier`: a UUID-shaped digest of the MQTT client id and topic prefix, so the
/// same installation keeps the same identity across restarts and container re-creations without any state
/// file, while two bridges with different client ids show up as two devices in Plex.
pub fn default_client_identifier(mqtt_client_id: &str, topic_prefix: &str) -> String {
    let input = format!("plex-mqtt-bridge\0{mqtt_client_id}\0{topic_prefix}");
    let fnv =
        |seed: u64| input.bytes().fold(seed, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// What a URL has beyond scheme, host and port (and user-info, where `credentials` allows it), named without
/// its content: user-info, a path other than `/`, a query or a fragment.
fn extra_url_part(url: &Url, credentials: bool) -> Option<&'static str> {
    if !credentials && (!url.username().is_empty() || url.password().is_some()) {
        Some("credentials (user-info before the host)")
    } else if url.query().is_some() {
        Some("a query string")
    } else if url.fragment().is_some() {
        Some("a fragment (`#…`)")
    } else if url.path() != "/" && !url.path().is_empty() {
        Some("a path")
    } else {
        None
    }
}

fn printable_mqtt_url(url: &Url) -> String {
    let mut printable = url.clone();
    let _ = printable.set_username("");
    let _ = printable.set_password(None);
    printable.to_string().trim_end_matches('/').to_owned()
}

/// User-info in a URL is percent-encoded (`user%40home`); the broker wants the text itself. Bytes that are not
/// UTF-8 become U+FFFD rather than an error: the broker will refuse the login, which says more than we could.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

fn serialize_qos<S: serde::Serializer>(qos: &QoS, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u8(*qos as u8)
}

fn serialize_display<T: fmt::Display, S: serde::Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl Config {
    /// The effective configuration as TOML, secrets masked: what `--print-config` shows.
    pub fn to_printable_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host the bridge connects to, and names in TLS (SNI and certificate check), is the URL's host, never
    /// something in its user-info, and the printable URL carries neither user name nor password.
    #[test]
    fn mqtt_host_comes_from_the_authority_not_the_user_info() {
        let cases = [
            ("mqtts://broker.example@127.0.0.1:8883", "127.0.0.1", 8883),
            ("mqtts://user:secret%40broker.example@10.0.0.2", "10.0.0.2", 8883),
            ("mqtts://user:secret@[::1]:8884", "::1", 8884),
            ("mqtt://user:secret@broker.example:1884", "broker.example", 1884),
        ];
        for (url, host, port) in cases {
            let mqtt = validate_mqtt(RawMqtt { url: Some(url.into()), ..RawMqtt::default() }).unwrap();
            assert_eq!((mqtt.host.as_str(), mqtt.port), (host, port), "{url}");
            assert!(!mqtt.url.contains("secret") && !mqtt.url.contains('@'), "{url} printed as {}", mqtt.url);
        }
    }

    /// Credentials in the URL reach the broker decoded; a `%` that starts no escape stays as written.
    #[test]
    fn url_credentials_are_percent_decoded() {
        let url = "mqtt://us%40er:p%41ss%zz@h";
        let mqtt = validate_mqtt(RawMqtt { url: Some(url.into()), ..RawMqtt::default() }).unwrap();
        assert_eq!(mqtt.username.as_deref(), Some("us@er"));
        assert_eq!(mqtt.password.as_ref().map(|p| p.expose().to_owned()).as_deref(), Some("pAss%zz"));
        assert_eq!(percent_decode("%e2%82%ac%4"), "€%4");
        assert_eq!(percent_decode("%FF"), "\u{fffd}");
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// `webhook_compat` is off by default; `[plex]` (or its environment variable) sets it for every server, and a
    /// server's own value wins over it in either direction.
    #[test]
    fn webhook_compat_defaults_off_and_a_servers_own_value_wins() {
        let servers = r#"[{url="http://10.0.0.1:32400",token="t",name="a"},{url="http://10.0.0.2:32400",token="t",name="b",webhook_compat=false},{url="http://10.0.0.3:32400",token="t",name="c",webhook_compat=true}]"#;
        let flags = |config: &Config| config.servers.iter().map(|s| s.webhook_compat).collect::<Vec<_>>();
        let off = load(&Sources { env: env(&[("PLEX_MQTT_BRIDGE_SERVERS", servers)]), ..Sources::default() }).unwrap();
        assert!(!off.plex.webhook_compat);
        assert_eq!(flags(&off), [false, false, true]);
        let on = load(&Sources {
            env: env(&[("PLEX_MQTT_BRIDGE_SERVERS", servers), ("PLEX_MQTT_BRIDGE_PLEX_WEBHOOK_COMPAT", "true")]),
            ..Sources::default()
        })
        .unwrap();
        assert!(on.plex.webhook_compat);
        assert_eq!(flags(&on), [true, false, true]);
        let shorthand = load(&Sources {
            env: env(&[
                ("PLEX_MQTT_BRIDGE_PLEX_URL", "http://10.0.0.1:32400"),
                ("PLEX_MQTT_BRIDGE_PLEX_TOKEN", "t"),
                ("PLEX_MQTT_BRIDGE_PLEX__WEBHOOK_COMPAT", "true"),
            ]),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(flags(&shorthand), [true], "the single-server shorthand follows plex.webhook_compat");
        let wrong = load(&Sources {
            env: env(&[("PLEX_MQTT_BRIDGE_SERVERS", servers), ("PLEX_MQTT_BRIDGE_PLEX_WEBHOOK_COMPAT", "yes")]),
            ..Sources::default()
        });
        assert!(wrong.is_err_and(|e| e.key.contains("WEBHOOK_COMPAT")), "a non-boolean is a config error");
    }
}
