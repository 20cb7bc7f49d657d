//! The whole pipeline under load: fake PMS (WebSocket) → the real `plex-mqtt-bridge` binary (release build) →
//! a real Mosquitto → a counting QoS 1 subscriber, measured against the broker's own ceiling in the same run.
//!
//! Run with `cargo bench --bench pipeline` (about 80 s after the build; needs `mosquitto` installed, like the
//! tests). It is not part of `cargo test`. The figures and how to read them are in BENCHMARKS.md.
//!
//! Phases, in order:
//! 1. idle: memory 3 s after the bridge connected, then CPU time and wake-ups over 5 s of silence;
//! 2. latency at a fixed 1,000 notifications/s: a raw rumqttc publisher straight to the broker, then through the
//!    bridge twice: with the fake PMS as the harness leaves it (Nagle's algorithm on its socket), and with
//!    TCP_NODELAY set on the fake PMS's side, so its batching is not counted against the bridge. Each item
//!    carries its send time; the subscriber (in this process, same clock) computes the delay;
//! 3. throughput: as many notifications as the pipeline takes with at most `WINDOW` sent but not yet received
//!    (below the bridge's live-event queue of 10,000, so nothing is dropped): first the raw publisher (the
//!    broker's ceiling, with the bridge's client settings: QoS 1, at most 10,000 in flight), then the bridge. CPU
//!    time of the bridge, the broker, this process and everything else on the machine, and the PUBLISHes the
//!    broker received per notification (the bridge adds retained session/activity state);
//! 4. burst: frames pushed with no window at all, as fast as the fake PMS writes them: what the bridge delivers
//!    and drops when its input outruns the broker, and its memory with a full queue;
//! 5. burst with a broker outage: the same 100,000 frames in three parts, with the broker killed (SIGKILL)
//!    once a quarter of them arrived and restarted on the same port 10 s later (no persistence: it forgets
//!    retained messages and sessions). Half are pushed before the kill (the bridge is then holding the PMS
//!    back, its queue full), a quarter while the broker is down, a quarter once the bridge is back. Drops must
//!    happen only during the outage and be counted, everything pushed after it must arrive, and the retained
//!    state must be exact at the end (checked; the bench exits 1 if not).
//!
//! `PIPELINE_DUMP=<dir>` writes every latency sample (send time and delay, ms) to `<dir>/latency-*.txt`.

// Cargo.toml declares this bench with `harness = false`; without that entry Cargo would build it with the
// libtest harness, whose own `main` would leave this one unused.
#![cfg_attr(test, allow(dead_code))]

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/loadgen/mod.rs"]
mod loadgen;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadgen::{
    clock_ticks_per_second, context_switches, cpu_ticks, find_pid, machine, percentile, proc_status_kib, RawPublisher,
    RetainedTruth, Subscriber,
};
use rumqttc::QoS;
use support::bridge::toml_string;
use support::fake_pms::CannedResponse;
use support::{retained, Bridge, FakePms, Mosquitto, Probe, TokenFile};

/// Sent but not yet received, at most (the bridge's live-event queue holds 10,000 by default).
const WINDOW: u64 = 8_000;

/// The number in the environment variable `name`, or `default` (to see how the figures depend on a setting).
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// [`RAW_INFLIGHT`], or `PIPELINE_RAW_INFLIGHT`.
fn raw_inflight() -> u16 {
    env_or("PIPELINE_RAW_INFLIGHT", RAW_INFLIGHT)
}

/// [`WINDOW`], or `PIPELINE_WINDOW`.
fn window() -> u64 {
    env_or("PIPELINE_WINDOW", WINDOW)
}
/// Unacknowledged messages of the raw publisher: the bridge's default `mqtt.max_inflight`, so both publish with
/// the same client settings.
const RAW_INFLIGHT: u16 = 10_000;
/// Throughput phases: warm-up, then the measured part.
const THROUGHPUT_WARMUP: Duration = Duration::from_secs(2);
const THROUGHPUT_MEASURE: Duration = Duration::from_secs(10);
/// Latency phases: the rate, warm-up and measured part.
const LATENCY_RATE: u64 = 1_000;
const LATENCY_WARMUP: Duration = Duration::from_secs(1);
const LATENCY_MEASURE: Duration = Duration::from_secs(10);
/// Frames of the burst phases (a multiple of 4,000: see [`burst_with_outage`]).
const BURST: u64 = 100_000;
/// How long the broker stays down in the middle of the second burst.
const OUTAGE: Duration = Duration::from_secs(10);
/// Mosquitto raised for the load: no limit on in-flight messages, a deep queue, Nagle off, `$SYS` every second.
const BROKER_CONFIG: &str =
    "max_queued_messages 1000000\nmax_inflight_messages 0\nset_tcp_nodelay true\nsys_interval 1\n";
