//! A fake Plex Media Server on 127.0.0.1: raw HTTP/1.1 on a `TcpListener` (so the bytes on the wire are under
//! the test's control), the notification WebSocket, and a record of every request.
//!
//! Every plain HTTP response carries a correct `Content-Length` and `Connection: close`, and the connection is
//! closed after it. WebSocket connections stay open until the client goes, [`FakePms::drop_connections`] or
//! the server is dropped.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub const DEFAULT_TOKEN: &str = "fake-pms-token-0123456789";
pub const DEFAULT_MACHINE_IDENTIFIER: &str = "3f9c1b2a7d4e8f6a0b5c9d1e2f3a4b5c6d7e8f90";
pub const DEFAULT_FRIENDLY_NAME: &str = "Fake Plex";
pub const DEFAULT_VERSION: &str = "1.41.3.9314-a0bfb8370";

/// The WebSocket path every real client uses.
pub const PLURAL_WS_PATH: &str = "/:/websockets/notifications";
/// The WebSocket path Plex's API description names (real servers may answer 404).
pub const SINGULAR_WS_PATH: &str = "/:/websocket/notifications";
/// The EventSource (SSE) notification stream.
pub const SSE_PATH: &str = "/:/eventsource/notifications";

pub const UNAUTHORIZED_HTML: &str =
    "<html><head><title>Unauthorized</title></head><body><h1>401 Unauthorized</h1></body></html>";
pub const NOT_FOUND_HTML: &str =
    "<html><head><title>Not Found</title></head><body><h1>404 Not Found</h1></body></html>";
pub const BAD_REQUEST_HTML: &str =
    "<html><head><title>Bad Request</title></head><body><h1>400 Bad Request</h1></body></html>";

/// Largest request head accepted (request line + headers).
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server drains the socket after responding before it closes it (avoids a RST that could
/// destroy the response before the client read it).
const LINGER: Duration = Duration::from_millis(500);

/// What the fake server is; set before [`FakePms::start`]. `token` can change later with
/// [`FakePms::set_token`].
#[derive(Clone, Debug)]
pub struct FakePmsConfig {
    pub token: String,
    pub machine_identifier: String,
    pub friendly_name: String,
    pub version: String,
    /// Serve `/:/websockets/notifications` (default true).
    pub plural_ws: bool,
    /// Serve `/:/websocket/notifications` (default false, as many real servers).
    pub singular_ws: bool,
    /// The port on 127.0.0.1; 0 (default) picks a free one. Set it to an old server's port to simulate a PMS
    /// restart: stop the old one with [`FakePms::shutdown`], then start a new one.
    pub port: u16,
    /// Serve `/:/eventsource/notifications` (default true).
    pub eventsource: bool,
    /// How often the EventSource stream sends `event: ping` (PMS: about 10 s; tests use less).
    pub sse_ping_interval: Duration,
}

impl Default for FakePmsConfig {
    fn default() -> Self {
        FakePmsConfig {
            token: DEFAULT_TOKEN.to_owned(),
            machine_identifier: DEFAULT_MACHINE_IDENTIFIER.to_owned(),
            friendly_name: DEFAULT_FRIENDLY_NAME.to_owned(),
            version: DEFAULT_VERSION.to_owned(),
            plural_ws: true,
            singular_ws: false,
            port: 0,
            eventsource: true,
            sse_ping_interval: Duration::from_millis(100),
        }
    }
}

/// One HTTP request the server parsed (WebSocket upgrades included).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target as sent (path and query, still percent-encoded).
    pub target: String,
    /// The percent-decoded path, without the query.
    pub path: String,
    /// Query pairs in order, percent-decoded (`+` is a space).
    pub query: Vec<(String, String)>,
    /// Header (lower-case name, value) pairs in order.
    pub headers: Vec<(String, String)>,
    /// The status the fake answered (101 for an accepted WebSocket upgrade).
    pub status: u16,
    /// When the request head was complete.
    pub at: Instant,
}

impl RecordedRequest {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The first query parameter with this name (exact).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The token the request carried (header first, then query).
    pub fn token(&self) -> Option<&str> {
        self.header("x-plex-token").or_else(|| self.query_param("X-Plex-Token"))
    }
}

/// One accepted WebSocket connection.
#[derive(Clone, Debug)]
pub struct WsConnectionInfo {
    /// 1, 2, … in the order of acceptance.
    pub id: u64,
    /// The path it was upgraded on.
    pub path: String,
    /// The `filters` query value (None if absent, `Some("")` if empty).
    pub filters: Option<String>,
    pub opened_at: Instant,
}

