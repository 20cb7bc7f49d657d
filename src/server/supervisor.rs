//! One supervisor per Plex server: the reconnect loop. Each attempt looks the server up (`GET /`: identity and
//! token), opens the notification session and lets the forwarder carry it until it ends; the loop shows the
//! server's `state` and waits its backoff in between.
//!
//! The supervisor never gives up: a PMS restart, a network outage or a rejected token are all states to show
//! and recover from, not reasons to exit. A rejected token is retried slowly (at the backoff cap) and the token
//! file is read again before every attempt, so a rotated token is picked up without a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::announce::{Announcer, LastKnown};
use super::commands::ServerCommands;
use super::forwarder::Forwarder;
use super::state_task::{StateInput, StateTask, QUEUE};
use super::transport::Endpoints;
use super::Context;
use crate::backoff::Backoff;
use crate::command_verb::Verb;
use crate::config::ServerConfig;
use crate::plex::http::PlexHttp;
use crate::plex::{PlexError, SessionEnd, SessionStats};
use crate::plextv::renew::RenewalHandle;
use crate::telemetry::health::{ServerHealth, ServerState};
use crate::telemetry::telemetry;
use crate::topic::{ServerName, ServerTopics};

/// Everything one supervisor needs.
pub struct Supervisor {
    pub context: Context,
    pub server: ServerConfig,
    /// The server's REST client (it owns the token's source).
    pub http: PlexHttp,
    /// TLS for an `https://` server.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// This server's position in the configuration.
    pub index: usize,
    /// This server's record in the health registry.
    pub health: ServerHealth,
    /// The renewer of this server's token file (a Plex JWT with a device key), told about rejected tokens.
    pub token_renewal: Option<RenewalHandle>,
}

/// What one connection attempt came to.
enum Attempt {
    Shutdown,
    Unauthorized(PlexError),
    Failed(PlexError),
    Ended { connected_for: Duration, end: SessionEnd },
}

/// The server as this run knows it, across attempts.
struct Server {
    name: Option<ServerName>,
    topics: Option<ServerTopics>,
    /// The value on the state topic now.
    state: Option<ServerState>,
    endpoints: Endpoints,
    forwarder: Forwarder,
    announcer: Announcer,
    commands: ServerCommands,
}

