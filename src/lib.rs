//! plex-mqtt-bridge: keeps a live notification session open to each configured Plex Media Server and bridges
//! every notification to MQTT, with retained state (server and bridge availability, running activities) that
//! stays true across reconnects of either side.
//!
//! The folders follow one notification from the socket to the broker: [`app`] wires one [`server`] task per
//! Plex server and one [`mqtt`] connection; a server's [`plex`] transport hands each frame to its forwarder,
//! which decodes it, lets the [`model`] router map it to topics and gives the result to the publisher.

pub mod addon;
pub mod app;
pub mod atomic_file;
pub mod backoff;
pub mod cli;
pub mod command_verb;
pub mod commands;
pub mod config;
pub mod discovery;
pub mod fd_limit;
pub mod http_error;
pub mod lenient;
pub mod log_limit;
pub mod logging;
pub mod model;
pub mod mqtt;
pub mod plex;
pub mod plextv;
pub mod sd_notify;
pub mod secret;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod topic;
