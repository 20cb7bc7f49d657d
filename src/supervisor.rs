//! One supervisor per Plex server: identity look-up, the notification session, reconnects with backoff, and the
//! server's retained `state` and `info` topics.
//!
//! The supervisor never gives up: a PMS restart, a network outage or a rejected token are all states to show
//! and recover from, not reasons to exit. A rejected token is retried slowly (at the backoff cap) and the token
//! file is read again before every attempt, so a rotated token is picked up without a restart.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::bridge_info::BridgeInfo;
use crate::config::{PlexConfig, ServerConfig, TokenSource};
use crate::mqtt::Publisher;
use crate::plex::http::{PlexHttp, ServerIdentity};
use crate::plex::notification::decode_websocket;
use crate::plex::ws::{run_session, SessionEnd, SessionStats, WsEndpoint};
use crate::plex::PlexError;
use crate::router::route;
use crate::topic::{BridgeTopics, ServerName, ServerTopics};

/// The values of `<p>/<server>/state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Connecting,
    Connected,
    Disconnected,
    Unauthorized,
}

impl ServerState {
    /// The payload on the state topic.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Connecting => "connecting",
            ServerState::Connected => "connected",
            ServerState::Disconnected => "disconnected",
            ServerState::Unauthorized => "unauthorized",
        }
    }
}

/// Everything one supervisor needs.
pub struct Supervisor {
    pub server: ServerConfig,
    pub plex: Arc<PlexConfig>,
    pub http: PlexHttp,
    pub headers: HeaderMap,
    pub publisher: Publisher,
    pub bridge_topics: BridgeTopics,
    pub bridge_info: BridgeInfo,
    /// This server's position in the configuration (for `bridge/info`).
    pub index: usize,
}

/// What one connection attempt came to.
enum Attempt {
    Shutdown,
    Unauthorized(PlexError),
    Failed(PlexError),
    Ended {
        connected_for: Duration,
        end: SessionEnd,
    },
}

/// Per-server mutable state across attempts.
struct Session {
    name: Option<ServerName>,
    topics: Option<ServerTopics>,
    state: Option<ServerState>,
    endpoint: WsEndpoint,
    malformed: u64,
}

