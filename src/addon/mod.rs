//! Running as a Home Assistant add-on (Home Assistant OS), the way zigbee2mqtt does.
//!
//! Add-on mode is explicit: the add-on's image starts the bridge with `--addon` (optionally `--addon=PATH` for
//! another options file). `SUPERVISOR_TOKEN` alone does not switch it on: Home Assistant's own container has it
//! too, and a bridge that changed where it reads its settings because of an inherited variable would surprise.
//! In add-on mode the bridge reads the options the Supervisor wrote (`/data/options.json`, see
//! `config::addon`), keeps its state beside them in `/data`, logs in to Plex on its first start (see
//! `cli::addon`) and, when the options name no broker, asks the Supervisor for the MQTT service
//! ([`mqtt_service`]).

pub mod mqtt_service;

/// Where the Supervisor writes the add-on's options. Its directory, `/data`, persists across restarts and updates
/// and holds the token file and the device key.
pub const DEFAULT_OPTIONS_FILE: &str = "/data/options.json";

/// The Supervisor's API as an add-on sees it.
pub const DEFAULT_SUPERVISOR_URL: &str = "http://supervisor";

/// The token the Supervisor gives every add-on for its API.
pub const SUPERVISOR_TOKEN_ENV: &str = "SUPERVISOR_TOKEN";

/// Another Supervisor URL: `http://supervisor` or a loopback address (a test's fake). Not a setting, so the
/// environment layer of the configuration skips it.
pub const SUPERVISOR_URL_ENV: &str = "PLEX_MQTT_BRIDGE_SUPERVISOR_URL";
