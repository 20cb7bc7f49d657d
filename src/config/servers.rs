//! `[[servers]]`: one Plex Media Server each. The same keys, in `[plex]`, are the single-server shorthand.

use std::path::PathBuf;

use figment::Figment;
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::checks::{check_tls_files, extra_url_part};
use super::keys::field_names;
use super::printable::serialize_display;
use super::secrets::{read_secret_file, resolve_credential};
use super::ConfigError;
use crate::lenient;
use crate::secret::Secret;
use crate::tls::TlsOptions;
use crate::topic::{topic_text_problem, ServerName};

/// One Plex Media Server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    /// Base URL (`http://host:32400`), without credentials.
    #[serde(serialize_with = "serialize_display")]
    pub url: Url,
    /// The token, inline or from a file that is re-read before every connection attempt.
    #[serde(flatten)]
    pub token: TokenSource,
    /// The topic name, if configured; otherwise derived from the server's friendlyName.
    pub name: Option<String>,
    /// `filters` query parameter entries; `None` sends no parameter (the server's default, `-log`).
    pub filters: Option<Vec<String>>,
    /// Which notification transport to use.
    pub transport: Transport,
    /// Publish Plex-webhook-shaped messages on `<p>/<server>/webhook`: this server's own setting, else
    /// `plex.webhook_compat`.
    pub webhook_compat: bool,
    /// TLS settings for `https://` servers.
    #[serde(flatten)]
    pub tls: TlsOptions,
    /// Where the key lives, for messages (`servers[0]` or `plex`).
    #[serde(skip)]
    pub key: String,
}

impl ServerConfig {
    /// How logs and the renewer name the server before its topic name is known: the configured `name`, else the
    /// config key (`servers[0]`).
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.key)
    }

    /// Whether the server is reached over TLS (`https://`, and its notification socket over `wss://`).
    pub fn uses_tls(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// The rustls configuration for an `https://` server (`None` for `http://`), shared by its REST calls and
    /// its notification socket.
    pub fn tls_config(&self) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, crate::tls::TlsError> {
        if self.uses_tls() {
            crate::tls::client_config(&self.tls).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// The notification transport of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// WebSocket first; EventSource when the upgrade is refused (remembered until restart).
    Auto,
    /// Only WebSocket.
    WebSocket,
    /// Only EventSource (SSE).
    EventSource,
}

impl Transport {
    /// The name used in the config and in `<server>/info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::WebSocket => "websocket",
            Transport::EventSource => "eventsource",
        }
    }
}

/// Where a token comes from.
#[derive(Debug, Clone, Serialize)]
pub enum TokenSource {
    #[serde(rename = "token")]
    Inline(Secret),
    #[serde(rename = "token_file")]
    File(PathBuf),
}

impl TokenSource {
    /// The token now. A file is read every time, so a rotated token is picked up without a restart.
    pub fn read(&self) -> std::io::Result<Secret> {
        match self {
            TokenSource::Inline(secret) => Ok(secret.clone()),
            TokenSource::File(path) => Ok(Secret::new(std::fs::read_to_string(resolve_credential(path))?)),
        }
    }
}

/// A `[[servers]]` table (or `[plex]`'s shorthand) as written. It cannot deny unknown fields itself, being
/// flattened into `[plex]`, so [`check_keys`] does that for `[[servers]]`.
#[derive(Debug, Default, Deserialize, Serialize)]
pub(super) struct RawServer {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub(super) url: Option<String>,
    #[serde(default)]
    pub(super) token: Option<Secret>,
    #[serde(default)]
    pub(super) token_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_list")]
    filters: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    transport: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: Option<bool>,
    #[serde(default)]
    webhook_compat: Option<bool>,
}

impl RawServer {
    /// Whether `[plex]` configures a server of its own (the shorthand), rather than only settings for all.
    pub(super) fn is_set(&self) -> bool {
        self.url.is_some() || self.token.is_some() || self.token_file.is_some()
    }
}

