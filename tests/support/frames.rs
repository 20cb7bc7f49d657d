//! Notification frames as a PMS sends them over the WebSocket (`{"NotificationContainer":{…}}`), built from what
//! a test varies. Realistic samples of every type are in [`super::samples`].

/// A container whose `type` is `type_json` written as it is (any JSON: a string, a number, `true`…).
pub fn frame_typed(type_json: &str, array_key: &str, items: &[&str]) -> String {
    format!(
        r#"{{"NotificationContainer":{{"type":{type_json},"size":{},"{array_key}":[{}]}}}}"#,
        items.len(),
        items.join(",")
    )
}

/// A container of notification type `kind` with `items` under `array_key`.
pub fn frame(kind: &str, array_key: &str, items: &[&str]) -> String {
    frame_typed(&format!("\"{kind}\""), array_key, items)
}

/// A `status` notification of `items`.
pub fn status(items: &[&str]) -> String {
    frame("status", "StatusNotification", items)
}

/// One `playing` item: session `session` (rating key `9<session>`, player `player-<session>` unless changed),
/// playing at offset 0.
#[derive(Clone, Debug)]
pub struct Play {
    session: String,
    rating_key: String,
    player: Option<String>,
    state: String,
    offset: u64,
}

impl Play {
    pub fn new(session: &str) -> Play {
        Play {
            session: session.to_owned(),
            rating_key: format!("9{session}"),
            player: Some(format!("player-{session}")),
            state: "playing".to_owned(),
            offset: 0,
        }
    }

    /// The item (and its `/library/metadata/<key>`).
    pub fn rating_key(mut self, key: &str) -> Play {
        self.rating_key = key.to_owned();
        self
    }

    /// The player's `clientIdentifier`.
    pub fn player(mut self, id: &str) -> Play {
        self.player = Some(id.to_owned());
        self
    }

    /// The short shape: no `clientIdentifier`, `guid` or `url`.
    pub fn without_player(mut self) -> Play {
        self.player = None;
        self
    }

    /// `playing`, `paused`, `buffering`, `stopped`.
    pub fn state(mut self, state: &str) -> Play {
        self.state = state.to_owned();
        self
    }

    /// `viewOffset` in ms.
    pub fn at(mut self, offset: u64) -> Play {
        self.offset = offset;
        self
    }

    /// The `PlaySessionStateNotification` item.
    pub fn item(&self) -> String {
        let (session, rating_key, offset, state) = (&self.session, &self.rating_key, self.offset, &self.state);
        match &self.player {
            Some(player) => format!(
                r#"{{"sessionKey":"{session}","clientIdentifier":"{player}","guid":"","ratingKey":"{rating_key}","url":"","key":"/library/metadata/{rating_key}","viewOffset":{offset},"state":"{state}"}}"#
            ),
            None => format!(
                r#"{{"sessionKey":"{session}","ratingKey":"{rating_key}","key":"/library/metadata/{rating_key}","viewOffset":{offset},"state":"{state}"}}"#
            ),
        }
    }

    /// The frame of this one item.
    pub fn frame(&self) -> String {
        playing_frame(&[self.item().as_str()])
    }
}

/// A `playing` notification of `items`.
pub fn playing_frame(items: &[&str]) -> String {
    frame("playing", "PlaySessionStateNotification", items)
}

/// Session `session` (see [`Play::new`]) in `state` at `offset` ms: the frame.
pub fn playing(session: &str, state: &str, offset: u64) -> String {
    Play::new(session).state(state).at(offset).frame()
}

/// One `activity` item: a section scan with uuid `uuid`.
pub fn activity_item(uuid: &str, event: &str, progress: u64, subtitle: &str) -> String {
    format!(
        r#"{{"event":"{event}","uuid":"{uuid}","Activity":{{"uuid":"{uuid}","type":"library.update.section","cancellable":false,"userID":1,"title":"Scanning Movies","subtitle":"{subtitle}","progress":{progress},"Context":{{"librarySectionID":"1"}}}}}}"#
    )
}

/// The `activity` notification of a section scan (`started`, `updated`, `ended`) at `progress`.
pub fn activity(uuid: &str, event: &str, progress: u64) -> String {
    frame("activity", "ActivityNotification", &[&activity_item(uuid, event, progress, "")])
}

/// A `timeline` notification of movie item 5 ("Arrival") in library section 1 at `state` (0 created, 1
/// processing, 5 done, 9 deleted), with `metadataState` when given.
pub fn timeline(state: u32, metadata_state: Option<&str>) -> String {
    let meta = metadata_state.map(|m| format!(r#","metadataState":"{m}""#)).unwrap_or_default();
    let item = format!(
        r#"{{"identifier":"com.plexapp.plugins.library","sectionID":"1","itemID":"5","type":1,"title":"Arrival","state":{state}{meta},"updatedAt":1732518000}}"#
    );
    frame("timeline", "TimelineEntry", &[&item])
}
