//! One `playing` frame announcing n new sessions at once (issue 17): the bridge's CPU for it must grow linearly
//! with n, and `/healthz` must keep answering while the bridge works through it. Then how fast `/healthz`
//! answers while 10,000 connections that each sent 9 bytes and stalled are held (issue 25; the test
//! `health_flood` checks that it answers at all).
//!
//! Run with `cargo bench --bench sessions` (about 30 s after the build; needs `mosquitto`). For each n in
//! [`SIZES`] a fresh release bridge (with `plex.max_sessions` above n, so all are tracked) connects to the fake
//! PMS; the frame is pushed; the run waits until the broker delivered all n raw items, n retained session
//! documents and a sessions summary counting n. Meanwhile `/healthz` is asked every 5 ms. Printed per n: the
//! bridge's CPU time (all threads, from `/proc/<pid>/task/*/schedstat`, ns resolution), CPU per session, the
//! wall time to the last message, and the slowest and median `/healthz` answers. For the stalled connections: a
//! fresh release bridge, [`STALLED`] connections to its health endpoint that sent `GET /heal` and nothing more,
//! then [`STALLED_ANSWERS`] `/healthz` requests one after the other, each timed; printed: the slowest, the 99th
//! percentile and the median. Figures: BENCHMARKS.md.

#![cfg_attr(test, allow(dead_code))]

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/loadgen/mod.rs"]
mod loadgen;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadgen::cpu_ns;
use support::bridge::toml_string;
use support::fake_pms::CannedResponse;
use support::{Bridge, FakePms, Mosquitto, Probe, TokenFile};

/// Sessions in the frame, one run each.
const SIZES: [usize; 3] = [1_000, 4_000, 8_000];
/// How long one run may take before it is reported as stuck.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// How often `/healthz` is asked during a run.
const HEALTH_EVERY: Duration = Duration::from_millis(5);
/// Stalled connections held on the health endpoint in the second part.
const STALLED: usize = 10_000;
/// `/healthz` answers timed while they are held.
const STALLED_ANSWERS: usize = 200;
/// Mosquitto with room for the whole burst for one subscriber.
const BROKER_CONFIG: &str = "max_queued_messages 1000000\nmax_inflight_messages 0\nset_tcp_nodelay true\n";

fn main() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    println!("plex-mqtt-bridge: one frame of n new playback sessions");
    println!("bridge binary: {}", support::bridge::BIN);
    println!(
        "{:>6}  {:>10}  {:>12}  {:>10}  {:>14}  {:>14}",
        "n", "cpu ms", "cpu µs/sess", "wall ms", "healthz max ms", "healthz p50 ms"
    );
    for n in SIZES {
        let r = one_run(n).await;
        println!(
            "{n:>6}  {:>10.1}  {:>12.1}  {:>10.1}  {:>14.2}  {:>14.2}  ({} /healthz answers)",
            r.cpu.as_secs_f64() * 1e3,
            r.cpu.as_secs_f64() * 1e6 / n as f64,
            r.wall.as_secs_f64() * 1e3,
            r.health_max.as_secs_f64() * 1e3,
            r.health_p50.as_secs_f64() * 1e3,
            r.health_answers,
        );
    }
    let latencies = stalled_run().await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "/healthz with {STALLED} stalled connections held: max {:.2} ms, p99 {:.2} ms, p50 {:.2} ms ({} answers)",
        ms(latencies[latencies.len() - 1]),
        ms(latencies[latencies.len() * 99 / 100]),
        ms(latencies[latencies.len() / 2]),
        latencies.len(),
    );
}

