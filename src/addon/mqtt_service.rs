//! The broker the Supervisor names: `GET <supervisor>/services/mqtt` with `Authorization: Bearer
//! $SUPERVISOR_TOKEN`, which is how an add-on that declares `services: ["mqtt:need"]` finds Home Assistant's
//! broker (the Mosquitto add-on registers itself there) with no input from the user.
//!
//! What the Supervisor answers (its source: `api/utils.py`, `api/services.py`, `api/middleware/security.py`,
//! `services/modules/mqtt.py`; the developer docs' Supervisor "Endpoints" table and "Examples" page):
//!
//! - 200 `{"result":"ok","data":{"addon":"core_mosquitto","host":"core-mosquitto","port":1883,"ssl":false,
//!   "username":"…","password":"…","protocol":"3.1.1"}}`. The docs' table types `port` as a string, the
//!   Supervisor's schema as a number: both are taken. Newer Supervisors may say `app` instead of `addon`.
//! - `{"result":"error","message":"…"}`: 400 `Service not enabled` (no add-on provides a broker), 403
//!   `No access to mqtt service!` (the add-on declares neither `mqtt:need` nor `mqtt:want`).
//! - A token the Supervisor does not know: 403 with aiohttp's plain `403: Forbidden`; no token at all: 401.

use std::time::Duration;

use reqwest::{header, Url};
use serde_json::Value;

use super::{DEFAULT_SUPERVISOR_URL, SUPERVISOR_TOKEN_ENV, SUPERVISOR_URL_ENV};
use crate::backoff::Backoff;
use crate::lenient::{value_flag, value_number, value_text};
use crate::secret::Secret;

/// One request's time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer read: the service is a few hundred bytes.
const MAX_ANSWER: usize = 64 * 1024;

/// The MQTT service as the Supervisor describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttService {
    pub host: String,
    pub port: u16,
    /// The broker wants TLS (`mqtts://`).
    pub ssl: bool,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The add-on that provides it (`core_mosquitto`), for the log.
    pub provider: Option<String>,
}

impl MqttService {
    /// `mqtt://HOST:PORT`, or `mqtts://` when the broker wants TLS.
    pub fn url(&self) -> String {
        let scheme = if self.ssl { "mqtts" } else { "mqtt" };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{scheme}://{host}:{}", self.port)
    }
}

/// Why the Supervisor named no broker. None of them carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("{SUPERVISOR_TOKEN_ENV} is not set, so the Supervisor cannot be asked which MQTT broker to use")]
    NoToken,
    #[error("{SUPERVISOR_TOKEN_ENV} holds characters an HTTP header cannot carry")]
    MalformedToken,
    #[error("{SUPERVISOR_URL_ENV} is {0:?}, which is neither {DEFAULT_SUPERVISOR_URL} nor a loopback http:// URL")]
    BadUrl(String),
    #[error("the Supervisor refused the add-on's token (HTTP {0})")]
    TokenRefused(u16),
    #[error("the Supervisor does not let this add-on read the MQTT service ({0:?})")]
    NotGranted(String),
    #[error("the Supervisor knows no MQTT broker ({0:?})")]
    NoBroker(String),
    #[error("the Supervisor cannot be reached: {0}")]
    Unreachable(String),
    #[error("the Supervisor answered HTTP {status} ({message:?})")]
    Unexpected { status: u16, message: String },
    #[error("the Supervisor's answer is not an MQTT service: {0}")]
    BadAnswer(String),
}

impl ServiceError {
    /// What the user should do about it.
    pub fn fix(&self) -> &'static str {
        match self {
            ServiceError::NoToken | ServiceError::MalformedToken => {
                "run the bridge as the Home Assistant add-on (the Supervisor sets SUPERVISOR_TOKEN), or name a broker \
                 yourself: the add-on options mqtt_url, mqtt_username and mqtt_password"
            }
            ServiceError::BadUrl(_) => "unset PLEX_MQTT_BRIDGE_SUPERVISOR_URL: an add-on talks to http://supervisor",
            ServiceError::TokenRefused(_) => {
                "restart the add-on (the Supervisor gives it a new token at every start); if that does not help, \
                 reinstall it"
            }
            ServiceError::NotGranted(_) => {
                "the add-on's config.yaml must declare services: [\"mqtt:need\"]: update or reinstall the add-on"
            }
            ServiceError::NoBroker(_) => {
                "install and start the Mosquitto broker add-on (Settings → Add-ons → Add-on store), or set the add-on \
                 options mqtt_url, mqtt_username and mqtt_password for another broker"
            }
            ServiceError::Unreachable(_) | ServiceError::Unexpected { .. } | ServiceError::BadAnswer(_) => {
                "restart the add-on in a minute (the Supervisor may still be starting); if it persists, set the \
                 add-on options mqtt_url, mqtt_username and mqtt_password"
            }
        }
    }

    /// The setup is wrong and restarting will not help: the process exits 78 (EX_CONFIG). The rest (the
    /// Supervisor unreachable or answering oddly) exit 1.
    pub fn is_setup_problem(&self) -> bool {
        matches!(
            self,
            ServiceError::NoToken
                | ServiceError::MalformedToken
                | ServiceError::BadUrl(_)
                | ServiceError::TokenRefused(_)
                | ServiceError::NotGranted(_)
                | ServiceError::NoBroker(_)
        )
    }

    /// Worth asking again: the Supervisor may still be starting when Home Assistant OS boots.
    fn is_transient(&self) -> bool {
        matches!(self, ServiceError::Unreachable(_) | ServiceError::Unexpected { status: 500.., .. })
    }
}