impl Supervisor {
    /// Runs until `cancel` fires, then leaves the state topic at `disconnected`.
    pub async fn run(self, cancel: CancellationToken) {
        let (state_inputs, state_rx) = mpsc::channel(QUEUE);
        let context = &self.context;
        let commands = ServerCommands::new(context.clone(), self.http.clone());
        let state_task = StateTask {
            http: self.http.clone(),
            publisher: context.publisher.clone(),
            scrobble_percent: context.plex.scrobble_threshold,
            max_sessions: context.plex.max_sessions,
            resync_interval: context.plex.resync_interval,
            enrichment_wait: context.plex.enrichment_wait,
            players: context.players.clone(),
            discovery: context.discovery.clone(),
            bridge_topics: context.bridge_topics.clone(),
            player_commands: commands.allowed(|verb| verb.is_player()),
            webhook_compat: self.server.webhook_compat,
            health: self.health.clone(),
        };
        let state_cancel = cancel.child_token();
        let state_handle =
            tokio::spawn(tracing::Instrument::in_current_span(state_task.run(state_rx, state_cancel.clone())));
        let mut server = Server {
            name: None,
            topics: None,
            state: None,
            endpoints: Endpoints::new(&self.server, &context.plex, &self.http, self.tls.clone()),
            forwarder: Forwarder::new(context.publisher.clone(), state_inputs),
            announcer: Announcer::new(context.clone(), self.server.url.clone(), self.server.key.clone(), self.index),
            commands,
        };
        if let Some(name) = self.server.name.as_deref().and_then(ServerName::configured) {
            self.adopt_name(&mut server, name);
        }
        let mut backoff = Backoff::new(context.plex.backoff_min, context.plex.backoff_max);
        let mut unauthorized_reported = false;
        // A renewed token is worth trying at once (a rejected one waits the backoff cap otherwise).
        let mut renewal = self.token_renewal.clone().unwrap_or_default();
        // `connecting` until the first session is up; after that, retries keep `disconnected` or `unauthorized`
        // so the topic changes only when something a user cares about changes.
        self.set_state(&mut server, ServerState::Connecting);
        loop {
            renewal.mark_seen();
            let attempt = self.attempt(&mut server, &cancel).await;
            let delay = match attempt {
                Attempt::Shutdown => break,
                Attempt::Unauthorized(error) => {
                    self.failed("unauthorized", &error);
                    if !unauthorized_reported {
                        tracing::error!(%error, retry_every = ?backoff.max(),
                            "token rejected by the Plex server; fix the token (or its file), the bridge retries by itself");
                        unauthorized_reported = true;
                    } else {
                        tracing::debug!(%error, "token still rejected");
                    }
                    self.set_state(&mut server, ServerState::Unauthorized);
                    self.recall(&mut server, ServerState::Unauthorized).await;
                    if let Some(renewal) = &self.token_renewal {
                        renewal.rejected();
                    }
                    backoff.max()
                }
                Attempt::Failed(error) => {
                    self.failed("connect_failed", &error);
                    self.set_state(&mut server, ServerState::Disconnected);
                    self.recall(&mut server, ServerState::Disconnected).await;
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
                    telemetry().reconnect("plex", &self.health.label(), reason);
                    unauthorized_reported = false;
                    self.set_state(&mut server, ServerState::Disconnected);
                    if connected_for >= context.plex.stable_after {
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
        self.set_state(&mut server, ServerState::Disconnected);
        server.commands.stop();
        state_cancel.cancel();
        let _ = state_handle.await;
        tracing::debug!("supervisor stopped");
    }

    async fn attempt(&self, server: &mut Server, cancel: &CancellationToken) -> Attempt {
        let context = &self.context;
        let token = match self.http.token() {
            Ok(token) => token,
            Err(error) => return Attempt::Failed(error),
        };
        let identity = tokio::select! {
            identity = self.http.identity() => identity,
            () = cancel.cancelled() => return Attempt::Shutdown,
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(error @ PlexError::Unauthorized(_)) => return Attempt::Unauthorized(error),
            Err(error) => return Attempt::Failed(error),
        };
        if server.name.is_none() {
            let name = ServerName::derived(&identity.friendly_name, &identity.machine_identifier);
            tracing::info!(name = %name, friendly_name = %identity.friendly_name, "topic name taken from the server's friendlyName");
            self.adopt_name(server, name);
            self.set_state(server, ServerState::Connecting);
        }
        if !server.announcer.identified() {
            // The first announcement replaces what an earlier version left on the broker (see `announce`):
            // read it first (well under a second once the broker is reached; bounded).
            tokio::select! {
                _ = context.publisher.stale_scan_done(super::LEFTOVERS_WAIT) => {}
                () = cancel.cancelled() => return Attempt::Shutdown,
            }
        }
        let connect = tokio::select! {
            connected = server.endpoints.connect(&context.headers, &token) => connected,
            () = cancel.cancelled() => return Attempt::Shutdown,
        };
        let connected = match connect {
            Ok(connected) => connected,
            Err(error @ PlexError::Unauthorized(_)) => return Attempt::Unauthorized(error),
            Err(error) => return Attempt::Failed(error),
        };
        let transport = connected.transport();
        let (Some(name), Some(topics)) = (server.name.clone(), server.topics.clone()) else {
            return Attempt::Failed(PlexError::Transport("no topic name".into()));
        };
        server.announcer.publish_info(&topics, &identity, transport.as_str());
        let scan = !server.commands.allowed(|v| *v == Verb::LibraryScan).is_empty();
        tokio::select! {
            () = server.announcer.refresh_buttons(&self.http, scan) => {}
            () = cancel.cancelled() => return Attempt::Shutdown,
        }
        server.announcer.announce(&name, &topics, &identity);
        self.set_state(server, ServerState::Connected);
        self.health.set_problem(None);
        server.forwarder.connected(StateInput::Connected { topics, name, identity: identity.clone() });
        tracing::info!(version = %identity.version, transport = transport.as_str(), "connected to Plex notifications");
        let started = Instant::now();
        let mut stats = SessionStats::default();
        let end = connected.run(&context.plex, cancel, &mut stats, &mut server.forwarder).await;
        server.forwarder.session_ended();
        tracing::debug!(?stats, "session statistics");
        if end == SessionEnd::Shutdown {
            return Attempt::Shutdown;
        }
        Attempt::Ended { connected_for: started.elapsed(), end }
    }

    /// A failed attempt: counted, and its reason shown in `/healthz`.
    fn failed(&self, reason: &str, error: &PlexError) {
        telemetry().reconnect("plex", &self.health.label(), reason);
        self.health.set_problem(Some((error.reason(), error.to_string())));
    }

    /// The server's topic name is `name` from now on: its topics, command task, health record and counters.
    fn adopt_name(&self, server: &mut Server, name: ServerName) {
        let topics = self.context.bridge_topics.server(&name);
        server.commands.start(&topics);
        self.health.set_name(name.as_str());
        let counts = telemetry().notification_counts(name.as_str(), self.health.clone());
        server.forwarder.name(topics.clone(), counts);
        server.topics = Some(topics);
        server.name = Some(name);
    }

    /// Records the server's state (the health registry always; the retained state topic once the server has a
    /// topic name, and only when it changes).
    fn set_state(&self, server: &mut Server, state: ServerState) {
        telemetry().server_state(&self.health, state);
        if server.state == Some(state) {
            return;
        }
        if let Some(topics) = &server.topics {
            self.context.publisher.retain(topics.state(), state.as_str());
            server.state = Some(state);
        }
    }

    /// After a failed attempt of a server never identified in this run: announce it as an earlier run knew it
    /// (and show it `state`), or as a provisional device (see [`Announcer::recall`]).
    async fn recall(&self, server: &mut Server, state: ServerState) {
        let Some(LastKnown { name, identity, info_topic, info }) =
            server.announcer.recall(server.topics.as_ref(), server.name.as_ref()).await
        else {
            return;
        };
        tracing::info!(name = %name, machine_identifier = %identity.machine_identifier,
            "server not reachable; announcing it with the identity it had when last seen");
        if server.name.is_none() {
            self.adopt_name(server, name);
        }
        // Held by this run from now on, so it survives a broker restart.
        self.context.publisher.retain(info_topic, info);
        if let (Some(name), Some(topics)) = (server.name.clone(), server.topics.clone()) {
            server.announcer.announce(&name, &topics, &identity);
        }
        self.set_state(server, state);
    }
}
