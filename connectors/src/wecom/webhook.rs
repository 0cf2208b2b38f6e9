//! Sending through a WeCom (企业微信) group robot webhook (PROTOCOLS.md §4.1): a POST of a
//! `text` (or `markdown`) message per part, the text split to fit the byte limit, and the
//! `errcode` of every answer checked (WeCom answers HTTP 200 for refusals too).
//!
//! - `45009` (`api freq out of limit`, more than 20 messages a minute): the robot is paused
//!   and [`SendError::Throttled`] tells the relay to wait and try again without losing the
//!   message. The first pause is 60 s, or the answer's `Retry-After` seconds when it carries
//!   that header; each further 45009 in a row doubles it, up to 10 minutes; a success resets
//!   it. Sends asked for during a pause are answered `Throttled` without touching the network.
//! - A message split into parts that fails in the middle is resumed on the relay's retry:
//!   the parts already accepted are not sent again.
//! - Network errors, HTTP 5xx, `errcode` `-1` (system busy) and answers that are not JSON are
//!   retryable; any other non-zero `errcode` is refused for good, with WeCom's `errmsg`.
//!
//! - Pictures follow the text of their message as `image` or `file` messages
//!   ([`super::pictures`]); a 45009 on one of them pauses the robot and the relay's retry
//!   resumes with it (the text is not sent again); any other failure sends the picture's
//!   placeholder instead and the message counts as sent.
//!
//! The webhook's `key` is the robot's only credential: it never reaches logs, errors or
//! metrics (reqwest errors are stripped of their URL, and an `errmsg` that quoted the key
//! would have it replaced).

use serde_json::{json, Value};
use tracing::{debug, info};

use super::pictures::{self, Decision};
use super::WecomSettings;
use crate::context::SendReceipt;
use crate::error::SendError;
use crate::media::carry::{text_with, Picture, Uploads};
use crate::media::{MediaContext, MediaKind, MediaMode};
use crate::model::{Outbound, Platform};
use crate::robot::RobotState;
use crate::split::{self, Cuts, Unit};

/// The errcode of "api freq out of limit".
pub const ERR_FREQ_OUT_OF_LIMIT: i64 = 45_009;
/// The errcode of "system busy": worth another try.
const ERR_SYSTEM_BUSY: i64 = -1;
/// Most bytes of a `text` message's content.
pub const MAX_TEXT_BYTES: usize = 2048;
/// Most bytes of a `markdown` message's content.
pub const MAX_MARKDOWN_BYTES: usize = 4096;
/// How errors name this robot.
const ROBOT: &str = "WeCom robot";
/// Characters of a refusal's text kept in errors.
const MAX_ERROR_TEXT: usize = 200;
/// How WeCom content is cut (with the workspace's one splitter): by UTF-8 bytes, at the last
/// line break that leaves a part at least half full (the break stays at the end of that part,
/// so the parts join back into the text), otherwise between characters.
const CUTS: Cuts = Cuts {
    unit: Unit::Bytes,
    at_spaces: false,
    half_full: true,
    drop_break: false,
};

/// The sender of one robot.
pub struct Robot {
    /// Account, HTTP client, pause and progress (text parts, then pictures, sent), as every
    /// robot keeps them.
    state: RobotState<usize>,
    /// Webhook URL and message type.
    settings: WecomSettings,
    /// The account's media mode, service and link signer.
    media: MediaContext,
    /// The `media_id`s of files this robot uploaded, reused while WeCom keeps them.
    uploads: Uploads,
}

impl Robot {
    /// A sender for one account.
    pub fn new(account: String, settings: WecomSettings, http: reqwest::Client) -> Robot {
        Robot {
            uploads: pictures::uploads(&account),
            state: RobotState::new(ROBOT, account, http),
            settings,
            media: MediaContext::default(),
        }
    }

    /// The sender with the account's media context (pictures are carried as its mode says).
    pub fn with_media(mut self, media: MediaContext) -> Robot {
        self.media = media;
        self
    }

