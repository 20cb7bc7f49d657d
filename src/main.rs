//! The `plex-mqtt-bridge` command: parses the command line, loads the configuration and hands over to the mode
//! asked for (see `cli`). Exit codes: 0 after a clean shutdown, 78 (EX_CONFIG) for an invalid configuration
//! (in add-on mode also for a Supervisor that refuses or has no broker, see `cli::addon`), 1 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use plex_mqtt_bridge::addon::DEFAULT_OPTIONS_FILE;
use plex_mqtt_bridge::cli::{self, addon::Needs, command::CommandArgs, ha_package::PackageArgs, login::LoginArgs};
use plex_mqtt_bridge::config::{self, Sources};

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
    /// Run as a Home Assistant add-on: settings from the options the Supervisor wrote (default
    /// /data/options.json; the environment and the flags below still override them), the token beside them,
    /// a Plex login at the first start, and the broker from the Supervisor unless the options name one.
    #[arg(long, value_name = "OPTIONS_JSON", num_args = 0..=1, require_equals = true,
          default_missing_value = DEFAULT_OPTIONS_FILE)]
    addon: Option<PathBuf>,
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

/// Operator commands (without one, the bridge runs): `login`, which needs no configuration, and the rest.
#[derive(clap::Subcommand, Debug)]
enum Operation {
    #[command(flatten)]
    Configured(Configured),
    /// Get a Plex token with a PIN (approve it at plex.tv/link), write it to --token-file (mode 0600) and print a
    /// ready [[servers]] block for the account's server. With --jwt (the default) the token is a Plex JWT that
    /// the bridge renews itself with the device key written beside it. Exits 0 when done, 2 when the PIN
    /// expired, 1 on other failures, 78 for bad arguments. Needs no configuration file.
    Login(LoginArgs),
}

/// The operator commands that run on the loaded configuration. Parsed once, so the size of their arguments does
/// not matter.
#[derive(clap::Subcommand, Debug)]
#[allow(clippy::large_enum_variant)]
enum Configured {
    /// Validate the configuration, reach every Plex server (identity and token) and the broker; one line per
    /// check with the fix for each failure. Exits 1 if any check fails.
    Check,
    /// Ask the running bridge's health endpoint (http.listen, which must be set; 0.0.0.0 and [::] are asked on
    /// loopback); exits 0 when healthy. Meant for Docker's HEALTHCHECK.
    Health,
    /// Publish one command to the running bridge (which needs `[commands] enabled = true` and the verb in
    /// `commands.allow`) and print its result. Exits 0 when the command ran, 1 when it was refused or failed.
    Command(CommandArgs),
    /// Write a Home Assistant package with a media player per Plex player the bridge knows (read from its
    /// retained topics): state, title and artwork, and play/pause/stop/next/previous for the player verbs
    /// `commands.allow` allows (read-only without). Needs nothing but core Home Assistant. Exits 0 when written,
    /// 1 when no player was found or the broker failed, 78 with Home Assistant discovery off.
    HomeassistantPackage(PackageArgs),
}

impl Cli {
    /// The configuration's sources: the file, the environment, and the flags that override both.
    fn sources(&self) -> Sources {
        let overrides = [
            ("mqtt.url", &self.mqtt_url),
            ("mqtt.topic_prefix", &self.topic_prefix),
            ("logging.level", &self.log_level),
            ("logging.format", &self.log_format),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_ref().map(|value| (key.to_owned(), value.clone())))
        .collect();
        Sources {
            file: self.config.clone(),
            overrides,
            env: std::env::vars().collect(),
            addon_options: self.addon.clone(),
            service_broker: None,
        }
    }
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let operation = match cli.command.take() {
        // `login` needs no configuration: it is how a first one is made.
        Some(Operation::Login(args)) => return cli::login::main(&args),
        Some(Operation::Configured(operation)) => Some(operation),
        None => None,
    };
    let mut sources = cli.sources();
    let daemon = operation.is_none() && !cli.print_config;
    let needs = Needs { login: daemon, broker: !matches!(operation, Some(Configured::Health)) };
    if let Err(code) = cli::addon::prepare(&mut sources, needs) {
        return code;
    }
    let config = match config::load(&sources) {
        Ok(config) => config,
        Err(error) => return cli::config_error(error),
    };
    if cli.print_config {
        print!("{}", config.to_printable_toml());
        return ExitCode::SUCCESS;
    }
    match operation {
        Some(Configured::Check) => cli::check::main(&config),
        Some(Configured::Health) => cli::health::main(&config),
        Some(Configured::Command(args)) => cli::command::main(&config, args),
        Some(Configured::HomeassistantPackage(args)) => cli::ha_package::main(&config, args),
        None => cli::daemon(config),
    }
}
