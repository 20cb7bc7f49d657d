//! Wiring: the configuration becomes one MQTT connection, one supervisor per Plex server and the bridge-level
//! tasks (the bridge's own documents, the health endpoint, systemd reporting, token renewers); one shutdown
//! signal stops them in order.

pub mod bridge_info;
mod clients;
pub mod connection_slots;
pub mod http_endpoint;
mod renewers;
mod systemd;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::discovery::{Discovery, KnownServers};
use crate::mqtt::{self, CommandInbox, HomeAssistantLink};
use crate::plex::http::PlexHttp;
use crate::plex::{client_headers, PlexError};
use crate::server::supervisor::Supervisor;
use crate::server::Context;
use crate::telemetry::telemetry;
use crate::topic::BridgeTopics;
use bridge_info::BridgeInfo;

/// How long supervisors get to close their sessions and publish their last state on shutdown.
const SUPERVISOR_STOP: Duration = Duration::from_millis(500);
/// How long the publisher gets for `offline`, the last messages and DISCONNECT. With the above, well within the
/// 2 s a service manager is promised.
const PUBLISHER_STOP: Duration = Duration::from_millis(1200);

/// Why the bridge could not start (everything after start-up is retried, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Plex(#[from] PlexError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttSetupError),
    #[error("cannot listen on {addr} (http.listen): {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// Runs the bridge until `shutdown` fires, then stops in order: supervisors (each leaves its server state at
/// `disconnected`), then the publisher (`offline`, DISCONNECT).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), BridgeError> {
    crate::tls::install_crypto_provider();
    let bridge_topics = BridgeTopics::new(&config.mqtt.topic_prefix);
    let discovery = Discovery::new(&config.homeassistant.discovery_prefix, &config.mqtt.topic_prefix);
    let ha_link = HomeAssistantLink {
        status_topic: config.homeassistant.enabled.then(|| discovery.status_topic()),
        config_filter: discovery.config_filter(),
        own_config_prefix: discovery.own_config_prefix(),
    };
    let inbox = config.commands.enabled.then(|| CommandInbox::new(bridge_topics.prefix()));
    let (publisher, connection) = mqtt::start(&config.mqtt, &bridge_topics, ha_link, inbox.clone())?;
    // Remove discovery configs of servers no longer configured (or all of ours when discovery is off) once
    // the start-up read of the broker's retained topics is complete and every server's identity is known.
    let known_servers = KnownServers::new(config.servers.len());
    tokio::spawn(known_servers.clone().remove_stale(
        publisher.clone(),
        discovery.clone(),
        config.homeassistant.enabled,
    ));
    if config.homeassistant.enabled {
        let (topic, bridge_device) = discovery.bridge_config(&bridge_topics);
        publisher.retain(topic, bridge_device.to_string());
    }
    let health = telemetry().health().register(config.servers.iter().map(|s| s.key.clone()));
    let bridge_info = BridgeInfo::new(publisher.clone(), bridge_topics.clone());
    let context = Context {
        plex: Arc::new(config.plex.clone()),
        headers: client_headers(&config.plex),
        publisher: publisher.clone(),
        bridge_topics,
        discovery: config.homeassistant.enabled.then_some(discovery),
        known_servers,
        players: config.players.clone(),
        commands: inbox.map(|inbox| (config.commands.clone(), inbox)),
    };

    let stop_background = CancellationToken::new();
    if let Some(addr) = config.http.listen {
        let listener = http_endpoint::bind(addr).await.map_err(|source| BridgeError::Listen { addr, source })?;
        tracing::info!(%addr, "serving /healthz and /metrics");
        tokio::spawn(http_endpoint::serve(listener, stop_background.clone()));
    }
    tokio::spawn(systemd::report(publisher.broker_connected(), stop_background.clone()));
    tokio::spawn(bridge_info.run(stop_background.clone()));

    let stop_supervisors = CancellationToken::new();
    let mut supervisors = JoinSet::new();
    // Clients are shared (see `clients`): preparing every server costs one client build, not one each, so the
    // supervisors below start right away however many servers there are.
    let mut clients = clients::Clients::new(context.headers.clone(), config.plex.connect_timeout);
    let mut prepared = Vec::new();
    for (server, health) in config.servers.iter().zip(health) {
        let (tls, client) = clients.for_server(server)?;
        if tls.is_some() && server.tls.insecure_skip_verify {
            tracing::warn!(server = %server.url, "TLS certificate checks are OFF for this server (insecure_skip_verify): \
                anyone on the network path can impersonate it and read the token");
        }
        let http = PlexHttp::new(client, server.url.clone(), server.token.clone(), config.plex.request_timeout)
            .with_max_response_size(config.plex.max_response_size);
        prepared.push((server, tls, http, health));
    }
    tracing::debug!(clients = clients.len(), servers = prepared.len(), "HTTP clients built");
    let renewals = renewers::start(&config, &prepared, &stop_background);
    for (index, ((server, tls, http, health), token_renewal)) in prepared.into_iter().zip(renewals).enumerate() {
        let span = tracing::info_span!("server", server = %server.label(), url = %server.url);
        let supervisor =
            Supervisor { context: context.clone(), server: server.clone(), http, tls, index, health, token_renewal };
        supervisors.spawn(supervisor.run(stop_supervisors.clone()).instrument(span));
    }
    tracing::info!(servers = config.servers.len(), broker = %config.mqtt.url, prefix = %config.mqtt.topic_prefix, "bridge started");

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    crate::sd_notify::notify("STOPPING=1");
    stop_background.cancel();
    stop_supervisors.cancel();
    if tokio::time::timeout(SUPERVISOR_STOP, async { while supervisors.join_next().await.is_some() {} }).await.is_err()
    {
        tracing::warn!("some Plex sessions did not close in time");
        supervisors.abort_all();
    }
    connection.shutdown(PUBLISHER_STOP).await;
    let untracked_notifications = telemetry().untracked_total();
    tracing::info!(dropped_live_events = publisher.dropped(), untracked_notifications, "stopped");
    Ok(())
}
