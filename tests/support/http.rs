//! The bridge's own health and metrics endpoint (`[http] listen`), read as an operator's probe would.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on 127.0.0.1:`port`: the status code and the body.
pub async fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to the http endpoint");
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
}

/// `/healthz` as JSON, once the endpoint answers (the bridge may still be starting).
pub async fn healthz(port: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            let (_, body) = get(port, "/healthz").await;
            return serde_json::from_str(&body).unwrap_or_else(|e| panic!("/healthz is not JSON ({e}): {body}"));
        }
        assert!(Instant::now() < deadline, "the health endpoint on port {port} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `/healthz` until `pred` holds for its JSON; panics with the last document after `timeout`.
pub async fn wait_healthz(port: u16, timeout: Duration, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let doc = healthz(port).await;
        if pred(&doc) {
            return;
        }
        assert!(Instant::now() < deadline, "/healthz never showed {what}: {doc}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of the samples of metric `name` whose line contains every one of `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}
