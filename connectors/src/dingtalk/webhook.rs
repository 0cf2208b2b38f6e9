//! Sending through a DingTalk custom robot webhook (PROTOCOLS.md §3.7): a signed POST of a
//! text message, with the robot's keyword ensured, and the `errcode` of the answer checked
//! (DingTalk answers HTTP 200 for refusals too).
//!
//! - `130101` (sending too fast): the robot is paused and [`SendError::Throttled`] tells the
//!   relay to wait. The first pause is 60 s, or the `Retry-After` seconds when the answer
//!   carries that header; each further 130101 in a row doubles it, up to 10 minutes; a
//!   success resets it. Sends asked for during a pause are answered `Throttled` without
//!   touching the network.
//! - `310000` (security settings: keyword, signature or IP whitelist): a configuration
//!   problem. One error log names the likely cause and the message is refused for good
//!   ([`SendError::Permanent`]), so it is never retried in a loop.
//! - Any other non-zero `errcode`: refused for good, with the platform's `errmsg`.
//! - Pictures: with the media server configured, each follows the text as a markdown
//!   message `![](<signed link>)` (with the keyword, as the text); without it, its
//!   placeholder stays in the text ([`super::pictures::webhook_plan`]). A picture message
//!   that fails is sent as its placeholder and never fails the message.

use serde_json::{json, Value};
use tracing::{error, info};

use super::openapi::clip;
use super::sign::signed_url;
use super::text::{self, Sent};
use super::WebhookSettings;
use crate::context::{now_ms, SendReceipt};
use crate::error::SendError;
use crate::media::MediaContext;
use crate::model::{Outbound, Platform};
use crate::robot::RobotState;

/// The errcode of "send too fast, exceed 20 times per minute".
pub const ERR_TOO_FAST: i64 = 130_101;
/// The errcode of a refusal by the robot's security settings.
pub const ERR_SECURITY: i64 = 310_000;
/// Most bytes of text per webhook message (as a JSON string). No limit is documented; this is
/// the OpenAPI's limit, a conservative choice.
const MAX_TEXT_BYTES: usize = 15_000;
/// How errors name this robot.
const ROBOT: &str = "DingTalk robot";

/// What a 310000 answer most likely means, from its `errmsg`.
pub fn security_hint(errmsg: &str) -> &'static str {
    let lower = errmsg.to_lowercase();
    if lower.contains("keyword") || errmsg.contains("关键词") {
        "the message lacks the robot's keyword: set `keyword` to one of the keywords in the robot's security settings"
    } else if lower.contains("sign") || errmsg.contains("签名") {
        "the signature was refused: set `secret` to the robot's SEC… signing secret and check this host's clock"
    } else if lower.contains("ip") || errmsg.contains("白名单") {
        "this host's IP address is not in the robot's IP whitelist"
    } else {
        "the robot's security settings refused the message: check its keyword, signing secret and IP whitelist against `keyword` and `secret`"
    }
}

/// The sender of one webhook account.
pub struct Webhook {
    /// Account, HTTP client, pause and progress, as every robot keeps them.
    state: RobotState<Sent>,
    /// URL, signing secret and keyword.
    settings: WebhookSettings,
    /// The account's media mode, service and link signer.
    media: MediaContext,
}

impl Webhook {
    /// A sender for one account.
    pub fn new(account: String, settings: WebhookSettings, http: reqwest::Client) -> Webhook {
        Webhook {
            state: RobotState::new(ROBOT, account, http),
            settings,
            media: MediaContext::default(),
        }
    }

    /// The sender with the account's media context (pictures are carried as its mode says).
    pub fn with_media(mut self, media: MediaContext) -> Webhook {
        self.media = media;
        self
    }

