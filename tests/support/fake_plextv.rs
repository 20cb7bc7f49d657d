//! A fake plex.tv on a free loopback port: PINs, PIN polling, resources, device key registration, nonces, the
//! JWT exchange and its signing keys — speaking the JSON docs/plex-protocol.md describes.
//!
//! It **verifies** what it receives, independently of the bridge's own JWT code (its own parsing, `ring` for
//! Ed25519): every client JWT (a PIN poll's `deviceJWT`, the exchange's `jwt`) must carry an EdDSA signature by
//! the registered key named by its `kid`, an issued, unused nonce not older than a minute, `aud` = `plex.tv`,
//! `iss` = the client identifier the key was registered with (and the request's `X-Plex-Client-Identifier`),
//! and an `exp` in the future. Anything else is refused (401) and recorded in [`FakePlexTv::rejections`].
//! Plex JWTs it issues are EdDSA-signed by its own key, listed at `/api/v2/auth/keys`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::fake_pms::{accept_each, parse_head, read_head, respond_with, RecordedRequest};

/// The legacy account token the fake hands out for PINs without a key, and accepts for resources.
pub const ACCOUNT_TOKEN: &str = "fake-account-token-0123";
/// How long a nonce may be used after it was issued.
const NONCE_FRESH: Duration = Duration::from_secs(60);
/// The fake's signing key id.
const PLEXTV_KID: &str = "fake-plextv-key-1";

struct PinState {
    client_identifier: String,
    jwk: Option<Value>,
    approved: bool,
    expires: Instant,
}

struct Device {
    client_identifier: String,
    x: Vec<u8>,
}

type IssueHook = Box<dyn Fn(&str) + Send + Sync>;

struct State {
    pins: HashMap<u64, PinState>,
    next_pin: u64,
    /// Registered device keys by `kid`.
    devices: HashMap<String, Device>,
    /// Nonces issued and not used yet, with when.
    nonces: HashMap<String, Instant>,
    pin_lifetime: Duration,
    jwt_lifetime: Duration,
    exchange_failure: Option<u16>,
    resources: Value,
    rejections: Vec<String>,
    issued: Vec<String>,
    exchanges: usize,
    on_issue: Option<IssueHook>,
    requests: Vec<RecordedRequest>,
}

/// The running fake; stops on drop.
pub struct FakePlexTv {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    key: Arc<Ed25519KeyPair>,
    task: JoinHandle<()>,
}

