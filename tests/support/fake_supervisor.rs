//! A fake Home Assistant Supervisor on a free loopback port: `GET /services/mqtt` as the real one answers it
//! (checked against its source: `api/middleware/security.py`, `api/services.py`, `api/utils.py`,
//! `services/modules/mqtt.py`; and the developer docs' Supervisor endpoints and examples):
//!
//! - no `Authorization` header: 401, aiohttp's plain `401: Unauthorized`;
//! - a token it did not issue: 403, aiohttp's plain `403: Forbidden` (the security middleware refuses it before
//!   the services API sees the request);
//! - an add-on without `mqtt:need`/`mqtt:want`: 403 `{"result":"error","message":"No access to mqtt service!"}`;
//! - no broker add-on registered: 400 `{"result":"error","message":"Service not enabled"}`;
//! - otherwise 200 `{"result":"ok","data":{"addon":…,"host":…,"port":1883,"ssl":false,"username":…,
//!   "password":…,"protocol":"3.1.1"}}`.
//!
//! Every request is recorded; the token it accepts is [`SUPERVISOR_TOKEN`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::fake_pms::{accept_each, parse_head, read_head, respond_with, RecordedRequest};

/// The token the fake issued to "the add-on".
pub const SUPERVISOR_TOKEN: &str = "fake-supervisor-token-0123";

/// The MQTT service the Mosquitto add-on registers, pointing at a broker on loopback.
pub fn mosquitto_service(port: u16, username: &str, password: &str) -> Value {
    json!({
        "addon": "core_mosquitto", "host": "127.0.0.1", "port": port, "ssl": false,
        "username": username, "password": password, "protocol": "3.1.1"
    })
}

struct State {
    /// The service's data; `None`: no add-on provides one.
    service: Option<Value>,
    /// The add-on declares `mqtt:need`.
    granted: bool,
    requests: Vec<RecordedRequest>,
}

/// The running fake; stops on drop.
pub struct FakeSupervisor {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeSupervisor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeSupervisor {
    /// A Supervisor whose MQTT service is `service` (`None`: no broker add-on installed).
    pub async fn start(service: Option<Value>) -> FakeSupervisor {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind the fake Supervisor");
        let addr = listener.local_addr().expect("fake Supervisor address");
        let state = Arc::new(Mutex::new(State { service, granted: true, requests: Vec::new() }));
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        FakeSupervisor { addr, state, task }
    }

    /// The base URL, for `PLEX_MQTT_BRIDGE_SUPERVISOR_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake Supervisor lock")
    }

    /// Whether the add-on may read the MQTT service (its config.yaml declares `mqtt:need`).
    pub fn set_granted(&self, granted: bool) {
        self.state().granted = granted;
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>) {
    accept_each(listener, |stream| drop(tokio::spawn(serve(stream, state.clone())))).await
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let Some((head, _)) = read_head(&mut stream).await else { return };
    let Some(mut request) = parse_head(&head) else {
        respond_with(&mut stream, 400, "text/plain", "", b"400: Bad Request").await;
        return;
    };
    let (status, content_type, body) = answer(&request, &state.lock().expect("fake Supervisor lock"));
    request.status = status;
    request.at = Instant::now();
    state.lock().expect("fake Supervisor lock").requests.push(request);
    respond_with(&mut stream, status, content_type, "", body.as_bytes()).await;
}

fn answer(request: &RecordedRequest, state: &State) -> (u16, &'static str, String) {
    const JSON: &str = "application/json; charset=utf-8";
    let error = |message: &str| json!({"result": "error", "message": message}).to_string();
    match request.header("authorization") {
        None => return (401, "text/plain", "401: Unauthorized".into()),
        Some(value) if value != format!("Bearer {SUPERVISOR_TOKEN}") => {
            return (403, "text/plain", "403: Forbidden".into())
        }
        Some(_) => {}
    }
    if (request.method.as_str(), request.path.as_str()) != ("GET", "/services/mqtt") {
        return (404, "text/plain", "404: Not Found".into());
    }
    if !state.granted {
        return (403, JSON, error("No access to mqtt service!"));
    }
    match &state.service {
        None => (400, JSON, error("Service not enabled")),
        Some(data) => (200, JSON, json!({"result": "ok", "data": data}).to_string()),
    }
}