/// A fresh bridge, [`STALLED`] connections to its health endpoint that sent 9 bytes and stalled, then
/// [`STALLED_ANSWERS`] timed `/healthz` answers (sorted).
async fn stalled_run() -> Vec<Duration> {
    use tokio::io::AsyncWriteExt;
    let limit = plex_mqtt_bridge::fd_limit::raise().expect("raise the file-descriptor limit");
    assert!(
        limit.soft as usize > STALLED + 1000,
        "the hard fd limit {} is too low for {STALLED} connections",
        limit.soft
    );
    let broker = Mosquitto::start();
    let pms = FakePms::start_default().await;
    pms.set_canned("/status/sessions", CannedResponse::json(r#"{"MediaContainer":{"size":0}}"#));
    pms.set_canned("/activities", CannedResponse::json(r#"{"MediaContainer":{"size":0}}"#));
    let token = TokenFile::new(&pms.token());
    let mut probe = Probe::subscribe(broker.port(), &["plex/test/state"]).await;
    let http = support::mosquitto::free_port();
    let bridge = Bridge::start(&config(&broker.url(), &pms.url(), token.path(), http, STALLED));
    probe.expect_payload("plex/test/state", "connected", Duration::from_secs(15)).await;
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", http)).await.expect("a stalling connection");
        stream.write_all(b"GET /heal").await.expect("part of a request head");
        stalled.push(stream);
    }
    // On an OS thread of its own, as in the first part: what it measures is the bridge's answer time.
    let timer = std::thread::spawn(move || (0..STALLED_ANSWERS).map(|_| ask_health(http)).collect::<Vec<_>>());
    let mut latencies = timer.join().expect("the /healthz timer");
    assert_eq!(stalled.len(), STALLED, "the stalled connections were held throughout");
    drop(stalled);
    drop(bridge);
    latencies.sort();
    latencies
}

struct RunResult {
    cpu: Duration,
    wall: Duration,
    health_max: Duration,
    health_p50: Duration,
    health_answers: usize,
}

async fn one_run(n: usize) -> RunResult {
    let broker = Mosquitto::start_with_extra_config(BROKER_CONFIG);
    let pms = FakePms::start_default().await;
    // `/status/sessions` lists none of them (as if they ended at once): the bridge still tracks each session
    // (heard of first-hand moments ago) and its `play` events wait for details, so the run measures the
    // notification's own work: n documents and one summary.
    pms.set_canned("/status/sessions", CannedResponse::json(r#"{"MediaContainer":{"size":0}}"#));
    pms.set_canned("/activities", CannedResponse::json(r#"{"MediaContainer":{"size":0}}"#));
    let token = TokenFile::new(&pms.token());
    let mut probe = Probe::subscribe(broker.port(), &["plex/test/#"]).await;
    let http = support::mosquitto::free_port();
    let bridge = Bridge::start(&config(&broker.url(), &pms.url(), token.path(), http, n));
    probe.expect_payload("plex/test/state", "connected", Duration::from_secs(15)).await;
    assert!(pms.wait_for_ws_connection_count(1, Duration::from_secs(5)).await, "no WebSocket open");
    // Let the connect-time look-ups finish first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    probe.drain();

    let frame = frame(n);
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || poll_health(http, stop))
    };
    let cpu0 = cpu_ns(bridge.pid());
    let started = Instant::now();
    assert_eq!(pms.push_text(&frame), 1);
    let (mut raw, mut documents) = (0, 0);
    let mut summary_done = false;
    while raw < n || documents < n || !summary_done {
        let left = RUN_LIMIT.saturating_sub(started.elapsed());
        let Some(msg) = probe.next(left).await else {
            panic!("n={n}: stuck after {raw} raw items, {documents} documents, summary {summary_done}");
        };
        match msg.topic.as_str() {
            "plex/test/playing" => raw += 1,
            "plex/test/sessions" => summary_done = msg.json()["count"] == n,
            topic if topic.starts_with("plex/test/sessions/") => documents += 1,
            _ => {}
        }
    }
    let wall = started.elapsed();
    let cpu = Duration::from_nanos(cpu_ns(bridge.pid()) - cpu0);
    stop.store(true, Ordering::SeqCst);
    let mut latencies = poller.join().expect("health poller");
    latencies.sort();
    drop(bridge);
    RunResult {
        cpu,
        wall,
        health_max: latencies.last().copied().unwrap_or_default(),
        health_p50: latencies.get(latencies.len() / 2).copied().unwrap_or_default(),
        health_answers: latencies.len(),
    }
}

/// Asks `/healthz` every [`HEALTH_EVERY`] until `stop`; the time each answer took. It runs on its own OS thread
/// with blocking sockets, so the benchmark's own runtime (busy reading the burst from the broker) cannot delay
/// it and what it measures is the bridge's answer time.
fn poll_health(port: u16, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut latencies = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        latencies.push(ask_health(port));
        std::thread::sleep(HEALTH_EVERY);
    }
    latencies
}

/// One `/healthz` request on a fresh connection, with blocking sockets: the time from connecting to the end of
/// the answer.
fn ask_health(port: u16) -> Duration {
    use std::io::{Read, Write};
    let asked = Instant::now();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to /healthz");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("write the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the answer");
    let took = asked.elapsed();
    let status = response.split(' ').nth(1).unwrap_or("");
    assert!(status == "200" || status == "503", "healthz answered {status:?}");
    took
}

fn frame(n: usize) -> String {
    let items: Vec<String> = (1..=n)
        .map(|k| {
            format!(
                r#"{{"sessionKey":"{k}","clientIdentifier":"player-{k}","guid":"","ratingKey":"{k}","url":"","key":"/library/metadata/{k}","viewOffset":0,"state":"playing"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"NotificationContainer":{{"type":"playing","size":{n},"PlaySessionStateNotification":[{}]}}}}"#,
        items.join(",")
    )
}

fn config(mqtt_url: &str, pms_url: &str, token_file: &std::path::Path, http: u16, n: usize) -> String {
    format!(
        r#"[mqtt]
url = {mqtt}
client_id = "bench-sessions-{pid}-{n}"
queue_size = 100000

[plex]
max_sessions = {max}
max_message_size = 3145728

[[servers]]
url = {pms}
token_file = {token}
name = "test"

[logging]
level = "warn"
format = "text"

[http]
listen = "127.0.0.1:{http}"
"#,
        mqtt = toml_string(mqtt_url),
        pid = std::process::id(),
        max = n * 2,
        pms = toml_string(pms_url),
        token = toml_string(&token_file.to_string_lossy()),
    )
}
