//! The notification WebSocket of the fake PMS: the upgrade of a checked request (`101` with the accept key only
//! for a version-13 upgrade carrying a key), then frames pushed by the test, answers to pings, stalls and drops.

use std::sync::atomic::Ordering;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::http::Registration;
use super::{Command, Kind, RecordedRequest, Shared};

/// Frames written with one flush at most.
const BURST_FRAMES: usize = 64;

/// The `Sec-WebSocket-Key` of a valid upgrade request (`Upgrade: websocket`, version 13), else None.
pub(super) fn accept_key(request: &RecordedRequest) -> Option<String> {
    let upgrade = request.header("upgrade")?;
    if !upgrade.eq_ignore_ascii_case("websocket") || request.header("sec-websocket-version") != Some("13") {
        return None;
    }
    request.header("sec-websocket-key").map(str::to_owned)
}

/// Answers `101` to an authorized upgrade request with `key` and serves the connection until it ends.
pub(super) async fn serve(
    mut stream: TcpStream,
    leftover: Vec<u8>,
    request: RecordedRequest,
    key: &str,
    rx: mpsc::UnboundedReceiver<Command>,
    mut registration: Registration,
) {
    let shared = registration.shared.clone();
    // Register before answering: once the client has the 101 (and, say, reports itself connected), pushes must
    // reach this connection. They wait in the channel until the stream is set up.
    registration.open_stream(Kind::WebSocket, request, 101);
    shared.ws_open.send_modify(|n| *n += 1);
    registration.counted_open = true;
    shared.ws_total.send_modify(|n| *n += 1);
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    if stream.write_all(response.as_bytes()).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    let ws = WebSocketStream::from_partially_read(stream, leftover, Role::Server, None).await;
    serve_websocket(ws, rx, &shared).await;
    drop(registration);
}

async fn serve_websocket(
    mut ws: WebSocketStream<TcpStream>,
    mut rx: mpsc::UnboundedReceiver<Command>,
    shared: &Shared,
) {
    let mut stalled = false;
    let mut queued: Vec<Message> = Vec::new();
    // A command taken from the channel while writing a burst of frames, handled next.
    let mut pending: Option<Command> = None;
    loop {
        if stalled {
            // Neither read nor write: only listen to the test.
            let cmd = match pending.take() {
                Some(cmd) => Some(cmd),
                None => rx.recv().await,
            };
            match cmd {
                Some(Command::Text(text)) => queued.push(Message::text(text)),
                Some(Command::Binary(bytes)) => queued.push(Message::binary(bytes)),
                Some(Command::Stall(s)) => stalled = s,
                Some(Command::Sse(_)) => {}
                Some(Command::Drop) | None => return,
            }
            continue;
        }
        for message in queued.drain(..) {
            if ws.send(message).await.is_err() {
                return;
            }
        }
        let cmd = match pending.take() {
            Some(cmd) => Some(cmd),
            None => tokio::select! {
                cmd = rx.recv() => cmd,
                // Reading lets tungstenite answer pings (and a Close) by itself on the next poll.
                frame = ws.next() => {
                    match frame {
                        Some(Ok(Message::Ping(_))) => {
                            shared.pings.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(Ok(Message::Close(_))) => {
                            shared.closes.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return,
                    }
                    continue;
                }
            },
        };
        let first = match cmd {
            Some(Command::Text(text)) => Message::text(text),
            Some(Command::Binary(bytes)) => Message::binary(bytes),
            Some(Command::Stall(s)) => {
                stalled = s;
                continue;
            }
            Some(Command::Sse(_)) => continue,
            // Dropping the stream closes the socket: no Close frame.
            Some(Command::Drop) | None => return,
        };
        match write_burst(&mut ws, first, &mut rx).await {
            Ok(next) => pending = next,
            Err(()) => return,
        }
    }
}

/// Writes `first` and the frames queued behind it (at most [`BURST_FRAMES`]) with one flush, as a server
/// writing a burst of notifications does; returns a non-frame command met on the way, to be handled next.
async fn write_burst(
    ws: &mut WebSocketStream<TcpStream>,
    first: Message,
    rx: &mut mpsc::UnboundedReceiver<Command>,
) -> Result<Option<Command>, ()> {
    ws.feed(first).await.map_err(|_| ())?;
    let mut next = None;
    for _ in 1..BURST_FRAMES {
        match rx.try_recv() {
            Ok(Command::Text(text)) => ws.feed(Message::text(text)).await.map_err(|_| ())?,
            Ok(Command::Binary(bytes)) => ws.feed(Message::binary(bytes)).await.map_err(|_| ())?,
            Ok(other) => {
                next = Some(other);
                break;
            }
            Err(_) => break,
        }
    }
    ws.flush().await.map_err(|_| ())?;
    Ok(next)
}
