//! One Plex server: the supervisor that keeps its notification session open, the forwarder that carries each
//! notification from the socket to the publisher, and the state task that keeps its retained state true.

pub mod state_task;
pub mod supervisor;
