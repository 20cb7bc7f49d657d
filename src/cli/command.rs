//! `plex-mqtt-bridge command`: publishes one command the way an automation would and prints its result, for
//! users trying commands out and for scripts (exit 0 when the result says `ok`).

use std::time::Duration;

use rumqttc::{Event, Packet, PublishOptions, QoS};
use serde_json::{json, Map, Value};

use crate::command_verb::Verb;
use crate::config::Config;
use crate::topic::{BridgeTopics, ServerName};

/// `command`'s flags: what to publish.
#[derive(clap::Args, Debug)]
pub struct CommandArgs {
    /// The server's topic name (as in `plex/<server>/…`).
    #[arg(long)]
    server: String,
    /// library_scan, terminate_session, butler, play, pause, stop, skip_next, skip_previous or seek.
    verb: String,
    /// For player verbs: the player's topic level (`plex/<server>/players/<player>`).
    #[arg(long)]
    player: Option<String>,
    /// library_scan: the section id or title (default: every library).
    #[arg(long)]
    section: Option<String>,
    /// library_scan: one folder of that section.
    #[arg(long)]
    path: Option<String>,
    /// terminate_session: the stream's session key.
    #[arg(long)]
    session_key: Option<String>,
    /// terminate_session: the message the viewer sees.
    #[arg(long)]
    reason: Option<String>,
    /// butler: the task, e.g. BackupDatabase.
    #[arg(long)]
    task: Option<String>,
    /// seek: the position in milliseconds.
    #[arg(long)]
    offset_ms: Option<u64>,
    /// How long to wait for the result.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Publishes the command, prints its result: exit 0 when it ran, 1 when it was refused or failed.
pub fn main(config: &Config, args: CommandArgs) -> std::process::ExitCode {
    let CommandArgs { server, verb, player, section, path, session_key, reason, task, offset_ms, timeout } = args;
    let mut named = Map::new();
    for (key, value) in
        [("section", section), ("path", path), ("session_key", session_key), ("reason", reason), ("task", task)]
    {
        if let Some(value) = value {
            named.insert(key.into(), value.into());
        }
    }
    if let Some(offset) = offset_ms {
        named.insert("offset_ms".into(), offset.into());
    }
    let request = CommandRequest { server, verb, player, args: named, timeout };
    let Some(runtime) = super::runtime() else { return std::process::ExitCode::FAILURE };
    match runtime.block_on(run(config, &request)) {
        Ok(result) => {
            println!("{result}");
            if result["ok"] == true {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("plex-mqtt-bridge: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What to send: the verb and its arguments as the flags gave them.
#[derive(Debug, Clone, Default)]
pub struct CommandRequest {
    /// The server's topic name (`[[servers]] name`, as in its topics).
    pub server: String,
    pub verb: String,
    /// For player verbs: the player's topic level (`…/players/<player>/…`).
    pub player: Option<String>,
    /// Arguments (`section`, `path`, `session_key`, `reason`, `task`, `offset_ms`).
    pub args: Map<String, Value>,
    pub timeout: Duration,
}

/// Why the command could not be sent or answered (its own refusal is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum CommandCliError {
    #[error("`--server {0}` cannot be a topic level: {1}")]
    Server(String, &'static str),
    #[error("unknown command `{0}`; the commands are {1}")]
    Verb(String, String),
    #[error("`--player` cannot be a topic level: it {0}; use the player's level as in plex/<server>/players/<player>")]
    Player(&'static str),
    #[error("`{0}` is a player command: give the player with --player")]
    NeedsPlayer(String),
    #[error("`{0}` is a server command: leave out --player")]
    NoPlayer(String),
    #[error("MQTT: {0}")]
    Mqtt(String),
    #[error("no result within {0:?}: is the bridge running, with [commands] enabled, and is --server its topic name?")]
    NoResult(Duration),
}

/// Publishes the command and waits for its result; returns the result document.
pub async fn run(config: &Config, request: &CommandRequest) -> Result<Value, CommandCliError> {
    let name = ServerName::configured(&request.server)
        .ok_or_else(|| CommandCliError::Server(request.server.clone(), "use the server's name as in its topics"))?;
    let verb =
        Verb::parse(&request.verb).ok_or_else(|| CommandCliError::Verb(request.verb.clone(), Verb::all_names()))?;
    let topics = BridgeTopics::new(&config.mqtt.topic_prefix).server(&name);
    if let Some(problem) = request.player.as_deref().and_then(|p| crate::topic::topic_text_problem(p, false)) {
        return Err(CommandCliError::Player(problem));
    }
    let topic = match (&request.player, verb.is_player()) {
        (Some(player), true) => topics.player_command(player, verb.name()),
        (None, false) => topics.server_command(verb.name()),
        (None, true) => return Err(CommandCliError::NeedsPlayer(request.verb.clone())),
        (Some(_), false) => return Err(CommandCliError::NoPlayer(request.verb.clone())),
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let id = format!("cli-{}-{nanos}", std::process::id());
    let mut payload = request.args.clone();
    payload.insert("id".into(), json!(id));

    let (client, mut eventloop) = super::broker_client::short_lived_client(&config.mqtt, "cli", 8)
        .map_err(|e| CommandCliError::Mqtt(e.to_string()))?;
    let result_topic = topics.command_result();
    let wait = async {
        let mut published = false;
        loop {
            match eventloop.poll().await.map_err(|e| CommandCliError::Mqtt(e.to_string()))? {
                Event::Incoming(Packet::ConnAck(_)) => {
                    client
                        .subscribe(result_topic.clone(), QoS::AtLeastOnce)
                        .await
                        .map_err(|e| CommandCliError::Mqtt(e.to_string()))?;
                }
                Event::Incoming(Packet::SubAck(_)) if !published => {
                    published = true;
                    let options = PublishOptions::new(QoS::AtLeastOnce).retain(false);
                    let body = Value::Object(payload.clone()).to_string();
                    client
                        .publish(topic.clone(), body.into_bytes(), options)
                        .await
                        .map_err(|e| CommandCliError::Mqtt(e.to_string()))?;
                }
                Event::Incoming(Packet::Publish(p)) if p.topic == result_topic.as_bytes() => {
                    let result: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    if result["id"] == json!(id) {
                        return Ok(result);
                    }
                }
                _ => {}
            }
        }
    };
    let outcome =
        tokio::time::timeout(request.timeout, wait).await.map_err(|_| CommandCliError::NoResult(request.timeout))?;
    let _ = client.try_disconnect();
    outcome
}
