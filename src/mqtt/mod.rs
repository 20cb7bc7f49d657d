//! The MQTT side, one connection per broker on rumqttc. Files by job:
//! - [`publisher`]: the handle every producer uses; it never waits for the broker;
//! - [`outbox`]: what is still to be sent (retained state, the bounded live queue) and what the broker
//!   has acknowledged; [`answers`]: the bounded lane of answers to outsiders beside it;
//! - [`sender`]: moves messages from the outbox into the client while the broker is connected;
//! - [`driver`]: polls the client's event loop, reconnects with backoff, re-publishes retained state;
//!   [`diagnosis`] names why a connection was lost, from evidence;
//! - [`inbox`]: the subscriptions coming in (commands, Home Assistant's birth message);
//! - [`startup`]: the read of what an earlier run left retained on the broker.

pub mod answers;
pub mod diagnosis;
pub mod driver;
pub mod inbox;
pub mod outbox;
pub mod publisher;
pub mod sender;
pub mod startup;

pub use inbox::{command_queue, CommandInbox, CommandQueue, CommandReceiver, HomeAssistantLink, InboundCommand};
pub use publisher::Publisher;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, EventLoop, LastWill, MqttOptions, TlsConfiguration, Transport};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::MqttConfig;
use crate::topic::BridgeTopics;
use inbox::Listeners;
use outbox::Outbox;
use startup::StaleScan;

/// Why the publisher could not be set up (everything after that is retried, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("invalid MQTT client settings: {0}")]
    Options(String),
}

/// Requests the event loop writes with one flush (rumqttc's default, 0, flushes after every PUBLISH: one
/// `writev` system call per message).
pub const REQUEST_BATCH: usize = 64;

/// Packets (PUBACKs, mostly) the event loop reads before it finishes a read batch (128 is the fork's most).
/// Finishing one walks every packet-id slot the client ever used (up to `mqtt.max_inflight`, to mark
/// in-flight PUBLISHes for its optional session store) and flushes; with the fork's adaptive size (16 while
/// requests are waiting) that walk was a tenth of the bridge's CPU under load (see BENCHMARKS.md). Reading
/// more per batch never waits: packets after the first are only taken when already buffered.
pub const READ_BATCH: usize = 128;