impl Drop for FakePlexTv {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakePlexTv {
    pub async fn start() -> FakePlexTv {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind the fake plex.tv");
        let addr = listener.local_addr().expect("fake plex.tv address");
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("fake plex.tv key");
        let key = Arc::new(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("fake plex.tv key pair"));
        let state = Arc::new(Mutex::new(State {
            pins: HashMap::new(),
            next_pin: 1000,
            devices: HashMap::new(),
            nonces: HashMap::new(),
            pin_lifetime: Duration::from_secs(1800),
            jwt_lifetime: Duration::from_secs(7 * 24 * 3600),
            exchange_failure: None,
            resources: json!([]),
            rejections: Vec::new(),
            issued: Vec::new(),
            exchanges: 0,
            on_issue: None,
            requests: Vec::new(),
        }));
        let task = tokio::spawn(accept_loop(listener, state.clone(), key.clone()));
        FakePlexTv { addr, state, key, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake plex.tv lock")
    }

    /// PINs created from now on expire after this.
    pub fn set_pin_lifetime(&self, lifetime: Duration) {
        self.state().pin_lifetime = lifetime;
    }

    /// Plex JWTs issued from now on live this long.
    pub fn set_jwt_lifetime(&self, lifetime: Duration) {
        self.state().jwt_lifetime = lifetime;
    }

    /// The exchange (`POST /api/v2/auth/token`) answers this status (None: works).
    pub fn fail_exchange(&self, status: Option<u16>) {
        self.state().exchange_failure = status;
    }

    /// What `/api/v2/resources` lists.
    pub fn set_resources(&self, resources: Value) {
        self.state().resources = resources;
    }

    /// Called with every Plex JWT issued (e.g. to make the fake PMS accept it).
    pub fn on_issue(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        self.state().on_issue = Some(Box::new(hook));
    }

    /// The user approves every PIN created so far (as if they typed the code at plex.tv/link).
    pub fn approve_pins(&self) -> usize {
        let mut state = self.state();
        state.pins.values_mut().for_each(|p| p.approved = true);
        state.pins.len()
    }

    /// The codes of the PINs created so far.
    pub fn pin_count(&self) -> usize {
        self.state().pins.len()
    }

    /// Why requests were refused (empty when everything the bridge sent verified).
    pub fn rejections(&self) -> Vec<String> {
        self.state().rejections.clone()
    }

    /// Plex JWTs issued so far, in order.
    pub fn issued(&self) -> Vec<String> {
        self.state().issued.clone()
    }

    /// Successful and refused exchanges so far.
    pub fn exchanges(&self) -> usize {
        self.state().exchanges
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// A Plex JWT for a device registered now (client identifier and key given), valid for `lifetime`: what a
    /// test starts the bridge with, as if `login` had run.
    pub fn issue_for(&self, client_identifier: &str, kid: &str, x: &str, lifetime: Duration) -> String {
        let x = URL_SAFE_NO_PAD.decode(x).expect("base64url public key");
        let mut state = self.state();
        state.devices.insert(kid.to_owned(), Device { client_identifier: client_identifier.to_owned(), x });
        let token = plex_jwt(&self.key, kid, lifetime);
        state.issued.push(token.clone());
        if let Some(hook) = &state.on_issue {
            hook(&token);
        }
        token
    }

    /// The fake's public key as a JWK.
    pub fn public_jwk(&self) -> Value {
        public_jwk(&self.key)
    }
}

fn public_jwk(key: &Ed25519KeyPair) -> Value {
    json!({"kty":"OKP","crv":"Ed25519","x":URL_SAFE_NO_PAD.encode(key.public_key().as_ref()),"use":"sig","alg":"EdDSA","kid":PLEXTV_KID})
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// A Plex JWT as plex.tv issues one: EdDSA, `iss: plex.tv`, `exp`, `iat`, `thumbprint` of the device key.
fn plex_jwt(key: &Ed25519KeyPair, device_kid: &str, lifetime: Duration) -> String {
    let now = now_secs();
    let mut nonce = [0u8; 8];
    SystemRandom::new().fill(&mut nonce).expect("random");
    let header = json!({"alg":"EdDSA","typ":"JWT","kid":PLEXTV_KID});
    let claims = json!({"iss":"plex.tv","aud":"plex.tv","iat":now,"exp":now + lifetime.as_secs(),
        "thumbprint":device_kid,"jti":URL_SAFE_NO_PAD.encode(nonce)});
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>, key: Arc<Ed25519KeyPair>) {
    accept_each(listener, |stream| drop(tokio::spawn(serve(stream, state.clone(), key.clone())))).await
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>, key: Arc<Ed25519KeyPair>) {
    let Some((head, mut body)) = read_head(&mut stream).await else { return };
    let Some(request) = parse_head(&head) else { return };
    let length: usize = request.header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0).min(1 << 20);
    let mut chunk = [0u8; 4096];
    while body.len() < length {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => body.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    // The bridge sends a JSON body with every POST and none with a GET; anything else is refused.
    let body: Result<Value, String> = if body.is_empty() && request.method != "POST" {
        Ok(Value::Null)
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| format!("{} {}: the body is not JSON ({e})", request.method, request.path))
    };
    let (status, answer) = {
        let mut state = state.lock().expect("fake plex.tv lock");
        let mut recorded = request.clone();
        let answer = match &body {
            Ok(body) => handle(&mut state, &key, &request, body),
            Err(why) => {
                state.rejections.push(why.clone());
                (400, json!({"error": "the body is not JSON"}))
            }
        };
        recorded.status = answer.0;
        state.requests.push(recorded);
        answer
    };
    respond_with(&mut stream, status, "application/json", "", answer.to_string().as_bytes()).await;
}

fn handle(state: &mut State, key: &Ed25519KeyPair, request: &RecordedRequest, body: &Value) -> (u16, Value) {
    let client = request.header("x-plex-client-identifier").unwrap_or("").to_owned();
    if client.is_empty() || request.header("accept") != Some("application/json") {
        state.rejections.push(format!("{} {} without X-Plex-Client-Identifier/Accept", request.method, request.path));
        return (400, json!({"error": "client headers missing"}));
    }
    let path = request.path.as_str();
    match (request.method.as_str(), path) {
        ("POST", "/api/v2/pins") => {
            let id = state.next_pin;
            state.next_pin += 1;
            let jwk = body.get("jwk").cloned();
            let lifetime = state.pin_lifetime;
            state.pins.insert(
                id,
                PinState {
                    client_identifier: client.clone(),
                    jwk,
                    approved: false,
                    expires: Instant::now() + lifetime,
                },
            );
            let code = if body["strong"] == true { format!("STRONGCODE{id}") } else { format!("C{:03}", id % 1000) };
            (
                201,
                json!({"id": id, "code": code, "clientIdentifier": client, "expiresIn": lifetime.as_secs(), "authToken": null}),
            )
        }
        ("GET", p) if p.starts_with("/api/v2/pins/") => {
            let Some(id) = p.trim_start_matches("/api/v2/pins/").parse::<u64>().ok() else {
                return (404, json!({}));
            };
            let Some(pin) = state.pins.get(&id) else { return (404, json!({})) };
            if Instant::now() >= pin.expires {
                return (404, json!({"error": "pin expired"}));
            }
            let left = pin.expires.saturating_duration_since(Instant::now()).as_secs();
            let (approved, pin_client, jwk) = (pin.approved, pin.client_identifier.clone(), pin.jwk.clone());
            if pin_client != client {
                state.rejections.push("pin polled by another client identifier".into());
                return (401, json!({}));
            }
            let token = match &jwk {
                Some(jwk) => {
                    let Some(device_jwt) = request.query_param("deviceJWT") else {
                        state.rejections.push("pin with a jwk polled without deviceJWT".into());
                        return (401, json!({}));
                    };
                    let kid = jwk["kid"].as_str().unwrap_or("").to_owned();
                    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap_or("")).unwrap_or_default();
                    if let Err(why) = verify_client_jwt(state, device_jwt, &kid, &x, &client) {
                        state.rejections.push(format!("deviceJWT: {why}"));
                        return (401, json!({"error": why}));
                    }
                    if !approved {
                        None
                    } else {
                        state.devices.insert(kid.clone(), Device { client_identifier: client.clone(), x });
                        Some(issue(state, key, &kid))
                    }
                }
                None => approved.then(|| ACCOUNT_TOKEN.to_owned()),
            };
            (200, json!({"id": id, "code": "x", "expiresIn": left, "authToken": token}))
        }
        ("GET", "/api/v2/resources") => {
            if !token_valid(state, key, request.header("x-plex-token")) {
                state.rejections.push("resources without a valid token".into());
                return (401, json!({}));
            }
            (200, state.resources.clone())
        }
        ("POST", "/api/v2/auth/jwk") => {
            if !token_valid(state, key, request.header("x-plex-token")) {
                state.rejections.push("jwk registration without a valid token".into());
                return (401, json!({}));
            }
            let jwk = &body["jwk"];
            let (Some(kid), Some(x)) = (jwk["kid"].as_str(), jwk["x"].as_str()) else {
                state.rejections.push("jwk registration without kid/x".into());
                return (422, json!({}));
            };
            let x = URL_SAFE_NO_PAD.decode(x).unwrap_or_default();
            state.devices.insert(kid.to_owned(), Device { client_identifier: client, x });
            (204, json!({}))
        }
        ("GET", "/api/v2/auth/nonce") => {
            let mut bytes = [0u8; 16];
            SystemRandom::new().fill(&mut bytes).expect("random");
            let nonce = URL_SAFE_NO_PAD.encode(bytes);
            state.nonces.insert(nonce.clone(), Instant::now());
            (200, json!({"nonce": nonce}))
        }
        ("POST", "/api/v2/auth/token") => {
            state.exchanges += 1;
            if let Some(status) = state.exchange_failure {
                return (status, json!({"error": "unavailable"}));
            }
            let Some(jwt) = body["jwt"].as_str() else {
                state.rejections.push("exchange without jwt".into());
                return (400, json!({}));
            };
            let kid = match header_kid(jwt) {
                Some(kid) => kid,
                None => {
                    state.rejections.push("exchange: client JWT without kid".into());
                    return (401, json!({}));
                }
            };
            let Some(device) = state.devices.get(&kid) else {
                state.rejections.push("exchange: unknown kid".into());
                return (401, json!({}));
            };
            let (x, registered) = (device.x.clone(), device.client_identifier.clone());
            if registered != client {
                state.rejections.push("exchange: client identifier is not the key's".into());
                return (401, json!({}));
            }
            if let Err(why) = verify_client_jwt(state, jwt, &kid, &x, &client) {
                state.rejections.push(format!("exchange: {why}"));
                return (401, json!({"error": why}));
            }
            let token = issue(state, key, &kid);
            (200, json!({"auth_token": token}))
        }
        ("GET", "/api/v2/auth/keys") => (200, json!({"keys": [public_jwk(key)]})),
        _ => (404, json!({})),
    }
}

fn issue(state: &mut State, key: &Ed25519KeyPair, kid: &str) -> String {
    let token = plex_jwt(key, kid, state.jwt_lifetime);
    state.issued.push(token.clone());
    if let Some(hook) = &state.on_issue {
        hook(&token);
    }
    token
}

/// The account token, or a Plex JWT this fake issued that has not expired.
fn token_valid(state: &State, key: &Ed25519KeyPair, token: Option<&str>) -> bool {
    let Some(token) = token else { return false };
    if token == ACCOUNT_TOKEN {
        return true;
    }
    state.issued.iter().any(|t| t == token) && {
        let x = key.public_key().as_ref().to_vec();
        verify_signature(token, &x).is_ok()
            && parse_part(token, 1).and_then(|c| c["exp"].as_u64()).is_some_and(|exp| exp > now_secs())
    }
}

fn parse_part(jwt: &str, index: usize) -> Option<Value> {
    let part = jwt.split('.').nth(index)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

fn header_kid(jwt: &str) -> Option<String> {
    parse_part(jwt, 0)?["kid"].as_str().map(str::to_owned)
}

fn verify_signature(jwt: &str, public_key: &[u8]) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err("not a compact JWS".into());
    }
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).map_err(|_| "signature not base64url".to_owned())?;
    let signing_input = format!("{}.{}", parts[0], parts[1]);
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| "bad EdDSA signature".to_owned())
}

/// Every rule of a client JWT; uses up its nonce.
fn verify_client_jwt(state: &mut State, jwt: &str, kid: &str, x: &[u8], client: &str) -> Result<(), String> {
    let header = parse_part(jwt, 0).ok_or("header not JSON")?;
    let claims = parse_part(jwt, 1).ok_or("claims not JSON")?;
    if header["alg"] != "EdDSA" {
        return Err(format!("alg {} is not EdDSA", header["alg"]));
    }
    if header["kid"].as_str() != Some(kid) {
        return Err("kid does not name the registered key".into());
    }
    verify_signature(jwt, x)?;
    if claims["aud"] != "plex.tv" {
        return Err("aud is not plex.tv".into());
    }
    if claims["iss"].as_str() != Some(client) {
        return Err("iss is not the client identifier".into());
    }
    if claims["exp"].as_u64().is_none_or(|exp| exp <= now_secs()) {
        return Err("exp is not in the future".into());
    }
    let nonce = claims["nonce"].as_str().ok_or("no nonce")?;
    match state.nonces.remove(nonce) {
        Some(issued) if issued.elapsed() <= NONCE_FRESH => Ok(()),
        Some(_) => Err("nonce too old".into()),
        None => Err("nonce unknown or used before".into()),
    }
}
