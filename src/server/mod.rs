//! One Plex server, from its socket to the publisher:
//! - [`supervisor`]: the reconnect loop (identity, backoff, the server's `state`), nothing else;
//! - [`transport`]: opens the configured transport (WebSocket, EventSource, or `auto` with the fallback);
//! - [`forwarder`]: the per-notification hot path (decode → route → publish; stateful kinds to the state task)
//!   and the read gate that pauses the socket while what it feeds is full;
//! - [`announce`]: the server's retained `info` and its Home Assistant device, also for a server that has not
//!   answered yet;
//! - [`commands`]: the life of the server's command task;
//! - [`state_task`]: playback sessions, players, library events and activities, kept true by REST look-ups
//!   ([`lookups`], timed by [`lookup_timing`]); what the tracker's effects become is [`effects`], what it
//!   publishes for players [`player_side`], the running activities [`activities`], and the retained state it
//!   makes true again after a (re)connect [`reconcile`].

pub mod activities;
pub mod announce;
pub mod commands;
pub mod effects;
pub mod forwarder;
pub mod lookup_timing;
pub mod lookups;
pub mod player_side;
pub mod reconcile;
pub mod state_task;
pub mod supervisor;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;

use crate::config::{CommandsConfig, PlayersConfig, PlexConfig};
use crate::discovery::{Discovery, KnownServers};
use crate::mqtt::{CommandInbox, Publisher};
use crate::topic::BridgeTopics;

/// How long a step that must see the broker's leftovers (what an earlier run retained) waits for the start-up
/// read of them; well under a second once the broker is reached.
pub const LEFTOVERS_WAIT: Duration = Duration::from_secs(3);

/// What the tasks of every server share: one per bridge, built by the wiring.
#[derive(Clone)]
pub struct Context {
    pub plex: Arc<PlexConfig>,
    /// The `X-Plex-*` client headers.
    pub headers: HeaderMap,
    pub publisher: Publisher,
    pub bridge_topics: BridgeTopics,
    /// Home Assistant discovery, when enabled.
    pub discovery: Option<Discovery>,
    /// Where each server's device id is reported once known (stale discovery clean-up waits for all of them).
    pub known_servers: KnownServers,
    pub players: PlayersConfig,
    /// Commands from MQTT (`[commands] enabled`): the settings and where the publisher routes them.
    pub commands: Option<(CommandsConfig, CommandInbox)>,
}