    /// Sends an outbound message (split when very long; a retry resumes after the parts
    /// already sent).
    ///
    /// # Errors
    /// [`SendError`] as described in the module documentation.
    pub async fn send(&mut self, outbound: &Outbound) -> Result<SendReceipt, SendError> {
        if let Some(answer) = self.state.answer_without_sending(outbound) {
            return answer;
        }
        let keyword = self.settings.keyword.clone();
        let keyword_cost: usize = keyword.as_deref().map_or(0, |k| text::cost(k) + 1);
        let (text, links) = super::pictures::webhook_plan(&self.media, outbound).await;
        let parts = text::split(&text, MAX_TEXT_BYTES.saturating_sub(keyword_cost));
        let key = crate::http::progress_key(&outbound.id, &outbound.group, &outbound.text);
        let mut sent = self.state.progress.take(&key);
        for part in parts.iter().skip(sent.parts) {
            // A message of nothing but pictures has no text to send.
            if !links.is_empty() && part.trim().is_empty() {
                sent.parts += 1;
                continue;
            }
            let content = text::with_keyword(part, keyword.as_deref());
            match self.post(&content).await {
                Ok(()) => sent.parts += 1,
                Err(error) => {
                    if !matches!(error, SendError::Permanent(_)) {
                        self.state.progress.keep(key, sent);
                    }
                    return Err(error);
                }
            }
        }
        let Sent { ids, .. } = sent;
        for (link, placeholder, kind) in &links {
            if let Err(error) = self.post_picture(link).await {
                info!(message = "A picture could not be sent to the DingTalk robot; its placeholder is sent.", account = %self.state.account, %error);
                self.media
                    .fell_back(Platform::Dingtalk, *kind, "send_failed");
                let content = text::with_keyword(placeholder, keyword.as_deref());
                if let Err(error) = self.post(&content).await {
                    info!(message = "The placeholder of a picture was not sent either.", account = %self.state.account, %error);
                }
            }
        }
        Ok(SendReceipt {
            message_ids: ids,
            idempotent: false,
            repeated: false,
        })
    }

    /// POSTs one picture as a markdown message showing `link`, with the keyword.
    async fn post_picture(&mut self, link: &str) -> Result<(), SendError> {
        let keyword = self.settings.keyword.as_deref();
        let title = text::with_keyword("[图片]", keyword).into_owned();
        let markdown = text::with_keyword(&format!("![]({link})"), keyword).into_owned();
        self.post_body(&json!({
            "msgtype": "markdown",
            "markdown": { "title": title, "text": markdown },
        }))
        .await
    }

    /// POSTs one text message and reads the verdict.
    async fn post(&mut self, content: &str) -> Result<(), SendError> {
        self.post_body(&json!({ "msgtype": "text", "text": { "content": content } }))
            .await
    }

    /// POSTs one message body and reads the verdict.
    async fn post_body(&mut self, body: &Value) -> Result<(), SendError> {
        let url = match &self.settings.secret {
            Some(secret) => signed_url(self.settings.webhook.expose(), secret.expose(), now_ms()),
            None => self.settings.webhook.expose().to_owned(),
        };
        let answer = self.state.post(&url, body, clip).await?;
        let (errcode, errmsg) = (answer.errcode.unwrap_or(-1), answer.errmsg);
        match errcode {
            0 => {
                self.state.pause.clear();
                Ok(())
            }
            ERR_TOO_FAST => Err(self.state.throttled(answer.suggested, &errmsg)),
            ERR_SECURITY => {
                let hint = security_hint(&errmsg);
                error!(message = "DingTalk robot refused the message: a configuration problem, not retried.", account = %self.state.account, errcode, %errmsg, %hint);
                Err(SendError::Permanent(format!(
                    "DingTalk robot security settings refused the message (310000 {errmsg}): {hint}"
                )))
            }
            other => Err(SendError::Permanent(format!(
                "DingTalk robot refused the message ({other} {errmsg})"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_refusals_name_their_cause() {
        assert!(security_hint("keywords not in content").contains("`keyword`"));
        assert!(security_hint("sign not match, more: [https://x]").contains("`secret`"));
        assert!(
            security_hint("description:ip 不在白名单中;solution:请将ip加入白名单").contains("IP")
        );
        assert!(security_hint("?").contains("keyword"));
    }
}
