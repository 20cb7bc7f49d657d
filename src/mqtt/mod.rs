//! The MQTT publisher on rumqttc: connection, last will, re-publishing retained state on every new session.
//!
//! Two tasks per broker connection, because rumqttc needs its `EventLoop` polled continuously and its
//! `publish().await` blocks while the request channel is full:
//! - the *driver* polls the event loop, backs off on errors (rumqttc has no backoff of its own), and tracks
//!   acknowledgements in the [`Outbox`];
//! - the *sender* moves messages from the outbox into the client while the broker is connected.
//!
//! Producers only touch the outbox through a [`Publisher`] handle and never block on the broker.

pub mod outbox;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Packet, PublishOptions, QoS, StateError,
    TlsConfiguration, Transport,
};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::MqttConfig;
use crate::model::router::Action;
use crate::model::topic::{BridgeTopics, CommandTopic};
use crate::mqtt::outbox::{Outbox, Outgoing};

/// Why the publisher could not be set up (everything after that is retried, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("invalid MQTT client settings: {0}")]
    Options(String),
}

/// A broker session that lasted this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Requests the event loop writes with one flush (rumqttc's default, 0, flushes after every PUBLISH: one
/// `writev` system call per message).
pub const REQUEST_BATCH: usize = 64;

/// Packets (PUBACKs, mostly) the event loop reads before it finishes a read batch (128 is the fork's most).
/// Finishing one walks every packet-id slot the client ever used (up to `mqtt.max_inflight`, to mark
/// in-flight PUBLISHes for its optional session store) and flushes; with the fork's adaptive size (16 while
/// requests are waiting) that walk was a tenth of the bridge's CPU under load (see BENCHMARKS.md). Reading
/// more per batch never waits: packets after the first are only taken when already buffered.
pub const READ_BATCH: usize = 128;

/// Room left in a packet for the fixed header, topic length and packet id.
const PACKET_OVERHEAD: usize = 16;
/// While the broker is connected, the live queue may hold this many times `mqtt.queue_size` before the oldest
/// event is dropped: readers stop reading from Plex once it is full ([`Publisher::live_backlogged`]), so only
/// the items of the frame being read when it filled can come on top (a frame is at most
/// `plex.max_message_size`).
const CONNECTED_OVERSHOOT: usize = 4;

/// A reader paused by backpressure reads again once the live queue is below this share of its capacity
/// (hysteresis, so it reads in batches rather than one message per freed slot).
fn room_again(capacity: usize) -> usize {
    capacity - capacity / 4
}

struct Shared {
    outbox: Mutex<Outbox>,
    /// Retained topics found on the broker at start-up (left by an earlier run: sessions, activities, players,
    /// server `info`, discovery configs) with their payloads, not yet claimed by the part that owns them.
    stale: Mutex<std::collections::BTreeMap<String, Bytes>>,
    scan_done: watch::Sender<bool>,
    wake: Notify,
    /// Signalled when the live queue drains below [`room_again`] while a reader waits ([`Publisher::live_room`]).
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

/// A cheap handle for the tasks that produce messages.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
    connected: watch::Receiver<bool>,
}

impl Publisher {
    /// Applies the router's actions in order.
    pub fn apply(&self, actions: impl IntoIterator<Item = Action>) {
        {
            let mut outbox = self.shared.outbox();
            let episode_before = outbox.overflow_episode();
            let mut dropped = 0u64;
            let limit = if *self.connected.borrow() {
                outbox.live_capacity().saturating_mul(CONNECTED_OVERSHOOT)
            } else {
                outbox.live_capacity()
            };
            for action in actions {
                match action {
                    Action::Live { topic, payload } => {
                        if self.fits(&topic, &payload) {
                            dropped += u64::from(outbox.push_live(topic, payload, limit));
                        }
                    }
                    Action::Retain { topic, payload } => {
                        if self.fits(&topic, &payload) {
                            outbox.retain(topic, payload);
                        }
                    }
                    Action::Clear { topic } => outbox.clear(topic),
                }
            }
            let full = outbox.live_len() >= outbox.live_capacity();
            if full != self.shared.live_full.load(std::sync::atomic::Ordering::Relaxed) {
                self.shared.live_full.store(full, std::sync::atomic::Ordering::Release);
            }
            if dropped > 0 {
                crate::telemetry::telemetry().dropped(dropped);
                // One warning per overflow episode; the sender logs its total when the queue has drained.
                if episode_before == 0 {
                    tracing::warn!(
                        dropped,
                        dropped_total = outbox.dropped(),
                        "live-event queue full (broker slow or unreachable): dropping the oldest live events"
                    );
                }
            }
        }
        self.shared.wake.notify_one();
    }

