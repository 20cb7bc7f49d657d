//! The EventSource (SSE) transport: `GET /:/eventsource/notifications` with `Accept: text/event-stream`.
//!
//! Each event names the notification type in `event:` and carries one object under the array key in `data:`;
//! [`Incoming::Event`] hands both on, and decoding turns them into the same notification a WebSocket frame
//! gives. PMS sends `event: ping` about every 10 s: pings (and any other bytes) keep the session alive, and
//! silence for twice the ping interval means the stream is dead.

use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Client, Response, Url};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::http::transport_error;
use super::sse_parser::{SseEvent, SseParser};
use super::{token_header, Incoming, PlexError, SessionEnd, SessionStats};
use crate::log_limit::LogLimiter;
use crate::secret::Secret;

/// The stream's path.
pub const PATH: &str = "/:/eventsource/notifications";

/// How to reach the EventSource endpoint of one server.
#[derive(Debug, Clone)]
pub struct SseEndpoint {
    client: Client,
    base: Url,
    filters: Option<String>,
    connect_timeout: Duration,
    max_event_bytes: usize,
}

impl SseEndpoint {
    /// `client` must carry the client headers and no overall timeout; `filters` as for the WebSocket.
    pub fn new(
        client: Client,
        base: Url,
        filters: Option<&[String]>,
        connect_timeout: Duration,
        max_event_bytes: usize,
    ) -> Self {
        let filters = filters.map(super::ws::encode_filters);
        SseEndpoint { client, base, filters, connect_timeout, max_event_bytes }
    }

    /// The stream's URL with the `filters` parameter.
    pub fn url(&self) -> Result<Url, PlexError> {
        let mut url = self.base.join(PATH).map_err(|e| PlexError::Transport(format!("bad URL: {e}")))?;
        if let Some(filters) = &self.filters {
            url.set_query(Some(&format!("filters={filters}")));
        }
        Ok(url)
    }

    /// Opens the stream and checks that it is one.
    pub async fn connect(&self, token: &Secret) -> Result<SseStream, PlexError> {
        let (name, value) = token_header(token)?;
        let request = self
            .client
            .get(self.url()?)
            .header(ACCEPT, HeaderValue::from_static("text/event-stream"))
            .header(name, value)
            .send();
        let response = timeout(self.connect_timeout, request)
            .await
            .map_err(|_| {
                PlexError::Transport(format!("EventSource request timed out after {:?}", self.connect_timeout))
            })?
            .map_err(transport_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(PlexError::from_status(status.as_u16()));
        }
        let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !content_type.trim_start().to_ascii_lowercase().starts_with("text/event-stream") {
            return Err(PlexError::Decode(format!(
                "EventSource endpoint answered with Content-Type {content_type:?}, not text/event-stream"
            )));
        }
        Ok(SseStream { response, parser: SseParser::new(self.max_event_bytes) })
    }
}

/// An open event stream.
pub struct SseStream {
    response: Response,
    parser: SseParser,
}

/// Reads the stream until it ends, handing each event except `ping` to `forwarder`.
pub async fn run_session(
    mut stream: SseStream,
    idle_timeout: Duration,
    cancel: &CancellationToken,
    stats: &mut SessionStats,
    forwarder: &mut impl super::Forward,
) -> SessionEnd {
    let mut events: Vec<SseEvent> = Vec::new();
    // A broken or hostile server decides how often this happens: one line per episode.
    let mut oversized_log = LogLimiter::default();
    let mut last_seen = Instant::now();
    let idle = sleep_until(last_seen + idle_timeout);
    // Made once: the loop runs once per chunk, and a new cancellation future registers and drops a waiter.
    let cancelled = cancel.cancelled();
    tokio::pin!(idle, cancelled);
    loop {
        tokio::select! {
            biased;
            () = &mut cancelled => return SessionEnd::Shutdown,
            chunk = stream.response.chunk() => {
                last_seen = Instant::now();
                let chunk = match chunk {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => return SessionEnd::Closed("server ended the event stream".into()),
                    Err(error) => return SessionEnd::Error(format!("reading the event stream failed: {error}")),
                };
                let oversized_before = stream.parser.oversized_dropped();
                stream.parser.push(&chunk, &mut events);
                let oversized = stream.parser.oversized_dropped() - oversized_before;
                if oversized > 0 {
                    stats.oversized += oversized;
                    crate::log_limited!(oversized_log, warn, dropped = oversized, total = stats.oversized,
                        "EventSource line or event over plex.max_message_size dropped; the stream goes on");
                }
                for event in events.drain(..) {
                    if event.event == "ping" {
                        stats.pings += 1;
                        continue;
                    }
                    // One chunk may hold many events: wait for room before each (see `Forward`).
                    if forwarder.blocked() {
                        if !super::wait_for_room(forwarder, cancel, stats).await {
                            return SessionEnd::Shutdown;
                        }
                        last_seen = Instant::now();
                        idle.as_mut().reset(last_seen + idle_timeout);
                    }
                    stats.messages += 1;
                    forwarder.forward(Incoming::Event { event: &event.event, data: &event.data });
                    // Yield now and then to the tasks this one feeds (see `ws::run_session`).
                    tokio::task::consume_budget().await;
                }
            }
            () = &mut idle => {
                let deadline = last_seen + idle_timeout;
                if Instant::now() >= deadline {
                    return SessionEnd::IdleTimeout;
                }
                idle.as_mut().reset(deadline);
            }
        }
    }
}
