//! MQTT topic names: the folding rule of docs/topics.md ("Names and folding") and the topics of one bridge and one server.
//!
//! Everything that reaches the broker as a topic is built here, so no string taken from Plex (a notification
//! type, an activity uuid, a friendly name) can put `/`, `+`, `#` or NUL into a topic.

use std::fmt;

/// The longest topic level made from PMS data. Real types and uuids are far shorter; a longer one (garbage from a
/// broken server) is cut and made unique with a hash, because MQTT topics are limited to 65,535 bytes and a
/// longer one would corrupt the broker connection.
pub const MAX_SEGMENT: usize = 128;

/// Folds a string from PMS into one safe topic segment: lower case, every character outside `[a-z0-9_-]`
/// replaced by `_`, runs of `_` collapsed, `_` trimmed from both ends, at most [`MAX_SEGMENT`] bytes (longer
/// results keep their start and end with a hash of the whole). May return an empty string; callers decide the
/// fallback.
pub fn fold_segment(raw: &str) -> String {
    let folded = fold_unbounded(raw);
    if folded.len() <= MAX_SEGMENT {
        return folded;
    }
    let hash = folded.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    // Every byte is ASCII after folding, so byte slicing is safe.
    format!("{}_{hash:016x}", &folded[..MAX_SEGMENT - 17])
}

fn fold_unbounded(raw: &str) -> String {
    if raw.is_ascii() {
        fold_ascii(raw.as_bytes())
    } else {
        fold_chars(raw)
    }
}

fn fold_chars(raw: &str) -> String {
    let mut folded = String::with_capacity(raw.len());
    for ch in raw.chars().flat_map(char::to_lowercase) {
        let ch = if ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_' { ch } else { '_' };
        if ch == '_' && (folded.is_empty() || folded.ends_with('_')) {
            continue;
        }
        folded.push(ch);
    }
    while folded.ends_with('_') {
        folded.pop();
    }
    folded
}

/// [`fold_unbounded`] for ASCII text (every type and uuid PMS sends), a byte at a time: the same result
/// without the per-character Unicode case mapping, which made folding a visible cost per notification.
fn fold_ascii(raw: &[u8]) -> String {
    let mut folded = String::with_capacity(raw.len());
    for &b in raw {
        let b = b.to_ascii_lowercase();
        let b = if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' { b } else { b'_' };
        if b == b'_' && (folded.is_empty() || folded.ends_with('_')) {
            continue;
        }
        folded.push(char::from(b));
    }
    while folded.ends_with('_') {
        folded.pop();
    }
    folded
}

/// Folds a segment and falls back to `fallback` when nothing is left (e.g. a type made only of punctuation).
pub fn fold_segment_or(raw: &str, fallback: &str) -> String {
    let folded = fold_segment(raw);
    if folded.is_empty() {
        fallback.to_owned()
    } else {
        folded
    }
}

/// Why a configured prefix or name cannot be used in a topic.
pub fn topic_text_problem(text: &str, allow_slash: bool) -> Option<&'static str> {
    if text.is_empty() {
        return Some("is empty");
    }
    if text.contains(['+', '#']) {
        return Some("contains an MQTT wildcard (`+` or `#`)");
    }
    if text.contains('\0') {
        return Some("contains a NUL character");
    }
    if !allow_slash && text.contains('/') {
        return Some("contains `/` (it must be a single topic level)");
    }
    if allow_slash && (text.starts_with('/') || text.ends_with('/') || text.contains("//")) {
        return Some("has an empty topic level (leading, trailing or double `/`)");
    }
    if text.len() > 1024 {
        return Some("is longer than 1024 bytes");
    }
    if text.starts_with('$') {
        return Some("starts with `$`, which brokers reserve for their own topics");
    }
    None
}

/// A server's topic name: the configured `name`, or the folded friendlyName. Guaranteed to be one valid segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerName(String);

impl ServerName {
    /// A name the user configured; `None` if it cannot be a topic segment (config validation reports why).
    pub fn configured(name: &str) -> Option<Self> {
        topic_text_problem(name, false).is_none().then(|| ServerName(name.to_owned()))
    }

