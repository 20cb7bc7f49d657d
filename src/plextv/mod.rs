//! plex.tv: getting a token (PIN login), finding the account's servers, and renewing a Plex JWT with the
//! device key (the protocol facts are in docs/plex-protocol.md, "plex.tv: getting and renewing a token").
//!
//! Every request carries the bridge's `X-Plex-*` client headers with the device's client identifier and
//! `Accept: application/json`; tokens travel only in the `X-Plex-Token` header, client JWTs only in bodies (and
//! as the `deviceJWT` query parameter where plex.tv's PIN poll wants it). Redirects are followed only within
//! the origin, like every request the bridge makes. plex.tv must be `https://` except on a loopback address
//! (tests), so a typo cannot send the token in clear text.

pub mod crypto;
pub mod device_key;
pub mod renew;
pub mod resources;
pub mod token;

use std::time::Duration;

use reqwest::{Client, Method, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::secret::Secret;
use device_key::{DeviceKey, PublicJwk};
use resources::Resource;

pub use crate::config::DEFAULT_PLEXTV_URL as DEFAULT_URL;

/// Why a plex.tv step failed. Texts never contain a token, a JWT or key material.
#[derive(Debug, thiserror::Error)]
pub enum PlexTvError {
    /// plex.tv (or what answers at its address) could not be reached.
    #[error("plex.tv unreachable: {0}")]
    Transport(String),
    /// plex.tv answered with an error status.
    #[error("plex.tv answered HTTP {status} to {what}")]
    Status { what: &'static str, status: u16 },
    /// plex.tv answered something unexpected.
    #[error("unexpected answer from plex.tv to {what}: {detail}")]
    Decode { what: &'static str, detail: String },
    /// The device key file is missing, damaged or cannot be used.
    #[error("{0}")]
    Key(String),
    /// A token from plex.tv did not pass verification (signature, issuer, expiry) or was refused by PMS.
    #[error("the new token {0}")]
    BadToken(String),
    /// A token file could not be written.
    #[error("{0}")]
    Write(String),
    /// The PIN expired before the user approved it.
    #[error("the PIN expired before it was approved; run login again and enter the code within its time")]
    PinExpired,
}

impl PlexTvError {
    /// A short word for logs, health and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PlexTvError::Transport(_) => "unreachable",
            PlexTvError::Status { status: 401 | 403, .. } => "refused",
            PlexTvError::Status { .. } => "http_status",
            PlexTvError::Decode { .. } => "bad_response",
            PlexTvError::Key(_) => "device_key",
            PlexTvError::Write(_) => "token_file",
            PlexTvError::BadToken(_) => "bad_token",
            PlexTvError::PinExpired => "pin_expired",
        }
    }
}

/// A PIN as plex.tv returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct Pin {
    pub id: u64,
    pub code: String,
    /// Seconds left (plex.tv counts this field in seconds: 1800 for a new pin).
    #[serde(default, rename = "expiresIn")]
    pub expires_in: Option<u64>,
    /// The token once approved (a [`Secret`], so no `Debug` of a PIN ever shows it).
    #[serde(default, rename = "authToken")]
    pub auth_token: Option<Secret>,
}

#[derive(Deserialize)]
struct Nonce {
    nonce: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    auth_token: String,
}

#[derive(Deserialize)]
struct Keys {
    keys: Vec<Value>,
}

/// A plex.tv client for one device identity.
#[derive(Clone, Debug)]
pub struct PlexTv {
    client: Client,
    base: Url,
    /// Each request, answer included, must finish within this.
    timeout: Duration,
}

impl PlexTv {
    /// A client for `base` (e.g. [`DEFAULT_URL`]) sending `client_identifier` and `device_name`.
    pub fn new(base: &Url, client_identifier: &str, device_name: &str, timeout: Duration) -> Result<Self, PlexTvError> {
        check_base(base)?;
        let tls = if base.scheme() == "https" {
            Some(
                crate::tls::client_config(&crate::tls::TlsOptions::default())
                    .map_err(|e| PlexTvError::Transport(format!("cannot set up TLS: {e}")))?,
            )
        } else {
            None
        };
        // The bridge's own client: the same `X-Plex-*` headers and same-origin redirect rule as every Plex request.
        let headers = crate::plex::client_headers_for(client_identifier, device_name);
        let client = crate::plex::http::build_client(headers, timeout, tls)
            .map_err(|e| PlexTvError::Transport(e.to_string()))?;
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(PlexTv { client, base, timeout })
    }

    /// `POST /api/v2/pins`: a new PIN, bound to `jwk` when given (then the approved PIN yields a Plex JWT and
    /// registers the key).
    pub async fn create_pin(&self, strong: bool, jwk: Option<&PublicJwk>) -> Result<Pin, PlexTvError> {
        let mut body = json!({ "strong": strong });
        if let Some(jwk) = jwk {
            body["jwk"] = serde_json::to_value(jwk).unwrap_or_default();
        }
        self.call("creating a PIN", Method::POST, "api/v2/pins", &[], None, Some(body)).await
    }

