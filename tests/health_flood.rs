//! The health endpoint cannot be starved (issue 25): while 10,000 connections that each sent 9 bytes and stalled
//! are held, `/healthz` answers every time, and the bridging goes on. How fast it answers meanwhile is a
//! performance figure, measured by `cargo bench --bench sessions` (BENCHMARKS.md); the bound here, [`SOON`], only
//! tells a starved endpoint (no answer at all) from a working one.

mod support;

use support::frames::status;
use support::mosquitto::free_port;
use support::wait::{self, SOON};
use support::{test_config, Bridge, FakePms, Mosquitto, Probe, TokenFile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STALLED: usize = 10_000;

/// Lets this process hold the stalled connections (its soft file-descriptor limit up to the hard one).
fn raise_fd_limit() {
    let limit = plex_mqtt_bridge::fd_limit::raise().expect("raise the file-descriptor limit");
    assert!(limit.soft as usize > STALLED + 1000, "the hard fd limit {} is too low for this test", limit.soft);
}

/// One `GET /healthz` on a fresh connection, connect to answer bounded by [`SOON`]: its status.
async fn healthz_status(port: u16) -> u16 {
    let answer = wait::within("an answer from /healthz", SOON, async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect to the health endpoint");
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n").await.expect("request");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read the answer");
        answer
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not HTTP: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_cannot_starve_the_health_endpoint() {
    raise_fd_limit();
    let broker = Mosquitto::start();
    let pms = FakePms::start_default().await;
    let token = TokenFile::new(&pms.token());
    let http = free_port();
    let config = test_config(&broker.url(), &pms.url(), token.path()).http(http).log_level("info");
    let mut probe = Probe::subscribe(broker.port(), &["plex/test/state", "plex/test/status"]).await;
    let mut bridge = Bridge::start(&config);
    probe.expect_payload("plex/test/state", "connected", SOON).await;

    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let mut stream = TcpStream::connect(("127.0.0.1", http)).await.expect("a stalling connection");
        // Part of a request head, then nothing: the connection is held open.
        stream.write_all(b"GET /heal").await.expect("send part of a request head");
        stalled.push(stream);
    }
    for i in 0..5 {
        let status = healthz_status(http).await;
        assert!(status == 200 || status == 503, "attempt {i}: HTTP {status} with {STALLED} stalled");
    }
    pms.push_text(&status(&[r#"{"title":"still bridging"}"#]));
    probe.expect_seen(SOON, "a notification during the flood", |m| m.text().contains("still bridging")).await;
    assert_eq!(stalled.len(), STALLED, "the stalled connections were held throughout");
    drop(stalled);
    assert!(bridge.is_running());
    bridge.kill();
}
