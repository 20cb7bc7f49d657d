//! An MQTT probe (a subscriber that records everything it receives) and helpers built on it.
//!
//! Note on the retain flag (MQTT 3.1.1, which rumqttc's v4 client speaks): a broker sets `retain` only on
//! messages it delivers *because of a new subscription* (stored retained messages). A message forwarded live
//! to an existing subscriber arrives with `retain == false` even when the publisher set it. To check that a
//! topic is retained, use [`retained`], which subscribes afresh.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest packet the probe sends or accepts (both directions).
pub const MAX_PACKET: usize = 64 * 1024 * 1024;
/// How long [`Probe::subscribe`] waits for the broker's SubAck.
const SUBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed connection attempt before rumqttc tries again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// How long a dropped probe keeps its event loop alive to send DISCONNECT.
const DISCONNECT_GRACE: Duration = Duration::from_millis(500);

/// One PUBLISH the probe received.
#[derive(Clone, PartialEq, Eq)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    /// See the module docs: true only for stored retained messages sent on subscription.
    pub retain: bool,
    pub qos: QoS,
}

impl Msg {
    /// The payload as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The payload parsed as JSON; panics with the message if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| panic!("payload of {self:?} is not JSON: {e}"))
    }

    /// An empty payload (a cleared retained topic).
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 300;
        let text = self.text();
        let shown: String = text.chars().take(MAX).collect();
        let more = if text.chars().count() > MAX { "…" } else { "" };
        write!(
            f,
            "{} [{}{:?}, {} bytes] {shown}{more}",
            self.topic,
            if self.retain { "retained, " } else { "" },
            self.qos,
            self.payload.len()
        )
    }
}

/// Renders messages one per line, for panic messages.
pub fn format_msgs(msgs: &[Msg]) -> String {
    if msgs.is_empty() {
        return "  (no messages)".to_owned();
    }
    msgs.iter().enumerate().map(|(i, m)| format!("  #{i}: {m:?}")).collect::<Vec<_>>().join("\n")
}

#[derive(Clone, Debug, Default)]
struct Status {
    connacks: usize,
    subacks: usize,
    rejected_filters: Vec<String>,
    last_error: Option<String>,
    /// The subscription could not even be sent (rumqttc rejects invalid filters locally).
    fatal: Option<String>,
}

/// A subscriber on Mosquitto that records every message in order. It re-subscribes after every reconnection
/// (e.g. across [`super::Mosquitto::restart`]), so it keeps seeing traffic.
pub struct Probe {
    rx: mpsc::UnboundedReceiver<Msg>,
    history: Arc<Mutex<Vec<Msg>>>,
    status: watch::Receiver<Status>,
    client: AsyncClient,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    client_id: String,
}

impl Probe {
    /// Connects anonymously to 127.0.0.1:`port`, subscribes to `filters` with QoS 1 and waits for the SubAck.
    pub async fn subscribe(port: u16, filters: &[&str]) -> Probe {
        Self::connect(port, filters, None).await
    }

    /// Like [`Probe::subscribe`], with a username and password.
    pub async fn subscribe_with_credentials(port: u16, user: &str, pass: &str, filters: &[&str]) -> Probe {
        Self::connect(port, filters, Some((user, pass))).await
    }

    async fn connect(port: u16, filters: &[&str], credentials: Option<(&str, &str)>) -> Probe {
        assert!(!filters.is_empty(), "Probe::subscribe needs at least one topic filter");
        let client_id = unique_client_id("probe");
        let mut options = mqtt_options(&client_id, port);
        if let Some((user, pass)) = credentials {
            options.set_credentials(user, pass.to_owned());
        }
        let (client, eventloop) = AsyncClient::builder(options).capacity(1024).build();
        let (tx, rx) = mpsc::unbounded_channel();
        let history = Arc::new(Mutex::new(Vec::new()));
        let (status_tx, mut status) = watch::channel(Status::default());
        let (shutdown, shutdown_rx) = oneshot::channel();
        let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
        let task = tokio::spawn(run_probe(
            eventloop,
            client.clone(),
            filters.clone(),
            tx,
            history.clone(),
            status_tx,
            shutdown_rx,
        ));
        let wait = async { status.wait_for(|s| s.subacks >= 1 || s.fatal.is_some()).await.is_ok() };
        let subscribed = tokio::time::timeout(SUBACK_TIMEOUT, wait).await.unwrap_or(false);
        let current = status.borrow().clone();
        if let Some(fatal) = &current.fatal {
            panic!("MQTT probe {client_id} on 127.0.0.1:{port}: {fatal}");
        }
        if !subscribed {
            panic!(
                "MQTT probe {client_id} on 127.0.0.1:{port} got no SubAck for {filters:?} within {SUBACK_TIMEOUT:?} \
                 (connacks: {}, last error: {:?})",
                current.connacks, current.last_error
            );
        }
        assert!(
            current.rejected_filters.is_empty(),
            "broker rejected the probe's subscription to {:?}",
            current.rejected_filters
        );
        Probe { rx, history, status, client, shutdown: Some(shutdown), task, client_id }
    }

