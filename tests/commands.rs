//! Commands from MQTT back to Plex (issue 14), end to end: the real binary, a real Mosquitto, and a fake PMS
//! that records every request it receives.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::config::Commands;
use support::fake_pms::{CannedResponse, RecordedRequest};
use support::wait::{self, SOON};
use support::{publish, test_config, Bridge, BridgeConfig, FakePms, Mosquitto, Probe, TokenFile};

const RESULT: &str = "plex/test/command/result";

/// The test config with `commands` (and a short REST timeout, for the timeout case).
fn config(broker: &Mosquitto, pms: &FakePms, token: &TokenFile, commands: Commands) -> BridgeConfig {
    test_config(&broker.url(), &pms.url(), token.path())
        .plex(|p| p.request_timeout = Some(Duration::from_secs(1)))
        .commands(commands)
}

/// `enabled = true` with `allow` and a rate limit of 100 (so that only the rate-limit case meets it).
fn allowing(allow: &[&str]) -> Commands {
    Commands { rate_limit: Some(100), ..Commands::enabled(Some(allow)) }
}

const SECTIONS: &str = r#"{"MediaContainer":{"size":2,"Directory":[{"key":"1","title":"Films","type":"movie"},{"key":"2","title":"TV Shows","type":"show"}]}}"#;
const SESSIONS: &str = r#"{"MediaContainer":{"size":1,"Metadata":[{"sessionKey":"41","ratingKey":"7","type":"movie","title":"Heat",
    "User":{"id":"1","title":"alice"},"Player":{"title":"Living room","machineIdentifier":"TV-Living","state":"playing"},
    "Session":{"id":"sess-abc","bandwidth":1000,"location":"lan"}}]}}"#;

/// A fake PMS that answers every request a command can make.
async fn pms() -> FakePms {
    let pms = FakePms::start_default().await;
    pms.set_canned("/library/sections", CannedResponse::json(SECTIONS));
    pms.set_canned("/status/sessions", CannedResponse::json(SESSIONS));
    for path in [
        "/library/sections/all/refresh",
        "/library/sections/1/refresh",
        "/status/sessions/terminate",
        "/player/playback/play",
        "/player/playback/pause",
        "/player/playback/stop",
        "/player/playback/skipNext",
        "/player/playback/skipPrevious",
        "/player/playback/seekTo",
    ] {
        pms.set_canned(path, CannedResponse::json(""));
    }
    pms.set_canned_for("POST", "/butler/BackupDatabase", CannedResponse::json(""));
    pms
}

/// The verb of the command [`start`] sends until it is answered: unknown, so it is refused and never acts.
const READY_PROBE: &str = "ready_probe";

/// Starts a bridge and waits until it is connected and, when commands are on, answers them (its subscription
/// is in place: a command published before that would reach nobody).
async fn start(broker: &Mosquitto, config: &BridgeConfig) -> Bridge {
    let mut state = Probe::subscribe(broker.port(), &["plex/test/state"]).await;
    let bridge = Bridge::start(config);
    state.expect_payload("plex/test/state", "connected", SOON).await;
    if config.commands.as_ref().is_some_and(|c| c.enabled == Some(true)) {
        let mut results = Probe::subscribe(broker.port(), &[RESULT]).await;
        let answered = wait::poll(SOON, async || {
            publish(broker.port(), &format!("plex/test/command/{READY_PROBE}"), "{}", false).await;
            results.wait_for(Duration::from_millis(300), |m| m.topic == RESULT).await
        })
        .await;
        assert!(answered.is_some(), "the bridge never answered a command");
    }
    bridge
}

/// The next result on `results`, as JSON (the readiness probes' refusals skipped).
async fn result(results: &mut Probe) -> Value {
    loop {
        let msg = results.expect_topic(RESULT, SOON).await;
        assert!(!msg.retain, "results are not retained");
        let r: Value = serde_json::from_slice(&msg.payload).expect("a result is JSON");
        if r["verb"] != READY_PROBE {
            return r;
        }
    }
}

/// The result with this id (earlier ones are skipped).
async fn result_for(results: &mut Probe, id: &str) -> Value {
    loop {
        let r = result(results).await;
        if r["id"] == id {
            return r;
        }
    }
}

