//! Add-on mode's options: `/data/options.json`, which the Supervisor writes from the add-on's Configuration page,
//! mapped onto the bridge's keys and layered like any other source (above the file, below the environment), so
//! validation and its messages are those of every other source. A message about a key an option set names the
//! option (`server_url`, not `plex.url`): that is what the user sees on the Configuration page.

use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::error::ADDON_METADATA_NAME;
use super::nesting::merge_dicts;
use super::ConfigError;

/// Every add-on option that is a setting, and the key it sets. The add-on's `config.yaml` offers exactly these
/// and [`ADDON_ONLY_OPTIONS`] (`tests/addon_manifest.rs` checks that).
pub const ADDON_OPTIONS: [(&str, &str); 10] = [
    ("server_url", "plex.url"),
    ("server_name", "plex.name"),
    ("topic_prefix", "mqtt.topic_prefix"),
    ("discovery_prefix", "homeassistant.discovery_prefix"),
    ("commands_enabled", "commands.enabled"),
    ("commands_allow", "commands.allow"),
    ("log_level", "logging.level"),
    ("mqtt_url", "mqtt.url"),
    ("mqtt_username", "mqtt.username"),
    ("mqtt_password", "mqtt.password"),
];

/// Options that steer the add-on itself rather than set a key: `force_login` logs in to Plex again at the next
/// start.
pub const ADDON_ONLY_OPTIONS: [&str; 1] = ["force_login"];

/// The options the Supervisor wrote, read and checked: every option is known, `force_login` is a boolean.
#[derive(Debug, Clone)]
pub struct AddonOptions {
    file: PathBuf,
    values: serde_json::Map<String, serde_json::Value>,
}

impl AddonOptions {
    /// Reads `file`; its problems are named like the file's (`--addon`) or the option's.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            ConfigError::new(
                "--addon",
                format!("names {}, which cannot be read ({e})", file.display()),
                "run the bridge as the Home Assistant add-on (the Supervisor writes /data/options.json), or pass the \
                 path of the options file",
            )
        })?;
        let values = match serde_json::from_str(&text) {
            Ok(serde_json::Value::Object(values)) => values,
            _ => {
                return Err(ConfigError::new(
                    "--addon",
                    format!("names {}, which is not a JSON object", file.display()),
                    "save the add-on's Configuration page again, so the Supervisor rewrites it",
                ))
            }
        };
        for (option, value) in &values {
            if !ADDON_OPTIONS.iter().any(|(known, _)| known == option) && !ADDON_ONLY_OPTIONS.contains(&option.as_str())
            {
                let known: Vec<_> = ADDON_OPTIONS.iter().map(|(o, _)| *o).chain(ADDON_ONLY_OPTIONS).collect();
                return Err(ConfigError::new(
                    option.clone(),
                    "is not an option of this add-on",
                    format!("remove it from the add-on's configuration; its options are {}", known.join(", ")),
                ));
            }
            if option == "force_login" && !value.is_boolean() {
                return Err(ConfigError::new(option.clone(), "is not true or false", "set it to true or false"));
            }
        }
        Ok(AddonOptions { file: file.to_owned(), values })
    }

    /// Log in to Plex again at this start, even though a token is saved.
    pub fn force_login(&self) -> bool {
        self.values.get("force_login").and_then(serde_json::Value::as_bool).unwrap_or(false)
    }

    /// The token file in add-on mode: `plex_token` beside the options file (in `/data`, which persists), where
    /// the first start's login writes it; the device key goes beside it (`plex_token.key`).
    pub fn token_file(&self) -> PathBuf {
        self.file.parent().unwrap_or_else(|| Path::new("")).join("plex_token")
    }
}

impl Provider for AddonOptions {
    fn metadata(&self) -> Metadata {
        Metadata::from(ADDON_METADATA_NAME, figment::Source::File(self.file.clone()))
            .interpolater(|_, keys| option_for(&keys.join(".")).unwrap_or("?").to_owned())
    }