/// A response for a path the fake does not implement itself (see [`FakePms::set_canned`]).
#[derive(Clone, Debug)]
pub struct CannedResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Answer 401 without the right token, like the real endpoints.
    pub needs_token: bool,
    /// Wait this long before answering (a slow or hanging server).
    pub delay: Duration,
}

impl CannedResponse {
    /// A 200 `application/json` response that needs the token, as PMS's REST endpoints.
    pub fn json(body: impl Into<String>) -> CannedResponse {
        CannedResponse {
            status: 200,
            content_type: "application/json".into(),
            body: body.into().into_bytes(),
            needs_token: true,
            delay: Duration::ZERO,
        }
    }
}

/// What a connection has become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Http,
    WebSocket,
    EventSource,
}

struct Connection {
    tx: mpsc::UnboundedSender<Command>,
    kind: Kind,
}

/// Frames written with one flush at most.
const BURST_FRAMES: usize = 64;

enum Command {
    Text(String),
    Binary(Vec<u8>),
    /// Raw bytes for an EventSource body.
    Sse(Vec<u8>),
    /// Close the TCP socket without a Close frame.
    Drop,
    Stall(bool),
}

struct Shared {
    config: Mutex<FakePmsConfig>,
    canned: Mutex<HashMap<String, CannedResponse>>,
    /// Paths answered with `302 Found` and this `Location`, before any other route.
    redirects: Mutex<HashMap<String, String>>,
    requests: Mutex<Vec<RecordedRequest>>,
    requests_seen: watch::Sender<usize>,
    /// Every connection being served, by id; `websocket` once upgraded.
    connections: Mutex<HashMap<u64, Connection>>,
    ws_infos: Mutex<Vec<WsConnectionInfo>>,
    ws_open: watch::Sender<usize>,
    ws_total: watch::Sender<usize>,
    sse_infos: Mutex<Vec<WsConnectionInfo>>,
    sse_open: watch::Sender<usize>,
    pings: AtomicUsize,
    closes: AtomicUsize,
    next_id: AtomicU64,
    stall_new: watch::Sender<bool>,
    tasks: Mutex<Vec<AbortHandle>>,
    /// Set by shutdown: tasks spawned afterwards are aborted at once.
    closed: AtomicBool,
    /// Tokens accepted besides `config.token` (e.g. Plex JWTs the fake plex.tv issued).
    extra_tokens: Mutex<Vec<String>>,
}

impl Shared {
    fn track(&self, handle: AbortHandle) {
        let mut tasks = self.tasks.lock().expect("fake pms tasks lock");
        if self.closed.load(Ordering::SeqCst) {
            handle.abort();
            return;
        }
        tasks.retain(|h| !h.is_finished());
        tasks.push(handle);
    }

    fn record(&self, request: RecordedRequest) {
        self.requests.lock().expect("fake pms requests lock").push(request);
        self.requests_seen.send_modify(|n| *n += 1);
    }

    /// Sends a command to every WebSocket connection (and, unless `websocket_only`, to connections held by
    /// `stall_new_connections` too).
    /// Sends a command to the connections of `kind` (every connection when `None`).
    fn send_all(&self, kind: Option<Kind>, make: impl Fn() -> Command) -> usize {
        let connections = self.connections.lock().expect("fake pms connections lock");
        connections.values().filter(|c| kind.is_none_or(|k| c.kind == k)).filter(|c| c.tx.send(make()).is_ok()).count()
    }
}

/// Aborts the accept loop and every connection task when the last [`FakePms`] handle goes.
struct ShutdownGuard {
    shared: Arc<Shared>,
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

impl Shared {
    fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for handle in self.tasks.lock().expect("fake pms tasks lock").drain(..) {
            handle.abort();
        }
        self.connections.lock().expect("fake pms connections lock").clear();
    }
}

/// A running fake PMS. Clones are handles to the same server; it stops when the last one is dropped.
#[derive(Clone)]
pub struct FakePms {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _guard: Arc<ShutdownGuard>,
}

impl FakePms {
    /// Starts a server with [`FakePmsConfig::default`] on 127.0.0.1:0.
    pub async fn start_default() -> FakePms {
        Self::start(FakePmsConfig::default()).await
    }

