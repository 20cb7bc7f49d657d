//! What the bridge knows about its own health: Prometheus metrics and the per-part state behind `/healthz`.
//!
//! One process-wide instance (see [`telemetry`]): every part of the bridge records into it without the value
//! having to be threaded through each constructor, and the HTTP endpoint reads it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerType {
    server: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LegReason {
    leg: String,
    server: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LegServer {
    leg: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerPath {
    server: String,
    path: String,
}

/// One Plex server as `/healthz` reports it.
#[derive(Debug, Clone, Default)]
struct ServerHealth {
    state: &'static str,
    last_event: Option<Instant>,
    /// Why the last connection attempt failed (cleared once connected).
    problem: Option<Problem>,
    /// Why the last REST look-up (sessions, activities, metadata) failed (cleared by the next success).
    rest_problem: Option<Problem>,
    /// The server's token file and its renewal, when it has one.
    token: Option<crate::plextv::renew::RenewalHandle>,
}

/// A failure as `/healthz` shows it: a short word and the readable sentence (never holding the token).
#[derive(Debug, Clone)]
struct Problem {
    reason: &'static str,
    error: String,
}

impl Problem {
    fn json(problem: &Option<Problem>) -> Value {
        problem.as_ref().map_or(Value::Null, |p| json!({ "reason": p.reason, "error": p.error }))
    }
}

/// Metrics and health of this process.
pub struct Telemetry {
    registry: Registry,
    notifications: Family<ServerType, Counter>,
    published: Counter,
    dropped: Counter,
    untracked: Counter,
    sessions_untracked: Counter,
    reconnects: Family<LegReason, Counter>,
    connected: Family<LegServer, Gauge>,
    rest_latency: Family<ServerPath, Histogram>,
    servers: Mutex<BTreeMap<String, ServerHealth>>,
    broker_connected: Mutex<bool>,
    token_renewals: Family<RenewalResult, Counter>,
    token_expiry: Family<TokenFileLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenewalResult {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenFileLabel {
    file: String,
}

/// Notification types counted as their own series per server; further types (PMS data decides them, so a
/// broken or hostile server could send endless new ones) are counted as `other`.
const MAX_NOTIFICATION_TYPES: usize = 64;

/// Counts one server's notifications by type. Holds each type's counter, so counting a notification costs a map
/// look-up instead of building the metric's label strings every time.
pub struct NotificationCounts {
    telemetry: &'static Telemetry,
    server: String,
    by_kind: HashMap<String, Counter>,
    /// The counter of types beyond [`MAX_NOTIFICATION_TYPES`], once one was seen.
    other: Option<Counter>,
}

impl NotificationCounts {
    /// The server these count for (its label in the metrics).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A notification of type `kind` arrived.
    pub fn count(&mut self, kind: &str) {
        let (telemetry, server) = (self.telemetry, &self.server);
        let series = |label: &str| {
            let labels = ServerType { server: server.clone(), r#type: label.to_owned() };
            telemetry.notifications.get_or_create(&labels).clone()
        };
        match self.by_kind.get(kind) {
            Some(counter) => {
                counter.inc();
            }
            None if self.by_kind.len() < MAX_NOTIFICATION_TYPES => {
                let counter = series(kind);
                counter.inc();
                self.by_kind.insert(kind.to_owned(), counter);
            }
            None => {
                self.other.get_or_insert_with(|| series("other")).inc();
            }
        }
        if let Some(entry) = self.telemetry.servers.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&self.server) {
            entry.last_event = Some(Instant::now());
        }
    }
}

/// The process-wide telemetry.
pub fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(Telemetry::new)
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Telemetry {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("plex_mqtt_bridge");
        let notifications = Family::<ServerType, Counter>::default();
        let published = Counter::default();
        let dropped = Counter::default();
        let untracked = Counter::default();
        let sessions_untracked = Counter::default();
        let reconnects = Family::<LegReason, Counter>::default();
        let connected = Family::<LegServer, Gauge>::default();
        let rest_latency =
            Family::<ServerPath, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("notifications_received", "Notifications received from Plex", notifications.clone());
        registry.register("messages_published", "MQTT messages handed to the broker connection", published.clone());
        registry.register(
            "messages_dropped",
            "MQTT messages dropped: live events over the queue or lost with a broker connection, and messages over mqtt.max_packet_size",
            dropped.clone(),
        );
        registry.register(
            "notifications_untracked",
            "Notifications forwarded raw only, because session/library tracking was too far behind to take them",
            untracked.clone(),
        );
        registry.register(
            "sessions_untracked",
            "New playback sessions forwarded raw only, because plex.max_sessions sessions were tracked already",
            sessions_untracked.clone(),
        );
        registry.register("reconnects", "Connection losses and failed attempts, by leg and reason", reconnects.clone());
        registry.register("connected", "1 while the connection is up", connected.clone());
        registry.register("rest_request_duration_seconds", "Plex REST call latency", rest_latency.clone());
        let token_renewals = Family::<RenewalResult, Counter>::default();
        let token_expiry = Family::<TokenFileLabel, Gauge>::default();
        registry.register("token_renewals", "Plex JWT renewals, by result (ok, failed)", token_renewals.clone());
        registry.register(
            "token_expiry_timestamp_seconds",
            "When the Plex JWT in a token file expires (Unix time)",
            token_expiry.clone(),
        );
        Telemetry {
            registry,
            notifications,
            published,
            dropped,
            untracked,
            sessions_untracked,
            reconnects,
            connected,
            rest_latency,
            servers: Mutex::new(BTreeMap::new()),
            broker_connected: Mutex::new(false),
            token_renewals,
            token_expiry,
        }
    }

    /// The notification counters of one server (see [`NotificationCounts`]).
    pub fn notification_counts(&'static self, server: &str) -> NotificationCounts {
        NotificationCounts { telemetry: self, server: server.to_owned(), by_kind: HashMap::new(), other: None }
    }

    /// A message was handed to the broker connection.
    pub fn published(&self) {
        self.published.inc();
    }

    /// Live messages were dropped.
    pub fn dropped(&self, count: u64) {
        self.dropped.inc_by(count);
    }

    /// A notification was forwarded raw only (session/library tracking was behind).
    pub fn untracked(&self) {
        self.untracked.inc();
    }

    /// New playback sessions left untracked because `plex.max_sessions` were tracked already.
    pub fn sessions_untracked(&self, count: u64) {
        self.sessions_untracked.inc_by(count);
    }

    /// Notifications forwarded raw only so far.
    pub fn untracked_total(&self) -> u64 {
        self.untracked.get()
    }

    /// A connection was lost or an attempt failed. `leg` is `plex` or `mqtt`.
    pub fn reconnect(&self, leg: &str, server: &str, reason: &str) {
        let labels = LegReason { leg: leg.to_owned(), server: server.to_owned(), reason: reason.to_owned() };
        self.reconnects.get_or_create(&labels).inc();
    }

    /// The state of a Plex server's session changed.
    pub fn server_state(&self, server: &str, state: &'static str) {
        let labels = LegServer { leg: "plex".into(), server: server.to_owned() };
        self.connected.get_or_create(&labels).set(i64::from(state == "connected"));
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        servers.entry(server.to_owned()).or_default().state = state;
    }

    /// Why connecting to a Plex server failed (`None` once it is connected), for `/healthz`.
    pub fn server_problem(&self, server: &str, problem: Option<(&'static str, String)>) {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        servers.entry(server.to_owned()).or_default().problem =
            problem.map(|(reason, error)| Problem { reason, error });
    }

    /// Why the last REST look-up of a Plex server failed (`None` after one succeeded), for `/healthz`.
    pub fn rest_problem(&self, server: &str, problem: Option<(&'static str, String)>) {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = servers.get_mut(server) {
            entry.rest_problem = problem.map(|(reason, error)| Problem { reason, error });
        }
    }

    /// The broker connection went up or down.
    pub fn broker(&self, up: bool) {
        self.connected.get_or_create(&LegServer { leg: "mqtt".into(), server: String::new() }).set(i64::from(up));
        *self.broker_connected.lock().unwrap_or_else(|p| p.into_inner()) = up;
    }

    /// Records how long a REST call took.
    pub fn rest_call(&self, server: &str, path: &str, took: Duration) {
        // Item paths (`/library/metadata/123`) are folded into one series.
        let path = match path.split('?').next().unwrap_or(path) {
            item if item.starts_with("/library/metadata/") => "/library/metadata/{id}",
            other => other,
        };
        self.rest_latency
            .get_or_create(&ServerPath { server: server.to_owned(), path: path.to_owned() })
            .observe(took.as_secs_f64());
    }

    /// Attaches a server's token renewal to its health entry.
    pub fn server_token(&self, server: &str, token: crate::plextv::renew::RenewalHandle) {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        servers.entry(server.to_owned()).or_default().token = Some(token);
    }

    /// A Plex JWT renewal finished.
    pub fn token_renewal(&self, ok: bool) {
        self.token_renewals.get_or_create(&RenewalResult { result: if ok { "ok" } else { "failed" } }).inc();
    }

    /// The expiry of the JWT in `file`.
    pub fn token_expiry(&self, file: &str, at: std::time::SystemTime) {
        let seconds = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        self.token_expiry.get_or_create(&TokenFileLabel { file: file.to_owned() }).set(seconds as i64);
    }

    /// The Prometheus text exposition.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Whether everything is connected, and the JSON document `/healthz` returns.
    pub fn health(&self) -> (bool, Value) {
        let broker = *self.broker_connected.lock().unwrap_or_else(|p| p.into_inner());
        let servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        let healthy = broker && !servers.is_empty() && servers.values().all(|s| s.state == "connected");
        let now = Instant::now();
        let parts: serde_json::Map<String, Value> = servers
            .iter()
            .map(|(name, s)| {
                let age = s.last_event.map(|at| now.duration_since(at).as_secs_f64());
                let doc = json!({
                    "state": s.state,
                    "last_event_age_seconds": age,
                    "problem": Problem::json(&s.problem),
                    "rest_problem": Problem::json(&s.rest_problem),
                    "token": s.token.as_ref().map(|t| token_json(&t.status())),
                });
                (name.clone(), doc)
            })
            .collect();
        let doc = json!({
            "status": if healthy { "ok" } else { "degraded" },
            "broker": if broker { "connected" } else { "disconnected" },
            "servers": parts,
        });
        (healthy, doc)
    }
}

/// A token's part of `/healthz`.
fn token_json(status: &crate::plextv::renew::TokenStatus) -> Value {
    json!({
        "kind": status.kind,
        "expires_at": status.expires_at.map(crate::plextv::renew::describe),
        "renewable": status.renewable,
        "problem": Problem::json(&status.problem.clone().map(|(reason, error)| Problem { reason, error })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_types_are_counted_with_a_bound_on_series() {
        let mut counts = telemetry().notification_counts("bounded-test");
        for i in 0..MAX_NOTIFICATION_TYPES + 10 {
            counts.count(&format!("type{i}"));
        }
        counts.count("type0");
        counts.count("unseen-after-the-cap");
        let metrics = telemetry().render_metrics();
        let series: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("plex_mqtt_bridge_notifications_received_total{") && l.contains("bounded-test"))
            .collect();
        assert_eq!(series.len(), MAX_NOTIFICATION_TYPES + 1, "{series:#?}");
        let value = |label: &str| {
            series.iter().find(|l| l.contains(&format!("type=\"{label}\""))).and_then(|l| l.rsplit(' ').next())
        };
        assert_eq!(value("type0"), Some("2"));
        assert_eq!(value("other"), Some("11"));
    }
}
