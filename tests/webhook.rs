//! Plex-webhook-compatible messages (`webhook_compat`) end to end: the real bridge against the fake PMS and a real
//! Mosquitto. With the mode on, each playback transition (but `seek`) and each new library item is also published
//! on `plex/<server>/webhook` in the shape of Plex's webhook payload, in event order and never retained; with the
//! mode off (the default) nothing is published there.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::fake_pms::{CannedResponse, FakePmsConfig};
use support::fixture::Fixture;
use support::frames::{timeline, Play};
use support::wait::SOON;
use support::{retained, BridgeConfig, FakePms, Msg, Probe};

const WEBHOOK: &str = "plex/test/webhook";

/// `/status/sessions` with one episode playing: what the webhook fields are checked against.
fn session_body(state: &str) -> String {
    json!({"MediaContainer": {"size": 1, "Metadata": [{
        "sessionKey": "45", "ratingKey": "217468", "key": "/library/metadata/217468", "guid": "plex://episode/5d9c",
        "type": "episode", "title": "Pilot", "grandparentTitle": "Severance", "parentTitle": "Season 1",
        "index": 1, "parentIndex": 1, "year": 2022, "duration": 3_420_000, "viewOffset": 0,
        "thumb": "/library/metadata/217468/thumb/1700000000", "librarySectionID": "2", "librarySectionTitle": "TV Shows",
        "addedAt": 1_700_000_000, "updatedAt": "1700000500",
        "User": {"id": "1", "title": "alice", "thumb": "https://plex.tv/users/abc/avatar?c=1"},
        "Player": {"title": "Living Room TV", "product": "Plex for LG", "platform": "webOS",
                   "machineIdentifier": "player-45", "address": "192.168.1.20", "remotePublicAddress": "203.0.113.7",
                   "local": true, "state": state},
        "Session": {"id": "s45", "bandwidth": 8000, "location": "lan"},
        "Media": [{"Part": [{"file": "/tv/Severance/S01E01.mkv"}]}]
    }]}})
    .to_string()
}

