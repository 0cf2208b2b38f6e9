//! Publishing an account's OneBot inbound messages in arrival order, with a window of
//! publishes in flight: each queued item is readied by its [`Version`] (a v12 message being
//! completed finishes within the resolver's wait), then submitted to the relay
//! ([`Ingress::submit`]: submits awaited one after another reach the broker in that order),
//! and its confirmation (the broker's PUBACK) is awaited later, in order, while up to
//! [`WINDOW`] more are submitted behind it. A full window stops the taking of items; the
//! event queue then fills and the socket readers stop reading (see [`super::connection`]).
//!
//! OneBot cannot redeliver, so nothing read is given up while the daemon takes input:
//!
//! - A submit that fails (flow control found no room within its wait: [`IngressError::Busy`];
//!   or the relay's client stopped) is tried again, after a pause, for that same envelope
//!   before any later one is submitted: order is kept.
//! - A confirmation that fails (no PUBACK in time, the connection to the broker lost) means
//!   that envelope must be published again. The choice made here: once one failed, no new
//!   envelope is submitted until every confirmation in flight has settled; then the envelopes
//!   whose confirmations failed are submitted again, in their arrival order, before anything
//!   newer. So the copies that finally reach the broker keep arrival order among themselves
//!   and ahead of everything later; only an envelope already confirmed can have reached the
//!   relay before an earlier one that had to be sent again (the price of a window: with one
//!   publish at a time there would be none). A publish whose PUBACK was lost may arrive
//!   twice: the relay drops the second by its envelope id.
//! - An envelope the relay calls malformed ([`IngressError::Encode`]) can never be taken; it is
//!   logged and counted as dropped (`malformed`) instead of holding up the rest forever.
//!
//! `qunbridge_messages_received_total` counts each envelope once, when its publish is
//! confirmed. When intake stops, what was already read is still submitted (the daemon's drain
//! waits for it); a retry that is still waiting then is given up and counted as dropped
//! (`shutdown`).

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::version::Version;
use crate::backoff::Backoff;
use crate::context::{Confirmed, Ingress};
use crate::error::IngressError;
use crate::model::{Envelope, Platform};

/// Publishes in flight at once (submitted, broker acknowledgement not yet seen).
pub const WINDOW: usize = 64;
/// Pause before offering an envelope again after flow control found no room (the submit
/// itself already waited for room; this only keeps a sink that refuses at once from being
/// asked in a tight loop).
const BUSY_PAUSE: Duration = Duration::from_millis(100);

/// One inbound item on its way to ingress, in arrival order, in both versions.
pub enum IngressItem {
    /// Complete: publish as is.
    Ready(Box<Envelope>),
    /// Being completed (a v12 message's names and picture URLs, a member notice's name):
    /// the task ends within its version's short lookup wait (plus scheduling).
    Resolving(JoinHandle<Envelope>),
}

/// The envelope of an item, once its lookups answered or their wait ran out; `None` when the
/// task completing it failed (logged and counted as dropped, `malformed`).
pub async fn ready_item(account: &str, item: IngressItem) -> Option<Envelope> {
    match item {
        IngressItem::Ready(envelope) => Some(*envelope),
        IngressItem::Resolving(task) => match task.await {
            Ok(envelope) => Some(envelope),
            Err(error) => {
                warn!(message = "Completing an inbound message failed; dropped.", account = %account, %error);
                crate::metrics::count_drop("malformed");
                None
            }
        },
    }
}

/// A publish in flight: resolves, in order, to its envelope and the broker's answer.
type InFlight = BoxFuture<'static, (Envelope, Result<(), IngressError>)>;

