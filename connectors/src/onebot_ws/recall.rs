//! Recalling the relayed copies of a message, the same in both OneBot versions apart from the
//! action's name and how its answer is read: every copy whose id the relay's message map knows
//! is deleted in turn, a failure is logged and makes the whole recall fail (the relay then
//! retries it), and a message with no known copy here is done at once.

use std::future::Future;

use tracing::{debug, warn};

use crate::context::{RelatedMessages, SendReceipt};
use crate::error::SendError;
use crate::model::Outbound;

/// Deletes every known copy of a recalled message with `delete`, one after the other.
///
/// # Errors
/// The last [`SendError`] of a copy that could not be deleted (the others were still tried).
pub async fn each_copy<F, Fut>(
    account: &str,
    outbound: &Outbound,
    related: &RelatedMessages,
    mut delete: F,
) -> Result<SendReceipt, SendError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(), SendError>>,
{
    if related.recall.is_empty() {
        debug!(message = "Nothing to recall: no relayed copy with a known id here.", account = %account, group = %outbound.group);
        return Ok(SendReceipt::default());
    }
    let mut result = Ok(SendReceipt::default());
    for id in &related.recall {
        let outcome = delete(id.clone()).await;
        if let Err(error) = &outcome {
            warn!(message = "Recall of a relayed copy failed.", account = %account, group = %outbound.group, %error);
        }
        result = result.and(outcome.map(|()| SendReceipt::default()));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Platform};

    fn recall_of(group: &str) -> Outbound {
        Outbound::sample(Kind::Recall, Platform::Qq, group)
    }

    #[tokio::test]
    async fn every_copy_is_tried_and_one_failure_fails_the_recall() {
        let outbound = recall_of("735021844");
        let nothing_known = RelatedMessages::default();
        let untouched = each_copy("a", &outbound, &nothing_known, |_| async {
            Err(SendError::Permanent("must not be called".into()))
        })
        .await;
        assert_eq!(untouched, Ok(SendReceipt::default()));

        let related = RelatedMessages {
            recall: vec!["1".into(), "2".into(), "3".into()],
            ..Default::default()
        };
        let mut tried = Vec::new();
        let outcome = each_copy("a", &outbound, &related, |id| {
            tried.push(id.clone());
            async move {
                if id == "2" {
                    Err(SendError::Retryable("gone".into()))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(tried, ["1", "2", "3"]);
        assert_eq!(outcome, Err(SendError::Retryable("gone".into())));
    }
}
