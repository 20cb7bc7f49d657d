//! Shared integration-test harness: a real Mosquitto broker, an MQTT probe, a fake Plex Media Server and the
//! daemon binary as a child process. Each test file says `mod support;` and uses the parts it needs.
//!
//! Rules the harness keeps: loopback only (127.0.0.1), every wait bounded by a timeout, every process and task
//! it starts stopped on Drop, readiness checked instead of guessed with sleeps.
// Each test file uses a subset of the harness.
#![allow(dead_code, unused_imports)]

pub mod bridge;
pub mod fake_plextv;
pub mod fake_pms;
pub mod fake_supervisor;
pub mod fixture;
pub mod home_assistant;
pub mod http;
pub mod mosquitto;
pub mod mqtt;
pub mod samples;
pub mod tls;

pub use bridge::{test_config, Bridge, TokenFile};
pub use fake_pms::{FakePms, FakePmsConfig, RecordedRequest, WsConnectionInfo};
pub use mosquitto::Mosquitto;
pub use mqtt::{publish, retained, Msg, Probe};
