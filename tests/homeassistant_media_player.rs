//! The media player package (`plex-mqtt-bridge homeassistant-package`) in a real Home Assistant, on both ends of
//! the supported range (2025.4.4 and 2026.11.0, see `support::home_assistant`): the package is written by the
//! real binary from what the bridge left retained, Home Assistant starts with it in its `packages` folder, and
//! every assertion goes through its REST API and the fake PMS. With the player verbs allowed, the media player
//! follows the player (playing, paused, idle, playing again), shows its title and artwork, and its
//! play/pause/stop/next/previous make the exact PMS requests through the command path; written again with
//! commands off (and reloaded), the same entity is read-only and refuses to act. `HA_TEST_SKIP=1` skips these.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::config::Commands;
use support::home_assistant::{skipped, state_of, HomeAssistant, Version, CURRENT, OLDEST};
use support::sessions::{quiet_pms, sessions_body, Playing};
use support::wait::{self, HA_WAIT, SOON};
use support::{test_config, Bridge, BridgeConfig, CannedResponse, Mosquitto, Probe, TokenFile};

const MEDIA_PLAYER: &str = "media_player.plex_test_living_room_tv";
const SOURCE: &str = "sensor.plex_test_living_room_tv_media";
const RESULT: &str = "plex/test/command/result";
const PACKAGE: &str = "plex_media_players.yaml";

/// The player's machineIdentifier, mixed case: the topic level is folded, the PMS request must carry it as is.
const TV_ID: &str = "TV-Living-4B45";
const TV: Playing = Playing {
    key: "45",
    player: TV_ID,
    player_title: "Living Room TV",
    rating_key: "945",
    title: "Arrival",
    thumb: "/library/metadata/945/thumb/1700000000",
    state: "playing",
};
const DUNE: Playing =
    Playing { rating_key: "947", title: "Dune", thumb: "/library/metadata/947/thumb/1700000002", ..TV };

/// `media_player` feature bits: PAUSE, PREVIOUS_TRACK, NEXT_TRACK, STOP, PLAY.
const CONTROLS: u64 = 1 | 16 | 32 | 4096 | 16384;

/// Each media player action and the PMS request it must make.
const ACTIONS: [(&str, &str, &str); 5] = [
    ("media_play", "play", "/player/playback/play"),
    ("media_pause", "pause", "/player/playback/pause"),
    ("media_stop", "stop", "/player/playback/stop"),
    ("media_next_track", "skip_next", "/player/playback/skipNext"),
    ("media_previous_track", "skip_previous", "/player/playback/skipPrevious"),
];