/// Every MQTT packet the broker received (its PUBLISH counter leaves out retained messages): PUBLISHes plus the
/// subscriber's PUBACKs (one per delivered message) plus a few PINGREQs.
const SYS_MESSAGES_RECEIVED: &str = "$SYS/broker/messages/received";

/// Where notifications go.
enum Target<'a> {
    /// Through the bridge: a WebSocket frame from the fake PMS.
    Bridge(&'a FakePms),
    /// Straight to the broker: the raw rumqttc publisher.
    Broker(&'a RawPublisher),
}

impl Target<'_> {
    /// CPU time (ns) of the raw publisher's MQTT client so far, when the target is the broker.
    fn client_cpu_ns(&self) -> Option<u64> {
        match self {
            Target::Bridge(_) => None,
            Target::Broker(raw) => Some(raw.client_cpu_ns()),
        }
    }

    async fn send(&self, seq: u64, base: Instant) {
        let t = base.elapsed();
        let item = loadgen::item(seq, t.as_nanos() as u64, t.as_millis() as u64);
        match self {
            Target::Bridge(pms) => {
                assert_eq!(pms.push_text(&item.ws_frame()), 1, "the bridge's WebSocket is not open");
            }
            Target::Broker(raw) => raw
                .client
                .publish(
                    item.kind.topic(),
                    item.json.into_bytes(),
                    rumqttc::PublishOptions::new(QoS::AtLeastOnce).retain(false),
                )
                .await
                .expect("the raw publisher's event loop is running"),
        }
    }
}

/// CPU ticks used so far by the bridge, the broker, this process and the whole machine (busy, all cores).
#[derive(Clone, Copy)]
struct Cpu {
    bridge: u64,
    broker: u64,
    bench: u64,
    machine: u64,
}

struct Pids {
    bridge: u32,
    broker: u32,
}

impl Pids {
    fn cpu(&self) -> Cpu {
        Cpu {
            bridge: cpu_ticks(self.bridge).unwrap_or(0),
            broker: cpu_ticks(self.broker).unwrap_or(0),
            bench: cpu_ticks(std::process::id()).unwrap_or(0),
            machine: machine_busy_ticks(),
        }
    }
}

/// Busy time of all CPUs (`/proc/stat`: everything but idle and iowait), in clock ticks.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    fields.iter().take(8).sum::<u64>() - fields.get(3).copied().unwrap_or(0) - fields.get(4).copied().unwrap_or(0)
}

/// CPU used between two readings, in cores: (bridge, broker, bench, everything else on the machine).
fn cores(from: Cpu, to: Cpu, seconds: f64, tck: f64) -> (f64, f64, f64, f64) {
    let c = |a: u64, b: u64| b.saturating_sub(a) as f64 / tck / seconds;
    let (bridge, broker, bench) = (c(from.bridge, to.bridge), c(from.broker, to.broker), c(from.bench, to.bench));
    let others = (c(from.machine, to.machine) - bridge - broker - bench).max(0.0);
    (bridge, broker, bench, others)
}

fn cores_text((bridge, broker, bench, others): (f64, f64, f64, f64)) -> String {
    format!("CPU cores: bridge {bridge:.2}, broker {broker:.2}, bench {bench:.2}, other processes {others:.2}")
}

/// What a throughput phase measured.
struct Throughput {
    rate: f64,
    sent: u64,
    measured: u64,
    seconds: f64,
    from: Cpu,
    to: Cpu,
    lost: u64,
    /// CPU time (ns) of the raw publisher's MQTT client thread over the measured interval (ceiling phase only).
    client_ns: Option<u64>,
}

