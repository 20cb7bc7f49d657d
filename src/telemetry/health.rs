//! The health of the bridge as plain data: one typed record per configured server (its state, why it last
//! failed, when it last sent something, its token) and the broker link. It is the single owner of these facts:
//! `/healthz`, the retained `<p>/bridge/stats` and `<p>/bridge/info`, and the systemd status all read it, so
//! they can never disagree.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Instant, SystemTime};

use serde_json::{json, Value};
use tokio::sync::watch;

/// The values of `<p>/<server>/state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerState {
    #[default]
    Connecting,
    Connected,
    Disconnected,
    Unauthorized,
}

impl ServerState {
    /// The payload on the state topic.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Connecting => "connecting",
            ServerState::Connected => "connected",
            ServerState::Disconnected => "disconnected",
            ServerState::Unauthorized => "unauthorized",
        }
    }
}

/// A failure as health reports show it: a short word and the readable sentence (never holding a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub error: String,
}

impl Problem {
    /// `{"reason", "error"}`, or `null` when there is no problem.
    pub fn json(problem: Option<&Problem>) -> Value {
        problem.map_or(Value::Null, |p| json!({ "reason": p.reason, "error": p.error }))
    }
}

/// What is known of a token file: written by its renewer, shown for every server that uses the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenStatus {
    /// `legacy` or `jwt` (None until the file was read).
    pub kind: Option<&'static str>,
    pub expires_at: Option<SystemTime>,
    /// Whether a device key makes renewal possible.
    pub renewable: bool,
    /// The last renewal problem.
    pub problem: Option<Problem>,
    /// When a failed renewal is tried again.
    pub retry_at: Option<SystemTime>,
}

impl TokenStatus {
    fn json(&self) -> Value {
        json!({
            "kind": self.kind,
            "expires_at": self.expires_at.map(rfc3339),
            "renewable": self.renewable,
            "problem": Problem::json(self.problem.as_ref()),
            "retry_at": self.retry_at.map(rfc3339),
        })
    }
}

/// A point in time as RFC 3339 in UTC, seconds precision (logs and health documents).
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A server's label in metrics and health documents: its topic name once known, else its config key.
fn label<'a>(name: Option<&'a str>, key: &'a str) -> &'a str {
    name.unwrap_or(key)
}

/// One failing REST look-up.
#[derive(Debug, Clone)]
struct RestProblem {
    source: &'static str,
    problem: Problem,
    retry_at: Option<SystemTime>,
}

/// One server's record.
#[derive(Debug, Clone, Default)]
struct ServerRecord {
    /// Where it is configured (`servers[0]`).
    key: String,
    /// Its topic name, once known.
    name: Option<String>,
    state: ServerState,
    /// Why the last connection attempt failed (cleared once connected).
    problem: Option<Problem>,
    /// The REST look-ups failing now, by look-up (`/status/sessions`, `/activities`, …), the latest last, each
    /// with when it is tried again if it retries on its own; a look-up's success clears only its own entry.
    rest_problems: Vec<RestProblem>,
    /// The token file it reads, when it has one (its status is kept per file).
    token_file: Option<String>,
}

/// A record and the time of its last notification (an atomic, because it is written for every notification).
#[derive(Debug)]
struct ServerSlot {
    record: Mutex<ServerRecord>,
    /// Milliseconds after the registry's epoch, plus one (0: never).
    last_event: AtomicU64,
}

impl ServerSlot {
    fn record(&self) -> MutexGuard<'_, ServerRecord> {
        // Every update is a field assignment, so a poisoned lock still holds a consistent record.
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The registry (one per process, inside [`super::Telemetry`]).
#[derive(Debug)]
pub struct HealthRegistry {
    epoch: Instant,
    servers: RwLock<Vec<Arc<ServerSlot>>>,
    tokens: Mutex<BTreeMap<String, TokenStatus>>,
    broker: AtomicBool,
    /// Bumped on every change a reader of the documents cares about (state, name, broker link).
    changed: watch::Sender<u64>,
}

impl Default for HealthRegistry {
    fn default() -> Self {
        HealthRegistry {
            epoch: Instant::now(),
            servers: RwLock::default(),
            tokens: Mutex::default(),
            broker: AtomicBool::new(false),
            changed: watch::channel(0).0,
        }
    }
}

/// One server's handle on its record: cheap to clone, handed to its supervisor and state task.
#[derive(Clone, Debug)]
pub struct ServerHealth {
    registry: &'static HealthRegistry,
    slot: Arc<ServerSlot>,
}

impl ServerHealth {
    /// The name metrics and health use for this server: its topic name once known, else its config key.
    pub fn label(&self) -> String {
        let record = self.slot.record();
        label(record.name.as_deref(), &record.key).to_owned()
    }

