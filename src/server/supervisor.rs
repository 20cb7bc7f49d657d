//! One supervisor per Plex server: identity look-up, the notification session, reconnects with backoff, and the
//! server's retained `state` and `info` topics.
//!
//! The supervisor never gives up: a PMS restart, a network outage or a rejected token are all states to show
//! and recover from, not reasons to exit. A rejected token is retried slowly (at the backoff cap) and the token
//! file is read again before every attempt, so a rotated token is picked up without a restart.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::bridge_info::BridgeInfo;
use crate::backoff::Backoff;
use crate::commands::verb::Verb;
use crate::commands::CommandTask;
use crate::config::{CommandsConfig, PlayersConfig, PlexConfig, ServerConfig, Transport};
use crate::discovery::{section_button_keys, Discovery, KnownServers, ServerButtons, ServerDevice};
use crate::model::router::route;
use crate::mqtt::{CommandInbox, InboundCommand, Publisher};
use crate::plex::http::{PlexHttp, ServerIdentity};
use crate::plex::sse::{self, SseEndpoint, SseStream};
use crate::plex::ws::{self, WsEndpoint, WsStream};
use crate::plex::{read_token, Incoming, PlexError, ReadGate, SessionEnd, SessionStats};
use crate::server::state_task::{StateInput, StateTask, QUEUE};
use crate::telemetry::{telemetry, NotificationCounts};
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
    /// TLS for an `https://` server.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Home Assistant discovery, when enabled.
    pub discovery: Option<Discovery>,
    /// Where this server's device id is reported once known (stale discovery clean-up waits for all of them).
    pub known_servers: KnownServers,
    /// This server's position in the configuration (for `bridge/info`).
    pub index: usize,
    pub players: PlayersConfig,
    /// Commands from MQTT (`[commands] enabled`): the settings and where the publisher routes them.
    pub commands: Option<(CommandsConfig, CommandInbox)>,
    /// The renewer of this server's token file (a Plex JWT with a device key), told about rejected tokens.
    pub token_renewal: Option<crate::plextv::renew::RenewalHandle>,
}

/// Notification types the state task follows.
const STATEFUL_KINDS: [&str; 3] = ["playing", "timeline", "activity"];

/// What one connection attempt came to.
enum Attempt {
    Shutdown,
    Unauthorized(PlexError),
    Failed(PlexError),
    Ended { connected_for: Duration, end: SessionEnd },
}

/// Per-server mutable state across attempts.
struct Session {
    name: Option<ServerName>,
    topics: Option<ServerTopics>,
    state: Option<ServerState>,
    websocket: WsEndpoint,
    eventsource: SseEndpoint,
    /// `transport = "auto"` found the WebSocket refused and uses EventSource until restart.
    fell_back: bool,
    malformed: u64,
    state_inputs: mpsc::Sender<StateInput>,
    state_dropped: u64,
    /// Kept across reconnects, so its bound on type series holds for the server, not per connection.
    counts: Option<NotificationCounts>,
    /// The server's identity is known (it answered, or an earlier run's retained `info` told it).
    identified: bool,
    /// The last identity was looked for in the broker's leftovers (done once, after the first failure).
    last_known_looked_up: bool,
    /// The config topic of the provisional device announced while the server was never identified.
    provisional: Option<String>,
    /// The running command task: the topic level it is registered under, its queue, and how to stop it.
    commands: Option<(String, mpsc::Sender<InboundCommand>, CancellationToken)>,
    /// The scan buttons of the server's device (sections read at every connect when scans are allowed).
    buttons: ServerButtons,
}

/// An open notification session on either transport.
enum Connected {
    WebSocket(WsStream),
    EventSource(SseStream),
}