    /// Sends an outbound message, split into parts within the byte limit; a retry after a
    /// failure in the middle resumes after the parts already accepted.
    ///
    /// # Errors
    /// [`SendError`] as described in the module documentation.
    pub async fn send(&mut self, outbound: &Outbound) -> Result<SendReceipt, SendError> {
        if let Some(answer) = self.state.answer_without_sending(outbound) {
            return answer;
        }
        let (msgtype, limit) = if self.settings.markdown {
            ("markdown", MAX_MARKDOWN_BYTES)
        } else {
            ("text", MAX_TEXT_BYTES)
        };
        let (text, carried) = self.plan(outbound).await;
        let parts = split::pieces(&text, limit, CUTS, &[]);
        let key = crate::http::progress_key(&outbound.id, &outbound.group, &outbound.text);
        let mut sent = self.state.progress.take(&key);
        for part in parts.iter().skip(sent) {
            // WeCom refuses empty content; a part of nothing but line breaks is skipped.
            if part.trim().is_empty() {
                sent += 1;
                continue;
            }
            match self.post(msgtype, part).await {
                Ok(()) => sent += 1,
                Err(error) => {
                    if !matches!(error, SendError::Permanent(_)) {
                        self.state.progress.keep(key, sent);
                    }
                    return Err(error);
                }
            }
        }
        if parts.len() > 1 {
            debug!(message = "Long message sent in parts.", account = %self.state.account, parts = parts.len());
        }
        let skip = sent.saturating_sub(parts.len());
        for (placeholder, kind, decision) in carried.iter().skip(skip) {
            let outcome = match decision {
                Decision::Image(picture) => self.send_image(picture).await,
                Decision::File(picture) => self.send_file(picture, *kind).await,
                Decision::Text(_) => Ok(()),
            };
            match outcome {
                Ok(()) => {}
                Err(SendError::Throttled(pause)) => {
                    // The pause is struck; the relay's retry resumes with this picture.
                    self.state.progress.keep(key, sent);
                    return Err(SendError::Throttled(pause));
                }
                Err(error) => {
                    info!(message = "A picture was not taken by the WeCom robot; its placeholder is sent.", account = %self.state.account, %error);
                    self.media.fell_back(Platform::Wecom, *kind, "send_failed");
                    match self.post(msgtype, placeholder).await {
                        Err(SendError::Throttled(pause)) => {
                            self.state.progress.keep(key, sent);
                            return Err(SendError::Throttled(pause));
                        }
                        Err(error) => {
                            info!(message = "The placeholder of a picture was not sent either.", account = %self.state.account, %error);
                        }
                        Ok(()) => {}
                    }
                }
            }
            sent += 1;
        }
        // The webhook returns no message id: nothing can be recalled later.
        Ok(SendReceipt::default())
    }

    /// The text of `outbound` for this robot and the pictures that follow it (each with its
    /// placeholder, sent instead when the picture fails). In `passthrough` mode the text is
    /// the message's own and nothing follows, as before pictures were fetched.
    async fn plan(&self, outbound: &Outbound) -> (String, Vec<(String, MediaKind, Decision)>) {
        if self.media.mode == MediaMode::Passthrough {
            return (outbound.text.clone(), Vec::new());
        }
        let prepared = self.media.prepare(Platform::Wecom, outbound).await;
        let decisions: Vec<(usize, Decision)> = prepared
            .iter()
            .map(|p| {
                (
                    p.index,
                    pictures::decide(&self.media, p, self.settings.large_images),
                )
            })
            .collect();
        let text = text_with(outbound, &prepared, |p| {
            decisions
                .iter()
                .find(|(index, _)| *index == p.index)
                .and_then(|(_, decision)| decision.shown())
        });
        let carried = prepared
            .iter()
            .zip(decisions)
            .filter(|(_, (_, decision))| decision.shown().is_none())
            .map(|(p, (_, decision))| (p.placeholder.to_owned(), p.kind, decision))
            .collect();
        (text, carried)
    }

    /// Uploads the pictures that sending `outbound` would send as files (each once per
    /// robot, [`Uploads::ahead`]), sending nothing: the relay asks this before the send takes
    /// its pacing token, and the send then takes each `media_id` (or the placeholder of a
    /// failed upload) without asking WeCom again.
    pub async fn upload_ahead(&mut self, outbound: &Outbound) {
        if self.media.mode == MediaMode::Passthrough {
            return;
        }
        let prepared = self.media.prepare_ahead(Platform::Wecom, outbound).await;
        let Robot {
            state,
            settings,
            media,
            uploads,
        } = self;
        for p in &prepared {
            let Some(picture) = pictures::uploaded_as_file(p, settings.large_images) else {
                continue;
            };
            // 45009 pauses the robot; the send then uploads again after the pause.
            uploads
                .ahead(
                    media,
                    p.kind,
                    picture,
                    |bytes| upload(state, settings, picture, bytes),
                    |error| !matches!(error, SendError::Throttled(_)),
                )
                .await;
        }
    }

    /// Sends `picture` as an `image` message.
    async fn send_image(&mut self, picture: &Picture) -> Result<(), SendError> {
        let bytes = picture
            .bytes()
            .await
            .map_err(|error| SendError::Permanent(format!("cached picture unreadable: {error}")))?;
        self.post_body(&pictures::image_body(&bytes)).await
    }

