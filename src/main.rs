//! The `plex-mqtt-bridge` command: parse flags, load the configuration, set up logging, run until SIGINT or
//! SIGTERM. Exit codes: 0 after a clean shutdown, 78 (EX_CONFIG) for an invalid configuration, 1 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use plex_mqtt_bridge::config::{self, Sources};
use plex_mqtt_bridge::{app, logging};
use tokio_util::sync::CancellationToken;

/// EX_CONFIG from sysexits.h: the configuration is wrong; restarting will not help.
const EX_CONFIG: u8 = 78;

/// Bridges Plex Media Server notifications to MQTT.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file (see config/plex-mqtt-bridge.toml). Environment variables
    /// PLEX_MQTT_BRIDGE_* override it; the flags below override both.
    #[arg(short, long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets masked) and exit.
    #[arg(long)]
    print_config: bool,
    /// Overrides mqtt.url.
    #[arg(long, value_name = "URL")]
    mqtt_url: Option<String>,
    /// Overrides mqtt.topic_prefix.
    #[arg(long, value_name = "PREFIX")]
    topic_prefix: Option<String>,
    /// Overrides logging.level (env-filter syntax, e.g. debug or plex_mqtt_bridge=trace).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Overrides logging.format: text or json.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Operator commands (without one, the bridge runs).
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Validate the configuration, reach every Plex server (identity and token) and the broker; one line per
    /// check with the fix for each failure. Exits 1 if any check fails.
    Check,
    /// Ask the running bridge's health endpoint (http.listen, default 127.0.0.1:9184); exits 0 when healthy.
    /// Meant for Docker's HEALTHCHECK.
    Health,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut overrides = Vec::new();
    for (key, value) in [
        ("mqtt.url", &cli.mqtt_url),
        ("mqtt.topic_prefix", &cli.topic_prefix),
        ("logging.level", &cli.log_level),
        ("logging.format", &cli.log_format),
    ] {
        if let Some(value) = value {
            overrides.push((key.to_owned(), value.clone()));
        }
    }
    let sources = Sources { file: cli.config.clone(), overrides, env: std::env::vars().collect() };
    let config = match config::load(&sources) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("plex-mqtt-bridge: {error}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if cli.print_config {
        print!("{}", config.to_printable_toml());
        return ExitCode::SUCCESS;
    }
    // One thread: the bridge waits on sockets almost all the time and its work per notification is a few
    // microseconds, so a second worker only adds cross-thread wake-ups (measured: no throughput gained, see
    // BENCHMARKS.md) and competes with the broker for the CPUs of a small NAS. DNS look-ups still run on
    // tokio's blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("plex-mqtt-bridge: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Check) => {
            let ok = runtime.block_on(plex_mqtt_bridge::check::run(&config));
            return if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        }
        Some(Command::Health) => return runtime.block_on(health(&config)),
        None => {}
    }
    logging::init(&config.logging);
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        match app::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "bridge failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// `health`: queries the local endpoint; 0 when healthy.
async fn health(config: &plex_mqtt_bridge::config::Config) -> ExitCode {
    let mut addr = config.http.listen.unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 9184)));
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    match plex_mqtt_bridge::http_server::query_health(addr).await {
        Ok((200, body)) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            println!("unhealthy (HTTP {status}): {body}");
            ExitCode::FAILURE
        }
        Err(error) => {
            println!("unhealthy: {error} (is http.listen set?)");
            ExitCode::FAILURE
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