/// Rejects a key a `[[servers]]` table does not know, as `deny_unknown_fields` would.
pub(super) fn check_keys(figment: &Figment) -> Result<(), ConfigError> {
    let Ok(servers) = figment.find_value("servers") else {
        return Ok(());
    };
    let Some(list) = servers.as_array() else {
        return Ok(());
    };
    let known = field_names::<RawServer>();
    for (index, server) in list.iter().enumerate() {
        if let Some(dict) = server.as_dict() {
            if let Some(unknown) = dict.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(ConfigError::new(
                    format!("servers[{index}].{unknown}"),
                    "is not a known setting",
                    format!("remove it or correct its spelling; known keys here: {}", known.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

/// `key` names the server in errors (`servers[0]`, `plex`); `webhook_compat` is `plex.webhook_compat`, used
/// when the server does not set its own.
pub(super) fn validate(raw: RawServer, key: String, webhook_compat: bool) -> Result<ServerConfig, ConfigError> {
    let url_text = raw.url.ok_or_else(|| {
        ConfigError::new(
            format!("{key}.url"),
            "is missing",
            "set the server's address, e.g. url = \"http://192.168.1.10:32400\"",
        )
    })?;
    let url = Url::parse(url_text.trim()).map_err(|e| {
        ConfigError::new(
            format!("{key}.url"),
            format!("is not a URL ({e})"),
            "write it as http://HOST:32400 (or https://…)",
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(
            format!("{key}.url"),
            format!("must be an http:// or https:// URL with a host, not {:?}", url.scheme()),
            "write it as http://HOST:32400",
        ));
    }
    if let Some(part) = extra_url_part(&url, false) {
        // The part itself is not shown: `#X-Plex-Token=…`, `?X-Plex-Token=…` or `user:pass@` are secrets, and
        // whatever is in the URL would reach every log line, `<p>/<server>/info` and Home Assistant.
        return Err(ConfigError::new(
            format!("{key}.url"),
            format!("has {part}, which the bridge does not accept (it would show in logs and on MQTT)"),
            "give only scheme, host and port, e.g. url = \"http://192.168.1.10:32400\"; put the token in `token` or \
             `token_file`",
        ));
    }
    let token = match (raw.token.filter(|t| !t.is_empty()), raw.token_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(format!("{key}.token"), "and `token_file` are both set", "keep only one"))
        }
        (Some(token), None) => TokenSource::Inline(token),
        (None, Some(path)) => {
            read_secret_file(&path, &format!("{key}.token_file"))?;
            TokenSource::File(path)
        }
        (None, None) => {
            return Err(ConfigError::new(
                format!("{key}.token"),
                "is missing",
                "set `token` or `token_file` to the server owner's X-Plex-Token (env: PLEX_MQTT_BRIDGE_PLEX_TOKEN \
                 or PLEX_MQTT_BRIDGE_PLEX_TOKEN_FILE)",
            ))
        }
    };
    if let Some(name) = &raw.name {
        if ServerName::configured(name).is_none() {
            let problem = topic_text_problem(name, false).unwrap_or("is not a valid topic segment");
            return Err(ConfigError::new(
                format!("{key}.name"),
                problem,
                "use a single topic level without `/`, `+`, `#` or NUL, e.g. \"living-room\"",
            ));
        }
    }
    let filters = match raw.filters {
        None => None,
        Some(list) => {
            let mut clean = Vec::new();
            for entry in list {
                let entry = entry.trim().to_owned();
                if entry.is_empty() {
                    continue;
                }
                if entry.contains([',', '&', '=', '#', ' ']) {
                    return Err(ConfigError::new(
                        format!("{key}.filters"),
                        format!("has the entry {entry:?}"),
                        "list notification types such as \"playing\" or exclusions such as \"-log\", one per entry",
                    ));
                }
                clean.push(entry);
            }
            Some(clean)
        }
    };
    let transport = match raw.transport.as_deref().map(str::trim) {
        None | Some("auto") => Transport::Auto,
        Some("websocket") => Transport::WebSocket,
        Some("eventsource") => Transport::EventSource,
        Some(other) => {
            return Err(ConfigError::new(
                format!("{key}.transport"),
                format!("is {other:?}"),
                "use \"auto\" (default), \"websocket\" or \"eventsource\"",
            ))
        }
    };
    let tls = TlsOptions {
        ca_file: raw.ca_file,
        client_cert: None,
        client_key: None,
        insecure_skip_verify: raw.insecure_skip_verify.unwrap_or(false),
    };
    if url.scheme() != "https" && tls != TlsOptions::default() {
        return Err(ConfigError::new(
            format!("{key}.ca_file"),
            "(or insecure_skip_verify) is set but the server URL is not https://",
            "use an https:// URL, or remove the TLS settings",
        ));
    }
    if tls.insecure_skip_verify && tls.ca_file.is_some() {
        return Err(ConfigError::new(
            format!("{key}.insecure_skip_verify"),
            "and ca_file are both set",
            "keep only one: ca_file to trust a certificate, or insecure_skip_verify to check none",
        ));
    }
    check_tls_files(&tls, &key)?;
    let webhook_compat = raw.webhook_compat.unwrap_or(webhook_compat);
    Ok(ServerConfig { url, token, name: raw.name, filters, transport, webhook_compat, tls, key })
}

#[cfg(test)]
mod tests {
    use figment::providers::{Format, Toml};
    use figment::Figment;

    use super::super::{load, Config, Sources};
    use super::{check_keys, field_names, RawServer};

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// `webhook_compat` is off by default; `[plex]` (or its environment variable) sets it for every server, and a
    /// server's own value wins over it in either direction.
    #[test]
    fn webhook_compat_defaults_off_and_a_servers_own_value_wins() {
        let servers = r#"[{url="http://10.0.0.1:32400",token="t",name="a"},{url="http://10.0.0.2:32400",token="t",name="b",webhook_compat=false},{url="http://10.0.0.3:32400",token="t",name="c",webhook_compat=true}]"#;
        let flags = |config: &Config| config.servers.iter().map(|s| s.webhook_compat).collect::<Vec<_>>();
        let off = load(&Sources { env: env(&[("PLEX_MQTT_BRIDGE_SERVERS", servers)]), ..Sources::default() }).unwrap();
        assert!(!off.plex.webhook_compat);
        assert_eq!(flags(&off), [false, false, true]);
        let on = load(&Sources {
            env: env(&[("PLEX_MQTT_BRIDGE_SERVERS", servers), ("PLEX_MQTT_BRIDGE_PLEX_WEBHOOK_COMPAT", "true")]),
            ..Sources::default()
        })
        .unwrap();
        assert!(on.plex.webhook_compat);
        assert_eq!(flags(&on), [true, false, true]);
        let shorthand = load(&Sources {
            env: env(&[
                ("PLEX_MQTT_BRIDGE_PLEX_URL", "http://10.0.0.1:32400"),
                ("PLEX_MQTT_BRIDGE_PLEX_TOKEN", "t"),
                ("PLEX_MQTT_BRIDGE_PLEX__WEBHOOK_COMPAT", "true"),
            ]),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(flags(&shorthand), [true], "the single-server shorthand follows plex.webhook_compat");
        let wrong = load(&Sources {
            env: env(&[("PLEX_MQTT_BRIDGE_SERVERS", servers), ("PLEX_MQTT_BRIDGE_PLEX_WEBHOOK_COMPAT", "yes")]),
            ..Sources::default()
        });
        assert!(wrong.is_err_and(|e| e.key.contains("WEBHOOK_COMPAT")), "a non-boolean is a config error");
    }

    /// Every key `RawServer` has is accepted in `[[servers]]`, and the error for another one lists them all.
    #[test]
    fn servers_tables_accept_exactly_the_raw_servers_keys() {
        let known = field_names::<RawServer>();
        assert!(known.starts_with(&["url", "token", "token_file"]), "{known:?}");
        let table = known.iter().map(|key| format!("{key}=\"x\"")).collect::<Vec<_>>().join(",");
        let figment = Figment::from(Toml::string(&format!("servers = [{{{table}}}]")));
        assert_eq!(check_keys(&figment), Ok(()));
        let typo = Figment::from(Toml::string("servers = [{url=\"x\"},{tokne=\"x\"}]"));
        let error = check_keys(&typo).unwrap_err();
        assert_eq!(error.key, "servers[1].tokne");
        assert!(error.fix.ends_with(&known.join(", ")), "{error}");
    }
}
