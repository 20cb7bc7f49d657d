//! MQTT over TLS without rumqttc's TLS features.
//!
//! rumqttc 0.25's rustls feature pins `rustls-webpki` 0.102, which has open advisories (see the README's design
//! notes). Instead, rumqttc connects over a Unix socket in a private directory (mode 0700), and this module
//! forwards each such connection to the broker over TLS made with the bridge's own, current rustls. Only the
//! bridge's user can reach the socket, so a client certificate (mutual TLS) cannot be borrowed by another
//! local user. Handshake failures are logged here with their cause; rumqttc only sees a closed connection and
//! retries with the publisher's backoff.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::tls;

/// A running tunnel; stops and removes its socket directory when dropped.
pub struct Tunnel {
    dir: PathBuf,
    socket: PathBuf,
    task: JoinHandle<()>,
}

impl Tunnel {
    /// Binds the socket and starts forwarding connections to `host:port` over TLS.
    pub fn start(host: String, port: u16, config: Arc<ClientConfig>) -> std::io::Result<Tunnel> {
        let dir = private_dir()?;
        let socket = dir.join("mqtt.sock");
        let listener = UnixListener::bind(&socket)?;
        let task = tokio::spawn(accept_loop(listener, host, port, config));
        Ok(Tunnel { dir, socket, task })
    }

    /// The socket rumqttc connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A fresh directory only this user can enter: in `$RUNTIME_DIRECTORY` (systemd `RuntimeDirectory=`) or the
/// temporary directory.
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("RUNTIME_DIRECTORY").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let dir = base.join(format!("plex-mqtt-bridge-{}-{nanos:08x}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

async fn accept_loop(listener: UnixListener, host: String, port: u16, config: Arc<ClientConfig>) {
    let mut last_error = String::new();
    loop {
        let Ok((local, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        match open(&host, port, config.clone()).await {
            Ok(remote) => {
                last_error.clear();
                tokio::spawn(forward(local, remote));
            }
            Err(error) => {
                // Logged once per distinct cause: rumqttc retries with backoff and would repeat it.
                if error != last_error {
                    tracing::error!(broker = %format!("{host}:{port}"), %error, "MQTT TLS connection failed");
                    last_error = error;
                }
            }
        }
    }
}

/// Connects to the broker and completes the TLS handshake.
pub async fn open(
    host: &str,
    port: u16,
    config: Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let connect = TcpStream::connect((host, port));
    let tcp = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| format!("connecting to {host}:{port} timed out"))?
        .map_err(|e| format!("connecting to {host}:{port} failed: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let handshake = tls::connect(config, host, tcp);
    tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .map_err(|_| format!("TLS handshake with {host}:{port} timed out"))?
}

async fn forward(mut local: UnixStream, mut remote: tokio_rustls::client::TlsStream<TcpStream>) {
    let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
}
