//! Add-on mode's start (`--addon`), before the configuration loads: the first start logs in to Plex (the code to
//! enter at plex.tv/link goes to the add-on's log, the one place an add-on user sees), and when no source names a
//! broker the Supervisor is asked for its MQTT service.
//!
//! Exit codes: 78 when the setup is wrong and a restart will not help (an unknown option, `SUPERVISOR_TOKEN`
//! missing or refused, the add-on not granted `mqtt:need`, no broker add-on installed); 1 when the Supervisor
//! cannot be reached or answers oddly, or the login fails; 2 when the login code expired unused.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use super::login::{self, LoginError, LoginOptions};
use super::{config_error, EX_CONFIG};
use crate::addon::mqtt_service::{lookup_patiently, supervisor_token, supervisor_url, MqttService};
use crate::addon::{SUPERVISOR_TOKEN_ENV, SUPERVISOR_URL_ENV};
use crate::config::{self, AddonOptions, Sources};

/// How long the Supervisor may stay unreachable at start-up (it may still be starting when the host boots).
const SUPERVISOR_PATIENCE: Duration = Duration::from_secs(30);

/// What the mode about to run needs first.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// A Plex token (the daemon): log in when there is none, or when `force_login` is on.
    pub login: bool,
    /// A broker (everything that talks MQTT or shows the configuration).
    pub broker: bool,
}

/// Does what `needs` asks, so that `sources` then load into a configuration; without `--addon` nothing. On
/// failure the reason is printed and the exit code returned.
pub fn prepare(sources: &mut Sources, needs: Needs) -> Result<(), ExitCode> {
    let Some(file) = sources.addon_options.clone() else { return Ok(()) };
    let options = AddonOptions::load(&file).map_err(config_error)?;
    if needs.login && (options.force_login() || !options.token_file().exists()) {
        log_in(sources, &options)?;
    }
    if needs.broker && !config::names_a_broker(sources).map_err(config_error)? {
        sources.service_broker = Some(ask_supervisor(&sources.env)?);
    }
    Ok(())
}

/// `login` into `/data`. A failure after the token was saved (no server listed, none reachable) only warns: the
/// bridge has what it needs, and `server_url` says where the server is.
fn log_in(sources: &Sources, options: &AddonOptions) -> Result<(), ExitCode> {
    let token_file = options.token_file();
    let login = LoginOptions {
        device_key_file: config::default_device_key_file(&token_file),
        plextv_url: config::configured_plextv_url(sources).map_err(config_error)?,
        token_file,
        jwt: true,
        strong: false,
        write_config: None,
        print_block: false,
        server: None,
        poll_interval: Duration::from_secs(1),
        request_timeout: Duration::from_secs(15),
    };
    eprintln!("plex-mqtt-bridge: logging in to Plex (no token saved yet, or force_login is on)");
    let saved_before = modified(&login.token_file);
    let Some(runtime) = super::runtime() else { return Err(ExitCode::FAILURE) };
    match runtime.block_on(login::run(&login)) {
        Ok(()) => Ok(()),
        Err(LoginError::PinExpired) => {
            eprintln!("plex-mqtt-bridge: the login code expired unused; restart the add-on for a new one");
            Err(ExitCode::from(2))
        }
        Err(error) if modified(&login.token_file) != saved_before => {
            eprintln!("plex-mqtt-bridge: warning: {error}");
            Ok(())
        }
        Err(error) => {
            eprintln!("plex-mqtt-bridge: login failed: {error}; restart the add-on to try again");
            Err(ExitCode::FAILURE)
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The Supervisor's MQTT service, with the token and URL from `env`.
fn ask_supervisor(env: &[(String, String)]) -> Result<MqttService, ExitCode> {
    let var = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, value)| value.clone());
    let Some(runtime) = super::runtime() else { return Err(ExitCode::FAILURE) };
    let answer = supervisor_url(var(SUPERVISOR_URL_ENV).as_deref()).and_then(|url| {
        let token = supervisor_token(var(SUPERVISOR_TOKEN_ENV))?;
        runtime.block_on(lookup_patiently(&url, &token, SUPERVISOR_PATIENCE))
    });
    match answer {
        Ok(service) => {
            let provider = service.provider.as_deref().unwrap_or("an add-on");
            eprintln!("plex-mqtt-bridge: using the MQTT broker the Supervisor names: {} ({provider})", service.url());
            Ok(service)
        }
        Err(error) => {
            eprintln!("plex-mqtt-bridge: {error}; fix: {}", error.fix());
            Err(ExitCode::from(if error.is_setup_problem() { EX_CONFIG } else { 1 }))
        }
    }
}
