//! Everything that talks to a Plex Media Server: REST look-ups, the notification transports, and decoding.

pub mod fields;
pub mod http;
pub mod notification;
pub mod redirect;
pub mod sessions;
pub mod sse;
pub mod sse_parser;
pub mod ws;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT};

use crate::config::{PlexConfig, TokenSource};
use crate::secret::Secret;

/// Why talking to PMS failed. Texts never contain the token: it travels only in a header.
#[derive(Debug, thiserror::Error)]
pub enum PlexError {
    /// 401/403: the token is wrong, expired, or not the server owner's.
    #[error("token rejected (HTTP {0}); the notification endpoints need the server owner's X-Plex-Token")]
    Unauthorized(u16),
    /// 404: the endpoint does not exist on this server.
    #[error("endpoint not found (HTTP 404)")]
    NotFound,
    /// The TCP connection worked but the WebSocket upgrade did not (closed or garbled during the handshake).
    #[error("{0}")]
    UpgradeRefused(String),
    /// Any other unexpected HTTP status.
    #[error("unexpected HTTP status {0}")]
    Status(u16),
    /// Connection, TLS, timeout or protocol failure.
    #[error("{0}")]
    Transport(String),
    /// The server answered something that is not what PMS sends.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// A redirect to another origin was not followed, so the token did not go there.
    #[error(transparent)]
    RedirectRefused(#[from] redirect::RedirectRefused),
    /// A REST response passed `plex.max_response_size`; it was not read further.
    #[error("{path}: response larger than {limit} bytes (plex.max_response_size); not read further")]
    TooLarge { path: String, limit: usize },
    /// The token file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    TokenFile { path: String, source: std::io::Error },
    /// The process (or the system) is out of file descriptors: what could not be opened, and the fix (see
    /// [`crate::fd_limit`]). Not a problem of the server, so it is never reported as one.
    #[error("{0}")]
    OutOfFileDescriptors(String),
}

impl PlexError {
    /// A short word for what went wrong, for `/healthz` (`reason`) and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            PlexError::Unauthorized(_) => "unauthorized",
            PlexError::NotFound | PlexError::Status(_) => "http_status",
            PlexError::UpgradeRefused(_) => "upgrade_refused",
            PlexError::Transport(_) => "connection_failed",
            PlexError::Decode(_) => "bad_response",
            PlexError::TooLarge { .. } => "response_too_large",
            PlexError::RedirectRefused(_) => "redirect_refused",
            PlexError::TokenFile { .. } => "token_file",
            PlexError::OutOfFileDescriptors(_) => "out_of_file_descriptors",
        }
    }

    /// Maps an HTTP status that is not a success.
    pub fn from_status(status: u16) -> Self {
        match status {
            401 | 403 => PlexError::Unauthorized(status),
            404 => PlexError::NotFound,
            other => PlexError::Status(other),
        }
    }
}

/// The `X-Plex-*` headers that identify the bridge as a client, sent on every request. Plex lists the bridge
/// under its devices with these, so the identifier must be stable.
pub fn client_headers(config: &PlexConfig) -> HeaderMap {
    client_headers_for(&config.client_identifier, &config.device_name)
}

