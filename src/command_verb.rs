//! The fixed vocabulary of commands from MQTT: nothing outside this list can ever reach a Plex server.
//!
//! A leaf, kept apart from the executor (`commands`) because the configuration's allow-list is written in it too; both
//! depend on this module and not on each other.

use std::fmt;

/// Largest command payload accepted (bytes); larger ones are refused without being queued or parsed.
pub const MAX_PAYLOAD: usize = 4096;

/// One command a user may allow in `commands.allow`. Server verbs act on the server (`<p>/<server>/command/
/// <verb>`), player verbs on one player through the server's player proxy (`<p>/<server>/players/<player>/
/// command/<verb>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    LibraryScan,
    TerminateSession,
    Butler,
    Play,
    Pause,
    Stop,
    SkipNext,
    SkipPrevious,
    Seek,
}

impl Verb {
    /// Every verb, server verbs first.
    pub const ALL: [Verb; 9] = [
        Verb::LibraryScan,
        Verb::TerminateSession,
        Verb::Butler,
        Verb::Play,
        Verb::Pause,
        Verb::Stop,
        Verb::SkipNext,
        Verb::SkipPrevious,
        Verb::Seek,
    ];

    /// The name in topics, in `commands.allow` and in results.
    pub fn name(self) -> &'static str {
        match self {
            Verb::LibraryScan => "library_scan",
            Verb::TerminateSession => "terminate_session",
            Verb::Butler => "butler",
            Verb::Play => "play",
            Verb::Pause => "pause",
            Verb::Stop => "stop",
            Verb::SkipNext => "skip_next",
            Verb::SkipPrevious => "skip_previous",
            Verb::Seek => "seek",
        }
    }

    /// The verb of a name (exact, as in topics).
    pub fn parse(name: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Whether it acts on a player (and so lives under `players/<player>/command/`).
    pub fn is_player(self) -> bool {
        !matches!(self, Verb::LibraryScan | Verb::TerminateSession | Verb::Butler)
    }

    /// The names of every verb, for error messages.
    pub fn all_names() -> String {
        Verb::ALL.map(Verb::name).join(", ")
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_split_into_server_and_player_verbs() {
        for verb in Verb::ALL {
            assert_eq!(Verb::parse(verb.name()), Some(verb));
        }
        assert_eq!(Verb::parse("result"), None, "the result topic is never a verb");
        assert_eq!(Verb::ALL.iter().filter(|v| !v.is_player()).count(), 3);
    }
}
