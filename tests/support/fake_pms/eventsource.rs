//! The notification EventSource stream of the fake PMS: `200 text/event-stream` with a chunked body that lasts as
//! long as the connection, `event: ping` blocks at the configured interval, and the raw bytes the test pushes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::http::Registration;
use super::{Command, Kind, RecordedRequest};

/// Serves the stream for an authorized request until it ends.
pub(super) async fn serve(
    stream: TcpStream,
    request: RecordedRequest,
    rx: mpsc::UnboundedReceiver<Command>,
    registration: Registration,
    ping_every: Duration,
) {
    let shared = registration.shared.clone();
    registration.open_stream(Kind::EventSource, request, 200);
    shared.sse_open.send_modify(|n| *n += 1);
    let _open = OpenCount(&shared.sse_open);
    serve_eventsource(stream, rx, ping_every).await;
    drop(registration);
}

/// Decrements an open-connection count when a stream ends, however it ends.
struct OpenCount<'a>(&'a watch::Sender<usize>);

impl Drop for OpenCount<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// The EventSource stream as PMS serves it: `200` with `Content-Type: text/event-stream`, a chunked body that
/// lasts as long as the connection, `event: ping` with `data: {}` at the ping interval, and the test's pushes.
async fn serve_eventsource(mut stream: TcpStream, mut rx: mpsc::UnboundedReceiver<Command>, ping_every: Duration) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let mut stalled = false;
    let mut queued: Vec<Vec<u8>> = Vec::new();
    let mut scratch = [0u8; 512];
    loop {
        if stalled {
            match rx.recv().await {
                Some(Command::Sse(bytes)) => queued.push(bytes),
                Some(Command::Stall(s)) => stalled = s,
                Some(Command::Drop) | None => return,
                Some(_) => {}
            }
            continue;
        }
        for bytes in queued.drain(..) {
            if write_chunk(&mut stream, &bytes).await.is_err() {
                return;
            }
        }
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Command::Sse(bytes)) => {
                    if write_chunk(&mut stream, &bytes).await.is_err() {
                        return;
                    }
                }
                Some(Command::Stall(s)) => stalled = s,
                Some(Command::Drop) | None => return,
                Some(_) => {}
            },
            _ = ping.tick() => {
                if write_chunk(&mut stream, b"event: ping\ndata: {}\n\n").await.is_err() {
                    return;
                }
            }
            // The client closing its side ends the stream.
            read = stream.read(&mut scratch) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

/// One HTTP/1.1 chunk, flushed.
async fn write_chunk(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(()); // an empty chunk would end the body
    }
    stream.write_all(format!("{:x}\r\n", bytes.len()).as_bytes()).await?;
    stream.write_all(bytes).await?;
    stream.write_all(b"\r\n").await?;
    stream.flush().await
}
