//! What a server is, as users see it: its retained `<p>/<server>/info` and its Home Assistant device.
//!
//! A server that answered is announced with its identity. One that has not answered in this run is announced
//! with the identity an earlier run left in its retained `info`, or — never seen at all — as a provisional
//! device, so Home Assistant has a "Connected: off" to alert on from the start.

use bytes::Bytes;
use url::Url;

use super::Context;
use crate::commands::request::sections;
use crate::commands::MAX_ANSWER;
use crate::discovery::{connected_object_id, section_button_keys, ServerButtons, ServerDevice};
use crate::plex::http::{PlexHttp, ServerIdentity};
use crate::topic::{ServerName, ServerTopics};

/// What an earlier run knew of a server that has not answered in this one.
pub struct LastKnown {
    pub name: ServerName,
    pub identity: ServerIdentity,
    /// Its `<p>/<server>/info` topic and payload, which this run holds from now on.
    pub info_topic: String,
    pub info: Bytes,
}

/// One server's announcements.
pub struct Announcer {
    context: Context,
    /// The server's URL (shown on the device; how an earlier run's `info` is found without a configured name).
    url: Url,
    /// Its config key (the provisional device's name when the URL has no host).
    key: String,
    /// Its position in the configuration.
    index: usize,
    /// The server's identity is known (it answered, or an earlier run's retained `info` told it).
    identified: bool,
    /// The last identity was looked for in the broker's leftovers (done once, after the first failure).
    last_known_looked_up: bool,
    /// The provisional device announced while the server was never identified: its config topic and its
    /// "Connected" entity id (kept by the real device that replaces it).
    provisional: Option<(String, String)>,
    /// The scan buttons of the server's device (sections read at every connect when scans are allowed).
    buttons: ServerButtons,
}

impl Announcer {
    pub fn new(context: Context, url: Url, key: String, index: usize) -> Self {
        Announcer {
            context,
            url,
            key,
            index,
            identified: false,
            last_known_looked_up: false,
            provisional: None,
            buttons: ServerButtons::default(),
        }
    }

    /// Whether the server's identity is known in this run.
    pub fn identified(&self) -> bool {
        self.identified
    }

    /// The retained `<p>/<server>/info` (never with a token: the URL is the configured one).
    pub fn publish_info(&self, topics: &ServerTopics, identity: &ServerIdentity, transport: &str) {
        let info = serde_json::json!({
            "machine_identifier": identity.machine_identifier,
            "friendly_name": identity.friendly_name,
            "version": identity.version,
            "platform": identity.platform,
            "url": self.url.as_str().trim_end_matches('/'),
            "transport": transport,
        });
        self.context.publisher.retain(topics.info(), info.to_string());
    }

    /// Reads the library sections for the scan buttons, when scans are allowed (`scan`) and discovery is on; a
    /// failed read keeps the last list.
    pub async fn refresh_buttons(&mut self, http: &PlexHttp, scan: bool) {
        self.buttons.scan = scan;
        if !scan || self.context.discovery.is_none() {
            return;
        }
        match http.get_bytes_limited("/library/sections", MAX_ANSWER).await {
            Ok(body) => self.buttons.sections = sections(&body).into_iter().map(|s| (s.key, s.title)).collect(),
            Err(error) => tracing::debug!(%error, "cannot read the library sections for the scan buttons"),
        }
    }

