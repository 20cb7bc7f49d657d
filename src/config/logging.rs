//! `[logging]`: level filter and line format.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::lenient;

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

/// `[logging]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogging {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    level: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    format: Option<String>,
}

/// The level is parsed here as the logger will parse it, so a bad filter stops the start instead of logging
/// nothing.
pub(super) fn validate(raw: RawLogging) -> Result<LoggingConfig, ConfigError> {
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