fn only_request(pms: &FakePms, path: &str) -> RecordedRequest {
    let requests = pms.requests_to(path);
    assert_eq!(requests.len(), 1, "one request to {path}: {requests:?}");
    requests.into_iter().next().expect("one request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_off_by_default() {
    let broker = Mosquitto::start();
    let pms = pms().await;
    let token = TokenFile::new(&pms.token());
    let bridge = start(&broker, &test_config(&broker.url(), &pms.url(), token.path())).await;
    let mut results = Probe::subscribe(broker.port(), &[RESULT]).await;
    publish(broker.port(), "plex/test/command/library_scan", "{}", false).await;
    publish(broker.port(), "plex/test/players/tv-living/command/pause", "{}", false).await;
    assert!(results.collect_for(Duration::from_millis(1500)).await.is_empty(), "no result: nothing listens");
    assert_eq!(pms.count_requests("/library/sections/all/refresh"), 0);
    assert_eq!(pms.count_requests("/player/playback/pause"), 0);
    let log = bridge.logs();
    assert!(!log.contains("listening for commands"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_makes_its_exact_request_and_one_result() {
    let broker = Mosquitto::start();
    let pms = pms().await;
    let token = TokenFile::new(&pms.token());
    let all = allowing(&[
        "library_scan",
        "terminate_session",
        "butler",
        "play",
        "pause",
        "stop",
        "skip_next",
        "skip_previous",
        "seek",
    ]);
    let bridge = start(&broker, &config(&broker, &pms, &token, all)).await;
    let mut results = Probe::subscribe(broker.port(), &[RESULT]).await;
    let cases: [(&str, &str, &str); 12] = [
        ("command/library_scan", r#"{"id":"all"}"#, "/library/sections/all/refresh"),
        (
            "command/library_scan",
            r#"{"id":"films","section":"films","path":"/media/Films/Heat (1995)"}"#,
            "/library/sections/1/refresh",
        ),
        (
            "command/terminate_session",
            r#"{"id":"term","session_key":"41","reason":"Bed time"}"#,
            "/status/sessions/terminate",
        ),
        ("command/butler", r#"{"id":"backup","task":"BackupDatabase"}"#, "/butler/BackupDatabase"),
        ("players/tv-living/command/play", r#"{"id":"play"}"#, "/player/playback/play"),
        ("players/tv-living/command/pause", r#"{"id":"pause"}"#, "/player/playback/pause"),
        ("players/tv-living/command/stop", r#"{"id":"stop"}"#, "/player/playback/stop"),
        ("players/tv-living/command/skip_next", r#"{"id":"next"}"#, "/player/playback/skipNext"),
        ("players/tv-living/command/skip_previous", r#"{"id":"prev"}"#, "/player/playback/skipPrevious"),
        ("players/tv-living/command/seek", r#"{"id":"seek","offset_ms":90000}"#, "/player/playback/seekTo"),
        ("command/library_scan", "{}", "/library/sections/all/refresh"),
        ("command/library_scan", r#"{"id":"tv","section":2}"#, "/library/sections/2/refresh"),
    ];
    pms.set_canned("/library/sections/2/refresh", CannedResponse::json(""));
    for (i, (topic, payload, path)) in cases.iter().enumerate() {
        publish(broker.port(), &format!("plex/test/{topic}"), *payload, false).await;
        let r = result(&mut results).await;
        assert_eq!(r["ok"], true, "{topic}: {r}");
        assert_eq!(r["status"], 200, "{topic}: {r}");
        assert_eq!(r["error"], Value::Null, "{topic}: {r}");
        assert!(r["took_ms"].is_u64(), "{r}");
        let expected_id: Value =
            serde_json::from_str::<Value>(payload).expect("json").get("id").cloned().unwrap_or(Value::Null);
        assert_eq!(r["id"], expected_id, "{r}");
        let verb = topic.rsplit('/').next().expect("verb");
        assert_eq!(r["verb"], verb, "{r}");
        let target = if topic.starts_with("players/") { "tv-living" } else { "test" };
        assert_eq!(r["target"], target, "{r}");
        if i == 10 {
            assert_eq!(pms.count_requests(path), 2, "the second scan of everything");
            continue;
        }
        let request = only_request(&pms, path);
        assert_eq!(request.token(), Some(pms.token().as_str()), "{path}: the token header");
        assert_eq!(request.method, if path.starts_with("/butler/") { "POST" } else { "GET" });
        assert!(request.header("x-plex-client-identifier").is_some(), "{path}: the client headers");
        match *path {
            "/library/sections/1/refresh" => {
                assert_eq!(request.query, [("path".into(), "/media/Films/Heat (1995)".into())])
            }
            "/status/sessions/terminate" => assert_eq!(
                request.query,
                [("sessionId".to_owned(), "sess-abc".to_owned()), ("reason".to_owned(), "Bed time".to_owned())]
            ),
            p if p.starts_with("/player/playback/") => {
                assert_eq!(request.header("x-plex-target-client-identifier"), Some("TV-Living"), "{p}");
                assert_eq!(request.query_param("type"), Some("video"));
                assert!(request.query_param("commandID").is_some_and(|n| n.parse::<u64>().is_ok()), "{request:?}");
                if p.ends_with("seekTo") {
                    assert_eq!(request.query_param("offset"), Some("90000"));
                }
            }
            _ => assert!(request.query.is_empty(), "{path}: {:?}", request.query),
        }
    }
    // Command IDs increase per command.
    let ids: Vec<u64> = pms
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/player/playback/"))
        .filter_map(|r| r.query_param("commandID")?.parse().ok())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let log = bridge.logs();
    assert!(log.contains("command executed"), "{log}");
    assert!(!log.contains(&pms.token()), "the token never appears in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pms_failures_give_one_clear_result_each() {
    let broker = Mosquitto::start();
    let pms = pms().await;
    let token = TokenFile::new(&pms.token());
    let cfg = allowing(&["library_scan", "terminate_session"]);
    let _bridge = start(&broker, &config(&broker, &pms, &token, cfg)).await;
    let mut results = Probe::subscribe(broker.port(), &[RESULT]).await;
    let scan = "/library/sections/all/refresh";
    let status = |code: u16| CannedResponse { status: code, ..CannedResponse::json("") };
    for (id, response, status_field, needle) in [
        ("s401", status(401), Value::from(401), "HTTP 401"),
        ("s403", status(403), Value::from(403), "HTTP 403"),
        ("s500", status(500), Value::from(500), "HTTP 500"),
        (
            "slow",
            CannedResponse { delay: Duration::from_secs(3), ..CannedResponse::json("") },
            Value::Null,
            "timed out",
        ),
    ] {
        pms.set_canned(scan, response);
        publish(broker.port(), "plex/test/command/library_scan", format!(r#"{{"id":"{id}"}}"#), false).await;
        let r = result_for(&mut results, id).await;
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["status"], status_field, "{r}");
        assert!(r["error"].as_str().is_some_and(|e| e.contains(needle)), "{id}: {r}");
    }
    pms.set_canned("/status/sessions/terminate", status(403));
    publish(broker.port(), "plex/test/command/terminate_session", r#"{"id":"t","session_key":"41"}"#, false).await;
    let r = result_for(&mut results, "t").await;
    assert!(r["error"].as_str().is_some_and(|e| e.contains("Plex Pass")), "{r}");
    assert!(results.collect_for(Duration::from_millis(500)).await.is_empty(), "one result per command");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_safety_rules_hold_end_to_end() {
    let broker = Mosquitto::start();
    let pms = pms().await;
    let token = TokenFile::new(&pms.token());
    // A retained command left on the broker before the bridge starts.
    publish(broker.port(), "plex/test/command/library_scan", r#"{"id":"old"}"#, true).await;
    let cfg = config(&broker, &pms, &token, Commands::enabled(Some(&["library_scan", "pause"])));
    let mut results = Probe::subscribe(broker.port(), &[RESULT]).await;
    let mut bridge = start(&broker, &cfg).await;
    let r = result(&mut results).await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().is_some_and(|e| e.contains("mosquitto_pub -r -n -t")), "{r}");
    // Also after a restart.
    bridge.sigterm();
    assert!(bridge.wait_exit(SOON).await.is_some_and(|s| s.success()));
    let mut bridge = start(&broker, &cfg).await;
    assert_eq!(result(&mut results).await["ok"], false);
    assert_eq!(pms.count_requests("/library/sections/all/refresh"), 0, "a retained command never runs");
    publish(broker.port(), "plex/test/command/library_scan", "", true).await; // cleared, as the hint says

    // Refusals, each with one result.
    let refused = [
        ("command/library_scan", "{not json".to_owned(), "malformed JSON"),
        ("command/reboot", "{}".to_owned(), "unknown command"),
        ("players/tv-living/command/stop", "{}".to_owned(), "not allowed"),
        ("players/kitchen/command/pause", "{}".to_owned(), "unknown player"),
        ("command/library_scan", String::new(), "not a command"),
        ("command/library_scan", r#"{"section":"Music"}"#.to_owned(), "unknown section"),
        ("command/library_scan", "x".repeat(1 << 20), "too large"),
    ];
    for (topic, payload, needle) in refused {
        publish(broker.port(), &format!("plex/test/{topic}"), payload, false).await;
        let r = result(&mut results).await;
        assert_eq!(r["ok"], false, "{topic}: {r}");
        assert!(r["error"].as_str().is_some_and(|e| e.contains(needle)), "{topic}: expected {needle:?} in {r}");
    }
    // A repeated id is refused.
    publish(broker.port(), "plex/test/command/library_scan", r#"{"id":"once"}"#, false).await;
    assert_eq!(result_for(&mut results, "once").await["ok"], true);
    publish(broker.port(), "plex/test/command/library_scan", r#"{"id":"once"}"#, false).await;
    let r = result_for(&mut results, "once").await;
    assert!(r["error"].as_str().is_some_and(|e| e.contains("duplicate")), "{r}");

    // 50 commands within a second: at most the rate limit (10 per 10 s, one already used) run, every one answered.
    let before = pms.count_requests("/library/sections/all/refresh");
    let burst: Vec<_> = (0..50)
        .map(|i| publish(broker.port(), "plex/test/command/library_scan", format!(r#"{{"id":"b{i}"}}"#), false))
        .collect();
    futures_util::future::join_all(burst).await;
    let mut answered = std::collections::HashMap::new();
    while answered.len() < 50 {
        let r = result(&mut results).await;
        if let Some(id) = r["id"].as_str().filter(|id| id.starts_with('b')) {
            answered.insert(id.to_owned(), r);
        }
    }
    let ran = answered.values().filter(|r| r["ok"] == true).count();
    let limited = answered.values().filter(|r| r["error"].as_str().is_some_and(|e| e.contains("rate limited"))).count();
    assert!(ran <= 9, "at most the rate limit ran: {ran}");
    assert_eq!(ran + limited, 50, "the rest were refused as rate limited");
    assert_eq!(pms.count_requests("/library/sections/all/refresh") - before, ran);
    assert!(bridge.is_running(), "nothing crashed");
    assert!(!bridge.logs().contains(&pms.token()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_cli_prints_the_result_and_exits_by_it() {
    let broker = Mosquitto::start();
    let pms = pms().await;
    let token = TokenFile::new(&pms.token());
    let cfg = config(&broker, &pms, &token, Commands::enabled(None));
    let _bridge = start(&broker, &cfg).await;
    let cfg = cfg.to_string();
    let args = ["command", "--server", "test", "library_scan", "--section", "Films"];
    let out = Bridge::run_to_exit_split(&args, &[], Some(&cfg), SOON).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let result: Value = serde_json::from_str(out.stdout.trim()).expect("the result as JSON on stdout");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(pms.count_requests("/library/sections/1/refresh"), 1);
    // Refused (not in the allow-list): exit 1, the refusal printed.
    let out = Bridge::run_to_exit_split(
        &["command", "--server", "test", "pause", "--player", "tv-living"],
        &[],
        Some(&cfg),
        SOON,
    )
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("not allowed"), "{out:?}");
    // A player verb without --player never reaches the broker.
    let out = Bridge::run_to_exit_split(&["command", "--server", "test", "pause"], &[], Some(&cfg), SOON).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("--player"), "{out:?}");
}

/// The retained discovery configs, as JSON, with the components each has.
async fn device_configs(broker: &Mosquitto) -> Vec<Value> {
    support::retained(broker.port(), "homeassistant/device/+/config")
        .await
        .into_values()
        .filter_map(|payload| serde_json::from_slice(&payload).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_buttons_follow_the_allow_list() {
    let broker = Mosquitto::start();
    let pms = pms().await;
    let token = TokenFile::new(&pms.token());
    let find = |configs: &[Value], key: &str| configs.iter().find(|c| c["cmps"].get(key).is_some()).cloned();
    let removed = serde_json::json!({"p": "button"});

    let mut bridge =
        start(&broker, &config(&broker, &pms, &token, Commands::enabled(Some(&["library_scan", "pause"])))).await;
    let mut configs = Vec::new();
    wait::poll(SOON, async || {
        configs = device_configs(&broker).await;
        find(&configs, "now_playing").map(|_| ())
    })
    .await;
    let server = find(&configs, "library_scan").expect("the server's device");
    let cmps = &server["cmps"];
    assert_eq!(cmps["button_scan_all"]["command_topic"], "plex/test/command/library_scan", "{cmps}");
    assert_eq!(cmps["button_scan_1"]["name"], "Scan Films");
    assert_eq!(cmps["button_scan_2"]["payload_press"], r#"{"section":"2"}"#);
    let player = find(&configs, "now_playing").expect("the player's device");
    assert_eq!(player["cmps"]["button_pause"]["command_topic"], "plex/test/players/tv-living/command/pause");
    assert_eq!(player["cmps"]["button_stop"], removed, "stop is not allowed");
    // A button press is a command like any other.
    let mut results = Probe::subscribe(broker.port(), &[RESULT]).await;
    let press = cmps["button_scan_1"]["payload_press"].as_str().expect("payload_press").to_owned();
    publish(broker.port(), "plex/test/command/library_scan", press, false).await;
    assert_eq!(result(&mut results).await["ok"], true);

    // Scans no longer allowed: the scan buttons are removed at the next start.
    bridge.sigterm();
    assert!(bridge.wait_exit(SOON).await.is_some());
    let _bridge = start(&broker, &config(&broker, &pms, &token, Commands::enabled(Some(&["pause"])))).await;
    let mut server = Value::Null;
    let removed_now = wait::poll(SOON, async || {
        let configs = device_configs(&broker).await;
        server = find(&configs, "library_scan").expect("the server's device");
        (server["cmps"]["button_scan_all"] == removed).then_some(())
    })
    .await;
    assert!(removed_now.is_some(), "the scan button was not removed: {server}");
    assert_eq!(server["cmps"]["button_scan_1"], removed, "the section buttons go too: {server}");
    assert_eq!(server["cmps"]["button_scan_2"], removed, "{server}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_command_that_ran_keeps_its_id_and_unknown_servers_are_counted_once() {
    let broker = Mosquitto::start();
    let pms = pms().await;
    let token = TokenFile::new(&pms.token());
    let http = support::mosquitto::free_port();
    let cfg = config(&broker, &pms, &token, allowing(&["library_scan", "terminate_session"])).http(http);
    let mut results = Probe::subscribe(broker.port(), &[RESULT, "plex/elsewhere/#"]).await;
    let bridge = start(&broker, &cfg).await;

    // Refused after the gate (no such section / no such stream): the id is free again at once.
    publish(broker.port(), "plex/test/command/library_scan", r#"{"id":"reuse-1","section":"Nope"}"#, false).await;
    let r = result_for(&mut results, "reuse-1").await;
    assert!(r["error"].as_str().is_some_and(|e| e.contains("unknown section")), "{r}");
    publish(broker.port(), "plex/test/command/library_scan", r#"{"id":"reuse-1"}"#, false).await;
    let r = result_for(&mut results, "reuse-1").await;
    assert_eq!(r["ok"], true, "the corrected command runs: {r}");
    let stop = "plex/test/command/terminate_session";
    publish(broker.port(), stop, r#"{"id":"reuse-2","session_key":"999"}"#, false).await;
    let r = result_for(&mut results, "reuse-2").await;
    assert!(r["error"].as_str().is_some_and(|e| e.contains("no stream")), "{r}");
    publish(broker.port(), stop, r#"{"id":"reuse-2","session_key":"41"}"#, false).await;
    assert_eq!(result_for(&mut results, "reuse-2").await["ok"], true);
    // One that ran keeps its id.
    publish(broker.port(), "plex/test/command/library_scan", r#"{"id":"reuse-1"}"#, false).await;
    let r = result_for(&mut results, "reuse-1").await;
    assert!(r["error"].as_str().is_some_and(|e| e.contains("duplicate")), "{r}");

    // A server this bridge does not serve: no result anywhere, one log line, every message counted.
    for _ in 0..3 {
        publish(broker.port(), "plex/elsewhere/command/library_scan", "{}", false).await;
    }
    let counted = wait::poll(SOON, async || {
        let (_, metrics) = support::http::get(http, "/metrics").await;
        metrics.contains("plex_mqtt_bridge_command_messages_total{outcome=\"unknown_server\"} 3").then_some(())
    })
    .await;
    assert!(counted.is_some(), "commands for an unknown server are counted");
    assert_eq!(bridge.logs().matches("command for a server this bridge does not serve").count(), 1);
    results
        .assert_nothing_within(Duration::from_millis(300), "a result for an unknown server", |m| {
            m.topic.starts_with("plex/elsewhere/") && m.topic != "plex/elsewhere/command/library_scan"
        })
        .await;
}
