//! Commands from MQTT back to Plex (`[commands] enabled = true`): one task per server reads the messages the
//! publisher routes to it, checks each against the safety rules, runs the allowed ones against the PMS and
//! publishes one result per command on `<p>/<server>/command/result`.
//!
//! Safety rules, in the order they are checked ([`Gate::check`]):
//! 1. a stored *retained* message is never executed (reported once per topic, with how to clear it; the empty
//!    message that clears it is not a command either). MQTT 3.1.1 brokers deliver a retained message to
//!    subscribers already connected as an ordinary one, so this rule is about replays: a retained command
//!    never runs again on a reconnect or a restart;
//! 2. a QoS 1 redelivery (DUP set, a packet id seen in the last 60 s) is the same message: ignored;
//! 3. payloads over [`MAX_PAYLOAD`] bytes, payloads that are not a JSON object, and an `id` that is not a string
//!    of at most 64 characters are refused;
//! 4. unknown verbs, verbs on the wrong level (a player verb on the server's topic) and verbs missing from
//!    `commands.allow` are refused;
//! 5. an `id` executed in the last 60 s is refused as a duplicate;
//! 6. at most `commands.rate_limit` commands run per `commands.rate_window`; the rest are refused;
//! 7. each verb's arguments are checked ([`request::args`]); no verb takes a path or query from the message.
//!
//! The broker is the authorisation boundary: whoever may publish to `…/command/#` controls the server (within
//! the allow-list). The README shows the Mosquitto ACL lines.

pub mod request;
pub mod verb;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::commands::verb::Verb;
use crate::config::CommandsConfig;
use crate::mqtt::outbox::Action;
use crate::mqtt::{InboundCommand, Publisher};
use crate::plex::http::PlexHttp;
use crate::plex::PlexError;
use crate::topic::{CommandTopic, ServerTopics};
use request::Args;

/// Largest command payload read; larger ones are refused without being parsed.
pub const MAX_PAYLOAD: usize = crate::commands::verb::MAX_PAYLOAD;
/// Longest `id` echoed in results.
pub const MAX_ID: usize = 64;
/// How long an executed `id` (and a delivered packet id) is remembered.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(60);
/// Most bytes of a PMS answer kept (the lists commands resolve against are small; more is not read).
pub const MAX_ANSWER: usize = 4 << 20;
/// Commands waiting for their task at most (floods beyond are dropped with a log line by the publisher).
/// Oversized payloads are not queued (see [`InboundCommand::size`]), so this bounds memory at about 4 MiB.
pub const QUEUE: usize = 1024;
/// Retained command topics remembered as reported, at most.
const MAX_RETAINED_REPORTED: usize = 1024;
/// Commands still running at shutdown get this long to finish and publish their results.
const DRAIN_ON_STOP: Duration = Duration::from_secs(2);

/// One checked command, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub id: Option<String>,
    pub verb: Verb,
    /// The player's topic level, for player verbs.
    pub player: Option<String>,
    pub args: Args,
}

/// What the gate decided about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not a command to answer (a QoS 1 redelivery, a retained message already reported).
    Ignore,
    /// Answered at once with a refusal.
    Refuse {
        id: Option<String>,
        verb: String,
        target: String,
        error: String,
    },
    Execute(Command),
}

/// The safety rules' memory for one server (see the module doc).
pub struct Gate {
    allow: std::collections::BTreeSet<Verb>,
    rate_limit: usize,
    rate_window: Duration,
    prefix: String,
    server: String,
    executed: VecDeque<Instant>,
    ids: HashMap<String, Instant>,
    packets: HashMap<u16, Instant>,
    retained_reported: HashSet<String>,
}

impl Gate {
    /// `prefix` is the bridge's topic prefix, `server` this server's topic level.
    pub fn new(config: &CommandsConfig, prefix: &str, server: &str) -> Gate {
        Gate {
            allow: config.allow.clone(),
            rate_limit: config.rate_limit as usize,
            rate_window: config.rate_window,
            prefix: prefix.to_owned(),
            server: server.to_owned(),
            executed: VecDeque::new(),
            ids: HashMap::new(),
            packets: HashMap::new(),
            retained_reported: HashSet::new(),
        }
    }

