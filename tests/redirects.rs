//! Redirects and the token (issue 16): a PMS address that answers with a redirect to another origin must never
//! make the bridge send its `X-Plex-Token` there. Each request kind the bridge makes (the identity look-up `/`,
//! the WebSocket upgrade on both path spellings, the EventSource request, the REST look-ups) is redirected to a
//! second listener on another port, whose request log must stay empty; the bridge keeps running, retries, and
//! `/healthz` names the refused redirect. Same-origin redirects are followed. Logs run at trace level and must
//! never show the token.

mod support;

use support::fake_pms::{root_json, CannedResponse, FakePmsConfig, PLURAL_WS_PATH, SINGULAR_WS_PATH, SSE_PATH};
use support::frames::{timeline, Play};
use support::http::wait_healthz;
use support::mosquitto::free_port;
use support::wait::SOON;
use support::{test_config, Bridge, FakePms, Mosquitto, Probe, TokenFile, Transport};

/// The fake PMS, a second listener standing for the attacker's host, and a bridge at trace level with its health
/// endpoint on.
struct Setup {
    _broker: Mosquitto,
    pms: FakePms,
    catcher: FakePms,
    token: String,
    _token_file: TokenFile,
    probe: Probe,
    http: u16,
    bridge: Bridge,
}

impl Setup {
    /// `prepare` sets the redirects (it gets the fake PMS and the catcher's URL) before the bridge starts with
    /// `transport`.
    async fn start(pms_config: FakePmsConfig, transport: Transport, prepare: impl FnOnce(&FakePms, &str)) -> Setup {
        let broker = Mosquitto::start();
        let pms = FakePms::start(pms_config).await;
        let catcher = FakePms::start_default().await;
        prepare(&pms, &catcher.url());
        let token = pms.token();
        let token_file = TokenFile::new(&token);
        let probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
        let http = free_port();
        let config = test_config(&broker.url(), &pms.url(), token_file.path())
            .transport(transport)
            .log_level("trace")
            .http(http);
        let bridge = Bridge::start(&config);
        Setup { _broker: broker, pms, catcher, token, _token_file: token_file, probe, http, bridge }
    }

    /// `/healthz` shows the server's connection problem as a refused redirect naming the catcher's origin; the
    /// bridge retried (at least three attempts on `path`) and still runs; nothing reached the catcher.
    async fn expect_refused_connection(&mut self, path: &str) {
        let origin = self.catcher.url();
        wait_healthz(self.http, SOON, "the refused redirect", |doc| {
            let problem = &doc["servers"]["test"]["problem"];
            problem["reason"] == "redirect_refused" && problem["error"].as_str().is_some_and(|e| e.contains(&origin))
        })
        .await;
        assert!(self.pms.wait_for_requests(path, 3, SOON).await, "the bridge retries: {:?}", self.pms.requests());
        assert!(self.bridge.is_running(), "the bridge keeps running:\n{}", self.bridge.logs());
        assert!(
            self.bridge.wait_for_log(&format!("redirect to {origin}, another origin"), SOON).await,
            "one clear log line names the target origin:\n{}",
            self.bridge.logs()
        );
        self.probe.expect_payload("plex/test/state", "disconnected", SOON).await;
        self.assert_nothing_leaked();
    }

