//! A flood on the command topics costs no Plex event (issue 25): 100,000 commands in 8 s from one client allowed
//! to publish there, while the PMS sends a notification every 0.5 s, with `mqtt.queue_size = 1000`. Every Plex
//! notification is delivered, none is dropped, the bridge's memory stays bounded, the flood leaves fewer than
//! 100 log lines, and every command the bridge received is answered as the README says: a result of its own, or
//! a count in one coalesced notice.

mod support;

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Outgoing, PublishOptions, QoS};
use serde_json::Value;
use support::bridge::peak_rss_kib;
use support::config::Commands;
use support::frames::status;
use support::mosquitto::free_port;
use support::mqtt::{mqtt_options, unique_client_id};
use support::wait::{self, SLOW, SOON};
use support::{test_config, Bridge, FakePms, Mosquitto, Probe, TokenFile};

const RESULT: &str = "plex/test/command/result";
const COMMANDS: u64 = 100_000;
const FLOOD_FOR: Duration = Duration::from_secs(8);

/// One counter of the bridge's `/metrics` (labels included in `series`), 0 when absent.
async fn metric(port: u16, series: &str) -> u64 {
    let (status, body) = support::http::get(port, "/metrics").await;
    assert_eq!(status, 200, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Publishes `COMMANDS` library scans at QoS 0, evenly over `FLOOD_FOR`, from one client.
async fn flood(port: u16) {
    let mut options = mqtt_options(&unique_client_id("flooder"), port);
    options.set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::builder(options).capacity(10_000).build();
    let driver = tokio::spawn(async move {
        let mut sent = 0u64;
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                    sent += 1;
                    if sent == COMMANDS {
                        return sent;
                    }
                }
                Ok(_) => {}
                Err(error) => panic!("the flooding client lost its broker: {error}"),
            }
        }
    });
    let started = Instant::now();
    let batches = 800u64;
    for batch in 0..batches {
        for _ in 0..COMMANDS / batches {
            client
                .publish("plex/test/command/library_scan", "{}", PublishOptions::new(QoS::AtMostOnce))
                .await
                .expect("queue a command");
        }
        let due = started + FLOOD_FOR.mul_f64((batch + 1) as f64 / batches as f64);
        wait::pace(due.saturating_duration_since(Instant::now())).await;
    }
    let sent = tokio::time::timeout(SLOW, driver).await.expect("the flood was written").expect("flooder");
    assert_eq!(sent, COMMANDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_flood_costs_no_plex_event() {
    let broker = Mosquitto::start();
    let pms = FakePms::start_default().await;
    pms.set_canned("/library/sections/all/refresh", support::fake_pms::CannedResponse::json(""));
    let token = TokenFile::new(&pms.token());
    let http = free_port();
    let config = test_config(&broker.url(), &pms.url(), token.path())
        .mqtt(|m| m.queue_size = Some(1000))
        .commands(Commands { rate_limit: Some(5), ..Commands::enabled(Some(&["library_scan"])) })
        .http(http)
        .log_level("info");
    let mut state = Probe::subscribe(broker.port(), &["plex/test/state"]).await;
    let mut results = Probe::subscribe(broker.port(), &[RESULT, "plex/test/status"]).await;
    let mut bridge = Bridge::start(&config);
    state.expect_payload("plex/test/state", "connected", SOON).await;
    let ready = wait::poll(SOON, async || {
        support::publish(broker.port(), "plex/test/command/ready_probe", "{}", false).await;
        results.wait_for(Duration::from_millis(300), |m| m.topic == RESULT).await
    })
    .await;
    assert!(ready.is_some(), "the bridge answers commands");
    let logs_before = bridge.logs().lines().count();

    // The PMS sends a notification every 0.5 s for as long as the flood lasts, and a little longer.
    let sender = {
        let pms = pms.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                pms.push_text(&status(&[&format!(r#"{{"title":"tick","description":"{i}"}}"#)]));
                wait::pace(Duration::from_millis(500)).await;
            }
        })
    };
    flood(broker.port()).await;
    sender.await.expect("the PMS sender");

    for i in 0..20 {
        let wanted = format!(r#""description":"{i}""#);
        results
            .expect_seen(SLOW, &format!("Plex notification {i}"), |m| {
                m.topic == "plex/test/status" && m.text().contains(&wanted)
            })
            .await;
    }
    // Every command the bridge received (the readiness probes' too) is accounted for: a result of its own, or a
    // count in a notice.
    let received = async || {
        let mut n = 0;
        for outcome in ["executed", "refused", "unanswered"] {
            n += metric(http, &format!("plex_mqtt_bridge_command_messages_total{{outcome=\"{outcome}\"}}")).await;
        }
        n
    };
    let settled = wait::poll(SLOW, async || {
        let answered: u64 = results
            .history_on(RESULT)
            .iter()
            .map(|m| m.json())
            .map(|r: Value| r["unanswered"].as_u64().unwrap_or(1))
            .sum();
        let received = received().await;
        (received > 0 && answered == received).then_some((answered, received))
    })
    .await;
    let Some((answered, received)) = settled else {
        panic!("not every command was answered or counted: received {} by the metrics", received().await)
    };
    assert!(received >= COMMANDS * 9 / 10, "the bridge received most of the flood: {received} of {COMMANDS}");
    assert!(answered <= received);
    let executed = metric(http, "plex_mqtt_bridge_command_messages_total{outcome=\"executed\"}").await;
    assert!(executed <= 5 * 3, "the rate limit held: {executed} ran");

    assert_eq!(metric(http, "plex_mqtt_bridge_messages_dropped_total").await, 0, "no Plex event dropped");
    let peak = peak_rss_kib(bridge.pid());
    assert!(peak <= 64 * 1024, "peak RSS {peak} KiB");
    let logs = bridge.logs();
    let flood_lines = logs.lines().count() - logs_before;
    eprintln!(
        "flood: received {received}, answered or counted {answered}, ran {executed}, peak RSS {peak} KiB, \
         {flood_lines} log lines"
    );
    assert!(flood_lines < 100, "{flood_lines} log lines from the flood:\n{logs}");
    assert!(!logs.contains("dropping the oldest live events"), "{logs}");
    bridge.kill();
}