/// Publishes items until the channel closes (every session of the account ended) and every
/// publish in flight has settled.
pub async fn publish_in_order<V: Version>(
    account: String,
    ingress: Ingress,
    mut items: mpsc::Receiver<V::Queued>,
    intake: CancellationToken,
) {
    let mut window: FuturesOrdered<InFlight> = FuturesOrdered::new();
    let mut received = ReceivedCounter {
        account: account.clone(),
        series: None,
    };
    // Envelopes whose confirmation failed since the window last settled, in arrival order.
    let mut again: Vec<Envelope> = Vec::new();
    // Paces submitting the failed ones again while confirmations keep failing.
    let mut backoff = Backoff::reconnect();
    let mut open = true;
    loop {
        if window.is_empty() && !again.is_empty() {
            let delay = backoff.next().unwrap_or(Duration::from_secs(1));
            if !pause(delay, &intake).await {
                crate::metrics::count_drops("shutdown", again.len() as u64);
                again.clear();
                continue;
            }
            for envelope in std::mem::take(&mut again) {
                if let Some(in_flight) = submit(&account, &ingress, envelope, &intake).await {
                    window.push_back(in_flight);
                }
            }
            continue;
        }
        tokio::select! {
            biased;
            Some((envelope, outcome)) = window.next(), if !window.is_empty() => match outcome {
                Ok(()) => {
                    backoff.reset();
                    received.count(&envelope);
                }
                Err(error) => {
                    warn!(message = "An inbound message was not confirmed by the broker; publishing it again.", account = %account, id = %envelope.id, %error);
                    again.push(envelope);
                }
            },
            item = items.recv(), if open && again.is_empty() && window.len() < WINDOW => match item {
                Some(item) => {
                    let Some(envelope) = V::ready(&account, item).await else {
                        continue;
                    };
                    if let Some(in_flight) = submit(&account, &ingress, envelope, &intake).await {
                        window.push_back(in_flight);
                    }
                }
                None => open = false,
            },
            else => break,
        }
    }
}

/// Submits an envelope, offering it again after each refusal until the relay takes it;
/// `None` when it was given up (intake stopped while retrying, or malformed), counted.
async fn submit(
    account: &str,
    ingress: &Ingress,
    envelope: Envelope,
    intake: &CancellationToken,
) -> Option<InFlight> {
    let mut backoff = Backoff::reconnect();
    loop {
        let error = match ingress.submit(envelope.clone()).await {
            Ok(confirmed) => return Some(confirm(envelope, confirmed)),
            Err(error) => error,
        };
        let delay = match &error {
            IngressError::Encode(reason) => {
                error!(message = "The relay cannot take an inbound message; dropped.", account = %account, id = %envelope.id, %reason);
                crate::metrics::count_drop("malformed");
                return None;
            }
            IngressError::Busy { .. } => {
                debug!(message = "At capacity: an inbound message waits for room (OneBot events wait in the socket).", account = %account);
                BUSY_PAUSE
            }
            IngressError::Closed | IngressError::Timeout(_) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(1));
                warn!(message = "Publishing an inbound message failed; retrying.", account = %account, %error, retry_in_ms = delay.as_millis() as u64);
                delay
            }
        };
        if !pause(delay, intake).await {
            crate::metrics::count_drop("shutdown");
            return None;
        }
    }
}

/// A submitted envelope's confirmation, carrying the envelope along for a second publish.
fn confirm(envelope: Envelope, confirmed: Confirmed) -> InFlight {
    Box::pin(async move {
        let outcome = confirmed.await;
        (envelope, outcome)
    })
}

