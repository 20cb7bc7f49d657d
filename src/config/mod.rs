//! Configuration: built-in defaults < TOML file < environment (`PLEX_MQTT_BRIDGE_…`) < command-line flags,
//! layered with figment, then validated into typed settings with one precise error per problem.
//!
//! Every error names the key (as the user wrote it: `servers[1].name`, `mqtt.url`, or the environment variable)
//! and says how to fix it, and the process exits with 78 (EX_CONFIG). Secrets are [`Secret`](crate::secret::Secret)s,
//! so printing the effective config (`--print-config`) shows `***` in their place.
//!
//! Each section has one file holding what the user writes (`Raw…`, all optional), the validated settings, their
//! defaults and their checks: `mqtt`, `plex`, `servers`, `homeassistant` (with `[players]`), `http`, `logging`,
//! `commands`. A new key is a field in its section's raw struct and a line in its `validate`; the lists the
//! loader needs (sections, `[[servers]]` keys, keys that are not text) are derived from the structs in `keys`.
//! Around them: `sources` (file, environment, flags), `syntax` (TOML errors that never quote a secret), `error`,
//! `secrets` (secret files), `checks` (checks shared by sections) and `printable` (`--print-config`); in add-on
//! mode also `addon` (the options the Supervisor wrote) and `service_broker` (the broker the Supervisor named).

mod addon;
mod checks;
mod commands;
mod error;
mod homeassistant;
mod http;
mod keys;
mod logging;
mod mqtt;
mod nesting;
mod plex;
mod printable;
mod secrets;
mod servers;
mod service_broker;
mod sources;
mod syntax;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

pub use addon::{AddonOptions, ADDON_ONLY_OPTIONS, ADDON_OPTIONS};
pub use commands::CommandsConfig;
pub use error::ConfigError;
pub use homeassistant::{HomeAssistantConfig, PlayersConfig};
pub use http::HttpConfig;
pub use logging::{LogFormat, LoggingConfig};
pub use mqtt::{MqttConfig, DEFAULT_TOPIC_PREFIX};
pub use plex::{
    configured_plextv_url, default_device_key_file, parse_plextv_url, plextv_url_allowed, PlexConfig,
    DEFAULT_PLEXTV_URL,
};
pub use secrets::resolve_credential;
pub use servers::{ServerConfig, TokenSource, Transport};
pub use sources::{names_a_broker, Sources, ENV_PREFIX};

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

/// What the user writes, every section optional. Each field is a section: its name is the TOML table and the
/// `PLEX_MQTT_BRIDGE_<SECTION>_…` prefix.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    mqtt: mqtt::RawMqtt,
    #[serde(default)]
    plex: plex::RawPlex,
    #[serde(default)]
    servers: Vec<servers::RawServer>,
    #[serde(default)]
    logging: logging::RawLogging,
    #[serde(default)]
    homeassistant: homeassistant::RawHomeAssistant,
    #[serde(default)]
    http: http::RawHttp,
    #[serde(default)]
    players: homeassistant::RawPlayers,
    #[serde(default)]
    commands: commands::RawCommands,
}

/// Loads and validates the configuration from all sources.
pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
    let figment = sources::layered(sources)?;
    let raw: RawConfig = figment.extract().map_err(|e| error::from_figment(&e))?;
    servers::check_keys(&figment)?;
    validate(raw).map_err(|error| addon::name_the_option(error, &figment))
}

/// Validates section by section; what spans sections (the server list, unique names) is checked here.
fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mqtt = mqtt::validate(raw.mqtt)?;
    let plex = plex::validate(&raw.plex, &mqtt)?;
    let mut servers = Vec::new();
    if raw.plex.server.is_set() {
        servers.push(servers::validate(raw.plex.server, "plex".to_owned(), plex.webhook_compat)?);
    }
    for (index, server) in raw.servers.into_iter().enumerate() {
        servers.push(servers::validate(server, format!("servers[{index}]"), plex.webhook_compat)?);
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
    let logging = logging::validate(raw.logging)?;
    let homeassistant = homeassistant::validate(raw.homeassistant)?;
    let http = http::validate(raw.http)?;
    let players = homeassistant::players(raw.players);
    let commands = commands::validate(raw.commands)?;
    Ok(Config { mqtt, plex, servers, logging, homeassistant, http, players, commands })
}