    /// Applies the rules to one message at `now`.
    pub fn check(&mut self, inbound: &InboundCommand, now: Instant) -> Decision {
        self.forget_before(now);
        let Some(topic) = CommandTopic::parse(&self.prefix, &inbound.topic) else { return Decision::Ignore };
        let verb_name = topic.verb.to_owned();
        let target = topic.player.unwrap_or(&self.server).to_owned();
        let refuse = |id: Option<String>, error: String| Decision::Refuse {
            id,
            verb: verb_name.clone(),
            target: target.clone(),
            error,
        };
        if inbound.retain {
            if self.retained_reported.len() >= MAX_RETAINED_REPORTED {
                self.retained_reported.clear(); // bounded: at worst a topic is reported once more
            }
            if !self.retained_reported.insert(inbound.topic.clone()) {
                return Decision::Ignore;
            }
            let id = payload_object(&inbound.payload).ok().and_then(|p| valid_id(&p).ok().flatten());
            return refuse(
                id,
                format!(
                    "a retained message on a command topic is never executed; clear it with \
                     mosquitto_pub -r -n -t '{}' and publish commands without the retain flag",
                    inbound.topic
                ),
            );
        }
        if inbound.size == 0 {
            // An empty message is how MQTT clears a retained one, and a broker hands the clearing message to
            // connected subscribers as an ordinary empty message: so it is never a command. Clearing a topic
            // reported as retained gets no answer; any other empty message a refusal saying to send `{}`.
            if self.retained_reported.remove(&inbound.topic) {
                return Decision::Ignore;
            }
            return refuse(
                None,
                "an empty message is not a command (it is how retained messages are cleared); publish {} for a \
                 command without arguments"
                    .into(),
            );
        }
        if inbound.pkid != 0 {
            let seen = self.packets.insert(inbound.pkid, now).is_some();
            if inbound.dup && seen {
                return Decision::Ignore;
            }
        }
        if inbound.size > MAX_PAYLOAD {
            return refuse(None, format!("payload too large ({} bytes; at most {MAX_PAYLOAD})", inbound.size));
        }
        let payload = match payload_object(&inbound.payload) {
            Ok(payload) => payload,
            Err(error) => return refuse(None, error),
        };
        let id = match valid_id(&payload) {
            Ok(id) => id,
            Err(error) => return refuse(None, error),
        };
        let Some(verb) = Verb::parse(topic.verb) else {
            return refuse(id, format!("unknown command `{}`; the commands are {}", topic.verb, Verb::all_names()));
        };
        if verb.is_player() != topic.player.is_some() {
            let form = if verb.is_player() { "players/<player>/command/" } else { "command/" };
            return refuse(
                id,
                format!(
                    "`{verb}` is a {} command: publish it to {}/{}/{form}{verb}",
                    if verb.is_player() { "player" } else { "server" },
                    self.prefix,
                    self.server
                ),
            );
        }
        if !self.allow.contains(&verb) {
            return refuse(id, format!("`{verb}` is not allowed; add it to commands.allow to enable it"));
        }
        if let Some(id) = &id {
            if self.ids.contains_key(id) {
                return refuse(
                    Some(id.clone()),
                    format!("duplicate: a command with this id ran in the last {}s", DUPLICATE_WINDOW.as_secs()),
                );
            }
        }
        if self.executed.len() >= self.rate_limit {
            return refuse(
                id,
                format!(
                    "rate limited: {} commands already ran in the last {:?} (commands.rate_limit)",
                    self.rate_limit, self.rate_window
                ),
            );
        }
        let args = match request::args(verb, &payload) {
            Ok(args) => args,
            Err(error) => return refuse(id, error),
        };
        self.executed.push_back(now);
        if let Some(id) = &id {
            self.ids.insert(id.clone(), now);
        }
        Decision::Execute(Command { id, verb, player: topic.player.map(str::to_owned), args })
    }

