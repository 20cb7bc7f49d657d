//! What arrives from the broker besides acknowledgements: messages on the command topics, handed to each
//! server's command task, and Home Assistant's birth message, which makes the bridge announce its discovery
//! configs again. The subscriptions are made again on every broker session (rumqttc does not do it).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;

use super::Shared;
use crate::telemetry::telemetry;
use crate::topic::CommandTopic;

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
    /// The payload; empty when it is over [`crate::command_verb::MAX_PAYLOAD`] (then only its size is passed
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

/// One server's command queue, as the inbox fills it: where its commands go, and how many did not fit. A flood
/// costs a counter, never a log line or a result per message: the command task answers it with one coalesced
/// notice.
#[derive(Clone, Debug)]
pub struct CommandQueue {
    tx: mpsc::Sender<InboundCommand>,
    overflow: Arc<AtomicU64>,
}

/// The command task's end of its queue.
#[derive(Debug)]
pub struct CommandReceiver {
    rx: mpsc::Receiver<InboundCommand>,
    overflow: Arc<AtomicU64>,
}

/// A server's command queue holding at most `capacity` commands.
pub fn command_queue(capacity: usize) -> (CommandQueue, CommandReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let overflow = Arc::new(AtomicU64::new(0));
    (CommandQueue { tx, overflow: overflow.clone() }, CommandReceiver { rx, overflow })
}

impl CommandReceiver {
    /// The next command (`None` once the inbox dropped its end).
    pub async fn recv(&mut self) -> Option<InboundCommand> {
        self.rx.recv().await
    }

    /// Commands that found the queue full since the last call.
    pub fn take_overflow(&self) -> u64 {
        self.overflow.swap(0, Ordering::AcqRel)
    }
}

/// Hands messages on the command topics (`[commands] enabled`) to each server's command task, by the server's
/// topic level. The publisher subscribes to [`CommandTopic::filters`] on every broker session; a server
/// registers once its topics are known. The mqtt layer only routes: what a command means is the command
/// task's business.
#[derive(Clone)]
pub struct CommandInbox {
    prefix: String,
    servers: Arc<Mutex<HashMap<String, CommandQueue>>>,
    /// Topic levels of commands for servers this bridge does not serve, already logged (bounded).
    unknown_logged: Arc<Mutex<HashSet<String>>>,
}

/// Distinct unknown servers whose commands are logged; the rest are only counted.
const UNKNOWN_LOGGED: usize = 64;

impl CommandInbox {
    pub fn new(prefix: &str) -> Self {
        CommandInbox { prefix: prefix.to_owned(), servers: Arc::default(), unknown_logged: Arc::default() }
    }

    /// Routes commands for `server` (its topic level) to `queue` from now on.
    pub fn register(&self, server: &str, queue: CommandQueue) {
        self.servers.lock().unwrap_or_else(|p| p.into_inner()).insert(server.to_owned(), queue);
    }

    /// Stops routing to `server`, if `queue` is still the one registered there (two servers may briefly claim
    /// the same topic name; one leaving must not cut the other off).
    pub fn unregister(&self, server: &str, queue: &CommandQueue) {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if servers.get(server).is_some_and(|registered| registered.tx.same_channel(&queue.tx)) {
            servers.remove(server);
        }
    }

    /// Whether `topic` is a command topic (then it is handed over, or counted, never treated as anything else).
    fn deliver(&self, topic: &str, publish: &rumqttc::Publish) -> bool {
        let Some(parsed) = CommandTopic::parse(&self.prefix, topic) else { return false };
        if parsed.verb == crate::topic::COMMAND_RESULT && parsed.player.is_none() {
            return true; // our own results come back through the same filter
        }
        let queue = self.servers.lock().unwrap_or_else(|p| p.into_inner()).get(parsed.server).cloned();
        let Some(queue) = queue else {
            self.unknown_server(parsed.server);
            return true;
        };
        let size = publish.payload.len();
        let inbound = InboundCommand {
            topic: topic.to_owned(),
            payload: if size > crate::command_verb::MAX_PAYLOAD { Bytes::new() } else { publish.payload.clone() },
            size,
            retain: publish.retain,
            pkid: publish.pkid,
            dup: publish.dup,
        };
        if queue.tx.try_send(inbound).is_err() {
            queue.overflow.fetch_add(1, Ordering::AcqRel);
        }
        true
    }

