//! Many Plex servers in one bridge (issue 29): n fake servers, one release bridge with the production defaults
//! and the systemd unit's file-descriptor limit, one Mosquitto. Printed for each n, per run and as the median of
//! the runs:
//! - start-up: time from spawning the bridge to the first and to the last server's retained `connected`, and the
//!   REST requests per server until then;
//! - memory: RSS 3 s after all are connected;
//! - idle: the bridge's CPU time (all threads, `/proc/<pid>/task/*/schedstat`) and wake-ups (context switches)
//!   per second over [`IDLE`] of silence;
//! - steady playback: one session per server, a `playing` notification per server every second; the
//!   `/status/sessions` requests per server per minute, counted over [`STEADY`] after a [`STEADY_WARMUP`];
//! - reconnect storm: every fake server drops its WebSocket at once; the time until all are `connected` again,
//!   the REST requests per server meanwhile, and the bytes (and messages) published on `plex/bridge/stats`
//!   from the drop until a second after the last reconnect;
//! - EMFILE: the log lines that name it (or the OS's "Too many open files").
//!
//! Run with `cargo bench --bench scale` (needs `mosquitto`). `SCALE_SIZES=1,50` picks the n, `SCALE_RUNS=5` the
//! runs per n (default 3), `SCALE_BRIDGE=<path>` runs another build of the bridge (to compare commits), and
//! `SCALE_FD_SOFT=1024` starts the bridge with that soft limit under the unit's hard one (as a shell would).
//!
//! The bridge gets the unit's `LimitNOFILE=` as soft and hard limit, or this process's hard limit where that is
//! lower (raising a hard limit needs a privilege containers often drop); the run says which.
//! Figures: BENCHMARKS.md, "Many servers in one bridge".

#![cfg_attr(test, allow(dead_code))]

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/loadgen/mod.rs"]
mod loadgen;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loadgen::{context_switches, cpu_ns, machine, proc_status_kib};
use serde_json::json;
use support::config::{BridgeConfig, Server};
use support::fake_pms::CannedResponse;
use support::frames::Play;
use support::{Bridge, FakePms, Mosquitto, Probe, TokenFile};

/// The n of a default run.
const SIZES: [usize; 4] = [1, 50, 200, 400];
/// Runs per n by default.
const RUNS: usize = 3;
/// How long start-up and a storm may take before the run is reported as stuck.
const LIMIT: Duration = Duration::from_secs(120);
/// Memory is read this long after the last server connected.
const SETTLE: Duration = Duration::from_secs(3);
/// The idle window.
const IDLE: Duration = Duration::from_secs(10);
/// Steady playback: the first seconds (each new session's details) are not counted …
const STEADY_WARMUP: Duration = Duration::from_secs(5);
/// … requests are counted over this window.
const STEADY: Duration = Duration::from_secs(30);
/// Stats published this long after the last reconnect still count to the storm (the bridge holds changes back
/// for at most half a second).
const STORM_TAIL: Duration = Duration::from_secs(1);
const SESSIONS: &str = "/status/sessions";

/// What the probe saw, with the time it arrived.
#[derive(Default)]
struct Seen {
    /// (when, server name, state) of every `plex/<server>/state` message.
    states: Vec<(Instant, String, String)>,
    /// (when, bytes) of every `plex/bridge/stats` message.
    stats: Vec<(Instant, usize)>,
}

impl Seen {
    /// When each of `names` was first `connected` at or after `since`, if all were.
    fn all_connected_since(&self, names: &[String], since: Instant) -> Option<Vec<Instant>> {
        names
            .iter()
            .map(|name| {
                self.states.iter().find(|(at, n, s)| *at >= since && n == name && s == "connected").map(|(at, ..)| *at)
            })
            .collect()
    }

    /// Bytes and messages on the stats topic in `[from, to]`.
    fn stats_between(&self, from: Instant, to: Instant) -> (usize, usize) {
        let within: Vec<usize> =
            self.stats.iter().filter(|(at, _)| *at >= from && *at <= to).map(|(_, b)| *b).collect();
        (within.iter().sum(), within.len())
    }
}

