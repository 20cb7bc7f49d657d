//! The connection driver: polls the rumqttc event loop for the life of the bridge (rumqttc needs it polled
//! continuously), backs off on errors (it has no backoff of its own), follows acknowledgements in the outbox,
//! re-publishes retained state on every new session and hands subscribed messages to the inbox.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectionError, Event, EventLoop, Packet};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::diagnosis::{describe, SessionHistory};
use super::inbox::Listeners;
use super::startup::StaleScan;
use super::Shared;
use crate::backoff::Backoff;

/// A broker session that lasted this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Polls the rumqttc event loop for the life of the bridge.
pub(super) async fn drive(
    mut eventloop: EventLoop,
    shared: Arc<Shared>,
    connected: watch::Sender<bool>,
    mut backoff: Backoff,
    mut scan: StaleScan,
    mut inbox: Listeners,
    stop: CancellationToken,
) {
    let broker = shared.broker.as_str();
    let mut outage_reported = false;
    let mut last_tls_error = String::new();
    // How the last sessions ended, to name a cause only when the evidence shows it.
    let mut history = SessionHistory::default();
    // When the current broker session was accepted (CONNACK).
    let mut session_started: Option<tokio::time::Instant> = None;
    // This loop runs once per client event — two per message at QoS 1 (written, acknowledged) — so what it waits
    // on besides the client costs nothing per pass: the stop future is made once, and a timer exists only while
    // its deadline does (`select!` builds every branch's future on each pass, enabled or not).
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            () = sleep_until_set(scan.deadline), if scan.deadline.is_some() => {
                scan.finish(&shared);
                continue;
            }
            () = sleep_until_set(inbox.resend_due()), if inbox.resend_due().is_some() => {
                inbox.resend_discovery(&shared);
                continue;
            }
            () = &mut stopped => return,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let (dropped, dropped_answers) = {
                    let mut outbox = shared.outbox();
                    outbox.resend_all_retained();
                    (outbox.dropped(), outbox.dropped_answers())
                };
                tracing::info!(
                    dropped_live_events_total = dropped,
                    dropped_answers_total = dropped_answers,
                    "connected to the MQTT broker"
                );
                outage_reported = false;
                last_tls_error.clear();
                // The backoff is reset only once a connection has lasted (below): a broker that accepts and
                // then drops every connection — another client taking over the client id, an ACL kick — must
                // not be reconnected to at the minimum delay for ever.
                session_started = Some(tokio::time::Instant::now());
                connected.send_replace(true);
                crate::telemetry::telemetry().broker(true);
                shared.wake.notify_one();
                scan.begin();
                inbox.subscribe();
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => scan.subscribed(),
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let Ok(topic) = std::str::from_utf8(&publish.topic) else { continue };
                if !inbox.take(topic, &publish) {
                    scan.collect(topic, &publish, &shared);
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => shared.outbox().written(pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => shared.outbox().acknowledged(ack.pkid),
            Ok(Event::Incoming(Packet::PubComp(ack))) => shared.outbox().acknowledged(ack.pkid),
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                connected.send_replace(false);
                tracing::info!("disconnected from the MQTT broker");
                return;
            }
            Ok(_) => {}
            Err(error) => {
                connected.send_replace(false);
                let reason = describe(&error, broker);
                match session_started.take().map(|at| at.elapsed()) {
                    Some(lasted) if lasted >= STABLE_SESSION => {
                        backoff.reset();
                        history.stable();
                    }
                    Some(lasted) => {
                        if let Some(cause) = history.ended_soon(&error) {
                            tracing::warn!(?lasted, %reason, cause, "the broker keeps closing the connection");
                        }
                    }
                    None => history.attempt_failed(),
                }
                let lost = shared.outbox().connection_lost();
                let telemetry = crate::telemetry::telemetry();
                telemetry.broker(false);
                telemetry.dropped(lost);
                telemetry.reconnect("mqtt", "", if outage_reported { "still_unreachable" } else { "connection_lost" });
                let delay = backoff.next_delay();
                // Logged as an error once per distinct cause: a certificate problem does not fix itself, and the
                // retries would repeat it.
                if matches!(error, ConnectionError::Tls(_)) && reason != last_tls_error {
                    tracing::error!(%broker, %reason, "MQTT TLS connection failed");
                    last_tls_error.clone_from(&reason);
                }
                if outage_reported {
                    tracing::debug!(%reason, retry_in = ?delay, "MQTT broker still unreachable");
                } else {
                    tracing::warn!(%reason, lost_live_events = lost, retry_in = ?delay, "MQTT broker connection lost");
                    outage_reported = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = &mut stopped => return,
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or for ever when there is none; no timer is made until it is first polled.
async fn sleep_until_set(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
