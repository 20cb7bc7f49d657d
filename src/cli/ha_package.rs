//! `plex-mqtt-bridge homeassistant-package`: writes a Home Assistant package with a media player per Plex player
//! the bridge knows (built by `discovery::media_player`). The players are found where the bridge itself finds
//! them after a restart, in the retained player states and server `info` on the broker, so the package matches
//! what the running bridge announced, whichever machine runs the command.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rumqttc::{Event, Packet, QoS, SubscribeFilter};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::Config;
use crate::discovery::{offered_commands, Discovery, KnownPlayer};
use crate::model::players::Players;
use crate::topic::{BridgeTopics, ServerName};

/// `homeassistant-package`'s flags.
#[derive(clap::Args, Debug)]
pub struct PackageArgs {
    /// Write the package to this file (e.g. /config/packages/plex_media_players.yaml) instead of printing it.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// How long to wait for the broker to connect and confirm the subscription.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Why no package was written.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(
        "Home Assistant discovery is off ([homeassistant] enabled = false): the media players would have no entities \
         to show; turn it on first"
    )]
    DiscoveryOff,
    #[error("MQTT: {0}")]
    Mqtt(String),
    #[error("the broker did not confirm the subscription within {0:?}")]
    NoAnswer(Duration),
    #[error(
        "no player found under {0}/+/players/ (a player is listed once it has played while the bridge ran, and \
         its server has answered the bridge); is the bridge running with this topic prefix?"
    )]
    NoPlayers(String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// How long retained messages may keep arriving after the subscription is confirmed (the broker sends them all at
/// once): the list is complete after this long without one.
const SETTLE: Duration = Duration::from_millis(500);

/// Writes (or prints) the package: exit 0 when written, 78 with discovery off, 1 otherwise.
pub fn main(config: &Config, args: PackageArgs) -> ExitCode {
    let Some(runtime) = super::runtime() else { return ExitCode::FAILURE };
    match runtime.block_on(run(config, &args)) {
        Ok(summary) => {
            eprintln!("plex-mqtt-bridge: {summary}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("plex-mqtt-bridge: {error}");
            let config_error = matches!(error, PackageError::DiscoveryOff);
            if config_error {
                ExitCode::from(super::EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Reads the players, builds the package and writes it; returns what was written, for the operator.
async fn run(config: &Config, args: &PackageArgs) -> Result<String, PackageError> {
    if !config.homeassistant.enabled {
        return Err(PackageError::DiscoveryOff);
    }
    let bridge = BridgeTopics::new(&config.mqtt.topic_prefix);
    let retained = read_retained(config, &bridge.player_filters(), args.timeout).await?;
    let (players, skipped) = known_players(&bridge, &retained);
    for reason in &skipped {
        eprintln!("plex-mqtt-bridge: left out {reason}");
    }
    if players.is_empty() {
        return Err(PackageError::NoPlayers(config.mqtt.topic_prefix.clone()));
    }
    let allowed = config.commands.allowed(|verb| verb.is_player());
    let discovery = Discovery::new(&config.homeassistant.discovery_prefix, &config.mqtt.topic_prefix);
    let package = discovery.media_player_package(&bridge, &players, &allowed);
    let offered: Vec<&str> = offered_commands(&allowed).into_iter().map(|(action, _)| action).collect();
    let commands = match offered.as_slice() {
        [] => "read-only (no player command allowed)".to_owned(),
        some => format!("with {}", some.join(", ")),
    };
    let summary = format!("{} media player(s), {commands}", players.len());
    match &args.output {
        Some(path) => {
            std::fs::write(path, package).map_err(|e| PackageError::Write(path.clone(), e))?;
            Ok(format!("wrote {summary} to {}", path.display()))
        }
        None => {
            print!("{package}");
            Ok(summary)
        }
    }
}

/// The retained messages on `filters` (empty ones, which clear a topic, left out).
async fn read_retained(
    config: &Config,
    filters: &[String],
    timeout: Duration,
) -> Result<BTreeMap<String, Vec<u8>>, PackageError> {
    let (client, mut eventloop) = super::broker_client::short_lived_client(&config.mqtt, "package", 64)
        .map_err(|e| PackageError::Mqtt(e.to_string()))?;
    let mut found = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    // Until the SUBACK: the deadline; after it, each retained message extends the settle window.
    let mut until = deadline;
    let mut subscribed = false;
    loop {
        let event = match tokio::time::timeout_at(until, eventloop.poll()).await {
            Err(_) if subscribed => break,
            Err(_) => return Err(PackageError::NoAnswer(timeout)),
            Ok(event) => event.map_err(|e| PackageError::Mqtt(e.to_string()))?,
        };
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                let wanted = filters.iter().map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                client.subscribe_many(wanted).await.map_err(|e| PackageError::Mqtt(e.to_string()))?;
            }
            Event::Incoming(Packet::SubAck(_)) => {
                subscribed = true;
                until = Instant::now() + SETTLE;
            }
            Event::Incoming(Packet::Publish(publish)) if publish.retain && !publish.payload.is_empty() => {
                found.insert(String::from_utf8_lossy(&publish.topic).into_owned(), publish.payload.to_vec());
                if subscribed {
                    until = Instant::now() + SETTLE;
                }
            }
            _ => {}
        }
    }
    let _ = client.try_disconnect();
    Ok(found)
}

/// The players in `retained` whose server is identified (its `info` is there), sorted by server and name, and a
/// reason for each player state left out.
pub fn known_players(bridge: &BridgeTopics, retained: &BTreeMap<String, Vec<u8>>) -> (Vec<KnownPlayer>, Vec<String>) {
    let servers: HashMap<&str, String> = retained
        .iter()
        .filter_map(|(topic, payload)| {
            let server = bridge.server_of_info(topic)?;
            let info: Value = serde_json::from_slice(payload).ok()?;
            let id = info["machine_identifier"].as_str().filter(|id| !id.is_empty())?;
            Some((server, id.to_owned()))
        })
        .collect();
    let mut players = Vec::new();
    let mut skipped = Vec::new();
    for (topic, payload) in retained {
        let Some((server, player)) = bridge.player_of_state(topic) else { continue };
        let doc: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        if !Players::is_own_state(player, &doc) {
            skipped.push(format!("{topic}: not a player state this bridge wrote"));
            continue;
        }
        let (Some(server_machine_identifier), Some(name)) = (servers.get(server), ServerName::configured(server))
        else {
            skipped.push(format!("{topic}: its server has no retained {server}/info (never identified)"));
            continue;
        };
        players.push(KnownPlayer {
            server: name,
            server_machine_identifier: server_machine_identifier.clone(),
            player: player.to_owned(),
            title: doc["player"]["name"].as_str().unwrap_or_default().to_owned(),
        });
    }
    players.sort_by(|a, b| {
        (&a.server, a.title.to_lowercase(), &a.player).cmp(&(&b.server, b.title.to_lowercase(), &b.player))
    });
    (players, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retained(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        entries.iter().map(|(topic, payload)| ((*topic).to_owned(), payload.as_bytes().to_vec())).collect()
    }

    #[test]
    fn players_come_from_their_retained_state_and_their_servers_info() {
        let bridge = BridgeTopics::new("plex");
        let player = |mid: &str, name: &str| {
            format!(r#"{{"state":"idle","player":{{"machine_identifier":"{mid}","name":"{name}"}}}}"#)
        };
        let (tv, phone, ghost) = (player("TV-1", "Living Room TV"), player("Ph", "alice's phone"), player("x", "X"));
        let found = retained(&[
            ("plex/home/info", r#"{"machine_identifier":"abc","friendly_name":"Home"}"#),
            ("plex/home/players/tv-1", &tv),
            ("plex/home/players/ph", &phone),
            ("plex/home/players/tv-1/events", &tv),
            ("plex/home/players/wrong", &phone),
            ("plex/away/players/x", &ghost),
            ("plex/bridge/info", r#"{"version":"0.1.0"}"#),
        ]);
        let (players, skipped) = known_players(&bridge, &found);
        let listed: Vec<(&str, &str, &str)> =
            players.iter().map(|p| (p.server.as_str(), p.player.as_str(), p.title.as_str())).collect();
        assert_eq!(listed, [("home", "ph", "alice's phone"), ("home", "tv-1", "Living Room TV")]);
        assert!(players.iter().all(|p| p.server_machine_identifier == "abc"));
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped.iter().any(|s| s.starts_with("plex/home/players/wrong")), "{skipped:?}");
        assert!(skipped.iter().any(|s| s.starts_with("plex/away/players/x")), "{skipped:?}");
    }
}
