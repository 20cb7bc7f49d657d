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

pub mod gate;
pub mod request;
pub mod task;

pub use gate::Gate;
pub use task::CommandTask;

use std::time::Duration;

use crate::command_verb::Verb;
use request::Args;

/// Largest command payload read; larger ones are refused without being parsed.
pub const MAX_PAYLOAD: usize = crate::command_verb::MAX_PAYLOAD;
/// Longest `id` echoed in results.
pub const MAX_ID: usize = 64;
/// How long an executed `id` (and a delivered packet id) is remembered.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(60);
/// Most bytes of a PMS answer kept (the lists commands resolve against are small; more is not read).
pub const MAX_ANSWER: usize = 4 << 20;
/// Commands waiting for their task at most (a flood beyond is counted and answered with one coalesced notice).
/// Oversized payloads are not queued (see `InboundCommand::size`), so this bounds memory at about 4 MiB.
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
    /// When the gate let it through (it holds the command's id and rate slot until it is settled).
    pub reserved_at: std::time::Instant,
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
