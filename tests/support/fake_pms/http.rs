//! The fake PMS's HTTP/1.1 side: the listener, reading and checking each request (token as header or query,
//! `X-Plex-Client-Identifier` on notification streams, `Accept: application/json` on the REST answers, exact
//! paths), routing it, and the REST answers. Requests
//! for a notification stream are handed to [`super::websocket`] or [`super::eventsource`] once checked.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{
    eventsource, websocket, CannedResponse, Command, Connection, FakePmsConfig, Kind, RecordedRequest, Shared,
    WsConnectionInfo, BAD_REQUEST_HTML, NOT_FOUND_HTML, PLURAL_WS_PATH, SINGULAR_WS_PATH, SSE_PATH, UNAUTHORIZED_HTML,
};
use crate::support::wait;

/// Largest request head accepted (request line + headers).
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server drains the socket after responding before it closes it (avoids a RST that could
/// destroy the response before the client read it).
const LINGER: Duration = Duration::from_millis(500);
/// How long a fixed port is tried while the previous server's sockets may still be closing.
const REBIND: Duration = Duration::from_secs(5);

/// Binds 127.0.0.1:`port`; a fixed port is retried for up to [`REBIND`].
pub(super) async fn bind(port: u16) -> TcpListener {
    let attempts = if port == 0 { Duration::ZERO } else { REBIND };
    let mut last_error = None;
    let bound = wait::poll(attempts, async || match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
        Ok(listener) => Some(listener),
        Err(e) => {
            last_error = Some(e);
            None
        }
    })
    .await;
    bound.unwrap_or_else(|| panic!("bind the fake PMS to 127.0.0.1:{port}: {last_error:?}"))
}

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    accept_each(listener, |stream| {
        let task = tokio::spawn(serve_connection(stream, shared.clone()));
        shared.track(task.abort_handle());
    })
    .await
}

/// Hands every connection `listener` accepts to `serve`, for as long as the fake lives (every fake's listener);
/// an accept error (EMFILE under a flood) backs off instead of spinning or ending the fake.
pub async fn accept_each(listener: TcpListener, mut serve: impl FnMut(TcpStream)) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => serve(stream),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Removes a connection from the registry (and the WebSocket open count) however its task ends, abort included.
pub(super) struct Registration {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u64,
    pub(super) counted_open: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut connections) = self.shared.connections.lock() {
            connections.remove(&self.id);
        }
        self.shared.connections_closed.send_modify(|n| *n += 1);
        if self.counted_open {
            self.shared.ws_open.send_modify(|n| *n -= 1);
        }
    }
}

impl Registration {
    /// Records `request` as answered with `status` and makes the connection a notification stream of `kind`:
    /// listed with its path and `filters`, and reached by the pushes of its kind from now on.
    pub(super) fn open_stream(&self, kind: Kind, request: RecordedRequest, status: u16) {
        let mut recorded = request;
        recorded.status = status;
        let filters = recorded.query_param("filters").map(str::to_owned);
        let info = WsConnectionInfo { id: self.id, path: recorded.path.clone(), filters, opened_at: Instant::now() };
        self.shared.record(recorded);
        let infos = if kind == Kind::WebSocket { &self.shared.ws_infos } else { &self.shared.sse_infos };
        infos.lock().expect("fake pms stream infos lock").push(info);
        if let Some(c) = self.shared.connections.lock().expect("fake pms connections lock").get_mut(&self.id) {
            c.kind = kind;
        }
    }
}

