//! Discovery the way users see it: a real Home Assistant with its MQTT integration on the test Mosquitto, the
//! bridge against the fake PMS, and every assertion made through Home Assistant's REST API: devices, entity ids,
//! states, device triggers firing automations, availability across a bridge restart, artwork, no token, no
//! warnings. The same test runs against both ends of the supported range, the oldest version that installs here
//! (2025.4.4) and the current release (2026.11.0), both from the Python package registry (see
//! `tests/homeassistant/install.sh`). `HA_TEST_SKIP=1` skips them (they say so); a missing installation fails
//! with the install command.

mod support;

use std::time::Duration;

use support::frames::activity;
use support::home_assistant::{skipped, state_of, HomeAssistant, Version, CURRENT, OLDEST};
use support::sessions::{quiet_pms, sessions_body, Playing};
use support::wait::{self, HA_WAIT, SOON};
use support::{test_config, Bridge, Mosquitto, Msg, Probe, TokenFile};

const TV: &str = "sensor.plex_test_living_room_tv_now_playing";
const TV_TITLE: &str = "sensor.plex_test_living_room_tv_title";
const TV_USER: &str = "sensor.plex_test_living_room_tv_user";
const TV_ARTWORK: &str = "image.plex_test_living_room_tv_artwork";
const TV_EVENTS: &str = "event.plex_test_living_room_tv_playback";
const BEDROOM: &str = "sensor.plex_test_bedroom_now_playing";
const BEDROOM_TITLE: &str = "sensor.plex_test_bedroom_title";
const CONNECTED: &str = "binary_sensor.plex_test_connected";
const ACTIVE: &str = "sensor.plex_test_active_sessions";

/// The library scan of this test.
fn scan(event: &str) -> String {
    activity("scan1", event, 10)
}

const TV_ARRIVAL: Playing = Playing {
    key: "45",
    player: "tv-4b45c1d2",
    player_title: "Living Room TV",
    rating_key: "945",
    title: "Arrival",
    thumb: "/library/metadata/945/thumb/1700000000",
    state: "playing",
};
const BEDROOM_HEAT: Playing = Playing {
    key: "46",
    player: "bedroom-aa11",
    player_title: "Bedroom",
    rating_key: "946",
    title: "Heat",
    thumb: "/library/metadata/946/thumb/1700000001",
    state: "playing",
};