/// Sends as fast as the pipeline takes, keeping at most [`WINDOW`] in flight; measures after the warm-up.
async fn closed_loop(target: &Target<'_>, sub: &Subscriber, seq: &mut u64, base: Instant, pids: &Pids) -> Throughput {
    let first_received = sub.received();
    let window = window(); // read once: the loop below is the benchmark's own hot path
    let mut sent = 0u64;
    let start = Instant::now();
    let end = start + THROUGHPUT_WARMUP + THROUGHPUT_MEASURE;
    let mut mark: Option<(Instant, u64, Cpu, Option<u64>)> = None;
    while Instant::now() < end {
        if mark.is_none() && Instant::now() >= start + THROUGHPUT_WARMUP {
            mark = Some((Instant::now(), sub.received(), pids.cpu(), target.client_cpu_ns()));
        }
        let outstanding = sent - (sub.received() - first_received);
        if outstanding < window {
            target.send(*seq, base).await;
            *seq += 1;
            sent += 1;
            if sent.is_multiple_of(64) {
                tokio::task::yield_now().await;
            }
        } else {
            let _ = tokio::time::timeout(Duration::from_millis(1), sub.counter.progress.notified()).await;
        }
    }
    let (t0, r0, from, client0) = mark.expect("the warm-up is shorter than the phase");
    let (t1, r1, to, client1) = (Instant::now(), sub.received(), pids.cpu(), target.client_cpu_ns());
    let all = sub.wait_for(first_received + sent, Duration::from_secs(5)).await;
    let seconds = (t1 - t0).as_secs_f64();
    Throughput {
        rate: (r1 - r0) as f64 / seconds,
        sent,
        measured: r1 - r0,
        seconds,
        from,
        to,
        lost: first_received + sent - all,
        client_ns: client0.zip(client1).map(|(a, b)| b.saturating_sub(a)),
    }
}

/// What a latency phase measured.
struct Latency {
    /// Sorted, ns.
    samples: Vec<u64>,
    lost: u64,
    cores: (f64, f64, f64, f64),
}

/// Sends at [`LATENCY_RATE`]; measures the delay of every message sent after the warm-up.
async fn paced(
    target: &Target<'_>,
    name: &str,
    sub: &Subscriber,
    seq: &mut u64,
    base: Instant,
    pids: &Pids,
) -> Latency {
    let tck = clock_ticks_per_second() as f64;
    let first_received = sub.received();
    let interval = Duration::from_secs(1) / LATENCY_RATE as u32;
    let warmup = LATENCY_RATE * LATENCY_WARMUP.as_secs();
    let total = warmup + LATENCY_RATE * LATENCY_MEASURE.as_secs();
    let start = tokio::time::Instant::now();
    let mut mark = None;
    for i in 0..total {
        if i == warmup {
            sub.counter.clear_latencies();
            sub.counter.recording.store(true, Ordering::SeqCst);
            mark = Some((Instant::now(), pids.cpu()));
        }
        tokio::time::sleep_until(start + interval * i as u32).await;
        target.send(*seq, base).await;
        *seq += 1;
    }
    let (t0, from) = mark.expect("the warm-up is shorter than the phase");
    let cores = cores(from, pids.cpu(), t0.elapsed().as_secs_f64(), tck);
    let all = sub.wait_for(first_received + total, Duration::from_secs(5)).await;
    sub.counter.recording.store(false, Ordering::SeqCst);
    let series = sub.counter.latencies();
    if let Ok(dir) = std::env::var("PIPELINE_DUMP") {
        let text: String =
            series.iter().map(|(t, l)| format!("{:.3} {:.3}\n", *t as f64 / 1e6, *l as f64 / 1e6)).collect();
        let _ = std::fs::write(format!("{dir}/latency-{name}.txt"), text);
    }
    let mut samples: Vec<u64> = series.into_iter().map(|(_, l)| l).collect();
    samples.sort_unstable();
    Latency { samples, lost: first_received + total - all, cores }
}