    /// The probe's MQTT client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// How many times the probe has connected to the broker (1 until the broker restarts).
    pub fn connections(&self) -> usize {
        self.status.borrow().connacks
    }

    /// Waits until the probe has (re)connected `n` times in all and re-subscribed; false on timeout.
    pub async fn wait_for_connections(&mut self, n: usize, timeout: Duration) -> bool {
        let wait = async { self.status.wait_for(|s| s.connacks >= n && s.subacks >= n).await.is_ok() };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// The next message not yet taken, waiting up to `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Msg> {
        tokio::time::timeout(timeout, self.rx.recv()).await.ok().flatten()
    }

    /// Takes messages until one matches `pred` (returned) or `timeout` passes (None). Skipped messages stay
    /// in [`Probe::history`].
    pub async fn wait_for(&mut self, timeout: Duration, mut pred: impl FnMut(&Msg) -> bool) -> Option<Msg> {
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(msg)) if pred(&msg) => return Some(msg),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Like [`Probe::wait_for`], but panics with `what` and the full history on timeout.
    pub async fn expect(&mut self, timeout: Duration, what: &str, pred: impl FnMut(&Msg) -> bool) -> Msg {
        match self.wait_for(timeout, pred).await {
            Some(msg) => msg,
            None => panic!(
                "MQTT probe: no message matching {what} within {timeout:?}; everything received:\n{}",
                format_msgs(&self.history())
            ),
        }
    }

    /// Like [`Probe::expect`], but a matching message already received (taken or not) counts too: for messages
    /// that may come before or after the one a test waited for last.
    pub async fn expect_seen(&mut self, timeout: Duration, what: &str, pred: impl FnMut(&Msg) -> bool) -> Msg {
        let mut pred = pred;
        if let Some(seen) = self.history().into_iter().find(|m| pred(m)) {
            return seen;
        }
        self.expect(timeout, what, pred).await
    }

    /// Bounded negative check: panics if a message matching `what` arrives within `window`.
    pub async fn assert_nothing_within(&mut self, window: Duration, what: &str, pred: impl FnMut(&Msg) -> bool) {
        if let Some(msg) = self.wait_for(window, pred).await {
            panic!("MQTT probe: {what} arrived within {window:?}, and must not: {msg:?}");
        }
    }

    /// Waits for a message on `topic` (exact match) with exactly `payload`; panics with the history on timeout.
    pub async fn expect_payload(&mut self, topic: &str, payload: impl AsRef<[u8]>, timeout: Duration) -> Msg {
        let payload = payload.as_ref();
        let what = format!("{topic} = {:?}", String::from_utf8_lossy(payload));
        self.expect(timeout, &what, |m| m.topic == topic && m.payload == payload).await
    }

    /// Waits for any message on `topic` (exact match); panics with the history on timeout.
    pub async fn expect_topic(&mut self, topic: &str, timeout: Duration) -> Msg {
        self.expect(timeout, topic, |m| m.topic == topic).await
    }

    /// Takes every message that arrives within `duration` (plus the ones already waiting).
    pub async fn collect_for(&mut self, duration: Duration) -> Vec<Msg> {
        let deadline = Instant::now() + duration;
        let mut msgs = Vec::new();
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            msgs.push(msg);
        }
        msgs
    }

    /// Takes the messages already received, without waiting.
    pub fn drain(&mut self) -> Vec<Msg> {
        let mut msgs = Vec::new();
        while let Ok(msg) = self.rx.try_recv() {
            msgs.push(msg);
        }
        msgs
    }

    /// Every message received since the probe subscribed, in order, whether taken or not.
    pub fn history(&self) -> Vec<Msg> {
        self.history.lock().expect("probe history lock").clone()
    }

    /// The messages in the history on `topic` (exact match).
    pub fn history_on(&self, topic: &str) -> Vec<Msg> {
        self.history().into_iter().filter(|m| m.topic == topic).collect()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // The task sends DISCONNECT and ends within DISCONNECT_GRACE; if the runtime is already gone the abort
        // below (or the runtime's shutdown) ends it.
        let _ = self.client.try_disconnect();
        let signalled = self.shutdown.take().is_some_and(|shutdown| shutdown.send(()).is_ok());
        if !signalled {
            self.task.abort();
        }
    }
}