    /// A command for a server this bridge does not serve (not configured, or its topic name not known yet): no
    /// result is published, because the bridge publishes only under its own servers' topics; counted, and logged
    /// once per topic level.
    fn unknown_server(&self, server: &str) {
        telemetry().commands("unknown_server", 1);
        let mut logged = self.unknown_logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.len() < UNKNOWN_LOGGED && logged.insert(server.to_owned()) {
            tracing::warn!(
                server,
                "command for a server this bridge does not serve (or not yet): ignored, no result \
                published; check the topic's server level against the bridge's server names"
            );
        }
    }
}

/// What the driver listens to besides acknowledgements: Home Assistant's status, and the command topics.
pub(super) struct Listeners {
    client: AsyncClient,
    ha: HomeAssistantLink,
    commands: Option<CommandInbox>,
    /// When discovery is to be sent again after Home Assistant's birth message (several births in a row are
    /// answered once).
    resend_at: Option<tokio::time::Instant>,
}

impl Listeners {
    pub(super) fn new(client: AsyncClient, ha: HomeAssistantLink, commands: Option<CommandInbox>) -> Self {
        Listeners { client, ha, commands, resend_at: None }
    }

    /// Subscribes again on a new broker session (rumqttc does not do it after a reconnect).
    pub(super) fn subscribe(&self) {
        if let Some(status) = &self.ha.status_topic {
            if self.client.try_subscribe(status.clone(), QoS::AtLeastOnce).is_err() {
                tracing::warn!(topic = %status, "cannot subscribe to Home Assistant's status topic");
            }
        }
        if let Some(commands) = &self.commands {
            for filter in CommandTopic::filters(&commands.prefix) {
                if self.client.try_subscribe(filter.clone(), QoS::AtLeastOnce).is_err() {
                    tracing::warn!(%filter, "cannot subscribe to the command topics");
                }
            }
        }
    }

    /// Takes a message on a subscribed topic; false when it is none of the inbox's (then it belongs to the
    /// start-up scan).
    pub(super) fn take(&mut self, topic: &str, publish: &rumqttc::Publish) -> bool {
        if self.commands.as_ref().is_some_and(|c| c.deliver(topic, publish)) {
            return true;
        }
        if self.ha.status_topic.as_deref() != Some(topic) {
            return false;
        }
        // Home Assistant came online (its birth message): send every discovery config again after a short
        // random delay, as Home Assistant recommends, so a restarted Home Assistant sees the entities at once.
        if publish.payload.as_ref() == b"online" && self.resend_at.is_none() {
            // Between BIRTH_DELAY and twice that: the first delay of the project's jittered backoff.
            let delay = crate::backoff::Backoff::new(BIRTH_DELAY, 2 * BIRTH_DELAY).next_delay();
            self.resend_at = Some(tokio::time::Instant::now() + delay);
        }
        true
    }

    /// When the answer to Home Assistant's birth is due, if one is.
    pub(super) fn resend_due(&self) -> Option<tokio::time::Instant> {
        self.resend_at
    }

    /// Sends every discovery config of the bridge again (the answer to Home Assistant's birth).
    pub(super) fn resend_discovery(&mut self, shared: &Shared) {
        self.resend_at = None;
        shared.outbox().resend_matching(&self.ha.own_config_prefix);
        shared.wake.notify_one();
        tracing::debug!("Home Assistant came online: discovery sent again");
    }
}

/// The shortest wait before answering Home Assistant's birth message; jitter adds up to as much again.
const BIRTH_DELAY: Duration = Duration::from_millis(150);