    /// The server's topic name, once known.
    pub fn name(&self) -> Option<String> {
        self.slot.record().name.clone()
    }

    /// The server's topic name is now `name` (configured, derived from its friendlyName, or an earlier run's).
    pub fn set_name(&self, name: &str) {
        self.slot.record().name = Some(name.to_owned());
        self.registry.bump();
    }

    /// The server's connection state changed.
    pub fn set_state(&self, state: ServerState) {
        let changed = {
            let mut record = self.slot.record();
            std::mem::replace(&mut record.state, state) != state
        };
        if changed {
            self.registry.bump();
        }
    }

    /// Why connecting failed (`None` once connected).
    pub fn set_problem(&self, problem: Option<(&'static str, String)>) {
        self.slot.record().problem = problem.map(|(reason, error)| Problem { reason, error });
    }

    /// Why the last REST look-up (`source`: which one) failed, and when it is tried again, if it is; `None` after
    /// it succeeded, which clears the problem only if it was that look-up's.
    pub fn set_rest_problem(
        &self,
        source: &'static str,
        problem: Option<(&'static str, String)>,
        retry_at: Option<SystemTime>,
    ) {
        let mut record = self.slot.record();
        record.rest_problems.retain(|p| p.source != source);
        if let Some((reason, error)) = problem {
            record.rest_problems.push(RestProblem { source, problem: Problem { reason, error }, retry_at });
        }
    }

    /// The server reads its token from `file` (whose status its renewer reports).
    pub fn set_token_file(&self, file: &str) {
        self.slot.record().token_file = Some(file.to_owned());
    }

    /// A notification arrived now.
    pub fn event_seen(&self) {
        let millis = self.registry.epoch.elapsed().as_millis() as u64;
        self.slot.last_event.store(millis + 1, Ordering::Relaxed);
    }
}

/// One server as the documents show it.
#[derive(Debug, Clone)]
pub struct ServerSnapshot {
    pub key: String,
    pub name: Option<String>,
    pub state: ServerState,
    pub last_event_age_seconds: Option<f64>,
    pub problem: Option<Problem>,
    pub rest_problem: Option<Problem>,
    pub rest_retry_at: Option<SystemTime>,
    pub token: Option<TokenStatus>,
}

impl ServerSnapshot {
    /// Its topic name once known, else its config key.
    pub fn label(&self) -> &str {
        label(self.name.as_deref(), &self.key)
    }
}

/// Everything the registry knows, at one moment.
#[derive(Debug, Clone)]
pub struct HealthSnapshot {
    pub broker_connected: bool,
    pub servers: Vec<ServerSnapshot>,
}

/// `rest_problem` in `/healthz`: the problem, with `retry_at` when the look-up is tried again on its own.
fn rest_problem_json(server: &ServerSnapshot) -> Value {
    let mut doc = Problem::json(server.rest_problem.as_ref());
    if let (Some(fields), Some(at)) = (doc.as_object_mut(), server.rest_retry_at) {
        fields.insert("retry_at".to_owned(), Value::String(rfc3339(at)));
    }
    doc
}

impl HealthSnapshot {
    /// Healthy: the broker and every configured server are connected.
    pub fn healthy(&self) -> bool {
        self.broker_connected
            && !self.servers.is_empty()
            && self.servers.iter().all(|s| s.state == ServerState::Connected)
    }

    /// Servers connected now.
    pub fn connected(&self) -> usize {
        self.servers.iter().filter(|s| s.state == ServerState::Connected).count()
    }

    /// The `/healthz` document: servers by label, each with its config key (`key`), which does not change when
    /// the topic name becomes known, for readers that look a configured server up (`check`).
    pub fn to_json(&self) -> Value {
        let servers: serde_json::Map<String, Value> = self
            .servers
            .iter()
            .map(|s| {
                let doc = json!({
                    "key": s.key,
                    "state": s.state.as_str(),
                    "last_event_age_seconds": s.last_event_age_seconds,
                    "problem": Problem::json(s.problem.as_ref()),
                    "rest_problem": rest_problem_json(s),
                    "token": s.token.as_ref().map(TokenStatus::json),
                });
                (s.label().to_owned(), doc)
            })
            .collect();
        json!({
            "status": if self.healthy() { "ok" } else { "degraded" },
            "broker": if self.broker_connected { "connected" } else { "disconnected" },
            "servers": servers,
        })
    }

    /// The systemd `STATUS=` line: `broker connected; plex: home connected, cabin disconnected`.
    pub fn systemd_status(&self) -> String {
        let servers: Vec<String> = self.servers.iter().map(|s| format!("{} {}", s.label(), s.state.as_str())).collect();
        let broker = if self.broker_connected { "connected" } else { "disconnected" };
        format!("broker {broker}; plex: {}", servers.join(", "))
    }
}

impl HealthRegistry {
    /// Registers the configured servers (by their config keys), replacing any earlier registration; returns each
    /// server's handle, in configuration order.
    pub fn register(&'static self, keys: impl IntoIterator<Item = String>) -> Vec<ServerHealth> {
        let slots: Vec<Arc<ServerSlot>> = keys
            .into_iter()
            .map(|key| {
                let record = ServerRecord { key, ..ServerRecord::default() };
                Arc::new(ServerSlot { record: Mutex::new(record), last_event: AtomicU64::new(0) })
            })
            .collect();
        *self.servers.write().unwrap_or_else(|p| p.into_inner()) = slots.clone();
        self.bump();
        slots.into_iter().map(|slot| ServerHealth { registry: self, slot }).collect()
    }

    /// The broker link went up or down.
    pub fn set_broker(&self, up: bool) {
        if self.broker.swap(up, Ordering::AcqRel) != up {
            self.bump();
        }
    }

    /// What the renewer of `file` knows of its token now.
    pub fn set_token_status(&self, file: &str, status: TokenStatus) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(file.to_owned(), status);
    }

    /// Resolves after the next change of a server's state or name or of the broker link.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A consistent copy of everything.
    pub fn snapshot(&self) -> HealthSnapshot {
        let now = self.epoch.elapsed().as_millis() as u64;
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let servers = self.servers.read().unwrap_or_else(|p| p.into_inner());
        let servers = servers
            .iter()
            .map(|slot| {
                let record = slot.record().clone();
                let last_event = slot.last_event.load(Ordering::Relaxed);
                ServerSnapshot {
                    last_event_age_seconds: (last_event > 0)
                        .then(|| now.saturating_sub(last_event - 1) as f64 / 1000.0),
                    token: record.token_file.as_ref().map(|file| tokens.get(file).cloned().unwrap_or_default()),
                    key: record.key,
                    name: record.name,
                    state: record.state,
                    problem: record.problem,
                    rest_problem: record.rest_problems.last().map(|p| p.problem.clone()),
                    rest_retry_at: record.rest_problems.last().and_then(|p| p.retry_at),
                }
            })
            .collect();
        HealthSnapshot { broker_connected: self.broker.load(Ordering::Acquire), servers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_registry_feeds_every_document() {
        let registry: &'static HealthRegistry = Box::leak(Box::default());
        let servers = registry.register(["servers[0]".to_owned(), "servers[1]".to_owned()]);
        let mut changes = registry.changes();
        changes.borrow_and_update();
        servers[0].set_name("home");
        servers[0].set_state(ServerState::Connected);
        servers[0].set_token_file("/run/token");
        registry.set_token_status("/run/token", TokenStatus { kind: Some("jwt"), ..TokenStatus::default() });
        servers[1].set_problem(Some(("connection_failed", "refused".into())));
        let retry_at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        servers[1].set_rest_problem(
            "/status/sessions",
            Some(("http_status", "unexpected HTTP status 503".into())),
            Some(retry_at),
        );
        servers[1].set_rest_problem("/activities", None, None);
        assert!(registry.snapshot().servers[1].rest_problem.is_some(), "another look-up's success leaves it");
        servers[1].set_rest_problem("artwork", Some(("http_status", "404".into())), None);
        servers[1].set_rest_problem("artwork", None, None);
        assert!(registry.snapshot().servers[1].rest_retry_at.is_some(), "the sessions failure shows again");
        registry.set_broker(true);
        assert!(changes.has_changed().unwrap_or(false));
        let snapshot = registry.snapshot();
        assert!(!snapshot.healthy(), "servers[1] is not connected");
        assert_eq!(snapshot.connected(), 1);
        assert_eq!(snapshot.systemd_status(), "broker connected; plex: home connected, servers[1] connecting");
        let doc = snapshot.to_json();
        assert_eq!(doc["servers"]["home"]["token"]["kind"], "jwt");
        assert_eq!(doc["servers"]["home"]["key"], "servers[0]");
        assert_eq!(doc["servers"]["servers[1]"]["problem"]["reason"], "connection_failed");
        assert_eq!(doc["servers"]["servers[1]"]["rest_problem"]["retry_at"], "2027-01-15T08:00:00Z");
        assert_eq!(doc["servers"]["home"]["rest_problem"], Value::Null);
        servers[1].set_state(ServerState::Connected);
        assert!(registry.snapshot().healthy());
    }
}
