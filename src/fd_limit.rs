//! File descriptors: every Plex server holds a few (its notification socket, a REST look-up, the token file
//! while it is read), so the usual soft limit of 1024 caps a bridge at a few hundred servers. At start the daemon
//! raises its soft `RLIMIT_NOFILE` to the hard limit (a process may, without privileges) and logs how many
//! servers that leaves room for; running out anyway (EMFILE) is named as such wherever it surfaces, with the fix.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Descriptors one server holds at most at once: its notification socket, a REST look-up (or a command) and its
/// token file while it is read.
pub const PER_SERVER: u64 = 3;
/// Descriptors the process needs besides its servers: standard streams, the runtime's poller and wakers, the
/// broker connection, the health endpoint (its listener and 64 connections) and a margin.
pub const BASE: u64 = 96;
/// The fix, as log lines and `/healthz` give it.
pub const FIX: &str = "raise the limit: LimitNOFILE= in the systemd unit (the shipped unit sets 65536), \
    `ulimit -n` in the shell that starts the bridge, or Docker's --ulimit nofile=65536:65536";

/// The soft limit in force (0 until [`raise`] ran: texts then leave the number out).
static SOFT: AtomicU64 = AtomicU64::new(0);

/// The limit after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: u64,
    pub hard: u64,
    /// The soft limit before, when it was raised.
    pub raised_from: Option<u64>,
}

impl Limit {
    /// How many Plex servers the soft limit leaves room for.
    pub fn servers(&self) -> u64 {
        self.soft.saturating_sub(BASE) / PER_SERVER
    }
}

/// The soft limit this process may raise to without privileges; a hard limit of "unlimited" is not a number
/// the kernel accepts for open files, so it stands for the kernel's ceiling (`fs.nr_open`).
fn ceiling(hard: libc::rlim_t) -> libc::rlim_t {
    if hard != libc::RLIM_INFINITY {
        return hard;
    }
    std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|n| n.trim().parse().ok()).unwrap_or(1 << 20)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (nothing to do, and no system call made, when they are equal,
/// as under the shipped systemd unit, which sets both).
pub fn raise() -> io::Result<Limit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct passed in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    let target = ceiling(limit.rlim_max);
    let mut raised_from = None;
    if before < target {
        let wanted = libc::rlimit { rlim_cur: target, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct passed in.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } != 0 {
            let error = io::Error::last_os_error();
            SOFT.store(before, Ordering::Relaxed);
            return Err(error);
        }
        limit.rlim_cur = target;
        raised_from = Some(before);
    }
    SOFT.store(limit.rlim_cur, Ordering::Relaxed);
    Ok(Limit { soft: limit.rlim_cur, hard: limit.rlim_max, raised_from })
}

/// [`raise`], and one log line saying what it came to and how many servers fit; a warning when `servers` (the
/// configured ones) need more than that.
pub fn raise_and_report(servers: usize) {
    let limit = match raise() {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the file-descriptor limit (RLIMIT_NOFILE); {FIX}");
            return;
        }
    };
    let capacity = limit.servers();
    if servers as u64 > capacity {
        tracing::warn!(
            limit = limit.soft,
            hard_limit = limit.hard,
            servers_configured = servers,
            servers_capacity = capacity,
            "the file-descriptor limit leaves room for fewer Plex servers than are configured; {FIX}"
        );
    } else {
        tracing::info!(
            limit = limit.soft,
            hard_limit = limit.hard,
            raised_from = limit.raised_from,
            servers_configured = servers,
            servers_capacity = capacity,
            "file descriptors: room for about {capacity} Plex servers"
        );
    }
}

/// Whether `error` is the process (EMFILE) or the system (ENFILE) being out of file descriptors.
pub fn is_exhausted(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The I/O error behind `error` (anywhere in its chain of sources) when it is [`is_exhausted`].
pub fn exhausted_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut next = Some(error);
    while let Some(cause) = next {
        if let Some(io) = cause.downcast_ref::<io::Error>().filter(|io| is_exhausted(io)) {
            return Some(io);
        }
        next = cause.source();
    }
    None
}

/// What running out of descriptors means, and the fix: `while_doing` says what could not be opened.
pub fn describe(error: &io::Error, while_doing: &str) -> String {
    if error.raw_os_error() == Some(libc::ENFILE) {
        return format!(
            "{while_doing}: the system is out of file descriptors (ENFILE): raise fs.file-max (sysctl) or close \
             what holds them"
        );
    }
    let held = match SOFT.load(Ordering::Relaxed) {
        0 => String::new(),
        soft => format!(": this process holds all {soft} it may open"),
    };
    format!("{while_doing}: out of file descriptors (EMFILE{held}); {FIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_follows_the_soft_limit() {
        let limit = Limit { soft: 1024, hard: 524_288, raised_from: None };
        assert_eq!(limit.servers(), (1024 - BASE) / PER_SERVER);
        assert_eq!(Limit { soft: 10, ..limit }.servers(), 0);
    }

    #[test]
    fn emfile_is_named_with_the_fix_wherever_it_hides() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(is_exhausted(&emfile));
        assert!(!is_exhausted(&io::Error::from_raw_os_error(libc::ECONNREFUSED)));
        let text = describe(&emfile, "cannot open the token file /run/token");
        assert!(text.starts_with("cannot open the token file /run/token: out of file descriptors (EMFILE"), "{text}");
        assert!(text.contains("LimitNOFILE="), "{text}");
        assert!(describe(&io::Error::from_raw_os_error(libc::ENFILE), "x").contains("ENFILE"));

        /// An error that wraps another, as reqwest's and hyper's do.
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connect failed")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert!(exhausted_in(&Wrapper(io::Error::from_raw_os_error(libc::EMFILE))).is_some());
        assert!(exhausted_in(&Wrapper(io::Error::from_raw_os_error(libc::ECONNREFUSED))).is_none());
    }
}
