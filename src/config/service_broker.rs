//! Add-on mode's broker: the MQTT service the Supervisor named, as the lowest layer of the configuration (just
//! above the defaults), so that a broker named anywhere else wins. It is asked for only when no source names one
//! ([`super::names_a_broker`]), so its user name and password never mix with another broker's URL.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use crate::addon::mqtt_service::MqttService;

/// The service as `mqtt.url`, `mqtt.username` and `mqtt.password`.
pub(super) struct ServiceBroker<'a>(pub(super) &'a MqttService);

impl Provider for ServiceBroker<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::named("the Supervisor's MQTT service")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let service = self.0;
        let mut mqtt = Dict::new();
        mqtt.insert("url".into(), Value::from(service.url()));
        if let Some(username) = &service.username {
            mqtt.insert("username".into(), Value::from(username.clone()));
        }
        if let Some(password) = &service.password {
            mqtt.insert("password".into(), Value::from(password.expose().to_owned()));
        }
        Ok(Profile::Default.collect(Dict::from([("mqtt".to_owned(), Value::from(mqtt))])))
    }
}