impl Supervisor {
    /// Runs until `cancel` fires, then leaves the state topic at `disconnected`.
    pub async fn run(self, cancel: CancellationToken) {
        let (state_inputs, state_rx) = mpsc::channel(QUEUE);
        let state_task = StateTask {
            http: self.http.clone(),
            token: self.server.token.clone(),
            publisher: self.publisher.clone(),
            scrobble_percent: self.plex.scrobble_threshold,
            max_sessions: self.plex.max_sessions,
            resync_interval: self.plex.resync_interval,
            enrichment_wait: self.plex.enrichment_wait,
            players: self.players.clone(),
            discovery: self.discovery.clone(),
            bridge_topics: self.bridge_topics.clone(),
            player_commands: self.allowed(|verb| verb.is_player()),
            webhook_compat: self.server.webhook_compat,
        };
        let state_cancel = cancel.child_token();
        let state_handle =
            tokio::spawn(tracing::Instrument::in_current_span(state_task.run(state_rx, state_cancel.clone())));
        let mut session = Session {
            name: self.server.name.as_deref().and_then(ServerName::configured),
            topics: None,
            state: None,
            websocket: WsEndpoint::new(
                self.server.url.clone(),
                self.server.filters.as_deref(),
                self.plex.connect_timeout,
                self.plex.max_message_size,
                self.tls.clone(),
            ),
            eventsource: SseEndpoint::new(
                self.http.client().clone(),
                self.server.url.clone(),
                self.server.filters.as_deref(),
                self.plex.connect_timeout,
                self.plex.max_message_size,
            ),
            fell_back: false,
            malformed: 0,
            state_inputs,
            state_dropped: 0,
            counts: None,
            identified: false,
            last_known_looked_up: false,
            provisional: None,
            commands: None,
            buttons: ServerButtons::default(),
        };
        if let Some(name) = session.name.clone() {
            self.adopt_name(&mut session, name);
        }
        let mut backoff = Backoff::new(self.plex.backoff_min, self.plex.backoff_max);
        let mut unauthorized_reported = false;
        // A renewed token is worth trying at once (a rejected one waits the backoff cap otherwise).
        let mut renewal = self.token_renewal.clone().unwrap_or_default();
        // `connecting` until the first session is up; after that, retries keep `disconnected` or `unauthorized`
        // so the topic changes only when something a user cares about changes.
        self.set_state(&mut session, ServerState::Connecting);
        loop {
            renewal.mark_seen();
            let attempt = self.attempt(&mut session, &cancel).await;
            let delay = match attempt {
                Attempt::Shutdown => break,
                Attempt::Unauthorized(error) => {
                    telemetry().reconnect("plex", &self.label(&session), "unauthorized");
                    telemetry().server_problem(&self.label(&session), Some((error.reason(), error.to_string())));
                    if !unauthorized_reported {
                        tracing::error!(%error, retry_every = ?backoff.max(),
                            "token rejected by the Plex server; fix the token (or its file), the bridge retries by itself");
                        unauthorized_reported = true;
                    } else {
                        tracing::debug!(%error, "token still rejected");
                    }
                    self.set_state(&mut session, ServerState::Unauthorized);
                    self.announce_last_known(&mut session, ServerState::Unauthorized).await;
                    if let Some(renewal) = &self.token_renewal {
                        renewal.rejected();
                    }
                    backoff.max()
                }
                Attempt::Failed(error) => {
                    telemetry().reconnect("plex", &self.label(&session), "connect_failed");
                    telemetry().server_problem(&self.label(&session), Some((error.reason(), error.to_string())));
                    self.set_state(&mut session, ServerState::Disconnected);
                    self.announce_last_known(&mut session, ServerState::Disconnected).await;
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, retry_in = ?delay, "cannot connect to the Plex server");
                    delay
                }
                Attempt::Ended { connected_for, end } => {
                    let reason = match &end {
                        SessionEnd::Closed(_) => "closed",
                        SessionEnd::IdleTimeout => "idle_timeout",
                        _ => "error",
                    };
                    telemetry().reconnect("plex", &self.label(&session), reason);
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
                () = renewal.renewed() => tracing::debug!("token renewed; retrying now"),
                () = cancel.cancelled() => break,
            }
        }
        self.set_state(&mut session, ServerState::Disconnected);
        self.stop_commands(&mut session);
        state_cancel.cancel();
        let _ = state_handle.await;
        tracing::debug!("supervisor stopped");
    }

