//! REST calls to PMS with the client headers and the token.

use std::time::Duration;

use reqwest::{Client, Url};
use serde::Deserialize;

use super::{token_header, PlexError};
use crate::config::TokenSource;
use crate::lenient;
use crate::secret::Secret;

/// What the server says about itself (from `/`): the source of its topic name and of `<server>/info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIdentity {
    pub machine_identifier: String,
    pub friendly_name: String,
    pub version: String,
    pub platform: String,
}

#[derive(Deserialize)]
struct Root {
    #[serde(rename = "MediaContainer")]
    container: RootContainer,
}

#[derive(Deserialize)]
struct RootContainer {
    #[serde(default, rename = "machineIdentifier", deserialize_with = "lenient::opt_string")]
    machine_identifier: Option<String>,
    #[serde(default, rename = "friendlyName", deserialize_with = "lenient::opt_string")]
    friendly_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    version: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    platform: Option<String>,
}

/// A REST client for one server, holding where its token comes from: every request reads the token then (a
/// token file is read every time, so a rotated or renewed token is picked up without a restart).
#[derive(Clone, Debug)]
pub struct PlexHttp {
    client: Client,
    base: Url,
    token: TokenSource,
    request_timeout: Duration,
    /// Largest REST body read; larger ones fail without being read to the end (a hostile or broken server
    /// cannot make the bridge buffer a 200 MB or endless response).
    max_response_size: usize,
}

impl PlexHttp {
    /// `client` carries the client headers (see [`build_client`]); `base` is the server URL; `token` where the
    /// token is read from; every REST call must finish within `request_timeout`.
    pub fn new(client: Client, base: Url, token: TokenSource, request_timeout: Duration) -> Self {
        PlexHttp { client, base, token, request_timeout, max_response_size: usize::MAX }
    }

    /// The same client with another token (a renewed token is tried on the server before it is written).
    pub fn with_token(&self, token: Secret) -> Self {
        PlexHttp { token: TokenSource::Inline(token), ..self.clone() }
    }

    /// Reads the token now; a file that cannot be read becomes [`PlexError::TokenFile`] naming the file.
    pub fn token(&self) -> Result<Secret, PlexError> {
        super::read_token(&self.token)
    }

    /// Refuses REST responses larger than `bytes` (`plex.max_response_size`), reading no further.
    pub fn with_max_response_size(mut self, bytes: usize) -> Self {
        self.max_response_size = bytes;
        self
    }

    /// The client, for the EventSource transport (a stream has no overall timeout).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `GET /`: the identity, which also proves the token is accepted.
    pub async fn identity(&self) -> Result<ServerIdentity, PlexError> {
        let root: Root = self.get_json("/").await?;
        let c = root.container;
        let machine_identifier = c
            .machine_identifier
            .filter(|id| !id.is_empty())
            .ok_or_else(|| PlexError::Decode("`/` has no machineIdentifier; is this a Plex Media Server?".into()))?;
        Ok(ServerIdentity {
            friendly_name: c.friendly_name.unwrap_or_default(),
            version: c.version.unwrap_or_default(),
            platform: c.platform.unwrap_or_default(),
            machine_identifier,
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, PlexError> {
        let body = self.get_bytes(path).await?;
        serde_json::from_slice(&body).map_err(|e| PlexError::Decode(format!("{path}: {e}")))
    }

    /// `GET path` as JSON bytes, for the callers that parse leniently themselves (`/status/sessions`,
    /// `/activities`, `/library/metadata/<id>`).
    pub async fn get_bytes(&self, path: &str) -> Result<bytes::Bytes, PlexError> {
        self.get_bytes_limited(path, self.max_response_size).await
    }

    /// Like [`PlexHttp::get_bytes`], failing (without reading further) once the body passes `limit` bytes.
    pub async fn get_bytes_limited(&self, path: &str, limit: usize) -> Result<bytes::Bytes, PlexError> {
        let url = self.base.join(path).map_err(|e| PlexError::Transport(format!("bad URL: {e}")))?;
        let (name, value) = token_header(&self.token()?)?;
        let started = std::time::Instant::now();
        let response = self
            .client
            .get(url)
            .header(name, value)
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(PlexError::from_status(status.as_u16()));
        }
        let mut response = response;
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > limit {
                let path = path.split('?').next().unwrap_or(path).to_owned();
                return Err(PlexError::TooLarge { path, limit });
            }
            body.extend_from_slice(&chunk);
        }
        crate::telemetry::telemetry().rest_call(self.base.as_str(), path, started.elapsed());
        Ok(body.freeze())
    }
}

/// What PMS answered a request that acts: its status, whatever it is, and the start of its body.
#[derive(Debug, Clone)]
pub struct ActResponse {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl PlexHttp {
    /// A request that acts on the server (a command from MQTT): `method` on `path` (a fixed path the caller built
    /// from checked values, never text from a message) with `query` pairs (percent-encoded here) and extra
    /// `headers`. Any status is an answer, not an error; at most `limit` bytes of the body are kept.
    pub async fn act(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        headers: &[(&'static str, String)],
        limit: usize,
    ) -> Result<ActResponse, PlexError> {
        let mut url = self.base.join(path).map_err(|e| PlexError::Transport(format!("bad URL: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let (name, value) = token_header(&self.token()?)?;
        let mut request = self.client.request(method, url).header(name, value).timeout(self.request_timeout);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut response = request.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            let room = limit.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room < chunk.len() {
                break;
            }
        }
        Ok(ActResponse { status, body: body.freeze() })
    }
}

/// The shared HTTP client: client headers on every request, a connect timeout, and redirects followed only within
/// the origin a request was sent to (see [`super::redirect`]). There is no overall timeout here because the
/// EventSource stream lasts as long as the session; REST calls set their own.
pub fn build_client(
    headers: reqwest::header::HeaderMap,
    connect_timeout: Duration,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<Client, PlexError> {
    let mut builder =
        Client::builder().default_headers(headers).connect_timeout(connect_timeout).redirect(super::redirect::policy());
    if let Some(tls) = tls {
        builder = builder.use_preconfigured_tls((*tls).clone());
    }
    builder.build().map_err(|e| PlexError::Transport(format!("cannot build the HTTP client: {e}")))
}

/// A readable transport error. reqwest's text names the URL, which never holds the token; a refused redirect
/// becomes [`PlexError::RedirectRefused`], which names only the target's origin, and a socket the process had no
/// descriptor for [`PlexError::OutOfFileDescriptors`].
pub(crate) fn transport_error(error: reqwest::Error) -> PlexError {
    if let Some(io) = crate::fd_limit::exhausted_in(&error) {
        let origin = error.url().map(|url| url.origin().ascii_serialization()).unwrap_or_default();
        return PlexError::OutOfFileDescriptors(crate::fd_limit::describe(io, &format!("cannot connect to {origin}")));
    }
    if error.is_redirect() {
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            if let Some(refused) = cause.downcast_ref::<super::redirect::RedirectRefused>() {
                return PlexError::RedirectRefused(refused.clone());
            }
            if let Some(too_many) = cause.downcast_ref::<super::redirect::TooManyRedirects>() {
                return PlexError::Transport(too_many.to_string());
            }
            source = cause.source();
        }
    }
    PlexError::Transport(crate::http_error::describe(&error))
}