/// The device trigger automations, written once Home Assistant has created the devices (a device trigger names
/// the device by its registry id), plus the README's event-entity example.
fn automations(tv_device: &str, server_device: &str) -> String {
    format!(
        r#"- id: tv_pause
  alias: Living room TV paused
  triggers:
    - trigger: device
      domain: mqtt
      device_id: {tv_device}
      type: playback
      subtype: pause
  actions:
    - action: input_text.set_value
      target: {{ entity_id: input_text.last_trigger }}
      data: {{ value: tv paused }}
- id: scan_done
  alias: Library scan finished
  triggers:
    - trigger: device
      domain: mqtt
      device_id: {server_device}
      type: library
      subtype: scan_finished
  actions:
    - action: input_text.set_value
      target: {{ entity_id: input_text.last_trigger }}
      data: {{ value: scan finished }}
- id: tv_event_entity
  alias: Living room TV event (README example)
  triggers:
    - trigger: state
      entity_id: {TV_EVENTS}
      not_from: [unavailable, unknown]
      not_to: [unavailable, unknown]
  actions:
    - action: counter.increment
      target: {{ entity_id: counter.event_automation_runs }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_home_assistant_shows_servers_players_triggers_and_artwork() {
    shows_servers_players_triggers_and_artwork(OLDEST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_home_assistant_shows_servers_players_triggers_and_artwork() {
    shows_servers_players_triggers_and_artwork(CURRENT).await;
}

async fn shows_servers_players_triggers_and_artwork(version: Version) {
    if skipped(&format!("Home Assistant {}", version.number)) {
        return;
    }
    let broker = Mosquitto::start();
    let pms = quiet_pms().await;
    let (poster_arrival, poster_heat, poster_dune) =
        (b"\xff\xd8arrival".to_vec(), b"\xff\xd8heat".to_vec(), b"\xff\xd8dune".to_vec());
    pms.set_photo(TV_ARRIVAL.thumb, &poster_arrival);
    pms.set_photo(BEDROOM_HEAT.thumb, &poster_heat);
    pms.set_photo("/library/metadata/947/thumb/1700000002", &poster_dune);
    let token = TokenFile::new(&pms.token());
    let ha = HomeAssistant::start(version, broker.port(), "[]\n").await;
    let mut probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
    let config = test_config(&broker.url(), &pms.url(), token.path());
    let mut bridge = Bridge::start(&config);
    probe.expect_payload("plex/test/state", "connected", SOON).await;

    // The server device, the bridge device, then two players with one session each.
    ha.wait_state(CONNECTED, HA_WAIT, |s| state_of(s) == "on").await;
    ha.wait_state("binary_sensor.plex_mqtt_bridge_broker", HA_WAIT, |s| state_of(s) == "on").await;
    ha.wait_state("sensor.plex_mqtt_bridge_servers_connected", HA_WAIT, |s| state_of(s) == "1").await;
    pms.set_canned("/status/sessions", sessions_body(&[TV_ARRIVAL, BEDROOM_HEAT]));
    pms.push_text(&TV_ARRIVAL.notification());
    pms.push_text(&BEDROOM_HEAT.notification());
    let tv = ha.wait_state(TV, HA_WAIT, |s| state_of(s) == "playing").await;
    assert_eq!(tv["attributes"]["title"], "Arrival", "{tv}");
    assert_eq!(tv["attributes"]["user"], "alice");
    assert_eq!(tv["attributes"]["transcode_decision"], "direct play");
    ha.wait_state(TV_TITLE, HA_WAIT, |s| state_of(s) == "Arrival").await;
    ha.wait_state(TV_USER, HA_WAIT, |s| state_of(s) == "alice").await;
    ha.wait_state(BEDROOM, HA_WAIT, |s| state_of(s) == "playing").await;
    ha.wait_state(BEDROOM_TITLE, HA_WAIT, |s| state_of(s) == "Heat").await;
    ha.wait_state(ACTIVE, HA_WAIT, |s| state_of(s) == "2").await;
    let linked = ha
        .template(&format!("{{{{ device_attr(device_id('{TV}'), 'via_device_id') == device_id('{CONNECTED}') }}}}"))
        .await;
    assert_eq!(linked, "True", "the player's device is linked to its server's");
    let tv_name = ha.template(&format!("{{{{ device_attr(device_id('{TV}'), 'name') }}}}")).await;
    assert_eq!(tv_name, "Living Room TV");
    // Never a null title: every summary and every first session document the broker saw was enriched.
    for m in probe.history_on("plex/test/sessions") {
        for s in m.json()["sessions"].as_array().cloned().unwrap_or_default() {
            assert!(s["title"].is_string() && s["user"].is_string(), "summary without details: {}", m.text());
        }
    }
    for m in probe.history().iter().filter(|m| m.topic.starts_with("plex/test/sessions/") && !m.payload.is_empty()) {
        assert!(m.json()["media"]["title"].is_string(), "session document without details: {}", m.text());
    }
    // Artwork: fetched with the token, served by Home Assistant without it.
    wait::until_async("the TV's artwork", HA_WAIT, async || {
        ha.image(TV_ARTWORK).await.as_deref() == Some(&poster_arrival[..])
    })
    .await;

    // Device triggers: one on the player (pause), one on the server (scan finished).
    let tv_device = ha.template(&format!("{{{{ device_id('{TV}') }}}}")).await;
    let server_device = ha.template(&format!("{{{{ device_id('{CONNECTED}') }}}}")).await;
    assert!(!tv_device.is_empty() && !server_device.is_empty());
    ha.set_automations(&automations(&tv_device, &server_device)).await;
    ha.wait_state("automation.living_room_tv_paused", HA_WAIT, |s| state_of(s) == "on").await;
    let paused = Playing { state: "paused", ..TV_ARRIVAL };
    pms.set_canned("/status/sessions", sessions_body(&[paused, BEDROOM_HEAT]));
    pms.push_text(&(Playing { state: "paused", ..TV_ARRIVAL }).notification());
    ha.wait_state("input_text.last_trigger", HA_WAIT, |s| state_of(s) == "tv paused").await;
    ha.wait_state(TV, HA_WAIT, |s| state_of(s) == "paused").await;
    pms.push_text(&scan("started"));
    pms.push_text(&scan("ended"));
    ha.wait_state("input_text.last_trigger", HA_WAIT, |s| state_of(s) == "scan finished").await;

    // One player goes idle, the other stays as it was.
    pms.set_canned("/status/sessions", sessions_body(&[Playing { state: "paused", ..TV_ARRIVAL }]));
    pms.push_text(&(Playing { state: "stopped", ..BEDROOM_HEAT }).notification());
    ha.wait_state(BEDROOM, HA_WAIT, |s| state_of(s) == "idle").await;
    ha.wait_state(BEDROOM_TITLE, HA_WAIT, |s| state_of(s).is_empty()).await;
    ha.wait_state(ACTIVE, HA_WAIT, |s| state_of(s) == "1").await;
    assert_eq!(ha.state(TV).await.as_ref().map(state_of), Some("paused"));

    // The TV moves on to another title: its artwork follows.
    let dune = Playing {
        rating_key: "947",
        title: "Dune",
        thumb: "/library/metadata/947/thumb/1700000002",
        state: "playing",
        ..TV_ARRIVAL
    };
    pms.set_canned("/status/sessions", sessions_body(&[dune]));
    pms.push_text(&dune.notification());
    ha.wait_state(TV_TITLE, HA_WAIT, |s| state_of(s) == "Dune").await;
    // The event entity had an event before (the pause), so this `play` runs the README's example automation.
    ha.wait_state("counter.event_automation_runs", HA_WAIT, |s| !["0", "unknown"].contains(&state_of(s))).await;
    wait::until_async("the new artwork", HA_WAIT, async || {
        ha.image(TV_ARTWORK).await.as_deref() == Some(&poster_dune[..])
    })
    .await;
    assert!(!ha.states_text().await.contains(&pms.token()), "the Plex token reached Home Assistant's state");

    // Restart the bridge mid-session: entities go unavailable, come back as they were, nothing is duplicated.
    // Exactly the entity ids the README promises (the same on every version: default_entity_id from 2025.10 on,
    // object_id before), and names composed of the device's name and the entity's.
    let ids_before = plex_entity_ids(&ha).await;
    assert_eq!(ids_before, promised_entity_ids());
    let title = ha.state(TV_TITLE).await.unwrap_or_default();
    assert_eq!(title["attributes"]["friendly_name"], "Living Room TV Title", "{title}");
    let runs_before = ha.state("counter.event_automation_runs").await.map(|s| state_of(&s).to_owned());
    bridge.sigterm();
    assert_eq!(bridge.wait_exit(SOON).await.and_then(|s| s.code()), Some(0));
    ha.wait_state(TV, SOON, |s| state_of(s) == "unavailable").await;
    ha.wait_state(TV_EVENTS, SOON, |s| state_of(s) == "unavailable").await;
    ha.wait_state(CONNECTED, SOON, |s| state_of(s) == "unavailable").await;
    ha.wait_state("binary_sensor.plex_mqtt_bridge_broker", HA_WAIT, |s| state_of(s) == "off").await;
    let tv_topic = format!("plex/test/players/{}", TV_ARRIVAL.player);
    let seen_before_restart = probe.history_on(&tv_topic).len();
    let _bridge = Bridge::start(&config);
    ha.wait_state(TV, HA_WAIT, |s| state_of(s) == "playing").await;
    ha.wait_state(BEDROOM, HA_WAIT, |s| state_of(s) == "idle").await;
    ha.wait_state(TV_TITLE, HA_WAIT, |s| state_of(s) == "Dune").await;
    ha.wait_state(TV_EVENTS, HA_WAIT, |s| state_of(s) != "unavailable").await;
    // Bounded negative check: the TV's state does not flip in the 2 s after everything came back either.
    wait::observe(Duration::from_secs(2)).await;
    let wrong: Vec<String> = probe.history_on(&tv_topic)[seen_before_restart..]
        .iter()
        .filter(|m| m.payload.is_empty() || m.json()["state"] != "playing")
        .map(Msg::text)
        .collect();
    assert!(wrong.is_empty(), "the TV's state flipped during the restart: {wrong:?}");
    assert_eq!(plex_entity_ids(&ha).await, ids_before, "same entities after the restart (no `_2` duplicates)");
    assert_eq!(
        ha.state("counter.event_automation_runs").await.map(|s| state_of(&s).to_owned()),
        runs_before,
        "the event-entity automation (not_from/not_to: unavailable, unknown) did not run for the restart"
    );

    let warnings: Vec<String> = ha.warnings();
    assert!(warnings.is_empty(), "Home Assistant logged warnings or errors:\n{}", warnings.join("\n"));
}

/// The entity ids the README lists for the server `test`, its two players and the bridge, sorted.
fn promised_entity_ids() -> Vec<String> {
    let server = [
        "binary_sensor.plex_test_connected",
        "sensor.plex_test_active_sessions",
        "sensor.plex_test_transcoding_sessions",
        "sensor.plex_test_total_bandwidth",
        "sensor.plex_test_library_activity",
        "binary_sensor.plex_test_library_scan",
        "event.plex_test_playback",
        "event.plex_test_library",
        "sensor.plex_test_version",
    ];
    let player =
        ["sensor.{}_now_playing", "sensor.{}_title", "sensor.{}_user", "event.{}_playback", "image.{}_artwork"];
    let bridge = [
        "binary_sensor.plex_mqtt_bridge_broker",
        "sensor.plex_mqtt_bridge_version",
        "sensor.plex_mqtt_bridge_dropped_events",
        "sensor.plex_mqtt_bridge_servers_connected",
    ];
    let players = ["plex_test_living_room_tv", "plex_test_bedroom"]
        .into_iter()
        .flat_map(|p| player.map(|id| id.replace("{}", p)));
    let mut ids: Vec<String> = server.into_iter().chain(bridge).map(str::to_owned).chain(players).collect();
    ids.sort();
    ids
}

/// Every entity id of this bridge's devices in Home Assistant.
async fn plex_entity_ids(ha: &HomeAssistant) -> Vec<String> {
    let mut ids: Vec<String> = ha
        .states()
        .await
        .iter()
        .filter_map(|s| s["entity_id"].as_str().map(str::to_owned))
        .filter(|id| id.contains(".plex_"))
        .collect();
    ids.sort();
    ids
}
