//! Load generation shared by the benchmarks (`benches/`) and the soak test (`tests/soak.rs`):
//! notifications of realistic sizes in a realistic mix, each carrying a sequence number and a send time; a lean
//! counting MQTT subscriber; and readers of `/proc` for memory and CPU of a process.
//!
//! Every item is a real PMS item of its type with two extra keys at the end, `"benchSeq"` (0, 1, 2, … in send
//! order) and `"benchT"` (nanoseconds since the run's base `Instant` when the frame was handed to the fake PMS or
//! the raw publisher). The bridge forwards items byte for byte, so the subscriber reads both back.
// The benchmark and the soak test each use a part.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

/// The server name the bridge is configured with in both the benchmark and the soak test.
pub const SERVER: &str = "test";

/// The four notification types of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `playing`, ~300 B per item.
    Playing,
    /// `activity`, ~500 B per item.
    Activity,
    /// `timeline`, ~400 B per item.
    Timeline,
    /// `transcodeSession.update`, ~800 B per item.
    Transcode,
}

pub const KINDS: [Kind; 4] = [Kind::Playing, Kind::Activity, Kind::Timeline, Kind::Transcode];

impl Kind {
    /// The mix: the four types in turn (one item per frame, as PMS sends them), so a quarter of each. During a
    /// library scan activity and timeline dominate, during playback playing and transcodeSession.update do; an
    /// even mix weighs both.
    pub fn of(seq: u64) -> Kind {
        KINDS[(seq % 4) as usize]
    }

    /// The container's `type`.
    pub fn plex_type(self) -> &'static str {
        match self {
            Kind::Playing => "playing",
            Kind::Activity => "activity",
            Kind::Timeline => "timeline",
            Kind::Transcode => "transcodeSession.update",
        }
    }

    /// The array key of the container.
    pub fn array_key(self) -> &'static str {
        match self {
            Kind::Playing => "PlaySessionStateNotification",
            Kind::Activity => "ActivityNotification",
            Kind::Timeline => "TimelineEntry",
            Kind::Transcode => "TranscodeSession",
        }
    }

    /// The live topic the bridge publishes the items on (the type folded, see docs/topics.md).
    pub fn topic(self) -> String {
        let folded = match self {
            Kind::Playing => "playing",
            Kind::Activity => "activity",
            Kind::Timeline => "timeline",
            Kind::Transcode => "transcodesession_update",
        };
        format!("plex/{SERVER}/{folded}")
    }
}

/// The four live topics.
pub fn live_topics() -> Vec<String> {
    KINDS.iter().map(|k| k.topic()).collect()
}

/// Playback sessions the `playing` items rotate over (also listed by the canned `/status/sessions`).
pub const SESSION_KEYS: [&str; 3] = ["41", "42", "43"];
/// Library activities that run for the whole load (also listed by the canned `/activities`).
pub const RUNNING_ACTIVITIES: [&str; 3] = [
    "0f3c2a9e-5b1d-4c6e-9a7b-2d8e4f6a1b3c",
    "7d1e5f20-3c4b-4a8e-b1f2-9e8d7c6b5a40",
    "c2b4e6a8-1d3f-4e5a-8c7b-6a5f4e3d2c1b",
];
/// Every this many activity items, three of them are a short activity of its own: `started`, `updated`,
/// `ended` (so clears of retained activity topics are exercised too).
pub const EPHEMERAL_EVERY: u64 = 1000;

/// The activity (uuid, event) of the `n`-th activity item.
pub fn activity_for(n: u64) -> (String, &'static str) {
    let cycle = n % EPHEMERAL_EVERY;
    let round = n / EPHEMERAL_EVERY;
    match cycle {
        c if c == EPHEMERAL_EVERY - 3 => (ephemeral_uuid(round), "started"),
        c if c == EPHEMERAL_EVERY - 2 => (ephemeral_uuid(round), "updated"),
        c if c == EPHEMERAL_EVERY - 1 => (ephemeral_uuid(round), "ended"),
        _ => (RUNNING_ACTIVITIES[(n % 3) as usize].to_owned(), "updated"),
    }
}

fn ephemeral_uuid(round: u64) -> String {
    format!("e0e0e0e0-0000-4000-8000-{round:012x}")
}

