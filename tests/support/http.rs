//! The bridge's own health and metrics endpoint (`[http] listen`), read as an operator's probe would.

use std::time::Duration;

use super::wait;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain-HTTP client (no connection kept between requests: each test's runtime has its own).
fn client() -> reqwest::Client {
    // reqwest is built without a TLS provider of its own; this client never speaks TLS, but building one needs a
    // provider installed.
    plex_mqtt_bridge::tls::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(0)
        .build()
        .expect("build a plain-HTTP client")
}

/// `GET path` on 127.0.0.1:`port`, if it answers: the status code and the body.
pub async fn try_get(port: u16, path: &str) -> Option<(u16, String)> {
    let response = client().get(format!("http://127.0.0.1:{port}{path}")).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// `GET path` on 127.0.0.1:`port`: the status code and the body.
pub async fn get(port: u16, path: &str) -> (u16, String) {
    try_get(port, path).await.unwrap_or_else(|| panic!("GET http://127.0.0.1:{port}{path} got no answer"))
}

/// Polls `path` until it answers `want`; returns the body. Panics with the last answer after `timeout`.
pub async fn wait_status(port: u16, path: &str, want: u16, timeout: Duration) -> String {
    let mut last = None;
    let body = wait::poll(timeout, async || {
        last = try_get(port, path).await;
        last.clone().filter(|(status, _)| *status == want).map(|(_, body)| body)
    })
    .await;
    body.unwrap_or_else(|| panic!("{path} on port {port} never answered {want}; last answer: {last:?}"))
}

/// `/healthz` as JSON, once the endpoint answers (the bridge may still be starting).
pub async fn healthz(port: u16) -> serde_json::Value {
    let answer = wait::poll(wait::SOON, async || try_get(port, "/healthz").await).await;
    let (_, body) = answer.unwrap_or_else(|| panic!("the health endpoint on port {port} never answered"));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/healthz is not JSON ({e}): {body}"))
}

/// Polls `/healthz` until `pred` holds for its JSON; panics with the last document after `timeout`.
pub async fn wait_healthz(port: u16, timeout: Duration, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    let mut last = serde_json::Value::Null;
    let met = wait::poll(timeout, async || {
        last = healthz(port).await;
        pred(&last).then_some(())
    })
    .await;
    assert!(met.is_some(), "/healthz never showed {what}: {last}");
}

/// The sum of the samples of metric `name` whose line contains every one of `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}
