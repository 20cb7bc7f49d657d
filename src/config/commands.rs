//! `[commands]`: commands from MQTT back to Plex — off unless enabled, and only the allowed verbs.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::checks::positive;
use super::ConfigError;
use crate::command_verb::Verb;
use crate::lenient;

/// The validated `[commands]` section.
#[derive(Debug, Clone, Serialize)]
pub struct CommandsConfig {
    /// Subscribe to the command topics at all (default false: the bridge only listens).
    pub enabled: bool,
    /// The verbs that may run; a command with any other verb gets a refusal result.
    #[serde(serialize_with = "verb_names")]
    pub allow: BTreeSet<Verb>,
    /// At most this many commands run per server in every `rate_window`; the rest are refused.
    pub rate_limit: u32,
    #[serde(with = "humantime_serde")]
    pub rate_window: Duration,
}

impl CommandsConfig {
    /// The allowed verbs that `pick` selects; none while commands are off.
    pub fn allowed(&self, pick: impl Fn(&Verb) -> bool) -> Vec<Verb> {
        if !self.enabled {
            return Vec::new();
        }
        self.allow.iter().copied().filter(|verb| pick(verb)).collect()
    }
}

fn verb_names<S: serde::Serializer>(allow: &BTreeSet<Verb>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(allow.iter().map(|v| v.name()))
}

/// `[commands]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommands {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_list")]
    allow: Option<Vec<String>>,
    #[serde(default)]
    rate_limit: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    rate_window: Option<Duration>,
}

/// The default allow-list: a library scan is harmless (PMS runs them on its own schedule too).
pub const DEFAULT_ALLOW: [Verb; 1] = [Verb::LibraryScan];

pub(super) fn validate(raw: RawCommands) -> Result<CommandsConfig, ConfigError> {
    let allow = match raw.allow {
        None => DEFAULT_ALLOW.into_iter().collect(),
        Some(names) => names
            .iter()
            .map(|name| {
                Verb::parse(name.trim()).ok_or_else(|| {
                    ConfigError::new(
                        "commands.allow",
                        format!("names {name:?}, which is not a command"),
                        format!("use any of {}", Verb::all_names()),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let rate_limit = match raw.rate_limit.unwrap_or(10) {
        0 => {
            return Err(ConfigError::new(
                "commands.rate_limit",
                "is 0",
                "use at least 1 (default 10); to stop commands, set commands.enabled = false",
            ))
        }
        n => n,
    };
    Ok(CommandsConfig {
        enabled: raw.enabled.unwrap_or(false),
        allow,
        rate_limit,
        rate_window: positive(raw.rate_window, Duration::from_secs(10), "commands.rate_window")?,
    })
}