    /// Whether a reader of Plex should stop reading: the broker is connected (so waiting loses nothing) and the
    /// live queue is full. While the broker is unreachable readers go on and the oldest live events are dropped
    /// (counted), because waiting could last for ever.
    pub fn live_backlogged(&self) -> bool {
        self.shared.live_full.load(std::sync::atomic::Ordering::Acquire) && *self.connected.borrow()
    }

    /// Waits until the live queue has room again (below three quarters of its capacity) or the broker
    /// connection is lost.
    pub async fn live_room(&self) {
        let mut connected = self.connected.clone();
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            self.shared.room_wanted.store(true, std::sync::atomic::Ordering::Release);
            {
                let outbox = self.shared.outbox();
                if !*connected.borrow_and_update() || outbox.live_len() < room_again(outbox.live_capacity()) {
                    return;
                }
            }
            tokio::select! {
                () = &mut room => {}
                changed = connected.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Sets one retained topic.
    pub fn retain(&self, topic: String, payload: impl Into<Bytes>) {
        self.apply([Action::Retain { topic, payload: payload.into() }]);
    }

    /// Clears one retained topic.
    pub fn clear(&self, topic: String) {
        self.apply([Action::Clear { topic }]);
    }

    /// The payload the bridge holds for a retained topic now (`None` if unset or cleared).
    pub fn retained_payload(&self, topic: &str) -> Option<Bytes> {
        self.shared.outbox().retained_payload(topic).cloned()
    }

    /// Takes the retained topics under `prefix` that an earlier run left on the broker (read at start-up).
    pub fn take_stale(&self, prefix: &str) -> Vec<String> {
        self.take_stale_payloads(prefix).into_iter().map(|(topic, _)| topic).collect()
    }

    /// Like [`Publisher::take_stale`], with what an earlier run had published there.
    pub fn take_stale_payloads(&self, prefix: &str) -> Vec<(String, Bytes)> {
        let mut stale = self.shared.stale.lock().unwrap_or_else(|p| p.into_inner());
        let taken: Vec<String> =
            stale.range(prefix.to_owned()..).map(|(t, _)| t).take_while(|t| t.starts_with(prefix)).cloned().collect();
        taken.into_iter().filter_map(|topic| stale.remove_entry(&topic)).collect()
    }

    /// The leftover retained payloads whose topic `wanted` accepts, left in place.
    pub fn stale_payloads(&self, wanted: impl Fn(&str) -> bool) -> Vec<(String, Bytes)> {
        let stale = self.shared.stale.lock().unwrap_or_else(|p| p.into_inner());
        stale.iter().filter(|(topic, _)| wanted(topic)).map(|(t, p)| (t.clone(), p.clone())).collect()
    }

    /// Waits (at most `limit`) until the start-up read of leftover retained topics is complete; returns whether
    /// it is (it starts only once the broker is reached, so a caller that must not act on a partial picture
    /// tries again later when this says `false`).
    pub async fn stale_scan_done(&self, limit: Duration) -> bool {
        let mut done = self.shared.scan_done.subscribe();
        tokio::time::timeout(limit, done.wait_for(|d| *d)).await.is_ok_and(|r| r.is_ok())
    }

    /// Retained topics this bridge currently holds under `prefix`.
    pub fn retained_topics(&self, prefix: &str) -> Vec<String> {
        self.shared.outbox().retained_topics(prefix)
    }

    /// Whether the broker session is up now, as a watch (for readiness and health reporting).
    pub fn broker_connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Live events dropped so far (queue overflow and events lost with a broker connection).
    pub fn dropped(&self) -> u64 {
        self.shared.outbox().dropped()
    }

    fn fits(&self, topic: &str, payload: &Bytes) -> bool {
        // MQTT topics are at most 65,535 bytes; rumqttc would silently truncate the length field of a longer one.
        let fits = topic.len() <= usize::from(u16::MAX)
            && topic.len() + payload.len() + PACKET_OVERHEAD <= self.shared.max_packet_size;
        if !fits {
            crate::telemetry::telemetry().dropped(1);
            tracing::warn!(
                topic,
                bytes = payload.len(),
                limit = self.shared.max_packet_size,
                "message larger than mqtt.max_packet_size dropped"
            );
        }
        fits
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

/// Home Assistant settings the publisher needs: where HA announces itself (to re-send discovery), and which
/// config topics to read at start-up (to remove the bridge's own stale ones).
#[derive(Debug, Clone)]
pub struct HomeAssistantLink {
    /// `<discovery_prefix>/status`, subscribed when discovery is enabled.
    pub status_topic: Option<String>,
    /// `<discovery_prefix>/device/+/config`, read once at start-up.
    pub config_filter: String,
    /// The start of the bridge's own config topics: re-sent when Home Assistant comes online.
    pub own_config_prefix: String,
}

/// A message that arrived on a command topic, as the broker delivered it.
#[derive(Debug, Clone)]
pub struct InboundCommand {
    pub topic: String,
    /// The payload; empty when it is over [`crate::commands::verb::MAX_PAYLOAD`] (then only its size is passed
    /// on, for the refusal: an oversized message is never queued).
    pub payload: Bytes,
    /// The payload's size in bytes.
    pub size: usize,
    /// A stored retained message: never executed.
    pub retain: bool,
    /// QoS 1 packet id and DUP flag: a redelivery carries the same id with DUP set.
    pub pkid: u16,
    pub dup: bool,
}

/// Hands messages on the command topics (`[commands] enabled`) to each server's command task, by the server's
/// topic level. The publisher subscribes to [`CommandTopic::filters`] on every broker session; a server
/// registers once its topics are known. The mqtt layer only routes: what a command means is the command
/// task's business.
#[derive(Clone)]
pub struct CommandInbox {
    prefix: String,
    servers: Arc<Mutex<HashMap<String, tokio::sync::mpsc::Sender<InboundCommand>>>>,
}

impl CommandInbox {
    pub fn new(prefix: &str) -> Self {
        CommandInbox { prefix: prefix.to_owned(), servers: Arc::default() }
    }

    /// Routes commands for `server` (its topic level) to `tx` from now on.
    pub fn register(&self, server: &str, tx: tokio::sync::mpsc::Sender<InboundCommand>) {
        self.servers.lock().unwrap_or_else(|p| p.into_inner()).insert(server.to_owned(), tx);
    }

    /// Stops routing to `server`, if `tx` is still the one registered there (two servers may briefly claim the
    /// same topic name; one leaving must not cut the other off).
    pub fn unregister(&self, server: &str, tx: &tokio::sync::mpsc::Sender<InboundCommand>) {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if servers.get(server).is_some_and(|registered| registered.same_channel(tx)) {
            servers.remove(server);
        }
    }

    /// Whether `topic` is a command topic (then it is handed over, or dropped with a log line, never treated
    /// as anything else).
    fn deliver(&self, topic: &str, publish: &rumqttc::Publish) -> bool {
        let Some(parsed) = CommandTopic::parse(&self.prefix, topic) else { return false };
        if parsed.verb == crate::model::topic::COMMAND_RESULT && parsed.player.is_none() {
            return true; // our own results come back through the same filter
        }
        let tx = self.servers.lock().unwrap_or_else(|p| p.into_inner()).get(parsed.server).cloned();
        let Some(tx) = tx else {
            tracing::debug!(%topic, "command for a server this bridge does not know (or not yet); ignored");
            return true;
        };
        let size = publish.payload.len();
        let inbound = InboundCommand {
            topic: topic.to_owned(),
            payload: if size > crate::commands::verb::MAX_PAYLOAD { Bytes::new() } else { publish.payload.clone() },
            size,
            retain: publish.retain,
            pkid: publish.pkid,
            dup: publish.dup,
        };
        if tx.try_send(inbound).is_err() {
            tracing::warn!(%topic, "command queue full; command dropped without a result");
        }
        true
    }
}

/// What the driver listens to besides acknowledgements: Home Assistant's status, and the command topics.
struct Listeners {
    ha: HomeAssistantLink,
    commands: Option<CommandInbox>,
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
    let (client, mut eventloop) =
        AsyncClient::builder(options).capacity(64).try_build().map_err(|e| MqttSetupError::Options(e.to_string()))?;
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
    let publisher = Publisher { shared: shared.clone(), connected: connected_rx.clone() };
    publisher.retain(topics.state(), "online");

    let stop_sending = CancellationToken::new();
    let stop_driving = CancellationToken::new();
    let sender = tokio::spawn(send(client.clone(), shared.clone(), config.qos, connected_rx, stop_sending.clone()));
    let backoff = Backoff::new(Duration::from_millis(250), config.reconnect_max);
    let scan = StaleScan::new(client.clone(), topics.prefix(), &ha.config_filter);
    let listeners = Listeners { ha, commands };
    let driver = tokio::spawn(drive(eventloop, shared, connected_tx, backoff, scan, listeners, stop_driving.clone()));
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

/// Moves messages from the outbox into the client while connected. On stop it sends what is left (if
/// connected) and then DISCONNECT, which makes the driver return.
async fn send(
    client: AsyncClient,
    shared: Arc<Shared>,
    qos: QoS,
    mut connected: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    loop {
        if !*connected.borrow_and_update() {
            if stop.is_cancelled() {
                return;
            }
            tokio::select! {
                changed = connected.changed() => if changed.is_err() { return },
                () = stop.cancelled() => {}
            }
            continue;
        }
        let next = {
            let mut outbox = shared.outbox();
            let next = outbox.pop();
            if let Some(message) = &next {
                outbox.handed_over(message);
            }
            if shared.live_full.load(std::sync::atomic::Ordering::Relaxed) && outbox.live_len() < outbox.live_capacity()
            {
                shared.live_full.store(false, std::sync::atomic::Ordering::Release);
            }
            if outbox.live_len() < room_again(outbox.live_capacity())
                && shared.room_wanted.swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                shared.room.notify_waiters();
            }
            if let Some(dropped) = outbox.end_overflow_episode() {
                tracing::warn!(
                    dropped,
                    dropped_total = outbox.dropped(),
                    "live-event queue has room again; this many live events were dropped while it was full"
                );
            }
            next
        };
        match next {
            Some(Outgoing { topic, payload, retain }) => {
                if client.publish(topic, payload, PublishOptions::new(qos).retain(retain)).await.is_err() {
                    return; // the event loop is gone
                }
                crate::telemetry::telemetry().published();
            }
            None if stop.is_cancelled() => {
                let _ = client.disconnect().await;
                return;
            }
            None => {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = stop.cancelled() => {}
                    changed = connected.changed() => if changed.is_err() { return },
                }
            }
        }
    }
}

/// Polls the rumqttc event loop for the life of the bridge.
async fn drive(
    mut eventloop: EventLoop,
    shared: Arc<Shared>,
    connected: watch::Sender<bool>,
    mut backoff: Backoff,
    mut scan: StaleScan,
    listeners: Listeners,
    stop: CancellationToken,
) {
    let Listeners { ha, commands } = listeners;
    let broker = shared.broker.as_str();
    let mut outage_reported = false;
    let mut last_tls_error = String::new();
    // When the current broker session was accepted (CONNACK).
    let mut session_started: Option<tokio::time::Instant> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            () = tokio::time::sleep_until(scan.deadline.unwrap_or(far)), if scan.deadline.is_some() => {
                scan.finish(&shared);
                continue;
            }
            () = stop.cancelled() => return,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let dropped = {
                    let mut outbox = shared.outbox();
                    outbox.resend_all_retained();
                    outbox.dropped()
                };
                tracing::info!(dropped_live_events_total = dropped, "connected to the MQTT broker");
                outage_reported = false;
                last_tls_error.clear();
                // The backoff is reset only once a connection has lasted (below): a broker that accepts and
                // then drops every connection — another client taking over the client id, an ACL kick — must
                // not be reconnected to at the minimum delay for ever.
                session_started = Some(tokio::time::Instant::now());
                connected.send_replace(true);
                crate::telemetry::telemetry().broker(true);
                shared.wake.notify_one();
                scan.begin();
                // rumqttc does not subscribe again after a reconnect: do it on every new session.
                if let Some(status) = &ha.status_topic {
                    if client_subscribe(&scan.client, status).is_err() {
                        tracing::warn!(topic = %status, "cannot subscribe to Home Assistant's status topic");
                    }
                }
                if let Some(commands) = &commands {
                    for filter in CommandTopic::filters(&commands.prefix) {
                        if client_subscribe(&scan.client, &filter).is_err() {
                            tracing::warn!(%filter, "cannot subscribe to the command topics");
                        }
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => scan.subscribed(),
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let Ok(topic) = std::str::from_utf8(&publish.topic) else { continue };
                if commands.as_ref().is_some_and(|c| c.deliver(topic, &publish)) {
                    continue;
                }
                if ha.status_topic.as_deref() == Some(topic) {
                    if publish.payload.as_ref() == b"online" {
                        resend_discovery_soon(shared.clone(), ha.own_config_prefix.clone());
                    }
                } else if publish.retain && !publish.payload.is_empty() && scan.active() {
                    // Payloads are kept only for the bridge's own topics and configs (other integrations'
                    // configs are only ever listed, never read).
                    let own = topic.starts_with(&scan.own_topics) || topic.starts_with(&ha.own_config_prefix);
                    let payload = if own { publish.payload.clone() } else { Bytes::new() };
                    shared.stale.lock().unwrap_or_else(|p| p.into_inner()).insert(topic.to_owned(), payload);
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => shared.outbox().written(pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => shared.outbox().acknowledged(ack.pkid),
            Ok(Event::Incoming(Packet::PubComp(ack))) => shared.outbox().acknowledged(ack.pkid),
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                connected.send_replace(false);
                tracing::info!("disconnected from the MQTT broker");
                return;
            }
            Ok(_) => {}
            Err(error) => {
                connected.send_replace(false);
                let reason = describe(&error, broker);
                match session_started.take().map(|at| at.elapsed()) {
                    Some(lasted) if lasted >= STABLE_SESSION => backoff.reset(),
                    Some(lasted) => tracing::warn!(?lasted, %reason,
                        "the broker closed the connection soon after accepting it; if another client uses the same \
                         mqtt.client_id it takes the connection over each time (give each bridge its own id); \
                         reconnecting with growing delays"),
                    None => {}
                }
                let lost = shared.outbox().connection_lost();
                let telemetry = crate::telemetry::telemetry();
                telemetry.broker(false);
                telemetry.dropped(lost);
                telemetry.reconnect("mqtt", "", if outage_reported { "still_unreachable" } else { "connection_lost" });
                let delay = backoff.next_delay();
                // Logged as an error once per distinct cause: a certificate problem does not fix itself, and the
                // retries would repeat it.
                if matches!(error, ConnectionError::Tls(_)) && reason != last_tls_error {
                    tracing::error!(%broker, %reason, "MQTT TLS connection failed");
                    last_tls_error.clone_from(&reason);
                }
                if outage_reported {
                    tracing::debug!(%reason, retry_in = ?delay, "MQTT broker still unreachable");
                } else {
                    tracing::warn!(%reason, lost_live_events = lost, retry_in = ?delay, "MQTT broker connection lost");
                    outage_reported = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

/// A readable reason for a broker connection error (rumqttc's own texts are terse).
fn describe(error: &ConnectionError, broker: &str) -> String {
    match error {
        ConnectionError::Tls(tls) => crate::tls::describe_handshake_error(broker, tls),
        ConnectionError::ConnectionRefused(code) => {
            format!("broker refused the connection ({code:?}); check mqtt.username / mqtt.password")
        }
        // The fork reports a failed socket read as a "serialization/deserialization error"; what the user
        // needs to know is that the connection broke (a broker restart or crash, a network fault).
        ConnectionError::Io(io)
        | ConnectionError::MqttState(
            StateError::Io(io) | StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io)),
        ) => {
            format!("connection to the broker at {broker} failed: {io}")
        }
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            format!("the broker at {broker} closed the connection")
        }
        other => other.to_string(),
    }
}

/// The start-up read of retained topics an earlier run may have left (sessions, activities, players, server
/// `info`, discovery configs): subscribe, collect what the broker delivers as retained, unsubscribe. Each
/// server's resync then clears what is no longer true; a server that cannot be reached takes its last identity
/// from its `info`.
struct StaleScan {
    client: AsyncClient,
    /// `<p>/`: the bridge's own topics.
    own_topics: String,
    filters: Vec<String>,
    state: ScanState,
    deadline: Option<tokio::time::Instant>,
}

#[derive(PartialEq, Eq)]
enum ScanState {
    NotStarted,
    Subscribing,
    Collecting,
    Done,
}

fn client_subscribe(client: &AsyncClient, topic: &str) -> Result<(), rumqttc::ClientError> {
    client.try_subscribe(topic.to_owned(), QoS::AtLeastOnce)
}

/// Home Assistant came online (its birth message): send every discovery config again after a short random
/// delay, as Home Assistant recommends, so a restarted Home Assistant sees the entities at once.
fn resend_discovery_soon(shared: Arc<Shared>, prefix: String) {
    let jitter =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() % 300).unwrap_or(0);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100 + u64::from(jitter))).await;
        shared.outbox().resend_matching(&prefix);
        shared.wake.notify_one();
        tracing::debug!("Home Assistant came online: discovery sent again");
    });
}

/// How long retained messages may take to arrive after the subscription is confirmed.
const SCAN_SETTLE: Duration = Duration::from_millis(700);
/// The scan gives up after this long without confirmation (the broker may refuse the subscription).
const SCAN_LIMIT: Duration = Duration::from_secs(3);

impl StaleScan {
    fn new(client: AsyncClient, prefix: &str, discovery_filter: &str) -> Self {
        StaleScan {
            client,
            own_topics: format!("{prefix}/"),
            filters: vec![
                format!("{prefix}/+/sessions/+"),
                format!("{prefix}/+/activities/+"),
                format!("{prefix}/+/players/+"),
                format!("{prefix}/+/info"),
                discovery_filter.to_owned(),
            ],
            state: ScanState::NotStarted,
            deadline: None,
        }
    }

