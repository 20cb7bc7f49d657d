//! The optional health and metrics endpoint (`[http] listen`): `GET /healthz` and `GET /metrics`.
//!
//! Two read-only routes do not justify a web framework's compile time, so this is a deliberately small
//! HTTP/1.1 responder: one request per connection, bounded in size and time, `Connection: close`. A flood of
//! connections cannot starve it: see [`super::connection_slots`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::connection_slots::{ConnectionSlots, Slot};
use crate::backoff::Backoff;
use crate::telemetry::telemetry;

/// Largest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request head (a health check sends it at once).
const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// Time a client gets to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once (a flood of clients, or slowloris ones holding their connections open, cannot take
/// the bridge's file descriptors or memory); when all are taken, the oldest still sending its head makes room.
const MAX_CONNECTIONS: usize = 64;
/// `accept()` failing (out of file descriptors, say) is retried after this, growing up to one second, instead
/// of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Binds `addr`, so that a busy port is reported at start-up, before [`serve`] takes the listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves requests on `listener` until `cancel`.
pub async fn serve(listener: TcpListener, cancel: CancellationToken) {
    let slots = ConnectionSlots::new(MAX_CONNECTIONS);
    let mut backoff = Backoff::new(ACCEPT_BACKOFF, ACCEPT_BACKOFF_MAX);
    let mut failing = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if failing {
                        backoff.reset();
                        failing = false;
                    }
                    // With every slot answering, the connection is closed unanswered (dropped here).
                    if let Some(slot) = slots.take() {
                        tokio::spawn(async move {
                            tokio::select! {
                                () = respond(stream, &slot) => {}
                                () = slot.evicted.cancelled() => {}
                            }
                        });
                    }
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    let error = if crate::fd_limit::is_exhausted(&error) {
                        crate::fd_limit::describe(&error, "accept")
                    } else {
                        error.to_string()
                    };
                    if failing {
                        tracing::debug!(%error, retry_in = ?delay, "health endpoint still cannot accept");
                    } else {
                        tracing::warn!(%error, retry_in = ?delay, "health endpoint cannot accept connections; retrying");
                        failing = true;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => return,
                    }
                }
            }
        }
    }
}

async fn respond(mut stream: TcpStream, slot: &Slot) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(HEAD_DEADLINE, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    slot.answering();
    if !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let response = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(response.as_bytes())).await;
        return;
    }
    let request_line = String::from_utf8_lossy(head.split(|b| *b == b'\r').next().unwrap_or_default()).into_owned();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/healthz") => {
            let health = telemetry().health().snapshot();
            let status = if health.healthy() { "200 OK" } else { "503 Service Unavailable" };
            (status, "application/json", health.to_json().to_string())
        }
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", telemetry().render_metrics()),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A client that does not read its response is given up on, like one that does not send its request.
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
