//! Home Assistant MQTT discovery: the announced device and entities, their references to real topics, the
//! reaction to Home Assistant's birth message, and the removal of entities that no longer have a server.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::config::Server;
use support::fake_pms::{CannedResponse, FakePmsConfig};
use support::frames::{activity, Play};
use support::wait::{self, SOON};
use support::{publish, retained, test_config, Bridge, BridgeConfig, FakePms, Mosquitto, Msg, Probe, TokenFile};

fn is_config(m: &Msg) -> bool {
    m.topic.starts_with("homeassistant/device/") && m.topic.ends_with("/config") && !m.payload.is_empty()
}

/// The bridge's own device.
fn is_bridge_config(m: &Msg) -> bool {
    is_config(m) && m.topic.ends_with("_bridge/config")
}

/// A server's device (not the bridge's, not a player's).
fn is_server_config(m: &Msg) -> bool {
    is_config(m) && !m.topic.ends_with("_bridge/config") && !m.topic.contains("_player_")
}

/// Session 5 (Heat, what [`sessions`] lists) in `state` at `offset`.
fn heat(state: &str, offset: u64) -> String {
    Play::new("5").rating_key("77").without_player().state(state).at(offset).frame()
}

/// The library scan of this file's tests.
fn scan(event: &str) -> String {
    activity("s1", event, 30)
}

fn sessions(state: Option<&str>) -> CannedResponse {
    let metadata = match state {
        Some(state) => {
            json!([{"sessionKey": "5", "ratingKey": "77", "type": "movie", "title": "Heat", "duration": 100000,
            "User": {"id": "1", "title": "alice"}, "Player": {"title": "TV", "state": state},
            "Session": {"bandwidth": 5000}}])
        }
        None => json!([]),
    };
    CannedResponse::json(json!({"MediaContainer": {"Metadata": metadata}}).to_string())
}

