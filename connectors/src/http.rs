//! HTTP pieces shared by the connectors that send over HTTP (DingTalk OpenAPI and custom
//! robot, WeCom group robot): the client settings, error texts that never carry a URL (its
//! query holds tokens and keys), bounded body reads, `Retry-After`, the pause a robot keeps
//! after the platform throttled it, and the memory that lets a retried multi-part message
//! resume after the parts already accepted.

use std::collections::VecDeque;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::time::Instant;

use crate::error::ConnectorError;

/// First pause after a throttling answer without `Retry-After`.
pub const FIRST_PAUSE: Duration = Duration::from_secs(60);
/// Longest pause; platforms throttle robots for up to about ten minutes.
pub const MAX_PAUSE: Duration = Duration::from_secs(600);

/// An HTTP client with rustls, bounded timeouts and no redirects (a redirect would carry a
/// token or key to another host).
///
/// # Errors
/// [`ConnectorError::Io`] when the client cannot be built.
pub fn client(
    user_agent: &str,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<reqwest::Client, ConnectorError> {
    reqwest::Client::builder()
        .user_agent(user_agent)
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| {
            ConnectorError::Io(std::io::Error::other(format!(
                "cannot build the HTTP client: {}",
                describe(error)
            )))
        })
}

/// A reqwest error as text, without the URL and with its causes (a bare "error sending
/// request" says nothing).
pub fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The `Retry-After` header in seconds, clamped to 1 s … 10 min.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds.clamp(1, 600)))
}

/// Why a response body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The connection broke off.
    #[error("{0}")]
    Broken(String),
    /// Larger than allowed.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
}

/// Reads at most `limit` bytes of a response body.
///
/// # Errors
/// [`BodyError`] when the body breaks off or is larger than `limit`.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| BodyError::Broken(describe(error)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The pause of a robot the platform throttled (DingTalk 130101, WeCom 45009): the first
/// pause is the answer's `Retry-After` or [`FIRST_PAUSE`], doubled for every throttling
/// answer in a row, at most [`MAX_PAUSE`], and cleared by a success.
#[derive(Debug, Default)]
pub struct Pause {
    /// Throttling answers in a row; the exponent of the doubling.
    strikes: u32,
    /// When the robot may send again.
    until: Option<Instant>,
}

impl Pause {
    /// Time left in the current pause, if any.
    pub fn remaining(&self) -> Option<Duration> {
        let left = self.until?.checked_duration_since(Instant::now())?;
        (!left.is_zero()).then_some(left)
    }

    /// Starts the next pause and returns its length.
    pub fn strike(&mut self, first: Option<Duration>) -> Duration {
        let base = first.unwrap_or(FIRST_PAUSE);
        let pause = base
            .saturating_mul(2u32.saturating_pow(self.strikes.min(16)))
            .min(MAX_PAUSE);
        self.strikes = self.strikes.saturating_add(1);
        self.until = Some(Instant::now() + pause);
        pause
    }

    /// Ends the pause after a success.
    pub fn clear(&mut self) {
        self.strikes = 0;
        self.until = None;
    }
}

/// The [`Progress`] key of one message for one destination: its inbound id, group and text
/// length (so a different rendering is not mistaken for the same message).
pub fn progress_key(id: &str, group: &str, text: &str) -> String {
    format!("{id}\u{1f}{group}\u{1f}{}", text.len())
}

/// Remembers, for a bounded number of messages, how far a multi-part send got, so the
/// relay's retry of a message that failed in the middle sends only the rest.
#[derive(Debug)]
pub struct Progress<T> {
    /// (message key, progress), oldest first.
    entries: VecDeque<(String, T)>,
    /// Most messages remembered; the oldest is forgotten first.
    capacity: usize,
}

impl<T: Default + PartialEq> Progress<T> {
    /// An empty memory for at most `capacity` messages.
    pub fn new(capacity: usize) -> Progress<T> {
        Progress {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Takes what was sent of `key` before (the default when it is new).
    pub fn take(&mut self, key: &str) -> T {
        match self.entries.iter().position(|(k, _)| k == key) {
            Some(at) => self
                .entries
                .remove(at)
                .map(|(_, sent)| sent)
                .unwrap_or_default(),
            None => T::default(),
        }
    }

    /// Records what was sent of `key` so far (nothing sent: nothing to remember).
    pub fn keep(&mut self, key: String, sent: T) {
        if sent == T::default() {
            return;
        }
        while self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((key, sent));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_ten_minutes_and_reset() {
        let mut pause = Pause::default();
        assert_eq!(pause.strike(None), Duration::from_secs(60));
        assert_eq!(pause.strike(None), Duration::from_secs(120));
        assert!(pause.remaining().is_some());
        for _ in 0..10 {
            pause.strike(None);
        }
        assert_eq!(pause.strike(None), MAX_PAUSE);
        pause.clear();
        assert_eq!(pause.remaining(), None);
        assert_eq!(
            pause.strike(Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn progress_is_bounded_and_taken_once() {
        let mut progress: Progress<usize> = Progress::new(2);
        let key = progress_key("a:1:m", "g", "text");
        progress.keep(key.clone(), 2);
        progress.keep("other".into(), 0);
        assert_eq!(progress.take(&key), 2);
        assert_eq!(progress.take(&key), 0, "taken once");
        for n in 1..=3 {
            progress.keep(format!("k{n}"), n);
        }
        assert_eq!(progress.take("k1"), 0, "the oldest was forgotten");
        assert_eq!(progress.take("k3"), 3);
    }
}
