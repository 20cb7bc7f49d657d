//! Wiring: the publisher, one supervisor per server, and the orderly shutdown.

pub mod bridge_info;
pub mod http_endpoint;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::app::bridge_info::BridgeInfo;
use crate::config::{Config, ServerConfig, TokenSource};
use crate::discovery::{Discovery, KnownServers};
use crate::mqtt::{self, CommandInbox, HomeAssistantLink};
use crate::plex::http::{build_client, PlexHttp};
use crate::plex::{client_headers, PlexError};
use crate::plextv::renew::{RenewalHandle, Renewer};
use crate::server::supervisor::Supervisor;
use crate::topic::BridgeTopics;

/// How long supervisors get to close their sessions and publish their last state on shutdown.
const SUPERVISOR_STOP: Duration = Duration::from_millis(500);
/// How long the publisher gets for `offline`, the last messages and DISCONNECT. With the above, well within the
/// 2 s a service manager is promised.
const PUBLISHER_STOP: Duration = Duration::from_millis(1200);

/// Token renewal retries: the first failure is retried after about this long …
const RENEWAL_RETRY_MIN: Duration = Duration::from_secs(10);
/// … and the delay grows to at most this (a Plex JWT is renewed a day before it expires, so there is time).
const RENEWAL_RETRY_MAX: Duration = Duration::from_secs(3600);

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

/// Installs rustls' `ring` provider once per process (reqwest is built without a provider of its own, to keep
/// aws-lc out of the build).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs the bridge until `shutdown` fires, then stops in order: supervisors (each leaves its server state at
/// `disconnected`), then the publisher (`offline`, DISCONNECT).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), BridgeError> {
    install_crypto_provider();
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
    let bridge_info = BridgeInfo::new(
        publisher.clone(),
        bridge_topics.clone(),
        config.servers.iter().map(|s| s.key.clone()).collect(),
    );
    let headers = client_headers(&config.plex);
    let plex = Arc::new(config.plex.clone());

    let stop_background = CancellationToken::new();
    if let Some(addr) = config.http.listen {
        let listener =
            crate::app::http_endpoint::bind(addr).await.map_err(|source| BridgeError::Listen { addr, source })?;
        tracing::info!(%addr, "serving /healthz and /metrics");
        tokio::spawn(crate::app::http_endpoint::serve(listener, stop_background.clone()));
    }
    tokio::spawn(report_to_systemd(publisher.broker_connected(), stop_background.clone()));
    tokio::spawn(bridge_info.clone().refresh(stop_background.clone()));

    let stop_supervisors = CancellationToken::new();
    let mut supervisors = JoinSet::new();
    let mut prepared = Vec::new();
    for server in &config.servers {
        let tls = server.tls_config()?;
        if tls.is_some() && server.tls.insecure_skip_verify {
            tracing::warn!(server = %server.url, "TLS certificate checks are OFF for this server (insecure_skip_verify): \
                anyone on the network path can impersonate it and read the token");
        }
        let client = build_client(headers.clone(), config.plex.connect_timeout, tls.clone())?;
        let http = PlexHttp::new(client, server.url.clone(), config.plex.request_timeout)
            .with_max_response_size(config.plex.max_response_size);
        prepared.push((server, tls, http));
    }
    let renewals = start_renewers(&config, &prepared, &stop_background);
    for (index, (server, tls, http)) in prepared.into_iter().enumerate() {
        let span =
            tracing::info_span!("server", server = %server.name.as_deref().unwrap_or(&server.key), url = %server.url);
        let supervisor = Supervisor {
            http,
            server: server.clone(),
            plex: plex.clone(),
            headers: headers.clone(),
            publisher: publisher.clone(),
            bridge_topics: bridge_topics.clone(),
            bridge_info: bridge_info.clone(),
            discovery: config.homeassistant.enabled.then(|| discovery.clone()),
            known_servers: known_servers.clone(),
            tls,
            index,
            players: config.players.clone(),
            commands: inbox.clone().map(|inbox| (config.commands.clone(), inbox)),
            token_renewal: renewals.get(index).cloned().flatten(),
        };
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
    let untracked_notifications = crate::telemetry::telemetry().untracked_total();
    tracing::info!(dropped_live_events = publisher.dropped(), untracked_notifications, "stopped");
    Ok(())
}

/// One token renewer per token file (servers of one account usually share one); returns each server's handle
/// (`None` for an inline token: there is no file to renew into).
fn start_renewers(
    config: &Config,
    servers: &[(&ServerConfig, Option<Arc<rustls::ClientConfig>>, PlexHttp)],
    stop: &CancellationToken,
) -> Vec<Option<RenewalHandle>> {
    let mut by_file: Vec<(std::path::PathBuf, Vec<usize>)> = Vec::new();
    for (index, (server, _, _)) in servers.iter().enumerate() {
        if let TokenSource::File(path) = &server.token {
            let path = crate::config::resolve_credential(path);
            match by_file.iter_mut().find(|(p, _)| *p == path) {
                Some((_, users)) => users.push(index),
                None => by_file.push((path, vec![index])),
            }
        }
    }
    let mut handles = vec![None; servers.len()];
    for (token_file, users) in by_file {
        let renewer = Renewer {
            key_file: config.plex.device_key_for(&token_file),
            token_file,
            plextv_url: config.plex.plextv_url.clone(),
            device_name: config.plex.device_name.clone(),
            renew_before: config.plex.renew_before,
            request_timeout: config.plex.request_timeout,
            retry_min: RENEWAL_RETRY_MIN,
            retry_max: RENEWAL_RETRY_MAX,
            servers: users
                .iter()
                .map(|&i| (servers[i].0.name.clone().unwrap_or_else(|| servers[i].0.key.clone()), servers[i].2.clone()))
                .collect(),
        };
        let handle = renewer.spawn(stop.clone());
        for i in users {
            handles[i] = Some(handle.clone());
        }
    }
    handles
}

/// systemd `Type=notify`: READY once the broker is connected, STATUS with each part's state, WATCHDOG pings
/// from this task (so a stuck runtime stops them). Returns at once when not started by systemd.
async fn report_to_systemd(mut broker: tokio::sync::watch::Receiver<bool>, stop: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    tokio::select! {
        _ = broker.wait_for(|up| *up) => {}
        () = stop.cancelled() => return,
    }
    crate::sd_notify::notify("READY=1");
    let watchdog = crate::sd_notify::watchdog_interval();
    let mut tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(5)).min(Duration::from_secs(5)));
    let mut last_status = String::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if watchdog.is_some() {
            crate::sd_notify::notify("WATCHDOG=1");
        }
        let (_, health) = crate::telemetry::telemetry().health();
        let servers: Vec<String> = health["servers"]
            .as_object()
            .map(|s| s.iter().map(|(name, v)| format!("{name} {}", v["state"].as_str().unwrap_or("?"))).collect())
            .unwrap_or_default();
        let status = format!("broker {}; plex: {}", health["broker"].as_str().unwrap_or("?"), servers.join(", "));
        if status != last_status {
            crate::sd_notify::notify(&format!("STATUS={status}"));
            last_status = status;
        }
    }
}
