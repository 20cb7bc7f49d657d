//! One server's command task: takes the messages the publisher routes to it, lets the [`Gate`] decide, runs the
//! allowed ones against the PMS (resolving sections, sessions and players from the server's own lists first)
//! and publishes one result per command.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::gate::Gate;
use super::request::{self, Args};
use super::{Command, Decision, DRAIN_ON_STOP, MAX_ANSWER};
use crate::command_verb::Verb;
use crate::config::CommandsConfig;
use crate::log_limit::LogLimiter;
use crate::mqtt::{CommandReceiver, Publisher};
use crate::plex::http::PlexHttp;
use crate::plex::PlexError;
use crate::telemetry::telemetry;
use crate::topic::ServerTopics;

#[derive(Debug, Clone, PartialEq, Eq)]
/// What running a command came to: the PMS status of the request that acted (or of the look-up that failed),
/// and an error sentence when it did not work.
pub struct Outcome {
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The request that acts reached the PMS (whatever it answered): the command keeps its id and rate slot.
    pub ran: bool,
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
    /// Answers every message of `inbound` until `cancel` fires: one result each, except in a flood (then one
    /// coalesced notice counts those without a result of their own).
    pub async fn run(self, mut inbound: CommandReceiver, cancel: CancellationToken) {
        let mut gate = Gate::new(&self.config, &self.prefix, self.topics.server_segment());
        let mut running = JoinSet::new();
        let mut unanswered = Unanswered::default();
        // Players may ignore a `commandID` not above the last one from this controller: start from the clock, so
        // a restarted bridge goes on counting upwards.
        let mut command_id =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        loop {
            let message = tokio::select! {
                () = cancel.cancelled() => break,
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    if let Ok((command, ran)) = joined {
                        gate.settle(&command, ran);
                    }
                    continue;
                }
                () = tokio::time::sleep(QUIET), if unanswered.pending() => {
                    unanswered.flush(&self);
                    continue;
                }
                message = inbound.recv() => match message { Some(m) => m, None => break },
            };
            match gate.check(&message, Instant::now()) {
                Decision::Ignore => {
                    telemetry().commands("ignored", 1);
                    tracing::debug!(topic = %message.topic, "command message ignored (retained again, or a redelivery)")
                }
                Decision::Refuse { id, verb, target, error } => {
                    telemetry().commands("refused", 1);
                    crate::log_limited!(unanswered.refusal_log, info, %verb, %target, %error, "command refused");
                    let outcome = Outcome { status: None, error: Some(error), ran: false };
                    if !self.publish_result(id.as_deref(), &verb, &target, &outcome, 0, false) {
                        unanswered.count += 1;
                    }
                }
                Decision::Execute(command) => {
                    telemetry().commands("executed", 1);
                    command_id += 1;
                    let (http, publisher, topics) = (self.http.clone(), self.publisher.clone(), self.topics.clone());
                    let task = CommandTask {
                        config: self.config.clone(),
                        http,
                        topics,
                        prefix: self.prefix.clone(),
                        publisher,
                    };
                    running.spawn(async move {
                        let ran = task.execute(&command, command_id).await;
                        (command, ran)
                    });
                }
            }
            unanswered.count += inbound.take_overflow();
        }
        let drain = async { while running.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_ON_STOP, drain).await.is_err() {
            tracing::warn!("commands still running at shutdown were abandoned without a result");
        }
    }

    /// Runs one command and publishes its result; returns whether it ran (made its request that acts).
    async fn execute(&self, command: &Command, command_id: u64) -> bool {
        let started = Instant::now();
        let outcome = self.act(command, command_id).await;
        let took_ms = started.elapsed().as_millis() as u64;
        let target = command.player.clone().unwrap_or_else(|| self.topics.server_segment().to_owned());
        let verb = command.verb.name();
        match &outcome.error {
            None => tracing::info!(verb, %target, status = ?outcome.status, took_ms, "command executed"),
            Some(error) => tracing::info!(verb, %target, status = ?outcome.status, took_ms, %error, "command failed"),
        }
        self.publish_result(command.id.as_deref(), verb, &target, &outcome, took_ms, true);
        outcome.ran
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
            Ok(answer) if (200..300).contains(&answer.status) => {
                Outcome { status: Some(answer.status), error: None, ran: true }
            }
            Ok(answer) => Outcome { ran: true, ..failure(command.verb, Some(answer.status), None) },
            Err(error) => Outcome { ran: !error.never_reached_server(), ..failure(command.verb, None, Some(&error)) },
        }
    }

    /// Publishes one result in the answer lane; `always` for a command that passed the gate (a refusal that finds
    /// the lane full is not published: false).
    fn publish_result(
        &self,
        id: Option<&str>,
        verb: &str,
        target: &str,
        outcome: &Outcome,
        took_ms: u64,
        always: bool,
    ) -> bool {
        let result = json!({
            "id": id,
            "verb": verb,
            "target": target,
            "ok": outcome.error.is_none(),
            "status": outcome.status,
            "error": outcome.error,
            "took_ms": took_ms,
        });
        self.publisher.answer(self.topics.command_result(), result.to_string(), always)
    }
}

/// A flood has drained once no command came for this long: then its notice is published and its count logged
/// (tried again after as long while the answer lane is still full).
const QUIET: Duration = Duration::from_secs(1);

/// A flood's account. Each command gets one result, except in a flood: commands that find the server's command
/// queue full (they are never looked at, so never run) and refusals that find the answer lane full get no result
/// of their own. They are counted, and once the flood has drained ([`QUIET`]) one coalesced notice says how many
/// there were (`"verb": null`, `"unanswered": N`), logged once; refusals are logged once per episode
/// ([`crate::log_limit`]), with the count of the others when it ends.
#[derive(Default)]
struct Unanswered {
    count: u64,
    refusal_log: LogLimiter,
}

impl Unanswered {
    /// Whether a notice or a count of refusals waits for a quiet moment.
    fn pending(&self) -> bool {
        self.count > 0 || self.refusal_log.has_counted()
    }

    /// At a quiet moment: ends the refusals' log episode and publishes the notice if the answer lane has room.
    fn flush(&mut self, task: &CommandTask) {
        if let Some(not_logged) = self.refusal_log.end() {
            tracing::info!(not_logged, "more commands were refused (logged at debug level)");
        }
        if self.count == 0 || !task.publisher.answer_room() {
            return;
        }
        let count = std::mem::take(&mut self.count);
        telemetry().commands("unanswered", count);
        tracing::warn!(unanswered = count, "a flood of commands: these got no result of their own and did not run");
        let notice = json!({
            "id": null,
            "verb": null,
            "target": task.topics.server_segment(),
            "ok": false,
            "status": null,
            "error": format!("flood: {count} commands got no result of their own and did not run (the command \
                queue or the result lane was full)"),
            "unanswered": count,
            "took_ms": 0,
        });
        task.publisher.answer(task.topics.command_result(), notice.to_string(), true);
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
    Outcome { status: None, error: Some(error), ran: false }
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
        // The token file could not be read, or the bridge had no descriptor left: nothing was sent, so the server
        // is not to blame.
        (None, Some(error @ (PlexError::TokenFile { .. } | PlexError::OutOfFileDescriptors(_)))) => error.to_string(),
        (None, Some(error)) => format!("PMS unreachable: {error}"),
        (None, None) => "PMS gave no answer".into(),
    };
    Outcome { status, error: Some(text), ran: false }
}