    /// The name derived from what the server says about itself: its folded friendlyName, or the first 12
    /// characters of its machineIdentifier when the friendlyName folds to nothing.
    pub fn derived(friendly_name: &str, machine_identifier: &str) -> Self {
        let folded = fold_segment(friendly_name);
        if !folded.is_empty() {
            return ServerName(folded);
        }
        let id: String = fold_segment(machine_identifier).chars().take(12).collect();
        ServerName(if id.is_empty() { "plex".to_owned() } else { id })
    }

    /// The segment itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The topics of the bridge itself.
#[derive(Clone, Debug)]
pub struct BridgeTopics {
    prefix: String,
}

impl BridgeTopics {
    /// `prefix` must already be validated (see [`topic_text_problem`]).
    pub fn new(prefix: &str) -> Self {
        BridgeTopics { prefix: prefix.to_owned() }
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<p>/bridge/state`: `online` / `offline`, also the last will.
    pub fn state(&self) -> String {
        format!("{}/bridge/state", self.prefix)
    }

    /// `<p>/bridge/info`: version, servers, start time.
    pub fn info(&self) -> String {
        format!("{}/bridge/info", self.prefix)
    }

    /// `<p>/bridge/stats`: broker link, dropped events and per-server state (the bridge device in Home
    /// Assistant reads it).
    pub fn stats(&self) -> String {
        format!("{}/bridge/stats", self.prefix)
    }

    /// The topics of one server.
    pub fn server(&self, name: &ServerName) -> ServerTopics {
        ServerTopics { base: format!("{}/{}", self.prefix, name) }
    }

    /// `<p>/`: the start of every topic of this bridge.
    pub fn own_topics(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The filters of the start-up read of what an earlier run left retained: every server's sessions,
    /// activities, players and `info`.
    pub fn leftover_filters(&self) -> [String; 4] {
        let p = &self.prefix;
        let [players, info] = self.player_filters();
        [format!("{p}/+/sessions/+"), format!("{p}/+/activities/+"), players, info]
    }

    /// Every player's retained state and every server's `info`: who the players are and which server they are on.
    pub fn player_filters(&self) -> [String; 2] {
        let p = &self.prefix;
        [format!("{p}/+/players/+"), format!("{p}/+/info")]
    }

    /// The server's topic name and the player's level in a `<p>/<server>/players/<player>` topic (`None` for any
    /// other topic, the player's `events` and `artwork` included).
    pub fn player_of_state<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        let rest = topic.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        match rest.split('/').collect::<Vec<_>>().as_slice() {
            [server, "players", player] => Some((server, player)),
            _ => None,
        }
    }

    /// The server's topic name in a `<p>/<server>/info` topic (`None` for any other topic, and for
    /// `<p>/bridge/info`, which is the bridge's own).
    pub fn server_of_info<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let name = topic.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?.strip_suffix("/info")?;
        (!name.contains('/') && name != "bridge").then_some(name)
    }
}

/// Home Assistant's topics: `<discovery_prefix>/…` (normally `homeassistant/…`).
#[derive(Clone, Debug)]
pub struct DiscoveryTopics {
    prefix: String,
}

impl DiscoveryTopics {
    /// `prefix` is `homeassistant.discovery_prefix`, already validated.
    pub fn new(prefix: &str) -> Self {
        DiscoveryTopics { prefix: prefix.to_owned() }
    }

    /// `<d>/status`: where Home Assistant announces itself (`online` after it starts).
    pub fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// `<d>/device/+/config`: every device config (for the start-up read of what is there).
    pub fn device_config_filter(&self) -> String {
        format!("{}/device/+/config", self.prefix)
    }

    /// `<d>/device/<device id>/config`: one device-based discovery config.
    pub fn device_config(&self, device_id: &str) -> String {
        format!("{}/device/{device_id}/config", self.prefix)
    }

    /// The start of the config topics of every device whose id starts with `id_start`.
    pub fn device_config_prefix(&self, id_start: &str) -> String {
        format!("{}/device/{id_start}", self.prefix)
    }

    /// The device id in a device config topic.
    pub fn device_of_config<'t>(&self, topic: &'t str) -> Option<&'t str> {
        topic.strip_prefix(self.prefix.as_str())?.strip_prefix("/device/")?.strip_suffix("/config")
    }
}

/// The topics of one Plex server: `<p>/<server>/…`.
#[derive(Clone, Debug)]
pub struct ServerTopics {
    base: String,
}

impl ServerTopics {
    /// `<p>/<server>/state`.
    pub fn state(&self) -> String {
        format!("{}/state", self.base)
    }

    /// `<p>/<server>/info`.
    pub fn info(&self) -> String {
        format!("{}/info", self.base)
    }

    /// `<p>/<server>/<type>` for a notification type as PMS sent it (folded here).
    pub fn notification(&self, kind: &str) -> String {
        format!("{}/{}", self.base, fold_segment_or(kind, "unknown"))
    }

    /// `<p>/<server>/activities/<uuid>` (uuid folded here).
    pub fn activity(&self, uuid: &str) -> String {
        format!("{}/activities/{}", self.base, fold_segment_or(uuid, "unknown"))
    }

    /// `<p>/<server>/sessions/<sessionKey>` (key folded here).
    pub fn session(&self, key: &str) -> String {
        format!("{}/sessions/{}", self.base, fold_segment_or(key, "unknown"))
    }

    /// `<p>/<server>/sessions`: the summary of all sessions.
    pub fn sessions_summary(&self) -> String {
        format!("{}/sessions", self.base)
    }

    /// The prefix every session topic of this server starts with (`…/sessions/`).
    pub fn sessions_prefix(&self) -> String {
        format!("{}/sessions/", self.base)
    }

    /// `<p>/<server>/activities`: the summary of running activities.
    pub fn activities_summary(&self) -> String {
        format!("{}/activities", self.base)
    }

    /// `<p>/<server>/events/<kind>`: derived events (`playback`, `library`).
    pub fn events(&self, kind: &str) -> String {
        format!("{}/events/{}", self.base, kind)
    }

    /// `<p>/<server>/webhook`: Plex-webhook-shaped copies of the playback and `item_added` events
    /// (`webhook_compat`, not retained).
    pub fn webhook(&self) -> String {
        format!("{}/webhook", self.base)
    }

    /// The prefix every activity topic of this server starts with (`…/activities/`).
    pub fn activities_prefix(&self) -> String {
        format!("{}/activities/", self.base)
    }

    /// `<p>/<server>/players/<player>`: the retained state of one player (`player` is a folded machineIdentifier,
    /// see [`player_segment`]).
    pub fn player(&self, player: &str) -> String {
        format!("{}/players/{player}", self.base)
    }

    /// `<p>/<server>/players/<player>/events`: that player's playback events (not retained).
    pub fn player_events(&self, player: &str) -> String {
        format!("{}/players/{player}/events", self.base)
    }

    /// `<p>/<server>/players/<player>/artwork`: the poster of what that player shows (retained image bytes).
    pub fn player_artwork(&self, player: &str) -> String {
        format!("{}/players/{player}/artwork", self.base)
    }

    /// The prefix every player topic of this server starts with (`…/players/`).
    pub fn players_prefix(&self) -> String {
        format!("{}/players/", self.base)
    }
}

/// The topic segment (and id part) of a player: its machineIdentifier, folded like every segment from PMS data.
pub fn player_segment(machine_identifier: &str) -> String {
    fold_segment_or(machine_identifier, "unknown")
}

/// Where a message on a command topic points: `<p>/<server>/command/<verb>` or
/// `<p>/<server>/players/<player>/command/<verb>` (segments as they are in the topic; the verb is not checked
/// here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTopic<'a> {
    pub server: &'a str,
    pub player: Option<&'a str>,
    pub verb: &'a str,
}

/// The results topic's last level, which shares the command topics' filter but is never a command.
pub const COMMAND_RESULT: &str = "result";

impl<'a> CommandTopic<'a> {
    /// The subscriptions that receive every command topic under `prefix`.
    pub fn filters(prefix: &str) -> [String; 2] {
        [format!("{prefix}/+/command/+"), format!("{prefix}/+/players/+/command/+")]
    }

    /// Splits a topic under `prefix`; `None` for any other topic.
    pub fn parse(prefix: &str, topic: &'a str) -> Option<CommandTopic<'a>> {
        let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
        let levels: Vec<&str> = rest.split('/').collect();
        match levels.as_slice() {
            [server, "command", verb] => Some(CommandTopic { server, player: None, verb }),
            [server, "players", player, "command", verb] => Some(CommandTopic { server, player: Some(player), verb }),
            _ => None,
        }
    }
}

impl ServerTopics {
    /// `<p>/<server>/command/result`: one result per command (not retained).
    pub fn command_result(&self) -> String {
        format!("{}/command/{COMMAND_RESULT}", self.base)
    }

    /// `<p>/<server>/command/<verb>`.
    pub fn server_command(&self, verb: &str) -> String {
        format!("{}/command/{verb}", self.base)
    }

    /// `<p>/<server>/players/<player>/command/<verb>`.
    pub fn player_command(&self, player: &str, verb: &str) -> String {
        format!("{}/players/{player}/command/{verb}", self.base)
    }

    /// The server's own topic level (`<server>`), as command topics carry it.
    pub fn server_segment(&self) -> &str {
        self.base.rsplit('/').next().unwrap_or(&self.base)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_topics_are_split_only_in_their_two_forms() {
        use super::CommandTopic;
        let p = "home/plex";
        assert_eq!(
            CommandTopic::parse(p, "home/plex/den/command/library_scan"),
            Some(CommandTopic { server: "den", player: None, verb: "library_scan" })
        );
        assert_eq!(
            CommandTopic::parse(p, "home/plex/den/players/tv-1/command/pause"),
            Some(CommandTopic { server: "den", player: Some("tv-1"), verb: "pause" })
        );
        for other in [
            "home/plex/den/command",
            "home/plexx/den/command/a",
            "home/plex/den/sessions/1",
            "home/plex/den/command/a/b",
        ] {
            assert_eq!(CommandTopic::parse(p, other), None, "{other}");
        }
    }

    use super::*;

    #[test]
    fn ascii_folding_matches_the_unicode_path() {
        let mut samples: Vec<String> = (0u8..128).map(|b| format!("a{}B", char::from(b))).collect();
        samples.extend(["transcodeSession.update", "__A--b__", "  ", "_", "X/Y+Z#", "ab\0cd", ""].map(String::from));
        for sample in samples {
            assert_eq!(fold_ascii(sample.as_bytes()), fold_chars(&sample), "{sample:?}");
        }
    }

    #[test]
    fn folding_follows_the_contract() {
        assert_eq!(fold_segment("playing"), "playing");
        assert_eq!(fold_segment("transcodeSession.update"), "transcodesession_update");
        assert_eq!(fold_segment("Living Room  Plex!"), "living_room_plex");
        assert_eq!(fold_segment("__a//b++c#__"), "a_b_c");
        assert_eq!(fold_segment("0f3c2a9e-5b1d-4c6e"), "0f3c2a9e-5b1d-4c6e");
        assert_eq!(fold_segment("a\0b"), "a_b");
        assert_eq!(fold_segment("+++"), "");
        assert_eq!(fold_segment("Café Ünïcode"), "caf_n_code");
        assert_eq!(fold_segment_or("///", "unknown"), "unknown");
        let long = "a".repeat(70_000);
        let folded = fold_segment(&long);
        assert_eq!(folded.len(), MAX_SEGMENT);
        assert_ne!(folded, fold_segment(&format!("{long}b")), "different long inputs stay distinct");
    }

    #[test]
    fn player_state_topics_are_told_from_the_players_other_topics() {
        let bridge = BridgeTopics::new("home/plex");
        let den = bridge.server(&ServerName::configured("den").unwrap());
        assert_eq!(bridge.player_of_state(&den.player("tv-1")), Some(("den", "tv-1")));
        for other in
            [den.player_events("tv-1"), den.player_artwork("tv-1"), den.info(), "home/plexx/den/players/a".into()]
        {
            assert_eq!(bridge.player_of_state(&other), None, "{other}");
        }
        assert_eq!(bridge.server_of_info(&den.info()), Some("den"));
    }

    #[test]
    fn derived_name_falls_back_to_machine_identifier() {
        assert_eq!(ServerName::derived("My Plex", "abc").as_str(), "my_plex");
        assert_eq!(ServerName::derived("???", "0123456789ABCDEF").as_str(), "0123456789ab");
    }

    #[test]
    fn configured_names_and_prefixes_are_checked() {
        assert!(ServerName::configured("living-room").is_some());
        assert!(ServerName::configured("a/b").is_none());
        assert!(ServerName::configured("a+b").is_none());
        assert!(topic_text_problem("home/plex", true).is_none());
        assert!(topic_text_problem("home//plex", true).is_some());
        assert!(topic_text_problem("plex#", true).is_some());
        assert!(topic_text_problem("", true).is_some());
    }
}
