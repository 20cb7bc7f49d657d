//! The sender: moves messages from the outbox into the rumqttc client while the broker is connected (its
//! `publish().await` blocks while the client's request channel is full, so it runs in a task of its own).

use std::sync::Arc;

use rumqttc::{AsyncClient, ClientError, PublishOptions, QoS, Request};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::outbox::{Outgoing, Sent};
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
    let mut batch: Vec<Outgoing> = Vec::with_capacity(super::REQUEST_BATCH);
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
        take_batch(&shared, &mut batch);
        if batch.is_empty() {
            if stop.is_cancelled() {
                let _ = client.disconnect().await;
                return;
            }
            tokio::select! {
                () = shared.wake.notified() => {}
                () = stop.cancelled() => {}
                changed = connected.changed() => if changed.is_err() { return },
            }
            continue;
        }
        let mut count = 0;
        for message in batch.drain(..) {
            // The outbox matches the client's packet ids to messages in hand-over order, so a message is recorded
            // as handed over only once it is in the client's channel, and none is handed to a connection that
            // changed since this batch was taken: the rest of it goes back to the outbox's accounting.
            let sent = Sent::of(&message);
            if connected.has_changed().unwrap_or(true) {
                shared.outbox().not_handed_over(&sent);
                continue;
            }
            match hand_over(&client, message, qos, &connected).await {
                Handed::Yes => shared.outbox().handed_over(sent),
                Handed::ConnectionChanged => {
                    shared.outbox().not_handed_over(&sent);
                    continue;
                }
                Handed::ClientGone => return,
            }
            count += 1;
        }
        crate::telemetry::telemetry().published(count);
    }
}

/// Takes up to a flush's worth of messages from the outbox under one lock (the client writes them with one
/// `writev`), and updates what readers of Plex wait on.
fn take_batch(shared: &Shared, batch: &mut Vec<Outgoing>) {
    let mut outbox = shared.outbox();
    while batch.len() < super::REQUEST_BATCH {
        let Some(message) = outbox.pop() else { break };
        batch.push(message);
    }
    if shared.live_full.load(std::sync::atomic::Ordering::Relaxed) && outbox.live_len() < outbox.live_capacity() {
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
}

/// What became of one message.
enum Handed {
    Yes,
    /// The broker connection changed while it waited for room (the client then forgets what it queued).
    ConnectionChanged,
    /// The client's event loop is gone.
    ClientGone,
}

/// Hands one message to the client: at once while its request channel has room, else waiting for room — unless
/// the connection changes meanwhile, which leaves it unqueued. It waits on a copy of `connected`: waiting marks a
/// change as seen, and the caller must still see it to keep the rest of its batch from the new connection.
async fn hand_over(client: &AsyncClient, message: Outgoing, qos: QoS, connected: &watch::Receiver<bool>) -> Handed {
    let options = PublishOptions::new(qos).retain(message.retain());
    match client.try_publish(message.topic, message.payload, options) {
        Ok(()) => Handed::Yes,
        Err(ClientError::RequestChannelFull(request)) => {
            // Rare (the channel holds a flush's worth): the message comes back in the refused request.
            let Request::Publish(publish) = *request else { return Handed::ClientGone };
            let topic = String::from_utf8_lossy(&publish.topic).into_owned();
            let mut watching = connected.clone();
            tokio::select! {
                sent = client.publish(topic, publish.payload, options) => {
                    if sent.is_ok() { Handed::Yes } else { Handed::ClientGone }
                }
                _ = watching.changed() => Handed::ConnectionChanged,
            }
        }
        Err(_) => Handed::ClientGone,
    }
}