/// The Supervisor's base URL: [`DEFAULT_SUPERVISOR_URL`], or `configured` (the value of [`SUPERVISOR_URL_ENV`])
/// when that is the same or a loopback `http://` URL. The add-on's token goes there, so nothing else is accepted.
pub fn supervisor_url(configured: Option<&str>) -> Result<Url, ServiceError> {
    let text = configured.map(str::trim).filter(|t| !t.is_empty()).unwrap_or(DEFAULT_SUPERVISOR_URL);
    let url = Url::parse(text).map_err(|_| ServiceError::BadUrl(text.to_owned()))?;
    let supervisor = url.host_str() == Some("supervisor");
    if url.scheme() == "http" && (supervisor || crate::tls::is_loopback(&url)) {
        Ok(url)
    } else {
        Err(ServiceError::BadUrl(text.to_owned()))
    }
}

/// The add-on's token from the value of [`SUPERVISOR_TOKEN_ENV`].
pub fn supervisor_token(value: Option<String>) -> Result<Secret, ServiceError> {
    value.map(Secret::new).filter(|token| !token.is_empty()).ok_or(ServiceError::NoToken)
}

/// Asks the Supervisor for the MQTT service, again and again while it is unreachable or failing, for at most
/// `patience`; a refusal ends it at once.
pub async fn lookup_patiently(base: &Url, token: &Secret, patience: Duration) -> Result<MqttService, ServiceError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    loop {
        match lookup(base, token).await {
            Err(error) if error.is_transient() => {
                let delay = backoff.next_delay();
                if tokio::time::Instant::now() + delay >= deadline {
                    return Err(error);
                }
                tokio::time::sleep(delay).await;
            }
            answer => return answer,
        }
    }
}

