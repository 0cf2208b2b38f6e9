//! One send and how it settles: hand the message to the connector and wait for its answer;
//! a platform pause (throttling) is waited out without using up an attempt, a retryable
//! failure is retried with backoff up to [`SEND_ATTEMPTS`] times, a refusal drops the message
//! (counted); shutdown or a vanished connector leaves it for redelivery.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use qunbridge_connectors::backoff::Backoff;
use qunbridge_connectors::context::now_ms;
use qunbridge_connectors::{
    EgressCommand, EgressRequest, Outbound, PrepareRequest, RelatedMessages, SendError, SendReceipt,
};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::AccountEgress;
use crate::metrics::{count_drop, record_relay_latency, RATE_LIMITED};

/// Send attempts for a retryable failure before the message is dropped.
const SEND_ATTEMPTS: u32 = 5;

/// How a send ended.
pub(crate) enum Settlement {
    /// The platform took it.
    Sent(SendReceipt),
    /// Refused or out of retries: dropped and counted.
    Dropped,
    /// Shutdown or a vanished connector: left for redelivery.
    Interrupted,
}

/// Sends one message through the connector, pausing when throttled and retrying retryable
/// failures with backoff. `oldest_ts_ms` is when the oldest message it carries was said (for
/// the latency histogram). Also says whether the platform paused the destination.
pub(crate) async fn send(
    shared: &AccountEgress,
    outbound: &Arc<Outbound>,
    related: &RelatedMessages,
    oldest_ts_ms: u64,
) -> (Settlement, bool) {
    let mut throttled = false;
    let settlement =
        send_until_settled(shared, outbound, related, oldest_ts_ms, &mut throttled).await;
    (settlement, throttled)
}

/// The loop of [`send`].
async fn send_until_settled(
    shared: &AccountEgress,
    outbound: &Arc<Outbound>,
    related: &RelatedMessages,
    oldest_ts_ms: u64,
    throttled: &mut bool,
) -> Settlement {
    let account = shared.account.as_str();
    let mut backoff = Backoff::reconnect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (reply, outcome) = oneshot::channel();
        let request = EgressRequest {
            outbound: outbound.clone(),
            related: related.clone(),
            reply,
        };
        if shared
            .connector
            .send(EgressCommand::Send(request))
            .await
            .is_err()
        {
            warn!(message = "Connector is not taking messages; left for redelivery.", account = %account);
            return Settlement::Interrupted;
        }
        let outcome = tokio::select! {
            _ = shared.stop.cancelled() => return Settlement::Interrupted,
            outcome = outcome => outcome,
        };
        let delay = match outcome {
            Ok(Ok(receipt)) => {
                record_sent(account, outbound, &receipt, oldest_ts_ms);
                return Settlement::Sent(receipt);
            }
            Ok(Err(SendError::Permanent(reason))) => {
                warn!(message = "Send refused; message dropped.", account = %account, group = %outbound.group, link = %outbound.link, %reason);
                count_drop("send_failed");
                return Settlement::Dropped;
            }
            Ok(Err(SendError::Throttled(pause))) => {
                // The platform's own pacing, not a failure: wait it out without using up an
                // attempt. What queues up meanwhile is merged into the next send.
                attempt -= 1;
                *throttled = true;
                metrics::counter!(RATE_LIMITED, "account" => account.to_owned()).increment(1);
                warn!(message = "Throttled by the platform; pausing this destination.", account = %account, group = %outbound.group, pause_ms = pause.as_millis() as u64);
                pause
            }
            Ok(Err(SendError::Retryable(reason))) if attempt < SEND_ATTEMPTS => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(1));
                warn!(message = "Send failed; retrying.", account = %account, group = %outbound.group, %reason, attempt, retry_in_ms = delay.as_millis() as u64);
                delay
            }
            Ok(Err(SendError::Retryable(reason))) => {
                warn!(message = "Send failed after retries; message dropped.", account = %account, group = %outbound.group, link = %outbound.link, %reason, attempts = SEND_ATTEMPTS);
                count_drop("send_failed");
                return Settlement::Dropped;
            }
            Err(_) => {
                warn!(message = "Connector dropped a send without answering; left for redelivery.", account = %account);
                return Settlement::Interrupted;
            }
        };
        tokio::select! {
            _ = shared.stop.cancelled() => return Settlement::Interrupted,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Has the pictures of `outbounds`, the messages the next send may carry, fetched into the
/// cache and uploaded by the connector (which sends nothing), within `[media] wait` in all:
/// the send, once it has its pacing token, then goes out at once. What is not done by then
/// is left to the send, which shows the placeholder of whatever could not be had.
pub(crate) async fn prepare_ahead(shared: &AccountEgress, outbounds: &[Arc<Outbound>]) {
    let Some(wait) = shared.media.wait() else {
        return;
    };
    let prepared = async {
        join_all(outbounds.iter().map(|outbound| shared.media.warm(outbound))).await;
        let mut uploads = Vec::with_capacity(outbounds.len());
        for outbound in outbounds {
            let (done, finished) = oneshot::channel();
            let request = PrepareRequest {
                outbound: outbound.clone(),
                done,
            };
            if shared
                .connector
                .send(EgressCommand::Prepare(request))
                .await
                .is_err()
            {
                return;
            }
            uploads.push(finished);
        }
        join_all(uploads).await;
    };
    if tokio::time::timeout(wait, prepared).await.is_err() {
        debug!(message = "Pictures not ready within the media wait; the send shows what is not as its placeholder.", account = %shared.account);
    }
}

/// What the platform answers for one send.
pub(crate) type Answer = oneshot::Receiver<Result<SendReceipt, SendError>>;

/// Hands one message to the connector without waiting for its answer (a window of sends in
/// flight, for a connector that takes and answers sends in order). `None` when the connector
/// no longer takes messages.
pub(crate) async fn submit(
    shared: &AccountEgress,
    outbound: &Arc<Outbound>,
    related: &RelatedMessages,
) -> Option<Answer> {
    let (reply, answer) = oneshot::channel();
    let request = EgressRequest {
        outbound: outbound.clone(),
        related: related.clone(),
        reply,
    };
    shared
        .connector
        .send(EgressCommand::Send(request))
        .await
        .ok()?;
    Some(answer)
}

/// Settles an answer of [`submit`] (`None`: the connector dropped it): a success is final; a
/// failure goes through the whole
/// [`send`] path (retries, platform pauses, refusal) for that message.
pub(crate) async fn settle_answer(
    shared: &AccountEgress,
    outbound: &Arc<Outbound>,
    related: &RelatedMessages,
    oldest_ts_ms: u64,
    answer: Option<Result<SendReceipt, SendError>>,
) -> Settlement {
    match answer {
        Some(Ok(receipt)) => {
            record_sent(&shared.account, outbound, &receipt, oldest_ts_ms);
            Settlement::Sent(receipt)
        }
        Some(Err(_)) => send(shared, outbound, related, oldest_ts_ms).await.0,
        None => {
            warn!(message = "Connector dropped a send without answering; left for redelivery.", account = %shared.account);
            Settlement::Interrupted
        }
    }
}

/// Counts a message the platform took: its latency from the origin's timestamp.
fn record_sent(account: &str, outbound: &Outbound, receipt: &SendReceipt, oldest_ts_ms: u64) {
    let latency = now_ms().saturating_sub(oldest_ts_ms) as f64 / 1000.0;
    record_relay_latency(latency);
    debug!(message = "Sent.", account = %account, group = %outbound.group, ids = ?receipt.message_ids);
}