    fn forget_before(&mut self, now: Instant) {
        while self.executed.front().is_some_and(|t| now.duration_since(*t) >= self.rate_window) {
            self.executed.pop_front();
        }
        self.ids.retain(|_, t| now.duration_since(*t) < DUPLICATE_WINDOW);
        self.packets.retain(|_, t| now.duration_since(*t) < DUPLICATE_WINDOW);
    }
}

/// The payload as a JSON object.
fn payload_object(payload: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the payload must be a JSON object ({} for a command without arguments)".into()),
        Err(error) => Err(format!("malformed JSON: {error}")),
    }
}

/// The payload's `id`, if it has one; the error when it is not a string of at most [`MAX_ID`] characters.
fn valid_id(payload: &Map<String, Value>) -> Result<Option<String>, String> {
    match payload.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if id.chars().count() <= MAX_ID => Ok(Some(id.clone())),
        Some(_) => Err(format!("`id` must be a string of at most {MAX_ID} characters")),
    }
}

/// What running a command came to: the PMS status of the request that acted (or of the look-up that failed),
/// and an error sentence when it did not work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// Runs one server's commands until `cancel` fires.
pub struct CommandTask {
    pub config: CommandsConfig,
    pub http: PlexHttp,
    pub topics: ServerTopics,
    pub prefix: String,
    pub publisher: Publisher,
}

impl CommandTask {
    pub async fn run(self, mut inbound: mpsc::Receiver<InboundCommand>, cancel: CancellationToken) {
        let mut gate = Gate::new(&self.config, &self.prefix, self.topics.server_segment());
        let mut running = JoinSet::new();
        // Players may ignore a `commandID` not above the last one from this controller: start from the clock, so
        // a restarted bridge goes on counting upwards.
        let mut command_id =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        loop {
            let message = tokio::select! {
                () = cancel.cancelled() => break,
                Some(_) = running.join_next(), if !running.is_empty() => continue,
                message = inbound.recv() => match message { Some(m) => m, None => break },
            };
            match gate.check(&message, Instant::now()) {
                Decision::Ignore => {
                    tracing::debug!(topic = %message.topic, "command message ignored (retained again, or a redelivery)")
                }
                Decision::Refuse { id, verb, target, error } => {
                    tracing::info!(%verb, %target, %error, "command refused");
                    self.publish_result(
                        id.as_deref(),
                        &verb,
                        &target,
                        &Outcome { status: None, error: Some(error) },
                        0,
                    );
                }
                Decision::Execute(command) => {
                    command_id += 1;
                    let (http, publisher, topics) = (self.http.clone(), self.publisher.clone(), self.topics.clone());
                    let task = CommandTask {
                        config: self.config.clone(),
                        http,
                        topics,
                        prefix: self.prefix.clone(),
                        publisher,
                    };
                    running.spawn(async move { task.execute(command, command_id).await });
                }
            }
        }
        let drain = async { while running.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_ON_STOP, drain).await.is_err() {
            tracing::warn!("commands still running at shutdown were abandoned without a result");
        }
    }

    async fn execute(self, command: Command, command_id: u64) {
        let started = Instant::now();
        let outcome = self.act(&command, command_id).await;
        let took_ms = started.elapsed().as_millis() as u64;
        let target = command.player.clone().unwrap_or_else(|| self.topics.server_segment().to_owned());
        let verb = command.verb.name();
        match &outcome.error {
            None => tracing::info!(verb, %target, status = ?outcome.status, took_ms, "command executed"),
            Some(error) => tracing::info!(verb, %target, status = ?outcome.status, took_ms, %error, "command failed"),
        }
        self.publish_result(command.id.as_deref(), verb, &target, &outcome, took_ms);
    }

