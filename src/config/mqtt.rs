//! `[mqtt]`: the broker connection.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use rumqttc::QoS;
use serde::{Deserialize, Serialize};

use super::checks::{check_tls_files, check_topic_prefix, extra_url_part, positive};
use super::secrets::read_secret_file;
use super::ConfigError;
use crate::lenient;
use crate::secret::Secret;
use crate::tls::TlsOptions;

/// `mqtt.topic_prefix` when none is set (the bridge's own Home Assistant ids leave it out).
pub const DEFAULT_TOPIC_PREFIX: &str = "plex";

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

/// `[mqtt]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMqtt {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub(super) url: Option<String>,
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

pub(super) fn validate(raw: RawMqtt) -> Result<MqttConfig, ConfigError> {
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
    if client_id.is_empty() {
        return Err(ConfigError::new("mqtt.client_id", "is empty", "set a client id such as \"plex-mqtt-bridge\""));
    }
    if client_id.len() > 65535 {
        return Err(ConfigError::new(
            "mqtt.client_id",
            format!("is {} bytes long, more than an MQTT string holds (65535)", client_id.len()),
            "use a short client id such as \"plex-mqtt-bridge\" (every broker accepts up to 23 characters)",
        ));
    }
    let topic_prefix = raw.topic_prefix.unwrap_or_else(|| DEFAULT_TOPIC_PREFIX.to_owned());
    check_topic_prefix(
        &topic_prefix,
        "mqtt.topic_prefix",
        "use letters, digits, `-`, `_` and `/` between levels, e.g. \"plex\" or \"home/plex\"",
    )?;
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

/// User-info in a URL is percent-encoded (`user%40home`); the broker wants the text itself. Bytes that are not
/// UTF-8 become U+FFFD rather than an error: the broker will refuse the login, which says more than we could.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

fn printable_mqtt_url(url: &Url) -> String {
    let mut printable = url.clone();
    let _ = printable.set_username("");
    let _ = printable.set_password(None);
    printable.to_string().trim_end_matches('/').to_owned()
}

fn serialize_qos<S: serde::Serializer>(qos: &QoS, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u8(*qos as u8)
}

/// The TLS files that are set, as keys of `[mqtt]` itself (where the user wrote them).
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
            let mqtt = validate(RawMqtt { url: Some(url.into()), ..RawMqtt::default() }).unwrap();
            assert_eq!((mqtt.host.as_str(), mqtt.port), (host, port), "{url}");
            assert!(!mqtt.url.contains("secret") && !mqtt.url.contains('@'), "{url} printed as {}", mqtt.url);
        }
    }

    /// Credentials in the URL reach the broker decoded; a `%` that starts no escape stays as written.
    #[test]
    fn url_credentials_are_percent_decoded() {
        let mqtt = validate(RawMqtt { url: Some("mqtt://us%40er:p%41ss%zz@h".into()), ..RawMqtt::default() }).unwrap();
        assert_eq!(mqtt.username.as_deref(), Some("us@er"));
        assert_eq!(mqtt.password.as_ref().map(|p| p.expose().to_owned()).as_deref(), Some("pAss%zz"));
        assert_eq!(percent_decode("%e2%82%ac%4"), "€%4");
        assert_eq!(percent_decode("%FF"), "\u{fffd}");
    }

    #[test]
    fn an_empty_and_an_overlong_client_id_are_told_apart() {
        let problem = |id: String| validate(RawMqtt { client_id: Some(id), ..RawMqtt::default() }).unwrap_err().problem;
        assert_eq!(problem(String::new()), "is empty");
        assert!(problem("x".repeat(65536)).contains("65536 bytes long"));
    }
}