    /// `GET /api/v2/pins/<id>` (with the device's signed `deviceJWT` for a JWK pin). `Ok(None)`: the PIN is
    /// gone (expired), as plex.tv says with 404.
    pub async fn poll_pin(&self, id: u64, device_jwt: Option<&str>) -> Result<Option<Pin>, PlexTvError> {
        let query: Vec<(&str, &str)> = device_jwt.map(|jwt| ("deviceJWT", jwt)).into_iter().collect();
        match self.call("polling the PIN", Method::GET, &format!("api/v2/pins/{id}"), &query, None, None).await {
            Ok(pin) => Ok(Some(pin)),
            Err(PlexTvError::Status { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `GET /api/v2/resources`: the account's devices (servers and players).
    pub async fn resources(&self, token: &Secret) -> Result<Vec<Resource>, PlexTvError> {
        let query = [("includeHttps", "1"), ("includeRelay", "0")];
        let list: Vec<Value> =
            self.call("listing the servers", Method::GET, "api/v2/resources", &query, Some(token), None).await?;
        // One odd entry must not hide the others.
        Ok(list.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect())
    }

    /// `POST /api/v2/auth/jwk`: registers the device key with a valid token.
    pub async fn register_jwk(&self, token: &Secret, jwk: &PublicJwk) -> Result<(), PlexTvError> {
        let body = json!({ "jwk": jwk });
        let _: Value = self
            .call("registering the device key", Method::POST, "api/v2/auth/jwk", &[], Some(token), Some(body))
            .await?;
        Ok(())
    }

    /// A fresh client JWT: `GET /api/v2/auth/nonce`, signed with the device key.
    pub async fn signed_nonce(&self, key: &DeviceKey) -> Result<String, PlexTvError> {
        let nonce: Nonce = self.call("asking for a nonce", Method::GET, "api/v2/auth/nonce", &[], None, None).await?;
        key.client_jwt(&nonce.nonce)
    }

    /// The JWT exchange: nonce → signed client JWT → `POST /api/v2/auth/token` → a new Plex JWT.
    pub async fn exchange(&self, key: &DeviceKey) -> Result<Secret, PlexTvError> {
        let jwt = self.signed_nonce(key).await?;
        let answer: TokenAnswer = self
            .call(
                "exchanging the device JWT",
                Method::POST,
                "api/v2/auth/token",
                &[],
                None,
                Some(json!({ "jwt": jwt })),
            )
            .await?;
        Ok(Secret::new(answer.auth_token))
    }

    /// `GET /api/v2/auth/keys`: plex.tv's public keys (Ed25519 JWKs; others are skipped).
    pub async fn keys(&self) -> Result<Vec<PublicJwk>, PlexTvError> {
        let keys: Keys = self.call("reading plex.tv's keys", Method::GET, "api/v2/auth/keys", &[], None, None).await?;
        Ok(keys.keys.into_iter().filter_map(|k| serde_json::from_value::<PublicJwk>(k).ok()).collect())
    }

    /// Sends one request and decodes a JSON answer; bodies larger than 4 MiB are refused.
    async fn call<T: DeserializeOwned>(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        token: Option<&Secret>,
        body: Option<Value>,
    ) -> Result<T, PlexTvError> {
        const LIMIT: usize = 4 * 1024 * 1024;
        let mut url = self.base.join(path).map_err(|e| PlexTvError::Transport(format!("bad URL: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self.client.request(method, url).timeout(self.timeout);
        if let Some(token) = token {
            let (name, value) = crate::plex::token_header(token).map_err(|e| PlexTvError::Transport(e.to_string()))?;
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let mut response = request.send().await.map_err(|e| {
            // reqwest's text names the URL, which may carry a deviceJWT: say only what failed.
            PlexTvError::Transport(crate::plex::http::transport_error(e.without_url()).to_string())
        })?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(PlexTvError::Status { what, status });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| PlexTvError::Transport(e.without_url().to_string()))?
        {
            if bytes.len() + chunk.len() > LIMIT {
                return Err(PlexTvError::Decode { what, detail: "answer larger than 4 MiB".into() });
            }
            bytes.extend_from_slice(&chunk);
        }
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}".to_vec() } else { bytes };
        serde_json::from_slice(&bytes).map_err(|e| PlexTvError::Decode { what, detail: e.to_string() })
    }
}

/// plex.tv's URL must be `https://`, or `http://` on a loopback address (see [`crate::config::plextv_url_allowed`]).
pub fn check_base(base: &Url) -> Result<(), PlexTvError> {
    if crate::config::plextv_url_allowed(base) {
        Ok(())
    } else {
        Err(PlexTvError::Transport(format!(
            "{} is not an https:// URL; plex.tv carries the account token, so plain http is only allowed on loopback",
            crate::plex::redirect::origin(base)
        )))
    }
}
