//! DingTalk (钉钉) connectors (PROTOCOLS.md §3, ARCHITECTURE.md §10):
//!
//! - [`StreamConnector`] (`protocol = "stream"`, an enterprise app robot): bot messages come
//!   in over DingTalk Stream ([`stream`]), and messages go out through the OpenAPI group send
//!   ([`openapi`]). In groups, DingTalk delivers only messages that @-mention the bot.
//! - [`WebhookConnector`] (`protocol = "webhook"`, a custom robot): send-only, a signed POST
//!   per message ([`webhook`], [`sign`]).
//!
//! Both keep their secrets (app secret, access token, webhook token, signing secret) out of
//! logs, metrics and `Debug` output.

pub mod events;
/// The Stream wire format; public so the fuzz target `dingtalk_stream_frame` (`fuzz/`) can
/// feed its parsers directly.
pub mod frames;
mod openapi;
mod pictures;
mod recent;
pub mod settings;
mod sign;
mod source;
mod stream;
mod text;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::context::{
    ConnectionState, ConnectorContext, EgressCommand, EgressRequest, PrepareRequest, SendReceipt,
};
use crate::error::{ConnectorError, SendError};
use crate::model::Outbound;
use crate::robot::{self, RobotSender};
use crate::{Connector, Secret};

pub use crate::http::{FIRST_PAUSE, MAX_PAUSE};
pub use frames::BOT_MESSAGE_TOPIC;
pub use openapi::MAX_MSG_PARAM_BYTES;
pub use sign::{signature, signed_url};
pub use webhook::{ERR_SECURITY, ERR_TOO_FAST};

/// The OpenAPI base URL of the mainland tenant.
pub const DEFAULT_API_BASE: &str = "https://api.dingtalk.com";
/// The legacy OpenAPI (`oapi`) base URL of the mainland tenant: media uploads.
pub const DEFAULT_OAPI_BASE: &str = "https://oapi.dingtalk.com";
/// How qunbridge introduces itself (`name-sdk-lang/version`, the Stream `ua` convention).
pub const USER_AGENT: &str = concat!("qunbridge-stream-rust/", env!("CARGO_PKG_VERSION"));
/// How long connecting to a DingTalk HTTP endpoint may take.
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one DingTalk HTTP request may take in all.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of a Stream account (enterprise app robot), resolved from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// The app's Client ID (AppKey): names the app to the gateway and the token endpoint.
    pub client_id: String,
    /// The app's Client Secret (AppSecret); a secret.
    pub client_secret: Secret,
    /// The robot's code for OpenAPI sends and downloads; the Client ID for app robots.
    pub robot_code: String,
    /// OpenAPI base URL without a trailing `/` (another tenant's host, or a test peer).
    pub api_base: String,
    /// Legacy OpenAPI (`oapi`) base URL without a trailing `/`, for media uploads.
    pub oapi_base: String,
    /// `events = true`: the Stream connection also subscribes to the app's events
    /// (`{"type":"EVENT","topic":"*"}`), and group membership changes are published as
    /// member envelopes ([`events`]).
    pub events: bool,
}

/// Settings of a custom robot webhook account (send-only), resolved from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The robot's URL; its `access_token` query is a secret.
    pub webhook: Secret,
    /// The `SEC…` signing secret, when the robot uses signing; a secret.
    pub secret: Option<Secret>,
    /// A keyword of the robot's security settings, put in front of messages lacking it.
    pub keyword: Option<String>,
}

impl WebhookSettings {
    /// The webhook's host, the only part of its URL that may be shown.
    pub fn host(&self) -> String {
        reqwest::Url::parse(self.webhook.expose())
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_else(|| "<invalid URL>".into())
    }
}

/// The enterprise app robot connector: Stream in, OpenAPI out.
pub struct StreamConnector {
    /// Its settings.
    settings: StreamSettings,
}

impl StreamConnector {
    /// A connector for one Stream account.
    pub fn new(settings: StreamSettings) -> StreamConnector {
        StreamConnector { settings }
    }
}

impl Connector for StreamConnector {
    async fn run(self, ctx: ConnectorContext) -> Result<(), ConnectorError> {
        let ConnectorContext {
            account,
            ingress,
            mut egress,
            state,
            intake,
            media,
            ..
        } = ctx;
        let api = Arc::new(openapi::OpenApi::new(
            crate::http::client(USER_AGENT, HTTP_CONNECT_TIMEOUT, HTTP_TIMEOUT)?,
            account.clone(),
            self.settings.clone(),
        ));
        info!(message = "DingTalk Stream account starting.", account = %account, client_id = %self.settings.client_id, api_base = %self.settings.api_base);
        // The pictures this account sees are fetched through its download codes.
        if let Some(service) = &media.service {
            service.register(&account, Arc::new(source::DownloadSource::new(api.clone())));
        }
        let ingress_task = tokio::spawn(
            stream::StreamIngress::new(
                account.clone(),
                api.clone(),
                ingress,
                state.clone(),
                intake,
            )
            .with_source_urls(!media.skip_source_urls)
            .run(),
        );
        // The media ids of pictures this account uploaded, reused for every group.
        let uploads = pictures::uploads(&account);
        // Egress runs until the relay closes the queue, which it does after shutdown once
        // nothing more is in flight; ingress stops on shutdown by itself.
        while let Some(command) = egress.recv().await {
            match command {
                EgressCommand::Send(EgressRequest {
                    outbound, reply, ..
                }) => {
                    let outcome = pictures::send_outbound(&api, &media, &uploads, &outbound).await;
                    // The relay stops waiting only on its own shutdown; nothing to do then.
                    let _ = reply.send(outcome);
                }
                EgressCommand::Prepare(PrepareRequest { outbound, done }) => {
                    pictures::upload_ahead(&api, &media, &uploads, &outbound).await;
                    let _ = done.send(());
                }
            }
        }
        if let Err(error) = ingress_task.await {
            warn!(message = "DingTalk Stream ingress task failed.", account = %account, %error);
        }
        if let Some(service) = &media.service {
            service.unregister(&account);
        }
        state.set(ConnectionState::Stopped, None);
        Ok(())
    }
}

/// The custom robot connector: send-only, one signed webhook POST per message.
pub struct WebhookConnector {
    /// Its settings.
    settings: WebhookSettings,
}

impl WebhookConnector {
    /// A connector for one webhook account.
    pub fn new(settings: WebhookSettings) -> WebhookConnector {
        WebhookConnector { settings }
    }
}

impl Connector for WebhookConnector {
    async fn run(self, ctx: ConnectorContext) -> Result<(), ConnectorError> {
        info!(message = "DingTalk custom robot account ready.", account = %ctx.account, host = %self.settings.host(), signed = self.settings.secret.is_some());
        let webhook = webhook::Webhook::new(
            ctx.account.clone(),
            self.settings,
            crate::http::client(USER_AGENT, HTTP_CONNECT_TIMEOUT, HTTP_TIMEOUT)?,
        )
        .with_media(ctx.media.clone());
        robot::serve(ctx, webhook).await;
        Ok(())
    }
}

impl RobotSender for webhook::Webhook {
    /// Nothing to upload: the custom robot sends pictures as links of the media server.
    async fn prepare(&mut self, outbound: &Outbound) {
        let _ = outbound;
    }

    async fn send(&mut self, outbound: &Outbound) -> Result<SendReceipt, SendError> {
        webhook::Webhook::send(self, outbound).await
    }
}