/// [`client_headers`] for an identity given directly (`login`, before there is a configuration).
pub fn client_headers_for(client_identifier: &str, device_name: &str) -> HeaderMap {
    let version = env!("CARGO_PKG_VERSION");
    let pairs: [(&'static str, &str); 8] = [
        ("x-plex-client-identifier", client_identifier),
        ("x-plex-product", "plex-mqtt-bridge"),
        ("x-plex-version", version),
        ("x-plex-platform", std::env::consts::OS),
        ("x-plex-platform-version", std::env::consts::ARCH),
        ("x-plex-device", "plex-mqtt-bridge"),
        ("x-plex-device-name", device_name),
        ("x-plex-model", "bridge"),
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    headers
}

/// Reads the token now (a token file is read every time, so a rotated token is picked up); a file that cannot be
/// read becomes [`PlexError::TokenFile`] naming the file, or [`PlexError::OutOfFileDescriptors`] when the file
/// is fine but the process cannot open one more.
pub fn read_token(source: &TokenSource) -> Result<Secret, PlexError> {
    source.read().map_err(|error| {
        let path = match source {
            TokenSource::File(path) => path.display().to_string(),
            TokenSource::Inline(_) => String::new(),
        };
        if crate::fd_limit::is_exhausted(&error) {
            return PlexError::OutOfFileDescriptors(crate::fd_limit::describe(
                &error,
                &format!("cannot open the token file {path}"),
            ));
        }
        PlexError::TokenFile { path, source: error }
    })
}

/// The token as a header value marked sensitive, so `Debug` output of a request never shows it.
pub fn token_header(token: &Secret) -> Result<(HeaderName, HeaderValue), PlexError> {
    let mut value = HeaderValue::from_str(token.expose())
        .map_err(|_| PlexError::Transport("the token contains characters not allowed in a header".into()))?;
    value.set_sensitive(true);
    Ok((HeaderName::from_static("x-plex-token"), value))
}

impl PlexError {
    /// Whether the request never reached the server (no token to send, a refused redirect, no connection), so
    /// whatever it asked for certainly did not happen.
    pub fn never_reached_server(&self) -> bool {
        match self {
            PlexError::TokenFile { .. } | PlexError::RedirectRefused(_) | PlexError::OutOfFileDescriptors(_) => true,
            PlexError::Transport(text) => {
                text.starts_with(crate::http_error::CONNECT_FAILED) || text.starts_with("bad URL")
            }
            _ => false,
        }
    }

    /// Whether a failed WebSocket connection means "this server (or what is in front of it) does not do
    /// WebSocket", which makes `transport = "auto"` use EventSource: 404 on both paths, 400, 405, 426, or a
    /// handshake the server broke off.
    pub fn is_upgrade_refusal(&self) -> bool {
        matches!(self, PlexError::NotFound | PlexError::UpgradeRefused(_) | PlexError::Status(400 | 405 | 426 | 501))
    }
}

/// One message from either transport, before decoding.
#[derive(Debug, Clone, Copy)]
pub enum Incoming<'a> {
    /// A WebSocket text frame and the buffer that holds it (the same bytes), which the items share.
    Frame { text: &'a str, buffer: &'a bytes::Bytes },
    /// An EventSource event (not `ping`).
    Event { event: &'a str, data: &'a str },
}

impl Incoming<'_> {
    /// Decodes into the transport-neutral notification.
    pub fn decode(&self) -> Result<notification::Notification, notification::DecodeError> {
        match self {
            Incoming::Frame { text, buffer } => notification::decode_websocket_shared(text, buffer),
            Incoming::Event { event, data } => notification::decode_eventsource(event, data),
        }
    }

    /// The raw text, for log lines about a message that could not be decoded.
    pub fn text(&self) -> &str {
        match self {
            Incoming::Frame { text, .. } => text,
            Incoming::Event { data, .. } => data,
        }
    }
}

/// How a notification session ended (every end but `Shutdown` leads to a reconnect).
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The bridge is shutting down.
    Shutdown,
    /// The server closed the connection (PMS restart, network loss).
    Closed(String),
    /// Nothing arrived for longer than the idle timeout: no frame, no pong, no ping event.
    IdleTimeout,
    /// A protocol or I/O error, e.g. a WebSocket frame over the size limit.
    Error(String),
}

/// Where a notification session hands what it reads, and the gate that can pause it.
///
/// Backpressure: while what the messages feed (the MQTT publisher, the state task) is full, the session stops
/// reading, so TCP flow control holds the rest in the server's send buffer instead of the bridge dropping it.
/// The time spent waiting does not count against the link's liveness.
pub trait Forward {
    /// Takes one message as read from the socket (decoding is the receiver's business).
    fn forward(&mut self, incoming: Incoming<'_>);
    /// Whether the session must wait before reading the next message (cheap: called for every message).
    fn blocked(&self) -> bool;
    /// Resolves once there is room again.
    fn ready(&self) -> impl std::future::Future<Output = ()> + Send;
}

/// Waits at a blocked `gate` until it has room (true) or `cancel` fires (false); counted in `stats`. Callers
/// ask [`Forward::blocked`] first, because a wait also restarts their liveness timers.
pub async fn wait_for_room(
    gate: &impl Forward,
    cancel: &tokio_util::sync::CancellationToken,
    stats: &mut SessionStats,
) -> bool {
    stats.paused += 1;
    tokio::select! {
        () = gate.ready() => true,
        () = cancel.cancelled() => false,
    }
}

/// Counts of one session, for the logs.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionStats {
    /// Times reading stopped for backpressure.
    pub paused: u64,
    /// Notifications handed on (frames or events).
    pub messages: u64,
    /// Messages that carry nothing to forward: binary frames.
    pub ignored: u64,
    /// SSE `ping` events.
    pub pings: u64,
    /// SSE lines or events over the size limit, dropped.
    pub oversized: u64,
}