    /// The Home Assistant discovery config (retained; re-sent only when it changes, e.g. a new PMS version).
    pub fn announce(&mut self, name: &ServerName, topics: &ServerTopics, identity: &ServerIdentity) {
        self.identified = true;
        let Some(discovery) = &self.context.discovery else { return };
        let publisher = &self.context.publisher;
        let device_id = discovery.server_device_id(&identity.machine_identifier);
        self.context.known_servers.set(self.index, device_id.clone());
        // Section buttons this device had (in this run, or in the config an earlier run left): removed unless
        // offered again.
        let config_topic = discovery.config_topic(&device_id);
        if let Some(payload) = publisher.stale_payload(&config_topic) {
            let earlier = serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null);
            self.buttons.previous.extend(section_button_keys(&earlier));
        }
        self.buttons.previous.sort();
        self.buttons.previous.dedup();
        // A provisional device (this run's, or one an earlier run left) goes first, so Home Assistant frees its
        // entity id before the real device claims it.
        let provisional = self.provisional.take().or_else(|| {
            let topic = discovery.config_topic(&discovery.provisional_device_id(self.url.as_str()));
            let payload = publisher.stale_payload(&topic)?;
            let earlier: serde_json::Value = serde_json::from_slice(&payload).ok()?;
            Some((topic, connected_object_id(&earlier)?.to_owned()))
        });
        if let Some((provisional_topic, _)) = &provisional {
            publisher.clear(provisional_topic.clone());
        }
        let device = ServerDevice {
            url: self.url.as_str(),
            name,
            identity,
            topics,
            buttons: &self.buttons,
            keep_connected_id: provisional.as_ref().map(|(_, id)| id.as_str()),
        };
        let (topic, config) = discovery.server_config(&device, &self.context.bridge_topics);
        self.buttons.previous = section_button_keys(&config);
        // Earlier versions announced this server under a URL-keyed id: if the broker still has that device,
        // remove it first, so Home Assistant frees the entity ids before the new device claims them (else
        // every entity would come back as `…_2`).
        let legacy = discovery.legacy_server_config_topic(self.url.as_str());
        if publisher.stale_payload(&legacy).is_some() {
            publisher.clear(legacy);
        }
        publisher.retain(topic, config.to_string());
    }

    /// After the first failed attempt of a server never identified in this run, once the broker's leftovers
    /// are known: what an earlier run knew of it (`wanted` is its `info` topic when its name is configured).
    /// `None` when there is nothing to look up now, or nothing was found — then a provisional device stands
    /// for it (named `name`, else after the URL's host).
    pub async fn recall(&mut self, wanted: Option<&ServerTopics>, name: Option<&ServerName>) -> Option<LastKnown> {
        if self.identified || self.last_known_looked_up {
            return None;
        }
        if !self.context.publisher.stale_scan_done(super::LEFTOVERS_WAIT).await {
            return None; // the broker's leftovers are not known yet: look at the next failure
        }
        self.last_known_looked_up = true;
        let found = self.last_known(wanted);
        if found.is_none() {
            self.announce_provisional(name);
        }
        found
    }

    fn announce_provisional(&mut self, name: Option<&ServerName>) {
        let Some(discovery) = &self.context.discovery else { return };
        let display = name
            .map(|n| n.as_str().to_owned())
            .unwrap_or_else(|| self.url.host_str().map_or_else(|| self.key.clone(), str::to_owned));
        let (topic, config) =
            discovery.provisional_server_config(self.url.as_str(), &display, self.index, &self.context.bridge_topics);
        let connected_id = connected_object_id(&config).map(str::to_owned);
        self.context.publisher.retain(topic.clone(), config.to_string());
        self.provisional = connected_id.map(|id| (topic, id));
    }

    /// The identity in a retained `<p>/<server>/info` left by an earlier run for this server (found by its
    /// `info` topic, else by its URL).
    fn last_known(&self, wanted: Option<&ServerTopics>) -> Option<LastKnown> {
        let bridge_topics = &self.context.bridge_topics;
        let own_url = self.url.as_str().trim_end_matches('/');
        let wanted_topic = wanted.map(ServerTopics::info);
        let candidates = self.context.publisher.stale_payloads(|topic| bridge_topics.server_of_info(topic).is_some());
        candidates.into_iter().find_map(|(info_topic, info)| {
            let doc: serde_json::Value = serde_json::from_slice(&info).ok()?;
            let matches = match &wanted_topic {
                Some(wanted) => *wanted == info_topic,
                None => doc["url"].as_str() == Some(own_url),
            };
            let text = |key: &str| doc[key].as_str().unwrap_or_default().to_owned();
            let identity = ServerIdentity {
                machine_identifier: text("machine_identifier"),
                friendly_name: text("friendly_name"),
                version: text("version"),
                platform: text("platform"),
            };
            if !matches || identity.machine_identifier.is_empty() {
                return None;
            }
            let name = ServerName::configured(bridge_topics.server_of_info(&info_topic)?)?;
            Some(LastKnown { name, identity, info_topic, info })
        })
    }
}
