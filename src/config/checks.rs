//! Checks more than one section makes: durations that must not be zero, TLS files, URLs that must carry nothing
//! but scheme, host and port.

use std::time::Duration;

use reqwest::Url;

use super::ConfigError;
use crate::tls::TlsOptions;

/// `value`, or `default` when unset; zero is an error, since every such setting is a period or a timeout.
pub(super) fn positive(value: Option<Duration>, default: Duration, key: &str) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(d) if d.is_zero() => {
            Err(ConfigError::new(key, "is zero", format!("use a positive duration (default \"{}\")", human(default))))
        }
        Some(d) => Ok(d),
    }
}

/// A topic prefix (levels separated by `/`) the bridge can publish under; `fix` says what to use instead.
pub(super) fn check_topic_prefix(value: &str, key: &str, fix: &str) -> Result<(), ConfigError> {
    match crate::topic::topic_text_problem(value, true) {
        Some(problem) => Err(ConfigError::new(key, problem, fix)),
        None => Ok(()),
    }
}

/// A duration as the config file writes it (`1m 30s`).
pub(super) fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Every TLS file must be readable and hold what it should (CA certificates rustls accepts, a client key of a
/// type it can sign with that belongs to the client certificate), so a mistake is a config error, not a
/// reconnect loop or a daemon that exits at start-up: the check builds the configuration a connection would.
pub(super) fn check_tls_files(tls: &TlsOptions, section: &str) -> Result<(), ConfigError> {
    if tls.ca_file.is_none() && tls.client_cert.is_none() && tls.client_key.is_none() {
        return Ok(());
    }
    crate::tls::client_config(tls).map(drop).map_err(|error| match error.setting() {
        Some(setting) => ConfigError::new(format!("{section}.{}", setting.key()), error.to_string(), setting.fix()),
        None => ConfigError::new(
            format!("{section}.ca_file"),
            format!("is unset and the platform's trust store cannot be used: {error}"),
            "set it to a PEM file with the CA certificate(s) to trust",
        ),
    })
}

/// What a URL has beyond scheme, host and port (and user-info, where `credentials` allows it), named without
/// its content: user-info, a path other than `/`, a query or a fragment.
pub(super) fn extra_url_part(url: &Url, credentials: bool) -> Option<&'static str> {
    secret_url_part(url, credentials).or((url.path() != "/" && !url.path().is_empty()).then_some("a path"))
}

/// The parts of a URL that may carry a secret and would show wherever the URL is printed or logged, named
/// without their content: user-info (unless `credentials` allows it), a query or a fragment.
pub(super) fn secret_url_part(url: &Url, credentials: bool) -> Option<&'static str> {
    if !credentials && (!url.username().is_empty() || url.password().is_some()) {
        Some("credentials (user-info before the host)")
    } else if url.query().is_some() {
        Some("a query string")
    } else if url.fragment().is_some() {
        Some("a fragment (`#…`)")
    } else {
        None
    }
}