/// Reads the probe on a task of its own and timestamps every message as it arrives.
fn watch(mut probe: Probe) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(msg) = probe.next(Duration::from_secs(3600)).await {
            let at = Instant::now();
            let mut seen = record.lock().expect("seen lock");
            if msg.topic == "plex/bridge/stats" {
                seen.stats.push((at, msg.payload.len()));
            } else if let Some(name) = msg.topic.strip_prefix("plex/").and_then(|t| t.strip_suffix("/state")) {
                seen.states.push((at, name.to_owned(), msg.text()));
            }
        }
    });
    (seen, task)
}

/// Waits until every server was `connected` at or after `since`; the times, or a panic after [`LIMIT`].
async fn wait_all_connected(seen: &Mutex<Seen>, names: &[String], since: Instant, what: &str) -> Vec<Instant> {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(times) = seen.lock().expect("seen lock").all_connected_since(names, since) {
            return times;
        }
        assert!(Instant::now() < deadline, "{what}: not every server connected within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One run's figures.
#[derive(Clone, Copy, Default)]
struct Figures {
    first_connected_s: f64,
    all_connected_s: f64,
    startup_requests_per_server: f64,
    rss_mib: f64,
    idle_cpu_us_per_s: f64,
    idle_wakeups_per_s: f64,
    sessions_reads_per_server_per_min: f64,
    sessions_reads_max_per_server_per_min: f64,
    storm_recovery_s: f64,
    storm_requests_per_server: f64,
    storm_stats_kb: f64,
    storm_stats_messages: f64,
    emfile_lines: f64,
}

impl Figures {
    const NAMES: [&'static str; 13] = [
        "first connected (s)",
        "all connected (s)",
        "REST requests per server, start-up",
        "RSS (MiB)",
        "idle CPU (µs/s)",
        "idle wake-ups (/s)",
        "/status/sessions per server per min, steady playback (mean)",
        "/status/sessions per server per min, steady playback (max)",
        "storm: all reconnected after (s)",
        "storm: REST requests per server",
        "storm: bytes on bridge/stats (kB)",
        "storm: bridge/stats messages",
        "EMFILE log lines",
    ];

    fn values(&self) -> [f64; 13] {
        [
            self.first_connected_s,
            self.all_connected_s,
            self.startup_requests_per_server,
            self.rss_mib,
            self.idle_cpu_us_per_s,
            self.idle_wakeups_per_s,
            self.sessions_reads_per_server_per_min,
            self.sessions_reads_max_per_server_per_min,
            self.storm_recovery_s,
            self.storm_requests_per_server,
            self.storm_stats_kb,
            self.storm_stats_messages,
            self.emfile_lines,
        ]
    }
}

/// `/status/sessions` listing session 1 on player `player-1` (what the notifications below name).
fn sessions_body() -> String {
    json!({"MediaContainer": {"size": 1, "Metadata": [{
        "sessionKey": "1", "ratingKey": "91", "type": "movie", "title": "Arrival", "year": 2016, "duration": 6_960_000,
        "viewOffset": 0, "User": {"id": "1", "title": "alice"},
        "Player": {"title": "TV", "product": "Plex for LG", "platform": "webOS", "machineIdentifier": "player-1",
                   "address": "192.168.1.20", "local": true, "state": "playing"},
        "Session": {"id": "s1", "bandwidth": 8000, "location": "lan"}
    }]}})
    .to_string()
}

/// The unit's `LimitNOFILE=` (what the bridge runs with under systemd).
fn unit_fd_limit() -> u64 {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/plex-mqtt-bridge.service");
    let text = std::fs::read_to_string(&unit).unwrap_or_else(|e| panic!("read {}: {e}", unit.display()));
    text.lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE=")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{} sets no numeric LimitNOFILE=", unit.display()))
}

