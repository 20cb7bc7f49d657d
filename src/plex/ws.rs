//! The WebSocket transport: `GET /:/websockets/notifications` upgraded to a WebSocket, one JSON notification per
//! text frame.
//!
//! Real servers answer the plural path; Plex's published API description names the singular one, which some
//! servers answer with 404. [`WsEndpoint`] tries the plural path first, falls back to the singular one on 404 and
//! remembers what worked. Liveness: PMS does not document pinging clients, so the bridge pings and treats
//! silence longer than the idle timeout as a dead link.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::Url;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::redirect::MAX_REDIRECTS;
use super::{token_header, Incoming, PlexError, SessionEnd, SessionStats};
use crate::log_limit::LogLimiter;
use crate::secret::Secret;

/// The path every real client uses.
pub const PLURAL_PATH: &str = "/:/websockets/notifications";
/// The path of Plex's published API description.
pub const SINGULAR_PATH: &str = "/:/websocket/notifications";

/// What the socket reads at a time (tungstenite's default is 128 KiB, zero-filled when first read into: 25 MB for
/// 200 servers). Plex frames are a few hundred bytes to tens of kilobytes; a frame larger than this is read into
/// a buffer of its own length, so this bounds no frame, only the memory every idle server holds.
const READ_BUFFER: usize = 16 * 1024;

/// A byte stream the WebSocket runs over: plain TCP, or TLS for `https://` servers.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// An open notification socket.
pub type WsStream = WebSocketStream<Box<dyn Io>>;

/// How to reach the WebSocket endpoint of one server; remembers which path works.
#[derive(Debug, Clone)]
pub struct WsEndpoint {
    base: Url,
    filters: Option<String>,
    path: &'static str,
    connect_timeout: Duration,
    max_message_size: usize,
    /// TLS for `https://` servers.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl WsEndpoint {
    /// `filters` are joined into the `filters` query parameter (`None`: no parameter, the server's default).
    pub fn new(
        base: Url,
        filters: Option<&[String]>,
        connect_timeout: Duration,
        max_message_size: usize,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Self {
        WsEndpoint {
            base,
            filters: filters.map(encode_filters),
            path: PLURAL_PATH,
            connect_timeout,
            max_message_size,
            tls,
        }
    }

    /// Opens the socket: the remembered path first, the other spelling after a 404.
    pub async fn connect(&mut self, headers: &HeaderMap, token: &Secret) -> Result<WsStream, PlexError> {
        match self.connect_path(self.path, headers, token).await {
            Err(PlexError::NotFound) => {
                let other = if self.path == PLURAL_PATH { SINGULAR_PATH } else { PLURAL_PATH };
                tracing::debug!(
                    tried = self.path,
                    next = other,
                    "WebSocket path answered 404; trying the other spelling"
                );
                let stream = self.connect_path(other, headers, token).await?;
                tracing::info!(path = other, "using the WebSocket path this server answers");
                self.path = other;
                Ok(stream)
            }
            other => other,
        }
    }

    /// The URL of one path, with `filters` percent-encoded per entry (commas kept, as PMS expects them).
    pub fn url(&self, path: &str) -> Result<Url, PlexError> {
        let mut url = self.base.join(path).map_err(|e| PlexError::Transport(format!("bad URL: {e}")))?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).map_err(|()| PlexError::Transport("cannot build the WebSocket URL".into()))?;
        if let Some(filters) = &self.filters {
            url.set_query(Some(&format!("filters={filters}")));
        }
        Ok(url)
    }

    /// Opens the socket on `path`, following same-origin redirects of the upgrade (see [`super::redirect`]);
    /// a redirect to another origin is refused before anything is sent there.
    async fn connect_path(&self, path: &str, headers: &HeaderMap, token: &Secret) -> Result<WsStream, PlexError> {
        let mut url = self.url(path)?;
        for _ in 0..=MAX_REDIRECTS {
            match self.handshake(&url, headers, token).await? {
                Handshake::Open(stream) => return Ok(*stream),
                Handshake::Redirect(location) => {
                    let next = super::redirect::next_hop(&url, &location)?;
                    tracing::debug!(path = next.path(), "following a same-origin redirect of the WebSocket upgrade");
                    url = next;
                }
            }
        }
        Err(PlexError::Transport(super::redirect::TooManyRedirects.to_string()))
    }

    /// One upgrade request to `url`.
    async fn handshake(&self, url: &Url, headers: &HeaderMap, token: &Secret) -> Result<Handshake, PlexError> {
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = url.port_or_known_default().unwrap_or(32400);
        let secure = url.scheme() == "wss";
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| PlexError::Transport(format!("cannot build the WebSocket request: {e}")))?;
        request.headers_mut().extend(headers.clone());
        let (name, value) = token_header(token)?;
        request.headers_mut().insert(name, value);
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
            .read_buffer_size(READ_BUFFER);
        let handshake = async {
            let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| {
                let what = format!("connection to {host}:{port} failed");
                if crate::fd_limit::is_exhausted(&e) {
                    PlexError::OutOfFileDescriptors(crate::fd_limit::describe(&e, &what))
                } else {
                    PlexError::Transport(format!("{what}: {e}"))
                }
            })?;
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = if secure {
                let config = self
                    .tls
                    .clone()
                    .ok_or_else(|| PlexError::Transport("no TLS configuration for an https:// server".into()))?;
                Box::new(crate::tls::connect(config, &host, tcp).await.map_err(PlexError::Transport)?)
            } else {
                Box::new(tcp)
            };
            match tokio_tungstenite::client_async_with_config(request, io, Some(config)).await {
                Ok((stream, _response)) => Ok(Handshake::Open(Box::new(stream))),
                Err(error) => handshake_error(error),
            }
        };
        timeout(self.connect_timeout, handshake).await.map_err(|_| {
            PlexError::Transport(format!("WebSocket handshake timed out after {:?}", self.connect_timeout))
        })?
    }
}

