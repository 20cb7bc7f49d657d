//! The broker connection of an operator command (`check`, `command`, `homeassistant-package`), beside the running
//! bridge's own.

use rumqttc::{AsyncClient, EventLoop};

use crate::config::MqttConfig;
use crate::mqtt::MqttSetupError;

/// The bridge's broker settings under the client id `<mqtt.client_id>-<purpose>-<pid>` (never the bridge's own
/// session, nor another command's), a clean session, a 30 s keep-alive and room for `capacity` requests.
pub(super) fn short_lived_client(
    mqtt: &MqttConfig,
    purpose: &str,
    capacity: usize,
) -> Result<(AsyncClient, EventLoop), MqttSetupError> {
    let client_id = format!("{}-{purpose}-{}", mqtt.client_id, std::process::id());
    let mut options = crate::mqtt::connect_options(mqtt, &client_id)?;
    options.set_keep_alive(30).set_clean_session(true);
    crate::mqtt::build_client(options, capacity)
}