    /// The catcher saw no request at all (so none carrying the token), and no log line holds the token.
    fn assert_nothing_leaked(&self) {
        let caught = self.catcher.requests();
        assert!(caught.iter().all(|r| r.token().is_none()), "the token reached the other origin: {caught:?}");
        assert!(caught.is_empty(), "nothing is sent to the other origin: {caught:?}");
        let logs = self.bridge.logs();
        assert!(!logs.contains(&self.token), "the token is in the log:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_redirect_to_another_origin_is_refused() {
    let mut s = Setup::start(FakePmsConfig::default(), Transport::Auto, |pms, catcher| {
        pms.set_redirect("/", &format!("{catcher}/harvest"));
    })
    .await;
    s.expect_refused_connection("/").await;
    assert_eq!(s.pms.ws_connections_total(), 0, "no session without an identity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_redirect_to_another_origin_is_refused_on_both_paths() {
    // The plural path redirects: refused, and `auto` does not take a refused redirect for "no WebSocket here".
    let mut s = Setup::start(FakePmsConfig::default(), Transport::Auto, |pms, catcher| {
        pms.set_redirect(PLURAL_WS_PATH, &format!("{catcher}{PLURAL_WS_PATH}"));
    })
    .await;
    s.expect_refused_connection(PLURAL_WS_PATH).await;
    assert!(s.pms.sse_connections().is_empty(), "no fallback to EventSource on a refused redirect");

    // The plural path answers 404 and the singular one redirects (a server that only has the documented path).
    let config = FakePmsConfig { plural_ws: false, singular_ws: true, ..FakePmsConfig::default() };
    let mut s = Setup::start(config, Transport::WebSocket, |pms, catcher| {
        pms.set_redirect(SINGULAR_WS_PATH, &format!("{catcher}/"));
    })
    .await;
    s.expect_refused_connection(SINGULAR_WS_PATH).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_redirect_to_another_origin_is_refused() {
    let mut s = Setup::start(FakePmsConfig::default(), Transport::EventSource, |pms, catcher| {
        pms.set_redirect(SSE_PATH, &format!("{catcher}{SSE_PATH}?filters=-log"));
    })
    .await;
    s.expect_refused_connection(SSE_PATH).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_look_up_redirects_to_another_origin_are_refused_and_the_session_goes_on() {
    let mut s = Setup::start(FakePmsConfig::default(), Transport::WebSocket, |pms, catcher| {
        for path in ["/status/sessions", "/activities", "/library/metadata/5"] {
            pms.set_redirect(path, &format!("{catcher}{path}"));
        }
    })
    .await;
    s.probe.expect_payload("plex/test/state", "connected", SOON).await;
    // A play (sessions look-up) and a new library item (metadata look-up); `/activities` is read on connect.
    s.pms.push_text(&Play::new("7").rating_key("5").without_player().frame());
    s.pms.push_text(&timeline(0, Some("created")));
    s.pms.push_text(&timeline(5, None));
    for path in ["/status/sessions", "/activities", "/library/metadata/5"] {
        assert!(s.pms.wait_for_requests(path, 1, SOON).await, "{path} was asked for");
    }
    // Without the look-ups the play still goes out (with what is known), and the item is announced.
    for topic in ["plex/test/events/playback", "plex/test/events/library"] {
        s.probe.expect_seen(SOON, topic, |m| m.topic == topic).await;
    }
    wait_healthz(s.http, SOON, "the refused redirect of a look-up", |doc| {
        doc["servers"]["test"]["rest_problem"]["reason"] == "redirect_refused"
    })
    .await;
    assert!(s.bridge.is_running());
    assert_eq!(s.pms.ws_connection_count(), 1, "the notification session is untouched");
    s.assert_nothing_leaked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_origin_redirects_are_followed() {
    let config = FakePmsConfig { singular_ws: true, ..FakePmsConfig::default() };
    let root = root_json(&config);
    let mut s = Setup::start(config, Transport::WebSocket, |pms, _| {
        pms.set_canned("/moved-root", CannedResponse::json(root));
        pms.set_redirect("/", "/moved-root");
        pms.set_redirect(PLURAL_WS_PATH, &format!("{}{SINGULAR_WS_PATH}?filters=-log", pms.url()));
    })
    .await;
    s.probe.expect_payload("plex/test/state", "connected", SOON).await;
    let upgraded = s.pms.ws_connections();
    assert_eq!(upgraded.last().map(|c| c.path.as_str()), Some(SINGULAR_WS_PATH), "{upgraded:?}");
    let moved = s.pms.requests_to("/moved-root");
    assert!(moved.iter().any(|r| r.token() == Some(s.token.as_str())), "the token went along within the origin");
    wait_healthz(s.http, SOON, "a healthy server", |doc| {
        doc["servers"]["test"]["state"] == "connected" && doc["servers"]["test"]["problem"].is_null()
    })
    .await;
    s.assert_nothing_leaked();
}
