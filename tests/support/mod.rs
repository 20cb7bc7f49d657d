//! Shared integration-test harness: a real Mosquitto broker, an MQTT probe, a fake Plex Media Server (and a fake
//! plex.tv), a real Home Assistant, and the daemon binary as a child process, plus what tests build their
//! inputs from: the bridge's config as a typed value ([`config`]), notification frames ([`frames`],
//! [`samples`]) and the timeouts and waits every test uses ([`wait`]). Each test file says `mod support;` and
//! uses the parts it needs.
//!
//! Rules the harness keeps: loopback only (127.0.0.1), every wait bounded by a timeout, every process and task
//! it starts stopped on Drop, readiness checked instead of guessed with sleeps, a missing part (Mosquitto,
//! Home Assistant, openssl) a failure with the command that installs it, never a silent skip.
// Each test file uses a subset of the harness.
#![allow(dead_code, unused_imports)]

pub mod bridge;
pub mod config;
pub mod fake_plextv;
pub mod fake_pms;
pub mod fake_supervisor;
pub mod fixture;
pub mod frames;
pub mod home_assistant;
pub mod http;
pub mod mosquitto;
pub mod mqtt;
pub mod samples;
pub mod sessions;
pub mod tls;
pub mod wait;

pub use bridge::{Bridge, TokenFile};
pub use config::{test_config, BridgeConfig, Transport};
pub use fake_pms::{CannedResponse, FakePms, FakePmsConfig, RecordedRequest, WsConnectionInfo};
pub use mosquitto::Mosquitto;
pub use mqtt::{publish, retained, Msg, Probe};
pub use wait::{SLOW, SOON};