/// Waits `delay`; false when intake stopped first (or had stopped already).
async fn pause(delay: Duration, intake: &CancellationToken) -> bool {
    tokio::select! {
        _ = intake.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Counts the envelopes the broker has (`qunbridge_messages_received_total`), keeping the
/// counter's handle: an account's envelopes all come from its one platform, so the series is
/// looked up once, not per message.
struct ReceivedCounter {
    /// The account whose envelopes are counted.
    account: String,
    /// The series of the platform counted last.
    series: Option<(Platform, metrics::Counter)>,
}

impl ReceivedCounter {
    /// Counts `envelope`.
    fn count(&mut self, envelope: &Envelope) {
        let platform = envelope.origin.platform;
        match &self.series {
            Some((counted, counter)) if *counted == platform => counter.increment(1),
            _ => {
                let counter = metrics::counter!(
                    crate::metrics::MESSAGES_RECEIVED,
                    "account" => self.account.clone(),
                    "platform" => platform.as_str()
                );
                counter.increment(1);
                self.series = Some((platform, counter));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::onebot11::ingress::OneBot11;
    use crate::onebot_ws::testing::{envelope, ScriptedSink, PATIENCE};

    /// Starts ingress on `sink` with a queue as large as `items`, queues them all, and closes
    /// the queue; the task ends once everything settled.
    fn publish(
        sink: &Arc<ScriptedSink>,
        items: impl IntoIterator<Item = u64>,
        intake: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let items: Vec<u64> = items.into_iter().collect();
        let (tx, rx) = mpsc::channel(items.len().max(1));
        for n in items {
            tx.try_send(IngressItem::Ready(Box::new(envelope(n))))
                .expect("room");
        }
        drop(tx);
        tokio::spawn(publish_in_order::<OneBot11>(
            "qq".into(),
            Ingress::new(sink.clone()),
            rx,
            intake.clone(),
        ))
    }

    #[tokio::test]
    async fn a_window_of_publishes_is_in_flight_and_confirmed_in_order() {
        let sink = ScriptedSink::new();
        sink.set_confirming(false);
        let task = publish(&sink, 0..200, &CancellationToken::new());

        // With no PUBACK yet, a full window is submitted, in order, and no more.
        sink.wait_until("a full window", |s| s.submitted().len() == WINDOW)
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(sink.submitted(), (0..WINDOW as u64).collect::<Vec<_>>());
        assert!(sink.confirmed().is_empty());

        sink.set_confirming(true);
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("ingress ends once the queue closed and all settled")
            .expect("joined");
        let all: Vec<u64> = (0..200).collect();
        assert_eq!(sink.submitted(), all, "each submitted once, in order");
        let mut confirmed = sink.confirmed();
        confirmed.sort_unstable();
        assert_eq!(confirmed, all, "each confirmed once");
    }

    #[tokio::test]
    async fn refusals_and_failed_confirmations_are_published_again_in_order() {
        let sink = ScriptedSink::new();
        sink.refuse_next(3);
        sink.fail_confirmation_of(5);
        sink.fail_confirmation_of(6);
        // The PUBACKs come once a full window is out, so the failures are seen late.
        sink.set_confirming(false);
        let task = publish(&sink, 0..100, &CancellationToken::new());
        sink.wait_until("a full window", |s| s.submitted().len() == WINDOW)
            .await;
        sink.set_confirming(true);
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("ingress ends")
            .expect("joined");

        assert_eq!(sink.refused(), 3, "the refused submit was offered again");
        // Everything reached the broker exactly once as far as confirmations go.
        let mut confirmed = sink.confirmed();
        confirmed.sort_unstable();
        assert_eq!(confirmed, (0..100).collect::<Vec<_>>());
        // The failed ones went again, in their order, before anything submitted after their
        // failure was seen: the submits are an increasing run up to some k ≥ 63, then 5 and
        // 6, then k + 1 onwards.
        let submitted = sink.submitted();
        let again = submitted
            .windows(2)
            .position(|pair| pair[1] < pair[0])
            .expect("a second publish")
            + 1;
        let (first, rest) = submitted.split_at(again);
        assert!(
            first.windows(2).all(|pair| pair[0] < pair[1]),
            "{submitted:?}"
        );
        assert!(first.last().is_some_and(|k| *k >= 63), "{submitted:?}");
        let k = first.last().copied().unwrap_or_default();
        let expected_rest: Vec<u64> = [5, 6].into_iter().chain(k + 1..100).collect();
        assert_eq!(rest, expected_rest, "{submitted:?}");
    }

    #[tokio::test]
    async fn after_intake_stops_what_was_read_is_published_and_retries_are_given_up() {
        // Read before intake stopped, and the relay takes it: published.
        let sink = ScriptedSink::new();
        let stopped = CancellationToken::new();
        stopped.cancel();
        let task = publish(&sink, 0..3, &stopped);
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("ingress ends")
            .expect("joined");
        assert_eq!(sink.confirmed(), vec![0, 1, 2]);

        // The relay refuses for good: once intake stops, the retries end (counted as dropped).
        let sink = ScriptedSink::new();
        sink.refuse_next(u32::MAX);
        let intake = CancellationToken::new();
        let task = publish(&sink, 0..3, &intake);
        sink.wait_until("a refusal", |s| s.refused() >= 1).await;
        intake.cancel();
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("ingress ends once intake stopped")
            .expect("joined");
        assert!(sink.submitted().is_empty());
    }
}