    /// Sends `picture` (a `kind`) as a `file` message, uploading it unless this robot
    /// already did within the media id's lifetime ([`Uploads::handle`]).
    async fn send_file(&mut self, picture: &Picture, kind: MediaKind) -> Result<(), SendError> {
        let Robot {
            state,
            settings,
            media,
            uploads,
        } = self;
        let media_id = uploads
            .handle(media, kind, picture, |bytes| {
                upload(state, settings, picture, bytes)
            })
            .await?;
        self.post_body(&pictures::file_body(&media_id)).await
    }

    /// POSTs one text or markdown message and reads the verdict.
    async fn post(&mut self, msgtype: &str, content: &str) -> Result<(), SendError> {
        self.post_body(&json!({ "msgtype": msgtype, msgtype: { "content": content } }))
            .await
    }

    /// POSTs one message body and reads the verdict.
    async fn post_body(&mut self, body: &Value) -> Result<(), SendError> {
        let key = self.settings.key();
        let answer = self
            .state
            .post(self.settings.webhook.expose(), body, |text| {
                clean(text, key.as_deref())
            })
            .await?;
        let (errcode, errmsg) = (answer.errcode.unwrap_or(i64::MIN), answer.errmsg);
        match errcode {
            0 => {
                self.state.pause.clear();
                Ok(())
            }
            ERR_FREQ_OUT_OF_LIMIT => Err(self.state.throttled(answer.suggested, &errmsg)),
            ERR_SYSTEM_BUSY => Err(SendError::Retryable(format!(
                "WeCom robot busy ({errcode} {errmsg})"
            ))),
            other => Err(SendError::Permanent(format!(
                "WeCom robot refused the message ({other} {errmsg})"
            ))),
        }
    }
}

/// Uploads `bytes`, the cached `picture`, through the robot (`upload_media`, type file) and
/// returns its `media_id`; 45009 and HTTP 429 pause the robot.
async fn upload(
    state: &mut RobotState<usize>,
    settings: &WecomSettings,
    picture: &Picture,
    bytes: Vec<u8>,
) -> Result<String, SendError> {
    let key = settings.key();
    let url = pictures::upload_url(settings.webhook.expose(), key.as_deref())?;
    let answer = pictures::upload(&state.http, url, picture, bytes).await?;
    if answer.status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(state.throttled(answer.suggested, "HTTP 429"));
    }
    if !answer.status.is_success() {
        return Err(SendError::Retryable(format!(
            "WeCom upload answered HTTP {}",
            answer.status
        )));
    }
    let errmsg = clean(&answer.errmsg, key.as_deref());
    match answer.errcode {
        0 => answer
            .media_id
            .ok_or_else(|| SendError::Permanent("WeCom upload answered without `media_id`".into())),
        ERR_FREQ_OUT_OF_LIMIT => Err(state.throttled(answer.suggested, &errmsg)),
        other => Err(SendError::Permanent(format!(
            "WeCom refused the upload ({other} {errmsg})"
        ))),
    }
}