/// What the publisher handle, the sender, the driver and the start-up scan share.
struct Shared {
    outbox: Mutex<Outbox>,
    /// Retained topics found on the broker at start-up (left by an earlier run: sessions, activities, players,
    /// server `info`, discovery configs) with their payloads, not yet claimed by the part that owns them.
    stale: Mutex<std::collections::BTreeMap<String, Bytes>>,
    scan_done: watch::Sender<bool>,
    wake: Notify,
    /// Signalled when the live queue drains below [`publisher::room_again`] while a reader waits ([`Publisher::live_room`]).
    room: Notify,
    /// A reader is waiting for room (so the sender signals `room`).
    room_wanted: std::sync::atomic::AtomicBool,
    /// Whether the live queue is full, kept by every change of it, so readers ask without taking the lock.
    live_full: std::sync::atomic::AtomicBool,
    max_packet_size: usize,
    /// `host:port`, for log lines.
    broker: String,
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // A panic while holding the lock leaves the outbox consistent (every method is a few field updates), so
        // a poisoned lock is used as is rather than taking the whole bridge down.
        self.outbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running connection; [`MqttConnection::shutdown`] ends it cleanly.
pub struct MqttConnection {
    client: AsyncClient,
    publisher: Publisher,
    topics: BridgeTopics,
    stop_sending: CancellationToken,
    stop_driving: CancellationToken,
    sender: JoinHandle<()>,
    driver: JoinHandle<()>,
}

/// Starts the publisher. `online` is set at once as retained state, so it is the first thing every new session
/// publishes; the last will says `offline` when the bridge vanishes without a clean shutdown.
pub fn start(
    config: &MqttConfig,
    topics: &BridgeTopics,
    ha: HomeAssistantLink,
    commands: Option<CommandInbox>,
) -> Result<(Publisher, MqttConnection), MqttSetupError> {
    let mut options = connect_options(config, &config.client_id)?;
    options
        .set_keep_alive(keep_alive_seconds(config.keep_alive))
        .set_clean_session(true)
        .set_max_packet_size(config.max_packet_size, config.max_packet_size)
        .set_inflight(config.max_inflight)
        .set_max_request_batch(REQUEST_BATCH)
        .set_read_batch_size(READ_BATCH)
        .set_last_will(LastWill::new(topics.state(), "offline", config.qos, true));
    let (client, mut eventloop) = build_client(options, 64)?;
    // Every message is a notification someone waits for: send it now rather than let Nagle's algorithm hold it
    // until the previous one is acknowledged.
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let shared = Arc::new(Shared {
        outbox: Mutex::new(Outbox::new(config.queue_size)),
        wake: Notify::new(),
        room: Notify::new(),
        room_wanted: std::sync::atomic::AtomicBool::new(false),
        live_full: std::sync::atomic::AtomicBool::new(false),
        max_packet_size: config.max_packet_size,
        broker: format!("{}:{}", config.host, config.port),
        stale: Default::default(),
        scan_done: watch::channel(false).0,
    });
    let (connected_tx, connected_rx) = watch::channel(false);
    let publisher = Publisher::new(shared.clone(), connected_rx.clone());
    publisher.retain(topics.state(), "online");

    let stop_sending = CancellationToken::new();
    let stop_driving = CancellationToken::new();
    let sender =
        tokio::spawn(sender::send(client.clone(), shared.clone(), config.qos, connected_rx, stop_sending.clone()));
    let backoff = Backoff::new(Duration::from_millis(250), config.reconnect_max);
    let scan = StaleScan::new(client.clone(), topics, &ha.config_filter, &ha.own_config_prefix);
    let listeners = Listeners::new(client.clone(), ha, commands);
    let driver =
        tokio::spawn(driver::drive(eventloop, shared, connected_tx, backoff, scan, listeners, stop_driving.clone()));
    let connection = MqttConnection {
        client,
        publisher: publisher.clone(),
        topics: topics.clone(),
        stop_sending,
        stop_driving,
        sender,
        driver,
    };
    Ok((publisher, connection))
}

/// The client and its event loop for `options`, with room for `capacity` requests; invalid options are an error,
/// not the panic of rumqttc's `build`.
pub fn build_client(options: MqttOptions, capacity: usize) -> Result<(AsyncClient, EventLoop), MqttSetupError> {
    AsyncClient::builder(options).capacity(capacity).try_build().map_err(|e| MqttSetupError::Options(e.to_string()))
}

/// Options to reach the broker as `client_id` with the configured credentials, over TLS (rustls, the
/// bridge's own verifier and crypto provider) for `mqtts://`.
pub fn connect_options(config: &MqttConfig, client_id: &str) -> Result<MqttOptions, MqttSetupError> {
    let mut options = MqttOptions::new(client_id, (config.host.clone(), config.port));
    if let Some(tls) = &config.tls {
        let tls_config = crate::tls::client_config(tls)?;
        options.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls_config)));
    }
    if let Some(username) = &config.username {
        let password = config.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default();
        options.set_credentials(username.clone(), password);
    }
    Ok(options)
}

/// MQTT's keep-alive is whole seconds in 16 bits (the config allows at least 1 s).
fn keep_alive_seconds(keep_alive: Duration) -> u16 {
    u16::try_from(keep_alive.as_secs().max(1)).unwrap_or(u16::MAX)
}

impl MqttConnection {
    /// Clean shutdown: `offline` (retained), everything still queued, then DISCONNECT, all within `deadline`.
    /// Call after the producers have stopped so their last state changes go out too.
    pub async fn shutdown(mut self, deadline: Duration) {
        self.publisher.retain(self.topics.state(), "offline");
        self.stop_sending.cancel();
        let finished = tokio::time::timeout(deadline, async {
            let _ = (&mut self.sender).await;
            let _ = (&mut self.driver).await;
        })
        .await;
        if finished.is_err() {
            tracing::warn!("broker did not confirm the clean disconnect in time; exiting anyway");
            self.stop_driving.cancel();
            self.sender.abort();
            self.driver.abort();
            let _ = self.client.try_disconnect();
        }
    }
}