    /// The options that are set (an option left empty on the Configuration page is not), each at its key, and
    /// the token file in `/data`.
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut entries = vec![("plex.token_file", Value::from(self.token_file().display().to_string()))];
        let set = ADDON_OPTIONS
            .iter()
            .filter_map(|(option, key)| Some((*key, self.values.get(*option)?)))
            .filter(|(_, value)| !value.is_null() && value.as_str().is_none_or(|text| !text.trim().is_empty()));
        for (key, value) in set {
            entries.push((key, Value::serialize(value)?));
        }
        let mut dict = Dict::new();
        for (key, value) in entries {
            dict = merge_dicts(dict, figment::util::nest(key, value).into_dict().unwrap_or_default());
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// The option that sets `key`.
fn option_for(key: &str) -> Option<&'static str> {
    ADDON_OPTIONS.iter().find(|(_, k)| *k == key).map(|(option, _)| *option)
}

/// A validation error about a key an option set, renamed to the option; the token file (which no option sets,
/// the first start's login writes it) gets the add-on's fix.
pub(super) fn name_the_option(mut error: ConfigError, figment: &Figment) -> ConfigError {
    if figment.find_metadata(&error.key).is_none_or(|md| md.name != ADDON_METADATA_NAME) {
        return error;
    }
    if error.key == "plex.token_file" {
        error.fix = "start the add-on: it logs in to Plex at its first start (the code to enter at plex.tv/link is in \
                     the add-on's log); or turn on the add-on option force_login"
            .to_owned();
    } else if let Some(option) = option_for(&error.key) {
        error.key = option.to_owned();
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(json: &str) -> (tempfile::TempDir, Result<AddonOptions, ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("options.json");
        std::fs::write(&file, json).unwrap();
        let options = AddonOptions::load(&file);
        (dir, options)
    }

    #[test]
    fn options_land_on_their_keys_and_empty_ones_are_unset() {
        let (dir, options) = options(
            r#"{"server_url":"http://10.0.0.1:32400","server_name":"","topic_prefix":"home/plex","commands_allow":["library_scan","pause"],"commands_enabled":true,"mqtt_url":null,"force_login":false}"#,
        );
        let figment = Figment::from(options.unwrap());
        assert_eq!(figment.find_value("plex.url").unwrap().into_string().as_deref(), Some("http://10.0.0.1:32400"));
        assert_eq!(figment.find_value("mqtt.topic_prefix").unwrap().into_string().as_deref(), Some("home/plex"));
        assert_eq!(figment.find_value("commands.enabled").unwrap().to_bool(), Some(true));
        assert_eq!(figment.find_value("commands.allow").unwrap().into_array().map(|a| a.len()), Some(2));
        let token_file = dir.path().join("plex_token").display().to_string();
        assert_eq!(figment.find_value("plex.token_file").unwrap().into_string(), Some(token_file));
        assert!(figment.find_value("plex.name").is_err(), "an empty option is unset");
        assert!(figment.find_value("mqtt.url").is_err(), "a null option is unset");
    }

    #[test]
    fn an_unknown_option_or_a_bad_file_is_named() {
        let error = options(r#"{"server_url":"http://x","serverurl":"y"}"#).1.unwrap_err();
        assert_eq!(error.key, "serverurl");
        assert!(error.fix.contains("server_url"), "{error}");
        assert_eq!(options("[1]").1.unwrap_err().key, "--addon");
        assert_eq!(options(r#"{"force_login":"yes"}"#).1.unwrap_err().key, "force_login");
        assert!(options(r#"{"force_login":true}"#).1.unwrap().force_login());
    }

    /// An option whose key the raw config does not know would be refused as an unknown setting at every start.
    #[test]
    fn every_option_sets_a_key_the_bridge_knows() {
        use super::super::sources::Override;
        for (option, key) in ADDON_OPTIONS {
            let probe = Figment::from(Override::new(key, "0")).extract::<super::super::RawConfig>();
            let unknown = matches!(&probe, Err(e) if matches!(e.kind, figment::error::Kind::UnknownField(..)));
            assert!(!unknown, "{option} sets {key}, which is not a setting");
        }
    }
}
