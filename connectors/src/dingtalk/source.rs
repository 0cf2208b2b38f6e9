//! The app robot account as a media source: the pictures its Stream messages carry are named
//! by download codes, which only this account's OpenAPI client can turn into a (temporary)
//! download URL (`robot/messageFiles/download`, PROTOCOLS.md §3.5). The media service asks
//! through [`DownloadSource`] when a destination wants the bytes; the account registers it
//! while it runs.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::openapi::OpenApi;
use crate::media::service::{MediaSource, Resolved};
use crate::media::Locator;

/// How long resolving one download code may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest download code taken (real ones are a few hundred characters).
const MAX_CODE_LEN: usize = 4096;

/// Resolves the DingTalk download codes of one app robot account.
pub struct DownloadSource {
    /// The account's OpenAPI client (its token cache is shared with sends and ingress).
    api: Arc<OpenApi>,
}

impl DownloadSource {
    /// The source of the account whose client is `api`.
    pub fn new(api: Arc<OpenApi>) -> DownloadSource {
        DownloadSource { api }
    }
}

impl MediaSource for DownloadSource {
    fn resolve<'a>(&'a self, locator: &'a Locator) -> BoxFuture<'a, Result<Resolved, String>> {
        Box::pin(async move {
            let Locator::DingtalkDownload { download_code } = locator else {
                return Err("not a DingTalk download code".into());
            };
            let code = download_code.trim();
            if code.is_empty() || code.len() > MAX_CODE_LEN || code.chars().any(char::is_control) {
                return Err("malformed download code".into());
            }
            match tokio::time::timeout(RESOLVE_TIMEOUT, self.api.download_url(code)).await {
                Ok(Ok(url)) => Ok(Resolved::Url(url)),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!(
                    "messageFiles/download not answered within {RESOLVE_TIMEOUT:?}"
                )),
            }
        })
    }
}