    /// Starts a server on 127.0.0.1:0. Needs a tokio runtime.
    pub async fn start(config: FakePmsConfig) -> FakePms {
        let listener = bind(config.port).await;
        let addr = listener.local_addr().expect("local_addr of the fake PMS listener");
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            canned: Mutex::new(HashMap::new()),
            redirects: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            requests_seen: watch::channel(0).0,
            connections: Mutex::new(HashMap::new()),
            ws_infos: Mutex::new(Vec::new()),
            ws_open: watch::channel(0).0,
            ws_total: watch::channel(0).0,
            sse_infos: Mutex::new(Vec::new()),
            sse_open: watch::channel(0).0,
            pings: AtomicUsize::new(0),
            closes: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            stall_new: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            extra_tokens: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        shared.track(accept.abort_handle());
        FakePms { _guard: Arc::new(ShutdownGuard { shared: shared.clone() }), shared, addr }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The current config (with the current token).
    pub fn config(&self) -> FakePmsConfig {
        self.shared.config.lock().expect("fake pms config lock").clone()
    }

    /// The token the server accepts from now on (open connections are not affected).
    pub fn set_token(&self, token: &str) {
        self.shared.config.lock().expect("fake pms config lock").token = token.to_owned();
    }

    /// Accepts `token` too from now on (besides the configured one).
    pub fn also_accept(&self, token: &str) {
        self.shared.extra_tokens.lock().expect("fake pms tokens lock").push(token.to_owned());
    }

    /// Accepts only the configured token again.
    pub fn forget_extra_tokens(&self) {
        self.shared.extra_tokens.lock().expect("fake pms tokens lock").clear();
    }

    /// A function that makes the server accept a token (for the fake plex.tv's issue hook).
    pub fn token_acceptor(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let shared = self.shared.clone();
        move |token: &str| shared.extra_tokens.lock().expect("fake pms tokens lock").push(token.to_owned())
    }

    /// The token the server accepts now.
    pub fn token(&self) -> String {
        self.config().token
    }

    /// Turns the WebSocket paths on or off for new requests (off: 404).
    pub fn set_ws_paths(&self, plural: bool, singular: bool) {
        let mut config = self.shared.config.lock().expect("fake pms config lock");
        config.plural_ws = plural;
        config.singular_ws = singular;
    }

    /// Like [`FakePms::set_canned`], for another method than GET (`"POST"`).
    pub fn set_canned_for(&self, method: &str, path: &str, response: CannedResponse) {
        self.shared.canned.lock().expect("fake pms canned lock").insert(format!("{method} {path}"), response);
    }

    /// Serves `response` on `path` (exact, decoded, any query) for requests with method GET. For endpoints
    /// the fake does not implement itself; the built-in routes take precedence.
    pub fn set_canned(&self, path: &str, response: CannedResponse) {
        self.shared.canned.lock().expect("fake pms canned lock").insert(path.to_owned(), response);
    }

    /// Serves `jpeg` from the photo transcoder for the source path `thumb` (what `/status/sessions` lists as a
    /// `thumb`), with the token required like every PMS endpoint.
    pub fn set_photo(&self, thumb: &str, jpeg: &[u8]) {
        let response = CannedResponse {
            status: 200,
            content_type: "image/jpeg".into(),
            body: jpeg.to_vec(),
            needs_token: true,
            delay: Duration::ZERO,
        };
        self.shared.canned.lock().expect("fake pms canned lock").insert(photo_key(thumb), response);
    }

    /// Answers every request on `path` (exact, decoded, any query or method) with `302 Found` and `Location:
    /// location`, before any built-in route: a proxy, a captive portal or a hostile device at the server's
    /// address. [`FakePms::clear_redirect`] serves the path normally again.
    pub fn set_redirect(&self, path: &str, location: &str) {
        self.shared.redirects.lock().expect("fake pms redirects lock").insert(path.to_owned(), location.to_owned());
    }

    /// Stops redirecting `path`.
    pub fn clear_redirect(&self, path: &str) {
        self.shared.redirects.lock().expect("fake pms redirects lock").remove(path);
    }

    /// Queues a text frame to every open WebSocket connection; returns how many it was queued to.
    /// Frames and [`FakePms::drop_connections`] reach each connection in call order.
    pub fn push_text(&self, text: &str) -> usize {
        self.shared.send_all(Some(Kind::WebSocket), || Command::Text(text.to_owned()))
    }

    /// Queues raw bytes (complete `event:`/`data:` blocks, or any fragment) to every open EventSource stream;
    /// returns how many it was queued to. Each call is written (and flushed) as its own chunk.
    pub fn push_sse(&self, bytes: &[u8]) -> usize {
        self.shared.send_all(Some(Kind::EventSource), || Command::Sse(bytes.to_vec()))
    }

    /// EventSource streams open now.
    pub fn sse_connection_count(&self) -> usize {
        *self.shared.sse_open.borrow()
    }

    /// Waits until exactly `n` EventSource streams are open; false on timeout.
    pub async fn wait_for_sse_connection_count(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.sse_open.subscribe();
        let wait = async move { rx.wait_for(|v| *v == n).await.is_ok() };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// Every accepted EventSource stream, in order (path and `filters` as for WebSockets).
    pub fn sse_connections(&self) -> Vec<WsConnectionInfo> {
        self.shared.sse_infos.lock().expect("fake pms sse_infos lock").clone()
    }

    /// Turns the EventSource endpoint on or off (off: 404, like a server without it).
    pub fn set_eventsource(&self, enabled: bool) {
        self.shared.config.lock().expect("fake pms config lock").eventsource = enabled;
    }

    /// Queues a binary frame to every open WebSocket connection; returns how many it was queued to.
    pub fn push_binary(&self, bytes: &[u8]) -> usize {
        self.shared.send_all(Some(Kind::WebSocket), || Command::Binary(bytes.to_vec()))
    }

    /// Closes every open WebSocket connection (and every held one) abruptly: the TCP socket is closed, no
    /// Close frame is sent. Returns how many connections were told to close.
    pub fn drop_connections(&self) -> usize {
        self.shared.send_all(None, || Command::Drop)
    }

    /// `stall(true)`: every WebSocket connection open now stops reading and writing (so it answers no pings
    /// and delivers no pushes; pushes are queued) until `stall(false)` or it is dropped. Connections opened
    /// later are served normally (use [`FakePms::stall_new_connections`] for a server that hangs entirely).
    /// A stalled connection stays counted as open, since it does not read the client's close.
    pub fn stall(&self, stalled: bool) -> usize {
        self.shared.send_all(Some(Kind::WebSocket), || Command::Stall(stalled))
            + self.shared.send_all(Some(Kind::EventSource), || Command::Stall(stalled))
    }

    /// While true, new TCP connections are accepted but never read from or answered (a hung server; the
    /// client's connect timeout must fire). Setting it back to false serves the held connections.
    pub fn stall_new_connections(&self, stalled: bool) {
        self.shared.stall_new.send_replace(stalled);
    }

    /// WebSocket connections open now.
    pub fn ws_connection_count(&self) -> usize {
        *self.shared.ws_open.borrow()
    }

    /// WebSocket connections accepted since start.
    pub fn ws_connections_total(&self) -> usize {
        *self.shared.ws_total.borrow()
    }

    /// Waits until at least `n` WebSocket connections have been accepted in all; false on timeout.
    pub async fn wait_for_ws_connections_total(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.ws_total.subscribe();
        let wait = async move { rx.wait_for(|v| *v >= n).await.is_ok() };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// Waits until exactly `n` WebSocket connections are open; false on timeout.
    pub async fn wait_for_ws_connection_count(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.ws_open.subscribe();
        let wait = async move { rx.wait_for(|v| *v == n).await.is_ok() };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// Every accepted WebSocket connection, in order.
    pub fn ws_connections(&self) -> Vec<WsConnectionInfo> {
        self.shared.ws_infos.lock().expect("fake pms ws_infos lock").clone()
    }

    /// The `filters` value of the latest WebSocket connection: None if there was none yet, `Some(None)` if it
    /// had no `filters` parameter.
    pub fn last_filters(&self) -> Option<Option<String>> {
        self.ws_connections().last().map(|c| c.filters.clone())
    }

    /// Ping frames received from WebSocket clients (all connections).
    pub fn pings_received(&self) -> usize {
        self.shared.pings.load(Ordering::SeqCst)
    }

    /// Close frames received from WebSocket clients (a client that shuts down cleanly sends one).
    pub fn closes_received(&self) -> usize {
        self.shared.closes.load(Ordering::SeqCst)
    }

    /// Stops the server now, as a crash would: the listener closes (new connections are refused) and every
    /// connection is dropped without a Close frame. The recorded requests stay readable. Dropping the last
    /// handle does the same.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// Every request parsed so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().expect("fake pms requests lock").clone()
    }

    /// Requests on `path` (decoded, without query).
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }

    /// How many requests were made on `path` (decoded, without query).
    pub fn count_requests(&self, path: &str) -> usize {
        self.requests_to(path).len()
    }

    /// Waits until at least `n` requests on `path` were recorded; false on timeout.
    pub async fn wait_for_requests(&self, path: &str, n: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.requests_seen.subscribe();
        let wait = async {
            loop {
                if self.count_requests(path) >= n {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }
}

/// Binds 127.0.0.1:`port`; a fixed port is retried for up to 5 s (the previous server's sockets may still
/// be closing).
async fn bind(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(listener) => return listener,
            Err(_) if port != 0 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("bind the fake PMS to 127.0.0.1:{port}: {e}"),
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let task = tokio::spawn(serve_connection(stream, shared.clone()));
                shared.track(task.abort_handle());
            }
            // E.g. EMFILE: let it pass instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Removes a connection from the registry (and the open count) however its task ends, abort included.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
    counted_open: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut connections) = self.shared.connections.lock() {
            connections.remove(&self.id);
        }
        if self.counted_open {
            self.shared.ws_open.send_modify(|n| *n -= 1);
        }
    }
}

async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let (tx, mut rx) = mpsc::unbounded_channel();
    shared.connections.lock().expect("fake pms connections lock").insert(id, Connection { tx, kind: Kind::Http });
    let mut registration = Registration { shared: shared.clone(), id, counted_open: false };

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
    let (status, (content_type, body)) = match route {
        Route::Identity => (200, json(identity_json(&config))),
        Route::Root if authorized => (200, json(root_json(&config))),
        Route::Root => (401, html(UNAUTHORIZED_HTML)),
        Route::WebSocket if !authorized => (401, html(UNAUTHORIZED_HTML)),
        Route::WebSocket if request.header("x-plex-client-identifier").is_none() => (400, html(BAD_REQUEST_HTML)),
        Route::WebSocket => match websocket_key(&request) {
            Some(key) => {
                let mut recorded = request;
                recorded.status = 101;
                let filters = recorded.query_param("filters").map(str::to_owned);
                let path = recorded.path.clone();
                shared.record(recorded);
                // Register before answering: once the client has the 101 (and, say, reports itself connected),
                // pushes must reach this connection. They wait in the channel until the stream is set up.
                shared.ws_infos.lock().expect("fake pms ws_infos lock").push(WsConnectionInfo {
                    id,
                    path,
                    filters,
                    opened_at: Instant::now(),
                });
                if let Some(c) = shared.connections.lock().expect("fake pms connections lock").get_mut(&id) {
                    c.kind = Kind::WebSocket;
                }
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
                return;
            }
            // Not a valid upgrade request (no key, wrong version): PMS answers 400.
            None => (400, html(BAD_REQUEST_HTML)),
        },
        Route::EventSource if !authorized => (401, html(UNAUTHORIZED_HTML)),
        Route::EventSource if request.header("x-plex-client-identifier").is_none() => (400, html(BAD_REQUEST_HTML)),
        Route::EventSource => {
            let mut recorded = request;
            recorded.status = 200;
            let filters = recorded.query_param("filters").map(str::to_owned);
            let path = recorded.path.clone();
            shared.record(recorded);
            shared.sse_infos.lock().expect("fake pms sse_infos lock").push(WsConnectionInfo {
                id,
                path,
                filters,
                opened_at: Instant::now(),
            });
            if let Some(c) = shared.connections.lock().expect("fake pms connections lock").get_mut(&id) {
                c.kind = Kind::EventSource;
            }
            shared.sse_open.send_modify(|n| *n += 1);
            let _open = OpenCount(&shared.sse_open);
            serve_eventsource(stream, rx, config.sse_ping_interval).await;
            drop(registration);
            return;
        }
        Route::Canned(canned) if canned.needs_token && !authorized => (401, html(UNAUTHORIZED_HTML)),
        Route::Canned(canned) => {
            if !canned.delay.is_zero() {
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
}

enum Route {
    Identity,
    Root,
    WebSocket,
    EventSource,
    Canned(CannedResponse),
    NotFound,
}

/// PMS's photo transcoder (`/photo/:/transcode?width=…&height=…&url=<server path>`).
pub const PHOTO_PATH: &str = "/photo/:/transcode";

fn photo_key(source: &str) -> String {
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
            Some(response) => Route::Canned(response.clone()),
            None => Route::NotFound,
        },
        path => match canned.get(path) {
            Some(response) => Route::Canned(response.clone()),
            None => Route::NotFound,
        },
    }
}

fn websocket_key(request: &RecordedRequest) -> Option<String> {
    let upgrade = request.header("upgrade")?;
    if !upgrade.eq_ignore_ascii_case("websocket") || request.header("sec-websocket-version") != Some("13") {
        return None;
    }
    request.header("sec-websocket-key").map(str::to_owned)
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