/// Platform text for errors: clipped to [`MAX_ERROR_TEXT`] characters, with the webhook
/// `key` (when the robot has one) replaced by `<redacted>`.
fn clean(text: &str, key: Option<&str>) -> String {
    let mut text = match key {
        Some(key) if !key.is_empty() => text.replace(key, "<redacted>"),
        _ => text.to_owned(),
    };
    if text.chars().count() > MAX_ERROR_TEXT {
        text = text.chars().take(MAX_ERROR_TEXT).collect::<String>() + "…";
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::extract::State;
    use axum::http::StatusCode as HttpStatus;
    use axum::response::IntoResponse;

    use super::*;
    use crate::model::{Kind, Platform};
    use serde_json::Value;

    /// What the scripted robot answers: HTTP status, errcode, `Retry-After`.
    type Answer = (u16, i64, Option<u64>);

    /// A robot on a real local port: records every content, answers from a script (then 0).
    struct ScriptedRobot {
        /// Contents received with the errcode they got.
        seen: Mutex<Vec<(String, i64)>>,
        /// Answers for the next requests.
        script: Mutex<VecDeque<Answer>>,
    }

    async fn scripted(script: Vec<Answer>) -> (Arc<ScriptedRobot>, String) {
        async fn send(
            State(robot): State<Arc<ScriptedRobot>>,
            axum::Json(body): axum::Json<Value>,
        ) -> axum::response::Response {
            let (status, errcode, retry) = robot
                .script
                .lock()
                .expect("lock")
                .pop_front()
                .unwrap_or((200, 0, None));
            let content = body["text"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            robot.seen.lock().expect("lock").push((content, errcode));
            let mut headers = axum::http::HeaderMap::new();
            if let Some(seconds) = retry {
                headers.insert("retry-after", seconds.into());
            }
            let status = HttpStatus::from_u16(status).unwrap_or(HttpStatus::OK);
            (
                status,
                headers,
                axum::Json(json!({"errcode": errcode, "errmsg": "scripted"})),
            )
                .into_response()
        }
        let robot = Arc::new(ScriptedRobot {
            seen: Mutex::new(Vec::new()),
            script: Mutex::new(script.into()),
        });
        let app = axum::Router::new()
            .route("/cgi-bin/webhook/send", axum::routing::post(send))
            .with_state(robot.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/cgi-bin/webhook/send?key=k3y",
            listener.local_addr().expect("addr")
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (robot, url)
    }

    fn robot_for(url: &str) -> Robot {
        Robot::new(
            "w".into(),
            WecomSettings {
                webhook: url.into(),
                markdown: false,
                large_images: super::super::LargeImages::default(),
            },
            reqwest::Client::new(),
        )
    }

    fn outbound(text: &str) -> Outbound {
        Outbound {
            id: "hub:a:1".into(),
            link: "ops".into(),
            text: text.into(),
            ..Outbound::sample(Kind::Message, Platform::Api, "ops")
        }
    }

    #[tokio::test]
    async fn a_split_message_resumes_after_the_parts_already_accepted() {
        // 4500 bytes: three parts. The second is refused with 45009 and `Retry-After: 1`.
        let (server, url) = scripted(vec![(200, 0, None), (200, 45009, Some(1))]).await;
        let mut robot = robot_for(&url);
        let text = "一".repeat(1500);
        let message = outbound(&text);
        assert_eq!(
            robot.send(&message).await,
            Err(SendError::Throttled(Duration::from_secs(1)))
        );
        // During the pause nothing is posted.
        assert!(matches!(
            robot.send(&message).await,
            Err(SendError::Throttled(_))
        ));
        assert_eq!(server.seen.lock().expect("lock").len(), 2);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(robot.send(&message).await, Ok(SendReceipt::default()));
        let seen = server.seen.lock().expect("lock").clone();
        let codes: Vec<i64> = seen.iter().map(|(_, code)| *code).collect();
        assert_eq!(
            codes,
            vec![0, 45009, 0, 0],
            "the first part is not sent twice"
        );
        assert_eq!(seen[1].0, seen[2].0, "the refused part is the one retried");
        let accepted: String = seen
            .iter()
            .filter(|(_, code)| *code == 0)
            .map(|(content, _)| content.as_str())
            .collect();
        assert_eq!(accepted, text);
        assert!(seen
            .iter()
            .all(|(content, _)| content.len() <= MAX_TEXT_BYTES));
        assert_eq!(
            robot.state.pause.remaining(),
            None,
            "a success ends the pause"
        );
    }

    #[tokio::test]
    async fn answers_map_to_send_errors() {
        let (_server, url) = scripted(vec![
            (502, 0, None),
            (200, -1, None),
            (200, 93000, None),
            (404, 0, None),
            (429, 0, Some(2)),
        ])
        .await;
        let mut robot = robot_for(&url);
        let message = outbound("hi");
        assert!(matches!(
            robot.send(&message).await,
            Err(SendError::Retryable(_))
        ));
        assert!(matches!(
            robot.send(&message).await,
            Err(SendError::Retryable(_))
        ));
        let refused = robot.send(&message).await;
        assert!(
            matches!(&refused, Err(SendError::Permanent(reason)) if reason.contains("93000")),
            "{refused:?}"
        );
        assert!(matches!(
            robot.send(&message).await,
            Err(SendError::Permanent(_))
        ));
        assert_eq!(
            robot.send(&message).await,
            Err(SendError::Throttled(Duration::from_secs(2)))
        );
        let unreachable = robot_for("http://127.0.0.1:9/cgi-bin/webhook/send?key=k3y")
            .send(&message)
            .await;
        assert!(
            matches!(&unreachable, Err(SendError::Retryable(reason)) if !reason.contains("k3y")),
            "unreachable is retryable and never shows the key: {unreachable:?}"
        );
        assert!(matches!(
            robot_for(&url).send(&outbound("  ")).await,
            Err(SendError::Permanent(_))
        ));
    }

    #[test]
    fn refusal_texts_never_carry_the_key() {
        let robot = Robot::new(
            "w".into(),
            WecomSettings {
                webhook: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx"
                    .into(),
                markdown: false,
                large_images: super::super::LargeImages::default(),
            },
            reqwest::Client::new(),
        );
        assert_eq!(
            clean(
                "invalid webhook url key=693a91f6-7xxx, hint: [1]",
                robot.settings.key().as_deref()
            ),
            "invalid webhook url key=<redacted>, hint: [1]"
        );
        assert!(clean(&"x".repeat(500), None).chars().count() <= MAX_ERROR_TEXT + 1);
    }
}
