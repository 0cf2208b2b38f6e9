//! Sending to QQ (or WeChat) groups through a OneBot v11 implementation: one
//! `send_group_msg` with the rendered array message per relayed message, and `delete_msg`
//! for every known copy of a recalled one. Retcodes 1400/1404 (bad request, unknown action)
//! are permanent; everything else, including 100 (blocked by the server) and NapCat's 1200
//! (risk-control timeout), is retried by the relay a bounded number of times.

use serde_json::{json, Value};

use super::action::{self, Outcome};
use super::event;
use crate::context::SendReceipt;
use crate::error::SendError;
use crate::model::Platform;
use crate::onebot_ws::{recall, ActionSender, CallError, Outgoing};

/// Retcodes that mean the request itself is wrong (bad request, unknown action): retrying
/// will not help.
const PERMANENT_RETCODES: [i64; 2] = [1400, 1404];

/// The egress side of one v11 account.
pub struct Egress {
    /// Account id, for logs.
    account: String,
    /// The destination's platform: QQ faces stay faces only between QQ groups.
    platform: Platform,
}

impl Egress {
    /// The egress of one account on `platform`.
    pub fn new(account: String, platform: Platform) -> Egress {
        Egress { account, platform }
    }
}

impl ActionSender for Egress {
    async fn message(&self, out: Outgoing<'_>) -> Result<SendReceipt, SendError> {
        let message = action::render_message(out.outbound, out.related, self.platform);
        let params = json!({
            "group_id": action::id_value(&out.outbound.group),
            "message": message,
            "auto_escape": false,
        });
        send_outcome(out.session.call("send_group_msg", params).await)
    }

    async fn recall(&self, out: Outgoing<'_>) -> Result<SendReceipt, SendError> {
        let session = out.session;
        recall::each_copy(&self.account, out.outbound, out.related, |id| async move {
            let params = json!({ "message_id": action::id_value(&id) });
            send_outcome(session.call("delete_msg", params).await).map(|_| ())
        })
        .await
    }
}

/// Maps an action's result to a send outcome.
fn send_outcome(result: Result<Value, CallError>) -> Result<SendReceipt, SendError> {
    let body = result.map_err(|error| SendError::Retryable(error.to_string()))?;
    match action::outcome(&body) {
        Outcome::Ok(data) => Ok(SendReceipt {
            message_ids: event::id_of(data.get("message_id")).into_iter().collect(),
        }),
        Outcome::Failed { retcode, message } if PERMANENT_RETCODES.contains(&retcode) => Err(
            SendError::Permanent(format!("retcode {retcode}: {message}")),
        ),
        Outcome::Failed { retcode, message } => Err(SendError::Retryable(format!(
            "retcode {retcode}: {message}"
        ))),
    }
}
