//! `plex-mqtt-bridge health`: asks the running bridge's health endpoint; exit 0 when healthy (Docker's
//! HEALTHCHECK runs it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;

/// How long the endpoint may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Queries `/healthz` and prints what it said.
pub fn main(config: &Config) -> ExitCode {
    let Some(addr) = endpoint(config) else {
        println!(
            "unhealthy: http.listen is not set, so the bridge serves no /healthz (set it, e.g. to 127.0.0.1:9184)"
        );
        return ExitCode::FAILURE;
    };
    let Some(runtime) = super::runtime() else { return ExitCode::FAILURE };
    match runtime.block_on(get(addr, "/healthz")) {
        Ok((200, body)) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            println!("unhealthy (HTTP {status}): {body}");
            ExitCode::FAILURE
        }
        Err(error) => {
            println!("unhealthy: {error} (is http.listen set?)");
            ExitCode::FAILURE
        }
    }
}

/// Where this machine reaches the running bridge's health endpoint: `http.listen`, with an address that
/// listens on every interface (`0.0.0.0`, `[::]`) replaced by the loopback address of its family. `None` when
/// `http.listen` is unset: the bridge then serves no endpoint, so there is nothing to ask (not a guessed default
/// port, where another process may answer).
pub fn endpoint(config: &Config) -> Option<SocketAddr> {
    let mut addr = config.http.listen?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    Some(addr)
}

/// GETs `path` from the health endpoint at `addr`: status and body (also what the benchmark reads `/metrics`
/// with).
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    crate::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(ANSWER_WITHIN)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let response = client.get(format!("http://{addr}{path}")).send().await.map_err(|e| {
        if e.is_timeout() {
            format!("{addr} did not answer in {} s", ANSWER_WITHIN.as_secs())
        } else {
            format!("cannot reach {addr}: {e}")
        }
    })?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}
