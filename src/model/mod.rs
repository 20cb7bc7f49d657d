//! Pure models: values in, values out, no I/O. The router that maps a
//! notification to MQTT messages, playback sessions, players, library events and webhook-shaped payloads (with the
//! table of their fields' types).
//! The integration tests prove the wiring around them; their own tests prove the rules.

pub mod library;
pub mod playback;
pub mod players;
pub mod router;
pub mod webhook;
pub mod webhook_types;