/// Samples the bridge's VmRSS every 50 ms and keeps the largest value (KiB) until taken.
struct RssSampler {
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let (max, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (m, s) = (max.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = proc_status_kib(pid, "VmRSS") {
                    m.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        RssSampler { max, stop }
    }

    fn take(&self) -> u64 {
        self.max.swap(0, Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The broker's count of packets received, once it has stopped changing (`sys_interval` is 1 s).
async fn broker_messages_received(sub: &Subscriber) -> u64 {
    let read = || {
        sub.counter
            .other(SYS_MESSAGES_RECEIVED)
            .and_then(|(payload, _, _)| String::from_utf8(payload).ok()?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut last = read();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// PUBLISHes the broker received per notification sent, from its packet count over a phase (minus one PUBACK
/// from the subscriber per delivered message).
fn publishes_per(packets: u64, t: &Throughput) -> f64 {
    let delivered = t.sent - t.lost;
    packets.saturating_sub(delivered) as f64 / t.sent.max(1) as f64
}

/// Sets TCP_NODELAY on this process's connected sockets whose local port is `port` (the fake PMS's side of the
/// bridge's WebSocket): the harness leaves Nagle's algorithm on there, which holds back small frames until the
/// bridge's delayed ACK (up to 40 ms). Returns how many sockets were changed.
fn set_nodelay_on_local_port(port: u16) -> usize {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut changed = 0;
    for entry in fds.filter_map(Result::ok) {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if !std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
            continue;
        }
        // SAFETY: `fd` is a socket this process holds open (the fake PMS's tasks own it and keep it open while
        // its connection lives); the TcpStream is turned back into the raw fd below, so it is never closed here.
        let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
        let ours = stream.local_addr().is_ok_and(|a| a.port() == port) && stream.peer_addr().is_ok();
        if ours && stream.set_nodelay(true).is_ok() {
            changed += 1;
        }
        let _ = stream.into_raw_fd();
    }
    changed
}

fn bridge_config(mqtt_url: &str, pms_url: &str, token_file: &std::path::Path, http_port: u16) -> String {
    // Production settings (the defaults) except the names; warnings only, plus the start and stop lines of the
    // app (the stop line carries `dropped_live_events`). `PIPELINE_MQTT_EXTRA` adds lines to `[mqtt]` (for
    // experiments, e.g. `max_inflight = 100`).
    format!(
        r#"[mqtt]
url = {mqtt}
client_id = "bench-bridge-{pid}"
topic_prefix = "plex"
qos = 1
{extra}

[[servers]]
url = {pms}
token_file = {token}
name = {name}

[logging]
level = "warn,plex_mqtt_bridge::app=info"
format = "text"

[http]
listen = "127.0.0.1:{http_port}"
"#,
        mqtt = toml_string(mqtt_url),
        pid = std::process::id(),
        pms = toml_string(pms_url),
        token = toml_string(&token_file.to_string_lossy()),
        name = toml_string(loadgen::SERVER),
        extra = std::env::var("PIPELINE_MQTT_EXTRA").unwrap_or_default(),
    )
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let started = Instant::now();
    let base = Instant::now();
    let tck = clock_ticks_per_second() as f64;
    println!("plex-mqtt-bridge pipeline benchmark");
    println!("machine: {}", machine());
    println!("bridge binary: {}", support::bridge::BIN);

    let mut broker = Mosquitto::start_with_extra_config(BROKER_CONFIG);
    let broker_pid = find_pid(&broker.dir().join("mosquitto.conf").to_string_lossy()).expect("mosquitto's pid");
    let pms = FakePms::start_default().await;
    pms.set_canned("/status/sessions", CannedResponse::json(loadgen::sessions_body()));
    pms.set_canned("/activities", CannedResponse::json(loadgen::activities_body()));
    let token = TokenFile::new(&pms.token());
    let sub = Subscriber::start(broker.port(), base, &[SYS_MESSAGES_RECEIVED], false).await;
    let mut state = Probe::subscribe(broker.port(), &["plex/test/state"]).await;
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], support::mosquitto::free_port()));
    let mut bridge = Bridge::start(&bridge_config(&broker.url(), &pms.url(), token.path(), http.port()));
    state.expect_payload("plex/test/state", "connected", Duration::from_secs(15)).await;
    drop(state);
    assert!(pms.wait_for_ws_connection_count(1, Duration::from_secs(5)).await, "no WebSocket open");
    let pids = Pids { bridge: bridge.pid(), broker: broker_pid };
    let sizes: Vec<String> = (0..4)
        .map(|s| {
            let item = loadgen::item(s, 1_000_000_000_000, 1_000_000);
            format!("{} {} B", item.kind.plex_type(), item.json.len())
        })
        .collect();
    println!("items (mix 1:1:1:1, one per frame): {}", sizes.join(", "));

    // 1. Idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = proc_status_kib(pids.bridge, "VmRSS").unwrap_or(0);
    let idle_hwm = proc_status_kib(pids.bridge, "VmHWM").unwrap_or(0);
    let (ticks0, switches0) = (cpu_ticks(pids.bridge).unwrap_or(0), context_switches(pids.bridge));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (ticks1, switches1) = (cpu_ticks(pids.bridge).unwrap_or(0), context_switches(pids.bridge));
    let idle_cpu = (ticks1 - ticks0) as f64 / tck;
    let idle_wakeups = switches1 - switches0;

    // 2. Latency at 1,000/s.
    let mut seq = 0u64;
    let raw = RawPublisher::connect(broker.port(), raw_inflight()).await;
    let broker_lat = paced(&Target::Broker(&raw), "broker", &sub, &mut seq, base, &pids).await;
    let nagle_lat = paced(&Target::Bridge(&pms), "bridge-nagle", &sub, &mut seq, base, &pids).await;
    let nodelay_sockets = set_nodelay_on_local_port(pms.port());
    let bridge_lat = paced(&Target::Bridge(&pms), "bridge", &sub, &mut seq, base, &pids).await;

    // 3. Throughput.
    let packets0 = broker_messages_received(&sub).await;
    let ceiling = closed_loop(&Target::Broker(&raw), &sub, &mut seq, base, &pids).await;
    let packets1 = broker_messages_received(&sub).await;
    drop(raw);
    let rss = RssSampler::start(pids.bridge);
    let untracked0 = counter(http, UNTRACKED).await;
    let through = closed_loop(&Target::Bridge(&pms), &sub, &mut seq, base, &pids).await;
    let untracked_through = counter(http, UNTRACKED).await - untracked0;
    let load_rss = rss.take();
    let load_hwm = proc_status_kib(pids.bridge, "VmHWM").unwrap_or(0);
    let packets2 = broker_messages_received(&sub).await;

    // 4. Burst.
    let burst_received0 = sub.received();
    let burst_start = Instant::now();
    for i in 0..BURST {
        Target::Bridge(&pms).send(seq, base).await;
        seq += 1;
        if i % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let push_seconds = burst_start.elapsed().as_secs_f64();
    let quiet = Duration::from_secs(2);
    let burst_delivered = sub.wait_for(burst_received0 + BURST, quiet).await - burst_received0;
    let burst_seconds =
        (burst_start.elapsed() - if burst_delivered < BURST { quiet } else { Duration::ZERO }).as_secs_f64();
    let burst_rss = rss.take();
    let untracked_burst = counter(http, UNTRACKED).await - untracked0 - untracked_through;
    let burst_hwm = proc_status_kib(pids.bridge, "VmHWM").unwrap_or(0);
    let burst_dropped = counter(http, DROPPED).await;
    drop(sub);

    // 5. Burst with a broker outage.
    let outage = burst_with_outage(&mut broker, &bridge, &pms, http, &mut seq, base).await;
    let outage_rss = rss.take();
    drop(rss);

    // Shutdown: SIGTERM, exit 0 within 5 s, and the bridge's own count of dropped live events.
    bridge.sigterm();
    let status = bridge.wait_exit(Duration::from_secs(5)).await;
    let log = bridge.logs();
    let dropped = log
        .lines()
        .filter(|l| l.contains(" stopped"))
        .find_map(|l| loadgen::field_u64(l.as_bytes(), b"dropped_live_events="));
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();

    // Report.
    println!();
    println!(
        "== throughput (QoS 1, window {}, {:.0} s measured after {:.0} s warm-up)",
        window(),
        THROUGHPUT_MEASURE.as_secs_f64(),
        THROUGHPUT_WARMUP.as_secs_f64()
    );
    let phase_cores = |t: &Throughput| cores(t.from, t.to, t.seconds, tck);
    println!(
        "  broker ceiling (raw rumqttc, {} in flight): {:>7.0} msg/s  ({} sent, {} lost; {})",
        raw_inflight(),
        ceiling.rate,
        ceiling.sent,
        ceiling.lost,
        cores_text(phase_cores(&ceiling))
    );
    println!(
        "  through the bridge:                      {:>7.0} notifications/s  ({} sent, {} lost; {})",
        through.rate,
        through.sent,
        through.lost,
        cores_text(phase_cores(&through))
    );
    println!("  ratio bridge / ceiling: {:.1} %   (target >= 80 %)", 100.0 * through.rate / ceiling.rate);
    println!("  notifications the bridge forwarded raw only (session/library tracking behind): {untracked_through}");
    println!(
        "  broker PUBLISHes per notification: raw {:.2}, bridge {:.2} (the bridge adds retained session/activity state)",
        publishes_per(packets1 - packets0, &ceiling),
        publishes_per(packets2 - packets1, &through)
    );
    println!(
        "  bridge CPU per 100k notifications: {:.2} s   ({} ticks for {} notifications)",
        (through.to.bridge - through.from.bridge) as f64 / tck / through.measured.max(1) as f64 * 100_000.0,
        through.to.bridge - through.from.bridge,
        through.measured
    );
    if let Some(ns) = ceiling.client_ns {
        // The same client, settings and payloads as the bridge's, with nothing else in its thread: a floor under
        // what the bridge can spend per notification (it publishes the PUBLISHes per notification above).
        println!(
            "  MQTT client alone (the raw publisher's event-loop thread) per 100k PUBLISHes: {:.2} s",
            ns as f64 / 1e9 / ceiling.measured.max(1) as f64 * 100_000.0
        );
    }
    println!();
    println!("== latency, frame sent -> message received, at {LATENCY_RATE}/s");
    let lat_row = |name: &str, l: &Latency| {
        let s = &l.samples;
        println!(
            "  {name:<28} p50 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  max {:>7.3} ms  ({} samples, {} lost; {})",
            ms(percentile(s, 50.0)),
            ms(percentile(s, 99.0)),
            ms(percentile(s, 99.9)),
            ms(s.last().copied().unwrap_or(0)),
            s.len(),
            l.lost,
            cores_text(l.cores)
        )
    };
    lat_row("broker only (raw rumqttc)", &broker_lat);
    lat_row("via bridge, fake PMS Nagle", &nagle_lat);
    lat_row("via bridge, fake PMS nodelay", &bridge_lat);
    let added = |l: &Latency, p: f64| ms(percentile(&l.samples, p)) - ms(percentile(&broker_lat.samples, p));
    println!(
        "  added by the bridge (nodelay): p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms   (target p99 < 2 ms)",
        added(&bridge_lat, 50.0),
        added(&bridge_lat, 99.0),
        added(&bridge_lat, 99.9)
    );
    println!(
        "  added by the bridge (Nagle):   p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms   (TCP_NODELAY set on {} fake-PMS socket(s) in between)",
        added(&nagle_lat, 50.0),
        added(&nagle_lat, 99.0),
        added(&nagle_lat, 99.9),
        nodelay_sockets
    );
    println!();
    println!("== memory and idle");
    println!(
        "  RSS idle (3 s after connect):   {:.1} MiB (VmHWM {:.1} MiB)   (target < 16 MiB)",
        mib(idle_rss),
        mib(idle_hwm)
    );
    println!(
        "  RSS at full load (max sampled): {:.1} MiB (VmHWM {:.1} MiB)   (target < 32 MiB)",
        mib(load_rss),
        mib(load_hwm)
    );
    println!(
        "  CPU idle over 5 s:              {idle_cpu:.2} s, {idle_wakeups} context switches (wake-ups)   (target 0)"
    );
    println!();
    println!("== burst: {BURST} frames pushed with no window");
    println!(
        "  pushed in {:.2} s; delivered {} ({:.0}/s over {:.2} s); dropped by the bridge (whole run so far): {}",
        push_seconds,
        burst_delivered,
        burst_delivered as f64 / burst_seconds.max(0.001),
        burst_seconds,
        burst_dropped
    );
    println!("  RSS with the queue full: {:.1} MiB (VmHWM {:.1} MiB)", mib(burst_rss), mib(burst_hwm));
    println!("  notifications forwarded raw only (session/library tracking behind): {untracked_burst}");
    println!();
    let failures = outage.report(outage_rss);
    println!();
    println!(
        "bridge dropped_live_events over the whole run (its stopped line): {}",
        dropped.map(|d| d.to_string()).unwrap_or_else(|| "?".into())
    );
    println!(
        "bridge exit: {}; warnings logged: {}; bench took {:.0} s",
        status.map(|s| s.to_string()).unwrap_or_else(|| "still running after 5 s".into()),
        warnings.len(),
        started.elapsed().as_secs_f64()
    );
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for w in &warnings {
        let message = w.split(": ").nth(2).unwrap_or(w).split(" error=").next().unwrap_or(w);
        let message: String = message.split(" dropped_total=").next().unwrap_or(message).chars().take(100).collect();
        match kinds.iter_mut().find(|(m, _)| *m == message) {
            Some((_, n)) => *n += 1,
            None => kinds.push((message, 1)),
        }
    }
    for (message, n) in kinds {
        println!("  {n} x WARN {message}");
    }
    if !failures.is_empty() {
        println!("\nFAILED: {}", failures.join("; "));
        std::process::exit(1);
    }
}

/// Notifications the bridge forwarded raw only (its session/library tracking was behind).
const UNTRACKED: &str = "plex_mqtt_bridge_notifications_untracked_total";
/// Live events the bridge dropped (queue overflow while the broker is away, or lost with its connection).
const DROPPED: &str = "plex_mqtt_bridge_messages_dropped_total";

/// A counter of the bridge's, read from its `/metrics`.
async fn counter(http: std::net::SocketAddr, name: &str) -> u64 {
    let (status, metrics) = plex_mqtt_bridge::cli::health::get(http, "/metrics").await.expect("the bridge's /metrics");
    assert_eq!(status, 200, "/metrics: {metrics}");
    let prefix = format!("{name} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

/// What the burst with a broker outage measured.
struct OutageRun {
    /// The first sequence number of the phase, and the one after its last.
    first: u64,
    end: u64,
    /// Every sequence number below this had arrived when the broker was killed.
    settled_at_kill: u64,
    /// Pushed but not yet received at the kill: the messages whose fate is uncertain (see the soak test).
    in_flight_at_kill: u64,
    /// From this sequence number on, the broker, the subscriber and the bridge were all back.
    recovered_at: u64,
    /// Kill → the bridge's `online` on the restarted broker.
    down_for: Duration,
    bridge_was_first: bool,
    /// The bridge's dropped counter: before the phase, at the kill, once it had drained after the outage, and
    /// at the end.
    dropped: [u64; 4],
    missing: Vec<u64>,
    duplicates: u64,
    /// Seconds from the first push after the outage until the last of those frames arrived.
    after_seconds: f64,
    retained_mismatch: Vec<String>,
}

/// Phase 5; see the module doc. The sequence numbers start at a multiple of 4,000 (a number is a label, so
/// some are skipped) and the phase pushes a multiple of 4,000, so every short activity the phase starts also
/// ends in it and the retained activities are exactly the three long-running ones.
async fn burst_with_outage(
    broker: &mut Mosquitto,
    bridge: &Bridge,
    pms: &FakePms,
    http: std::net::SocketAddr,
    seq: &mut u64,
    base: Instant,
) -> OutageRun {
    *seq = seq.next_multiple_of(4_000);
    let first = *seq;
    let end = first + BURST;
    let sub = Subscriber::start(broker.port(), base, &["plex/bridge/state"], true).await;
    let mut truth = RetainedTruth::default();
    let mut push = |seq: &mut u64, count: u64| {
        for _ in 0..count {
            let t = base.elapsed();
            let item = loadgen::item(*seq, t.as_nanos() as u64, t.as_millis() as u64);
            truth.note(&item);
            assert_eq!(pms.push_text(&item.ws_frame()), 1, "the bridge's WebSocket is not open");
            *seq += 1;
        }
    };
    let unique = |sub: &Subscriber| sub.counter.unique.load(Ordering::SeqCst);
    let dropped_before = counter(http, DROPPED).await;

    // Half, with the broker up; killed once a quarter arrived (the bridge then holds the PMS back).
    push(seq, BURST / 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while unique(&sub) < BURST / 4 {
        assert!(Instant::now() < deadline, "a quarter of the burst did not arrive within 30 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let dropped_at_kill = counter(http, DROPPED).await;
    let settled_at_kill = first + unique(&sub);
    let in_flight_at_kill = *seq - settled_at_kill;
    let killed = Instant::now();
    tokio::task::block_in_place(|| broker.stop());

    // A quarter while it is down; restarted after OUTAGE.
    push(seq, BURST / 4);
    tokio::time::sleep_until((killed + OUTAGE).into()).await;
    let bridge_was_first = loadgen::restart_broker_behind(broker, bridge, &sub).await;
    let down_for = killed.elapsed();
    let recovered_at = *seq;
    sub.wait_for(u64::MAX, Duration::from_secs(2)).await;
    let dropped_after_outage = counter(http, DROPPED).await;

    // The last quarter, with everything back.
    let after_start = Instant::now();
    let target = sub.received() + BURST / 4;
    push(seq, BURST / 4);
    sub.wait_for(target, Duration::from_secs(2)).await;
    let after_seconds = after_start.elapsed().as_secs_f64();
    // Past the bridge's progress refresh, so the session documents carry the last offsets.
    tokio::time::sleep(Duration::from_millis(plex_mqtt_bridge::model::playback::PROGRESS_REFRESH_MS + 500)).await;
    let dropped_end = counter(http, DROPPED).await;
    let held = retained(broker.port(), "plex/#").await;
    let text = |topic: &str| held.get(topic).map(|p| String::from_utf8_lossy(p).into_owned());
    let mut retained_mismatch: Vec<String> =
        [truth.activities_mismatch(&held), truth.sessions_mismatch(&held)].into_iter().flatten().collect();
    for (topic, expected) in [("plex/test/state", "connected"), ("plex/bridge/state", "online")] {
        if text(topic).as_deref() != Some(expected) {
            retained_mismatch.push(format!("{topic}: {:?}, expected {expected}", text(topic)));
        }
    }
    let missing = sub.counter.missing(end).into_iter().filter(|s| *s >= first).collect();
    OutageRun {
        first,
        end,
        settled_at_kill,
        in_flight_at_kill,
        recovered_at,
        down_for,
        bridge_was_first,
        dropped: [dropped_before, dropped_at_kill, dropped_after_outage, dropped_end],
        missing,
        duplicates: sub.counter.duplicates.load(Ordering::SeqCst),
        after_seconds,
        retained_mismatch,
    }
}

impl OutageRun {
    /// Prints the figures and the checks; returns the checks that failed.
    fn report(&self, rss_kib: u64) -> Vec<String> {
        let [before, at_kill, after_outage, end] = self.dropped;
        let lost = self.missing.len() as u64;
        println!(
            "== burst with the broker killed for {:.0} s in the middle ({BURST} frames: half before, a quarter during, \
             a quarter after)",
            OUTAGE.as_secs_f64()
        );
        println!(
            "  killed with {} delivered and {} in flight; the bridge back {:.1} s after the kill (first: {})",
            self.settled_at_kill - self.first,
            self.in_flight_at_kill,
            self.down_for.as_secs_f64(),
            self.bridge_was_first
        );
        println!(
            "  dropped by the bridge: {} before the kill, {} during the outage, {} after it; missing at the \
             subscriber: {lost} (seq {:?}), duplicates {}",
            at_kill - before,
            after_outage - at_kill,
            end - after_outage,
            self.missing.first().zip(self.missing.last()),
            self.duplicates
        );
        println!(
            "  the last quarter ({}) arrived {:.2} s after its first push; bridge RSS peak over the phase {:.1} MiB",
            BURST / 4,
            self.after_seconds,
            mib(rss_kib)
        );
        let outside: Vec<u64> =
            self.missing.iter().copied().filter(|s| !(self.settled_at_kill..self.recovered_at).contains(s)).collect();
        let counted = (after_outage - at_kill) as i64;
        let checks = [
            (at_kill == before, "no drop before the kill".to_owned()),
            (end == after_outage, "no drop after the outage".to_owned()),
            (
                outside.is_empty(),
                format!("nothing missing outside the outage (outside: {:?})", &outside[..outside.len().min(10)]),
            ),
            (
                (lost as i64 - counted).unsigned_abs() <= self.in_flight_at_kill,
                format!(
                    "missing ({lost}) = counted drops ({counted}) within the {} in flight at the kill",
                    self.in_flight_at_kill
                ),
            ),
            (self.duplicates == 0, "no duplicates".to_owned()),
            (!self.bridge_was_first, "the subscriber was back before the bridge".to_owned()),
            (self.retained_mismatch.is_empty(), format!("retained state exact {:?}", self.retained_mismatch)),
            (rss_kib <= 64 * 1024, "bridge RSS <= 64 MiB".to_owned()),
            (self.end - self.first == BURST, "the whole burst pushed".to_owned()),
        ];
        let mut failures = Vec::new();
        for (ok, what) in checks {
            println!("  {} {what}", if ok { "ok    " } else { "FAILED" });
            if !ok {
                failures.push(what);
            }
        }
        failures
    }
}