async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let (tx, mut rx) = mpsc::unbounded_channel();
    shared.connections.lock().expect("fake pms connections lock").insert(id, Connection { tx, kind: Kind::Http });
    let registration = Registration { shared: shared.clone(), id, counted_open: false };

    // A hung server: hold the connection without reading until released or dropped.
    let mut stall_new = shared.stall_new.subscribe();
    if *stall_new.borrow_and_update() {
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Drop) | None => return,
                    Some(_) => {}
                },
                changed = stall_new.changed() => {
                    if changed.is_err() || !*stall_new.borrow_and_update() {
                        break;
                    }
                }
            }
        }
    }

    let Some((head, leftover)) = read_head(&mut stream).await else {
        return;
    };
    let request = match parse_head(&head) {
        Some(request) => request,
        None => {
            respond(&mut stream, 400, "text/html", BAD_REQUEST_HTML.as_bytes()).await;
            return;
        }
    };

    let redirect = shared.redirects.lock().expect("fake pms redirects lock").get(&request.path).cloned();
    if let Some(location) = redirect {
        let mut recorded = request;
        recorded.status = 302;
        shared.record(recorded);
        let extra = format!("Location: {location}\r\n");
        respond_with(&mut stream, 302, "text/html", &extra, b"<html><body>Found</body></html>").await;
        return;
    }

    let config = shared.config.lock().expect("fake pms config lock").clone();
    // The token is accepted as a header or as a query parameter.
    let extra = shared.extra_tokens.lock().expect("fake pms tokens lock").clone();
    let accepted = |t: Option<&str>| t.is_some_and(|t| t == config.token || extra.iter().any(|e| e == t));
    let authorized = accepted(request.header("x-plex-token")) || accepted(request.query_param("X-Plex-Token"));
    let route = {
        let canned = shared.canned.lock().expect("fake pms canned lock");
        route(&request, &config, &canned)
    };
    let html = |body: &str| ("text/html".to_owned(), body.as_bytes().to_vec());
    let json = |body: String| ("application/json".to_owned(), body.into_bytes());
    // PMS answers its REST endpoints in XML unless the request asks for JSON; the bridge parses only JSON, so a
    // request without `Accept: application/json` is refused here (400) and recorded as a rejection.
    let wants_json = request.header("accept").is_some_and(|accept| accept.contains("application/json"));
    let refuse_xml = || {
        shared.reject(format!("{} {} without Accept: application/json", request.method, request.target));
        (400, html(BAD_REQUEST_HTML))
    };
    let (status, (content_type, body)) = match route {
        Route::Identity if !wants_json => refuse_xml(),
        Route::Identity => (200, json(identity_json(&config))),
        Route::Root if !authorized => (401, html(UNAUTHORIZED_HTML)),
        Route::Root if !wants_json => refuse_xml(),
        Route::Root => (200, json(root_json(&config))),
        Route::WebSocket | Route::EventSource if !authorized => (401, html(UNAUTHORIZED_HTML)),
        Route::WebSocket | Route::EventSource if request.header("x-plex-client-identifier").is_none() => {
            (400, html(BAD_REQUEST_HTML))
        }
        Route::WebSocket => match websocket::accept_key(&request) {
            Some(key) => return websocket::serve(stream, leftover, request, &key, rx, registration).await,
            // Not a valid upgrade request (no key, wrong version): PMS answers 400.
            None => (400, html(BAD_REQUEST_HTML)),
        },
        Route::EventSource => {
            return eventsource::serve(stream, request, rx, registration, config.sse_ping_interval).await
        }
        Route::Canned(canned) | Route::Photo(canned) if canned.needs_token && !authorized => {
            (401, html(UNAUTHORIZED_HTML))
        }
        // The photo transcoder answers an image whatever the request accepts.
        Route::Canned(_) if !wants_json => refuse_xml(),
        Route::Canned(canned) | Route::Photo(canned) => {
            if !canned.delay.is_zero() {
                // A slow or hanging server is the behaviour asked for.
                tokio::time::sleep(canned.delay).await;
            }
            (canned.status, (canned.content_type, canned.body))
        }
        Route::NotFound => (404, html(NOT_FOUND_HTML)),
    };
    let mut recorded = request;
    recorded.status = status;
    shared.record(recorded);
    respond(&mut stream, status, &content_type, &body).await;
    drop(registration);
}

enum Route {
    Identity,
    Root,
    WebSocket,
    EventSource,
    /// A REST answer a test set ([`super::FakePms::set_canned`]): JSON only to a request that accepts it.
    Canned(CannedResponse),
    /// An image from the photo transcoder.
    Photo(CannedResponse),
    NotFound,
}

/// PMS's photo transcoder (`/photo/:/transcode?width=…&height=…&url=<server path>`).
pub const PHOTO_PATH: &str = "/photo/:/transcode";

pub(super) fn photo_key(source: &str) -> String {
    format!("{PHOTO_PATH}?url={source}")
}

