//! Publishing an account's OneBot inbound messages in arrival order: each queued item is
//! readied by its [`Version`] (a v12 message being completed finishes within the resolver's
//! wait) and then handed to the relay. OneBot cannot redeliver, so a failed publish is
//! retried with backoff until it succeeds or the daemon stops taking input.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::version::Version;
use crate::context::Ingress;

/// Publishes items until the channel closes (every session of the account ended).
pub async fn publish_in_order<V: Version>(
    account: String,
    ingress: Ingress,
    mut items: mpsc::Receiver<V::Queued>,
    intake: CancellationToken,
) {
    while let Some(item) = items.recv().await {
        let Some(envelope) = V::ready(&account, item).await else {
            continue;
        };
        ingress
            .publish_until_accepted(&account, envelope, &intake)
            .await;
    }
}
