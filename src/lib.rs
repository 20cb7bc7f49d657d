//! plex-mqtt-bridge: keeps a live notification session open to each configured Plex Media Server and bridges
//! every notification to MQTT, with retained state (server and bridge availability, running activities) that
//! stays true across reconnects of either side.
//!
//! The modules follow one notification from the socket to the broker: [`config`] → [`supervisor`] (one per
//! server) → [`plex`] (transport and decoding) → [`router`] → [`mqtt`] (via the [`outbox`]).

pub mod app;
pub mod atomic_file;
pub mod backoff;
pub mod bridge_info;
pub mod check;
pub mod command_cli;
pub mod command_verb;
pub mod commands;
pub mod config;
pub mod discovery;
pub mod http_server;
pub mod lenient;
pub mod library;
pub mod logging;
pub mod login;
pub mod mqtt;
pub mod outbox;
pub mod playback;
pub mod players;
pub mod plex;
pub mod plextv;
pub mod router;
pub mod sd_notify;
pub mod secret;
pub mod server_state;
pub mod supervisor;
pub mod telemetry;
pub mod tls;
pub mod topic;
pub mod webhook;
