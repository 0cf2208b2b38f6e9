//! Opening the media service: the on-disk cache under `state_dir/media/`, the bounded
//! fetcher and the address guard, sized by `[media]`, and the signer of the media server's
//! links when one is configured. Every account's connector gets a [`MediaContext`] of them
//! with its own mode.

use std::sync::Arc;

use qunbridge_connectors::media::cache::{CacheLimits, MediaCache};
use qunbridge_connectors::media::fetch::{FetchLimits, Fetcher};
use qunbridge_connectors::media::guard::AddressGuard;
use qunbridge_connectors::media::links::LinkSigner;
use qunbridge_connectors::media::service::MediaService;
use qunbridge_connectors::media::MediaContext;

use super::error::RunError;
use crate::config::Config;

/// The directory of the media cache under `state_dir`.
pub const MEDIA_DIR: &str = "media";

/// Opens the media cache (removing partial writes and blobs that do not match their name)
/// and builds the context every account's connector starts from, in the global mode.
///
/// # Errors
/// [`RunError::Media`] when the cache directory cannot be used or the HTTP client not built.
pub async fn open(config: &Config) -> Result<MediaContext, RunError> {
    let media = &config.media;
    let guard = AddressGuard::new(media.allow_hosts.clone());
    let dir = config.state_dir.join(MEDIA_DIR);
    let cache = MediaCache::open(
        &dir,
        CacheLimits {
            max_bytes: media.cache_max_bytes,
            ttl: media.cache_ttl,
        },
    )
    .await
    .map_err(|error| RunError::Media(format!("cache in {}: {error}", dir.display())))?;
    let fetcher = Fetcher::new(
        FetchLimits {
            fetch_timeout: media.fetch_timeout,
            max_bytes: media.max_image_bytes,
            ..FetchLimits::default()
        },
        guard.clone(),
    )
    .map_err(|error| RunError::Media(format!("fetcher: {error}")))?;
    let links = media.server.as_ref().map(|server| {
        Arc::new(LinkSigner::new(
            &server.public_base_url,
            server.link_secret.clone(),
            media.cache_ttl,
        ))
    });
    Ok(MediaContext {
        guard,
        mode: media.mode,
        service: Some(Arc::new(MediaService::new(cache, fetcher, media.wait))),
        links,
    })
}
