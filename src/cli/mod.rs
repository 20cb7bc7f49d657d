//! The process's modes: the daemon itself, and the operator commands beside it (`check`, `health`, `login`,
//! `command`, `homeassistant-package`); `addon` is what add-on mode does before any of them. `main` only parses the command line and
//! dispatches here.

pub mod addon;
mod broker_client;
pub mod check;
pub mod check_token;
pub mod command;
pub mod ha_package;
pub mod health;
pub mod login;

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};

/// EX_CONFIG from sysexits.h: the configuration is wrong; restarting will not help.
pub const EX_CONFIG: u8 = 78;

/// Says why the configuration is invalid (one line: key, problem, fix) and gives the exit code for it, 78.
pub fn config_error(error: ConfigError) -> ExitCode {
    eprintln!("plex-mqtt-bridge: {error}");
    ExitCode::from(EX_CONFIG)
}

/// Runs the bridge until SIGINT or SIGTERM: 0 after a clean shutdown, 1 if it could not start.
pub fn daemon(config: Config) -> ExitCode {
    crate::logging::init(&config.logging);
    crate::fd_limit::raise_and_report(config.servers.len());
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        match crate::app::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "bridge failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// The single-threaded runtime every mode runs on; `None` after saying why it could not be started.
///
/// One thread: the bridge waits on sockets almost all the time and its work per notification is a few
/// microseconds, so a second worker only adds cross-thread wake-ups (measured: no throughput gained, see
/// BENCHMARKS.md) and competes with the broker for the CPUs of a small NAS. DNS look-ups still run on tokio's
/// blocking pool.
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("plex-mqtt-bridge: cannot start the async runtime: {error}");
            None
        }
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn wait_for_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
}
