//! TLS for connections the bridge opens itself (the Plex notification socket over `https://`).
//!
//! Uses rustls with the `ring` provider and the platform's certificate verifier, the same trust decisions
//! reqwest makes for the REST calls, so one server URL behaves the same on both paths.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use rustls_platform_verifier::ConfigVerifierExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A TLS client configuration that trusts the platform's roots.
pub fn client_config() -> Result<Arc<ClientConfig>, String> {
    ClientConfig::with_platform_verifier().map(Arc::new).map_err(|e| format!("cannot set up TLS: {e}"))
}

/// Wraps `tcp` in TLS to `host`, verifying its certificate.
pub async fn connect(config: Arc<ClientConfig>, host: &str, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("invalid TLS server name {host:?}: {e}"))?;
    TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("TLS handshake with {host} failed: {e}"))
}