    async fn attempt(&self, session: &mut Session, cancel: &CancellationToken) -> Attempt {
        let token = match read_token(&self.server.token) {
            Ok(token) => token,
            Err(error) => return Attempt::Failed(error),
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
        if !session.identified {
            // The first announcement replaces what an earlier version left on the broker (see `announce`):
            // read it first (well under a second once the broker is reached; bounded).
            tokio::select! {
                _ = self.publisher.stale_scan_done(Duration::from_secs(3)) => {}
                () = cancel.cancelled() => return Attempt::Shutdown,
            }
        }
        let connect = tokio::select! {
            connected = self.connect(session, &token) => connected,
            () = cancel.cancelled() => return Attempt::Shutdown,
        };
        let connected = match connect {
            Ok(connected) => connected,
            Err(error @ PlexError::Unauthorized(_)) => return Attempt::Unauthorized(error),
            Err(error) => return Attempt::Failed(error),
        };
        let transport = match connected {
            Connected::WebSocket(_) => Transport::WebSocket,
            Connected::EventSource(_) => Transport::EventSource,
        };
        let Some(topics) = session.topics.clone() else {
            return Attempt::Failed(PlexError::Transport("no topic name".into()));
        };
        self.publish_info(session, &identity, transport.as_str());
        tokio::select! {
            () = self.refresh_buttons(session, &token) => {}
            () = cancel.cancelled() => return Attempt::Shutdown,
        }
        self.announce(session, &identity);
        self.set_state(session, ServerState::Connected);
        telemetry().server_problem(&self.label(session), None);
        if let Some(name) = session.name.clone() {
            let _ = session.state_inputs.try_send(StateInput::Connected {
                topics: topics.clone(),
                server: self.label(session),
                name,
                identity: identity.clone(),
            });
        }
        tracing::info!(version = %identity.version, transport = transport.as_str(), "connected to Plex notifications");
        let started = Instant::now();
        let mut stats = SessionStats::default();
        let publisher = &self.publisher;
        let label = self.label(session);
        let malformed = &mut session.malformed;
        let state_inputs = &session.state_inputs;
        let state_dropped = &mut session.state_dropped;
        let counts = match &mut session.counts {
            Some(counts) if counts.server() == label => counts,
            slot => slot.insert(telemetry().notification_counts(&label)),
        };
        let mut on_message = |incoming: Incoming<'_>| match incoming.decode() {
            Ok(notification) => {
                counts.count(&notification.kind);
                publisher.apply(route(&topics, &notification));
                if STATEFUL_KINDS.contains(&notification.kind.as_str()) {
                    if let Err(error) = state_inputs.try_send(StateInput::Notification(notification)) {
                        *state_dropped += 1;
                        telemetry().untracked();
                        if state_dropped.is_power_of_two() {
                            tracing::warn!(%error, dropped_total = *state_dropped,
                                "session/library tracking is behind; a notification was forwarded raw only");
                        }
                    }
                }
            }
            Err(error) => {
                *malformed += 1;
                let text = incoming.text();
                tracing::warn!(%error, bytes = text.len(), start = %preview(text), malformed_total = *malformed,
                    "notification skipped");
            }
        };
        let gate = Backpressure { publisher, state_inputs };
        let end = match connected {
            Connected::WebSocket(stream) => {
                ws::run_session(
                    stream,
                    self.plex.ping_interval,
                    self.plex.idle_timeout,
                    cancel,
                    &mut stats,
                    &gate,
                    &mut on_message,
                )
                .await
            }
            Connected::EventSource(stream) => {
                // PMS pings the stream every 10 s; two missed pings mean it is dead.
                sse::run_session(stream, self.plex.ping_interval * 2, cancel, &mut stats, &gate, &mut on_message).await
            }
        };
        tracing::debug!(?stats, "session statistics");
        if end == SessionEnd::Shutdown {
            return Attempt::Shutdown;
        }
        Attempt::Ended { connected_for: started.elapsed(), end }
    }

    /// Opens the configured transport; with `auto`, WebSocket until it is refused, then EventSource.
    async fn connect(&self, session: &mut Session, token: &crate::secret::Secret) -> Result<Connected, PlexError> {
        let websocket_first = match self.server.transport {
            Transport::WebSocket => true,
            Transport::EventSource => false,
            Transport::Auto => !session.fell_back,
        };
        if !websocket_first {
            return session.eventsource.connect(token).await.map(Connected::EventSource);
        }
        match session.websocket.connect(&self.headers, token).await {
            Ok(stream) => Ok(Connected::WebSocket(stream)),
            Err(error) if self.server.transport == Transport::Auto && error.is_upgrade_refusal() => {
                tracing::info!(reason = %error, "WebSocket refused by this server; using EventSource from now on");
                session.fell_back = true;
                session.eventsource.connect(token).await.map(Connected::EventSource)
            }
            Err(error) => Err(error),
        }
    }

    /// The name metrics and health use for this server: its topic name once known, else its config key.
    fn label(&self, session: &Session) -> String {
        session.name.as_ref().map_or_else(|| self.server.key.clone(), |n| n.as_str().to_owned())
    }

