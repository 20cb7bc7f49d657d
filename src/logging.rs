//! Log output: tracing with an env-filter level, as text or one JSON object per line, on stderr.
//!
//! Records of the `log` crate (emitted by rumqttc, tungstenite and reqwest) are deliberately not captured:
//! at trace level they include raw packets, which can carry the MQTT password. The bridge logs every connection
//! event itself.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingConfig};

/// Installs the global subscriber; call once, before anything logs.
pub fn init(config: &LoggingConfig) {
    let filter = EnvFilter::builder().parse_lossy(&config.level);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}
