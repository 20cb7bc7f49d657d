//! `[homeassistant]` (MQTT discovery) and `[players]` (the Plex players it announces as devices).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::checks::check_topic_prefix;
use super::ConfigError;
use crate::lenient;

/// Home Assistant MQTT discovery.
#[derive(Debug, Clone, Serialize)]
pub struct HomeAssistantConfig {
    /// Announce entities (and remove them again when disabled or when a server leaves the config).
    pub enabled: bool,
    /// Home Assistant's discovery prefix (its MQTT integration setting; `homeassistant` unless changed).
    pub discovery_prefix: String,
}

/// `[homeassistant]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHomeAssistant {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    discovery_prefix: Option<String>,
}

pub(super) fn validate(raw: RawHomeAssistant) -> Result<HomeAssistantConfig, ConfigError> {
    let discovery_prefix = raw.discovery_prefix.unwrap_or_else(|| "homeassistant".to_owned());
    check_topic_prefix(
        &discovery_prefix,
        "homeassistant.discovery_prefix",
        "use Home Assistant's discovery prefix, normally \"homeassistant\"",
    )?;
    Ok(HomeAssistantConfig { enabled: raw.enabled.unwrap_or(true), discovery_prefix })
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

/// `[players]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlayers {
    #[serde(default, with = "humantime_serde")]
    expire_after: Option<Duration>,
    #[serde(default)]
    artwork: Option<bool>,
}

/// Nothing here can be wrong once it has the right type; a zero `expire_after` means "never".
pub(super) fn players(raw: RawPlayers) -> PlayersConfig {
    let expire_after = raw.expire_after.unwrap_or(Duration::from_secs(30 * 86_400));
    PlayersConfig {
        expire_after: (!expire_after.is_zero()).then_some(expire_after),
        artwork: raw.artwork.unwrap_or(true),
    }
}