/// What one upgrade request came to, short of an error.
enum Handshake {
    Open(Box<WsStream>),
    /// A 3xx answer and its `Location`, for [`super::redirect::next_hop`] to judge.
    Redirect(String),
}

/// The `filters` value: entries percent-encoded one by one and joined with literal commas, as PMS expects.
pub fn encode_filters(filters: &[String]) -> String {
    let encoded: Vec<String> =
        filters.iter().map(|entry| url::form_urlencoded::byte_serialize(entry.as_bytes()).collect()).collect();
    encoded.join(",")
}

fn handshake_error(error: tungstenite::Error) -> Result<Handshake, PlexError> {
    Err(match error {
        tungstenite::Error::Http(response) => {
            let location = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
            match location {
                Some(location) if response.status().is_redirection() => {
                    return Ok(Handshake::Redirect(location.into()))
                }
                _ => PlexError::from_status(response.status().as_u16()),
            }
        }
        // The server accepted the TCP connection but would not (or could not) speak WebSocket: a proxy or
        // firewall in between, or a server without the endpoint. `transport = "auto"` falls back on this.
        other @ (tungstenite::Error::Protocol(_)
        | tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Io(_)) => PlexError::UpgradeRefused(format!("WebSocket handshake failed: {other}")),
        other => PlexError::Transport(format!("WebSocket handshake failed: {other}")),
    })
}

/// Reads frames until the socket ends, handing each text frame to `forwarder`. Pings every `ping_interval`;
/// any frame (including a pong) proves the link alive.
pub async fn run_session(
    mut stream: WsStream,
    ping_interval: Duration,
    idle_timeout: Duration,
    cancel: &CancellationToken,
    stats: &mut SessionStats,
    forwarder: &mut impl super::Forward,
) -> SessionEnd {
    // A broken or hostile server decides how often this happens: one line per episode.
    let mut binary_log = LogLimiter::default();
    let mut last_seen = Instant::now();
    let idle = sleep_until(last_seen + idle_timeout);
    let ping = sleep_until(last_seen + ping_interval);
    // Made once: the loop runs once per frame, and a new cancellation future registers and drops a waiter.
    let cancelled = cancel.cancelled();
    tokio::pin!(idle, ping, cancelled);
    loop {
        if forwarder.blocked() {
            if !super::wait_for_room(forwarder, cancel, stats).await {
                let _ = timeout(Duration::from_millis(300), stream.close(None)).await;
                return SessionEnd::Shutdown;
            }
            // Paused by backpressure, not by a dead link: liveness starts over from here.
            last_seen = Instant::now();
            idle.as_mut().reset(last_seen + idle_timeout);
            ping.as_mut().reset(last_seen + ping_interval);
        }
        tokio::select! {
            biased;
            () = &mut cancelled => {
                let _ = timeout(Duration::from_millis(300), stream.close(None)).await;
                return SessionEnd::Shutdown;
            }
            frame = stream.next() => {
                last_seen = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        stats.messages += 1;
                        forwarder.forward(Incoming::Frame { text: text.as_str(), buffer: text.as_ref() });
                        // Frames already in tungstenite's buffer cost no I/O, so without this a fast server
                        // could keep this task busy long enough to overflow the state task's queue.
                        tokio::task::consume_budget().await;
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        stats.ignored += 1;
                        crate::log_limited!(binary_log, warn, bytes = bytes.len(),
                            "binary WebSocket frame ignored (PMS sends text frames)");
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default();
                        return SessionEnd::Closed(format!("server sent Close {reason}").trim().to_owned());
                    }
                    Some(Ok(_)) => {} // ping (answered by tungstenite), pong, raw frame
                    Some(Err(error)) => return SessionEnd::Error(error.to_string()),
                    None => return SessionEnd::Closed("connection closed".into()),
                }
            }
            () = &mut idle => {
                let deadline = last_seen + idle_timeout;
                if Instant::now() >= deadline {
                    return SessionEnd::IdleTimeout;
                }
                idle.as_mut().reset(deadline);
            }
            () = &mut ping => {
                ping.as_mut().reset(Instant::now() + ping_interval);
                let remaining = (last_seen + idle_timeout).saturating_duration_since(Instant::now());
                match timeout(remaining, stream.send(Message::Ping(Default::default()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => return SessionEnd::Error(format!("sending ping failed: {error}")),
                    Err(_) => return SessionEnd::IdleTimeout,
                }
            }
        }
    }
}
