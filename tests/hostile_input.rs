//! Hostile input end to end (issue 17): secrets in config errors and URLs, drop counting, a frame announcing
//! thousands of sessions, server-supplied strings that try to forge log lines, huge REST answers, a client taking
//! over the bridge's MQTT client id, floods of health clients and running out of file descriptors: the real
//! daemon between a fake PMS and a real Mosquitto, observed through MQTT, its log, its health endpoint and /proc.

mod support;

use std::time::Duration;

use support::bridge::peak_rss_kib;
use support::fake_pms::{CannedResponse, FakePmsConfig};
use support::frames::{playing_frame, status, Play};
use support::wait::{self, SOON};
use support::{test_config, Bridge, BridgeConfig, FakePms, Mosquitto, Msg, Probe, TokenFile};

/// A secret that must never be printed.
const SECRET: &str = "SECRETvalue0123456789";

/// Runs `--print-config` on `config`: the exit code and stderr (stdout must be empty on an error).
async fn config_error(config: &str) -> (Option<i32>, String) {
    let out = Bridge::run_to_exit_split(&["--print-config"], &[], Some(config), SOON).await;
    assert!(out.stdout.is_empty(), "nothing on stdout for a bad config: {}", out.stdout);
    (out.code, out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_syntax_errors_name_key_line_and_column_and_never_print_the_secret() {
    let cases = [
        (
            "an unquoted token",
            format!("[[servers]]\nurl = \"http://127.0.0.1:32400\"\ntoken = {SECRET}\n"),
            "servers[0].token",
            3,
        ),
        (
            "an unterminated token",
            format!("[[servers]]\nurl = \"http://127.0.0.1:32400\"\ntoken = \"{SECRET}\nname = \"x\"\n"),
            "servers[0].token",
            3,
        ),
        (
            "an unquoted MQTT password",
            format!("[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\nusername = \"u\"\npassword = {SECRET}\n"),
            "mqtt.password",
            4,
        ),
    ];
    for (what, config, key, line) in cases {
        let (code, stderr) = config_error(&config).await;
        assert_eq!(code, Some(78), "{what}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: one line: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")), "{what}: names the key: {stderr}");
        assert!(stderr.contains(&format!("line {line}, column")), "{what}: names line and column: {stderr}");
        assert!(stderr.contains("put the value in quotes"), "{what}: says the fix: {stderr}");
        assert!(!stderr.contains(&SECRET[..10]), "{what}: the secret is printed: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_urls_with_a_path_query_fragment_or_credentials_are_refused_without_echoing_them() {
    let urls = [
        format!("http://127.0.0.1:32400/#X-Plex-Token={SECRET}"),
        format!("http://127.0.0.1:32400/?X-Plex-Token={SECRET}"),
        format!("http://127.0.0.1:32400/{SECRET}"),
        format!("http://user:{SECRET}@127.0.0.1:32400"),
        format!("http://{SECRET}@127.0.0.1:32400/"),
    ];
    for url in urls {
        let config = format!("[[servers]]\nurl = \"{url}\"\ntoken = \"t\"\n");
        let (code, stderr) = config_error(&config).await;
        assert_eq!(code, Some(78), "{url}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{url}: one line: {stderr}");
        assert!(stderr.contains("`servers[0].url`"), "{url}: names the key: {stderr}");
        assert!(!stderr.contains(&SECRET[..10]), "{url}: the secret part is printed: {stderr}");
    }
    // Only scheme, host and port (with or without the trailing slash) are accepted.
    for url in ["http://127.0.0.1:32400", "http://127.0.0.1:32400/"] {
        let config = format!("[[servers]]\nurl = \"{url}\"\ntoken = \"t\"\n");
        let out = Bridge::run_to_exit_split(&["--print-config"], &[], Some(&config), SOON).await;
        assert_eq!(out.code, Some(0), "{url}: {}", out.stderr);
    }
}

/// A bridge on a WebSocket with its config edited by `edit` and its health endpoint on; the broker, probe and
/// fake PMS beside it.
async fn bridge_with(
    edit: impl FnOnce(BridgeConfig) -> BridgeConfig,
) -> (Mosquitto, FakePms, TokenFile, Probe, u16, Bridge) {
    let broker = Mosquitto::start();
    let pms = FakePms::start_default().await;
    let token = TokenFile::new(&pms.token());
    let probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
    let http = support::mosquitto::free_port();
    let bridge = Bridge::start(&edit(test_config(&broker.url(), &pms.url(), token.path())).http(http));
    (broker, pms, token, probe, http, bridge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dropped_live_event_is_counted_and_an_overflow_is_logged_once() {
    let (_broker, pms, _token, mut probe, http, bridge) = bridge_with(|config| config).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    // One frame of 50,000 items. With the broker up the reader waits for room between frames, so only one
    // frame's items can come on top of a full queue; the queue takes 4 × mqtt.queue_size (40,000) then.
    let items: Vec<String> = (0..50_000).map(|i| format!(r#"{{"title":"s{i}"}}"#)).collect();
    let items: Vec<&str> = items.iter().map(String::as_str).collect();
    pms.push_text(&status(&items));
    // The newest 40,000 are kept and delivered, in order; the oldest 10,000 are dropped.
    let last = probe.expect_payload("plex/test/status", r#"{"title":"s49999"}"#, Duration::from_secs(60)).await;
    drop(last);
    let delivered = probe.history_on("plex/test/status").len() as f64;
    assert!(bridge.wait_for_log("live-event queue has room again", SOON).await, "{}", bridge.logs());
    let (_, metrics) = support::http::get(http, "/metrics").await;
    let dropped = support::http::metric(&metrics, "plex_mqtt_bridge_messages_dropped_total", &[]);
    assert_eq!(dropped + delivered, 50_000.0, "every event is delivered or counted as dropped: {metrics}");
    assert_eq!(dropped, 10_000.0, "{metrics}");
    let logs = bridge.logs();
    let full: Vec<&str> = logs.lines().filter(|l| l.contains("live-event queue full")).collect();
    assert_eq!(full.len(), 1, "one warning per overflow episode: {full:?}");
    assert!(full[0].contains("dropped=10000"), "the warning says how many: {}", full[0]);
    let ended: Vec<&str> = logs.lines().filter(|l| l.contains("live-event queue has room again")).collect();
    assert!(ended.len() == 1 && ended[0].contains("dropped=10000"), "the episode's total is logged: {ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_slower_than_plex_loses_nothing_and_the_paused_link_is_not_taken_for_dead() {
    // One PUBLISH in flight at a time: the broker acknowledges, slowly (one round trip per message), while the
    // fake PMS writes 100,000 notifications as fast as it can. idle_timeout is 1 s in the test config, far
    // shorter than the pauses.
    let (_broker, pms, _token, mut probe, http, bridge) =
        bridge_with(|config| config.mqtt(|m| m.max_inflight = Some(1))).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    const FRAMES: usize = 50;
    const PER_FRAME: usize = 2_000;
    for frame in 0..FRAMES {
        let items: Vec<String> = (0..PER_FRAME).map(|i| format!(r#"{{"title":"f{frame}i{i}"}}"#)).collect();
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        pms.push_text(&status(&items));
    }
    let last = format!(r#"{{"title":"f{}i{}"}}"#, FRAMES - 1, PER_FRAME - 1);
    probe.expect_payload("plex/test/status", &last, Duration::from_secs(120)).await;
    let delivered = probe.history_on("plex/test/status").len();
    assert_eq!(delivered, FRAMES * PER_FRAME, "every notification delivered");
    let (_, metrics) = support::http::get(http, "/metrics").await;
    assert_eq!(support::http::metric(&metrics, "plex_mqtt_bridge_messages_dropped_total", &[]), 0.0, "{metrics}");
    assert_eq!(pms.ws_connections_total(), 1, "no reconnect: a reader paused for the broker is not a dead link");
    assert!(!bridge.logs().contains("live-event queue full"), "no overflow while the broker is up");
    let peak = peak_rss_kib(bridge.pid());
    assert!(peak > 0 && peak < 64 * 1024, "peak memory {peak} KiB");
}

/// A `playing` frame announcing `n` new sessions (keys 1..=n).
fn many_sessions_frame(n: usize) -> String {
    let items: Vec<String> =
        (1..=n).map(|k| Play::new(&k.to_string()).rating_key(&k.to_string()).without_player().item()).collect();
    let items: Vec<&str> = items.iter().map(String::as_str).collect();
    playing_frame(&items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_thousands_of_new_sessions_is_capped_and_never_stalls_the_bridge() {
    let (_broker, pms, _token, mut probe, http, mut bridge) =
        bridge_with(|config| config.plex(|p| p.max_sessions = Some(1000))).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    // /healthz is asked all the while; each answer must come (the runtime is never blocked for long). The
    // benchmark measures how fast; this bound only catches a stall.
    let poller = tokio::spawn(async move {
        let (mut answers, mut slowest) = (0, Duration::ZERO);
        let until = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < until {
            let started = std::time::Instant::now();
            let answer = tokio::time::timeout(SOON, support::http::get(http, "/healthz")).await;
            assert!(answer.is_ok_and(|(status, _)| status == 200), "/healthz did not answer 200 within {SOON:?}");
            slowest = slowest.max(started.elapsed());
            answers += 1;
            wait::pace(Duration::from_millis(20)).await;
        }
        (answers, slowest)
    });
    pms.push_text(&many_sessions_frame(4_000));
    let capped = |m: &Msg| m.topic == "plex/test/sessions" && m.json()["count"] == 1000;
    if !probe.history().iter().any(capped) {
        probe.expect(Duration::from_secs(30), "a sessions summary of the 1000 tracked sessions", capped).await;
    }
    let (answers, slowest) = poller.await.expect("the health poller");
    assert!(answers > 10 && slowest < Duration::from_secs(5), "{answers} answers, slowest {slowest:?}");
    let summaries = probe.history_on("plex/test/sessions");
    let summary = summaries.last().expect("a summary").json();
    assert_eq!(summary["count"], 1000, "never more than the cap: {}", summary["count"]);
    assert_eq!(summary["sessions"].as_array().map(Vec::len), Some(1000), "the summary lists the tracked sessions");
    assert!(summaries.len() <= 3, "the summary is built once per batch, not per session: {}", summaries.len());
    let logs = bridge.logs();
    let warnings: Vec<&str> =
        logs.lines().filter(|l| l.contains("more playback sessions than plex.max_sessions")).collect();
    assert_eq!(warnings.len(), 1, "the overflow is logged once: {warnings:?}");
    assert!(warnings[0].contains("untracked=3000"), "with how many: {}", warnings[0]);
    let (_, metrics) = support::http::get(http, "/metrics").await;
    assert_eq!(support::http::metric(&metrics, "plex_mqtt_bridge_sessions_untracked_total", &[]), 3000.0);
    // Every raw notification still went out.
    let raw = || probe.history_on("plex/test/playing").len();
    wait::until("the 4000 raw playing notifications", SOON, || raw() >= 4000).await;
    assert_eq!(raw(), 4000);
    assert!(bridge.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_supplied_strings_cannot_forge_log_lines_in_text_or_json() {
    let forged = "Fake\nWARN plex_mqtt_bridge: forged line\r\x1b[31mred\u{9b}";
    for format in ["text", "json"] {
        let pms_config = FakePmsConfig { friendly_name: forged.to_owned(), ..FakePmsConfig::default() };
        let broker = Mosquitto::start();
        let pms = FakePms::start(pms_config).await;
        let token = TokenFile::new(&pms.token());
        let mut probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
        // No configured name: the topic name comes from the friendlyName, which is logged.
        let config = test_config(&broker.url(), &pms.url(), token.path()).server_name(None).log_format(format);
        let bridge = Bridge::start(&config);
        probe.expect(SOON, "connected", |m| m.topic.ends_with("/state") && m.payload == b"connected").await;
        assert!(bridge.wait_for_log("friendlyName", SOON).await, "{}", bridge.logs());
        let logs = bridge.logs();
        for line in logs.lines() {
            assert!(!line.contains("forged line") || line.contains("friendly"), "{format}: a forged line: {line:?}");
            assert!(!line.contains(['\r', '\x1b', '\u{9b}']), "{format}: a raw control character: {line:?}");
            if format == "json" {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("json: every line is one JSON object ({e}): {line:?}"));
            }
        }
        let named = logs.lines().find(|l| l.contains("friendlyName")).expect("the friendlyName line");
        assert!(named.contains("forged line"), "{format}: the name is shown, escaped: {named}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_deeply_nested_rest_responses_are_refused_at_the_cap_and_raw_events_flow() {
    let (_broker, pms, _token, mut probe, http, bridge) =
        bridge_with(|config| config.plex(|p| p.max_response_size = Some(1_048_576))).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    // 20 MB of a session list that never ends, and an activity list nested 100,000 deep.
    let mut huge = String::from(r#"{"MediaContainer":{"size":1,"Metadata":["#);
    huge.push_str(&" ".repeat(20 * 1024 * 1024));
    pms.set_canned("/status/sessions", CannedResponse::json(huge));
    pms.set_canned("/activities", CannedResponse::json(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))));
    let playing = Play::new("9").rating_key("1").without_player().item();
    pms.push_text(&playing_frame(&[&playing]));
    probe.expect_payload("plex/test/playing", &playing, SOON).await;
    assert!(
        bridge.wait_for_log("response larger than 1048576 bytes (plex.max_response_size)", SOON).await,
        "{}",
        bridge.logs()
    );
    // The play event goes out without details, and the bridge keeps bridging.
    let play = probe.expect(SOON, "play without details", |m| m.topic == "plex/test/events/playback").await.json();
    assert_eq!(play["event_type"], "play");
    pms.push_text(&status(&[r#"{"title":"still here"}"#]));
    probe.expect_payload("plex/test/status", r#"{"title":"still here"}"#, SOON).await;
    let (status, _) = support::http::get(http, "/healthz").await;
    assert_eq!(status, 200);
    let peak = peak_rss_kib(bridge.pid());
    assert!(peak > 0 && peak < 64 * 1024, "peak memory {peak} KiB: the 20 MB body was not buffered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_taking_over_the_bridges_client_id_causes_no_reconnect_storm() {
    let broker = Mosquitto::start();
    let pms = FakePms::start_default().await;
    let token = TokenFile::new(&pms.token());
    let config = test_config(&broker.url(), &pms.url(), token.path());
    let client_id = config.mqtt.client_id.clone().expect("client_id in the test config");
    let mut probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
    let bridge = Bridge::start(&config);
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    // Another client with the same id, which (like a second bridge) reconnects at once whenever it is kicked.
    let rival = tokio::spawn(async move {
        let (_client, mut eventloop) =
            rumqttc::AsyncClient::builder(support::mqtt::mqtt_options(&client_id, broker.port())).capacity(8).build();
        let until = std::time::Instant::now() + Duration::from_secs(6);
        while std::time::Instant::now() < until {
            let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
        }
        broker
    });
    let broker = rival.await.expect("rival task");
    let connects = bridge.logs().matches("connected to the MQTT broker").count();
    // With the minimum delay (250 ms) each time, six seconds of fighting would be about 20 connections; with
    // the backoff growing (250 ms, 500 ms, 1 s, 2 s, …) it is a handful.
    assert!(connects <= 8, "{connects} connections in 6 s:\n{}", bridge.logs());
    assert!(bridge.logs().contains("mqtt.client_id"), "the likely takeover is named");
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_slow_health_clients_and_a_huge_header_do_not_disturb_the_bridging() {
    let (_broker, pms, _token, mut probe, http, bridge) = bridge_with(|config| config).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    // 2,000 connections that never send a byte (slowloris), and one with a 1 MB header.
    let mut idle = Vec::new();
    for i in 0..2_000 {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", http));
        let stream = wait::within("an idle connection to the health endpoint", SOON, connect).await;
        idle.push(stream.unwrap_or_else(|e| panic!("idle connection {i} to the health endpoint: {e}")));
    }
    assert_eq!(idle.len(), 2_000, "the whole flood is held");
    let huge = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", http)).await.expect("connect");
        let head = format!("GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(1024 * 1024));
        let _ = stream.write_all(head.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    });
    for i in 0..100 {
        let item = format!(r#"{{"title":"during the flood {i}"}}"#);
        pms.push_text(&status(&[&item]));
    }
    probe.expect_payload("plex/test/status", r#"{"title":"during the flood 99"}"#, SOON).await;
    assert_eq!(probe.history_on("plex/test/status").len(), 100, "every notification bridged during the flood");
    let answer = huge.await.expect("huge-header client");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "a 1 MB header is refused: {answer:.80}");
    drop(idle);
    // Once the flood is gone the endpoint answers again (slots of idle clients are freed by their timeout).
    let back = wait::poll(Duration::from_secs(15), async || {
        let answer = tokio::time::timeout(Duration::from_secs(2), support::http::try_get(http, "/healthz")).await;
        answer.ok().flatten().filter(|(status, _)| *status == 200)
    })
    .await;
    assert!(back.is_some(), "/healthz did not come back:\n{}", bridge.logs());
    assert_eq!(pms.ws_connections_total(), 1, "the Plex session was never disturbed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plex_closing_the_socket_of_a_paused_reader_leads_to_a_normal_reconnect_and_resync() {
    let (_broker, pms, _token, mut probe, _http, _bridge) =
        bridge_with(|config| config.mqtt(|m| m.max_inflight = Some(1))).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    let resyncs_before = pms.count_requests("/status/sessions");
    // Far more than the queue holds: the reader pauses; then the server gives up on it.
    for frame in 0..20 {
        let items: Vec<String> = (0..2_000).map(|i| format!(r#"{{"title":"f{frame}i{i}"}}"#)).collect();
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        pms.push_text(&status(&items));
    }
    // The bridge is working through them (and with one PUBLISH in flight, far from done) when Plex gives up.
    probe.expect(SOON, "the first of the notifications", |m| m.topic == "plex/test/status").await;
    assert!(pms.drop_connections() >= 1);
    probe.expect_payload("plex/test/state", "disconnected", Duration::from_secs(60)).await;
    probe.expect_payload("plex/test/state", "connected", Duration::from_secs(60)).await;
    assert!(pms.wait_for_requests("/status/sessions", resyncs_before + 1, SOON).await, "resync after the reconnect");
    pms.push_text(&status(&[r#"{"title":"after"}"#]));
    probe.expect_payload("plex/test/status", r#"{"title":"after"}"#, Duration::from_secs(60)).await;
}

/// User + system CPU time of a process so far (clock ticks, from /proc); panics when it cannot be read, so a
/// CPU bound is never checked against a figure that was not measured.
fn cpu_ticks(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_else(|| panic!("{path}: {stat:?}"));
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 12 and 13 after the name.
    let field = |i: usize| -> u64 {
        fields.get(i).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{path}: no field {}: {stat:?}", i + 3))
    };
    field(11) + field(12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_health_endpoint_backs_off_instead_of_spinning() {
    let prlimit = support::mosquitto::find_binary("prlimit", &["/usr/bin", "/bin"])
        .expect("prlimit (util-linux) is needed for this test: apt-get install -y util-linux");
    let (_broker, pms, _token, mut probe, http, bridge) = bridge_with(|config| config).await;
    probe.expect_payload("plex/test/state", "connected", SOON).await;
    // Leave the bridge a few descriptors above what it holds now, then use them all up with connections.
    let open = std::fs::read_dir(format!("/proc/{}/fd", bridge.pid())).map(|d| d.count()).unwrap_or(0);
    let limit = open + 4;
    let limited = std::process::Command::new(prlimit)
        .arg(format!("--pid={}", bridge.pid()))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("run prlimit");
    assert!(limited.success(), "prlimit failed");
    // The connections complete in the listener's backlog even when the bridge cannot accept them.
    let mut held = Vec::new();
    for i in 0..64 {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", http));
        let stream = wait::within("a connection to the health endpoint", SOON, connect).await;
        held.push(stream.unwrap_or_else(|e| panic!("connection {i} to the health endpoint: {e}")));
    }
    assert!(held.len() > 4, "more connections ({}) than the bridge has descriptors left (4)", held.len());
    assert!(
        bridge.wait_for_log("health endpoint cannot accept connections", SOON).await,
        "accept() fails once the descriptors are used up:\n{}",
        bridge.logs()
    );
    let before = cpu_ticks(bridge.pid());
    // The CPU the bridge burns over a 2 s window with accept() failing.
    wait::observe(Duration::from_secs(2)).await;
    let spent = cpu_ticks(bridge.pid()) - before;
    // Spinning on accept() would burn a whole core: about 200 ticks in 2 s.
    assert!(spent < 40, "the bridge spent {spent} ticks in 2 s with accept() failing:\n{}", bridge.logs());
    assert!(bridge.logs().contains("health endpoint cannot accept connections"), "{}", bridge.logs());
    // Bridging goes on meanwhile (the WebSocket is already open).
    pms.push_text(&status(&[r#"{"title":"still bridging"}"#]));
    probe.expect_payload("plex/test/status", r#"{"title":"still bridging"}"#, SOON).await;
    drop(held);
}
