//! A fake Plex Media Server on 127.0.0.1, the handle tests hold: its configuration, what it serves, what it was
//! sent, and the pushes and faults a test drives. The protocols are beside it: [`http`] (the listener, request
//! parsing, token checks, routing and the REST answers), [`websocket`] (the notification WebSocket) and
//! [`eventsource`] (the notification EventSource stream). Everything is raw bytes on a `TcpListener`, so the wire
//! is under the test's control, and every request is checked and recorded as received.
//!
//! Every plain HTTP response carries a correct `Content-Length` and `Connection: close`, and the connection is
//! closed after it. Notification streams stay open until the client goes, [`FakePms::drop_connections`] or
//! the server is dropped.

mod eventsource;
mod http;
mod websocket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

pub use http::{accept_each, parse_head, percent_decode, read_head, respond, respond_with, root_json, PHOTO_PATH};

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
    /// Bumped whenever a connection leaves the registry.
    connections_closed: watch::Sender<usize>,
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
    /// Requests refused because a real PMS would not have answered them as the bridge expects (see
    /// [`FakePms::rejections`]).
    rejections: Mutex<Vec<String>>,
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

    fn reject(&self, why: String) {
        self.rejections.lock().expect("fake pms rejections lock").push(why);
    }

    fn record(&self, request: RecordedRequest) {
        self.requests.lock().expect("fake pms requests lock").push(request);
        self.requests_seen.send_modify(|n| *n += 1);
    }

    /// Sends a command to the connections of `kind` (every connection when `None`).
    fn send_all(&self, kind: Option<Kind>, make: impl Fn() -> Command) -> usize {
        let connections = self.connections.lock().expect("fake pms connections lock");
        connections.values().filter(|c| kind.is_none_or(|k| c.kind == k)).filter(|c| c.tx.send(make()).is_ok()).count()
    }
}

/// Aborts the accept loop and every connection task when the last [`FakePms`] handle goes; then fails the test
/// if the server refused a request as malformed (see [`FakePms::rejections`]) that the test did not take.
struct ShutdownGuard {
    shared: Arc<Shared>,
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        self.shared.shutdown();
        let rejections = std::mem::take(&mut *self.shared.rejections.lock().unwrap_or_else(|e| e.into_inner()));
        if !rejections.is_empty() && !std::thread::panicking() {
            panic!("the fake PMS refused requests a real PMS would not answer as expected: {rejections:?}");
        }
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
        let listener = http::bind(config.port).await;
        let addr = listener.local_addr().expect("local_addr of the fake PMS listener");
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            canned: Mutex::new(HashMap::new()),
            redirects: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            requests_seen: watch::channel(0).0,
            connections: Mutex::new(HashMap::new()),
            connections_closed: watch::channel(0).0,
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
            rejections: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(http::accept_loop(listener, shared.clone()));
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
        self.shared.canned.lock().expect("fake pms canned lock").insert(http::photo_key(thumb), response);
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

    /// Waits until no plain HTTP connection is open (only notification streams are): the REST requests made so
    /// far have been answered and their connections closed. False on timeout.
    pub async fn wait_for_http_idle(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.connections_closed.subscribe();
        let wait = async {
            loop {
                let busy = {
                    let connections = self.shared.connections.lock().expect("fake pms connections lock");
                    connections.values().any(|c| c.kind == Kind::Http)
                };
                if !busy {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
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

    /// The requests refused because a real PMS would not answer them as the bridge expects (a REST request
    /// without `Accept: application/json` gets XML from PMS; here a 400). Any left when the last handle is
    /// dropped fail the test; a test that sends such a request on purpose takes them with
    /// [`FakePms::take_rejections`].
    pub fn rejections(&self) -> Vec<String> {
        self.shared.rejections.lock().expect("fake pms rejections lock").clone()
    }

    /// [`FakePms::rejections`], cleared.
    pub fn take_rejections(&self) -> Vec<String> {
        std::mem::take(&mut *self.shared.rejections.lock().expect("fake pms rejections lock"))
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

    /// Waits until at least `n` requests on `path` were recorded; false on timeout. A request is recorded once
    /// its answer is decided, so changing a canned response afterwards does not change that answer.
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