    fn active(&self) -> bool {
        matches!(self.state, ScanState::Subscribing | ScanState::Collecting)
    }

    /// On the first broker session only.
    fn begin(&mut self) {
        if self.state != ScanState::NotStarted {
            return;
        }
        let filters = self.filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        if self.client.try_subscribe_many(filters).is_err() {
            tracing::debug!("could not ask for leftover retained topics");
        }
        self.state = ScanState::Subscribing;
        self.deadline = Some(tokio::time::Instant::now() + SCAN_LIMIT);
    }

    fn subscribed(&mut self) {
        if self.state != ScanState::Subscribing {
            return;
        }
        // All filters went in one SUBSCRIBE, sent before any other: the first SUBACK is ours.
        self.state = ScanState::Collecting;
        self.deadline = Some(tokio::time::Instant::now() + SCAN_SETTLE);
    }

    fn finish(&mut self, shared: &Shared) {
        self.deadline = None;
        if self.active() {
            for filter in &self.filters {
                let _ = self.client.try_unsubscribe(filter.clone());
            }
        }
        self.state = ScanState::Done;
        let found = shared.stale.lock().unwrap_or_else(|p| p.into_inner()).len();
        tracing::debug!(found, "read leftover retained session/activity topics");
        shared.scan_done.send_replace(true);
    }
}
