//! Keeping a Plex JWT alive in the daemon: one renewer per token file.
//!
//! The renewer re-reads the token file (a legacy token needs nothing), and when the JWT has less than
//! `plex.renew_before` left, or a Plex server refused it (401), it runs the device flow (nonce → signed client
//! JWT → new Plex JWT), checks the new token's signature against plex.tv's keys and against the Plex servers
//! that use it (`/` and `/status/sessions` — `/identity` answers without a token, so it proves nothing), and only
//! then replaces the file atomically. Open notification sessions are not touched: they go on with the old token
//! while it works, and every later request reads the new file. A failure leaves the old token in place, is
//! retried with backoff, logged once per kind of failure, counted, and shown in `/healthz` (`token_expiring`
//! once the renewal window has begun, `renewal_failed` before).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::device_key::DeviceKey;
use super::token::{verify_plex_jwt, TokenKind};
use super::{PlexTv, PlexTvError};
use crate::backoff::Backoff;
use crate::plex::http::PlexHttp;
use crate::plex::PlexError;
use crate::secret::Secret;
use crate::telemetry::health::{rfc3339, Problem, TokenStatus};
use crate::telemetry::telemetry;

/// How often the token file is looked at again while nothing is due (a `login` may have replaced it).
const RECHECK: Duration = Duration::from_secs(3600);

/// Shared between the renewer and the supervisors of the servers using its token file.
#[derive(Clone, Debug, Default)]
pub struct RenewalHandle {
    wake: Arc<Notify>,
    renewed: Option<watch::Receiver<u64>>,
}

impl RenewalHandle {
    /// A Plex server refused the token: renew now (at most once per retry delay).
    pub fn rejected(&self) {
        self.wake.notify_one();
    }

    /// Marks every renewal so far as seen, so [`RenewalHandle::renewed`] waits for the next one (a supervisor calls
    /// it before each attempt, which reads the token file anyway).
    pub fn mark_seen(&mut self) {
        if let Some(rx) = &mut self.renewed {
            rx.borrow_and_update();
        }
    }

