//! Everything that talks to a Plex Media Server: REST look-ups, the notification transports, and decoding.

pub mod http;
pub mod notification;
pub mod ws;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT};

use crate::config::PlexConfig;
use crate::secret::Secret;

/// Why talking to PMS failed. Texts never contain the token: it travels only in a header.
#[derive(Debug, thiserror::Error)]
pub enum PlexError {
    /// 401/403: the token is wrong, expired, or not the server owner's.
    #[error("token rejected (HTTP {0}); the notification endpoints need the server owner's X-Plex-Token")]
    Unauthorized(u16),
    /// 404: the endpoint does not exist on this server.
    #[error("endpoint not found (HTTP 404)")]
    NotFound,
    /// Any other unexpected HTTP status.
    #[error("unexpected HTTP status {0}")]
    Status(u16),
    /// Connection, TLS, timeout or protocol failure.
    #[error("{0}")]
    Transport(String),
    /// The server answered something that is not what PMS sends.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// The token file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
}

impl PlexError {
    /// Maps an HTTP status that is not a success.
    pub fn from_status(status: u16) -> Self {
        match status {
            401 | 403 => PlexError::Unauthorized(status),
            404 => PlexError::NotFound,
            other => PlexError::Status(other),
        }
    }
}

/// The `X-Plex-*` headers that identify the bridge as a client, sent on every request. Plex lists the bridge
/// under its devices with these, so the identifier must be stable.
pub fn client_headers(config: &PlexConfig) -> HeaderMap {
    let version = env!("CARGO_PKG_VERSION");
    let pairs: [(&'static str, &str); 8] = [
        ("x-plex-client-identifier", &config.client_identifier),
        ("x-plex-product", "plex-mqtt-bridge"),
        ("x-plex-version", version),
        ("x-plex-platform", std::env::consts::OS),
        ("x-plex-platform-version", std::env::consts::ARCH),
        ("x-plex-device", "plex-mqtt-bridge"),
        ("x-plex-device-name", &config.device_name),
        ("x-plex-model", "bridge"),
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    headers
}

/// The token as a header value marked sensitive, so `Debug` output of a request never shows it.
pub fn token_header(token: &Secret) -> Result<(HeaderName, HeaderValue), PlexError> {
    let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
        PlexError::Transport("the token contains characters not allowed in a header".into())
    })?;
    value.set_sensitive(true);
    Ok((HeaderName::from_static("x-plex-token"), value))
}