    /// Resolves what the command names against the server's lists, then makes the request that acts.
    async fn act(&self, command: &Command, command_id: u64) -> Outcome {
        let lookup = |path: &'static str| async move {
            self.http.get_bytes_limited(path, MAX_ANSWER).await.map_err(|error| match error {
                PlexError::Unauthorized(status) | PlexError::Status(status) => {
                    failure(command.verb, Some(status), None)
                }
                PlexError::NotFound => failure(command.verb, Some(404), None),
                other => failure(command.verb, None, Some(&other)),
            })
        };
        let request = match &command.args {
            Args::LibraryScan { section: None, .. } => PmsRequest::get("/library/sections/all/refresh".into(), vec![]),
            Args::LibraryScan { section: Some(wanted), path } => {
                let body = match lookup("/library/sections").await {
                    Ok(body) => body,
                    Err(outcome) => return outcome,
                };
                let sections = request::sections(&body);
                let Some(section) = request::find_section(&sections, wanted) else {
                    let known: Vec<&str> = sections.iter().map(|s| s.title.as_str()).collect();
                    return refusal(format!("unknown section {wanted:?}; this server has {}", known.join(", ")));
                };
                if !section.key.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return refusal(format!("the server lists section {:?} with an unusable key", section.title));
                }
                let query = path.iter().map(|p| ("path", p.clone())).collect();
                PmsRequest::get(format!("/library/sections/{}/refresh", section.key), query)
            }
            Args::TerminateSession { session_key, reason } => {
                let body = match lookup("/status/sessions").await {
                    Ok(body) => body,
                    Err(outcome) => return outcome,
                };
                let Some(session_id) = request::session_id(&body, session_key) else {
                    return refusal(format!("no stream with session key {session_key:?} is playing on the server"));
                };
                let query = vec![("sessionId", session_id), ("reason", reason.clone())];
                PmsRequest::get("/status/sessions/terminate".into(), query)
            }
            Args::Butler { task } => PmsRequest {
                method: reqwest::Method::POST,
                path: format!("/butler/{task}"),
                query: vec![],
                headers: vec![],
            },
            Args::Player { offset_ms } => {
                let body = match lookup("/status/sessions").await {
                    Ok(body) => body,
                    Err(outcome) => return outcome,
                };
                let segment = command.player.as_deref().unwrap_or_default();
                let Some(machine_identifier) = request::player_id(&body, segment) else {
                    return refusal(format!(
                        "unknown player {segment:?}: no session on the server is playing on it (players are \
                             reachable while they play, pause or buffer)"
                    ));
                };
                let mut query = vec![("commandID", command_id.to_string()), ("type", "video".to_owned())];
                query.extend(offset_ms.map(|ms| ("offset", ms.to_string())));
                let path = format!("/player/playback/{}", request::player_command(command.verb));
                PmsRequest {
                    headers: vec![("X-Plex-Target-Client-Identifier", machine_identifier)],
                    ..PmsRequest::get(path, query)
                }
            }
        };
        let PmsRequest { method, path, query, headers } = request;
        match self.http.act(method, &path, &query, &headers, MAX_ANSWER).await {
            Ok(answer) if (200..300).contains(&answer.status) => Outcome { status: Some(answer.status), error: None },
            Ok(answer) => failure(command.verb, Some(answer.status), None),
            Err(error) => failure(command.verb, None, Some(&error)),
        }
    }

    fn publish_result(&self, id: Option<&str>, verb: &str, target: &str, outcome: &Outcome, took_ms: u64) {
        let result = json!({
            "id": id,
            "verb": verb,
            "target": target,
            "ok": outcome.error.is_none(),
            "status": outcome.status,
            "error": outcome.error,
            "took_ms": took_ms,
        });
        let payload = Bytes::from(result.to_string());
        self.publisher.apply([Action::Live { topic: self.topics.command_result(), payload }]);
    }
}

/// The one request that acts for a command.
struct PmsRequest {
    method: reqwest::Method,
    path: String,
    query: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, String)>,
}

