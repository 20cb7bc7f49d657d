//! The state task's REST look-ups: each runs in a task of its own, so a slow server never blocks the state task,
//! and its result comes back as a [`Fetched`]. The tasks belong to the state task's [`Lookups`]: they end with it.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::mqtt::Publisher;
use crate::plex::http::PlexHttp;
use crate::plex::PlexError;
use crate::topic::fold_segment_or;

/// Artwork larger than this is not published (PMS's transcoder makes posters of a few dozen kB at the size asked
/// for, so only a misbehaving server reaches it).
pub const ARTWORK_MAX_BYTES: usize = 1024 * 1024;
/// The poster size asked of PMS's photo transcoder: enough for a dashboard card, small on the broker.
const ARTWORK_SIZE: (u32, u32) = (400, 600);

/// The result of one look-up.
pub enum Fetched {
    Sessions { requested_at_ms: u64, result: Result<Bytes, PlexError> },
    Activities { requested_at_ms: u64, result: Result<Bytes, PlexError> },
    Metadata { item_id: String, fallback: Value, result: Result<Bytes, PlexError> },
    Artwork { player: String, thumb: String, result: Result<Bytes, PlexError> },
}

/// The wall clock in milliseconds (what the playback tracker counts in).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The look-ups of one server under way.
pub struct Lookups {
    http: PlexHttp,
    publisher: Publisher,
    running: JoinSet<Fetched>,
}

impl Lookups {
    pub fn new(http: PlexHttp, publisher: Publisher) -> Self {
        Lookups { http, publisher, running: JoinSet::new() }
    }

    /// The next finished look-up; `None` at once when none is under way.
    pub async fn next(&mut self) -> Option<Fetched> {
        loop {
            match self.running.join_next().await? {
                Ok(fetched) => return Some(fetched),
                Err(error) => tracing::warn!(%error, "a REST look-up task failed"),
            }
        }
    }

    /// `GET /status/sessions`, once the broker's leftovers are known (the first snapshot clears stale sessions).
    pub fn sessions(&mut self) {
        self.snapshot("/status/sessions", |requested_at_ms, result| Fetched::Sessions { requested_at_ms, result });
    }

    /// `GET /activities`, once the broker's leftovers are known (activities an earlier run left are cleared).
    pub fn activities(&mut self) {
        self.snapshot("/activities", |requested_at_ms, result| Fetched::Activities { requested_at_ms, result });
    }

    /// Reads a snapshot of the server's state at `path` once the broker's leftovers are known, noting when it was
    /// asked for (changes notified after that are newer than the snapshot).
    fn snapshot(&mut self, path: &'static str, fetched: fn(u64, Result<Bytes, PlexError>) -> Fetched) {
        let (http, publisher) = (self.http.clone(), self.publisher.clone());
        self.running.spawn(async move {
            publisher.stale_scan_done(super::LEFTOVERS_WAIT).await;
            let requested_at_ms = now_ms();
            let result = http.get_bytes(path).await;
            fetched(requested_at_ms, result)
        });
    }

    /// `GET /library/metadata/<id>` of a new item (`fallback`: what the timeline said of it).
    pub fn metadata(&mut self, item_id: String, fallback: Value) {
        let http = self.http.clone();
        self.running.spawn(async move {
            let path = format!("/library/metadata/{}", fold_segment_or(&item_id, "0"));
            let result = http.get_bytes(&path).await;
            Fetched::Metadata { item_id, fallback, result }
        });
    }

    /// The poster of what `player` shows (`thumb`: its PMS path), through PMS's photo transcoder.
    pub fn artwork(&mut self, player: String, thumb: String) {
        let http = self.http.clone();
        self.running.spawn(async move {
            let encoded: String = url::form_urlencoded::byte_serialize(thumb.as_bytes()).collect();
            let (width, height) = ARTWORK_SIZE;
            let path = format!("/photo/:/transcode?width={width}&height={height}&minSize=1&upscale=1&url={encoded}");
            let result = http.get_bytes_limited(&path, ARTWORK_MAX_BYTES).await;
            Fetched::Artwork { player, thumb, result }
        });
    }
}
