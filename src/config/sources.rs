//! Where settings come from, layered with figment: built-in defaults < the broker the Supervisor named (add-on
//! mode) < TOML file < add-on options (add-on mode) < environment (`PLEX_MQTT_BRIDGE_…`) < command-line flags.

use std::path::PathBuf;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::addon::AddonOptions;
use super::error::ENV_METADATA_NAME;
use super::keys::{list_keys, sections, typed_keys};
use super::nesting::merge_dicts;
use super::service_broker::ServiceBroker;
use super::{syntax, ConfigError};
use crate::addon::mqtt_service::MqttService;

/// The prefix of every environment variable the bridge reads.
pub const ENV_PREFIX: &str = "PLEX_MQTT_BRIDGE_";

/// Variables with the prefix that are not settings, so the environment layer leaves them alone.
const NOT_SETTINGS: [&str; 1] = [crate::addon::SUPERVISOR_URL_ENV];

/// Where the settings come from, besides defaults and the environment.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// `--config PATH`.
    pub file: Option<PathBuf>,
    /// Command-line overrides as `(dotted key, value)` pairs, e.g. `("mqtt.url", "mqtt://…")`.
    pub overrides: Vec<(String, String)>,
    /// The environment, as `(name, value)` pairs; normally `std::env::vars()`.
    pub env: Vec<(String, String)>,
    /// Add-on mode (`--addon`): the options file the Supervisor wrote (`/data/options.json`).
    pub addon_options: Option<PathBuf>,
    /// Add-on mode with no broker named anywhere: the MQTT service the Supervisor named.
    pub service_broker: Option<MqttService>,
}

/// The keys that name a broker or its login; any of them set means the user chose the broker.
const BROKER_KEYS: [&str; 4] = ["mqtt.url", "mqtt.username", "mqtt.password", "mqtt.password_file"];

/// Whether any source (file, add-on options, environment, flags) names the broker or its login.
pub fn names_a_broker(sources: &Sources) -> Result<bool, ConfigError> {
    let figment = layered(sources)?;
    Ok(BROKER_KEYS.iter().any(|key| figment.find_value(key).is_ok()))
}

/// All sources merged, later ones winning. The file is syntax-checked by [`syntax::check`] first, so a TOML error
/// never quotes the file's text (which may hold a secret).
pub(super) fn layered(sources: &Sources) -> Result<Figment, ConfigError> {
    let mut figment = Figment::new();
    if let Some(service) = &sources.service_broker {
        figment = figment.merge(ServiceBroker(service));
    }
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
    if let Some(path) = &sources.addon_options {
        figment = figment.merge(AddonOptions::load(path)?);
    }
    figment = figment.merge(EnvProvider::new(&sources.env));
    for (key, value) in &sources.overrides {
        figment = figment.merge(Override::new(key, value));
    }
    Ok(figment)
}

/// The environment as a figment provider. Section and key are joined by `__` or, for convenience, by a single
/// `_` right after the section name: `PLEX_MQTT_BRIDGE_MQTT__URL` and `PLEX_MQTT_BRIDGE_MQTT_URL` both set
/// `mqtt.url`. Values stay strings (a numeric token or password keeps its leading zeros) except for keys whose
/// type is a number, a boolean, a list or a table ([`typed_keys`]), and a TOML list for a key that takes a list
/// or comma-separated text ([`list_keys`]).
struct EnvProvider {
    vars: Vec<(String, String)>,
}

impl EnvProvider {
    fn new(env: &[(String, String)]) -> Self {
        let vars = env
            .iter()
            .filter(|(name, _)| !NOT_SETTINGS.contains(&name.as_str()))
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
    for section in sections() {
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
            let value = if typed_keys().contains(last) {
                raw.parse::<Value>().unwrap_or_else(|_| Value::from(raw.clone()))
            } else if list_keys().contains(last) {
                raw.parse::<Value>()
                    .ok()
                    .filter(|value| matches!(value, Value::Array(..)))
                    .unwrap_or_else(|| Value::from(raw.clone()))
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

/// One command-line override: a dotted key set to text.
pub(super) struct Override {
    key: String,
    value: String,
}

impl Override {
    pub(super) fn new(key: &str, value: &str) -> Self {
        Override { key: key.to_owned(), value: value.to_owned() }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_map_to_dotted_keys() {
        assert_eq!(env_key("MQTT__URL").as_deref(), Some("mqtt.url"));
        assert_eq!(env_key("MQTT_URL").as_deref(), Some("mqtt.url"));
        assert_eq!(env_key("PLEX_TOKEN_FILE").as_deref(), Some("plex.token_file"));
        assert_eq!(env_key("HOMEASSISTANT_DISCOVERY_PREFIX").as_deref(), Some("homeassistant.discovery_prefix"));
        assert_eq!(env_key("SERVERS").as_deref(), Some("servers"));
        assert_eq!(env_key("SERVERS__0__URL").as_deref(), Some("servers.0.url"));
        assert_eq!(env_key("BOGUS").as_deref(), Some("bogus"));
        assert_eq!(env_key(""), None);
    }

    /// The Supervisor URL shares the prefix but is no setting: it must not be refused as an unknown key.
    #[test]
    fn variables_that_are_not_settings_are_skipped() {
        let env = vec![(crate::addon::SUPERVISOR_URL_ENV.to_owned(), "http://127.0.0.1:1".to_owned())];
        let data = EnvProvider::new(&env).data().unwrap_or_default();
        assert!(data.values().all(|dict| dict.is_empty()), "{data:?}");
    }

    /// A typed key's value is read as TOML; any other keeps its exact text, leading zeros included.
    #[test]
    fn env_values_are_text_unless_the_key_is_typed() {
        let vars = [("PLEX_MQTT_BRIDGE_MQTT_QOS", "2"), ("PLEX_MQTT_BRIDGE_PLEX_TOKEN", "0123")];
        let env: Vec<_> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let figment = Figment::from(EnvProvider::new(&env));
        assert_eq!(figment.find_value("mqtt.qos").ok().and_then(|v| v.to_u128()), Some(2));
        assert_eq!(figment.find_value("plex.token").ok().and_then(|v| v.into_string()).as_deref(), Some("0123"));
    }

    /// `commands.allow` (like `filters`) takes a TOML list or comma-separated text from the environment.
    #[test]
    fn a_list_key_takes_a_toml_list_or_comma_separated_text() {
        for allow in ["pause, play", r#"["pause", "play"]"#] {
            let env = vec![
                ("PLEX_MQTT_BRIDGE_PLEX_URL".to_owned(), "http://10.0.0.1:32400".to_owned()),
                ("PLEX_MQTT_BRIDGE_PLEX_TOKEN".to_owned(), "t".to_owned()),
                ("PLEX_MQTT_BRIDGE_COMMANDS_ALLOW".to_owned(), allow.to_owned()),
            ];
            let config = super::super::load(&super::super::Sources { env, ..Default::default() });
            let names: Vec<_> =
                config.expect("a valid configuration").commands.allow.iter().map(|v| v.name()).collect();
            assert_eq!(names, ["play", "pause"], "{allow}");
        }
    }
}
