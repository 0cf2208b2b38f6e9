//! Opening the media service: the on-disk cache under `state_dir/media/`, the bounded
//! fetcher and the address guard, sized by `[media]`, and the signer of the media server's
//! links when one is configured. Every account's connector gets a [`MediaContext`] of them
//! with its own mode.
//!
//! [`start_server`] starts the built-in media server (`[media] serve_listen`), which answers
//! those links from the same cache until the daemon stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use qunbridge_connectors::media::cache::{CacheLimits, MediaCache};
use qunbridge_connectors::media::fetch::{FetchLimits, Fetcher};
use qunbridge_connectors::media::guard::AddressGuard;
use qunbridge_connectors::media::links::LinkSigner;
use qunbridge_connectors::media::server;
use qunbridge_connectors::media::service::MediaService;
use qunbridge_connectors::media::{MediaContext, MediaMode};

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
        skip_source_urls: media.mode != MediaMode::Passthrough
            && config
                .accounts
                .values()
                .all(|account| account.media != Some(MediaMode::Passthrough)),
    })
}

/// Starts the built-in media server when `[media]` configures one: binds `serve_listen` now
/// (so a taken address fails start-up) and serves the links `media`'s signer makes, from
/// its cache, until `stop` is cancelled; `running` is true while it serves (the status
/// shows it). `None` when no media server is configured.
///
/// # Errors
/// [`RunError::Bind`] when `serve_listen` cannot be bound.
pub async fn start_server(
    config: &Config,
    media: &MediaContext,
    running: Option<Arc<AtomicBool>>,
    stop: CancellationToken,
) -> Result<Option<JoinHandle<()>>, RunError> {
    let Some(settings) = &config.media.server else {
        return Ok(None);
    };
    let (Some(service), Some(signer)) = (&media.service, &media.links) else {
        return Ok(None);
    };
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| RunError::Bind {
            what: "media server",
            addr: settings.listen.to_string(),
            source,
        })?;
    info!(message = "Media server listening.", listen = %settings.listen);
    let cache = service.cache().clone();
    let signer = signer.clone();
    let running = running.unwrap_or_default();
    running.store(true, Ordering::Release);
    Ok(Some(tokio::spawn(async move {
        if let Err(error) = server::serve(listener, cache, signer, stop).await {
            warn!(message = "Media server ended with an error.", %error);
        }
        running.store(false, Ordering::Release);
    })))
}
