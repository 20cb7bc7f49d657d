//! What `check` says of a server's token, whether or not the server accepts it: its kind, its expiry, whether
//! the bridge can renew it, the last renewal problem the running bridge reports, and a fix that fits the kind
//! (a Plex JWT is renewed or replaced with `login`; a legacy token must be the server owner's).

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::config::{Config, ServerConfig, TokenSource};
use crate::plextv::device_key::DeviceKey;
use crate::plextv::token::TokenKind;
use crate::secret::Secret;
use crate::telemetry::health::rfc3339;

/// How long `check` waits for the running bridge's `/healthz` (it may not run at all).
const HEALTH_WAIT: Duration = Duration::from_secs(2);

/// Whether the bridge can renew a Plex JWT, and why not.
enum Renewal {
    /// With this device key.
    With(PathBuf),
    /// Not: why, and what to do.
    Not(String),
}

/// One token, described.
pub struct TokenReport {
    kind: TokenKind,
    renewal: Renewal,
}

impl TokenReport {
    pub fn of(config: &Config, server: &ServerConfig, token: &Secret) -> TokenReport {
        let kind = TokenKind::of(token.expose());
        let renewal = match &server.token {
            TokenSource::File(path) => {
                let key_file = config.plex.device_key_for(&crate::config::resolve_credential(path));
                if !key_file.exists() {
                    Renewal::Not(format!(
                        "no device key at {} (plex-mqtt-bridge login sets one up)",
                        key_file.display()
                    ))
                } else {
                    match DeviceKey::load(&key_file) {
                        Ok(_) => Renewal::With(key_file),
                        Err(e) => Renewal::Not(e.to_string()),
                    }
                }
            }
            TokenSource::Inline(_) => Renewal::Not("an inline token cannot be rewritten; use token_file".to_owned()),
        };
        TokenReport { kind, renewal }
    }

    fn expired(&self) -> bool {
        matches!(self.kind, TokenKind::Jwt { expires_at: Some(at) } if at <= SystemTime::now())
    }

    /// The fix for a token the server refused.
    pub fn fix(&self) -> String {
        match (&self.kind, &self.renewal) {
            (TokenKind::Legacy, _) => {
                "use the server owner's X-Plex-Token in token / token_file, or run plex-mqtt-bridge login".to_owned()
            }
            (TokenKind::Jwt { .. }, Renewal::With(_)) if self.expired() => {
                "the running bridge renews an expired Plex JWT with its device key (see /healthz for how that \
                 goes); if it cannot, run plex-mqtt-bridge login for a new one"
                    .to_owned()
            }
            (TokenKind::Jwt { .. }, Renewal::With(_)) => {
                "the server refuses this Plex JWT although it is valid: the running bridge tries a renewed one; if \
                 that is refused too, the account has no access to this server: run plex-mqtt-bridge login with the \
                 owner's account"
                    .to_owned()
            }
            (TokenKind::Jwt { .. }, Renewal::Not(_)) => {
                "run plex-mqtt-bridge login: it writes a new Plex JWT and the device key that keeps it renewed"
                    .to_owned()
            }
        }
    }

    /// The last renewal problem the running bridge reports for `server` in its `/healthz` (`http.listen`), as
    /// `; last renewal problem: …`, or nothing when there is none or the bridge does not answer.
    pub async fn last_problem(&self, config: &Config, server: &ServerConfig) -> String {
        let Some(addr) = super::health::endpoint(config) else { return String::new() };
        let Ok(Ok((_, body))) = tokio::time::timeout(HEALTH_WAIT, super::health::get(addr, "/healthz")).await else {
            return String::new();
        };
        let Ok(health) = serde_json::from_str::<Value>(&body) else { return String::new() };
        renewal_problem(&health, &server.key)
    }
}

/// The renewal problem `/healthz` reports for the server configured at `key`, found by its `key` field: the
/// document lists servers under their topic name once known, which `check` cannot know for an unnamed server.
fn renewal_problem(health: &Value, key: &str) -> String {
    let servers = health["servers"].as_object();
    let Some(token) = servers.and_then(|servers| servers.values().find(|s| s["key"] == key)).map(|s| &s["token"])
    else {
        return String::new();
    };
    match token["problem"]["error"].as_str() {
        Some(error) => {
            let retry = token["retry_at"].as_str().map(|at| format!(", tried again at {at}")).unwrap_or_default();
            format!("; last renewal problem (the running bridge): {error}{retry}")
        }
        None => String::new(),
    }
}

impl fmt::Display for TokenReport {
    /// E.g. `Plex JWT, expires 2026-12-13T10:00:00Z (in 6days 23h), renewed with the device key /…/plex_token.key`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let TokenKind::Jwt { expires_at } = self.kind else {
            return f.write_str("legacy token: long-lived, nothing to renew");
        };
        f.write_str("Plex JWT, ")?;
        match expires_at {
            Some(at) => match at.duration_since(SystemTime::now()) {
                Ok(left) => write!(
                    f,
                    "expires {} (in {})",
                    rfc3339(at),
                    humantime::format_duration(Duration::from_secs(left.as_secs()))
                )?,
                Err(_) => write!(f, "EXPIRED at {}", rfc3339(at))?,
            },
            None => f.write_str("no expiry")?,
        }
        match &self.renewal {
            Renewal::With(key_file) => write!(f, ", renewed with the device key {}", key_file.display()),
            Renewal::Not(why) => write!(f, ", NOT renewable: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::health::{HealthRegistry, Problem, TokenStatus};

    #[test]
    fn the_renewal_problem_is_found_by_config_key_once_the_topic_name_is_known() {
        let registry: &'static HealthRegistry = Box::leak(Box::default());
        let servers = registry.register(["servers[0]".to_owned(), "servers[1]".to_owned()]);
        servers[0].set_name("living-room");
        servers[0].set_token_file("/run/token");
        let problem = Problem { reason: "token_file", error: "plex.tv refused the device key".to_owned() };
        registry.set_token_status("/run/token", TokenStatus { problem: Some(problem), ..TokenStatus::default() });
        let doc = registry.snapshot().to_json();
        let found = renewal_problem(&doc, "servers[0]");
        assert!(found.contains("plex.tv refused the device key"), "{found}");
        assert_eq!(renewal_problem(&doc, "servers[1]"), "", "no token file, no problem");
        assert_eq!(renewal_problem(&doc, "servers[2]"), "");
    }
}