fn features(s: &Value) -> Option<u64> {
    s["attributes"]["supported_features"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_home_assistant_gets_a_media_player_per_plex_player() {
    media_player_per_plex_player(OLDEST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_home_assistant_gets_a_media_player_per_plex_player() {
    media_player_per_plex_player(CURRENT).await;
}

/// Starts the bridge and waits until its server is connected.
async fn start_bridge(broker: &Mosquitto, config: &BridgeConfig) -> Bridge {
    let mut state = Probe::subscribe(broker.port(), &["plex/test/state"]).await;
    let bridge = Bridge::start(config);
    state.expect_payload("plex/test/state", "connected", SOON).await;
    bridge
}

/// The package the real binary writes for `config` (to `--output`), and what it said on stderr.
async fn write_package(config: &BridgeConfig) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(PACKAGE);
    let path_arg = path.to_str().expect("utf-8 path");
    let args = ["homeassistant-package", "--output", path_arg];
    let run = Bridge::run_to_exit_split(&args, &[], Some(&config.render()), SOON).await;
    assert_eq!(run.code, Some(0), "homeassistant-package failed:\n{}", run.stderr);
    assert!(run.stdout.is_empty(), "with --output nothing is printed: {}", run.stdout);
    (std::fs::read_to_string(&path).expect("the package"), run.stderr)
}

async fn media_player_per_plex_player(version: Version) {
    if skipped(&format!("Home Assistant {}", version.number)) {
        return;
    }
    let broker = Mosquitto::start();
    let pms = quiet_pms().await;
    for (_, _, path) in ACTIONS {
        pms.set_canned(path, CannedResponse::json(""));
    }
    let (poster_arrival, poster_dune) = (b"\xff\xd8arrival".to_vec(), b"\xff\xd8dune".to_vec());
    pms.set_photo(TV.thumb, &poster_arrival);
    pms.set_photo(DUNE.thumb, &poster_dune);
    let token = TokenFile::new(&pms.token());
    let verbs = ["play", "pause", "stop", "skip_next", "skip_previous"];
    let config = test_config(&broker.url(), &pms.url(), token.path()).commands(Commands::enabled(Some(&verbs)));
    let mut bridge = start_bridge(&broker, &config).await;

    // The player plays: the bridge knows it (its retained state), and the package is written from that.
    let mut probe = Probe::subscribe(broker.port(), &["plex/test/players/+", RESULT]).await;
    pms.set_canned("/status/sessions", sessions_body(&[TV]));
    pms.push_text(&TV.notification());
    probe
        .expect(SOON, "the TV playing", |m| {
            m.topic == "plex/test/players/tv-living-4b45" && m.json()["state"] == "playing"
        })
        .await;
    let (package, said) = write_package(&config).await;
    assert!(said.contains("1 media player(s)"), "{said}");
    assert!(package.contains("action: mqtt.publish"), "{package}");

    let ha = HomeAssistant::start_with_packages(version, broker.port(), "[]\n", &[(PACKAGE, &package)]).await;
    let playing = ha
        .wait_state(MEDIA_PLAYER, HA_WAIT, |s| {
            state_of(s) == "playing" && s["attributes"]["entity_picture"].as_str().is_some_and(|p| !p.is_empty())
        })
        .await;
    let attributes = &playing["attributes"];
    assert_eq!(attributes["media_title"], "Arrival", "{playing}");
    assert_eq!(attributes["media_content_type"], "movie", "{playing}");
    assert_eq!(attributes["media_duration"], 6960, "seconds: {playing}");
    assert_eq!(attributes.get("media_series_title"), None, "a movie has no series: {playing}");
    assert_eq!(attributes["friendly_name"], "Plex test Living Room TV", "{playing}");
    assert_eq!(features(&playing), Some(CONTROLS), "play, pause, stop, next and previous: {playing}");
    let picture = attributes["entity_picture"].as_str().unwrap_or_default().to_owned();
    assert!(picture.starts_with("/api/image_proxy/image.plex_test_living_room_tv_artwork"), "{picture}");
    wait::until_async("the media player's picture is the poster", HA_WAIT, async || {
        ha.bytes(&picture).await.as_deref() == Some(&poster_arrival[..])
    })
    .await;

    // Buffering is a media player state too; then paused, and each action: exactly its PMS request, through the
    // bridge's command path.
    pms.set_canned("/status/sessions", sessions_body(&[TV.in_state("buffering")]));
    pms.push_text(&TV.in_state("buffering").notification());
    ha.wait_state(MEDIA_PLAYER, HA_WAIT, |s| state_of(s) == "buffering").await;
    pms.set_canned("/status/sessions", sessions_body(&[TV.in_state("paused")]));
    pms.push_text(&TV.in_state("paused").notification());
    ha.wait_state(MEDIA_PLAYER, HA_WAIT, |s| state_of(s) == "paused").await;
    for (action, verb, path) in ACTIONS {
        ha.call("media_player", action, &json!({ "entity_id": MEDIA_PLAYER })).await;
        assert!(pms.wait_for_requests(path, 1, SOON).await, "{action}: no {path}");
        let requests = pms.requests_to(path);
        assert_eq!(requests.len(), 1, "{action}: one request: {requests:?}");
        let request = &requests[0];
        assert_eq!(request.method, "GET");
        assert_eq!(request.header("x-plex-target-client-identifier"), Some(TV_ID), "{action}: {request:?}");
        assert_eq!(request.token(), Some(pms.token().as_str()), "{action}");
        let query: Vec<&str> = request.query.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(query, ["commandID", "type"], "{action}: {request:?}");
        assert_eq!(request.query_param("type"), Some("video"));
        assert!(request.query_param("commandID").is_some_and(|n| n.parse::<u64>().is_ok()), "{request:?}");
        let result = probe.expect(SOON, "the command's result", |m| m.topic == RESULT).await.json();
        assert_eq!((result["verb"].as_str(), result["ok"].as_bool()), (Some(verb), Some(true)), "{result}");
        assert_eq!(result["target"], "tv-living-4b45", "{result}");
    }

    // Idle (no title), then playing something else: title and picture follow.
    pms.set_canned("/status/sessions", sessions_body(&[]));
    pms.push_text(&TV.in_state("stopped").notification());
    let idle = ha.wait_state(MEDIA_PLAYER, HA_WAIT, |s| state_of(s) == "idle").await;
    assert_eq!(idle["attributes"].get("media_title"), None, "{idle}");
    pms.set_canned("/status/sessions", sessions_body(&[DUNE]));
    pms.push_text(&DUNE.notification());
    let dune = ha
        .wait_state(MEDIA_PLAYER, HA_WAIT, |s| state_of(s) == "playing" && s["attributes"]["media_title"] == "Dune")
        .await;
    wait::until_async("the new poster", HA_WAIT, async || {
        let picture = ha.state(MEDIA_PLAYER).await.map(|s| s["attributes"]["entity_picture"].clone());
        let path = picture.as_ref().and_then(Value::as_str).unwrap_or_default().to_owned();
        ha.bytes(&path).await.as_deref() == Some(&poster_dune[..])
    })
    .await;
    assert_eq!(features(&dune), Some(CONTROLS));

    // The bridge goes away: so does what the media player can say.
    bridge.sigterm();
    assert_eq!(bridge.wait_exit(SOON).await.and_then(|s| s.code()), Some(0));
    ha.wait_state(MEDIA_PLAYER, HA_WAIT, |s| state_of(s) == "unavailable").await;

    // Commands off: the package written again and reloaded. The same entity (unique ids), now read-only.
    let read_only = test_config(&broker.url(), &pms.url(), token.path());
    let _bridge = start_bridge(&broker, &read_only).await;
    let (package, said) = write_package(&read_only).await;
    assert!(said.contains("read-only"), "{said}");
    assert!(package.contains("# Commands: none.") && !package.contains("mqtt.publish"), "{package}");
    ha.set_package(PACKAGE, &package);
    // Universal media players first: the template sensors' reload then hands them their sources' state.
    ha.call("universal", "reload", &json!({})).await;
    ha.call("template", "reload", &json!({})).await;
    let still = ha.wait_state(MEDIA_PLAYER, HA_WAIT, |s| state_of(s) == "playing" && features(s) == Some(0)).await;
    assert_eq!(still["attributes"]["media_title"], "Dune", "{still}");
    let warnings = ha.warnings();
    assert!(warnings.is_empty(), "Home Assistant logged warnings or errors:\n{}", warnings.join("\n"));
    // Home Assistant refuses the action and says why: 2026.11 in its answer, 2025.4.4 in its log (its REST API
    // answers 500 for this error).
    let pause = json!({ "entity_id": MEDIA_PLAYER });
    let refused = ha.post_answer("/api/services/media_player/media_pause", &pause).await;
    let (status, answer) = refused.expect("Home Assistant answers");
    assert!(status >= 400, "the read-only media player's pause is refused: {status} {answer}");
    let says_so = "does not support action media_player.media_pause";
    wait::until("Home Assistant to say why", SOON, || answer.contains(says_so) || ha.log().contains(says_so)).await;
    // Bounded negative check: nothing reaches the PMS (or the command topic) in the second after.
    probe.assert_nothing_within(Duration::from_secs(1), "a command result", |m| m.topic == RESULT).await;
    assert_eq!(pms.count_requests("/player/playback/pause"), 1, "only the earlier pause");

    let ids: Vec<String> = ha
        .states()
        .await
        .iter()
        .filter_map(|s| s["entity_id"].as_str().map(str::to_owned))
        .filter(|id| id.starts_with("media_player.") || id.ends_with("_media"))
        .collect();
    assert_eq!(ids.len(), 2, "one media player and its source, the same after the reload (no `_2`): {ids:?}");
    assert!(ids.contains(&MEDIA_PLAYER.to_owned()) && ids.contains(&SOURCE.to_owned()), "{ids:?}");
    // The refusal is all it logged (the REST API reports it as a failed request, with its traceback).
    let warnings: Vec<String> =
        ha.warnings().into_iter().filter(|l| !l.contains("[aiohttp.server] Error handling request")).collect();
    assert!(warnings.is_empty(), "Home Assistant logged warnings or errors:\n{}", warnings.join("\n"));
}