/// Asks the Supervisor once.
pub async fn lookup(base: &Url, token: &Secret) -> Result<MqttService, ServiceError> {
    crate::tls::install_crypto_provider();
    let url = base.join("services/mqtt").map_err(|_| ServiceError::BadUrl(base.to_string()))?;
    let mut authorization = header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .map_err(|_| ServiceError::MalformedToken)?;
    authorization.set_sensitive(true);
    // No redirects: the token must not follow one anywhere.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| ServiceError::Unreachable(e.to_string()))?;
    let mut response =
        client.get(url).header(header::AUTHORIZATION, authorization).send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(ServiceError::BadAnswer(format!("more than {MAX_ANSWER} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    interpret(status, &body)
}

/// A transport failure with its causes (reqwest's own text is only "error sending request").
fn unreachable(error: reqwest::Error) -> ServiceError {
    ServiceError::Unreachable(crate::http_error::describe(&error))
}

/// The service from the Supervisor's answer, or what its refusal means.
fn interpret(status: u16, body: &[u8]) -> Result<MqttService, ServiceError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    // `{"result":"error","message":…}` is the Supervisor's own refusal; anything else (aiohttp's plain text for
    // a token it does not know) comes from before the request reached the services API.
    let refusal = json
        .as_ref()
        .filter(|j| j.get("result").and_then(Value::as_str) == Some("error"))
        .map(|j| value_text(j.get("message")).unwrap_or_default());
    match (status, refusal) {
        (200, _) => service(json.as_ref()),
        (401, _) => Err(ServiceError::TokenRefused(401)),
        (403, Some(message)) => Err(ServiceError::NotGranted(message)),
        (403, None) => Err(ServiceError::TokenRefused(403)),
        (400, Some(message)) => Err(ServiceError::NoBroker(message)),
        (status, refusal) => Err(ServiceError::Unexpected {
            status,
            message: refusal.unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect()),
        }),
    }
}

/// `data` of an `ok` answer. Errors name the field, never its value (one is a password).
fn service(json: Option<&Value>) -> Result<MqttService, ServiceError> {
    let answer = json.ok_or_else(|| ServiceError::BadAnswer("not JSON".into()))?;
    if answer.get("result").and_then(Value::as_str) != Some("ok") {
        return Err(ServiceError::BadAnswer("no \"result\": \"ok\"".into()));
    }
    let data = answer.get("data").filter(|d| d.is_object()).ok_or_else(|| ServiceError::BadAnswer("no data".into()))?;
    let text = |field: &str| value_text(data.get(field)).map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    let host = text("host").ok_or_else(|| ServiceError::BadAnswer("no host".into()))?;
    let port = value_number(data.get("port"))
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| ServiceError::BadAnswer("no valid port".into()))?;
    Ok(MqttService {
        host,
        port,
        ssl: value_flag(data.get("ssl")).unwrap_or(false),
        username: text("username"),
        password: value_text(data.get("password")).map(Secret::new).filter(|p| !p.is_empty()),
        provider: text("addon").or_else(|| text("app")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ok_answer_is_the_service_with_port_as_number_or_text() {
        let body = br#"{"result":"ok","data":{"addon":"core_mosquitto","host":"core-mosquitto","port":1883,"ssl":false,"username":"addons","password":"pw","protocol":"3.1.1"}}"#;
        let service = interpret(200, body).unwrap();
        assert_eq!(service.url(), "mqtt://core-mosquitto:1883");
        assert_eq!(service.username.as_deref(), Some("addons"));
        assert_eq!(service.password.as_ref().map(Secret::expose), Some("pw"));
        assert_eq!(service.provider.as_deref(), Some("core_mosquitto"));
        let docs = br#"{"result":"ok","data":{"app":"awesome_mqtt","host":"172.0.0.17","port":"8883","ssl":true}}"#;
        let service = interpret(200, docs).unwrap();
        assert_eq!(service.url(), "mqtts://172.0.0.17:8883");
        assert_eq!(
            (service.username, service.password, service.provider.as_deref()),
            (None, None, Some("awesome_mqtt"))
        );
        let v6 = br#"{"result":"ok","data":{"host":"fd00::2","port":1883}}"#;
        assert_eq!(interpret(200, v6).unwrap().url(), "mqtt://[fd00::2]:1883");
    }

    #[test]
    fn refusals_say_what_is_missing() {
        let error = |message: &str| format!(r#"{{"result":"error","message":"{message}"}}"#).into_bytes();
        assert_eq!(interpret(403, b"403: Forbidden"), Err(ServiceError::TokenRefused(403)));
        assert_eq!(interpret(401, b"401: Unauthorized"), Err(ServiceError::TokenRefused(401)));
        let not_granted = interpret(403, &error("No access to mqtt service!"));
        assert_eq!(not_granted, Err(ServiceError::NotGranted("No access to mqtt service!".into())));
        assert_eq!(
            interpret(400, &error("Service not enabled")),
            Err(ServiceError::NoBroker("Service not enabled".into()))
        );
        let unexpected = interpret(502, b"Bad Gateway").unwrap_err();
        assert!(unexpected.is_transient() && !unexpected.is_setup_problem(), "{unexpected:?}");
        for setup in [ServiceError::TokenRefused(403), ServiceError::NoBroker(String::new()), ServiceError::NoToken] {
            assert!(setup.is_setup_problem() && !setup.is_transient(), "{setup:?}");
        }
    }

    #[test]
    fn a_bad_answer_names_the_field_but_never_the_password() {
        let body = br#"{"result":"ok","data":{"host":"h","port":"x","password":"hunter2"}}"#;
        let error = interpret(200, body).unwrap_err();
        assert_eq!(error, ServiceError::BadAnswer("no valid port".into()));
        assert!(!format!("{error} {error:?}").contains("hunter2"));
        assert!(matches!(interpret(200, br#"{"result":"ok","data":{"port":1}}"#), Err(ServiceError::BadAnswer(_))));
        assert!(matches!(interpret(200, b"<html>"), Err(ServiceError::BadAnswer(_))));
    }

    #[test]
    fn the_token_goes_to_the_supervisor_or_loopback_only() {
        assert_eq!(supervisor_url(None).unwrap().as_str(), "http://supervisor/");
        assert!(supervisor_url(Some("http://127.0.0.1:8123")).is_ok());
        assert!(supervisor_url(Some("http://localhost:1")).is_ok());
        for refused in ["http://supervisor.example", "https://example.com", "http://10.0.0.1", "supervisor"] {
            assert!(matches!(supervisor_url(Some(refused)), Err(ServiceError::BadUrl(_))), "{refused}");
        }
        assert_eq!(supervisor_token(Some(" \n".into())), Err(ServiceError::NoToken));
        assert_eq!(supervisor_token(None), Err(ServiceError::NoToken));
    }
}
