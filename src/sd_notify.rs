//! The systemd notification protocol (`Type=notify`): READY, STATUS and WATCHDOG messages to `$NOTIFY_SOCKET`.
//!
//! A few lines over a Unix datagram socket, so no crate is needed. Everything is a no-op when the bridge was
//! not started by systemd (no `NOTIFY_SOCKET`), e.g. in Docker or a terminal.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one notification (`READY=1`, `STATUS=…`, `WATCHDOG=1`); errors are ignored, as systemd's own client does.
pub fn notify(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(socket) = UnixDatagram::unbound() else { return };
    let path = path.to_string_lossy().into_owned();
    if let Some(abstract_name) = path.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()) {
                let _ = socket.send_to_addr(message.as_bytes(), &addr);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = abstract_name;
    } else {
        let _ = socket.send_to(message.as_bytes(), &path);
    }
}

/// The shortest watchdog interval: a `WATCHDOG_USEC` of 1 would halve to zero, and a timer of zero panics
/// (tokio's `interval`); pinging every millisecond is as often as any watchdog can mean.
const MIN_WATCHDOG_INTERVAL: Duration = Duration::from_millis(1);

/// The watchdog interval systemd expects pings at (half of `WatchdogSec=`, at least 1 ms), if it asked for any.
pub fn watchdog_interval() -> Option<Duration> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    ping_interval(usec)
}

/// Half of `usec`, at least [`MIN_WATCHDOG_INTERVAL`]; `None` for 0 (no watchdog).
fn ping_interval(usec: u64) -> Option<Duration> {
    (usec > 0).then(|| Duration::from_micros(usec / 2).max(MIN_WATCHDOG_INTERVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_interval_is_half_the_timeout_and_never_zero() {
        assert_eq!(ping_interval(0), None);
        assert_eq!(ping_interval(1), Some(MIN_WATCHDOG_INTERVAL));
        assert_eq!(ping_interval(30_000_000), Some(Duration::from_secs(15)));
    }
}