/// The field a `{{ value_json.x … }}` template reads, if any.
fn template_field(template: &str) -> Option<String> {
    let start = template.find("value_json.")? + "value_json.".len();
    Some(template[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_announces_a_complete_device_whose_entities_follow_real_topics() {
    let broker = Mosquitto::start();
    let pms = FakePms::start(FakePmsConfig::default()).await;
    pms.set_canned("/status/sessions", sessions(None));
    pms.set_canned("/activities", CannedResponse::json(r#"{"MediaContainer":{"size":0}}"#));
    let token = TokenFile::new(&pms.token());
    let mut probe = Probe::subscribe(broker.port(), &["homeassistant/#", "plex/#"]).await;
    let _bridge = Bridge::start(&test_config(&broker.url(), &pms.url(), token.path()));
    let config = probe.expect(SOON, "a server's discovery config", is_server_config).await;
    let doc: Value = config.json();
    assert!(config.topic.starts_with("homeassistant/device/plexmqtt_"), "{}", config.topic);

    let device = &doc["dev"];
    assert_eq!(device["identifiers"][0], format!("plex_{}", pms.config().machine_identifier));
    assert_eq!(device["name"], "Fake Plex");
    assert_eq!(device["manufacturer"], "Plex");
    assert_eq!(device["model"], "Plex Media Server");
    assert_eq!(device["sw_version"], pms.config().version);
    assert_eq!(device["configuration_url"], format!("{}/web", pms.url()));
    assert!(!doc.to_string().contains(&pms.token()), "no token anywhere in discovery");
    assert_eq!(doc["o"]["name"], "plex-mqtt-bridge");
    assert!(doc["o"]["sw"].is_string());

    let components = doc["cmps"].as_object().expect("cmps");
    let mut unique_ids = BTreeSet::new();
    let mut referenced = BTreeSet::new();
    let mut platforms = BTreeMap::new();
    let triggers: Vec<&Value> = components.values().filter(|c| c["p"] == "device_automation").collect();
    let subtypes: BTreeSet<&str> = triggers.iter().filter_map(|t| t["subtype"].as_str()).collect();
    assert_eq!(subtypes, BTreeSet::from(["item_added", "scan_finished"]), "server device triggers");
    for trigger in &triggers {
        assert_eq!(trigger["automation_type"], "trigger");
        assert_eq!(trigger["topic"], "plex/test/events/library");
        assert_eq!(trigger["payload"], trigger["subtype"], "fires on the event_type it is named after");
    }
    // Buttons of commands not enabled are sent as their platform alone: device-based discovery's removal.
    let removed: Vec<&String> =
        components.iter().filter(|(_, c)| c.as_object().is_some_and(|o| o.len() == 1)).map(|(k, _)| k).collect();
    assert_eq!(removed, ["button_scan_all"], "commands are off: the scan button is removed");
    let components: serde_json::Map<String, Value> = components
        .iter()
        .filter(|(k, c)| c["p"] != "device_automation" && !removed.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let components = &components;
    for (key, c) in components {
        let platform = c["p"].as_str().expect("p");
        assert!(["sensor", "binary_sensor", "event"].contains(&platform), "{key}: {platform}");
        let object_id = c["object_id"].as_str().expect("object_id for Home Assistant before 2025.10");
        assert_eq!(c["default_entity_id"], format!("{platform}.{object_id}"), "{key}: the same id on every version");
        *platforms.entry(platform.to_owned()).or_insert(0) += 1;
        assert!(unique_ids.insert(c["unique_id"].as_str().expect("unique_id").to_owned()), "unique_id repeats");
        assert!(c["default_entity_id"].as_str().is_some_and(|id| id.starts_with(&format!("{platform}."))));
        let state_topic = c["state_topic"].as_str().unwrap_or_else(|| panic!("{key} has a state_topic"));
        referenced.insert(state_topic.to_owned());
        if let Some(attributes) = c["json_attributes_topic"].as_str() {
            referenced.insert(attributes.to_owned());
        }
        assert_eq!(c["availability_mode"], "all", "{key}");
        let availability = c["availability"].as_array().expect("availability");
        assert!(availability.iter().any(|a| a["topic"] == "plex/bridge/state" && a["payload_available"] == "online"));
        for a in availability {
            referenced.insert(a["topic"].as_str().expect("availability topic").to_owned());
        }
        if platform == "event" {
            assert!(c["event_types"].as_array().is_some_and(|t| !t.is_empty()), "{key} lists event_types");
        }
    }
    assert_eq!(platforms.get("event"), Some(&2), "Playback and Library event entities");
    assert_eq!(components["total_bandwidth"]["device_class"], "data_rate");
    assert_eq!(components["version"]["entity_category"], "diagnostic");
    assert!(components["active_sessions"]["availability"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["topic"] == "plex/test/state")));

    // Drive a play → pause → stop sequence and a scan, then check every referenced topic carries what the
    // entity reads.
    // After the resync on connecting (which found nothing playing), a session starts.
    assert!(pms.wait_for_requests("/status/sessions", 1, SOON).await);
    pms.set_canned("/status/sessions", sessions(Some("playing")));
    pms.push_text(&scan("started"));
    pms.push_text(&heat("playing", 0));
    probe
        .expect(SOON, "play event", |m| m.topic == "plex/test/events/playback" && m.json()["event_type"] == "play")
        .await;
    // The summary may come before or after the event: look at everything received so far.
    let deadline = Instant::now() + SOON;
    let summary = loop {
        let found = probe
            .history_on("plex/test/sessions")
            .into_iter()
            .map(|m| m.json())
            .find(|s| s["count"] == 1 && s["total_bandwidth_kbps"] == 5000);
        if let Some(summary) = found {
            break summary;
        }
        assert!(Instant::now() < deadline, "no summary with the enriched session");
        probe.next(Duration::from_millis(100)).await;
    };
    assert_eq!(summary["sessions"][0]["user"], "alice");
    pms.set_canned("/status/sessions", sessions(Some("paused")));
    pms.push_text(&heat("paused", 1000));
    probe
        .expect(SOON, "pause event", |m| m.topic == "plex/test/events/playback" && m.json()["event_type"] == "pause")
        .await;
    pms.set_canned("/status/sessions", sessions(None));
    pms.push_text(&heat("stopped", 1000));
    probe
        .expect(SOON, "stop event", |m| m.topic == "plex/test/events/playback" && m.json()["event_type"] == "stop")
        .await;
    let deadline = Instant::now() + SOON;
    while probe.history_on("plex/test/sessions").last().map(|m| m.json()["count"].clone()) != Some(json!(0)) {
        assert!(Instant::now() < deadline, "summary did not go back to 0");
        probe.next(Duration::from_millis(100)).await;
    }
    pms.push_text(&scan("ended"));
    probe
        .expect(SOON, "scan finished", |m| {
            m.topic == "plex/test/events/library" && m.json()["event_type"] == "scan_finished"
        })
        .await;
    let activity_states: Vec<Value> = probe.history_on("plex/test/activities").iter().map(Msg::json).collect();
    assert!(
        activity_states.iter().any(|a| a["scanning"] == true && a["title"] == "Scanning Movies"),
        "{activity_states:?}"
    );
    assert_eq!(activity_states.last().map(|a| a["count"].clone()), Some(json!(0)));

    let history = probe.history();
    for topic in &referenced {
        assert!(
            history.iter().any(|m| &m.topic == topic),
            "discovery references {topic}, which the bridge never published"
        );
    }
    for (key, c) in components {
        let topic = c["state_topic"].as_str().expect("state_topic");
        let last = history.iter().rev().find(|m| m.topic == topic).expect("published");
        if let Some(field) = c["value_template"].as_str().and_then(template_field) {
            assert!(last.json().get(&field).is_some(), "{key} reads value_json.{field} from {topic}: {}", last.text());
        }
        if let Some(types) = c["event_types"].as_array() {
            for m in history.iter().filter(|m| m.topic == topic) {
                assert!(
                    types.contains(&m.json()["event_type"]),
                    "{key}: event_type {} not announced",
                    m.json()["event_type"]
                );
                assert!(!m.retain, "event topics are never retained");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_birth_message_gets_all_configs_again_within_a_second() {
    let broker = Mosquitto::start();
    let pms = FakePms::start(FakePmsConfig::default()).await;
    let token = TokenFile::new(&pms.token());
    let mut probe = Probe::subscribe(broker.port(), &["homeassistant/device/#"]).await;
    let _bridge = Bridge::start(&test_config(&broker.url(), &pms.url(), token.path()));
    let first = probe.expect(SOON, "a discovery config", is_server_config).await;
    // The start-up announcement is complete once the bridge's own device is there too.
    probe.expect_seen(SOON, "the bridge's own discovery config", is_bridge_config).await;
    probe.drain();
    let asked = Instant::now();
    publish(broker.port(), "homeassistant/status", "online", false).await;
    let again = probe.expect(Duration::from_secs(3), "the config again", is_server_config).await;
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(1), "re-sent after {took:?}");
    assert_eq!(again.topic, first.topic);
    assert_eq!(again.payload, first.payload);
    // `offline` (Home Assistant going down) does not trigger anything (after the rest of the re-sent configs).
    wait::until("the bridge's own config sent again", SOON, || {
        probe.history().iter().filter(|m| is_bridge_config(m)).count() >= 2
    })
    .await;
    probe.drain();
    publish(broker.port(), "homeassistant/status", "offline", false).await;
    assert!(probe.wait_for(Duration::from_millis(800), is_config).await.is_none());
}

/// The test config with the server named `first`.
fn first_only(broker: &Mosquitto, a: &FakePms, token: &TokenFile) -> BridgeConfig {
    test_config(&broker.url(), &a.url(), token.path()).server_name(Some("first"))
}

fn two_servers(broker: &Mosquitto, a: &FakePms, b: &FakePms, token: &TokenFile) -> BridgeConfig {
    first_only(broker, a, token).add_server(Server::new(&b.url(), token.path(), "second"))
}

/// The retained server device configs (the bridge's own device is left out).
async fn configs(broker: &Mosquitto) -> BTreeMap<String, Value> {
    all_configs(broker).await.into_iter().filter(|(topic, _)| !topic.ends_with("_bridge/config")).collect()
}

async fn all_configs(broker: &Mosquitto) -> BTreeMap<String, Value> {
    retained(broker.port(), "homeassistant/device/+/config")
        .await
        .into_iter()
        .map(|(topic, payload)| (topic, serde_json::from_slice(&payload).expect("config JSON")))
        .collect()
}

fn unique_ids(config: &Value) -> BTreeSet<String> {
    config["cmps"]
        .as_object()
        .map(|c| c.values().filter_map(|v| v["unique_id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_of_removed_servers_and_disabled_discovery_are_deleted_on_the_next_start() {
    let broker = Mosquitto::start();
    let a = FakePms::start(FakePmsConfig {
        friendly_name: "First".into(),
        machine_identifier: "aaa".into(),
        ..FakePmsConfig::default()
    })
    .await;
    let b = FakePms::start(FakePmsConfig {
        friendly_name: "Second".into(),
        machine_identifier: "bbb".into(),
        ..FakePmsConfig::default()
    })
    .await;
    let token = TokenFile::new(&a.token());
    let mut probe = Probe::subscribe(broker.port(), &["plex/#"]).await;

    let mut bridge = Bridge::start(&two_servers(&broker, &a, &b, &token));
    // The two servers connect in either order.
    let mut connected = std::collections::BTreeSet::new();
    probe
        .expect(SOON, "plex/first/state and plex/second/state = connected", |m| {
            if m.payload == b"connected" {
                connected.insert(m.topic.clone());
            }
            connected.len() == 2
        })
        .await;
    let deadline = Instant::now() + SOON;
    let mut both = configs(&broker).await;
    while both.len() < 2 && Instant::now() < deadline {
        both = configs(&broker).await;
    }
    assert_eq!(both.len(), 2, "one device per server: {:?}", both.keys());
    let (first_topic, first_config) = both
        .iter()
        .find(|(_, c)| c["dev"]["identifiers"][0] == "plex_aaa")
        .map(|(t, c)| (t.clone(), c.clone()))
        .expect("first");
    bridge.sigterm();
    assert_eq!(bridge.wait_exit(SOON).await.and_then(|s| s.code()), Some(0));

    // The second server leaves the configuration.
    let only_first = first_only(&broker, &a, &token);
    let mut bridge = Bridge::start(&only_first);
    let deadline = Instant::now() + SOON;
    let mut left = configs(&broker).await;
    while left.len() != 1 && Instant::now() < deadline {
        left = configs(&broker).await;
    }
    assert_eq!(left.keys().collect::<Vec<_>>(), [&first_topic], "the second server's entities are gone");
    assert_eq!(unique_ids(&left[&first_topic]), unique_ids(&first_config), "unique_ids are stable across restarts");
    bridge.sigterm();
    assert_eq!(bridge.wait_exit(SOON).await.and_then(|s| s.code()), Some(0));

    // Discovery switched off: the bridge removes what it announced.
    let disabled = only_first.homeassistant(false);
    let _bridge = Bridge::start(&disabled);
    let deadline = Instant::now() + SOON;
    let mut none = all_configs(&broker).await;
    while !none.is_empty() && Instant::now() < deadline {
        none = all_configs(&broker).await;
    }
    assert!(none.is_empty(), "all entities removed: {:?}", none.keys());
}

/// The one server config of this bridge on the broker, waiting (bounded) until `pred` holds for it.
async fn server_config_when(broker: &Mosquitto, what: &str, pred: impl Fn(&str, &Value) -> bool) -> (String, Value) {
    let deadline = Instant::now() + SOON;
    loop {
        let all = configs(broker).await;
        if let Some((topic, config)) = all.iter().find(|(t, c)| pred(t, c)) {
            return (topic.clone(), config.clone());
        }
        assert!(Instant::now() < deadline, "{what}; configs on the broker: {:#?}", all.keys());
    }
}

fn object_ids(config: &Value) -> BTreeSet<String> {
    config["cmps"]
        .as_object()
        .map(|c| c.values().filter_map(|v| v["object_id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_server_at_a_new_address_keeps_its_device_unique_ids_and_entity_ids() {
    let broker = Mosquitto::start();
    let pms = FakePms::start(FakePmsConfig::default()).await;
    let token = TokenFile::new(&pms.token());
    let by_ip = test_config(&broker.url(), &pms.url(), token.path());
    let mut bridge = Bridge::start(&by_ip);
    let (topic, first) =
        server_config_when(&broker, "the server's config", |_, c| c["dev"]["configuration_url"].is_string()).await;
    bridge.sigterm();
    assert_eq!(bridge.wait_exit(SOON).await.and_then(|s| s.code()), Some(0));

    let by_name = by_ip.clone().server(|s| s.url = format!("http://localhost:{}", pms.port()));
    assert_ne!(by_name.to_string(), by_ip.to_string());
    let _bridge = Bridge::start(&by_name);
    let (moved_topic, moved) = server_config_when(&broker, "the config with the new address", |_, c| {
        c["dev"]["configuration_url"] == format!("http://localhost:{}/web", pms.port())
    })
    .await;
    assert_eq!(moved_topic, topic, "same device (config topic)");
    assert_eq!(unique_ids(&moved), unique_ids(&first), "same unique ids");
    assert_eq!(object_ids(&moved), object_ids(&first), "same entity ids");
    // Bounded negative check: no second device shows up for the new address.
    wait::observe(Duration::from_millis(500)).await;
    assert_eq!(configs(&broker).await.len(), 1, "no second device for the new address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_unreachable_at_start_is_announced_disconnected_with_its_last_identity() {
    let broker = Mosquitto::start();
    let pms = FakePms::start(FakePmsConfig::default()).await;
    let token = TokenFile::new(&pms.token());
    // No configured name: the topic name comes from the server's friendlyName, which the next run cannot ask.
    let config = test_config(&broker.url(), &pms.url(), token.path()).server_name(None);
    let mut probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
    let mut bridge = Bridge::start(&config);
    probe.expect_payload("plex/fake_plex/state", "connected", SOON).await;
    let (topic, first) = server_config_when(&broker, "the server's config", |_, _| true).await;
    bridge.sigterm();
    assert_eq!(bridge.wait_exit(SOON).await.and_then(|s| s.code()), Some(0));
    pms.shutdown();

    // Home Assistant (and the broker) forget the config; the bridge still knows the server from its `info`.
    publish(broker.port(), &topic, "", true).await;
    let _bridge = Bridge::start(&config);
    let (again_topic, again) = server_config_when(&broker, "the config of the unreachable server", |_, _| true).await;
    assert_eq!(again_topic, topic);
    assert_eq!(unique_ids(&again), unique_ids(&first));
    let held = retained(broker.port(), "plex/fake_plex/state").await;
    assert_eq!(held.get("plex/fake_plex/state").map(Vec::as_slice), Some(&b"disconnected"[..]), "Connected: off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_never_seen_gets_a_provisional_device_replaced_once_it_answers() {
    let broker = Mosquitto::start();
    let port = support::mosquitto::free_port();
    let token = TokenFile::new("token-of-a-server-not-yet-running");
    let url = format!("http://127.0.0.1:{port}");
    let config = test_config(&broker.url(), &url, token.path()).server_name(None);
    let mut probe = Probe::subscribe(broker.port(), &["plex/#", "homeassistant/#"]).await;
    let _bridge = Bridge::start(&config);
    let provisional =
        probe.expect(SOON, "a provisional device", |m| is_config(m) && m.topic.contains("_unidentified_")).await;
    let doc = provisional.json();
    let connected = &doc["cmps"]["connected"];
    assert_eq!(connected["state_topic"], "plex/bridge/stats");
    assert_eq!(doc["dev"]["name"], "127.0.0.1");
    // The stats may have come before the provisional device: look at everything received.
    let stats = probe
        .history_on("plex/bridge/stats")
        .into_iter()
        .map(|m| m.json())
        .find(|s| s["servers"][0]["state"] == "disconnected")
        .expect("bridge stats with the server disconnected");
    assert_eq!(stats["servers_connected"], 0);

    // The server comes up: its real device appears and the provisional one is removed.
    let pms = FakePms::start(FakePmsConfig { port, ..FakePmsConfig::default() }).await;
    token.set(&pms.token());
    probe.expect_payload("plex/fake_plex/state", "connected", Duration::from_secs(15)).await;
    assert!(probe.history_on(&provisional.topic).last().is_some_and(Msg::is_empty), "the provisional device removed");
    let (real_topic, real) = server_config_when(&broker, "the real device", |t, _| !t.contains("_unidentified_")).await;
    assert_eq!(real["dev"]["identifiers"][0], format!("plex_{}", pms.config().machine_identifier));
    // Its "Connected" keeps the provisional one's entity id (an alert built on it goes on working), and the
    // provisional device was removed first, so Home Assistant had freed that id.
    assert_eq!(connected["object_id"], "plex_127_0_0_1_connected");
    assert_eq!(real["cmps"]["connected"]["object_id"], connected["object_id"]);
    assert_eq!(real["cmps"]["connected"]["default_entity_id"], connected["default_entity_id"]);
    let history = probe.history();
    let removed = history.iter().position(|m| m.topic == provisional.topic && m.is_empty()).expect("removed");
    let announced = history.iter().position(|m| m.topic == real_topic && !m.is_empty()).expect("announced");
    assert!(removed < announced, "the provisional device goes before the real one is announced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_bridge_has_entity_ids_of_its_own() {
    let broker = Mosquitto::start();
    let pms = FakePms::start(FakePmsConfig::default()).await;
    let token = TokenFile::new(&pms.token());
    let mut probe = Probe::subscribe(broker.port(), &["homeassistant/#"]).await;
    let first = test_config(&broker.url(), &pms.url(), token.path());
    let second = test_config(&broker.url(), &pms.url(), token.path())
        .mqtt(|m| m.topic_prefix = Some("home/plex2".to_owned()))
        .server_name(Some("other"));
    let _a = Bridge::start(&first);
    let _b = Bridge::start(&second);
    let mut ids = Vec::new();
    for name in ["Plex MQTT bridge", "Plex MQTT bridge (home/plex2)"] {
        let bridge_device = probe
            .expect_seen(SOON, name, |m| is_config(m) && !m.is_empty() && m.json()["dev"]["name"] == name)
            .await
            .json();
        let broker_entity = &bridge_device["cmps"]["broker"];
        ids.push(broker_entity["default_entity_id"].as_str().unwrap_or_default().to_owned());
        assert_eq!(
            broker_entity["object_id"].as_str().map(|o| format!("binary_sensor.{o}")),
            Some(ids[ids.len() - 1].clone())
        );
    }
    assert_eq!(ids, ["binary_sensor.plex_mqtt_bridge_broker", "binary_sensor.plex_mqtt_bridge_home_plex2_broker"]);
}

/// FNV-1a 32, as the bridge's ids use it (written here independently).
fn fnv32(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_from_url_keyed_ids_removes_the_old_device_before_announcing_the_new_one() {
    let broker = Mosquitto::start();
    let pms = FakePms::start(FakePmsConfig::default()).await;
    let token = TokenFile::new(&pms.token());
    let config = test_config(&broker.url(), &pms.url(), token.path());
    // What versions with URL-keyed ids left: `plexmqtt_<prefix hash>_<URL hash>` (the URL as configured, which the
    // bridge normalises with a trailing slash).
    let legacy =
        format!("homeassistant/device/plexmqtt_{:08x}_{:08x}/config", fnv32("plex"), fnv32(&format!("{}/", pms.url())));
    publish(
        broker.port(),
        &legacy,
        r#"{"dev":{"identifiers":["old"]},"o":{"name":"plex-mqtt-bridge"},"cmps":{}}"#,
        true,
    )
    .await;
    let mut probe = Probe::subscribe(broker.port(), &["homeassistant/#"]).await;
    probe.expect(SOON, "the old device (retained)", |m| m.topic == legacy).await;
    let _bridge = Bridge::start(&config);
    probe.expect(SOON, "the new server device", |m| is_server_config(m) && m.topic != legacy).await;
    let history = probe.history();
    let removed = history.iter().position(|m| m.topic == legacy && m.payload.is_empty());
    let announced = history.iter().position(|m| is_server_config(m) && m.topic != legacy);
    assert!(removed.is_some() && removed < announced, "old device removed first: {removed:?} {announced:?}");
}
