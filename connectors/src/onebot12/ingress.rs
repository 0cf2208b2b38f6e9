//! Publishing an account's OneBot v12 group events in arrival order: each item is awaited
//! (a message being completed finishes within the resolver's wait) and then handed to the
//! relay. OneBot cannot redeliver, so a failed publish is retried with backoff until it
//! succeeds or the daemon stops taking input.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::resolve::IngressItem;
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
        ingress
            .publish_until_accepted(&account, envelope, &intake)
            .await;
    }
}