fn empty_sessions(pms: &FakePms) {
    pms.set_canned("/status/sessions", CannedResponse::json(r#"{"MediaContainer":{"size":0}}"#));
}

/// Session 45 (the episode [`session_body`] lists) in `state` at `offset`.
fn pilot(state: &str, offset: u64) -> String {
    Play::new("45").rating_key("217468").state(state).at(offset).frame()
}

/// The bridge connected with `edit` applied to the test config, nothing playing at connect time (a session
/// listed then would be one that was playing before the bridge came, which gets no `play` by design).
async fn start(edit: impl FnOnce(BridgeConfig) -> BridgeConfig) -> Fixture {
    let f = Fixture::connected_with(
        FakePmsConfig::default(),
        |pms| {
            empty_sessions(pms);
            pms.set_canned("/activities", CannedResponse::json(r#"{"MediaContainer":{"size":0}}"#));
        },
        edit,
    )
    .await;
    // The answer to that first look-up is decided once it is recorded; what is served from now on is for the
    // test's session.
    assert!(f.pms.wait_for_requests("/status/sessions", 1, SOON).await, "the resync after connecting");
    f
}

async fn next_on(probe: &mut Probe, topic: &str) -> Value {
    probe.expect(SOON, topic, |m: &Msg| m.topic == topic).await.json()
}

/// One `playing` notification of session 45: its state, its offset and the derived events it yields on
/// `events/playback`.
type Step = (&'static str, u64, &'static [&'static str]);

/// Play, pause, resume and a seek (stopped at 601 000 ms).
const WITH_A_SEEK: &[Step] = &[
    ("playing", 0, &["play"]),
    ("paused", 1_000, &["pause"]),
    ("playing", 1_000, &["resume"]),
    ("playing", 600_000, &["seek"]),
];

/// Play, pause, resume and a jump past 90 %, which is a seek and the scrobble (stopped at 3 101 000 ms).
const TO_THE_END: &[Step] = &[
    ("playing", 0, &["play"]),
    ("paused", 1_000, &["pause"]),
    ("playing", 1_000, &["resume"]),
    ("playing", 3_100_000, &["seek", "scrobble"]),
];

/// Plays session 45 ([`session_body`]) through `steps`, then stops it at `stop_at`; waits for each derived event.
async fn play_through(f: &mut Fixture, steps: &[Step], stop_at: u64) {
    f.pms.set_canned("/status/sessions", CannedResponse::json(session_body("playing")));
    for (state, offset, events) in steps {
        f.pms.push_text(&pilot(state, *offset));
        for event in *events {
            let got = next_on(&mut f.probe, "plex/test/events/playback").await;
            assert_eq!(got["event_type"], *event, "{got}");
        }
    }
    empty_sessions(&f.pms);
    f.pms.push_text(&pilot("stopped", stop_at));
    assert_eq!(next_on(&mut f.probe, "plex/test/events/playback").await["event_type"], "stop");
}

/// The next webhook message of `event` (skipping others).
async fn webhook_message(probe: &mut Probe, event: &str) -> Value {
    probe.expect(SOON, event, |m: &Msg| m.topic == WEBHOOK && m.json()["event"] == event).await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_yields_webhook_shaped_play_pause_resume_stop_in_order() {
    let mut f = start(|c| c.plex(|p| p.webhook_compat = Some(true))).await;
    let server = f.pms.config();
    play_through(&mut f, WITH_A_SEEK, 601_000).await;
    // Each webhook message directly follows its event, so the stop's is at most a moment behind.
    webhook_message(&mut f.probe, "media.stop").await;

    let messages = f.probe.history_on(WEBHOOK);
    let events: Vec<Value> = messages.iter().map(|m| m.json()["event"].clone()).collect();
    assert_eq!(events, ["media.play", "media.pause", "media.resume", "media.stop"], "in order, no seek");
    for message in &messages {
        let payload = message.json();
        assert_eq!(payload["owner"], true, "{payload}");
        assert_eq!(
            payload["Account"],
            json!({"id": 1, "thumb": "https://plex.tv/users/abc/avatar?c=1", "title": "alice"})
        );
        assert_eq!(
            payload["Player"],
            json!({"local": true, "publicAddress": "203.0.113.7", "title": "Living Room TV", "uuid": "player-45"})
        );
        assert_eq!(payload["Server"], json!({"title": server.friendly_name, "uuid": server.machine_identifier}));
        let metadata = &payload["Metadata"];
        assert_eq!(metadata["title"], "Pilot");
        assert_eq!(metadata["grandparentTitle"], "Severance");
        assert_eq!(metadata["ratingKey"], "217468");
        assert_eq!(metadata["guid"], "plex://episode/5d9c");
        assert_eq!(metadata["librarySectionType"], "show");
        assert_eq!((metadata["index"].clone(), metadata["parentIndex"].clone()), (json!(1), json!(1)));
        assert_eq!(payload["user"], true, "the owner's (account 1) own playback: {payload}");
        assert_eq!(metadata["librarySectionID"], 2, "a number, as in webhooks");
        assert!(!message.text().contains("null"), "unknown fields are absent, not null: {payload}");
        assert!(!message.text().contains(&f.pms.token()), "never the token");
        assert!(!message.text().contains("S01E01.mkv"), "no file paths");
    }
    let offsets: Vec<Value> = messages.iter().map(|m| m.json()["Metadata"]["viewOffset"].clone()).collect();
    assert_eq!(offsets, [json!(0), json!(1_000), json!(1_000), json!(601_000)], "the position at each event");
    assert!(messages.iter().all(|m| !m.retain));
    let held = retained(f.broker.port(), WEBHOOK).await;
    assert!(held.is_empty(), "webhook messages are not retained: {held:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_published_on_the_webhook_topic_by_default() {
    let mut f = start(|c| c).await;
    play_through(&mut f, WITH_A_SEEK, 601_000).await;
    // A webhook message would have come right after its event; the stop event has arrived, so all of them would
    // have. A short bounded wait catches a late one anyway.
    f.probe.collect_for(Duration::from_millis(300)).await;
    assert!(f.probe.history_on(WEBHOOK).is_empty(), "{:?}", f.probe.history_on(WEBHOOK));
    assert_eq!(f.probe.history_on("plex/test/events/playback").len(), 5, "the events themselves flowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_library_item_is_library_new_with_its_metadata() {
    // Per server this time: `[[servers]] webhook_compat`.
    let mut f = start(|c| c.server(|s| s.webhook_compat = Some(true))).await;
    let metadata = json!({"MediaContainer": {"size": 1, "librarySectionID": 1, "librarySectionTitle": "Movies",
        "Metadata": [{"ratingKey": "5", "key": "/library/metadata/5", "guid": "plex://movie/5d77", "type": "movie",
                      "title": "Arrival", "year": 2016, "thumb": "/library/metadata/5/thumb/1732518000"}]}});
    f.pms.set_canned("/library/metadata/5", CannedResponse::json(metadata.to_string()));
    f.pms.push_text(&timeline(0, Some("created")));
    f.pms.push_text(&timeline(5, None));
    assert_eq!(next_on(&mut f.probe, "plex/test/events/library").await["event_type"], "item_added");
    let message = f.probe.expect(SOON, "library.new", |m: &Msg| m.topic == WEBHOOK).await;
    let payload = message.json();
    assert_eq!(payload["event"], "library.new");
    assert_eq!(payload["Metadata"]["title"], "Arrival");
    assert_eq!(payload["Metadata"]["year"], 2016);
    assert_eq!(payload["Metadata"]["librarySectionTitle"], "Movies");
    assert_eq!(payload["Metadata"]["thumb"], "/library/metadata/5/thumb/1732518000");
    assert_eq!(payload["Server"]["uuid"], f.pms.config().machine_identifier.as_str());
    assert!(payload.get("Player").is_none() && payload.get("Account").is_none(), "unknown for library.new: {payload}");
    assert!(!message.retain);
}

/// Consumers that decode webhook payloads into typed structs, with the field types of their public code. A type
/// mismatch (a section id sent as `"2"`) or a missing required field (`user`) rejects the whole message there.
/// Their fields are there to be decoded with their types; the tests read only some of them.
#[allow(dead_code)]
mod typed {
    use serde::Deserialize;

    /// Shaped like the `plex-api` crate's `Webhook`, whose `Account`, `Server` and `Player` are also those of
    /// papertigers/plex-webhook-rust's `Payload`: `user`, `owner`, `Server` and every field of `Account` and
    /// `Player` are required. One difference, on purpose: `Account` is optional here because the bridge's
    /// `library.new` has none (see the README); every `media.*` message is checked to have one.
    #[derive(Debug, Deserialize)]
    pub struct RustWebhook {
        pub event: Event,
        pub user: bool,
        pub owner: bool,
        #[serde(rename = "Account")]
        pub account: Option<Account>,
        #[serde(rename = "Server")]
        pub server: Server,
        #[serde(rename = "Player")]
        pub player: Option<Player>,
        #[serde(rename = "Metadata")]
        pub metadata: Option<Metadata>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    pub enum Event {
        #[serde(rename = "media.play")]
        MediaPlay,
        #[serde(rename = "media.pause")]
        MediaPause,
        #[serde(rename = "media.resume")]
        MediaResume,
        #[serde(rename = "media.scrobble")]
        MediaScrobble,
        #[serde(rename = "media.stop")]
        MediaStop,
        #[serde(rename = "library.new")]
        LibraryNew,
    }

    #[derive(Debug, Deserialize)]
    pub struct Account {
        pub id: u64,
        pub thumb: String,
        pub title: String,
    }

    #[derive(Debug, Deserialize)]
    pub struct Server {
        pub title: String,
        pub uuid: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Player {
        pub local: bool,
        pub public_address: String,
        pub title: String,
        pub uuid: String,
    }

    /// `plex-api`'s `Metadata`: `title` and `addedAt` (a Unix timestamp) are required. Its `librarySectionID`
    /// also accepts a numeric string; this one takes only the number webhooks send.
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Metadata {
        pub title: String,
        pub added_at: i64,
        pub library_section_type: Option<String>,
        pub key: Option<String>,
        pub parent_key: Option<String>,
        pub grandparent_key: Option<String>,
        pub rating_key: Option<String>,
        pub parent_rating_key: Option<String>,
        pub grandparent_rating_key: Option<String>,
        pub guid: Option<String>,
        #[serde(rename = "librarySectionID")]
        pub library_section_id: Option<u32>,
        pub r#type: Option<String>,
        pub parent_title: Option<String>,
        pub grandparent_title: Option<String>,
        pub summary: Option<String>,
        pub index: Option<u32>,
        pub parent_index: Option<u32>,
        pub rating_count: Option<u64>,
        pub thumb: Option<String>,
        pub parent_thumb: Option<String>,
        pub grandparent_thumb: Option<String>,
        pub art: Option<String>,
        pub grandparent_art: Option<String>,
        pub updated_at: Option<i64>,
    }

    /// With the field types of telegraf's `plugins/inputs/webhooks/plex` structs (Go's `encoding/json`: a
    /// missing field is its zero value, a field of the wrong type fails the message; Go `int` is `i64`).
    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct GoWebhook {
        pub event: String,
        pub user: bool,
        pub owner: bool,
        #[serde(rename = "Account")]
        pub account: GoAccount,
        #[serde(rename = "Server")]
        pub server: GoServer,
        #[serde(rename = "Player")]
        pub player: GoPlayer,
        #[serde(rename = "Metadata")]
        pub metadata: GoMetadata,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct GoAccount {
        pub id: i64,
        pub thumb: String,
        pub title: String,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct GoServer {
        pub title: String,
        pub uuid: String,
    }

    /// telegraf tags `PublicAddress`; Go matches keys without regard to case, so it reads `publicAddress`.
    #[derive(Debug, Default, Deserialize)]
    #[serde(default, rename_all = "camelCase")]
    pub struct GoPlayer {
        pub local: bool,
        pub public_address: String,
        pub title: String,
        pub uuid: String,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, rename_all = "camelCase")]
    pub struct GoMetadata {
        pub library_section_type: String,
        pub rating_key: String,
        pub key: String,
        pub parent_rating_key: String,
        pub grandparent_rating_key: String,
        pub guid: String,
        #[serde(rename = "librarySectionID")]
        pub library_section_id: i64,
        #[serde(rename = "type")]
        pub media_type: String,
        pub title: String,
        pub grandparent_key: String,
        pub parent_key: String,
        pub grandparent_title: String,
        pub parent_title: String,
        pub summary: String,
        pub index: i64,
        pub parent_index: i64,
        pub rating_count: i64,
        pub thumb: String,
        pub art: String,
        pub parent_thumb: String,
        pub grandparent_thumb: String,
        pub grandparent_art: String,
        pub added_at: i64,
        pub updated_at: i64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_consumers_decode_every_message() {
    let mut f = start(|c| c.plex(|p| p.webhook_compat = Some(true))).await;
    play_through(&mut f, TO_THE_END, 3_101_000).await;
    webhook_message(&mut f.probe, "media.stop").await;
    // PMS's /library/metadata: the section id on the container and on the item, numbers as strings here and there.
    let metadata = json!({"MediaContainer": {"size": 1, "librarySectionID": 1, "librarySectionTitle": "Movies",
        "Metadata": [{"ratingKey": "5", "key": "/library/metadata/5", "guid": "plex://movie/5d77", "type": "movie",
                      "title": "Arrival", "year": "2016", "librarySectionID": "1", "duration": 6_960_000,
                      "rating": "7.9", "addedAt": 1_732_518_000, "updatedAt": 1_732_518_001,
                      "thumb": "/library/metadata/5/thumb/1732518000"}]}});
    f.pms.set_canned("/library/metadata/5", CannedResponse::json(metadata.to_string()));
    f.pms.push_text(&timeline(0, Some("created")));
    f.pms.push_text(&timeline(5, None));
    webhook_message(&mut f.probe, "library.new").await;

    let messages = f.probe.history_on(WEBHOOK);
    let events: Vec<Value> = messages.iter().map(|m| m.json()["event"].clone()).collect();
    assert_eq!(
        events,
        ["media.play", "media.pause", "media.resume", "media.scrobble", "media.stop", "library.new"],
        "one message per event"
    );
    for message in &messages {
        let rust: typed::RustWebhook = serde_json::from_slice(&message.payload)
            .unwrap_or_else(|e| panic!("a plex-api-shaped consumer rejects it ({e}): {}", message.text()));
        let go: typed::GoWebhook = serde_json::from_slice(&message.payload)
            .unwrap_or_else(|e| panic!("a telegraf-shaped consumer rejects it ({e}): {}", message.text()));
        assert!(rust.owner && go.owner);
        let metadata = rust.metadata.as_ref().expect("Metadata");
        if rust.event == typed::Event::LibraryNew {
            assert_eq!((metadata.title.as_str(), metadata.added_at), ("Arrival", 1_732_518_000));
            assert_eq!(metadata.library_section_id, Some(1));
            assert_eq!(message.json()["Metadata"]["year"], 2016);
            assert_eq!(message.json()["Metadata"]["rating"], 7.9);
            assert_eq!(go.metadata.updated_at, 1_732_518_001);
            continue;
        }
        // The session is the server owner's (account 1): a webhook of the owner's own playback is both.
        assert!(rust.user && go.user, "{}", message.text());
        let account = rust.account.as_ref().expect("Account in every media.* message");
        assert_eq!((account.id, account.title.as_str()), (1, "alice"));
        let player = rust.player.as_ref().expect("Player in every media.* message");
        assert_eq!((player.local, player.public_address.as_str()), (true, "203.0.113.7"));
        assert_eq!((player.title.as_str(), player.uuid.as_str()), ("Living Room TV", "player-45"));
        assert_eq!(rust.server.uuid, f.pms.config().machine_identifier);
        assert_eq!(metadata.library_section_id, Some(2));
        assert_eq!((metadata.index, metadata.parent_index), (Some(1), Some(1)));
        assert_eq!((metadata.added_at, metadata.updated_at), (1_700_000_000, Some(1_700_000_500)));
        assert_eq!((go.account.id, go.metadata.library_section_id, go.metadata.updated_at), (1, 2, 1_700_000_500));
        assert_eq!(go.player.public_address, "203.0.113.7");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_look_up_the_next_event_has_account_and_player() {
    let mut f = start(|c| c.plex(|p| p.webhook_compat = Some(true))).await;
    f.pms.set_canned("/status/sessions", CannedResponse { status: 500, ..CannedResponse::json("") });
    f.pms.push_text(&pilot("playing", 0));
    // The look-up fails: the play goes out at once with what the notification said.
    let play = webhook_message(&mut f.probe, "media.play").await;
    assert!(play.get("Account").is_none() && play.get("Player").is_none(), "{play}");

    // The server answers again. The pause's notification asks it at once (not after the failure's retry delay),
    // and the pause waits for the answer, so it goes out complete.
    f.pms.set_canned("/status/sessions", CannedResponse::json(session_body("paused")));
    f.pms.push_text(&pilot("paused", 1_000));
    let pause = webhook_message(&mut f.probe, "media.pause").await;
    assert_eq!(pause["Account"], json!({"id": 1, "thumb": "https://plex.tv/users/abc/avatar?c=1", "title": "alice"}));
    assert_eq!(
        pause["Player"],
        json!({"local": true, "publicAddress": "203.0.113.7", "title": "Living Room TV", "uuid": "player-45"})
    );
    f.pms.push_text(&pilot("playing", 1_000));
    let resume = webhook_message(&mut f.probe, "media.resume").await;
    assert_eq!(
        (resume["Account"]["title"].clone(), resume["Player"]["title"].clone()),
        (json!("alice"), json!("Living Room TV"))
    );
}
