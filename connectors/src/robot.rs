//! What the two send-only webhook robots share (the DingTalk custom robot, PROTOCOLS.md §3.7,
//! and the WeCom group robot, §4.1): the connector loop of an account that has nothing to
//! connect, the answers given without a request (a recall, a send during a pause, an empty
//! message), and reading one POST's verdict. Both platforms answer HTTP 200 with an
//! `{"errcode", "errmsg"}` body for refusals too, so the verdict is the `errcode`; what each
//! code means stays with its platform.

use std::future::Future;

use reqwest::StatusCode;
use serde_json::Value;
use tracing::{debug, warn};

use crate::context::{
    ConnectionState, ConnectorContext, EgressCommand, EgressRequest, PrepareRequest, SendReceipt,
};
use crate::error::SendError;
use crate::http::{describe, read_limited, retry_after, Pause, Progress};
use crate::model::{Kind, Outbound};

/// Largest answer read from a robot webhook.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Messages whose partial progress is remembered for resuming a split send.
const PROGRESS_CAPACITY: usize = 64;

/// What every robot sender keeps besides its settings.
pub(crate) struct RobotState<P> {
    /// How errors and logs name the robot ("WeCom robot").
    pub robot: &'static str,
    /// Account id, for logs.
    pub account: String,
    /// Shared HTTP client (rustls, timeouts, no redirects).
    pub http: reqwest::Client,
    /// The pause the platform's "too fast" answer imposed.
    pub pause: Pause,
    /// Parts of split messages already accepted, so a retry resumes after them.
    pub progress: Progress<P>,
}

impl<P: Default + PartialEq> RobotState<P> {
    /// The state of a robot that has sent nothing yet.
    pub fn new(robot: &'static str, account: String, http: reqwest::Client) -> RobotState<P> {
        RobotState {
            robot,
            account,
            http,
            pause: Pause::default(),
            progress: Progress::new(PROGRESS_CAPACITY),
        }
    }

    /// The answer to a send that needs no request, if it needs none: a robot cannot recall
    /// (the recall is skipped as done), a paused robot is throttled without touching the
    /// network, and an empty message is refused for good.
    pub fn answer_without_sending(
        &self,
        outbound: &Outbound,
    ) -> Option<Result<SendReceipt, SendError>> {
        if outbound.kind == Kind::Recall {
            debug!(message = "A robot cannot recall; skipped.", robot = self.robot, account = %self.account);
            return Some(Ok(SendReceipt::default()));
        }
        if let Some(left) = self.pause.remaining() {
            return Some(Err(SendError::Throttled(left)));
        }
        if outbound.text.trim().is_empty() {
            return Some(Err(SendError::Permanent("the message is empty".into())));
        }
        None
    }

    /// Pauses the robot after a "too fast" answer (`what`: the code and text, or HTTP 429)
    /// and tells the relay to wait.
    pub fn throttled(&mut self, suggested: Option<std::time::Duration>, what: &str) -> SendError {
        let pause = self.pause.strike(suggested);
        warn!(message = "Robot is sending too fast; pausing it.", robot = self.robot, account = %self.account, answer = %what, pause_s = pause.as_secs_f64());
        SendError::Throttled(pause)
    }
}

/// One robot account's sender, as the shared loop drives it.
pub(crate) trait RobotSender: Send {
    /// Uploads what sending `outbound` would upload, sending nothing: the relay asks this
    /// before the send takes its pacing token. A robot that cannot upload does nothing.
    fn prepare(&mut self, outbound: &Outbound) -> impl Future<Output = ()> + Send;

    /// Sends one outbound message (all its parts) and says how it went.
    fn send(
        &mut self,
        outbound: &Outbound,
    ) -> impl Future<Output = Result<SendReceipt, SendError>> + Send;
}

/// Runs a send-only robot account: it is usable as soon as it is configured, and sends what
/// the relay hands it until the relay closes the queue (after shutdown, once nothing more is
/// in flight).
pub(crate) async fn serve(ctx: ConnectorContext, mut sender: impl RobotSender) {
    let ConnectorContext {
        mut egress, state, ..
    } = ctx;
    state.set(ConnectionState::Up, None);
    while let Some(command) = egress.recv().await {
        match command {
            EgressCommand::Send(EgressRequest {
                outbound, reply, ..
            }) => {
                let outcome = sender.send(&outbound).await;
                // The relay stops waiting only on its own shutdown; nothing to do then.
                let _ = reply.send(outcome);
            }
            EgressCommand::Prepare(PrepareRequest { outbound, done }) => {
                sender.prepare(&outbound).await;
                let _ = done.send(());
            }
        }
    }
    state.set(ConnectionState::Stopped, None);
}

/// What a robot answered to one POST that it accepted as a request: the body's `errcode` (0
/// when absent; `None` when it is not a number), its `errmsg` (cleaned by the caller's
/// `clean`) and a `Retry-After`, for the platform's "too fast" code.
pub(crate) struct Answer {
    /// The platform's code; each platform says what its codes mean.
    pub errcode: Option<i64>,
    /// The platform's text, clipped and cleaned of secrets.
    pub errmsg: String,
    /// A `Retry-After` header.
    pub suggested: Option<std::time::Duration>,
}

impl<P: Default + PartialEq> RobotState<P> {
    /// POSTs `body` to the robot's webhook and reads its answer. HTTP 429 pauses the robot;
    /// network errors, HTTP 5xx and an answer that is not JSON are retryable; another HTTP
    /// error is refused for good. `clean` clips platform text and removes anything secret.
    ///
    /// # Errors
    /// [`SendError`] for every outcome that is not an `errcode` answer.
    pub async fn post(
        &mut self,
        url: &str,
        body: &Value,
        clean: impl Fn(&str) -> String,
    ) -> Result<Answer, SendError> {
        let robot = self.robot;
        let response = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|error| {
                SendError::Retryable(format!("{robot} unreachable: {}", describe(error)))
            })?;
        let status = response.status();
        let suggested = retry_after(response.headers());
        let body = read_limited(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|error| SendError::Retryable(format!("{robot} answer: {error}")))?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(self.throttled(suggested, "HTTP 429"));
        }
        if status.is_server_error() {
            return Err(SendError::Retryable(format!(
                "{robot} answered HTTP {status}"
            )));
        }
        if !status.is_success() {
            return Err(SendError::Permanent(format!(
                "{robot} answered HTTP {status}: {}",
                clean(&String::from_utf8_lossy(&body))
            )));
        }
        let answer: Value = serde_json::from_slice(&body).map_err(|_| {
            SendError::Retryable(format!("{robot} answered with something other than JSON"))
        })?;
        let errcode = match answer.get("errcode") {
            None | Some(Value::Null) => Some(0),
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(_) => None,
        };
        let errmsg = clean(
            answer
                .get("errmsg")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        Ok(Answer {
            errcode,
            errmsg,
            suggested,
        })
    }
}