impl Supervisor {
    /// Runs until `cancel` fires, then leaves the state topic at `disconnected`.
    pub async fn run(self, cancel: CancellationToken) {
        let mut session = Session {
            name: self.server.name.as_deref().and_then(ServerName::configured),
            topics: None,
            state: None,
            endpoint: WsEndpoint::new(
                self.server.url.clone(),
                self.server.filters.as_deref(),
                self.plex.connect_timeout,
                self.plex.max_message_size,
            ),
            malformed: 0,
        };
        if let Some(name) = session.name.clone() {
            self.adopt_name(&mut session, name);
        }
        let mut backoff = Backoff::new(self.plex.backoff_min, self.plex.backoff_max);
        let mut unauthorized_reported = false;
        // `connecting` until the first session is up; after that, retries keep `disconnected` or `unauthorized`
        // so the topic changes only when something a user cares about changes.
        self.set_state(&mut session, ServerState::Connecting);
        loop {
            let attempt = self.attempt(&mut session, &cancel).await;
            let delay = match attempt {
                Attempt::Shutdown => break,
                Attempt::Unauthorized(error) => {
                    if !unauthorized_reported {
                        tracing::error!(%error, retry_every = ?backoff.max(),
                            "token rejected by the Plex server; fix the token (or its file), the bridge retries by itself");
                        unauthorized_reported = true;
                    } else {
                        tracing::debug!(%error, "token still rejected");
                    }
                    self.set_state(&mut session, ServerState::Unauthorized);
                    backoff.max()
                }
                Attempt::Failed(error) => {
                    self.set_state(&mut session, ServerState::Disconnected);
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, retry_in = ?delay, "cannot connect to the Plex server");
                    delay
                }
                Attempt::Ended { connected_for, end } => {
                    unauthorized_reported = false;
                    self.set_state(&mut session, ServerState::Disconnected);
                    if connected_for >= self.plex.stable_after {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(reason = ?end, connected_for = ?connected_for, retry_in = ?delay,
                        "Plex notification session ended; reconnecting");
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.cancelled() => break,
            }
        }
        self.set_state(&mut session, ServerState::Disconnected);
        tracing::debug!("supervisor stopped");
    }

    async fn attempt(&self, session: &mut Session, cancel: &CancellationToken) -> Attempt {
        let token = match self.server.token.read() {
            Ok(token) => token,
            Err(source) => {
                let path = match &self.server.token {
                    TokenSource::File(path) => path.display().to_string(),
                    TokenSource::Inline(_) => String::new(),
                };
                return Attempt::Failed(PlexError::TokenFile { path, source });
            }
        };
        let identity = tokio::select! {
            identity = self.http.identity(&token) => identity,
            () = cancel.cancelled() => return Attempt::Shutdown,
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(error @ PlexError::Unauthorized(_)) => return Attempt::Unauthorized(error),
            Err(error) => return Attempt::Failed(error),
        };
        if session.name.is_none() {
            let name = ServerName::derived(&identity.friendly_name, &identity.machine_identifier);
            tracing::info!(name = %name, friendly_name = %identity.friendly_name, "topic name taken from the server's friendlyName");
            self.adopt_name(session, name);
            self.set_state(session, ServerState::Connecting);
        }
        let connect = tokio::select! {
            stream = session.endpoint.connect(&self.headers, &token) => stream,
            () = cancel.cancelled() => return Attempt::Shutdown,
        };
        let stream = match connect {
            Ok(stream) => stream,
            Err(error @ PlexError::Unauthorized(_)) => return Attempt::Unauthorized(error),
            Err(error) => return Attempt::Failed(error),
        };
        self.publish_info(session, &identity, "websocket");
        self.set_state(session, ServerState::Connected);
        tracing::info!(version = %identity.version, path = session.endpoint.path(), "connected to Plex notifications over WebSocket");
        let started = Instant::now();
        let Some(topics) = session.topics.clone() else {
            return Attempt::Failed(PlexError::Transport("no topic name".into()));
        };
        let mut stats = SessionStats::default();
        let publisher = &self.publisher;
        let malformed = &mut session.malformed;
        let end = run_session(stream, self.plex.ping_interval, self.plex.idle_timeout, cancel, &mut stats, |text| {
            match decode_websocket(text) {
                Ok(notification) => publisher.apply(route(&topics, &notification)),
                Err(error) => {
                    *malformed += 1;
                    tracing::warn!(%error, bytes = text.len(), frame_start = %preview(text), malformed_total = *malformed,
                        "notification frame skipped");
                }
            }
        })
        .await;
        tracing::debug!(
            text_frames = stats.text_frames,
            binary_frames = stats.binary_frames,
            "session statistics"
        );
        if end == SessionEnd::Shutdown {
            return Attempt::Shutdown;
        }
        Attempt::Ended {
            connected_for: started.elapsed(),
            end,
        }
    }

    fn adopt_name(&self, session: &mut Session, name: ServerName) {
        session.topics = Some(self.bridge_topics.server(&name));
        self.bridge_info.set_server(self.index, name.as_str());
        session.name = Some(name);
    }

    fn set_state(&self, session: &mut Session, state: ServerState) {
        if session.state == Some(state) {
            return;
        }
        if let Some(topics) = &session.topics {
            self.publisher.retain(topics.state(), state.as_str());
            session.state = Some(state);
        }
    }

    fn publish_info(&self, session: &Session, identity: &ServerIdentity, transport: &str) {
        let Some(topics) = &session.topics else {
            return;
        };
        let info = serde_json::json!({
            "machine_identifier": identity.machine_identifier,
            "friendly_name": identity.friendly_name,
            "version": identity.version,
            "platform": identity.platform,
            "url": self.server.url.as_str().trim_end_matches('/'),
            "transport": transport,
        });
        self.publisher.retain(topics.info(), info.to_string());
    }
}

/// The first characters of a bad frame, for the log line (frames carry no secrets).
fn preview(text: &str) -> String {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].escape_debug().to_string()
}
