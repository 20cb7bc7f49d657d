//! `plex-mqtt-bridge check`: one line per check, each failure with its fix, for operators setting the bridge up.

use std::time::Duration;

use rumqttc::{ConnectionError, Event, Packet};

use super::check_token::TokenReport;
use crate::config::{Config, TokenSource};
use crate::plex::http::{build_client, PlexHttp};
use crate::plex::{client_headers, read_token, PlexError};

/// Runs every check: exit 0 when all passed.
pub fn main(config: &Config) -> std::process::ExitCode {
    let Some(runtime) = super::runtime() else { return std::process::ExitCode::FAILURE };
    if runtime.block_on(run(config)) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Runs every check, printing a line for each; true when all passed.
pub async fn run(config: &Config) -> bool {
    crate::tls::install_crypto_provider();
    println!("ok   config: {} server(s), broker {}", config.servers.len(), config.mqtt.url);
    let mut all_ok = true;
    for server in &config.servers {
        let (ok, line) = check_server(config, server).await;
        all_ok &= ok;
        println!("{line}");
    }
    let (ok, line) = check_broker(config).await;
    all_ok &= ok;
    println!("{line}");
    all_ok
}

async fn check_server(config: &Config, server: &crate::config::ServerConfig) -> (bool, String) {
    let what = format!("plex {} ({})", server.key, server.url.as_str().trim_end_matches('/'));
    let token = match read_token(&server.token) {
        Ok(token) => token,
        Err(e) => return (false, format!("FAIL {what}: {e} — fix: check token_file")),
    };
    let tls = match server.tls_config() {
        Ok(tls) => tls,
        Err(e) => return (false, format!("FAIL {what}: {e} — fix: check ca_file")),
    };
    let client = match build_client(client_headers(&config.plex), config.plex.connect_timeout, tls) {
        Ok(client) => client,
        Err(e) => return (false, format!("FAIL {what}: {e}")),
    };
    // The token read above is the one checked (and described below).
    let http =
        PlexHttp::new(client, server.url.clone(), TokenSource::Inline(token.clone()), config.plex.request_timeout)
            .with_max_response_size(config.plex.max_response_size);
    let report = TokenReport::of(config, server, &token);
    match http.identity().await {
        Ok(identity) => (
            true,
            format!(
                "ok   {what}: \"{}\" (Plex Media Server {}), token accepted ({report})",
                identity.friendly_name, identity.version,
            ),
        ),
        Err(PlexError::Unauthorized(status)) => {
            let problem = report.last_problem(config, server).await;
            (false, format!("FAIL {what}: token rejected (HTTP {status}); {report}{problem} — fix: {}", report.fix()))
        }
        Err(error) => {
            let fix = match &error {
                PlexError::Transport(text) if text.contains("certificate") || text.contains("TLS") => {
                    "set ca_file to the CA of the server's certificate, use its *.plex.direct host name, or (last \
                     resort) insecure_skip_verify = true"
                }
                PlexError::Transport(_) => "check the URL and that Plex Media Server runs and is reachable from here",
                PlexError::Decode(_) | PlexError::NotFound | PlexError::Status(_) => {
                    "check that the URL points at Plex Media Server (port 32400), not a proxy page"
                }
                PlexError::RedirectRefused(_) => {
                    "set url to the address Plex itself answers on (not a proxy or portal that redirects elsewhere)"
                }
                _ => "see the error",
            };
            (false, format!("FAIL {what}: {error} — fix: {fix}"))
        }
    }
}

async fn check_broker(config: &Config) -> (bool, String) {
    let what = format!("mqtt {}", config.mqtt.url);
    if let Some(tls) = &config.mqtt.tls {
        let tls_config = match crate::tls::client_config(tls) {
            Ok(c) => c,
            Err(e) => return (false, format!("FAIL {what}: {e} — fix: check mqtt.ca_file / client_cert / client_key")),
        };
        if let Err(error) = tls_handshake(&config.mqtt.host, config.mqtt.port, tls_config).await {
            return (
                false,
                format!("FAIL {what}: {error} — fix: set mqtt.ca_file to the CA that signed the broker's certificate"),
            );
        }
    }
    let (client, mut eventloop) = match super::broker_client::short_lived_client(&config.mqtt, "check", 4) {
        Ok(pair) => pair,
        Err(e) => return (false, format!("FAIL {what}: {e}")),
    };
    let result = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
    })
    .await;
    let _ = client.try_disconnect();
    match result {
        Ok(Ok(())) => (true, format!("ok   {what}: connected")),
        Ok(Err(ConnectionError::ConnectionRefused(code))) => (
            false,
            format!("FAIL {what}: the broker refused the connection ({code:?}) — fix: check mqtt.username and mqtt.password"),
        ),
        Ok(Err(error)) => {
            (false, format!("FAIL {what}: {error} — fix: check mqtt.url and that the broker runs and is reachable"))
        }
        Err(_) => (false, format!("FAIL {what}: no answer within 10 s — fix: check mqtt.url (host, port, mqtt:// vs mqtts://)")),
    }
}

/// Connects to the broker and completes a TLS handshake, so a certificate problem is reported with its cause
/// (the MQTT client only says that TLS failed).
async fn tls_handshake(host: &str, port: u16, config: std::sync::Arc<rustls::ClientConfig>) -> Result<(), String> {
    let connect = tokio::net::TcpStream::connect((host, port));
    let tcp = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| format!("connecting to {host}:{port} timed out"))?
        .map_err(|e| format!("connecting to {host}:{port} failed: {e}"))?;
    let handshake = crate::tls::connect(config, host, tcp);
    tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .map_err(|_| format!("TLS handshake with {host}:{port} timed out"))?
        .map(drop)
}
