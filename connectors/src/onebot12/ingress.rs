//! Publishing an account's OneBot v12 group events in arrival order: each item is awaited
//! (a message being completed finishes within the resolver's wait) and then handed to the
//! relay. OneBot cannot redeliver, so a failed publish is retried with backoff until it
//! succeeds or the daemon stops taking input.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::resolve::IngressItem;
use crate::backoff::Backoff;
use crate::context::Ingress;

/// Publishes items until the channel closes (every session of the account ended).
pub async fn publish_in_order(
    account: String,
    ingress: Ingress,
    mut items: mpsc::Receiver<IngressItem>,
    intake: CancellationToken,
) {
    while let Some(item) = items.recv().await {
        let envelope = match item {
            IngressItem::Ready(envelope) => *envelope,
            IngressItem::Resolving(task) => match task.await {
                Ok(envelope) => envelope,
                Err(error) => {
                    warn!(message = "Completing an inbound message failed; dropped.", account = %account, %error);
                    metrics::counter!("qunbridge_messages_dropped_total", "reason" => "malformed")
                        .increment(1);
                    continue;
                }
            },
        };
        let mut backoff = Backoff::reconnect();
        loop {
            match ingress.publish(envelope.clone()).await {
                Ok(()) => {
                    metrics::counter!(
                        "qunbridge_messages_received_total",
                        "account" => account.clone(),
                        "platform" => envelope.origin.platform.as_str()
                    )
                    .increment(1);
                    break;
                }
                Err(error) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(1));
                    warn!(message = "Publishing an inbound message failed; retrying.", account = %account, %error, retry_in_ms = delay.as_millis() as u64);
                    tokio::select! {
                        _ = intake.cancelled() => {
                            metrics::counter!("qunbridge_messages_dropped_total", "reason" => "shutdown").increment(1);
                            break;
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}
