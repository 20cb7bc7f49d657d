//! Opening a server's notification session: the configured transport, or with `transport = "auto"` the
//! WebSocket until the server refuses it and EventSource from then on (until restart); and running the open
//! session until it ends.

use std::sync::Arc;

use reqwest::header::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::config::{PlexConfig, ServerConfig, Transport};
use crate::plex::http::PlexHttp;
use crate::plex::sse::{self, SseEndpoint, SseStream};
use crate::plex::ws::{self, WsEndpoint, WsStream};
use crate::plex::{Forward, PlexError, SessionEnd, SessionStats};
use crate::secret::Secret;

/// Both endpoints of one server and which of them to use.
pub struct Endpoints {
    transport: Transport,
    websocket: WsEndpoint,
    eventsource: SseEndpoint,
    /// `transport = "auto"` found the WebSocket refused and uses EventSource until restart.
    fell_back: bool,
}

/// An open notification session on either transport.
pub enum Connected {
    WebSocket(WsStream),
    EventSource(SseStream),
}

impl Endpoints {
    pub fn new(
        server: &ServerConfig,
        plex: &PlexConfig,
        http: &PlexHttp,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        let filters = server.filters.as_deref();
        Endpoints {
            transport: server.transport,
            websocket: WsEndpoint::new(server.url.clone(), filters, plex.connect_timeout, plex.max_message_size, tls),
            eventsource: SseEndpoint::new(
                http.client().clone(),
                server.url.clone(),
                filters,
                plex.connect_timeout,
                plex.max_message_size,
            ),
            fell_back: false,
        }
    }

    /// Opens the configured transport; with `auto`, WebSocket until it is refused, then EventSource.
    pub async fn connect(&mut self, headers: &HeaderMap, token: &Secret) -> Result<Connected, PlexError> {
        let websocket_first = match self.transport {
            Transport::WebSocket => true,
            Transport::EventSource => false,
            Transport::Auto => !self.fell_back,
        };
        if !websocket_first {
            return self.eventsource.connect(token).await.map(Connected::EventSource);
        }
        match self.websocket.connect(headers, token).await {
            Ok(stream) => Ok(Connected::WebSocket(stream)),
            Err(error) if self.transport == Transport::Auto && error.is_upgrade_refusal() => {
                tracing::info!(reason = %error, "WebSocket refused by this server; using EventSource from now on");
                self.fell_back = true;
                self.eventsource.connect(token).await.map(Connected::EventSource)
            }
            Err(error) => Err(error),
        }
    }
}

impl Connected {
    /// Which transport this is.
    pub fn transport(&self) -> Transport {
        match self {
            Connected::WebSocket(_) => Transport::WebSocket,
            Connected::EventSource(_) => Transport::EventSource,
        }
    }

    /// Reads the session until it ends, handing every notification to `forwarder`.
    pub async fn run(
        self,
        plex: &PlexConfig,
        cancel: &CancellationToken,
        stats: &mut SessionStats,
        forwarder: &mut impl Forward,
    ) -> SessionEnd {
        match self {
            Connected::WebSocket(stream) => {
                ws::run_session(stream, plex.ping_interval, plex.idle_timeout, cancel, stats, forwarder).await
            }
            // PMS pings the stream every 10 s; two missed pings mean it is dead.
            Connected::EventSource(stream) => {
                sse::run_session(stream, plex.ping_interval * 2, cancel, stats, forwarder).await
            }
        }
    }
}
