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
    command: Option<Operation>,
}

/// Operator commands (without one, the bridge runs). Parsed once, so the size of `command`'s arguments does not
/// matter.
#[derive(clap::Subcommand, Debug)]
#[allow(clippy::large_enum_variant)]
enum Operation {
    /// Validate the configuration, reach every Plex server (identity and token) and the broker; one line per
    /// check with the fix for each failure. Exits 1 if any check fails.
    Check,
    /// Ask the running bridge's health endpoint (http.listen, default 127.0.0.1:9184); exits 0 when healthy.
    /// Meant for Docker's HEALTHCHECK.
    Health,
    /// Publish one command to the running bridge (which needs `[commands] enabled = true` and the verb in
    /// `commands.allow`) and print its result. Exits 0 when the command ran, 1 when it was refused or failed.
    Command(CommandArgs),
    /// Get a Plex token with a PIN (approve it at plex.tv/link), write it to --token-file (mode 0600) and print a
    /// ready [[servers]] block for the account's server. With --jwt (the default) the token is a Plex JWT that
    /// the bridge renews itself with the device key written beside it. Exits 0 when done, 2 when the PIN
    /// expired, 1 on other failures, 78 for bad arguments. Needs no configuration file.
    Login(LoginArgs),
}

/// `login`: where to put what it gets.
#[derive(clap::Args, Debug)]
struct LoginArgs {
    /// Where to write the token (default: $STATE_DIRECTORY/plex_token under systemd).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Where to write the device key (default: the token file's path with `.key` appended).
    #[arg(long, value_name = "PATH")]
    device_key_file: Option<PathBuf>,
    /// Append the [[servers]] block to this configuration file instead of printing it.
    #[arg(long, value_name = "PATH")]
    write_config: Option<PathBuf>,
    /// Take this server (name or machineIdentifier) instead of the first one the account owns.
    #[arg(long, value_name = "NAME")]
    server: Option<String>,
    /// A renewable Plex JWT (default). --jwt=false gets a long-lived legacy token instead.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    jwt: bool,
    /// A long code in a link (app.plex.tv) instead of a 4-character code for plex.tv/link.
    #[arg(long)]
    strong: bool,
    /// plex.tv's base URL.
    #[arg(long, value_name = "URL", default_value = plex_mqtt_bridge::config::DEFAULT_PLEXTV_URL)]
    plextv_url: String,
}

/// `command`: what to publish.
#[derive(clap::Args, Debug)]
struct CommandArgs {
    /// The server's topic name (as in `plex/<server>/…`).
    #[arg(long)]
    server: String,
    /// library_scan, terminate_session, butler, play, pause, stop, skip_next, skip_previous or seek.
    verb: String,
    /// For player verbs: the player's topic level (`plex/<server>/players/<player>`).
    #[arg(long)]
    player: Option<String>,
    /// library_scan: the section id or title (default: every library).
    #[arg(long)]
    section: Option<String>,
    /// library_scan: one folder of that section.
    #[arg(long)]
    path: Option<String>,
    /// terminate_session: the stream's session key.
    #[arg(long)]
    session_key: Option<String>,
    /// terminate_session: the message the viewer sees.
    #[arg(long)]
    reason: Option<String>,
    /// butler: the task, e.g. BackupDatabase.
    #[arg(long)]
    task: Option<String>,
    /// seek: the position in milliseconds.
    #[arg(long)]
    offset_ms: Option<u64>,
    /// How long to wait for the result.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Operation::Login(args)) = &cli.command {
        return login(args);
    }
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
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    match cli.command {
        Some(Operation::Check) => {
            let ok = runtime.block_on(plex_mqtt_bridge::cli::check::run(&config));
            return if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        }
        Some(Operation::Health) => return runtime.block_on(health(&config)),
        Some(Operation::Login(ref args)) => return login(args),
        Some(Operation::Command(CommandArgs {
            server,
            verb,
            player,
            section,
            path,
            session_key,
            reason,
            task,
            offset_ms,
            timeout,
        })) => {
            let mut args = serde_json::Map::new();
            for (key, value) in
                [("section", section), ("path", path), ("session_key", session_key), ("reason", reason), ("task", task)]
            {
                if let Some(value) = value {
                    args.insert(key.into(), value.into());
                }
            }
            if let Some(offset) = offset_ms {
                args.insert("offset_ms".into(), offset.into());
            }
            let request = plex_mqtt_bridge::cli::command::CommandRequest { server, verb, player, args, timeout };
            return match runtime.block_on(plex_mqtt_bridge::cli::command::run(&config, &request)) {
                Ok(result) => {
                    println!("{result}");
                    if result["ok"] == true {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(error) => {
                    eprintln!("plex-mqtt-bridge: {error}");
                    ExitCode::FAILURE
                }
            };
        }
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
    match plex_mqtt_bridge::app::http_endpoint::query_health(addr).await {
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

/// `login` runs before (and without) the configuration: it is how a first configuration is made.
fn login(args: &LoginArgs) -> ExitCode {
    let token_file = match args
        .token_file
        .clone()
        .or_else(|| std::env::var_os("STATE_DIRECTORY").map(|dir| PathBuf::from(dir).join("plex_token")))
    {
        Some(path) => path,
        None => {
            eprintln!("plex-mqtt-bridge login: --token-file is missing; give the path the token should be written to");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let plextv_url = match reqwest::Url::parse(&args.plextv_url) {
        Ok(url) if config::plextv_url_allowed(&url) => url,
        _ => {
            eprintln!("plex-mqtt-bridge login: --plextv-url must be an https:// URL (http:// only on loopback)");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let options = plex_mqtt_bridge::cli::login::LoginOptions {
        device_key_file: args.device_key_file.clone().unwrap_or_else(|| config::default_device_key_file(&token_file)),
        token_file,
        plextv_url,
        jwt: args.jwt,
        strong: args.strong,
        write_config: args.write_config.clone(),
        server: args.server.clone(),
        poll_interval: std::time::Duration::from_secs(1),
        request_timeout: std::time::Duration::from_secs(15),
    };
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    match runtime.block_on(plex_mqtt_bridge::cli::login::run(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ plex_mqtt_bridge::cli::login::LoginError::PinExpired) => {
            eprintln!("plex-mqtt-bridge login: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("plex-mqtt-bridge login: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The single-threaded runtime every mode runs on (see `main` for why one thread); `None` after saying why it
/// could not be started.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("plex-mqtt-bridge: cannot start the async runtime: {error}");
            None
        }
    }
}