async fn run_probe(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    tx: mpsc::UnboundedSender<Msg>,
    history: Arc<Mutex<Vec<Msg>>>,
    status: watch::Sender<Status>,
    mut shutdown: oneshot::Receiver<()>,
) {
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                status.send_modify(|s| s.connacks += 1);
                // A clean session: (re-)subscribe after every connection.
                let subscription = filters.iter().map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(subscription) {
                    let error = format!("rumqttc refused to subscribe to {filters:?} (invalid filter?): {e}");
                    status.send_modify(|s| s.fatal = Some(error));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let rejected: Vec<String> = ack
                    .return_codes
                    .iter()
                    .zip(&filters)
                    .filter(|(code, _)| matches!(code, SubscribeReasonCode::Failure))
                    .map(|(_, f)| f.clone())
                    .collect();
                status.send_modify(|s| {
                    s.subacks += 1;
                    s.rejected_filters.extend(rejected);
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let msg = Msg {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.to_vec(),
                    retain: p.retain,
                    qos: p.qos,
                };
                history.lock().expect("probe history lock").push(msg.clone());
                // The receiver is gone only while the Probe is being dropped.
                let _ = tx.send(msg);
            }
            Ok(_) => {}
            Err(e) => {
                status.send_modify(|s| s.last_error = Some(e.to_string()));
                // rumqttc reconnects on the next poll; don't spin while the broker is down.
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
    // Dropped: let the event loop send the DISCONNECT queued by Drop, bounded.
    let _ = tokio::time::timeout(DISCONNECT_GRACE, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// rumqttc options for a harness client on 127.0.0.1:`port`: 64 MiB packets both ways, clean session.
pub fn mqtt_options(client_id: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, ("127.0.0.1", port));
    options.set_max_packet_size(MAX_PACKET, MAX_PACKET).set_keep_alive(5).set_clean_session(true);
    options
}

/// A client id no other harness client in any test process uses.
pub fn unique_client_id(kind: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("harness-{kind}-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The retained messages a fresh subscriber to `filter` receives, by topic (the last one wins). Cleared topics
/// (empty payloads) never appear: a broker does not store them.
///
/// Complete without a fixed wait: the subscriber also subscribes, in the same SUBSCRIBE, to a topic of its own
/// that nothing else uses, and after the SubAck publishes a non-retained marker there. Mosquitto queues the
/// stored retained messages of a subscription while it handles the SUBSCRIBE, and delivers one client's
/// messages in order, so once the marker is back every retained message has arrived. Panics if the marker does
/// not come back within [`super::wait::SOON`].
pub async fn retained(port: u16, filter: &str) -> BTreeMap<String, Vec<u8>> {
    let marker_topic = format!("harness-retained-marker/{}", unique_client_id("marker"));
    let mut probe = Probe::subscribe(port, &[marker_topic.as_str(), filter]).await;
    probe
        .client
        .publish(marker_topic.as_str(), "marker", rumqttc::PublishOptions::new(QoS::AtLeastOnce))
        .await
        .expect("queue the retained-query marker");
    let mut map = BTreeMap::new();
    let bound = super::wait::SOON;
    let deadline = Instant::now() + bound;
    loop {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, probe.rx.recv()).await else {
            panic!(
                "retained({filter:?}) on 127.0.0.1:{port}: the marker did not come back within {bound:?}; received:\n{}",
                format_msgs(&probe.history())
            );
        };
        if msg.topic == marker_topic {
            return map;
        }
        if !msg.retain {
            continue;
        }
        if msg.payload.is_empty() {
            map.remove(&msg.topic);
        } else {
            map.insert(msg.topic, msg.payload);
        }
    }
}

/// Publishes one message with QoS 1 from a fresh client and waits for the broker's PubAck (bounded 10 s).
/// Handy to seed retained state (e.g. stale topics the bridge must clear).
pub async fn publish(port: u16, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
    let client_id = unique_client_id("publisher");
    let (client, mut eventloop) = AsyncClient::builder(mqtt_options(&client_id, port)).capacity(16).build();
    client
        .publish(topic, payload.into(), rumqttc::PublishOptions::new(QoS::AtLeastOnce).retain(retain))
        .await
        .expect("queue a publish on a fresh rumqttc client");
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match acked {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("publish to {topic} on 127.0.0.1:{port}: {e}"),
        Err(_) => panic!("publish to {topic} on 127.0.0.1:{port}: no PubAck within 10 s"),
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(DISCONNECT_GRACE, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}