impl PmsRequest {
    fn get(path: String, query: Vec<(&'static str, String)>) -> Self {
        PmsRequest { method: reqwest::Method::GET, path, query, headers: vec![] }
    }
}

/// A command refused after looking at the server's lists (no request that acts was made).
fn refusal(error: String) -> Outcome {
    Outcome { status: None, error: Some(error) }
}

/// A PMS answer that is not a success, or no answer, as a sentence.
fn failure(verb: Verb, status: Option<u16>, error: Option<&PlexError>) -> Outcome {
    let plex_pass = if verb == Verb::TerminateSession {
        "; stopping streams needs Plex Pass on the server and the owner's token"
    } else {
        ""
    };
    let text = match (status, error) {
        (Some(401), _) => format!("PMS refused the token (HTTP 401){plex_pass}"),
        (Some(403), _) => format!("PMS forbids this (HTTP 403){plex_pass}"),
        (Some(404), _) if verb.is_player() => {
            "PMS answered 404: the player cannot be reached through the server".into()
        }
        (Some(status), _) => format!("PMS answered HTTP {status}"),
        // The token file could not be read: nothing was sent, so the server is not to blame.
        (None, Some(error @ PlexError::TokenFile { .. })) => error.to_string(),
        (None, Some(error)) => format!("PMS unreachable: {error}"),
        (None, None) => "PMS gave no answer".into(),
    };
    Outcome { status, error: Some(text) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allow: &[Verb]) -> CommandsConfig {
        CommandsConfig {
            enabled: true,
            allow: allow.iter().copied().collect(),
            rate_limit: 2,
            rate_window: Duration::from_secs(10),
        }
    }

    fn message(topic: &str, payload: &str) -> InboundCommand {
        InboundCommand {
            size: payload.len(),
            topic: topic.into(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            retain: false,
            pkid: 0,
            dup: false,
        }
    }

    fn error(decision: Decision) -> String {
        match decision {
            Decision::Refuse { error, .. } => error,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_rules_refuse_in_order() {
        let mut gate = Gate::new(&config(&[Verb::LibraryScan, Verb::Pause]), "plex", "home");
        let now = Instant::now();
        let scan = "plex/home/command/library_scan";
        let retained = InboundCommand { retain: true, ..message(scan, "") };
        assert!(error(gate.check(&retained, now)).contains("mosquitto_pub -r -n -t 'plex/home/command/library_scan'"));
        assert_eq!(gate.check(&retained, now), Decision::Ignore, "reported once");
        assert_eq!(gate.check(&message(scan, ""), now), Decision::Ignore, "the empty message that clears it");
        assert!(error(gate.check(&message(scan, &"x".repeat(MAX_PAYLOAD + 1)), now)).contains("too large"));
        assert!(error(gate.check(&message(scan, "{nope"), now)).contains("malformed JSON"));
        assert!(error(gate.check(&message(scan, "[1]"), now)).contains("JSON object"));
        assert!(error(gate.check(&message(scan, &format!(r#"{{"id":"{}"}}"#, "i".repeat(65))), now)).contains("`id`"));
        assert!(error(gate.check(&message("plex/home/command/reboot", "{}"), now)).contains("unknown command"));
        assert!(error(gate.check(&message("plex/home/command/pause", "{}"), now)).contains("player command"));
        assert!(error(gate.check(&message("plex/home/players/tv/command/stop", "{}"), now)).contains("not allowed"));
        assert!(matches!(gate.check(&message(scan, r#"{"id":"a"}"#), now), Decision::Execute(_)));
        assert!(error(gate.check(&message(scan, r#"{"id":"a"}"#), now)).contains("duplicate"));
        assert!(matches!(gate.check(&message("plex/home/players/tv/command/pause", "{}"), now), Decision::Execute(_)));
        assert!(error(gate.check(&message(scan, "{}"), now)).contains("rate limited"));
        let later = now + Duration::from_secs(11);
        assert!(error(gate.check(&message(scan, ""), later)).contains("not a command"), "an empty message");
        assert!(matches!(gate.check(&message(scan, "{}"), later), Decision::Execute(_)), "the window moved on");
        assert!(matches!(gate.check(&message(scan, r#"{"id":"a"}"#), later + DUPLICATE_WINDOW), Decision::Execute(_)));
    }

    #[test]
    fn a_qos1_redelivery_runs_once() {
        let mut gate = Gate::new(&config(&[Verb::LibraryScan]), "plex", "home");
        let now = Instant::now();
        let first = InboundCommand { pkid: 7, ..message("plex/home/command/library_scan", "{}") };
        assert!(matches!(gate.check(&first, now), Decision::Execute(_)));
        assert_eq!(gate.check(&InboundCommand { dup: true, ..first.clone() }, now), Decision::Ignore);
        assert!(matches!(gate.check(&first, now), Decision::Execute(_)), "a reused packet id without DUP is new");
    }
}
