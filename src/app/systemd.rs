//! systemd `Type=notify`: READY once the broker is connected, STATUS with each part's state (from the health
//! registry), WATCHDOG pings from this task (so a stuck runtime stops them).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::sd_notify;
use crate::telemetry::telemetry;

/// Reports until `stop`; returns at once when not started by systemd.
pub(super) async fn report(mut broker: tokio::sync::watch::Receiver<bool>, stop: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    tokio::select! {
        _ = broker.wait_for(|up| *up) => {}
        () = stop.cancelled() => return,
    }
    sd_notify::notify("READY=1");
    let watchdog = sd_notify::watchdog_interval();
    let mut tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(5)).min(Duration::from_secs(5)));
    let mut last_status = String::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if watchdog.is_some() {
            sd_notify::notify("WATCHDOG=1");
        }
        let status = telemetry().health().snapshot().systemd_status();
        if status != last_status {
            sd_notify::notify(&format!("STATUS={status}"));
            last_status = status;
        }
    }
}
