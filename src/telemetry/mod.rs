//! What the bridge knows about itself: Prometheus metrics, and the typed health registry ([`health`]) behind
//! `/healthz`, `<p>/bridge/stats` and the systemd status.
//!
//! One process-wide instance (see [`telemetry`]): every part of the bridge records into it without the value
//! having to be threaded through each constructor, and the readers (HTTP endpoint, bridge documents) read it.

pub mod health;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use health::{HealthRegistry, ServerHealth, ServerState};

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
    health: HealthRegistry,
    token_renewals: Family<RenewalResult, Counter>,
    commands: Family<CommandOutcome, Counter>,
    token_expiry: Family<TokenFileLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandOutcome {
    outcome: &'static str,
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
    health: ServerHealth,
    by_kind: HashMap<String, Counter>,
    /// The counter of types beyond [`MAX_NOTIFICATION_TYPES`], once one was seen.
    other: Option<Counter>,
}

impl NotificationCounts {
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
        self.health.event_seen();
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
        let commands = Family::<CommandOutcome, Counter>::default();
        registry.register(
            "command_messages",
            "Messages on the command topics, by outcome: executed, refused, unanswered (a flood's: one coalesced \
             notice instead of a result each), ignored (retained again, redelivered), unknown_server",
            commands.clone(),
        );
        Telemetry {
            registry,
            commands,
            notifications,
            published,
            dropped,
            untracked,
            sessions_untracked,
            reconnects,
            connected,
            rest_latency,
            health: HealthRegistry::default(),
            token_renewals,
            token_expiry,
        }
    }

    /// The notification counters of one server (see [`NotificationCounts`]), labelled `server` in the metrics.
    pub fn notification_counts(&'static self, server: &str, health: ServerHealth) -> NotificationCounts {
        NotificationCounts { telemetry: self, server: server.to_owned(), health, by_kind: HashMap::new(), other: None }
    }

    /// The health registry.
    pub fn health(&self) -> &HealthRegistry {
        &self.health
    }

    /// `count` messages were handed to the broker connection.
    pub fn published(&self, count: u64) {
        self.published.inc_by(count);
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

    /// The state of a Plex server's session changed: its health record, and its `connected` gauge once it has a
    /// topic name (the gauge is labelled by name).
    pub fn server_state(&self, server: &ServerHealth, state: ServerState) {
        if let Some(name) = server.name() {
            let labels = LegServer { leg: "plex".into(), server: name };
            self.connected.get_or_create(&labels).set(i64::from(state == ServerState::Connected));
        }
        server.set_state(state);
    }

    /// The broker connection went up or down.
    pub fn broker(&self, up: bool) {
        self.connected.get_or_create(&LegServer { leg: "mqtt".into(), server: String::new() }).set(i64::from(up));
        self.health.set_broker(up);
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

    /// `count` messages on the command topics came to `outcome` (see the metric's help).
    pub fn commands(&self, outcome: &'static str, count: u64) {
        self.commands.get_or_create(&CommandOutcome { outcome }).inc_by(count);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_types_are_counted_with_a_bound_on_series() {
        let registry: &'static HealthRegistry = Box::leak(Box::default());
        let health = registry.register(["servers[0]".to_owned()]).remove(0);
        let mut counts = telemetry().notification_counts("bounded-test", health);
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