    fn adopt_name(&self, session: &mut Session, name: ServerName) {
        let topics = self.bridge_topics.server(&name);
        if session.commands.as_ref().is_none_or(|(segment, _, _)| segment != topics.server_segment()) {
            self.start_commands(session, &topics);
        }
        session.topics = Some(topics);
        if let Some(renewal) = &self.token_renewal {
            telemetry().server_token(name.as_str(), renewal.clone());
        }
        self.bridge_info.set_server(self.index, name.as_str());
        session.name = Some(name);
    }

    /// (Re)starts the command task under the server's topic level, when commands are enabled.
    fn start_commands(&self, session: &mut Session, topics: &ServerTopics) {
        let Some((config, inbox)) = &self.commands else { return };
        self.stop_commands(session);
        let (tx, rx) = mpsc::channel(crate::commands::QUEUE);
        let stop = CancellationToken::new();
        let task = CommandTask {
            config: config.clone(),
            http: self.http.clone(),
            token: self.server.token.clone(),
            topics: topics.clone(),
            prefix: self.bridge_topics.prefix().to_owned(),
            publisher: self.publisher.clone(),
        };
        tokio::spawn(tracing::Instrument::in_current_span(task.run(rx, stop.clone())));
        inbox.register(topics.server_segment(), tx.clone());
        tracing::info!(topics = %topics.server_command("#"), "listening for commands");
        session.commands = Some((topics.server_segment().to_owned(), tx, stop));
    }

    /// The allowed command verbs that `pick` selects (none when commands are off).
    fn allowed(&self, pick: impl Fn(&Verb) -> bool) -> Vec<Verb> {
        self.commands.as_ref().map(|(c, _)| c.allow.iter().copied().filter(|v| pick(v)).collect()).unwrap_or_default()
    }

    /// Reads the library sections for the scan buttons, when scans are allowed and discovery is on; a failed
    /// read keeps the last list.
    async fn refresh_buttons(&self, session: &mut Session, token: &crate::secret::Secret) {
        session.buttons.scan = !self.allowed(|v| *v == Verb::LibraryScan).is_empty();
        if !session.buttons.scan || self.discovery.is_none() {
            return;
        }
        let read = self.http.get_bytes_limited("/library/sections", token, crate::commands::MAX_ANSWER);
        match read.await {
            Ok(body) => {
                session.buttons.sections =
                    crate::commands::request::sections(&body).into_iter().map(|s| (s.key, s.title)).collect();
            }
            Err(error) => tracing::debug!(%error, "cannot read the library sections for the scan buttons"),
        }
    }

    fn stop_commands(&self, session: &mut Session) {
        if let (Some((segment, tx, stop)), Some((_, inbox))) = (session.commands.take(), &self.commands) {
            inbox.unregister(&segment, &tx);
            stop.cancel();
        }
    }

    fn set_state(&self, session: &mut Session, state: ServerState) {
        self.bridge_info.set_state(self.index, state.as_str());
        if session.state == Some(state) {
            return;
        }
        if let Some(topics) = &session.topics {
            self.publisher.retain(topics.state(), state.as_str());
            session.state = Some(state);
            telemetry().server_state(&self.label(session), state.as_str());
        }
    }

