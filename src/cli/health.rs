//! `plex-mqtt-bridge health`: asks the running bridge's health endpoint; exit 0 when healthy (Docker's
//! HEALTHCHECK runs it).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;

/// Where the endpoint listens when `http.listen` is not set.
const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9184);
/// How long the endpoint may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Queries `/healthz` and prints what it said.
pub fn main(config: &Config) -> ExitCode {
    let mut addr = config.http.listen.unwrap_or(SocketAddr::from(DEFAULT_LISTEN));
    if addr.ip().is_unspecified() {
        addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
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
