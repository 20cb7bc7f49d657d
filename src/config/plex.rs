//! `[plex]`: how the bridge talks to every Plex server, and plex.tv for token renewal. `[plex]` also takes one
//! server's keys (`PLEX_MQTT_BRIDGE_PLEX_URL` …), which `servers.rs` defines and checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::checks::{human, positive, secret_url_part};
use super::mqtt::MqttConfig;
use super::printable::serialize_display;
use super::secrets::resolve_credential;
use super::servers::RawServer;
use super::ConfigError;
use crate::lenient;

/// How the bridge talks to every Plex server.
#[derive(Debug, Clone, Serialize)]
pub struct PlexConfig {
    /// `X-Plex-Client-Identifier`: stable per installation (by default a digest of the MQTT client id and topic
    /// prefix).
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

/// `[plex]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlex {
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
    pub(super) server: RawServer,
}

/// plex.tv's base URL for the token endpoints.
pub const DEFAULT_PLEXTV_URL: &str = "https://clients.plex.tv";

/// plex.tv carries the account token, so its URL must be `https://`, or `http://` on a loopback address (a
/// test's fake plex.tv): a typo cannot send the token in clear text.
pub fn plextv_url_allowed(url: &Url) -> bool {
    url.scheme() == "https" || (url.scheme() == "http" && crate::tls::is_loopback(url))
}

/// `<token_file>.key`: where `login` puts the device key unless told otherwise.
pub fn default_device_key_file(token_file: &Path) -> PathBuf {
    let mut name = token_file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".key");
    token_file.with_file_name(name)
}

/// The default `X-Plex-Client-Identifier`: a UUID-shaped digest of the MQTT client id and topic prefix, so the
/// same installation keeps the same identity across restarts and container re-creations without any state
/// file, while two bridges with different client ids show up as two devices in Plex.
fn default_client_identifier(mqtt_client_id: &str, topic_prefix: &str) -> String {
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

/// `plex.plextv_url` as configured (`None`: the default), checked with [`parse_plextv_url`].
fn plextv_url(configured: Option<&str>) -> Result<Url, ConfigError> {
    parse_plextv_url(configured.unwrap_or(DEFAULT_PLEXTV_URL), "plex.plextv_url")
}

/// A plex.tv base URL given as `key` (`plex.plextv_url`, or `login`'s `--plextv-url`): allowed by
/// [`plextv_url_allowed`], and without user-info, a query or a fragment, which `--print-config` and the logs
/// would show (a path stays: it is a proxy's prefix).
pub fn parse_plextv_url(text: &str, key: &str) -> Result<Url, ConfigError> {
    let fix = "remove it to use https://clients.plex.tv";
    let url = Url::parse(text.trim()).map_err(|_| ConfigError::new(key, "is not a URL", fix))?;
    if !plextv_url_allowed(&url) {
        return Err(ConfigError::new(key, "is not https:// (plain http is allowed on loopback only)", fix));
    }
    match secret_url_part(&url, false) {
        Some(part) => Err(ConfigError::new(
            key,
            format!("has {part}, which the bridge does not accept (it would show in logs)"),
            "write it as https://HOST[:PORT][/PATH], or remove it to use https://clients.plex.tv",
        )),
        None => Ok(url),
    }
}

/// plex.tv's URL from the sources alone, for a login before the whole configuration can load (add-on mode's
/// first start: the token file the rest needs does not exist yet).
pub fn configured_plextv_url(sources: &super::Sources) -> Result<Url, ConfigError> {
    let figment = super::sources::layered(sources)?;
    let configured = figment.find_value("plex.plextv_url").ok().and_then(|value| value.into_string());
    plextv_url(configured.as_deref())
}

/// `mqtt` is validated first: the default client identifier derives from it, and every notification accepted
/// from PMS must fit in one MQTT packet.
pub(super) fn validate(raw: &RawPlex, mqtt: &MqttConfig) -> Result<PlexConfig, ConfigError> {
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
            format!("is {}", human(enrichment_wait)),
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
    let plextv_url = plextv_url(raw.plextv_url.as_deref())?;
    let renew_before = raw.renew_before.unwrap_or(Duration::from_secs(24 * 3600));
    if renew_before < Duration::from_secs(60) {
        return Err(ConfigError::new(
            "plex.renew_before",
            format!("is {}", human(renew_before)),
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
