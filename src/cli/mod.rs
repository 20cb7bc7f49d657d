//! The operator commands beside the daemon: `check`, `login` and `command`.

pub mod check;
pub mod command;
pub mod login;