/// Which endpoint a request is for. Endpoints added by later issues get their own `Route` variant and an arm
/// here, above the canned fallback: `/:/eventsource/notifications` (SSE), `/status/sessions`, `/activities`,
/// `/library/metadata/<id>` (match `p if p.starts_with("/library/metadata/")`). Until then a test can serve
/// a fixed response on any path with [`FakePms::set_canned`].
fn route(request: &RecordedRequest, config: &FakePmsConfig, canned: &HashMap<String, CannedResponse>) -> Route {
    if request.method != "GET" {
        // Requests that act (`POST /butler/<task>`): only what a test set with [`FakePms::set_canned_for`].
        return match canned.get(&format!("{} {}", request.method, request.path)) {
            Some(response) => Route::Canned(response.clone()),
            None => Route::NotFound,
        };
    }
    match request.path.as_str() {
        "/identity" => Route::Identity,
        "/" => Route::Root,
        PLURAL_WS_PATH if config.plural_ws => Route::WebSocket,
        SINGULAR_WS_PATH if config.singular_ws => Route::WebSocket,
        // A WebSocket path that is switched off.
        PLURAL_WS_PATH | SINGULAR_WS_PATH => Route::NotFound,
        SSE_PATH if config.eventsource => Route::EventSource,
        // The photo transcoder serves one image per source path (`url`): see [`FakePms::set_photo`].
        PHOTO_PATH => match canned.get(&photo_key(request.query_param("url").unwrap_or_default())) {
            Some(response) => Route::Photo(response.clone()),
            None => Route::NotFound,
        },
        path => match canned.get(path) {
            Some(response) => Route::Canned(response.clone()),
            None => Route::NotFound,
        },
    }
}

/// Reads until CRLFCRLF; returns the head (without the blank line) and any bytes read past it.
pub async fn read_head(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let read = async {
        loop {
            if let Some(end) = find_subslice(&buf, b"\r\n\r\n") {
                let leftover = buf[end + 4..].to_vec();
                buf.truncate(end);
                return Some(leftover);
            }
            if buf.len() > MAX_HEAD {
                return None;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let leftover = tokio::time::timeout(HEAD_TIMEOUT, read).await.ok().flatten();
    match leftover {
        Some(leftover) => Some((String::from_utf8_lossy(&buf).into_owned(), leftover)),
        None if buf.len() > MAX_HEAD => {
            respond(stream, 431, "text/html", b"").await;
            None
        }
        None => None,
    }
}

fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn parse_head(head: &str) -> Option<RecordedRequest> {
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?;
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() || target.is_empty() {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let (raw_path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let query = raw_query
        .map(|q| {
            q.split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k, true), percent_decode(v, true))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(RecordedRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        path: percent_decode(raw_path, false),
        query,
        headers,
        status: 0,
        at: Instant::now(),
    })
}

/// Decodes `%XX` (invalid escapes are kept as they are) and, in a query, `+` as a space.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes a complete response with `Connection: close`, then closes the connection gracefully.
pub async fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) {
    respond_with(stream, status, content_type, "", body).await;
}

/// [`respond`] with `extra` header lines (each ending in CRLF) after the standard ones.
pub async fn respond_with(stream: &mut TcpStream, status: u16, content_type: &str, extra: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nX-Plex-Protocol: 1.0\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\n{extra}\r\n",
        reason(status),
        body.len()
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    // FIN first, then read (and discard) until the client closes, bounded: closing with unread input would
    // send a RST that can destroy the response before the client read it.
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes to JSON")
}

/// `/identity` exactly as PMS lays it out.
fn identity_json(config: &FakePmsConfig) -> String {
    format!(
        r#"{{"MediaContainer":{{"size":0,"claimed":true,"machineIdentifier":{},"version":{}}}}}"#,
        json_str(&config.machine_identifier),
        json_str(&config.version)
    )
}

/// `/` (the root), with the fields the bridge may use and a few it must ignore.
pub fn root_json(config: &FakePmsConfig) -> String {
    format!(
        concat!(
            r#"{{"MediaContainer":{{"size":2,"allowCameraUpload":false,"allowChannelAccess":true,"#,
            r#""allowSharing":true,"allowSync":false,"backgroundProcessing":true,"claimed":true,"#,
            r#""friendlyName":{},"machineIdentifier":{},"myPlex":true,"myPlexSigninState":"ok","#,
            r#""platform":"Linux","platformVersion":"6.1.0","transcoderActiveVideoSessions":0,"#,
            r#""updatedAt":1732000000,"version":{},"#,
            r#""Directory":[{{"count":1,"key":"activities","title":"activities"}},"#,
            r#"{{"count":1,"key":"library","title":"library"}}]}}}}"#
        ),
        json_str(&config.friendly_name),
        json_str(&config.machine_identifier),
        json_str(&config.version)
    )
}
