//! WeCom (企业微信) groups through the group robot webhook (PROTOCOLS.md §4.1,
//! ARCHITECTURE.md §10): send-only, `platform = "wecom"` with `webhook`. A robot cannot
//! receive, so the account is only ever a destination (`to` in a link), and it cannot
//! recall what it sent.
//!
//! - [`webhook`]: the POST per message part, `errcode` checks, the 45009 pause; long text is
//!   cut into parts within WeCom's byte limits (2048 for text, 4096 for markdown) by the
//!   workspace's splitter ([`crate::split`]).
//!
//! The webhook URL's `key` is the robot's credential: settings print only the host.

mod pictures;
pub mod settings;
pub mod webhook;

use std::time::Duration;

use tracing::info;

use crate::context::{ConnectorContext, SendReceipt};
use crate::error::{ConnectorError, SendError};
use crate::model::Outbound;
use crate::robot::{self, RobotSender};
use crate::{Connector, Secret};

pub use crate::http::{FIRST_PAUSE, MAX_PAUSE};
pub use webhook::{ERR_FREQ_OUT_OF_LIMIT, MAX_MARKDOWN_BYTES, MAX_TEXT_BYTES};

/// How qunbridge introduces itself to WeCom.
const USER_AGENT: &str = concat!("qunbridge/", env!("CARGO_PKG_VERSION"));
/// How long connecting to the webhook may take.
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one webhook request may take in all.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of a WeCom robot account, resolved from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WecomSettings {
    /// `https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…`; the `key` is a secret.
    pub webhook: Secret,
    /// Send `markdown` messages (WeCom's markdown subset, up to 4096 bytes) instead of
    /// `text` (up to 2048 bytes).
    pub markdown: bool,
    /// What becomes of a picture the robot's `image` message does not take (larger than
    /// 2 MB, or neither JPG nor PNG).
    pub large_images: LargeImages,
}

/// What a WeCom robot does with a picture its `image` message does not take (`large_images`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LargeImages {
    /// Its placeholder (`[图片]`) in the text.
    #[default]
    Placeholder,
    /// Uploaded (`upload_media`, type file, up to 20 MB) and sent as a file message.
    File,
}

impl LargeImages {
    /// Every value, as written in the config.
    pub const ALL: [LargeImages; 2] = [LargeImages::Placeholder, LargeImages::File];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LargeImages::Placeholder => "placeholder",
            LargeImages::File => "file",
        }
    }

    /// Parses the config spelling.
    pub fn parse(value: &str) -> Option<LargeImages> {
        LargeImages::ALL
            .into_iter()
            .find(|choice| choice.as_str() == value)
    }
}

impl WecomSettings {
    /// The webhook's host, the only part of its URL that may be shown.
    pub fn host(&self) -> String {
        reqwest::Url::parse(self.webhook.expose())
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_else(|| "<invalid URL>".into())
    }

    /// The `key` query parameter, when there is one (to keep it out of error texts).
    pub fn key(&self) -> Option<String> {
        let url = reqwest::Url::parse(self.webhook.expose()).ok()?;
        let key = url
            .query_pairs()
            .find(|(name, _)| name == "key")
            .map(|(_, value)| value.into_owned());
        key
    }
}

/// The WeCom group robot connector: send-only, one POST per message part.
pub struct WecomConnector {
    /// Its settings.
    settings: WecomSettings,
}

impl WecomConnector {
    /// A connector for one robot account.
    pub fn new(settings: WecomSettings) -> WecomConnector {
        WecomConnector { settings }
    }
}

impl Connector for WecomConnector {
    async fn run(self, ctx: ConnectorContext) -> Result<(), ConnectorError> {
        info!(message = "WeCom group robot account ready.", account = %ctx.account, host = %self.settings.host(), markdown = self.settings.markdown);
        let robot = webhook::Robot::new(
            ctx.account.clone(),
            self.settings,
            crate::http::client(USER_AGENT, HTTP_CONNECT_TIMEOUT, HTTP_TIMEOUT)?,
        )
        .with_media(ctx.media.clone());
        robot::serve(ctx, robot).await;
        Ok(())
    }
}

impl RobotSender for webhook::Robot {
    async fn prepare(&mut self, outbound: &Outbound) {
        self.upload_ahead(outbound).await;
    }

    async fn send(&mut self, outbound: &Outbound) -> Result<SendReceipt, SendError> {
        webhook::Robot::send(self, outbound).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_never_show_the_key() {
        let settings = WecomSettings {
            webhook: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx".into(),
            markdown: true,
            large_images: LargeImages::default(),
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("693a91f6"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert_eq!(settings.key().as_deref(), Some("693a91f6-7xxx"));
    }
}
