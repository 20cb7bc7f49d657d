//! The safety rules of one server's commands (see [`super`]'s documentation for the list and their order): what
//! a message on a command topic may become, decided before anything reaches the PMS.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::request;
use super::{Command, Decision, DUPLICATE_WINDOW, MAX_ID, MAX_PAYLOAD, MAX_RETAINED_REPORTED};
use crate::command_verb::Verb;
use crate::config::CommandsConfig;
use crate::mqtt::InboundCommand;
use crate::topic::CommandTopic;

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
        // Reserved now, so a second command with the same id cannot start while this one runs; given back by
        // [`Gate::settle`] if it turns out not to run.
        self.executed.push_back(now);
        if let Some(id) = &id {
            self.ids.insert(id.clone(), now);
        }
        Decision::Execute(Command { id, verb, player: topic.player.map(str::to_owned), args, reserved_at: now })
    }

    /// How `command` ended: one that ran (made its request that acts on the PMS) keeps its id and rate slot; one
    /// refused after the gate (an unknown section, no such session or player) or that never reached the server
    /// gives them back, so a corrected command with the same id can follow at once.
    pub fn settle(&mut self, command: &Command, ran: bool) {
        if ran {
            return;
        }
        if let Some(slot) = self.executed.iter().position(|at| *at == command.reserved_at) {
            self.executed.remove(slot);
        }
        if let Some(id) = &command.id {
            if self.ids.get(id) == Some(&command.reserved_at) {
                self.ids.remove(id);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
    fn a_command_that_did_not_run_gives_its_id_and_rate_slot_back() {
        let mut gate = Gate::new(&config(&[Verb::LibraryScan]), "plex", "home");
        let now = Instant::now();
        let scan = "plex/home/command/library_scan";
        let Decision::Execute(first) = gate.check(&message(scan, r#"{"id":"reuse-1","section":"Nope"}"#), now) else {
            panic!("expected it to pass the gate")
        };
        assert!(error(gate.check(&message(scan, r#"{"id":"reuse-1"}"#), now)).contains("duplicate"), "while it runs");
        gate.settle(&first, false);
        let Decision::Execute(second) = gate.check(&message(scan, r#"{"id":"reuse-1"}"#), now) else {
            panic!("a refused id can be used again at once")
        };
        gate.settle(&second, true);
        assert!(error(gate.check(&message(scan, r#"{"id":"reuse-1"}"#), now)).contains("duplicate"));
        assert!(matches!(gate.check(&message(scan, "{}"), now), Decision::Execute(_)), "the given-back slot");
        assert!(error(gate.check(&message(scan, "{}"), now)).contains("rate limited"));
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