/// One item and where it goes.
pub struct Item {
    pub kind: Kind,
    pub json: String,
    /// For activity items: the uuid and the event.
    pub activity: Option<(String, &'static str)>,
    /// For playing items: the session key and the `viewOffset` (ms).
    pub session: Option<(&'static str, u64)>,
}

/// The item with sequence number `seq`, sent `t_ns` after the base instant; `elapsed_ms` is the playback clock
/// (the `viewOffset` of every session follows it, so the bridge sees steady playback, not seeks).
pub fn item(seq: u64, t_ns: u64, elapsed_ms: u64) -> Item {
    let kind = Kind::of(seq);
    let n = seq / 4; // the n-th item of its kind
    let mut activity = None;
    let mut session = None;
    let json = match kind {
        Kind::Playing => {
            let key = SESSION_KEYS[(n % 3) as usize];
            session = Some((key, 600_000 + elapsed_ms));
            format!(
                concat!(
                    r#"{{"sessionKey":"{key}","clientIdentifier":"4b45c1d2a8e93f7b60c4d1e2{key}","#,
                    r#""guid":"plex://episode/5d9c0874ffd9ef001e99c3{key}","ratingKey":"2174{key}","url":"","#,
                    r#""key":"/library/metadata/2174{key}","viewOffset":{offset},"playQueueItemID":9431{key},"#,
                    r#""state":"playing","transcodeSession":"x1y2z3a4b5c6{key}","#,
                    r#""benchSeq":{seq},"benchT":{t}}}"#
                ),
                key = key,
                offset = 600_000 + elapsed_ms,
                seq = seq,
                t = t_ns
            )
        }
        Kind::Activity => {
            let (uuid, event) = activity_for(n);
            let json = format!(
                concat!(
                    r#"{{"event":"{event}","uuid":"{uuid}","Activity":{{"uuid":"{uuid}","#,
                    r#""type":"library.update.section","cancellable":false,"userID":1,"title":"Scanning Movies","#,
                    r#""subtitle":"Blade Runner 2049 (2017) – Director’s Cut","progress":{progress},"#,
                    r#""Context":{{"librarySectionID":"1","refreshForce":false,"accessible":true,"#,
                    r#""contentType":"movie","sectionPath":"/data/media/movies/Blade Runner 2049 (2017)"}}}},"#,
                    r#""benchSeq":{seq},"benchT":{t}}}"#
                ),
                event = event,
                uuid = uuid,
                progress = n % 100,
                seq = seq,
                t = t_ns
            );
            activity = Some((uuid, event));
            json
        }
        Kind::Timeline => format!(
            concat!(
                r#"{{"identifier":"com.plexapp.plugins.library","sectionID":"2","itemID":"{item}","#,
                r#""parentItemID":"54321","rootItemID":"54320","type":4,"guid":"plex://episode/5d9c0874ffd9ef001e99c3f1","#,
                r#""title":"The One Where Everybody Finds Out","state":5,"mediaState":"analyzing","#,
                r#""updatedAt":{updated},"queueSize":{queue},"thumb":"/library/metadata/{item}/thumb/1732518000","#,
                r#""benchSeq":{seq},"benchT":{t}}}"#
            ),
            item = 300_000 + n % 5000,
            updated = 1_732_518_000 + n / 1000,
            queue = n % 40,
            seq = seq,
            t = t_ns
        ),
        Kind::Transcode => format!(
            concat!(
                r#"{{"key":"/transcode/sessions/x1y2z3a4b5c6d7e8f9g0h41","ratingKey":"217441","throttled":false,"#,
                r#""complete":false,"progress":{progress}.5,"size":-22,"speed":3.1,"error":false,"#,
                r#""duration":2623000,"remaining":180,"context":"streaming","sourceVideoCodec":"hevc","#,
                r#""sourceAudioCodec":"eac3","videoDecision":"transcode","audioDecision":"transcode","#,
                r#""subtitleDecision":"burn","protocol":"dash","container":"mp4","videoCodec":"h264","#,
                r#""audioCodec":"aac","audioChannels":2,"width":1920,"height":1080,"transcodeHwRequested":true,"#,
                r#""transcodeHwDecoding":"vaapi","transcodeHwEncoding":"vaapi","#,
                r#""transcodeHwDecodingTitle":"Intel (VA-API)","transcodeHwFullPipeline":true,"#,
                r#""transcodeHwEncodingTitle":"Intel (VA-API)","offlineTranscode":false,"#,
                r#""timeStamp":1732518005.25,"maxOffsetAvailable":612.6,"minOffsetAvailable":0,"#,
                r#""benchSeq":{seq},"benchT":{t}}}"#
            ),
            progress = n % 100,
            seq = seq,
            t = t_ns
        ),
    };
    Item { kind, json, activity, session }
}

impl Item {
    /// The WebSocket text frame PMS sends for this item (one item per frame).
    pub fn ws_frame(&self) -> String {
        format!(
            r#"{{"NotificationContainer":{{"type":"{}","size":1,"{}":[{}]}}}}"#,
            self.kind.plex_type(),
            self.kind.array_key(),
            self.json
        )
    }
}

/// What the items sent so far make the retained state: the last item of every activity and the last
/// `viewOffset` of every playback session.
#[derive(Default)]
pub struct RetainedTruth {
    /// uuid → (the last item's JSON, its event).
    pub last_activity: HashMap<String, (String, &'static str)>,
    /// session key → the last `viewOffset` sent.
    pub last_offset: HashMap<&'static str, u64>,
}

impl RetainedTruth {
    /// Takes note of an item about to be sent.
    pub fn note(&mut self, item: &Item) {
        if let Some((uuid, event)) = &item.activity {
            self.last_activity.insert(uuid.clone(), (item.json.clone(), event));
        }
        if let Some((key, offset)) = item.session {
            self.last_offset.insert(key, offset);
        }
    }

    /// Where the retained `<prefix>/test/activities/+` topics in `held` differ from the last item of each
    /// running activity (ended ones must be cleared), or why the load itself was not as meant.
    pub fn activities_mismatch(&self, held: &BTreeMap<String, Vec<u8>>) -> Option<String> {
        let prefix = format!("plex/{SERVER}/activities/");
        let activities: HashMap<&str, String> = held
            .iter()
            .filter_map(|(topic, payload)| {
                Some((topic.strip_prefix(&prefix)?, String::from_utf8_lossy(payload).into_owned()))
            })
            .collect();
        let expected: HashMap<&str, String> = self
            .last_activity
            .iter()
            .filter(|(_, (_, event))| *event != "ended")
            .map(|(uuid, (payload, _))| (uuid.as_str(), payload.clone()))
            .collect();
        if expected.len() != RUNNING_ACTIVITIES.len() {
            return Some(format!("the short activities did not all end: {:?}", expected.keys()));
        }
        (activities != expected)
            .then(|| format!("retained activities {activities:#?}\nare not the last items sent {expected:#?}"))
    }

    /// Where the `view_offset_ms` of the retained `<prefix>/test/sessions/<key>` documents differs from the
    /// last `viewOffset` sent for each session (once the bridge's progress refresh has passed).
    pub fn sessions_mismatch(&self, held: &BTreeMap<String, Vec<u8>>) -> Option<String> {
        let wrong: Vec<String> = self
            .last_offset
            .iter()
            .filter_map(|(key, offset)| {
                let topic = format!("plex/{SERVER}/sessions/{key}");
                let document = held.get(&topic).and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok());
                let retained = document.as_ref().and_then(|d| d["view_offset_ms"].as_u64());
                (retained != Some(*offset)).then(|| format!("{topic}: view_offset_ms {retained:?}, last sent {offset}"))
            })
            .collect();
        (!wrong.is_empty()).then(|| wrong.join("; "))
    }
}

/// The canned `/status/sessions` body listing [`SESSION_KEYS`] as playing, long enough never to scrobble.
pub fn sessions_body() -> String {
    let metadata: Vec<serde_json::Value> = SESSION_KEYS
        .iter()
        .map(|key| {
            serde_json::json!({
                "sessionKey": key, "ratingKey": format!("2174{key}"), "type": "episode", "title": "Pilot",
                "grandparentTitle": "Severance", "parentIndex": 1, "index": 1, "year": 2022,
                "duration": 36_000_000u64, "viewOffset": 600_000,
                "User": {"id": "1", "title": "alice"},
                "Player": {"title": format!("TV {key}"), "product": "Plex for LG", "platform": "webOS",
                           "device": "OLED", "machineIdentifier": format!("4b45c1d2a8e93f7b60c4d1e2{key}"),
                           "address": "192.168.1.20", "local": true, "state": "playing"},
                "Session": {"id": format!("s{key}"), "bandwidth": 8000, "location": "lan"},
                "TranscodeSession": {"videoDecision": "transcode", "audioDecision": "copy", "transcodeHwRequested": true},
            })
        })
        .collect();
    serde_json::json!({"MediaContainer": {"size": metadata.len(), "Metadata": metadata}}).to_string()
}

/// The canned `/activities` body listing [`RUNNING_ACTIVITIES`].
pub fn activities_body() -> String {
    let list: Vec<serde_json::Value> = RUNNING_ACTIVITIES
        .iter()
        .map(|uuid| {
            serde_json::json!({"uuid": uuid, "type": "library.update.section", "cancellable": false, "userID": 1,
                               "title": "Scanning Movies", "subtitle": "", "progress": 0,
                               "Context": {"librarySectionID": "1"}})
        })
        .collect();
    serde_json::json!({"MediaContainer": {"size": list.len(), "Activity": list}}).to_string()
}

/// The unsigned integer after `key` (e.g. `"benchSeq":`) in a payload.
pub fn field_u64(payload: &[u8], key: &[u8]) -> Option<u64> {
    let start = payload.windows(key.len()).rposition(|w| w == key)? + key.len();
    let digits = payload[start..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&payload[start..start + digits]).ok()?.parse().ok()
}

/// The last payload on a topic, how many messages came on it, and whether the last one was a stored retained
/// message.
pub type Latest = (Vec<u8>, u64, bool);

/// What a [`Subscriber`] counted.
pub struct Counter {
    base: Instant,
    /// Live messages received (all four topics), duplicates included.
    pub received: AtomicU64,
    /// Messages with a `benchSeq` seen before (only when sequence tracking is on).
    pub duplicates: AtomicU64,
    /// Distinct sequence numbers received (only when sequence tracking is on).
    pub unique: AtomicU64,
    pub connacks: AtomicU64,
    pub subacks: AtomicU64,
    /// Latency samples (ns) are recorded while this is set.
    pub recording: AtomicBool,
    /// (send time, latency) in ns since the base instant.
    latencies: Mutex<Vec<(u64, u64)>>,
    /// Bitset of the sequence numbers received.
    seen: Option<Mutex<Vec<u64>>>,
    /// The last value of each other topic subscribed to (`$SYS/…`, `plex/bridge/state`, …), with how often each
    /// was received and whether the last one came as a retained message.
    others: Mutex<HashMap<String, Latest>>,
    /// Woken on every live message.
    pub progress: Notify,
}

impl Counter {
    /// (send time, latency) of every live message received while recording, in arrival order (ns).
    pub fn latencies(&self) -> Vec<(u64, u64)> {
        self.latencies.lock().expect("latencies lock").clone()
    }

    pub fn clear_latencies(&self) {
        self.latencies.lock().expect("latencies lock").clear();
    }

    /// The sequence numbers below `below` that never arrived.
    pub fn missing(&self, below: u64) -> Vec<u64> {
        let seen = self.seen.as_ref().expect("sequence tracking is on").lock().expect("seen lock");
        (0..below).filter(|s| seen.get((s / 64) as usize).is_none_or(|w| w & (1 << (s % 64)) == 0)).collect()
    }

    /// The last payload on `topic`, how many messages came on it, and whether the last was retained.
    pub fn other(&self, topic: &str) -> Option<Latest> {
        self.others.lock().expect("others lock").get(topic).cloned()
    }

    fn on_live(&self, payload: &[u8]) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if let Some(seen) = &self.seen {
            if let Some(seq) = field_u64(payload, b"\"benchSeq\":") {
                let mut seen = seen.lock().expect("seen lock");
                let word = (seq / 64) as usize;
                if word >= seen.len() {
                    seen.resize(word + 1, 0);
                }
                if seen[word] & (1 << (seq % 64)) != 0 {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    seen[word] |= 1 << (seq % 64);
                    self.unique.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if self.recording.load(Ordering::Relaxed) {
            if let Some(sent) = field_u64(payload, b"\"benchT\":") {
                let now = self.base.elapsed().as_nanos() as u64;
                self.latencies.lock().expect("latencies lock").push((sent, now.saturating_sub(sent)));
            }
        }
        self.progress.notify_one();
    }
}

/// A QoS 1 subscriber that counts what arrives on the live topics (and keeps the last value of any other topic
/// it subscribes to). Re-subscribes after every reconnection; stopped on Drop. Nagle is off on its socket (it
/// is the measuring instrument).
pub struct Subscriber {
    pub counter: Arc<Counter>,
    client: AsyncClient,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Subscribes to the live topics plus `others`; `track_seqs` keeps a bitset of the sequence numbers seen.
    /// Waits (bounded) for the first SubAck.
    pub async fn start(port: u16, base: Instant, others: &[&str], track_seqs: bool) -> Subscriber {
        let client_id = format!("load-counter-{}-{}", std::process::id(), base.elapsed().as_nanos());
        let mut options = MqttOptions::new(client_id, ("127.0.0.1", port));
        options.set_keep_alive(30).set_clean_session(true).set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::builder(options).capacity(64).build();
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let counter = Arc::new(Counter {
            base,
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unique: AtomicU64::new(0),
            connacks: AtomicU64::new(0),
            subacks: AtomicU64::new(0),
            recording: AtomicBool::new(false),
            latencies: Mutex::new(Vec::new()),
            seen: track_seqs.then(|| Mutex::new(Vec::new())),
            others: Mutex::new(HashMap::new()),
            progress: Notify::new(),
        });
        let mut filters = live_topics();
        filters.extend(others.iter().map(|s| (*s).to_owned()));
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run_subscriber(eventloop, client.clone(), filters, counter.clone(), stop_rx));
        let deadline = Instant::now() + Duration::from_secs(10);
        while counter.subacks.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the counting subscriber got no SubAck within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Subscriber { counter, client, stop: Some(stop), task }
    }

    pub fn received(&self) -> u64 {
        self.counter.received.load(Ordering::Relaxed)
    }

    /// Waits until `received() >= n`, or until nothing new arrived for `quiet`; returns `received()`.
    pub async fn wait_for(&self, n: u64, quiet: Duration) -> u64 {
        let mut last = self.received();
        let mut last_change = Instant::now();
        loop {
            let now = self.received();
            if now >= n {
                return now;
            }
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last_change.elapsed() >= quiet {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

async fn run_subscriber(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    counter: Arc<Counter>,
    mut stop: oneshot::Receiver<()>,
) {
    let live: Vec<String> = live_topics();
    loop {
        let event = tokio::select! {
            _ = &mut stop => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                counter.connacks.fetch_add(1, Ordering::SeqCst);
                let subscription = filters.iter().map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                let _ = client.try_subscribe_many(subscription);
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                counter.subacks.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = String::from_utf8_lossy(&p.topic);
                if live.iter().any(|t| *t == topic) {
                    counter.on_live(&p.payload);
                } else {
                    let mut others = counter.others.lock().expect("others lock");
                    let entry = others.entry(topic.into_owned()).or_insert_with(|| (Vec::new(), 0, false));
                    entry.0 = p.payload.to_vec();
                    entry.1 += 1;
                    entry.2 = p.retain;
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Restarts a stopped broker so that `sub` is subscribed again before the bridge publishes: the restarted
/// broker has no sessions, so what the bridge sent before the subscriber is back would be lost without anyone
/// knowing. Both reconnect within their backoff and either may win, so the bridge is held (SIGSTOP, like a long
/// scheduling pause) until the subscriber has its SubAck. Then waits (30 s at most) until the bridge's
/// `plex/bridge/state` says `online` again; returns whether that came as a stored retained message (the bridge
/// was back before the subscriber after all: with SIGSTOP holding it, this must be false). `sub` must subscribe
/// to `plex/bridge/state`.
pub async fn restart_broker_behind(
    broker: &mut crate::support::Mosquitto,
    bridge: &crate::support::Bridge,
    sub: &Subscriber,
) -> bool {
    let online_before = sub.counter.other("plex/bridge/state").map(|(_, n, _)| n).unwrap_or(0);
    let subacks_before = sub.counter.subacks.load(Ordering::SeqCst);
    bridge.signal("STOP");
    tokio::task::block_in_place(|| broker.restart());
    let deadline = Instant::now() + Duration::from_secs(30);
    while sub.counter.subacks.load(Ordering::SeqCst) == subacks_before {
        if Instant::now() >= deadline {
            bridge.signal("CONT");
            panic!("the subscriber did not re-subscribe within 30 s of the broker restart");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bridge.signal("CONT");
    loop {
        let online = sub.counter.other("plex/bridge/state").filter(|(p, n, _)| *n > online_before && p == b"online");
        if let Some((_, _, retained)) = online {
            return retained;
        }
        assert!(Instant::now() < deadline, "the bridge was not back within 30 s of the broker restart");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A raw rumqttc publisher (the broker-only baseline) with `inflight` unacknowledged messages at most (the
/// benchmark gives it the bridge's default `mqtt.max_inflight`), Nagle off.
/// The event loop runs on a thread of its own (a current-thread runtime), so the CPU time of the MQTT client
/// itself — what any publisher built on it pays per PUBLISH — can be read apart from the rest of the process.
pub struct RawPublisher {
    pub client: AsyncClient,
    /// Kept so the thread (and its CPU clock) is not detached while the publisher lives.
    _thread: std::thread::JoinHandle<()>,
    stop: Arc<AtomicBool>,
    clock: libc::clockid_t,
}

impl RawPublisher {
    pub async fn connect(port: u16, inflight: u16) -> RawPublisher {
        let mut options = MqttOptions::new(format!("load-raw-publisher-{}", std::process::id()), ("127.0.0.1", port));
        options.set_keep_alive(30).set_clean_session(true).set_max_packet_size(1 << 20, 1 << 20);
        // The bridge's own client settings: in-flight limit, requests written per flush, packets read per batch.
        options
            .set_inflight(inflight)
            .set_max_request_batch(plex_mqtt_bridge::mqtt::REQUEST_BATCH)
            .set_read_batch_size(plex_mqtt_bridge::mqtt::READ_BATCH);
        let (client, mut eventloop) = AsyncClient::builder(options).capacity(64).build();
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (ready_tx, ready_rx) = oneshot::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("raw-mqtt-client".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                runtime.block_on(async move {
                    let mut ready = Some(ready_tx);
                    while !stopped.load(Ordering::Relaxed) {
                        match eventloop.poll().await {
                            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                                if let Some(ready) = ready.take() {
                                    let _ = ready.send(());
                                }
                            }
                            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                            Ok(_) => {}
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                })
            })
            .expect("the raw publisher's thread starts");
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the thread is alive (joined only on drop); the call only writes `clock`.
        let found = unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &mut clock) };
        assert_eq!(found, 0, "the raw publisher thread's CPU clock");
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("the raw publisher connected within 10 s")
            .expect("the raw publisher's event loop is running");
        RawPublisher { client, _thread: thread, stop, clock }
    }

    /// CPU time (ns) the client's event loop thread has used so far.
    pub fn client_cpu_ns(&self) -> u64 {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `clock` belongs to a thread that is joined only on drop; the call only writes `now`.
        if unsafe { libc::clock_gettime(self.clock, &mut now) } != 0 {
            return 0;
        }
        now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
    }
}

impl Drop for RawPublisher {
    fn drop(&mut self) {
        // The event loop returns on the DISCONNECT it writes, or on its next error after the stop flag; it is not
        // joined, so a publisher whose channel is full cannot hang the benchmark.
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
    }
}

/// `VmRSS`, `VmHWM`, … of a process in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Context switches (voluntary + involuntary) of all threads of a process: how often it woke up.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| fs::read_to_string(task.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux if that fails).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The pid of a process whose command line contains `needle` (e.g. a broker's config path).
pub fn find_pid(needle: &str) -> Option<u32> {
    fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (cmdline.contains(needle) && pid != std::process::id()).then_some(pid)
    })
}

/// The `p`-th percentile (0–100) of sorted samples (nearest rank).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// CPU time of all threads of `pid` so far, in ns.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The machine in one line: cores, CPU model, memory, kernel, and the load average before a run.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name"))?.split(':').nth(1).map(|m| m.trim().to_owned()))
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next()?.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!(
        "{cores} cores, {cpu}, {mem_gib:.1} GiB, Linux {}; load average before the run: {}",
        kernel.trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )
}
