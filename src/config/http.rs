//! `[http]`: the optional health and metrics endpoint.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::lenient;

/// The optional health and metrics endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct HttpConfig {
    /// Where `/healthz` and `/metrics` are served; off when `None`.
    pub listen: Option<SocketAddr>,
}

/// `[http]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    listen: Option<String>,
}

/// An empty `listen` is the same as none, so an environment variable can switch the endpoint off.
pub(super) fn validate(raw: RawHttp) -> Result<HttpConfig, ConfigError> {
    let listen = match raw.listen.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        None => None,
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new(
                "http.listen",
                format!("is {text:?}, not an IP address and port"),
                "write it as \"127.0.0.1:9184\" (or \"0.0.0.0:9184\" to serve other hosts)",
            )
        })?),
    };
    Ok(HttpConfig { listen })
}
