//! Why the broker connection was lost, named from evidence rather than guessed: the connection error itself
//! (CONNACK refusal codes, TLS, I/O) and the history of the last sessions. A broker restart ends one session and
//! then refuses connections for a while; another client taking over the same `mqtt.client_id` ends every session
//! shortly after the broker accepted it, while every reconnect is accepted at once — only that pattern, seen
//! [`TAKEOVER_EVIDENCE`] times in a row, is reported as a likely takeover.

use rumqttc::mqttbytes::v4::ConnectReturnCode;
use rumqttc::{ConnectionError, StateError};

/// Sessions in a row that the broker accepted and then closed soon, with no failed attempt in between, before a
/// takeover is named.
pub const TAKEOVER_EVIDENCE: u32 = 3;

const TAKEOVER: &str = "each session the broker accepts is closed by the broker within seconds while every reconnect \
    is accepted at once: another client is probably using the same mqtt.client_id and takes the connection over \
    (give each bridge its own id); reconnecting with growing delays";

/// The recent sessions' ends.
#[derive(Debug, Default)]
pub struct SessionHistory {
    /// Sessions in a row closed by the broker soon after it accepted them.
    closed_soon: u32,
    /// The takeover was reported for this run of sessions.
    reported: bool,
}

impl SessionHistory {
    /// A session lasted long enough to count as stable: whatever happened before is over.
    pub fn stable(&mut self) {
        *self = SessionHistory::default();
    }

    /// A connection attempt failed before the broker accepted it (the broker is down, restarting or refusing):
    /// evidence against a takeover.
    pub fn attempt_failed(&mut self) {
        *self = SessionHistory::default();
    }

    /// A session the broker accepted ended soon with `error`; the likely cause, once the evidence names one.
    pub fn ended_soon(&mut self, error: &ConnectionError) -> Option<&'static str> {
        if !closed_by_broker(error) {
            self.closed_soon = 0;
            return None;
        }
        self.closed_soon += 1;
        if self.closed_soon >= TAKEOVER_EVIDENCE && !self.reported {
            self.reported = true;
            return Some(TAKEOVER);
        }
        None
    }
}

/// The socket error behind `error`, wherever the client put it: the fork reports a failed socket read as a
/// "serialization/deserialization error", but what it means is that the connection broke.
fn io_error(error: &ConnectionError) -> Option<&std::io::Error> {
    match error {
        ConnectionError::Io(io)
        | ConnectionError::MqttState(
            StateError::Io(io) | StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io)),
        ) => Some(io),
        _ => None,
    }
}

/// Whether the broker ended the connection (end of stream, reset, abort, or a write to a socket it closed: broken
/// pipe) rather than the network or a timeout.
fn closed_by_broker(error: &ConnectionError) -> bool {
    use std::io::ErrorKind;
    if matches!(error, ConnectionError::MqttState(StateError::ConnectionAborted)) {
        return true;
    }
    io_error(error).is_some_and(|io| {
        matches!(
            io.kind(),
            ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
        )
    })
}

/// A readable reason for a broker connection error (rumqttc's own texts are terse).
pub fn describe(error: &ConnectionError, broker: &str) -> String {
    if let Some(io) = io_error(error) {
        // What the user needs to know: the connection broke (a broker restart or crash, a network fault).
        if crate::fd_limit::is_exhausted(io) {
            return crate::fd_limit::describe(io, &format!("cannot connect to the broker at {broker}"));
        }
        return format!("connection to the broker at {broker} failed: {io}");
    }
    match error {
        ConnectionError::Tls(tls) => crate::tls::describe_handshake_error(broker, tls),
        ConnectionError::ConnectionRefused(code) => refusal(*code),
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            format!("the broker at {broker} closed the connection")
        }
        other => other.to_string(),
    }
}

/// What a CONNACK refusal code means, and what to do.
fn refusal(code: ConnectReturnCode) -> String {
    let what = match code {
        ConnectReturnCode::BadUserNamePassword => "bad user name or password; check mqtt.username / mqtt.password",
        ConnectReturnCode::NotAuthorized => {
            "not authorized; check mqtt.username / mqtt.password and the broker's access rules for this client"
        }
        ConnectReturnCode::BadClientId => "the client id was rejected; check mqtt.client_id",
        ConnectReturnCode::ServiceUnavailable => "the broker is not accepting connections now (starting or overloaded)",
        ConnectReturnCode::RefusedProtocolVersion => "the broker does not speak MQTT 3.1.1",
        ConnectReturnCode::Success => "refused without a reason",
    };
    format!("broker refused the connection: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eof() -> ConnectionError {
        ConnectionError::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"))
    }

    #[test]
    fn a_takeover_is_named_only_after_repeated_evidence() {
        let mut history = SessionHistory::default();
        // A broker restart: one session ends, then attempts fail while the broker is down.
        assert_eq!(history.ended_soon(&eof()), None);
        history.attempt_failed();
        assert_eq!(history.ended_soon(&eof()), None);
        assert_eq!(history.ended_soon(&eof()), None);
        // Three accepted sessions in a row closed soon, nothing failing in between: named once.
        assert_eq!(history.ended_soon(&eof()), Some(TAKEOVER));
        assert_eq!(history.ended_soon(&eof()), None, "once per run of sessions");
        history.stable();
        let timeout = ConnectionError::NetworkTimeout;
        for _ in 0..5 {
            assert_eq!(history.ended_soon(&timeout), None, "a timeout is the network's, not the broker's");
        }
    }

    #[test]
    fn a_write_to_a_connection_the_broker_closed_is_evidence_too() {
        // Which error a taken-over session ends with depends on whether the bridge was reading or writing.
        let broken_pipe = || ConnectionError::Io(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe"));
        let mut history = SessionHistory::default();
        assert_eq!(history.ended_soon(&eof()), None);
        assert_eq!(history.ended_soon(&broken_pipe()), None);
        assert_eq!(history.ended_soon(&eof()), Some(TAKEOVER));
    }

    #[test]
    fn refusal_codes_say_what_to_fix() {
        let text = describe(&ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized), "b:1883");
        assert!(text.contains("not authorized") && text.contains("mqtt.username"), "{text}");
        let text = describe(&ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable), "b:1883");
        assert!(text.contains("not accepting connections"), "{text}");
    }
}