    /// The Home Assistant discovery config (retained; re-sent only when it changes, e.g. a new PMS version).
    fn announce(&self, session: &mut Session, identity: &ServerIdentity) {
        session.identified = true;
        let Some(discovery) = &self.discovery else { return };
        self.known_servers.set(self.index, discovery.server_device_id(&identity.machine_identifier));
        let (Some(name), Some(topics)) = (&session.name, &session.topics) else {
            return;
        };
        // Section buttons this device had (in this run, or in the config an earlier run left): removed unless
        // offered again.
        let config_topic = discovery.config_topic(&discovery.server_device_id(&identity.machine_identifier));
        for (_, payload) in self.publisher.stale_payloads(|t| t == config_topic) {
            let earlier = serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null);
            session.buttons.previous.extend(section_button_keys(&earlier));
        }
        session.buttons.previous.sort();
        session.buttons.previous.dedup();
        let device = ServerDevice { url: self.server.url.as_str(), name, identity, topics, buttons: &session.buttons };
        let (topic, config) = discovery.server_config(&device, &self.bridge_topics);
        session.buttons.previous = section_button_keys(&config);
        // Earlier versions announced this server under a URL-keyed id: if the broker still has that device,
        // remove it first, so Home Assistant frees the entity ids before the new device claims them (else
        // every entity would come back as `…_2`).
        let legacy = discovery.legacy_server_config_topic(self.server.url.as_str());
        if !self.publisher.stale_payloads(|t| t == legacy).is_empty() {
            self.publisher.clear(legacy);
        }
        self.publisher.retain(topic, config.to_string());
        if let Some(provisional) = session.provisional.take() {
            self.publisher.clear(provisional);
        }
    }

    /// After the first failed attempt of a server never identified in this run: announce it with the identity an
    /// earlier run left in its retained `info` (found by its configured name, else by its URL) and show it
    /// `state`, or — never seen at all — announce a provisional device, so Home Assistant has a "Connected: off"
    /// to alert on from the start.
    async fn announce_last_known(&self, session: &mut Session, state: ServerState) {
        if session.identified || session.last_known_looked_up {
            return;
        }
        if !self.publisher.stale_scan_done(Duration::from_secs(3)).await {
            return; // the broker's leftovers are not known yet: look at the next failure
        }
        session.last_known_looked_up = true;
        match self.last_known_identity(session) {
            Some((name, identity, info_topic, info)) => {
                tracing::info!(name = %name, machine_identifier = %identity.machine_identifier,
                    "server not reachable; announcing it with the identity it had when last seen");
                if session.name.is_none() {
                    self.adopt_name(session, name);
                }
                // Held by this run from now on, so it survives a broker restart.
                self.publisher.retain(info_topic, info);
                self.announce(session, &identity);
                self.set_state(session, state);
            }
            None => {
                let Some(discovery) = &self.discovery else { return };
                let display = session.name.as_ref().map(|n| n.as_str().to_owned()).unwrap_or_else(|| {
                    self.server.url.host_str().map_or_else(|| self.server.key.clone(), str::to_owned)
                });
                let (topic, config) = discovery.provisional_server_config(
                    self.server.url.as_str(),
                    &display,
                    self.index,
                    &self.bridge_topics,
                );
                self.publisher.retain(topic.clone(), config.to_string());
                session.provisional = Some(topic);
            }
        }
    }

    /// The identity in a retained `<p>/<server>/info` left by an earlier run for this server.
    fn last_known_identity(&self, session: &Session) -> Option<(ServerName, ServerIdentity, String, bytes::Bytes)> {
        let prefix = format!("{}/", self.bridge_topics.prefix());
        // The server's topic name in `<p>/<server>/info` (`<p>/bridge/info` is the bridge's own).
        let server_of = |topic: &str| -> Option<String> {
            let name = topic.strip_prefix(&prefix)?.strip_suffix("/info")?;
            (!name.contains('/') && name != "bridge").then(|| name.to_owned())
        };
        let own_url = self.server.url.as_str().trim_end_matches('/');
        let wanted_topic = session.topics.as_ref().map(ServerTopics::info);
        let candidates = self.publisher.stale_payloads(|topic| server_of(topic).is_some());
        candidates.into_iter().find_map(|(topic, payload)| {
            let info: serde_json::Value = serde_json::from_slice(&payload).ok()?;
            let matches = match &wanted_topic {
                Some(wanted) => *wanted == topic,
                None => info["url"].as_str() == Some(own_url),
            };
            let text = |key: &str| info[key].as_str().unwrap_or_default().to_owned();
            let identity = ServerIdentity {
                machine_identifier: text("machine_identifier"),
                friendly_name: text("friendly_name"),
                version: text("version"),
                platform: text("platform"),
            };
            if !matches || identity.machine_identifier.is_empty() {
                return None;
            }
            let name = ServerName::configured(&server_of(&topic)?)?;
            Some((name, identity, topic, payload))
        })
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

/// The session waits while the publisher's live queue is full with the broker connected, or the state task's
/// queue is full: the notification is then read when it can be handled, never dropped for being early.
struct Backpressure<'a> {
    publisher: &'a Publisher,
    state_inputs: &'a mpsc::Sender<StateInput>,
}

impl ReadGate for Backpressure<'_> {
    fn blocked(&self) -> bool {
        self.state_inputs.capacity() == 0 || self.publisher.live_backlogged()
    }

    async fn ready(&self) {
        self.publisher.live_room().await;
        // The session is the only sender, so room reserved here is still there when it sends.
        let _ = self.state_inputs.reserve().await;
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