fn config(broker: &Mosquitto, servers: &[FakePms], token: &Path) -> BridgeConfig {
    let mut config = BridgeConfig::defaults(&broker.url(), &servers[0].url(), token)
        .log_level("warn,plex_mqtt_bridge::app=info,plex_mqtt_bridge::fd_limit=info")
        .log_format("text");
    config.mqtt.client_id = Some(format!("bench-scale-{}", std::process::id()));
    config.servers =
        servers.iter().enumerate().map(|(i, pms)| Server::new(&pms.url(), token, &format!("s{i:03}"))).collect();
    config
}

/// REST requests (all paths but the notification streams) the servers recorded in `[from, to]`.
fn rest_requests(servers: &[FakePms], from: Instant, to: Instant) -> usize {
    servers
        .iter()
        .flat_map(|pms| pms.requests())
        .filter(|r| r.status != 101 && !r.path.contains("/notifications") && r.at >= from && r.at <= to)
        .count()
}

async fn one_run(n: usize, bridge_bin: &Path, fd_limit: (u64, u64)) -> Figures {
    let broker = Mosquitto::start();
    let mut servers = Vec::with_capacity(n);
    for _ in 0..n {
        let pms = FakePms::start_default().await;
        pms.set_canned(SESSIONS, CannedResponse::json(sessions_body()));
        pms.set_canned("/activities", CannedResponse::json(r#"{"MediaContainer":{"size":0}}"#));
        servers.push(pms);
    }
    let token = TokenFile::new(&servers[0].token());
    let names: Vec<String> = (0..n).map(|i| format!("s{i:03}")).collect();
    let probe = Probe::subscribe(broker.port(), &["plex/+/state", "plex/bridge/stats"]).await;
    let (seen, watcher) = watch(probe);
    let config = config(&broker, &servers, token.path());

    // Start-up.
    let spawned = Instant::now();
    let mut bridge = Bridge::start_program(bridge_bin, &config, Some(fd_limit));
    let times = wait_all_connected(&seen, &names, spawned, "start-up").await;
    let first = times.iter().min().copied().unwrap_or(spawned);
    let last = times.iter().max().copied().unwrap_or(spawned);
    tokio::time::sleep(SETTLE).await;
    let startup_requests = rest_requests(&servers, spawned, Instant::now());
    let rss_kib = proc_status_kib(bridge.pid(), "VmRSS").unwrap_or(0);

    // Idle.
    let (cpu0, switches0) = (cpu_ns(bridge.pid()), context_switches(bridge.pid()));
    tokio::time::sleep(IDLE).await;
    let (cpu1, switches1) = (cpu_ns(bridge.pid()), context_switches(bridge.pid()));

    // Steady playback: one session per server, a notification a second each.
    let playback = Instant::now();
    let (counted_from, counted_to) = (playback + STEADY_WARMUP, playback + STEADY_WARMUP + STEADY);
    let mut second = 0u64;
    while Instant::now() < counted_to {
        let frame = Play::new("1").rating_key("91").at(second * 1_000).frame();
        for pms in &servers {
            pms.push_text(&frame);
        }
        second += 1;
        tokio::time::sleep((playback + Duration::from_secs(second)).saturating_duration_since(Instant::now())).await;
    }
    let reads: Vec<usize> = servers
        .iter()
        .map(|pms| pms.requests_to(SESSIONS).iter().filter(|r| r.at >= counted_from && r.at <= counted_to).count())
        .collect();
    let per_minute = 60.0 / STEADY.as_secs_f64();

    // Reconnect storm.
    let storm = Instant::now();
    for pms in &servers {
        pms.drop_connections();
    }
    let times = wait_all_connected(&seen, &names, storm, "storm").await;
    let recovered = times.iter().max().copied().unwrap_or(storm);
    tokio::time::sleep(STORM_TAIL).await;
    let storm_requests = rest_requests(&servers, storm, Instant::now());
    let (stats_bytes, stats_messages) = seen.lock().expect("seen lock").stats_between(storm, recovered + STORM_TAIL);

    bridge.sigterm();
    let exited = bridge.wait_exit(Duration::from_secs(10)).await;
    let logs = bridge.logs();
    assert!(exited.is_some_and(|s| s.success()), "n={n}: no clean exit on SIGTERM:\n{logs}");
    watcher.abort();
    let emfile = logs.lines().filter(|l| l.contains("EMFILE") || l.contains("Too many open files")).count();
    if let Some(line) = logs.lines().find(|l| l.contains("plex_mqtt_bridge::fd_limit")) {
        println!("n={n}: the bridge says: {}", line.split_once("fd_limit: ").map_or(line, |(_, rest)| rest));
    }
    Figures {
        first_connected_s: (first - spawned).as_secs_f64(),
        all_connected_s: (last - spawned).as_secs_f64(),
        startup_requests_per_server: startup_requests as f64 / n as f64,
        rss_mib: rss_kib as f64 / 1024.0,
        idle_cpu_us_per_s: (cpu1 - cpu0) as f64 / 1e3 / IDLE.as_secs_f64(),
        idle_wakeups_per_s: (switches1 - switches0) as f64 / IDLE.as_secs_f64(),
        sessions_reads_per_server_per_min: reads.iter().sum::<usize>() as f64 / n as f64 * per_minute,
        sessions_reads_max_per_server_per_min: reads.iter().copied().max().unwrap_or(0) as f64 * per_minute,
        storm_recovery_s: (recovered - storm).as_secs_f64(),
        storm_requests_per_server: storm_requests as f64 / n as f64,
        storm_stats_kb: stats_bytes as f64 / 1e3,
        storm_stats_messages: stats_messages as f64,
        emfile_lines: emfile as f64,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        len if len % 2 == 1 => values[len / 2],
        len => (values[len / 2 - 1] + values[len / 2]) / 2.0,
    }
}

fn sizes() -> Vec<usize> {
    match std::env::var("SCALE_SIZES") {
        Ok(list) => list.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        Err(_) => SIZES.to_vec(),
    }
}

fn main() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let bridge_bin = std::env::var_os("SCALE_BRIDGE").map(PathBuf::from).unwrap_or_else(|| support::bridge::BIN.into());
    let runs: usize = std::env::var("SCALE_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(RUNS);
    // This process holds a listener and a connection or two per fake server.
    let unit = unit_fd_limit();
    let own_hard = plex_mqtt_bridge::fd_limit::raise().map(|l| l.hard).unwrap_or(unit);
    let hard = unit.min(own_hard);
    let soft = std::env::var("SCALE_FD_SOFT").ok().and_then(|s| s.parse().ok()).unwrap_or(hard).min(hard);
    let fd_limit = (soft, hard);
    println!("plex-mqtt-bridge: many servers in one bridge");
    println!("machine: {}", machine());
    println!("bridge binary: {}", bridge_bin.display());
    println!(
        "bridge's file-descriptor limit: soft {soft}, hard {hard} (the unit's LimitNOFILE={unit}, this process's \
         hard limit {own_hard}); {runs} run(s) per n"
    );
    for n in sizes() {
        let mut all = Vec::new();
        for run in 1..=runs {
            let figures = one_run(n, &bridge_bin, fd_limit).await;
            let values: Vec<String> = figures.values().iter().map(|v| format!("{v:.3}")).collect();
            println!("n={n} run {run}: {}", values.join(" | "));
            all.push(figures);
        }
        println!("n={n}, median of {runs}:");
        for (i, name) in Figures::NAMES.iter().enumerate() {
            let value = median(all.iter().map(|f| f.values()[i]).collect());
            let spread: Vec<String> = all.iter().map(|f| format!("{:.3}", f.values()[i])).collect();
            println!("  {name:<62} {value:>10.3}   ({})", spread.join(", "));
        }
    }
}
