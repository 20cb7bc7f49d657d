//! Realistic notifications of every type in docs/plex-protocol.md, and their rendering on both wire
//! formats: a WebSocket frame (`{"NotificationContainer":{…,"<Key>":[…]}}`) and EventSource events
//! (`event: <type>` + `data: {"<Key>":{…}}`, one event per item).
//!
//! Items keep odd spacing, key order, non-ASCII text and string-vs-number variations on purpose: the bridge must
//! forward them byte for byte.

/// One notification: its type, the array key PMS uses for it, and the items (raw JSON objects).
#[derive(Clone, Debug)]
pub struct Sample {
    pub kind: &'static str,
    pub key: &'static str,
    pub items: Vec<&'static str>,
}

impl Sample {
    /// The WebSocket text frame PMS sends for this notification.
    pub fn ws_frame(&self) -> String {
        super::frames::frame(self.kind, self.key, &self.items)
    }

    /// The EventSource events PMS sends for this notification: one per item, one object under the key.
    pub fn sse_events(&self) -> String {
        self.items.iter().map(|item| format!("event: {}\ndata: {{\"{}\":{}}}\n\n", self.kind, self.key, item)).collect()
    }

    /// The topic each item is expected on, for server name `server` and prefix `plex`.
    pub fn topic(&self, server: &str) -> String {
        format!("plex/{server}/{}", fold(self.kind))
    }
}

/// Whether `topic` is one of server `server`'s raw notification topics (`plex/<server>/<type>`, prefix `plex`):
/// every message on them is a live event. Server state and info, the sessions and activities summaries, the
/// session documents, derived events and activity state beside them are not.
pub fn is_raw_notification_topic(topic: &str, server: &str) -> bool {
    let rest = topic.strip_prefix("plex/").and_then(|t| t.strip_prefix(server)).and_then(|t| t.strip_prefix('/'));
    let Some(rest) = rest else { return false };
    !rest.is_empty()
        && !matches!(rest, "state" | "info" | "sessions" | "activities")
        && !["sessions/", "events/", "activities/"].iter().any(|p| rest.starts_with(p))
}

/// The topic folding rule of docs/topics.md, written independently of the bridge's.
pub fn fold(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.to_lowercase().chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' { c } else { '_' };
        if c == '_' && (out.is_empty() || out.ends_with('_')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end_matches('_').to_owned()
}

/// Every notification type of the protocol notes, plus an unknown future one.
pub fn every_type() -> Vec<Sample> {
    vec![
        Sample {
            kind: "playing",
            key: "PlaySessionStateNotification",
            items: vec![
                r#"{"sessionKey":"45","clientIdentifier":"4b45c1d2","guid":"","ratingKey":"217468","url":"","key":"/library/metadata/217468","viewOffset":26530,"playQueueItemID":9431,"state":"playing","transcodeSession":"x1y2z3"}"#,
                r#"{"sessionKey":"46","clientIdentifier":"aa11","guid":"","ratingKey":"com.gracenote.onconnect://episode/EP019913910004","url":"","key":"/livetv/sessions/1","viewOffset":0,"state":"buffering"}"#,
            ],
        },
        Sample {
            kind: "activity",
            key: "ActivityNotification",
            items: vec![
                r#"{"event":"updated","uuid":"0f3c2a9e-5b1d-4c6e-9a7b-2d8e4f6a1b3c","Activity":{"uuid":"0f3c2a9e-5b1d-4c6e-9a7b-2d8e4f6a1b3c","type":"library.update.section","cancellable":false,"userID":1,"title":"Scanning Movies","subtitle":"Amélie (2001)","progress":42,"Context":{"librarySectionID":"1"}}}"#,
            ],
        },
        Sample {
            kind: "timeline",
            key: "TimelineEntry",
            items: vec![
                r#"{"identifier":"com.plexapp.plugins.library","sectionID":"1","itemID":"217468","type":1,"title":"Arrival","state":0,"metadataState":"created","updatedAt":1732518000}"#,
                r#"{"identifier":"com.plexapp.plugins.library","sectionID":2,"itemID":217469,"parentItemID":100,"rootItemID":99,"type":4,"title":"Pilot","state":5,"updatedAt":1732518001}"#,
                r#"{"identifier":"tv.plex.providers.epg.cloud:4","sectionID":"-1","itemID":"5","type":-1,"state":9,"metadataState":"deleted"}"#,
            ],
        },
        Sample {
            kind: "status",
            key: "StatusNotification",
            items: vec![
                r#"{"title":"Library scan complete","description":"Movies","notificationName":"LIBRARY_UPDATE"}"#,
            ],
        },
        Sample { kind: "reachability", key: "ReachabilityNotification", items: vec![r#"{"reachability":true}"#] },
        Sample {
            kind: "transcodeSession.start",
            key: "TranscodeSession",
            items: vec![
                r#"{"key":"/transcode/sessions/x1y2z3","throttled":false,"complete":false,"progress":0,"speed":0,"duration":7020000,"context":"streaming","videoDecision":"transcode","audioDecision":"copy","protocol":"dash","container":"mp4","width":1920,"height":1080,"transcodeHwRequested":true}"#,
            ],
        },
        Sample {
            kind: "transcodeSession.update",
            key: "TranscodeSession",
            items: vec![
                r#"{"key":"/transcode/sessions/x1y2z3","throttled":false,"complete":false,"progress":"12.5","speed":3.1,"remaining":180,"timeStamp":1732518005.25}"#,
            ],
        },
        Sample {
            kind: "transcodeSession.end",
            key: "TranscodeSession",
            items: vec![r#"{"key":"/transcode/sessions/x1y2z3","complete":true,"progress":100}"#],
        },
        Sample { kind: "preference", key: "Setting", items: vec![r#"{"id":"FriendlyName","value":"Wohnzimmer"}"#] },
        Sample {
            kind: "backgroundProcessingQueue",
            key: "BackgroundProcessingQueueEventNotification",
            items: vec![r#"{"queueID":1,"event":"queueRegenerated"}"#],
        },
        Sample {
            kind: "progress",
            key: "ProgressNotification",
            items: vec![r#"{"message":"Optimizing database","percent":50}"#],
        },
        Sample {
            kind: "update.statechange",
            key: "AutoUpdateNotification",
            items: vec![r#"{"key":"/updater/status","version":"1.41.4","state":"available"}"#],
        },
        Sample {
            kind: "log",
            key: "LogSentNotification",
            items: vec![r#"{"level":3,"thread":"0x7f3a","time":"2026-11-25 07:00:00","message":"Scanner finished"}"#],
        },
        Sample { kind: "account", key: "AccountUpdateNotification", items: vec![r#"{"id":1,"name":"owner"}"#] },
        Sample {
            kind: "provider.content.change",
            key: "ProviderContentChangeNotification",
            items: vec![r#"{"identifier":"tv.plex.provider.vod","type":"content"}"#],
        },
        Sample {
            kind: "someFutureEvent",
            key: "SomeFutureEventNotification",
            items: vec![r#"{ "spaced" : [1, 2.50, "três"], "nested":{"a":null} }"#],
        },
    ]
}
