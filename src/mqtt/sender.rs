//! The sender: moves messages from the outbox into the rumqttc client while the broker is connected (its
//! `publish().await` blocks while the client's request channel is full, so it runs in a task of its own).

use std::sync::Arc;

use rumqttc::{AsyncClient, PublishOptions, QoS};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::outbox::Outgoing;
use super::publisher::room_again;
use super::Shared;

/// Moves messages from the outbox into the client while connected. On stop it sends what is left (if
/// connected) and then DISCONNECT, which makes the driver return.
pub(super) async fn send(
    client: AsyncClient,
    shared: Arc<Shared>,
    qos: QoS,
    mut connected: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    loop {
        if !*connected.borrow_and_update() {
            if stop.is_cancelled() {
                return;
            }
            tokio::select! {
                changed = connected.changed() => if changed.is_err() { return },
                () = stop.cancelled() => {}
            }
            continue;
        }
        let next = {
            let mut outbox = shared.outbox();
            let next = outbox.pop();
            if let Some(message) = &next {
                outbox.handed_over(message);
            }
            if shared.live_full.load(std::sync::atomic::Ordering::Relaxed) && outbox.live_len() < outbox.live_capacity()
            {
                shared.live_full.store(false, std::sync::atomic::Ordering::Release);
            }
            if outbox.live_len() < room_again(outbox.live_capacity())
                && shared.room_wanted.swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                shared.room.notify_waiters();
            }
            if let Some(dropped) = outbox.end_overflow_episode() {
                tracing::warn!(
                    dropped,
                    dropped_total = outbox.dropped(),
                    "live-event queue has room again; this many live events were dropped while it was full"
                );
            }
            next
        };
        match next {
            Some(message) => {
                let retain = message.retain();
                let Outgoing { topic, payload, .. } = message;
                if client.publish(topic, payload, PublishOptions::new(qos).retain(retain)).await.is_err() {
                    return; // the event loop is gone
                }
                crate::telemetry::telemetry().published();
            }
            None if stop.is_cancelled() => {
                let _ = client.disconnect().await;
                return;
            }
            None => {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = stop.cancelled() => {}
                    changed = connected.changed() => if changed.is_err() { return },
                }
            }
        }
    }
}