    /// Resolves when the token file was renewed after this handle last saw it (never without a renewer).
    pub async fn renewed(&mut self) {
        match &mut self.renewed {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// One token file's renewer.
pub struct Renewer {
    pub token_file: PathBuf,
    pub key_file: PathBuf,
    pub plextv_url: url::Url,
    pub device_name: String,
    pub renew_before: Duration,
    pub request_timeout: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// The servers that use this token (label, REST client), to check a new token before it is written.
    pub servers: Vec<(String, PlexHttp)>,
}

/// What the renewer's loop learned from one look at the file.
enum Next {
    Renew,
    Wait(Duration),
}

impl Renewer {
    /// Starts the renewer and returns the handle the supervisors share.
    pub fn spawn(self, cancel: CancellationToken) -> RenewalHandle {
        let (tx, rx) = watch::channel(0u64);
        let handle = RenewalHandle { renewed: Some(rx), ..RenewalHandle::default() };
        let task_handle = handle.clone();
        tokio::spawn(tracing::Instrument::instrument(self.run(task_handle, tx, cancel), tracing::info_span!("token")));
        handle
    }

    async fn run(self, handle: RenewalHandle, renewed: watch::Sender<u64>, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.retry_min, self.retry_max);
        let mut last_failure: Option<&'static str> = None;
        let mut missing_key_logged = false;
        let mut woken = false;
        // A renewal failed: it is tried again when its backoff is over, whatever caused it (a 401 or the
        // schedule), not at the next 401 or the next look at the file.
        let mut retry_pending = false;
        // What `/healthz` shows of this token file, reported to the health registry on every look.
        let mut status = TokenStatus::default();
        let file = self.token_file.display().to_string();
        // No renewal of any kind before this: the backoff after a failure, `retry_min` after a success (so a 401
        // storm from several servers or reconnects cannot make the bridge hammer plex.tv).
        let mut quiet_until: Option<tokio::time::Instant> = None;
        // No *scheduled* renewal before this: half the remaining life of the token renewed last, so a
        // `renew_before` as long as a token's whole life cannot make a renewal loop.
        let mut scheduled_not_before: Option<SystemTime> = None;
        loop {
            let next = self
                .look(&file, &mut status, woken || retry_pending, scheduled_not_before, &mut missing_key_logged)
                .unwrap_or(Next::Wait(RECHECK));
            telemetry().health().set_token_status(&file, status.clone());
            woken = false;
            let delay = match next {
                Next::Wait(delay) => delay,
                Next::Renew => {
                    if let Some(until) = quiet_until {
                        tokio::select! {
                            () = tokio::time::sleep_until(until) => {}
                            () = cancel.cancelled() => return,
                        }
                    }
                    match self.renew().await {
                        Ok(expires_at) => {
                            backoff.reset();
                            last_failure = None;
                            retry_pending = false;
                            status.retry_at = None;
                            quiet_until = Some(tokio::time::Instant::now() + self.retry_min);
                            let now = SystemTime::now();
                            scheduled_not_before = expires_at
                                .and_then(|at| at.duration_since(now).ok())
                                .and_then(|left| now.checked_add(left / 2));
                            // A rejection reported while this renewal ran was about the old token.
                            let _ = futures_util::FutureExt::now_or_never(handle.wake.notified());
                            renewed.send_modify(|n| *n += 1);
                            telemetry().token_renewal(true);
                            tracing::info!(file = %self.token_file.display(),
                                expires_at = %expires_at.map_or_else(|| "unknown".to_owned(), rfc3339),
                                "Plex token renewed");
                            // The status (problem cleared, the new expiry) is read and reported at once, above.
                            status.problem = None;
                            continue;
                        }
                        Err(error) => {
                            telemetry().token_renewal(false);
                            let delay = backoff.next_delay();
                            quiet_until = Some(tokio::time::Instant::now() + delay);
                            let expiring = status.expires_at.is_some_and(|at| {
                                at.duration_since(SystemTime::now()).unwrap_or_default() <= self.renew_before
                            });
                            let reason = if expiring { "token_expiring" } else { "renewal_failed" };
                            if last_failure != Some(error.kind()) {
                                tracing::warn!(%error, retry_in = ?delay, file = %self.token_file.display(),
                                    "cannot renew the Plex token; the current one stays in place");
                                last_failure = Some(error.kind());
                            } else {
                                tracing::debug!(%error, retry_in = ?delay, "token renewal failed again");
                            }
                            status.problem = Some(Problem { reason, error: error.to_string() });
                            status.retry_at = SystemTime::now().checked_add(delay);
                            retry_pending = true;
                            telemetry().health().set_token_status(&file, status.clone());
                            delay
                        }
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = handle.wake.notified() => woken = true,
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Reads the token file and decides what to do; updates the status. `None`: nothing can be done now.
    fn look(
        &self,
        file: &str,
        status: &mut TokenStatus,
        woken: bool,
        scheduled_not_before: Option<SystemTime>,
        missing_key_logged: &mut bool,
    ) -> Option<Next> {
        let token = std::fs::read_to_string(&self.token_file).ok().map(Secret::new)?;
        let kind = TokenKind::of(token.expose());
        let key_present = self.key_file.exists();
        let expires_at = match kind {
            TokenKind::Jwt { expires_at } => expires_at,
            TokenKind::Legacy => None,
        };
        status.kind = Some(kind.name());
        status.expires_at = expires_at;
        status.renewable = matches!(kind, TokenKind::Jwt { .. }) && key_present;
        if key_present && status.problem.as_ref().is_some_and(|p| p.reason == "no_device_key") {
            status.problem = None;
        }
        if let Some(at) = expires_at {
            telemetry().token_expiry(file, at);
        }
        if !matches!(kind, TokenKind::Jwt { .. }) {
            return None;
        }
        if !key_present {
            if !*missing_key_logged {
                tracing::warn!(file = %self.token_file.display(), key_file = %self.key_file.display(),
                    expires_at = %expires_at.map_or_else(|| "unknown".to_owned(), rfc3339),
                    "the token is a Plex JWT but there is no device key to renew it; run `plex-mqtt-bridge login` to set up renewal");
                *missing_key_logged = true;
            }
            let error = format!("no device key file at {}", self.key_file.display());
            status.problem = Some(Problem { reason: "no_device_key", error });
            return None;
        }
        *missing_key_logged = false;
        let due = expires_at.and_then(|at| at.checked_sub(self.renew_before)).map(|due| match scheduled_not_before {
            Some(not_before) if not_before > due => not_before,
            _ => due,
        });
        let now = SystemTime::now();
        match due {
            _ if woken => Some(Next::Renew),
            Some(due) if due <= now => Some(Next::Renew),
            Some(due) => Some(Next::Wait(due.duration_since(now).unwrap_or_default().min(RECHECK))),
            None => Some(Next::Wait(RECHECK)),
        }
    }

    /// One renewal; on success the file holds the new token and its expiry is returned.
    async fn renew(&self) -> Result<Option<SystemTime>, PlexTvError> {
        let key = DeviceKey::load(&self.key_file)?;
        let plextv = PlexTv::new(&self.plextv_url, key.client_identifier(), &self.device_name, self.request_timeout)?;
        let token = plextv.exchange(&key).await?;
        let keys = plextv.keys().await?;
        let claims = verify_plex_jwt(token.expose(), &keys)?;
        self.check_with_servers(&token).await?;
        crate::atomic_file::write_private(&self.token_file, format!("{}\n", token.expose()).as_bytes())
            .map_err(|e| PlexTvError::Key(format!("cannot write the token file {}: {e}", self.token_file.display())))?;
        Ok(Some(SystemTime::UNIX_EPOCH + Duration::from_secs(claims.exp)))
    }

    /// The new token must be accepted by at least one of the servers, and refused by none that accepts the
    /// current token (a server that refuses both — access removed — says nothing about the new one).
    async fn check_with_servers(&self, token: &Secret) -> Result<(), PlexTvError> {
        let current = std::fs::read_to_string(&self.token_file).ok().map(Secret::new);
        let mut accepted = 0;
        let mut unreachable = Vec::new();
        for (label, http) in &self.servers {
            match accepts(http, token).await {
                Ok(()) => accepted += 1,
                Err(PlexError::Unauthorized(status)) => {
                    let current_works = match &current {
                        Some(current) => accepts(http, current).await.is_ok(),
                        None => false,
                    };
                    if current_works {
                        return Err(PlexTvError::BadToken(format!(
                            "was refused by the Plex server {label} (HTTP {status}) where the current one works; kept \
                             the current one"
                        )));
                    }
                    tracing::debug!(server = %label, status, "the server refuses the current token and the new one");
                }
                Err(error) => unreachable.push(format!("{label}: {error}")),
            }
        }
        if accepted == 0 && !self.servers.is_empty() {
            let why = if unreachable.is_empty() { "refused everywhere".to_owned() } else { unreachable.join("; ") };
            return Err(PlexTvError::BadToken(format!(
                "could not be confirmed by any Plex server ({why}); kept the old one"
            )));
        }
        Ok(())
    }
}

/// Whether a server takes `token`: `/` proves it is accepted; `/status/sessions` that it reaches what the bridge
/// reads (tokens with too narrow a scope have been seen to pass the first and fail the second). Only a refusal
/// there counts against it.
async fn accepts(http: &PlexHttp, token: &Secret) -> Result<(), PlexError> {
    let http = http.with_token(token.clone());
    http.identity().await?;
    match http.get_bytes("/status/sessions").await {
        Err(error @ PlexError::Unauthorized(_)) => Err(error),
        _ => Ok(()),
    }
}
